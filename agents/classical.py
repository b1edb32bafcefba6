"""A classical lane follower with no learning: Scharr edges, lane lines, a PD steering law.

:class:`EdgePilot` is the leaderboard's baseline for "hand-made filters vs. learnt
convolutions". Per frame (numpy only):

1. **Paint channel**: ``min(R, G)``. Both white edge lines and the yellow centre line are
   bright in red *and* green; grey road and green grass are not, so the markings stand out
   in one channel without a colour-space conversion.
2. **Scharr filter** (the 3x3 derivative kernel with the best rotational symmetry, a
   refinement of Sobel) across the image width, on a band of rows below the horizon.
3. **Lines** on each scan row: a rising edge followed within ``max_line_width`` by a
   falling edge is a painted line; its colour tells a yellow centre dash from a white edge.
4. **Lane centre per row**: the mean of the nearest white line on each side of the
   reference (the yellow dash in that row, else last frame's centre estimate, else the image
   centre) when both are seen; one edge plus half the road width when only one is; the
   yellow dash itself when it is visible. The road width follows the flat-ground
   perspective law ``width = scale * (y - y_horizon)``; ``scale`` starts from a guess and
   is learnt online from rows showing both edges, or one edge and the centre line.
5. **Fit** ``x = a + b * (y - y_near)`` over the rows (least squares), then steer with a PD
   law on the normalised offsets at a near and a far row: road centre to the left of the
   image centre means steer left (+).

When no line is found the pilot keeps its last steering, decaying towards zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from agents.base import PilotNeeds, as_action

__all__ = ["EdgeConfig", "EdgePilot", "find_lines", "scharr_x"]


@dataclass(frozen=True)
class EdgeConfig:
    """Settings of :class:`EdgePilot` (fractions are of the image height or width)."""

    band: tuple[float, float] = (0.33, 0.95)  # rows scanned, top and bottom (fractions of H)
    rows: int = 16  # scan rows spread over the band
    horizon: float = 0.30  # horizon row (fraction of H) for the initial road-width guess
    road_width: float = 2.4  # road width at the bottom row, in image widths (initial guess;
    # 2.4 fits the default sim camera: 1 m road, 0.2 m high, 20 deg pitch, 100 deg FOV)
    edge_threshold: float = 0.08  # min |Scharr x-gradient| of the paint channel (0..1 scale)
    max_line_width: float = 0.08  # widest painted line, fraction of W
    # Gains: least-squares fit of expert steering on (near, far) offsets over one recorded
    # expert lap of the oval (steering MAE 0.03 on that lap); kd is set by hand.
    kp: float = 0.15  # steering per unit of normalised offset at the near row
    kf: float = 0.85  # steering per unit of normalised offset at the far row
    kd: float = 0.1  # steering per unit change of the near offset per frame
    width_smoothing: float = 0.3  # EMA weight of a new road-width measurement
    lost_decay: float = 0.9  # steering multiplier per frame without lines

    def __post_init__(self) -> None:
        top, bottom = self.band
        if not (0.0 <= top < bottom <= 1.0):
            raise ValueError(f"band must satisfy 0 <= top < bottom <= 1, got {self.band}")
        if self.rows < 2:
            raise ValueError(f"rows must be >= 2, got {self.rows}")
        if not (0.0 <= self.horizon < top + 1e-9):
            raise ValueError("horizon must lie above the band")
        for name in ("road_width", "edge_threshold", "max_line_width"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if not (0.0 < self.width_smoothing <= 1.0 and 0.0 <= self.lost_decay <= 1.0):
            raise ValueError("width_smoothing must be in (0, 1] and lost_decay in [0, 1]")


def scharr_x(a: np.ndarray) -> np.ndarray:
    """Scharr derivative along the width of a 2-D array (same shape; zero at the borders).

    Kernel ``[[-3, 0, 3], [-10, 0, 10], [-3, 0, 3]] / 32``: a step of height ``h`` gives
    ``h / 2`` on the two columns around it.
    """
    a = np.asarray(a, dtype=np.float32)
    out = np.zeros_like(a)
    d = a[:, 2:] - a[:, :-2]  # central difference per row
    out[1:-1, 1:-1] = (3 * d[:-2] + 10 * d[1:-1] + 3 * d[2:]) / 32.0
    return out


def _plateau_centres(idx: np.ndarray) -> np.ndarray:
    """Merge runs of adjacent indices (a flat extremum) into their mean position."""
    if idx.size == 0:
        return idx.astype(np.float64)
    breaks = np.flatnonzero(np.diff(idx) > 1) + 1
    return np.array([run.mean() for run in np.split(idx, breaks)])


def find_lines(
    gx_row: np.ndarray, threshold: float, max_width: float
) -> list[tuple[float, float, float]]:
    """Painted lines on one row: ``(left, right, centre)`` columns of rising/falling edge pairs."""
    g = gx_row
    # Local extrema above the threshold (non-maximum suppression along the row).
    peak = (g[1:-1] >= g[:-2]) & (g[1:-1] >= g[2:]) & (g[1:-1] > threshold)
    trough = (g[1:-1] <= g[:-2]) & (g[1:-1] <= g[2:]) & (g[1:-1] < -threshold)
    rising = _plateau_centres(np.flatnonzero(peak) + 1)
    falling = _plateau_centres(np.flatnonzero(trough) + 1)
    lines = []
    j = 0
    for a in rising:
        while j < len(falling) and falling[j] <= a:
            j += 1
        if j < len(falling) and falling[j] - a <= max_width:
            b = falling[j]
            lines.append((float(a), float(b), 0.5 * (a + b)))
            j += 1
    return lines


class EdgePilot:
    """Classical lane follower (see the module docstring); implements ``agents.base.Pilot``."""

    needs = PilotNeeds(obs_mode="image")

    def __init__(self, config: EdgeConfig | None = None, name: str = "edge") -> None:
        self.config = config or EdgeConfig()
        self.name = name
        self.reset()

    def reset(self) -> None:
        self._scale: float | None = None  # road width in pixels per row below the horizon
        self._calibrated = False  # True once the width was measured (not just guessed)
        self._centre: np.ndarray | None = None  # last centre estimate per scan row
        self._shape: tuple[int, int] | None = None
        self._prev_near: float | None = None
        self._steer = 0.0
        self.last_debug: dict[str, Any] = {}

    # ------------------------------------------------------------------ geometry
    def _scan_rows(self, h: int) -> np.ndarray:
        top, bottom = self.config.band
        rows = np.linspace(top * (h - 1), bottom * (h - 1), self.config.rows)
        return np.unique(np.clip(np.round(rows), 1, h - 2).astype(int))

    def _init_state(self, h: int, w: int, rows: np.ndarray) -> None:
        cfg = self.config
        # On flat ground a pinhole camera sees the road width grow linearly with the
        # distance of the row below the horizon: width(y) = scale * (y - y_horizon).
        self._scale = cfg.road_width * w / max(h - cfg.horizon * h, 1.0)
        self._centre = np.full(len(rows), w / 2.0)
        self._shape = (h, w)

    # ------------------------------------------------------------------ perception
    def lane_centres(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scan rows and the lane-centre column found on each (NaN where none)."""
        cfg = self.config
        img = np.asarray(image)
        h, w = img.shape[:2]
        rows = self._scan_rows(h)
        if self._shape != (h, w) or self._centre is None or len(self._centre) != len(rows):
            self._init_state(h, w, rows)
        assert self._scale is not None and self._centre is not None
        rgb = img.astype(np.float32) / 255.0
        paint = np.minimum(rgb[..., 0], rgb[..., 1])
        # Filter only the three-row strip around each scan row (the kernel is 3x3).
        gx = np.stack([scharr_x(paint[r - 1 : r + 2])[1] for r in rows])  # (n, w)
        max_w = max(2.0, cfg.max_line_width * w)
        below = np.maximum(rows - cfg.horizon * h, 1.0)

        # Pass 1: lines per row, classified by colour; road-width measurements.
        found = []
        widths = []
        for k, r in enumerate(rows):
            yellow: list[float] = []
            white: list[float] = []
            for _, _, c in find_lines(gx[k], cfg.edge_threshold, max_w):
                px = rgb[r, int(round(c))]
                lo = min(px[0], px[1])
                if lo > 0.35 and px[2] < 0.6 * lo:
                    yellow.append(c)
                elif px.min() > 0.45:
                    white.append(c)
            ref = self._centre[k]
            yc = min(yellow, key=lambda c: abs(c - ref)) if yellow else None
            if yc is not None:
                ref = yc
            left = max((c for c in white if c < ref), default=None)
            right = min((c for c in white if c > ref), default=None)
            found.append((yc, left, right))
            if left is not None and right is not None:
                widths.append((right - left) / below[k])
            elif yc is not None and (left is not None or right is not None):
                edge = left if left is not None else right
                widths.append(2.0 * abs(edge - yc) / below[k])
        if widths:
            # The first measurement replaces the guess; later ones are smoothed.
            a = cfg.width_smoothing if self._calibrated else 1.0
            self._calibrated = True
            self._scale = (1 - a) * self._scale + a * float(np.median(widths))

        # Pass 2: a centre estimate per row.
        centres = np.full(len(rows), np.nan)
        for k, (yc, left, right) in enumerate(found):
            half = 0.5 * self._scale * below[k]
            est = []
            if left is not None and right is not None:
                est.append((0.5 * (left + right), 1.0))
            elif left is not None:
                est.append((left + half, 0.5))
            elif right is not None:
                est.append((right - half, 0.5))
            if yc is not None:
                est.append((yc, 1.0))
            if est:
                centres[k] = sum(c * wt for c, wt in est) / sum(wt for _, wt in est)
        return rows, centres

    # ------------------------------------------------------------------ control
    def act(self, observation: Any, info: dict[str, Any]) -> np.ndarray:
        img = observation["image"] if isinstance(observation, Mapping) else observation
        img = np.asarray(img)
        if img.ndim != 3 or img.shape[-1] != 3:
            raise ValueError(f"EdgePilot needs an HxWx3 RGB image, got shape {img.shape}")
        cfg = self.config
        h, w = img.shape[:2]
        rows, centres = self.lane_centres(img)
        ok = np.isfinite(centres)
        if not ok.any():
            self._steer *= cfg.lost_decay
            self.last_debug = {"lost": True, "rows": rows.tolist(), "centres": []}
            return as_action(self._steer, 0.0)
        y_near, y_far = float(rows[-1]), float(rows[0])
        ys, xs = rows[ok].astype(np.float64), centres[ok]
        if ok.sum() >= 2 and np.ptp(ys) > 0:
            slope, icpt = np.polyfit(ys - y_near, xs, 1)
        else:
            slope, icpt = 0.0, float(xs.mean())
        x_near = icpt
        x_far = icpt + slope * (y_far - y_near)
        # Next frame's reference for telling the left edge from the right one.
        self._centre = np.where(ok, centres, icpt + slope * (rows - y_near))
        e_near = (x_near - w / 2) / (w / 2)
        e_far = float(np.clip((x_far - w / 2) / (w / 2), -2.0, 2.0))
        d = 0.0 if self._prev_near is None else e_near - self._prev_near
        self._prev_near = e_near
        steer = -(cfg.kp * e_near + cfg.kf * e_far + cfg.kd * d)
        self._steer = float(np.clip(steer, -1.0, 1.0))
        self.last_debug = {
            "lost": False,
            "rows": rows.tolist(),
            "centres": [None if not np.isfinite(c) else float(c) for c in centres],
            "offset_near": float(e_near),
            "offset_far": e_far,
        }
        return as_action(self._steer, 0.0)

    def metadata(self) -> dict[str, Any]:
        return {
            "kind": "classical",
            "name": self.name,
            "method": "scharr-edges+pd",
            **asdict(self.config),
        }


def load_spec(target: Any, *, device: str = "cpu", speed: float = 2.0) -> EdgePilot:
    """The registry's loader (``agents.registry``): the edge-filter lane follower."""
    return EdgePilot()
