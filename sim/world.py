"""The PyBullet world built from a ``tracks.Track``: ground, road, markings, camera.

The road is visual only (flat triangle meshes a millimetre above a collision
plane), so physics sees one flat ground with one friction everywhere and
off-track is decided geometrically. TinyRenderer's cost grows with the number
of triangles and of covered pixels, so the road is meshed adaptively (few
segments on straights) and the markings are thin separate meshes. The chase
and top-down views draw these meshes; the car camera ray-casts the same
meshes rasterised from above (``sim.plane``) and hides them from TinyRenderer.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np
import pybullet as p

from sim.plane import LabelRaster, label_raster, pixel_offsets
from tracks import Track


@dataclass(frozen=True)
class Colors:
    """RGBA colours of the scene (domain randomisation replaces them)."""

    ground: tuple[float, float, float, float] = (0.32, 0.52, 0.28, 1.0)
    sky: tuple[float, float, float, float] = (0.78, 0.86, 0.95, 1.0)
    road: tuple[float, float, float, float] = (0.27, 0.27, 0.29, 1.0)
    edge: tuple[float, float, float, float] = (0.95, 0.95, 0.95, 1.0)
    centre: tuple[float, float, float, float] = (0.95, 0.80, 0.10, 1.0)
    start: tuple[float, float, float, float] = (0.85, 0.10, 0.10, 1.0)


@dataclass(frozen=True)
class CameraSpec:
    """The forward camera, mounted where a DonkeyCar-style RC car carries it."""

    height: float = 0.20  # m above the ground
    forward: float = 0.30  # m ahead of the car's base origin (rear axle)
    pitch_deg: float = 20.0  # downward tilt
    hfov_deg: float = 100.0  # horizontal field of view (wide-angle lens)
    near: float = 0.05
    far: float = 12.0

    def vfov_deg(self, width: int, height: int) -> float:
        h = math.radians(self.hfov_deg)
        return math.degrees(2 * math.atan(math.tan(h / 2) * height / width))


@dataclass(frozen=True)
class RoadStyle:
    edge_line_width: float = 0.05  # m, painted inside the road edge
    centre_line_width: float = 0.03
    dash_length: float = 0.15
    dash_gap: float = 0.15
    start_line_width: float = 0.06
    colors: Colors = field(default_factory=Colors)


def _strip_mesh(
    left: np.ndarray, right: np.ndarray, z: float
) -> tuple[list[list[float]], list[int]]:
    """Quads between two polylines (open, K points each), wound to face up."""
    k = len(left)
    verts = np.empty((2 * k, 3))
    verts[0::2, :2] = left
    verts[1::2, :2] = right
    verts[:, 2] = z
    # left->right is the -normal direction; with the tangent forward these
    # orderings give counter-clockwise triangles seen from above.
    a = 2 * np.arange(k - 1)[:, None]
    idx = (a + np.array([0, 1, 2, 2, 1, 3])[None, :]).ravel()
    return verts.tolist(), idx.tolist()


def _quads_mesh(quads: np.ndarray, z: float) -> tuple[list[list[float]], list[int]]:
    """Independent quads, (K, 4, 2), each as [l0, r0, l1, r1]."""
    quads = np.asarray(quads, dtype=float).reshape(-1, 4, 2)
    k = len(quads)
    verts = np.empty((k * 4, 3))
    verts[:, :2] = quads.reshape(-1, 2)
    verts[:, 2] = z
    base = 4 * np.arange(k)[:, None]
    idx = (base + np.array([0, 1, 2, 2, 1, 3])[None, :]).ravel()
    return verts.tolist(), idx.tolist()


# Which colour of ``Colors`` each road mesh takes.
_COLOR_OF = {
    "road": "road",
    "edge_left": "edge",
    "edge_right": "edge",
    "centre": "centre",
    "start": "start",
}

_MESHES: dict[tuple, dict[str, tuple[list, list]]] = {}


def road_meshes(track: Track, style: RoadStyle) -> dict[str, tuple[list, list]]:
    """Vertex and index lists of the road meshes of ``track``, cached per geometry.

    Cached, and handed to PyBullet as the very same list objects every time:
    ``createVisualShape(vertices=..., indices=...)`` keeps a reference to the
    lists it is given and never releases it (PyBullet 3.2.7), so fresh lists on
    every world build would grow memory by ~0.2 MB per env or reset.
    """
    key = (track.geometry_hash, style)
    if key in _MESHES:
        return _MESHES[key]
    st = style
    s = np.asarray(track.adaptive_samples(max_angle_deg=6.0, max_spacing=1.0), dtype=float)
    s = np.append(s, track.length)  # close the loop
    pts = track.point(s)
    nrm = track.normal(s)
    wl, wr = track.half_widths(s)
    wl = np.asarray(wl)[:, None]
    wr = np.asarray(wr)[:, None]
    left_edge = pts + nrm * wl
    right_edge = pts - nrm * wr
    ew = st.edge_line_width
    meshes = {
        "road": _strip_mesh(left_edge, right_edge, 0.001),
        "edge_left": _strip_mesh(left_edge, pts + nrm * (wl - ew), 0.0015),
        "edge_right": _strip_mesh(pts - nrm * (wr - ew), right_edge, 0.0015),
    }
    # Dashed centre line: one quad per dash, sampled at its own ends.
    period = st.dash_length + st.dash_gap
    starts = np.arange(st.dash_gap / 2, track.length - st.dash_length, period)
    ends = starts + st.dash_length
    hw = st.centre_line_width / 2
    p0, n0 = track.point(starts), track.normal(starts) * hw
    p1, n1 = track.point(ends), track.normal(ends) * hw
    meshes["centre"] = _quads_mesh(np.stack([p0 + n0, p0 - n0, p1 + n1, p1 - n1], axis=1), 0.0015)
    # Start/finish line across the road at s = 0.
    ss = np.array([0.0, st.start_line_width])
    pp, nn = track.point(ss), track.normal(ss)
    l0, r0 = track.half_widths(0.0)
    q = np.array([pp[0] + nn[0] * l0, pp[0] - nn[0] * r0, pp[1] + nn[1] * l0, pp[1] - nn[1] * r0])
    meshes["start"] = _quads_mesh([q], 0.002)
    meshes = {k: v for k, v in meshes.items() if v[1]}
    _MESHES[key] = meshes
    return meshes


class World:
    """Ground, road and markings for one track in one BulletClient."""

    def __init__(self, client, style: RoadStyle | None = None) -> None:
        self.client = client
        self.style = style or RoadStyle()
        self.track: Track | None = None
        self.bodies: dict[str, int] = {}
        self._colors = self.style.colors
        self._road_visible = True
        self._raster = None

    def build_ground(self) -> None:
        c = self.client
        col = c.createCollisionShape(p.GEOM_PLANE)
        # Collision only: the ground is painted by the renderer (see ground_mask).
        self.bodies["ground"] = c.createMultiBody(0, col, -1, [0, 0, 0])
        # Without a visual shape TinyRenderer draws the collision plane itself
        # (about 1 ms per 96x96 frame); a transparent colour makes it skip it.
        c.changeVisualShape(self.bodies["ground"], -1, rgbaColor=[1, 1, 1, 0])
        c.changeDynamics(self.bodies["ground"], -1, lateralFriction=1.0)

    def build_track(self, track: Track) -> None:
        """Mesh ``track`` into road, edge lines, dashed centre line and start line."""
        c = self.client
        self.track = track
        self._raster = None
        for name, (verts, idx) in road_meshes(track, self.style).items():
            rgba = self._rgba(name)
            vis = c.createVisualShape(p.GEOM_MESH, vertices=verts, indices=idx, rgbaColor=rgba)
            self.bodies[name] = c.createMultiBody(0, -1, vis, [0, 0, 0])

    def _rgba(self, name: str) -> tuple:
        r, g, b, a = getattr(self._colors, _COLOR_OF[name])
        return (r, g, b, a if self._road_visible else 0.0)

    @property
    def raster(self) -> LabelRaster:
        """The road's paint as a top-down label raster (``sim.plane``), built on
        first use and shared by every world with the same geometry and style."""
        if self._raster is None:
            key = (self.track.geometry_hash, self.style)
            self._raster = label_raster(road_meshes(self.track, self.style), key)
        return self._raster

    @property
    def road_visible(self) -> bool:
        return self._road_visible

    def set_road_visible(self, visible: bool) -> None:
        """Show or hide the road meshes from TinyRenderer (a fully transparent
        body is skipped). The car camera ray-casts the road (``sim.plane``) and
        hides the meshes; chase and top-down views draw them."""
        if visible == self._road_visible:
            return
        self._road_visible = visible
        self._apply_colors()

    @property
    def colors(self) -> Colors:
        return self._colors

    def recolor(self, colors: Colors) -> None:
        """Apply new colours to the existing bodies (domain randomisation)."""
        self._colors = colors
        self._apply_colors()

    def _apply_colors(self) -> None:
        for name in _COLOR_OF:
            if name in self.bodies:
                self.client.changeVisualShape(self.bodies[name], -1, rgbaColor=self._rgba(name))


@dataclass(frozen=True)
class View:
    """A pinhole view: matrices for PyBullet plus the basis to find the ground."""

    view: list[float]
    proj: list[float]
    look: np.ndarray  # unit forward
    right: np.ndarray  # unit right
    up: np.ndarray  # unit up (image up)
    vfov_deg: float
    width: int
    height: int
    eye: np.ndarray  # camera position
    near: float
    far: float


def _cross(a, b) -> np.ndarray:
    # 3-vector cross product without np.cross's generality (it is on the hot path)
    return np.array(
        [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
    )


def make_view(
    client, eye, look, up_hint, vfov_deg: float, width: int, height: int, near: float, far: float
) -> View:
    eye = np.asarray(eye, dtype=float)
    f = np.asarray(look, dtype=float)
    f = f / math.sqrt(f @ f)
    r = _cross(f, np.asarray(up_hint, dtype=float))
    r = r / math.sqrt(r @ r)
    u = _cross(r, f)
    view = client.computeViewMatrix(eye.tolist(), (eye + f).tolist(), u.tolist())
    proj = _projection(float(vfov_deg), width / height, float(near), float(far))
    return View(view, proj, f, r, u, vfov_deg, width, height, eye, float(near), float(far))


@functools.lru_cache(maxsize=32)
def _projection(vfov_deg: float, aspect: float, near: float, far: float) -> tuple:
    # Depends only on its arguments (no physics client state), so it is cached.
    return tuple(
        p.computeProjectionMatrixFOV(fov=vfov_deg, aspect=aspect, nearVal=near, farVal=far)
    )


def ground_mask(v: View) -> np.ndarray:
    """Pixels whose camera ray points down, i.e. would meet the ground plane.

    The ground is not drawn as a mesh: TinyRenderer's cost is per covered
    pixel, and a ground plane under the road would draw most pixels twice.
    Pixels the rasteriser leaves empty are filled with the ground colour
    where this mask is set and with the sky colour elsewhere; for a flat,
    uniformly lit, untextured ground that is the same picture.
    """
    # Fills what TinyRenderer left empty, so at the points it samples.
    xs, ys = pixel_offsets(v.width, v.height, float(v.vfov_deg), "tinyrenderer")
    z = v.look[2] + xs[None, :] * v.right[2] + ys[:, None] * v.up[2]
    return z < 0


def camera_view(
    pos: np.ndarray, rot: np.ndarray, spec: CameraSpec, width: int, height: int, client
) -> View:
    """The car-mounted camera, riding with the body (it pitches and rolls with it).

    ``pos`` and ``rot`` are the car base's world position and 3x3 rotation.
    """
    fwd = rot[:, 0]
    up = rot[:, 2]
    eye = pos + fwd * spec.forward + up * (spec.height - pos[2])
    pitch = math.radians(spec.pitch_deg)
    look = fwd * math.cos(pitch) - up * math.sin(pitch)
    cam_up = fwd * math.sin(pitch) + up * math.cos(pitch)
    return make_view(
        client, eye, look, cam_up, spec.vfov_deg(width, height), width, height, spec.near, spec.far
    )
