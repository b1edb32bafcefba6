"""Track geometry for trackpilot (numpy only; matplotlib for plots).

``Track`` (centreline + half widths, fast projection), a library of built-in tracks,
a seeded procedural generator, F1TENTH/TUM CSV and JSON files, and headless plots.
``python -m tracks list`` prints the built-in tracks.
"""

from tracks.generator import generate_track
from tracks.io import (
    load_f1tenth_csv,
    load_track,
    load_track_json,
    save_f1tenth_csv,
    save_track_json,
)
from tracks.library import BUILTIN_TRACKS, HELDOUT_TRACKS, TRAIN_TRACKS, builtin_names, get_track
from tracks.track import Projection, ProjectionArrays, Track, TrackSamples
from tracks.validate import require_drivable, validate_track


def __getattr__(name: str) -> object:
    # ``plot_track`` is imported lazily so that ``python -m tracks.plot`` does not find
    # ``tracks.plot`` already imported (runpy warns about that).
    if name == "plot_track":
        from tracks.plot import plot_track

        return plot_track
    raise AttributeError(f"module 'tracks' has no attribute {name!r}")


__all__ = [
    "BUILTIN_TRACKS",
    "HELDOUT_TRACKS",
    "TRAIN_TRACKS",
    "Projection",
    "ProjectionArrays",
    "Track",
    "TrackSamples",
    "builtin_names",
    "generate_track",
    "get_track",
    "load_f1tenth_csv",
    "load_track",
    "load_track_json",
    "plot_track",
    "require_drivable",
    "save_f1tenth_csv",
    "save_track_json",
    "validate_track",
]
