"""Pilot specs for evaluation: kept at this import path, defined in ``agents``.

:func:`load_pilot_spec` is :func:`agents.registry.load_pilot` (the one registry from a
spec to a pilot) and :func:`pilot_env_settings` reads the pilot's declared
:class:`agents.base.PilotNeeds`. Nothing here decides by pilot kind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agents.base import DEFAULT_IMAGE_SIZE, pilot_needs
from agents.registry import kind_of
from agents.registry import load_pilot as load_pilot_spec

__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "checkpoint_kind",
    "is_privileged",
    "load_pilot_spec",
    "pilot_env_settings",
]


def checkpoint_kind(path: str | Path) -> tuple[str, Path]:
    """``(kind name, path to load)`` for a pilot file or directory; ValueError otherwise."""
    kind, target = kind_of(path)
    return kind.name, target


def is_privileged(pilot: Any) -> bool:
    """A pilot that reads the true pose and the track (the expert), not the camera."""
    return pilot_needs(pilot).privileged


def pilot_env_settings(pilot: Any) -> dict[str, Any]:
    """What the env must give this pilot: ``obs_mode``, ``image_size``, ``throttle``."""
    needs = pilot_needs(pilot)
    return {"obs_mode": needs.obs_mode, "image_size": needs.camera, "throttle": needs.throttle}
