"""The few small definitions every layer shares, each stated once.

``tracks`` is the lowest layer (tracks <- sim <- agents <- training, evaluation), so
what all of them need lives here: the two driving directions, the ``HxW`` size
syntax, time stamps. Standard library only.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

__all__ = ["DIRECTIONS", "format_size", "now_iso", "parse_directions", "parse_size"]

#: Counter-clockwise and clockwise laps (as seen from above).
DIRECTIONS: tuple[str, ...] = ("ccw", "cw")

#: Largest image side any trackpilot camera or model accepts (pixels).
MAX_IMAGE_SIDE = 1024


def parse_size(value: Any, *, what: str = "size") -> tuple[int, int]:
    """``"120x160"`` (or ``(120, 160)``) -> ``(120, 160)``: height x width in pixels.

    Both sides must be whole numbers in ``[1, MAX_IMAGE_SIDE]``; anything else is a
    ``ValueError`` naming ``what`` and the value.
    """
    if isinstance(value, str):
        parts = value.strip().lower().split("x")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"{what} must be HxW, e.g. 120x160, got {value!r}")
        h, w = int(parts[0]), int(parts[1])
    elif isinstance(value, Sequence) and len(value) == 2:
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise ValueError(f"{what} must be two whole numbers (H, W), got {value!r}")
        h, w = int(value[0]), int(value[1])
    else:
        raise ValueError(f"{what} must be HxW, e.g. 120x160, got {value!r}")
    if not (1 <= h <= MAX_IMAGE_SIDE and 1 <= w <= MAX_IMAGE_SIDE):
        raise ValueError(f"{what} sides must be in [1, {MAX_IMAGE_SIDE}], got {h}x{w}")
    return h, w


def format_size(size: Sequence[int]) -> str:
    """``(120, 160)`` -> ``"120x160"``."""
    return f"{int(size[0])}x{int(size[1])}"


def parse_directions(value: Any) -> tuple[str, ...]:
    """``"ccw,cw"`` (or a sequence) -> ``("ccw", "cw")``; each must be in :data:`DIRECTIONS`."""
    items = value.split(",") if isinstance(value, str) else list(value)
    out = tuple(str(d).strip() for d in items if str(d).strip())
    bad = [d for d in out if d not in DIRECTIONS]
    if bad or not out:
        raise ValueError(f"directions must be among {DIRECTIONS}, got {value!r}")
    return out


def now_iso() -> str:
    """The current time, ISO 8601 in UTC, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
