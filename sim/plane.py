"""The car camera's road plane, ray-cast in numpy.

Everything the forward camera sees of the track lies in one plane: road,
edge lines, dashed centre line and start line are paint on flat ground. For
such a scene a rasteriser does nothing a ray caster doesn't: each pixel's ray
meets the plane at one point, and the pixel takes the colour of the paint
there. This module does exactly that, against a top-down label raster of the
very meshes PyBullet draws (``sim.world.road_meshes``), at 5 mm per cell.

Why: TinyRenderer shades every covered pixel (texture fetch, lighting, a
``pow`` for the specular term), ~0.15 us a pixel, so the road alone cost about
1 ms of a 96x96 frame; the ray cast costs ~0.1 ms and gives the same picture
(``tests/test_plane.py`` checks pixel by pixel that both renderers put the same
paint in the same place, casting rays through the points TinyRenderer samples).
The env casts them through pixel centres instead, like a pinhole camera:
TinyRenderer samples pixel corners, so its image is half a pixel off the
optical axis and a left-right flip of it (the flip augmentation) shows the
mirrored scene shifted by a whole pixel.

Bodies that stand up from the ground (the car, when ``camera_sees_car=True``)
are still drawn by TinyRenderer and composited by its depth buffer, at its own
sample points (half a pixel off the plane's); ``TrackEnv(camera_renderer=
"tiny")`` draws everything with TinyRenderer instead.

Shading is Lambertian for the up-facing plane: ``colour * (0.6 + 0.4 * Lz)``
with ``Lz`` the up component of the unit light direction (towards the light),
so the default overhead light shows the palette colours as they are. Beyond
the camera's far plane the ground colour is shown, as with TinyRenderer.
"""

from __future__ import annotations

import functools
import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

# Labels of the raster and of the per-pixel label image.
GROUND, ROAD, EDGE, CENTRE, START, SKY = range(6)
LABEL_NAMES = ("ground", "road", "edge", "centre", "start", "sky")
# Mesh name (sim.world.road_meshes) -> label, in drawing order (later paints over earlier).
_LABEL_OF_MESH = {
    "road": ROAD,
    "edge_left": EDGE,
    "edge_right": EDGE,
    "centre": CENTRE,
    "start": START,
}

RESOLUTION = 0.005  # m per raster cell
MAX_CELLS = 1 << 25  # a larger track gets coarser cells (32 M cells = 32 MiB)
AMBIENT = 0.6
PLANE_Z = 0.001  # the road surface's height (sim.world meshes it 1 mm above the ground)


@dataclass(frozen=True)
class LabelRaster:
    """Top-down paint labels of a track: ``labels[row, col]`` covers world
    ``x0 + col * res <= x < x0 + (col + 1) * res`` (rows likewise in y). A
    border of ground cells surrounds the track, so clipped lookups read ground."""

    labels: np.ndarray  # (rows, cols) uint8
    x0: float
    y0: float
    res: float

    @property
    def flat(self) -> np.ndarray:
        return self.labels.reshape(-1)


_RASTERS: OrderedDict[tuple, LabelRaster] = OrderedDict()
_RASTER_CACHE_SIZE = 4


def label_raster(meshes: dict[str, tuple[list, list]], key=None) -> LabelRaster:
    """Rasterise ``meshes`` (as from ``sim.world.road_meshes``) into paint labels.

    ``key`` (hashable) caches the raster; the last few are kept, so envs that
    share a process and a track share one raster.
    """
    if key is not None and key in _RASTERS:
        _RASTERS.move_to_end(key)
        return _RASTERS[key]
    pts = np.concatenate([np.asarray(v, dtype=float)[:, :2] for v, _ in meshes.values()])
    lo = pts.min(axis=0)
    hi = pts.max(axis=0)
    span = hi - lo
    res = max(RESOLUTION, math.sqrt(float((span[0] + 0.1) * (span[1] + 0.1)) / MAX_CELLS))
    x0, y0 = float(lo[0] - 2 * res), float(lo[1] - 2 * res)
    cols = int(math.ceil(span[0] / res)) + 5
    rows = int(math.ceil(span[1] / res)) + 5
    labels = np.full((rows, cols), GROUND, dtype=np.uint8)
    for name, label in _LABEL_OF_MESH.items():
        if name in meshes:
            verts, idx = meshes[name]
            uv = (np.asarray(verts, dtype=float)[:, :2] - (x0, y0)) / res
            tris = uv[np.asarray(idx, dtype=np.int64).reshape(-1, 3)]
            for tri in tris:
                _fill_triangle(labels, tri, label)
    raster = LabelRaster(labels, x0, y0, res)
    if key is not None:
        _RASTERS[key] = raster
        while len(_RASTERS) > _RASTER_CACHE_SIZE:
            _RASTERS.popitem(last=False)
    return raster


def _fill_triangle(labels: np.ndarray, tri: np.ndarray, label: int) -> None:
    """Set the cells whose centres lie inside ``tri`` (3x2, in cell units), as a
    rasteriser does with pixel centres (TinyRenderer's test, edges included)."""
    rows, cols = labels.shape
    c0 = max(int(math.floor(tri[:, 0].min() - 0.5)), 0)
    c1 = min(int(math.ceil(tri[:, 0].max() - 0.5)), cols - 1)
    r0 = max(int(math.floor(tri[:, 1].min() - 0.5)), 0)
    r1 = min(int(math.ceil(tri[:, 1].max() - 0.5)), rows - 1)
    if c1 < c0 or r1 < r0:
        return
    (ax, ay), (bx, by), (cx, cy) = tri
    area = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
    if area == 0:
        return
    x = np.arange(c0, c1 + 1, dtype=float)[None, :] + 0.5
    y = np.arange(r0, r1 + 1, dtype=float)[:, None] + 0.5
    sgn = 1.0 if area > 0 else -1.0
    inside = sgn * ((bx - ax) * (y - ay) - (by - ay) * (x - ax)) >= 0
    inside &= sgn * ((cx - bx) * (y - by) - (cy - by) * (x - bx)) >= 0
    inside &= sgn * ((ax - cx) * (y - cy) - (ay - cy) * (x - cx)) >= 0
    labels[r0 : r1 + 1, c0 : c1 + 1][inside] = label


def shade_factor(light_direction) -> float:
    """Lambertian brightness of the up-facing plane under a unit light direction."""
    lx, ly, lz = (float(c) for c in light_direction)
    n = math.sqrt(lx * lx + ly * ly + lz * lz) or 1.0
    return AMBIENT + (1.0 - AMBIENT) * max(0.0, lz / n)


def palette(colors, light_direction) -> np.ndarray:
    """(6, 3) uint8 colours indexed by label: the plane's paints shaded, the sky not."""
    f = shade_factor(light_direction)
    out = np.empty((6, 3), dtype=np.uint8)
    for label, rgba in (
        (GROUND, colors.ground),
        (ROAD, colors.road),
        (EDGE, colors.edge),
        (CENTRE, colors.centre),
        (START, colors.start),
    ):
        out[label] = np.clip(np.rint(np.asarray(rgba[:3]) * f * 255), 0, 255)
    out[SKY] = np.clip(np.rint(np.asarray(colors.sky[:3]) * 255), 0, 255)
    return out


#: Where in each pixel a ray is cast: ``"centre"`` (a pinhole camera; the image is
#: symmetric about the optical axis, so a left-right flip shows the mirrored scene) or
#: ``"tinyrenderer"`` (the points TinyRenderer tests: integer screen coordinates, i.e.
#: pixel corners, with y up; half a pixel off to the left and down).
SAMPLINGS = ("centre", "tinyrenderer")


@functools.lru_cache(maxsize=32)
def pixel_offsets(
    width: int, height: int, vfov_deg: float, sampling: str = "centre"
) -> tuple[np.ndarray, np.ndarray]:
    """Ray offsets along the camera's right and up axes (per unit forward) of
    each column and row (row 0 on top), for a vertical field of view."""
    t = math.tan(math.radians(vfov_deg) / 2)
    if sampling == "centre":
        cx, cy = np.arange(width) + 0.5, np.arange(height) + 0.5
    elif sampling == "tinyrenderer":
        # Measured against its segmentation mask: edge-line IoU 0.93 with
        # these points, 0.64 with pixel centres (tests/test_plane.py).
        cx, cy = np.arange(width, dtype=float), np.arange(height) + 1.0
    else:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    xs = (2 * cx / width - 1) * t * width / height
    ys = (1 - 2 * cy / height) * t
    return xs.astype(np.float32), ys.astype(np.float32)


def plane_labels(view, raster: LabelRaster, sampling: str = "centre") -> np.ndarray:
    """(H, W) uint8 labels the camera ``view`` (a ``sim.world.View``) sees."""
    w, h = view.width, view.height
    xs, ys = pixel_offsets(w, h, float(view.vfov_deg), sampling)
    f, r, u = view.look, view.right, view.up
    ex, ey, ez = (float(c) for c in view.eye)
    height = ez - PLANE_Z
    # Ray direction d = f + x r + y u, as outer sums of a row and a column part.
    dz = (f[2] + xs * r[2])[None, :] + (ys * u[2])[:, None]
    sky = dz >= 0.0
    # Distance along the optical axis to the plane (d . f = 1), capped at far.
    t = np.minimum(dz, -1e-9, dtype=np.float32)
    np.divide(-height, t, out=t)
    beyond = t > view.far
    np.minimum(t, view.far, out=t)
    inv = 1.0 / raster.res
    rows, cols = raster.labels.shape
    dx = ((f[0] + xs * r[0]) * inv)[None, :] + ((ys * u[0]) * inv)[:, None]
    dx *= t
    dx += (ex - raster.x0) * inv
    dy = ((f[1] + xs * r[1]) * inv)[None, :] + ((ys * u[1]) * inv)[:, None]
    dy *= t
    dy += (ey - raster.y0) * inv
    col = np.clip(dx, 0, cols - 1).astype(np.intp)
    row = np.clip(dy, 0, rows - 1).astype(np.intp)
    row *= cols
    row += col
    labels = raster.flat.take(row)
    labels[beyond] = GROUND
    labels[sky] = SKY
    return labels


def plane_image(view, raster: LabelRaster, colors: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 image of the plane: ``colors`` from ``palette()``."""
    return colors.take(plane_labels(view, raster), axis=0)
