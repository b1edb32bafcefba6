"""Crash-safe file helpers: kept at this import path; defined in :mod:`tracks.fileio`
(the lowest layer, so that track files are written the same way)."""

from tracks.fileio import *  # noqa: F403
from tracks.fileio import __all__  # noqa: F401
