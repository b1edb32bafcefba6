"""Build closed centrelines from straights and turns with eased curvature.

A turn eases its curvature from 0 to 1/radius over ``ramp`` metres (a cosine
ramp, like a smoothed clothoid), holds it, and eases back, so the centreline's
curvature is continuous with a continuous slope and a spline through its samples
does not ring. Two straights marked
``free`` get their lengths solved so that the loop closes exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Integration step for the centreline, metres.
_STEP = 0.002


@dataclass(frozen=True)
class Straight:
    """A straight of ``length`` metres; ``free`` ones are resized to close the loop."""

    length: float
    free: bool = False

    def __post_init__(self) -> None:
        if not self.length >= 0:
            raise ValueError(f"straight length must be >= 0, got {self.length}")


@dataclass(frozen=True)
class Turn:
    """A bend of ``angle_deg`` degrees (+ = left) at minimum radius ``radius``, entered
    and left through curvature ramps of ``ramp`` metres each (the ramps lengthen the
    bend by ``ramp`` in total compared with a plain arc)."""

    angle_deg: float
    radius: float
    ramp: float = 0.8

    def __post_init__(self) -> None:
        if not (self.radius > 0 and self.ramp >= 0):
            raise ValueError(f"turn radius must be > 0 and ramp >= 0, got {self}")
        if abs(math.radians(self.angle_deg)) * self.radius < self.ramp - 1e-12:
            raise ValueError(f"turn {self} is too short for its ramps")

    def pieces(self) -> list[tuple[float, float, float]]:
        """(length, curvature at start, curvature at end) of the eased-curvature pieces."""
        k = math.copysign(1.0 / self.radius, self.angle_deg)
        arc = abs(math.radians(self.angle_deg)) / abs(k) - self.ramp
        return [(self.ramp, 0.0, k), (arc, k, k), (self.ramp, k, 0.0)]


Segment = Straight | Turn


def _integrate(
    segments: list[Segment], lengths: dict[int, float]
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Integrate the path; returns (s, xy) at ~_STEP spacing and each straight's heading."""
    x = y = th = 0.0
    s0 = 0.0
    s_parts = [np.zeros(1)]
    xy_parts = [np.zeros((1, 2))]
    headings = []
    for idx, seg in enumerate(segments):
        if isinstance(seg, Straight):
            pieces = [(lengths.get(idx, seg.length), 0.0, 0.0)]
            headings.append(th)
        else:
            pieces = seg.pieces()
            headings.append(math.nan)
        for length, k0, k1 in pieces:
            if length <= 0:
                continue
            n = max(2, math.ceil(length / _STEP))
            u = np.linspace(0.0, length, n + 1)[1:]
            # Cosine ease: curvature goes k0 -> k1 with zero slope at both ends (C1), so
            # a spline through the samples reproduces it without ringing.
            theta = (
                th
                + k0 * u
                + (k1 - k0) * (0.5 * u - length / (2 * np.pi) * np.sin(np.pi * u / length))
            )
            # Trapezoid rule on (cos, sin) of the analytic heading.
            full = np.concatenate([[th], theta])
            du = length / n
            c = np.cumsum(0.5 * (np.cos(full[1:]) + np.cos(full[:-1])) * du)
            sn = np.cumsum(0.5 * (np.sin(full[1:]) + np.sin(full[:-1])) * du)
            xy_parts.append(np.column_stack([x + c, y + sn]))
            s_parts.append(s0 + u)
            x, y = x + float(c[-1]), y + float(sn[-1])
            th = float(theta[-1])
            s0 += length
    return np.concatenate(s_parts), np.concatenate(xy_parts), headings


def build_centreline(segments: list[Segment], spacing: float = 0.25) -> np.ndarray:
    """Closed centreline points (start at the origin heading +x, not repeated) every
    ~``spacing`` metres from a list of ``Straight`` and ``Turn`` segments.

    The turns must add up to +360 or -360 degrees. The lengths of the straights marked
    ``free`` are adjusted (least squares) so that the loop closes: two non-parallel
    ones close any loop, a symmetric loop may need none. A ValueError if the loop
    stays open or a solved length comes out negative.
    """
    total = sum(seg.angle_deg for seg in segments if isinstance(seg, Turn))
    if abs(abs(total) - 360.0) > 1e-9:
        raise ValueError(f"turns add up to {total} degrees, expected +-360")
    free = [i for i, seg in enumerate(segments) if isinstance(seg, Straight) and seg.free]
    lengths = {i: segments[i].length for i in free}
    for _ in range(3):  # linear in the free lengths: one solve is exact up to integration error
        _, xy, headings = _integrate(segments, lengths)
        gap = xy[0] - xy[-1]
        if not free:
            break
        dirs = np.array([[math.cos(headings[i]), math.sin(headings[i])] for i in free]).T
        delta = np.linalg.lstsq(dirs, gap, rcond=1e-6)[0]  # ignore numerically parallel directions
        for i, dl in zip(free, delta, strict=True):
            lengths[i] += float(dl)
    bad = {i: v for i, v in lengths.items() if v < 0}
    if bad:
        raise ValueError(f"closing the loop needs negative straight lengths: {bad}")
    s, xy, _ = _integrate(segments, lengths)
    if np.hypot(*(xy[-1] - xy[0])) > 1e-3:
        raise ValueError(
            f"the loop does not close (gap {np.hypot(*(xy[-1] - xy[0])):.3f} m): mark two "
            "non-parallel straights free"
        )
    # Spread the tiny remaining closure error along the loop, then resample.
    length = float(s[-1])
    xy = xy - np.outer(s / length, xy[-1] - xy[0])
    m = max(8, round(length / spacing))
    su = np.arange(m) * (length / m)
    return np.column_stack([np.interp(su, s, xy[:, 0]), np.interp(su, s, xy[:, 1])])
