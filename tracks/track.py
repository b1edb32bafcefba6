"""The ``Track``: a closed road given by a centreline and left/right half widths.

A track is built from control points of a closed loop. A periodic cubic spline
(chord-length parametrised, C2) is fitted through them and resampled densely and
uniformly by arc length (about every centimetre). Every query (point, tangent,
curvature, widths, projection) then works on those dense samples, interpolating
linearly between them, so it is cheap and vectorised.

Conventions: metres and radians; ``s`` is arc length from the first control
point in the driving direction and wraps modulo ``length``; the normal and
positive lateral offsets point to the LEFT of the driving direction; positive
curvature is a left (counter-clockwise) bend.
"""

from __future__ import annotations

import hashlib
import logging
import math
from array import array
from typing import Any, NamedTuple

import numpy as np

logger = logging.getLogger(__name__)

FORMAT_NAME = "trackpilot-track"
SCHEMA_VERSION = 1

#: Target spacing of the dense arc-length samples, metres.
DEFAULT_RESOLUTION = 0.01
#: Upper bound on the number of dense samples (km-long tracks get coarser sampling).
_MAX_DENSE = 200_000
#: Half size of the local search window used by ``project`` with a hint, metres.
_HINT_WINDOW = 2.0
#: A local projection farther than the road half width plus this is implausible.
_HINT_SLACK = 1.0
#: Sub-intervals per spline segment for the arc-length table.
_SUBDIV = 16
#: Gauss-Legendre nodes/weights on [0, 1] for arc-length quadrature.
_GL_X, _GL_W = np.polynomial.legendre.leggauss(5)
_GL_X = 0.5 * (_GL_X + 1.0)
_GL_W = 0.5 * _GL_W


class Projection(NamedTuple):
    """Where a point lies relative to the track (returned by ``Track.project``)."""

    s: float
    """Arc length of the closest centreline point, in [0, length)."""
    lateral: float
    """Signed offset from the centreline, + = left of the driving direction."""
    heading_error: float
    """``yaw - heading(s)`` wrapped to (-pi, pi]; 0.0 when no yaw was given."""
    half_width_left: float
    """Road half width to the left at ``s``."""
    half_width_right: float
    """Road half width to the right at ``s``."""

    @property
    def on_track(self) -> bool:
        """True when the point lies between the road edges."""
        return -self.half_width_right <= self.lateral <= self.half_width_left


class ProjectionArrays(NamedTuple):
    """Vectorised ``Projection`` (returned by ``Track.project_many``): one entry per point."""

    s: np.ndarray
    lateral: np.ndarray
    heading_error: np.ndarray
    half_width_left: np.ndarray
    half_width_right: np.ndarray


class TrackSamples(NamedTuple):
    """Regular samples along a track (returned by ``Track.resample``)."""

    s: np.ndarray  # (M,) arc lengths, s[0] == 0, last < length
    xy: np.ndarray  # (M, 2) centreline points
    tangent: np.ndarray  # (M, 2) unit tangents
    normal: np.ndarray  # (M, 2) unit left normals
    w_left: np.ndarray  # (M,) half widths to the left
    w_right: np.ndarray  # (M,) half widths to the right


class DenseSamples(NamedTuple):
    """The dense, uniform arc-length samples every query interpolates between."""

    s: np.ndarray  # (n,)
    xy: np.ndarray  # (n, 2)
    tangent: np.ndarray  # (n, 2)
    normal: np.ndarray  # (n, 2), left normal
    curvature: np.ndarray  # (n,), signed, + = left bend
    w_left: np.ndarray  # (n,)
    w_right: np.ndarray  # (n,)


def wrap_angle(a: float | np.ndarray) -> float | np.ndarray:
    """Wrap angles to (-pi, pi]."""
    return math.pi - np.mod(math.pi - np.asarray(a, dtype=float), 2.0 * math.pi)


# --------------------------------------------------------------------------- spline


def _solve_cyclic_tridiagonal(
    sub: np.ndarray, diag: np.ndarray, sup: np.ndarray, rhs: np.ndarray
) -> np.ndarray:
    """Solve a cyclic tridiagonal system (Sherman-Morrison + Thomas).

    Row i reads ``sub[i] * x[i-1] + diag[i] * x[i] + sup[i] * x[i+1] = rhs[i]`` with
    indices modulo n. ``rhs`` is (n, k). The spline systems are strictly diagonally
    dominant, so no pivoting is needed.
    """
    n = diag.shape[0]
    gamma = -diag[0]
    alpha = sup[n - 1]  # A[n-1, 0]
    beta = sub[0]  # A[0, n-1]
    b = diag.astype(float).copy()
    b[0] -= gamma
    b[n - 1] -= alpha * beta / gamma
    u = np.zeros((n, 1))
    u[0, 0] = gamma
    u[n - 1, 0] = alpha
    d = np.hstack([rhs, u]).astype(float)
    # Thomas algorithm on the non-cyclic part, all right-hand sides at once.
    cp = np.empty(n)
    cp[0] = sup[0] / b[0]
    d[0] /= b[0]
    for i in range(1, n):
        m = b[i] - sub[i] * cp[i - 1]
        cp[i] = sup[i] / m if i < n - 1 else 0.0
        d[i] = (d[i] - sub[i] * d[i - 1]) / m
    for i in range(n - 2, -1, -1):
        d[i] -= cp[i] * d[i + 1]
    x, z = d[:, :-1], d[:, -1:]
    fact = (x[0] + beta * x[n - 1] / gamma) / (1.0 + z[0, 0] + beta * z[n - 1, 0] / gamma)
    return x - z * fact


class _PeriodicSpline:
    """Periodic C2 cubic spline through closed-loop points, chord-length parametrised."""

    def __init__(self, pts: np.ndarray) -> None:
        n = pts.shape[0]
        nxt = np.roll(pts, -1, axis=0)
        h = np.hypot(*(nxt - pts).T)  # h[i] = |p[i+1] - p[i]|
        self.pts = pts
        self.h = h
        self.knots = np.concatenate([[0.0], np.cumsum(h)])  # n + 1 knots
        self.period = float(self.knots[-1])
        hp = np.roll(h, 1)  # h[i-1]
        slope = (nxt - pts) / h[:, None]
        rhs = 6.0 * (slope - np.roll(slope, 1, axis=0))
        self.m = _solve_cyclic_tridiagonal(hp, 2.0 * (hp + h), h, rhs)  # second derivatives
        self.n = n

    def _segment(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t = np.mod(t, self.period)
        i = np.clip(np.searchsorted(self.knots, t, side="right") - 1, 0, self.n - 1)
        return i, t - self.knots[i], self.h[i]

    def eval(self, t: np.ndarray, deriv: int = 0) -> np.ndarray:
        """Position (deriv=0), first (1) or second (2) derivative at parameters t."""
        i, u, h = self._segment(np.asarray(t, dtype=float))
        j = (i + 1) % self.n
        a = (h - u)[:, None]
        b = u[:, None]
        hh = h[:, None]
        mi, mj = self.m[i], self.m[j]
        pi, pj = self.pts[i], self.pts[j]
        if deriv == 0:
            return (
                mi * a**3 / (6 * hh)
                + mj * b**3 / (6 * hh)
                + (pi / hh - mi * hh / 6) * a
                + (pj / hh - mj * hh / 6) * b
            )
        if deriv == 1:
            return (
                -mi * a**2 / (2 * hh)
                + mj * b**2 / (2 * hh)
                - (pi / hh - mi * hh / 6)
                + (pj / hh - mj * hh / 6)
            )
        return (mi * a + mj * b) / hh


# --------------------------------------------------------------------------- Track


def _as_widths(value: float | np.ndarray, n: int, label: str) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    if arr.shape != (n,):
        raise ValueError(f"{label} must be a scalar or have shape ({n},), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{label} contains non-finite values")
    if np.any(arr <= 0):
        raise ValueError(f"{label} must be positive (min {arr.min():g})")
    return arr


class Track:
    """A closed road: centreline control points plus left/right half widths.

    Args:
        centreline: (N, 2) points of a closed loop in driving order, metres. Do not
            repeat the first point at the end (an exact repeat is dropped).
        half_width_left: scalar or (N,) road half width to the left, metres.
        half_width_right: scalar or (N,) road half width to the right, metres.
        name: a label; not part of the geometry (``geometry_hash`` ignores it).
        smooth: True fits a periodic C2 cubic spline through the points; False
            joins them with straight segments (for data that is already dense;
            curvature is then a finite difference and spikes at the vertices).
        resolution: spacing of the dense arc-length samples, metres.

    Raises:
        ValueError: non-finite values, fewer than 4 distinct points, non-positive
            widths, mismatched shapes or a zero-length loop.
    """

    def __init__(
        self,
        centreline: np.ndarray,
        half_width_left: float | np.ndarray,
        half_width_right: float | np.ndarray,
        name: str = "track",
        smooth: bool = True,
        resolution: float = DEFAULT_RESOLUTION,
    ) -> None:
        pts = np.array(centreline, dtype=float)
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise ValueError(f"centreline must have shape (N, 2), got {pts.shape}")
        if not np.all(np.isfinite(pts)):
            raise ValueError("centreline contains non-finite values")
        n_in = pts.shape[0]
        wl = _as_widths(half_width_left, n_in, "half_width_left")
        wr = _as_widths(half_width_right, n_in, "half_width_right")
        if not (math.isfinite(resolution) and resolution > 0):
            raise ValueError(f"resolution must be a positive number, got {resolution!r}")
        # Drop points that repeat their predecessor (incl. a closing repeat of the first).
        if n_in >= 2:
            keep = np.any(pts != np.roll(pts, 1, axis=0), axis=1)
            if not keep.any():
                raise ValueError("centreline is a zero-length loop (all points identical)")
            if not keep.all():
                logger.debug("track %r: dropping %d repeated point(s)", name, (~keep).sum())
                pts, wl, wr = pts[keep], wl[keep], wr[keep]
        if pts.shape[0] < 4:
            raise ValueError(f"centreline needs at least 4 distinct points, got {pts.shape[0]}")

        self._name = str(name)
        self._smooth = bool(smooth)
        self._resolution = float(resolution)
        self._ctrl = pts
        self._wl_ctrl = wl
        self._wr_ctrl = wr
        self._hash: str | None = None
        for a in (pts, wl, wr):
            a.setflags(write=False)
        self._build_dense()

    # ------------------------------------------------------------------ construction

    def _build_dense(self) -> None:
        pts = self._ctrl
        nctrl = pts.shape[0]
        if self._smooth:
            spl = _PeriodicSpline(pts)
            knots = spl.knots
            # Arc-length table: Gauss-Legendre quadrature on _SUBDIV pieces per segment.
            frac = np.arange(_SUBDIV) / _SUBDIV
            t0 = (knots[:-1, None] + spl.h[:, None] * frac[None, :]).ravel()
            dt = np.repeat(spl.h / _SUBDIV, _SUBDIV)
            tq = (t0[:, None] + dt[:, None] * _GL_X[None, :]).ravel()
            speed = np.hypot(*spl.eval(tq, 1).T).reshape(-1, _GL_X.size)
            piece = (speed * _GL_W[None, :]).sum(axis=1) * dt
            s_table = np.concatenate([[0.0], np.cumsum(piece)])
            t_table = np.concatenate([t0, [spl.period]])
            length = float(s_table[-1])
        else:
            knots = np.concatenate(
                [[0.0], np.cumsum(np.hypot(*np.diff(pts, axis=0, append=pts[:1]).T))]
            )
            length = float(knots[-1])
        if not (length > 0 and math.isfinite(length)):
            raise ValueError("centreline is a zero-length loop")

        n = max(64, math.ceil(length / self._resolution))
        if n > _MAX_DENSE:
            logger.info(
                "track %r is %.0f m long: dense sampling capped at %d",
                self._name,
                length,
                _MAX_DENSE,
            )
            n = _MAX_DENSE
        s = np.arange(n) * (length / n)
        closed = np.concatenate([pts, pts[:1]])
        if self._smooth:
            t = np.interp(s, s_table, t_table)
            xy = spl.eval(t, 0)
            d1 = spl.eval(t, 1)
            d2 = spl.eval(t, 2)
            sp = np.hypot(d1[:, 0], d1[:, 1])
            tangent = d1 / sp[:, None]
            curvature = (d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]) / sp**3
        else:
            t = s
            xy = np.column_stack(
                [np.interp(s, knots, closed[:, 0]), np.interp(s, knots, closed[:, 1])]
            )
            seg = np.clip(np.searchsorted(knots, s, side="right") - 1, 0, nctrl - 1)
            d = closed[seg + 1] - closed[seg]
            tangent = d / np.hypot(d[:, 0], d[:, 1])[:, None]
            head = np.unwrap(np.arctan2(tangent[:, 1], tangent[:, 0]))
            dhead = np.diff(
                head, append=head[:1] + 2 * math.pi * round((head[-1] - head[0]) / (2 * math.pi))
            )
            curvature = 0.5 * (dhead + np.roll(dhead, 1)) / (length / n)
        wl = np.interp(t, knots, np.concatenate([self._wl_ctrl, self._wl_ctrl[:1]]))
        wr = np.interp(t, knots, np.concatenate([self._wr_ctrl, self._wr_ctrl[:1]]))
        normal = np.column_stack([-tangent[:, 1], tangent[:, 0]])
        # Arc length of each control point (spline knots sit every _SUBDIV table rows).
        ctrl_s = s_table[: nctrl * _SUBDIV : _SUBDIV] if self._smooth else knots[:-1]
        ctrl_s = np.array(ctrl_s, dtype=float)
        for a in (s, xy, tangent, normal, curvature, wl, wr, ctrl_s):
            a.setflags(write=False)
        self._ctrl_s = ctrl_s
        self.dense = DenseSamples(s, xy, tangent, normal, curvature, wl, wr)
        self._length = length
        self._n = n
        self._ds = length / n
        self._inv_ds = n / length
        # Closed copies (first sample repeated) make interpolation free of modulo.
        self._xy_c = np.concatenate([xy, xy[:1]])
        self._tan_c = np.concatenate([tangent, tangent[:1]])
        self._k_c = np.concatenate([curvature, curvature[:1]])
        self._wl_c = np.concatenate([wl, wl[:1]])
        self._wr_c = np.concatenate([wr, wr[:1]])
        # Padded copies make the hint window a contiguous slice.
        self._win = math.ceil(_HINT_WINDOW / self._ds)
        w = self._win
        idx = np.arange(-w, n + w) % n if 2 * w + 1 <= n else np.arange(n)
        self._xpad = np.ascontiguousarray(xy[idx, 0])
        self._ypad = np.ascontiguousarray(xy[idx, 1])
        self._xs = np.ascontiguousarray(xy[:, 0])
        self._ys = np.ascontiguousarray(xy[:, 1])
        # Compact copies whose items index as Python floats, for the scalar refinement
        # step of ``project`` (numpy scalar arithmetic would be several times slower).
        self._xl = array("d", self._xy_c[:, 0].tobytes())
        self._yl = array("d", self._xy_c[:, 1].tobytes())
        self._txl = array("d", self._tan_c[:, 0].tobytes())
        self._tyl = array("d", self._tan_c[:, 1].tobytes())
        self._wll = array("d", self._wl_c.tobytes())
        self._wrl = array("d", self._wr_c.tobytes())

    # ------------------------------------------------------------------ properties

    @property
    def name(self) -> str:
        """The track's label."""
        return self._name

    @property
    def smooth(self) -> bool:
        """Whether the centreline is a spline (True) or a polyline (False)."""
        return self._smooth

    @property
    def length(self) -> float:
        """Centreline length, metres."""
        return self._length

    @property
    def resolution(self) -> float:
        """Spacing of the dense samples, metres."""
        return self._ds

    @property
    def control_points(self) -> np.ndarray:
        """The (N, 2) control points the track was built from (read-only)."""
        return self._ctrl

    @property
    def control_s(self) -> np.ndarray:
        """The (N,) arc lengths of the control points, in [0, length) (read-only)."""
        return self._ctrl_s

    @property
    def control_half_widths(self) -> tuple[np.ndarray, np.ndarray]:
        """The (N,) left and right half widths at the control points (read-only)."""
        return self._wl_ctrl, self._wr_ctrl

    @property
    def signed_area(self) -> float:
        """Shoelace area enclosed by the centreline; > 0 means counter-clockwise."""
        x, y = self._xs, self._ys
        return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))

    @property
    def orientation(self) -> str:
        """``"ccw"`` (counter-clockwise) or ``"cw"``."""
        return "ccw" if self.signed_area > 0 else "cw"

    @property
    def geometry_hash(self) -> str:
        """sha256 hex of the canonical geometry (control points and widths, micrometre
        rounding, interpolation kind); independent of the name."""
        if self._hash is None:  # the geometry is immutable: hash it once
            h = hashlib.sha256()
            h.update(
                f"trackpilot-geometry-v1;smooth={int(self._smooth)};n={len(self._ctrl)};".encode()
            )
            for arr in (self._ctrl, self._wl_ctrl, self._wr_ctrl):
                q = np.round(np.asarray(arr) * 1e6).astype("<i8")
                h.update(q.tobytes())
            self._hash = h.hexdigest()
        return self._hash

    @property
    def max_abs_curvature(self) -> float:
        """Largest |curvature| along the centreline, 1/m."""
        return float(np.max(np.abs(self.dense.curvature)))

    @property
    def min_radius(self) -> float:
        """Smallest radius of curvature along the centreline, metres."""
        k = self.max_abs_curvature
        return math.inf if k == 0 else 1.0 / k

    def __repr__(self) -> str:
        wl, wr = self.dense.w_left, self.dense.w_right
        return (
            f"Track(name={self._name!r}, length={self._length:.2f} m, "
            f"width={float(np.min(wl + wr)):.2f}-{float(np.max(wl + wr)):.2f} m, "
            f"min_radius={self.min_radius:.2f} m, {self.orientation}, "
            f"{len(self._ctrl)} control points)"
        )

    # ------------------------------------------------------------------ queries at s

    def _locate(self, s: float | np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        arr = np.asarray(s, dtype=float)
        scalar = arr.ndim == 0
        if not np.all(np.isfinite(arr)):
            raise ValueError("arc length s must be finite")
        u = np.mod(arr, self._length) * self._inv_ds
        i = np.minimum(np.floor(u).astype(np.intp), self._n - 1)
        f = u - i
        return i, f, scalar

    def _lerp(self, table: np.ndarray, s: float | np.ndarray) -> tuple[np.ndarray, bool]:
        i, f, scalar = self._locate(s)
        a, b = table[i], table[i + 1]
        if table.ndim == 2:
            f = f[..., None]
        return a + (b - a) * f, scalar

    def point(self, s: float | np.ndarray) -> np.ndarray:
        """Centreline point(s) at arc length s: (2,) for a scalar, (..., 2) otherwise."""
        return self._lerp(self._xy_c, s)[0]

    def tangent(self, s: float | np.ndarray) -> np.ndarray:
        """Unit tangent(s) in the driving direction at s."""
        t = self._lerp(self._tan_c, s)[0]
        return t / np.linalg.norm(t, axis=-1, keepdims=True)

    def normal(self, s: float | np.ndarray) -> np.ndarray:
        """Unit normal(s) pointing to the left of the driving direction at s."""
        t = self.tangent(s)
        return np.stack([-t[..., 1], t[..., 0]], axis=-1)

    def heading(self, s: float | np.ndarray) -> float | np.ndarray:
        """Heading (radians, atan2 of the tangent) at s; a float for a scalar s."""
        t, scalar = self._lerp(self._tan_c, s)
        h = np.arctan2(t[..., 1], t[..., 0])
        return float(h) if scalar else h

    def curvature(self, s: float | np.ndarray) -> float | np.ndarray:
        """Signed curvature (1/m, + = left bend) at s; a float for a scalar s."""
        k, scalar = self._lerp(self._k_c, s)
        return float(k) if scalar else k

    def half_widths(self, s: float | np.ndarray) -> tuple[Any, Any]:
        """(left, right) road half widths at s; floats for a scalar s."""
        wl, scalar = self._lerp(self._wl_c, s)
        wr, _ = self._lerp(self._wr_c, s)
        if scalar:
            return float(wl), float(wr)
        return wl, wr

    def start_pose(self) -> tuple[float, float, float]:
        """(x, y, yaw) of the centreline at s = 0, facing the driving direction."""
        x, y = self._xy_c[0]
        return float(x), float(y), float(self.heading(0.0))

    # ------------------------------------------------------------------ projection

    def _refine(self, j: int, x: float, y: float, yaw: float | None) -> tuple[Projection, float]:
        """Project (x, y) onto the two dense segments around sample j (scalar fast path).

        On a segment the foot is where ``p - point(s)`` is parallel to the interpolated
        normal (not the chord's), so ``point(s) + d * normal(s)`` projects back to
        exactly (s, d).
        """
        n = self._n
        xl, yl, txl, tyl = self._xl, self._yl, self._txl, self._tyl
        best = None
        for a in ((j - 1) % n, j):
            b = a + 1  # closed lists: index n is sample 0 again
            ax, ay = xl[a], yl[a]
            ex, ey = xl[b] - ax, yl[b] - ay
            px, py = x - ax, y - ay
            tax, tay = txl[a], tyl[a]
            dtx, tdy = txl[b] - tax, tyl[b] - tay
            # f(t) = (P - tE) . (Ta + t dT) = c0 + c1 t - c2 t^2; Newton from the chord foot.
            c0 = px * tax + py * tay
            c1 = px * dtx + py * tdy - ex * tax - ey * tay
            c2 = ex * dtx + ey * tdy
            t = (px * ex + py * ey) / (ex * ex + ey * ey)
            for _ in range(2):
                fp = c1 - 2.0 * c2 * t
                if fp == 0.0:
                    break
                t -= (c0 + c1 * t - c2 * t * t) / fp
            inside = 0.0 <= t <= 1.0
            if not inside:
                t = 0.0 if t < 0.0 else 1.0
            qx, qy = px - t * ex, py - t * ey
            d2 = qx * qx + qy * qy
            key = (not inside, d2)
            if best is None or key < best[0]:
                cross = (tax + t * dtx) * qy - (tay + t * tdy) * qx
                best = (key, a, t, cross)
        (_, d2), a, t, cross = best
        dist = math.sqrt(d2)
        lateral = dist if cross >= 0.0 else -dist
        s = (a + t) * self._ds
        if s >= self._length:
            s -= self._length
        wl = self._wll[a] + t * (self._wll[a + 1] - self._wll[a])
        wr = self._wrl[a] + t * (self._wrl[a + 1] - self._wrl[a])
        if yaw is None:
            err = 0.0
        else:
            tx = txl[a] + t * (txl[a + 1] - txl[a])
            ty = tyl[a] + t * (tyl[a + 1] - tyl[a])
            err = math.pi - (math.pi - (yaw - math.atan2(ty, tx))) % (2.0 * math.pi)
        return Projection(s, lateral, err, wl, wr), dist

    def project(
        self, x: float, y: float, s_hint: float | None = None, yaw: float | None = None
    ) -> Projection:
        """Closest centreline point to (x, y), as a ``Projection``.

        With ``s_hint`` (e.g. the previous step's s) only a window of +-2 m around the
        hint is searched; if the result lies on the window's border or farther from
        the centreline than the local half width + 1 m, a global search is done.
        ``yaw`` (radians) gives ``heading_error``; without it that field is 0.0.
        """
        x = float(x)
        y = float(y)
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ValueError(f"cannot project a non-finite point ({x}, {y})")
        if yaw is not None:
            yaw = float(yaw)
        if s_hint is not None and not math.isfinite(s_hint):
            s_hint = None  # a lost hint only costs a global search
        n, w = self._n, self._win
        if s_hint is not None and 2 * w + 1 <= n:
            h = int((float(s_hint) % self._length) * self._inv_ds + 0.5) % n
            dx = self._xpad[h : h + 2 * w + 1] - x
            dy = self._ypad[h : h + 2 * w + 1] - y
            k = int((dx * dx + dy * dy).argmin())
            if 0 < k < 2 * w:
                proj, dist = self._refine((h - w + k) % n, x, y, yaw)
                side = proj.half_width_left if proj.lateral >= 0 else proj.half_width_right
                if dist <= side + _HINT_SLACK:
                    return proj
        dx = self._xs - x
        dy = self._ys - y
        j = int((dx * dx + dy * dy).argmin())
        return self._refine(j, x, y, yaw)[0]

    def project_many(self, xy: np.ndarray, yaw: np.ndarray | None = None) -> ProjectionArrays:
        """Vectorised global projection of (M, 2) points (offline use)."""
        pts = np.asarray(xy, dtype=float)
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise ValueError(f"xy must have shape (M, 2), got {pts.shape}")
        if not np.all(np.isfinite(pts)):
            raise ValueError("xy contains non-finite values")
        m, n = pts.shape[0], self._n
        j = np.empty(m, dtype=np.intp)
        chunk = max(1, 2_000_000 // n)
        for lo in range(0, m, chunk):
            p = pts[lo : lo + chunk]
            d2 = (p[:, 0:1] - self._xs[None, :]) ** 2 + (p[:, 1:2] - self._ys[None, :]) ** 2
            j[lo : lo + chunk] = d2.argmin(axis=1)
        best_inside = np.zeros(m, dtype=bool)
        best_d2 = np.full(m, np.inf)
        best_a = np.zeros(m, dtype=np.intp)
        best_t = np.zeros(m)
        best_cross = np.zeros(m)
        for a in ((j - 1) % n, j):
            e = self._xy_c[a + 1] - self._xy_c[a]
            ta = self._tan_c[a]
            dt = self._tan_c[a + 1] - ta
            p = pts - self._xy_c[a]
            c0 = np.einsum("ij,ij->i", p, ta)
            c1 = np.einsum("ij,ij->i", p, dt) - np.einsum("ij,ij->i", e, ta)
            c2 = np.einsum("ij,ij->i", e, dt)
            t = np.einsum("ij,ij->i", p, e) / np.einsum("ij,ij->i", e, e)
            for _ in range(2):
                fp = c1 - 2.0 * c2 * t
                safe = np.where(fp == 0.0, 1.0, fp)
                t = np.where(fp == 0.0, t, t - (c0 + c1 * t - c2 * t * t) / safe)
            inside = (t >= 0.0) & (t <= 1.0)
            t = np.clip(t, 0.0, 1.0)
            q = p - t[:, None] * e
            d2 = np.einsum("ij,ij->i", q, q)
            # Prefer a foot strictly inside a segment, then the nearer one (as in _refine).
            better = (inside & ~best_inside) | ((inside == best_inside) & (d2 < best_d2))
            tan = ta + t[:, None] * dt
            best_inside = best_inside | inside
            best_d2 = np.where(better, d2, best_d2)
            best_a = np.where(better, a, best_a)
            best_t = np.where(better, t, best_t)
            best_cross = np.where(better, tan[:, 0] * q[:, 1] - tan[:, 1] * q[:, 0], best_cross)
        dist = np.sqrt(best_d2)
        lateral = np.where(best_cross >= 0, dist, -dist)
        s = np.mod((best_a + best_t) * self._ds, self._length)
        wl = self._wl_c[best_a] + best_t * (self._wl_c[best_a + 1] - self._wl_c[best_a])
        wr = self._wr_c[best_a] + best_t * (self._wr_c[best_a + 1] - self._wr_c[best_a])
        if yaw is None:
            err = np.zeros(m)
        else:
            tan = self._tan_c[best_a] + best_t[:, None] * (
                self._tan_c[best_a + 1] - self._tan_c[best_a]
            )
            err = wrap_angle(np.asarray(yaw, dtype=float) - np.arctan2(tan[:, 1], tan[:, 0]))
        return ProjectionArrays(s, lateral, np.asarray(err), wl, wr)

    # ------------------------------------------------------------------ sampling

    def resample(self, spacing: float) -> TrackSamples:
        """Samples every ~``spacing`` metres (the loop is split into equal steps)."""
        if not (math.isfinite(spacing) and spacing > 0):
            raise ValueError(f"spacing must be a positive number, got {spacing!r}")
        m = max(4, round(self._length / spacing))
        s = np.arange(m) * (self._length / m)
        wl, wr = self.half_widths(s)
        return TrackSamples(s, self.point(s), self.tangent(s), self.normal(s), wl, wr)

    def edges(self, spacing: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(left, right) road edge polylines, (M, 2) each; dense samples if no spacing."""
        if spacing is None:
            d = self.dense
            xy, nrm, wl, wr = d.xy, d.normal, d.w_left, d.w_right
        else:
            smp = self.resample(spacing)
            xy, nrm, wl, wr = smp.xy, smp.normal, smp.w_left, smp.w_right
        return xy + nrm * wl[:, None], xy - nrm * wr[:, None]

    def adaptive_samples(self, max_angle_deg: float = 4.0, max_spacing: float = 0.5) -> np.ndarray:
        """Arc lengths (starting at 0, all < length) such that between consecutive
        samples, and from the last one back to 0, the heading turns by at most
        ``max_angle_deg`` and the distance is at most ``max_spacing``: few samples on
        straights, many in tight bends."""
        if not (max_angle_deg > 0 and max_spacing > 0):
            raise ValueError("max_angle_deg and max_spacing must be positive")
        tan = self._tan_c
        step = np.abs(
            np.arctan2(
                tan[:-1, 0] * tan[1:, 1] - tan[:-1, 1] * tan[1:, 0],
                np.einsum("ij,ij->i", tan[:-1], tan[1:]),
            )
        )
        turn = np.concatenate([[0.0], np.cumsum(step)])  # n + 1 entries, last = back at s=0
        s = np.arange(self._n + 1) * self._ds
        max_turn = math.radians(max_angle_deg)
        out = [0]
        k = 0
        while True:
            a = np.searchsorted(turn, turn[k] + max_turn + 1e-12, side="right") - 1
            b = np.searchsorted(s, s[k] + max_spacing + 1e-12, side="right") - 1
            nxt = max(int(min(a, b)), k + 1)
            if nxt >= self._n:
                break
            out.append(nxt)
            k = nxt
        return s[np.asarray(out)]

    # ------------------------------------------------------------------ transforms, io

    def reversed(self, name: str | None = None) -> Track:
        """The same road driven the other way; s = 0 stays at the same place.

        Left and right widths swap and the orientation flips. The name gets the
        suffix ``-rev`` (or loses it, when reversing a reversed track) unless given.
        """
        order = np.concatenate([[0], np.arange(len(self._ctrl) - 1, 0, -1)])
        if name is None:
            name = self._name[:-4] if self._name.endswith("-rev") else f"{self._name}-rev"
        return Track(
            self._ctrl[order],
            self._wr_ctrl[order],
            self._wl_ctrl[order],
            name=name,
            smooth=self._smooth,
            resolution=self._resolution,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (raw control points and widths)."""
        return {
            "format": FORMAT_NAME,
            "schema_version": SCHEMA_VERSION,
            "name": self._name,
            "smooth": self._smooth,
            "centreline": self._ctrl.tolist(),
            "half_width_left": self._wl_ctrl.tolist(),
            "half_width_right": self._wr_ctrl.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Track:
        """Inverse of ``to_dict``, with strict types (a JSON track file's content).

        Raises ValueError on a wrong format or schema version, an unknown or missing
        field, a ``name`` that is not a string, a ``smooth`` that is not a bool, or
        geometry that is not numbers (bools and numeric strings are refused).
        """
        if not isinstance(d, dict):
            raise ValueError(f"expected a JSON object, got {type(d).__name__}")
        if d.get("format") != FORMAT_NAME:
            raise ValueError(f"format is {d.get('format')!r}, expected {FORMAT_NAME!r}")
        version = d.get("schema_version")
        if isinstance(version, bool) or version != SCHEMA_VERSION:
            raise ValueError(f"unsupported schema_version {version!r} (expected {SCHEMA_VERSION})")
        unknown = sorted(str(k) for k in d if k not in _DICT_FIELDS)
        if unknown:
            raise ValueError(
                f"unknown field(s): {', '.join(unknown)} (expected {', '.join(_DICT_FIELDS)})"
            )
        missing = [k for k in ("centreline", "half_width_left", "half_width_right") if k not in d]
        if missing:
            raise ValueError(f"missing field(s): {', '.join(missing)}")
        name = d.get("name", "track")
        if not isinstance(name, str):
            raise ValueError(f"name must be a string, got {type(name).__name__} {name!r:.40}")
        smooth = d.get("smooth", True)
        if not isinstance(smooth, bool):
            raise ValueError(f"smooth must be true or false, got {smooth!r:.40}")
        centreline = _numbers(d["centreline"], "centreline", pairs=True)
        n = len(centreline)
        wl = _numbers(d["half_width_left"], "half_width_left", length=n)
        wr = _numbers(d["half_width_right"], "half_width_right", length=n)
        return cls(centreline, wl, wr, name=name, smooth=smooth)


#: The fields of ``Track.to_dict``.
_DICT_FIELDS = (
    "format",
    "schema_version",
    "name",
    "smooth",
    "centreline",
    "half_width_left",
    "half_width_right",
)


def _is_real(v: Any) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(
        v, bool | np.bool_
    )


def _numbers(value: Any, label: str, *, pairs: bool = False, length: int = -1) -> np.ndarray:
    """``value`` as a float array, refusing anything but real numbers: a list of
    ``[x, y]`` pairs (``pairs``), else one number or a list of ``length`` numbers."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "iuf":
            raise ValueError(f"{label} must be numbers, got an array of {value.dtype}")
        return value.astype(float)
    if pairs:
        if not isinstance(value, list | tuple):
            raise ValueError(f"{label} must be a list of [x, y] pairs, got {type(value).__name__}")
        for i, p in enumerate(value):
            if not (
                isinstance(p, list | tuple) and len(p) == 2 and _is_real(p[0]) and _is_real(p[1])
            ):
                raise ValueError(f"{label}[{i}] must be a pair of numbers [x, y], got {p!r:.60}")
        return np.array(value, dtype=float).reshape(-1, 2)
    if _is_real(value):
        return np.full(length, float(value))
    if not isinstance(value, list | tuple):
        raise ValueError(
            f"{label} must be a number or a list of numbers, got {type(value).__name__}"
        )
    for i, v in enumerate(value):
        if not _is_real(v):
            raise ValueError(f"{label}[{i}] must be a number, got {v!r:.60}")
    return np.array(value, dtype=float)
