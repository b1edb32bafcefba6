"""Synthetic camera frames and datasets (numpy only) for tests, benchmarks and smoke runs.

:func:`render_road` draws what the car's forward camera sees, roughly: green ground, a grey
road narrowing towards the horizon, solid white edge lines and a dashed yellow centre line.
``offset`` moves the road sideways at the bottom of the frame (fraction of the width, +
right), ``curve`` bends it towards the horizon (+ right). A car whose road appears to the
right must steer right (negative steering), so :func:`steering_for` gives labels that a CNN
can learn from the image alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sim.dataset import DatasetWriter, EpisodeMeta, open_dataset, synthetic_episode

__all__ = ["make_synthetic_dataset", "render_road", "steering_for"]

GROUND = (82, 133, 71)
ROAD = (69, 69, 74)
EDGE = (242, 242, 242)
CENTRE = (242, 204, 26)


def render_road(
    size: tuple[int, int] = (120, 160),
    *,
    offset: float = 0.0,
    curve: float = 0.0,
    road_width: float = 0.9,
    horizon: float = 0.3,
    dash_phase: float = 0.0,
    left_edge: bool = True,
    right_edge: bool = True,
    centre_line: bool = True,
    noise: float = 0.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """A ``uint8`` ``(H, W, 3)`` road image (see the module docstring).

    ``road_width``: road width at the bottom row as a fraction of the image width.
    ``left_edge`` / ``right_edge`` / ``centre_line`` switch the markings off individually.
    """
    h, w = size
    img = np.empty((h, w, 3), dtype=np.float32)
    img[:] = GROUND
    sky_rows = int(round(horizon * h))
    img[:sky_rows] = (150, 180, 215)
    ys = np.arange(sky_rows, h)
    z = (ys - sky_rows + 1) / (h - sky_rows)  # (0, 1]: 1 = nearest row
    centre = w / 2 + offset * w * z + curve * w * (1 - z) ** 2
    half = 0.5 * road_width * w * z
    line = np.maximum(0.06 * half, 0.6)
    xs = np.arange(w)[None, :] + 0.5
    c = centre[:, None]
    hw = half[:, None]
    lw = line[:, None]
    band = img[sky_rows:]
    road = np.abs(xs - c) <= hw
    band[road] = ROAD
    if left_edge:
        band[(xs >= c - hw) & (xs <= c - hw + lw)] = EDGE
    if right_edge:
        band[(xs <= c + hw) & (xs >= c + hw - lw)] = EDGE
    if centre_line:
        # Dashes alternate with depth (1/z grows with distance on a flat road).
        on = (np.floor(2.0 / z + dash_phase) % 2 == 0)[:, None]
        band[(np.abs(xs - c) <= 0.6 * lw) & on] = CENTRE
    if noise > 0:
        rng = rng or np.random.default_rng(0)
        img += rng.normal(0, noise, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def steering_for(offset: float, curve: float) -> float:
    """The steering that brings the car back to the road centre and follows its bend."""
    return float(np.clip(-2.0 * offset - 1.5 * curve, -1.0, 1.0))


def make_synthetic_dataset(
    root: str | Path,
    *,
    episodes: int = 6,
    frames: int = 40,
    size: tuple[int, int] = (32, 40),
    tracks: tuple[str, ...] = ("alpha", "beta", "gamma"),
    seed: int = 0,
    noise: float = 4.0,
) -> Any:
    """Write a small dataset of synthetic road frames with learnable steering; returns it opened.

    Episodes cycle through ``tracks`` x (ccw, cw). Counter-clockwise episodes bend left
    more often than right (and clockwise ones right), like real laps.
    """
    rng = np.random.default_rng(seed)
    info = {
        "env_id": "synthetic",
        "camera": {"image_size": [int(size[0]), int(size[1])]},
        "control_hz": 20,
        "note": "training.synthetic.make_synthetic_dataset",
    }
    writer = DatasetWriter(Path(root), info)
    combos = [(t, d) for t in tracks for d in ("ccw", "cw")]
    for e in range(episodes):
        track, direction = combos[e % len(combos)]
        arrays = synthetic_episode(rng, frames, tuple(size))
        sign = 1.0 if direction == "cw" else -1.0  # + curve = bends right
        # A smooth drive: offset and curve follow slow random walks.
        offset = np.cumsum(rng.normal(0, 0.03, frames)).clip(-0.25, 0.25)
        curve = (sign * 0.15 + np.cumsum(rng.normal(0, 0.05, frames))).clip(-0.5, 0.5)
        images = np.empty((frames, *size, 3), dtype=np.uint8)
        steering = np.empty(frames, dtype=np.float32)
        for i in range(frames):
            images[i] = render_road(
                size, offset=float(offset[i]), curve=float(curve[i]), dash_phase=i * 0.3,
                noise=noise, rng=rng,
            )  # fmt: skip
            steering[i] = steering_for(float(offset[i]), float(curve[i]))
        arrays["image"] = images
        arrays["steering"] = steering
        arrays["takeover"][:] = 0
        meta = EpisodeMeta(
            track_id=track,
            track_hash=f"synthetic-{track}",
            direction=direction,
            seed=seed * 1000 + e,
            source="expert",
            laps=1,
            expert={"kind": "synthetic", "steer_noise": 0.0},
        )
        writer.write_episode(f"syn-{e:03d}", arrays, meta)
    return open_dataset(root)
