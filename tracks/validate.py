"""The one drivability check of a ``Track``, applied to tracks from every source.

``validate_track`` lists what makes a track undrivable for the car (road width,
bend radius, self-intersection, edge overlap; thresholds in ``tracks.limits``).
``require_drivable`` is what loaders and ``TrackEnv`` call: it also enforces the
size limits, remembers the answer per geometry (a track is checked once per
process, however often it is loaded or reset), and raises a one-line
``ValueError`` naming the check and where the track fails, unless
``allow_undrivable=True``, which logs a warning instead.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from tracks.limits import (
    EDGE_MARGIN,
    MAX_COORDINATE,
    MAX_HALF_WIDTH,
    MAX_TRACK_LENGTH,
    MIN_HALF_WIDTH,
    MIN_TURNING_RADIUS,
)
from tracks.track import Track

logger = logging.getLogger(__name__)

#: Pairwise checks run on samples this far apart at least (metres) ...
_MIN_CHECK_SPACING = 0.05
#: ... and on at most this many samples (km-long tracks get coarser checks).
_MAX_CHECK_SAMPLES = 4000
#: Rows of the pairwise check handled at once (a short stretch of road, whose
#: bounding box selects the few samples that can be near it).
_PAIR_CHUNK = 64
#: Answers of ``require_drivable`` kept, by geometry and thresholds.
_CACHE_SIZE = 512

_checked: dict[tuple, tuple[str | None, tuple[str, ...]]] = {}
_warned: set[tuple] = set()


def _segments_cross(p: np.ndarray, q: np.ndarray, r: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Whether segments p->q and r->t properly intersect (vectorised over rows)."""

    def orient(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
        return (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])

    o1, o2 = orient(p, q, r), orient(p, q, t)
    o3, o4 = orient(r, t, p), orient(r, t, q)
    return (o1 * o2 <= 0) & (o3 * o4 <= 0) & ((o1 != 0) | (o2 != 0))


def _where(track: Track, s: float) -> str:
    """``s=12.34 m (point 17 of 60)``: an arc length and the nearest control point."""
    cs = track.control_s
    gap = np.abs(cs - s)
    i = int(np.argmin(np.minimum(gap, track.length - gap)))
    return f"s={s:.2f} m (point {i} of {len(cs)})"


def _bend_curvature(track: Track) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(s, signed curvature, w_left, w_right) at which bends are checked.

    A spline's own curvature at the dense samples, made infinite where it is not
    finite or where the tangent turns back by more than 90 degrees between two
    samples (a cusp: collinear or doubled-back points). A polyline's curvature at
    each vertex is its turning angle over the mean length of the two segments that
    meet there (the discrete curvature; its dense curvature is a finite difference
    that spikes at every vertex).
    """
    d = track.dense
    if track.smooth:
        k = np.array(d.curvature, dtype=float)
        tan = d.tangent
        dot = np.einsum("ij,ij->i", tan, np.roll(tan, -1, axis=0))
        bad = ~np.isfinite(k) | ~np.isfinite(dot) | (dot <= 0.0)
        k[bad] = np.inf
        return d.s, k, d.w_left, d.w_right
    pts = track.control_points
    e_in = pts - np.roll(pts, 1, axis=0)  # segment ending at each vertex
    e_out = np.roll(e_in, -1, axis=0)  # segment starting at it
    turn = np.arctan2(
        e_in[:, 0] * e_out[:, 1] - e_in[:, 1] * e_out[:, 0],
        np.einsum("ij,ij->i", e_in, e_out),
    )
    mean_len = 0.5 * (np.hypot(*e_in.T) + np.hypot(*e_out.T))
    k = turn / mean_len
    k[np.abs(turn) > math.pi - 1e-6] = np.inf  # the polyline doubles back
    wl, wr = track.control_half_widths
    return track.control_s, k, wl, wr


def validate_track(
    track: Track,
    min_radius: float = MIN_TURNING_RADIUS,
    margin: float = EDGE_MARGIN,
    min_half_width: float = MIN_HALF_WIDTH,
) -> list[str]:
    """Problems that make ``track`` undrivable for a car turning no tighter than
    ``min_radius`` and needing ``min_half_width`` of road on each side; an empty
    list means the track is fine. Each problem is one line naming the check and
    where it fails (arc length ``s`` and the nearest control point).

    Checks (defaults from ``tracks.limits``, i.e. the default car):
      * the road is at least ``min_half_width`` wide on each side of the centreline;
      * the centreline's minimum radius is at least ``min_radius`` (a cusp, where
        the centreline turns back on itself, has radius 0);
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
    for side, w in (("left", d.w_left), ("right", d.w_right)):
        i = int(np.argmin(w))
        if w[i] < min_half_width:
            problems.append(
                f"road too narrow: {side} half width {w[i]:.3g} m at {_where(track, d.s[i])} "
                f"is below the required {min_half_width:.3g} m"
            )
    bs, k, bwl, bwr = _bend_curvature(track)
    kabs = np.abs(k)
    j = int(np.argmax(kabs))
    r_min = 1.0 / kabs[j] if kabs[j] > 0 else math.inf
    if r_min < min_radius:
        what = "a cusp: the centreline turns back on itself" if r_min == 0 else "a bend too tight"
        problems.append(
            f"min radius {r_min:.3f} m at {_where(track, bs[j])} is below the required "
            f"{min_radius:.3g} m ({what})"
        )
    inner = np.where(k >= 0, bwl, bwr)
    with np.errstate(invalid="ignore"):
        slack = 1.0 - kabs * (inner + margin)  # < 0: inner edge radius below margin
    slack[~np.isfinite(kabs)] = np.inf  # a cusp: reported by the radius check above
    if np.any(slack < 0):
        i = int(np.argmin(slack))
        r_i = 1 / kabs[i] if kabs[i] > 0 else math.inf
        problems.append(
            f"inner edge radius {r_i - inner[i]:.3f} m at {_where(track, bs[i])} is below "
            f"the margin {margin:g} m (half width {inner[i]:.2f} m, radius {r_i:.2f} m): "
            "the inner edge folds over itself"
        )

    length = track.length
    m = max(8, min(_MAX_CHECK_SAMPLES, math.ceil(length / _MIN_CHECK_SPACING)))
    smp = track.resample(length / m)
    xy = smp.xy
    m = len(xy)
    wmax = np.maximum(smp.w_left, smp.w_right)
    s = smp.s
    h = length / m
    # Samples nearer along the road than half the tightest allowed circle cannot face
    # each other (on a track that passes the radius check; one that fails it is
    # reported for that, and this keeps its neighbours from counting as overlaps).
    r_pair = max(r_min, min_radius)
    exclude = math.pi * min(r_pair, length / (2 * math.pi)) if math.isfinite(r_pair) else length
    nxt = np.roll(xy, -1, axis=0)
    reach = max(2.5 * h, 2 * float(wmax.max()) + margin)  # farther apart never matters

    crossing: tuple[float, float] | None = None
    overlap: tuple[float, float, float, float] | None = None
    best_excess = -math.inf
    for lo in range(0, m, _PAIR_CHUNK):
        i = np.arange(lo, min(m, lo + _PAIR_CHUNK))
        box_lo = xy[i].min(axis=0) - reach
        box_hi = xy[i].max(axis=0) + reach
        near = np.nonzero(np.all((xy >= box_lo) & (xy <= box_hi), axis=1))[0]
        diff = xy[i, None, :] - xy[None, near, :]
        dist = np.hypot(diff[..., 0], diff[..., 1])
        gap = np.abs(s[i, None] - s[None, near])
        arc = np.minimum(gap, length - gap)
        # Self-crossing: only segments whose start points lie within 2 steps can cross.
        ci, cj = np.nonzero((dist < 2.5 * h) & (arc > 1.5 * h))
        if ci.size and crossing is None:
            ii, jj = i[ci], near[cj]
            hit = _segments_cross(xy[ii], nxt[ii], xy[jj], nxt[jj])
            if hit.any():
                q = int(np.argmax(hit))
                crossing = (float(s[ii[q]]), float(s[jj[q]]))
        # Overlap: non-neighbouring pairs closer than the road allows.
        need = wmax[i, None] + wmax[None, near] + margin
        bad = (arc > exclude) & (dist < need)
        if bad.any():
            excess = np.where(bad, need - dist, -np.inf)
            a, b = np.unravel_index(int(np.argmax(excess)), excess.shape)
            if excess[a, b] > best_excess:
                best_excess = float(excess[a, b])
                overlap = (float(s[i[a]]), float(s[near[b]]), float(dist[a, b]), float(need[a, b]))
    if crossing is not None:
        problems.append(
            f"centreline crosses itself near {_where(track, crossing[0])} and "
            f"{_where(track, crossing[1])}"
        )
    if overlap is not None:
        sa, sb, dist_ab, need_ab = overlap
        problems.append(
            f"road overlaps itself: {_where(track, sa)} and {_where(track, sb)} are "
            f"{dist_ab:.2f} m apart, need at least {need_ab:.2f} m (edges of two parts of "
            "the road overlap)"
        )
    return problems


def size_problem(track: Track) -> str | None:
    """The first size limit of ``tracks.limits`` that ``track`` breaks, or None."""
    pts = track.control_points
    big = float(np.max(np.abs(pts)))
    if big > MAX_COORDINATE:
        i = int(np.argmax(np.max(np.abs(pts), axis=1)))
        return (
            f"coordinate {big:.6g} m at point {i} of {len(pts)} exceeds the limit "
            f"{MAX_COORDINATE:g} m (MAX_COORDINATE)"
        )
    wl, wr = track.control_half_widths
    widest = float(max(wl.max(), wr.max()))
    if widest > MAX_HALF_WIDTH:
        return f"half width {widest:.6g} m exceeds the limit {MAX_HALF_WIDTH:g} m (MAX_HALF_WIDTH)"
    if track.length > MAX_TRACK_LENGTH:
        return (
            f"centreline length {track.length:.6g} m exceeds the limit "
            f"{MAX_TRACK_LENGTH:g} m (MAX_TRACK_LENGTH)"
        )
    return None


def require_drivable(
    track: Track,
    *,
    allow_undrivable: bool = False,
    min_radius: float = MIN_TURNING_RADIUS,
    min_half_width: float = MIN_HALF_WIDTH,
    margin: float = EDGE_MARGIN,
    source: str | None = None,
) -> Track:
    """``track`` itself, once it has passed the size limits and ``validate_track``.

    The answer is remembered per geometry and thresholds, so calling this for every
    load or reset costs a hash and a lookup after the first time.

    Raises:
        ValueError: one line, ``"<source>: ..."`` (``source`` defaults to the track's
            name): a size limit (always), or ``"undrivable track: <problems>"``
            unless ``allow_undrivable``, in which case the problems are logged as a
            warning (once per geometry) and the track is returned.
    """
    key = (track.geometry_hash, float(min_radius), float(min_half_width), float(margin))
    hit = _checked.get(key)
    if hit is None:
        size = size_problem(track)
        problems = () if size else tuple(validate_track(track, min_radius, margin, min_half_width))
        if len(_checked) >= _CACHE_SIZE:
            _checked.clear()
        hit = _checked[key] = (size, problems)
    size, problems = hit
    label = source if source is not None else f"track {track.name!r}"
    if size:
        raise ValueError(f"{label}: {size}")
    if problems:
        text = f"{label}: undrivable track: {'; '.join(problems)}"
        if not allow_undrivable:
            raise ValueError(
                f"{text} (allow_undrivable=True loads it anyway; --allow-undrivable in "
                "sim.record and tracks.plot)"
            )
        if key not in _warned:
            _warned.add(key)
            logger.warning("%s (loaded anyway: allow_undrivable)", text)
    return track
