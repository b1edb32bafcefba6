"""The frame schema: the per-frame arrays every episode holds, stated once."""

from __future__ import annotations

import numpy as np

__all__ = ["FRAME_FIELDS", "LABEL_FIELDS"]

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
