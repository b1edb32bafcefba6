"""What a pilot needs from the env, and the action it returns: standard library and numpy only.

:class:`PilotNeeds` and :func:`as_action` are all a pilot module needs from trackpilot to
be driven by the closed loop. They live here, not in :mod:`agents.base` (which imports
safetensors and ``tracks``), so that a pilot that runs on the car
(:mod:`agents.onnx_pilot`: numpy and onnxruntime) can use them without the rest of
trackpilot installed. :mod:`agents.base` re-exports them; import them from either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "MAX_IMAGE_SIDE",
    "OBS_MODES",
    "PilotNeeds",
    "as_action",
    "image_size",
]

#: The camera a pilot gets when it names none (H, W).
DEFAULT_IMAGE_SIZE: tuple[int, int] = (120, 160)
OBS_MODES = ("image", "state", "image+state")
#: The largest image side anything may claim (``tracks.common.MAX_IMAGE_SIDE``, the same
#: number: ``tracks`` is not imported here).
MAX_IMAGE_SIDE = 1024


def image_size(value: Any, *, what: str = "image_size") -> tuple[int, int]:
    """``"120x160"`` or ``(120, 160)`` -> ``(120, 160)``, both sides whole numbers in
    ``[1, MAX_IMAGE_SIDE]``; ``ValueError`` naming ``what`` otherwise. The same rules as
    ``tracks.common.parse_size`` (a test keeps the two in step)."""
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


@dataclass(frozen=True)
class PilotNeeds:
    """What a pilot needs from the env; the closed loop builds the env from this.

    Declared by the pilot (its ``needs`` attribute), never guessed from metadata keys.
    """

    obs_mode: str = "image"  # "image", "state" or "image+state" (sim.TrackEnv obs_mode)
    image_size: tuple[int, int] | None = None  # camera (H, W); None: DEFAULT_IMAGE_SIZE
    throttle: bool = False  # its throttle drives the motors; False: cruise control holds speed
    privileged: bool = False  # reads the true pose and the track (gets set_track after reset)

    def __post_init__(self) -> None:
        if self.obs_mode not in OBS_MODES:
            raise ValueError(f"obs_mode must be one of {OBS_MODES}, got {self.obs_mode!r}")
        if self.image_size is not None:
            object.__setattr__(self, "image_size", image_size(self.image_size))

    @property
    def camera(self) -> tuple[int, int]:
        """The camera size to render: the pilot's own, else the default."""
        return self.image_size or DEFAULT_IMAGE_SIZE


def as_action(steering: float, throttle: float = 0.0) -> np.ndarray:
    """Build a clipped, finite ``[steering, throttle]`` action."""
    a = np.array([steering, throttle], dtype=np.float32)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"pilot produced a non-finite action {a.tolist()}")
    return np.clip(a, -1.0, 1.0)
