"""Drivability checks for a ``Track``: curvature, edges and self-overlap."""

from __future__ import annotations

import math

import numpy as np

from tracks.track import Track

#: Pairwise checks run on samples this far apart at least (metres) ...
_MIN_CHECK_SPACING = 0.05
#: ... and on at most this many samples (km-long tracks get coarser checks).
_MAX_CHECK_SAMPLES = 4000


def _segments_cross(p: np.ndarray, q: np.ndarray, r: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Whether segments p->q and r->t properly intersect (vectorised over rows)."""

    def orient(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
        return (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])

    o1, o2 = orient(p, q, r), orient(p, q, t)
    o3, o4 = orient(r, t, p), orient(r, t, q)
    return (o1 * o2 <= 0) & (o3 * o4 <= 0) & ((o1 != 0) | (o2 != 0))


def validate_track(track: Track, min_radius: float = 1.0, margin: float = 0.1) -> list[str]:
    """Problems that make ``track`` undrivable for a car turning no tighter than
    ``min_radius``; an empty list means the track is fine.

    Checks:
      * the centreline's minimum radius is at least ``min_radius``;
      * the inner edge of every bend keeps a radius of at least ``margin`` (the edge
        itself never folds over, i.e. the local radius exceeds the inner half width);
      * the centreline does not cross itself;
      * the road does not overlap itself: centreline samples that are not neighbours
        along the road (more than pi * min radius apart, the shortest arc length a
        pair of mutually facing points can have) are farther apart than the sum of
        their larger half widths plus ``margin``.
    """
    problems: list[str] = []
    d = track.dense
    r_min = track.min_radius
    if r_min < min_radius:
        i = int(np.argmax(np.abs(d.curvature)))
        problems.append(
            f"min radius {r_min:.3f} m at s={d.s[i]:.2f} m is below the required {min_radius:g} m"
        )
    k = d.curvature
    inner = np.where(k >= 0, d.w_left, d.w_right)
    slack = 1.0 - np.abs(k) * (inner + margin)  # < 0: inner edge radius below margin
    if np.any(slack < 0):
        i = int(np.argmin(slack))
        problems.append(
            f"inner edge radius {1 / abs(k[i]) - inner[i]:.3f} m at s={d.s[i]:.2f} m is below "
            f"the margin {margin:g} m (half width {inner[i]:.2f} m, radius {1 / abs(k[i]):.2f} m)"
        )

    length = track.length
    m = max(8, min(_MAX_CHECK_SAMPLES, math.ceil(length / _MIN_CHECK_SPACING)))
    smp = track.resample(length / m)
    xy = smp.xy
    wmax = np.maximum(smp.w_left, smp.w_right)
    s = smp.s
    h = length / m
    exclude = math.pi * min(r_min, length / (2 * math.pi)) if math.isfinite(r_min) else length
    nxt = np.roll(xy, -1, axis=0)

    crossing: tuple[float, float] | None = None
    overlap: tuple[float, float, float, float] | None = None
    chunk = max(1, 2_000_000 // m)
    for lo in range(0, m, chunk):
        i = np.arange(lo, min(m, lo + chunk))
        diff = xy[i, None, :] - xy[None, :, :]
        dist = np.hypot(diff[..., 0], diff[..., 1])
        gap = np.abs(s[i, None] - s[None, :])
        arc = np.minimum(gap, length - gap)
        # Self-crossing: only segments whose start points lie within 2 steps can cross.
        ci, cj = np.nonzero((dist < 2.5 * h) & (arc > 1.5 * h))
        if ci.size and crossing is None:
            ii, jj = i[ci], cj
            hit = _segments_cross(xy[ii], nxt[ii], xy[jj], nxt[jj])
            if hit.any():
                q = int(np.argmax(hit))
                crossing = (float(s[ii[q]]), float(s[jj[q]]))
        # Overlap: non-neighbouring pairs closer than the road allows.
        need = wmax[i, None] + wmax[None, :] + margin
        bad = (arc > exclude) & (dist < need)
        if bad.any() and overlap is None:
            excess = np.where(bad, need - dist, -np.inf)
            a, b = np.unravel_index(int(np.argmax(excess)), excess.shape)
            overlap = (float(s[i[a]]), float(s[b]), float(dist[a, b]), float(need[a, b]))
    if crossing is not None:
        problems.append(
            f"centreline crosses itself near s={crossing[0]:.2f} m and s={crossing[1]:.2f} m"
        )
    if overlap is not None:
        sa, sb, dist_ab, need_ab = overlap
        problems.append(
            f"road overlaps itself: s={sa:.2f} m and s={sb:.2f} m are {dist_ab:.2f} m apart, "
            f"need at least {need_ab:.2f} m"
        )
    return problems
