"""The frame schema: the per-frame arrays every episode holds, stated once.

:data:`FRAME_FIELDS` is the table; the names a recorder uses (:data:`FRAME_KEYS`,
:data:`FRAME_DTYPES`, :func:`append_frame`, :func:`frames_to_arrays`, also importable
from ``sim.record``) are derived from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = [
    "FRAME_DTYPES",
    "FRAME_FIELDS",
    "FRAME_KEYS",
    "LABEL_FIELDS",
    "append_frame",
    "frames_to_arrays",
]

#: The per-frame fields of an episode: name -> (dtype, trailing shape); ``None`` marks the
#: image, whose trailing shape is (H, W, 3) with H, W fixed per dataset. Single source of truth.
FRAME_FIELDS: dict[str, tuple[np.dtype, tuple[int, ...] | None]] = {
    "image": (np.dtype(np.uint8), None),  # (N, H, W, 3) RGB
    "steering": (np.dtype(np.float32), ()),  # [-1, 1], + = left
    "throttle": (np.dtype(np.float32), ()),
    "speed": (np.dtype(np.float32), ()),  # m/s
    "t": (np.dtype(np.float32), ()),  # s since episode start
    "pose": (np.dtype(np.float32), (3,)),  # x, y, yaw
    "lateral": (np.dtype(np.float32), ()),  # m, + = left of centreline
    "heading_error": (np.dtype(np.float32), ()),  # rad
    "progress": (np.dtype(np.float32), ()),  # m along centreline since start, across laps
    "lap": (np.dtype(np.int32), ()),  # lap index
    "takeover": (np.dtype(np.uint8), ()),  # 1 where a human had taken over
}
#: Float label fields: must be finite.
LABEL_FIELDS = tuple(k for k, (dt, _) in FRAME_FIELDS.items() if dt.kind == "f")
#: The field names, in schema order.
FRAME_KEYS: tuple[str, ...] = tuple(FRAME_FIELDS)
#: Each field's numpy scalar type (``np.uint8``, ``np.float32`` ...).
FRAME_DTYPES: dict[str, type[np.generic]] = {k: dt.type for k, (dt, _) in FRAME_FIELDS.items()}

# What append_frame takes from elsewhere than the env's info dict: the image (the
# observation), the command label and the takeover flag; every other field is the
# info entry of the same name.
_NOT_FROM_INFO = ("image", "steering", "throttle", "takeover")
_INFO_KEYS = tuple(k for k in FRAME_KEYS if k not in _NOT_FROM_INFO)


def append_frame(
    frames: dict[str, list], obs, label, info: Mapping[str, Any], takeover: bool = False
) -> None:
    """Add one frame (the image seen, the command label, the env's info) to ``frames``."""
    frames["image"].append(obs)
    frames["steering"].append(float(label[0]))
    frames["throttle"].append(float(label[1]))
    for k in _INFO_KEYS:
        frames[k].append(info[k])
    frames["takeover"].append(1 if takeover else 0)


def frames_to_arrays(frames: Mapping[str, list]) -> dict[str, np.ndarray]:
    """Per-frame lists (as collected while driving) to the dataset's arrays."""
    out: dict[str, np.ndarray] = {}
    for k, (dtype, trailing) in FRAME_FIELDS.items():
        if trailing is not None:
            a = np.asarray(frames[k], dtype=dtype)
            out[k] = a.reshape(-1, *trailing) if trailing else a
    out["image"] = np.stack(frames["image"]).astype(FRAME_FIELDS["image"][0], copy=False)
    return out
