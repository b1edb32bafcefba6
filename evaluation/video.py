"""A video of a closed-loop run: the car's camera and a top-down map side by side, MP4.

H.264 through imageio-ffmpeg (:class:`sim.mp4.Mp4Writer`, written atomically; an
unusable ffmpeg is one clear error before the run). The top-down map is drawn once per
run (matplotlib, with a known world-to-pixel scale) and each frame only stamps the car,
its trail and any interventions onto a copy of it; the camera half carries the servo's
steering as a bar (:mod:`sim.overlay`, the labels ``sim.dataset view`` draws), so a
frame costs no rendering beyond the camera image the pilot already sees.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from sim.mp4 import VIDEO_SUFFIX, Mp4Writer
from sim.overlay import STEERING, LabelOverlay, upscale

__all__ = ["RunVideo", "TopDownMap"]

logger = logging.getLogger(__name__)

_GROUND = (74, 122, 60)
_ROAD = (90, 90, 95)
_EDGE = (240, 240, 240)
_CENTRE = (235, 200, 40)
_START = (220, 40, 40)
_CAR = (230, 30, 30)
_TRAIL = (70, 160, 255)
_INTERVENTION = (255, 0, 255)


class TopDownMap:
    """The track drawn from above once, with ``to_pixel`` for world (x, y) in metres."""

    def __init__(self, track: Any, size: tuple[int, int], margin_m: float = 0.5) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        h, w = int(size[0]), int(size[1])
        left, right = track.edges()
        pts = np.concatenate([left, right])
        lo = pts.min(axis=0) - margin_m
        hi = pts.max(axis=0) + margin_m
        self.centre = (lo + hi) / 2
        self.ppm = float(min(w / (hi[0] - lo[0]), h / (hi[1] - lo[1])))  # pixels per metre
        self.size = (h, w)
        dpi = 100
        fig = plt.figure(figsize=(w / dpi, h / dpi), dpi=dpi)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set_axis_off()
        ax.set_facecolor(np.array(_GROUND) / 255)
        fig.patch.set_facecolor(np.array(_GROUND) / 255)
        ax.set_xlim(self.centre[0] - w / 2 / self.ppm, self.centre[0] + w / 2 / self.ppm)
        ax.set_ylim(self.centre[1] - h / 2 / self.ppm, self.centre[1] + h / 2 / self.ppm)
        samples = track.resample(0.05)
        closed = np.vstack([samples.xy, samples.xy[:1]])
        width = float(np.mean(samples.w_left + samples.w_right))

        def lw_pt(metres: float) -> float:
            return max(0.5, metres * self.ppm * 72 / dpi)

        ax.plot(
            closed[:, 0],
            closed[:, 1],
            color=np.array(_ROAD) / 255,
            lw=lw_pt(width),
            solid_capstyle="round",
        )
        for edge in (left, right):
            e = np.vstack([edge, edge[:1]])
            ax.plot(e[:, 0], e[:, 1], color=np.array(_EDGE) / 255, lw=lw_pt(0.05))
        ax.plot(
            closed[:, 0],
            closed[:, 1],
            color=np.array(_CENTRE) / 255,
            lw=lw_pt(0.03),
            ls=(0, (3, 3)),
        )
        p0, n0 = track.point(0.0), track.normal(0.0)
        hl, hr = (float(v) for v in track.half_widths(0.0))
        a, b = p0 + n0 * hl, p0 - n0 * hr
        ax.plot([a[0], b[0]], [a[1], b[1]], color=np.array(_START) / 255, lw=lw_pt(0.08))
        fig.canvas.draw()
        self.image = np.asarray(fig.canvas.buffer_rgba())[:h, :w, :3].copy()
        plt.close(fig)

    def to_pixel(self, x: float, y: float) -> tuple[int, int]:
        """``(row, col)`` of the world point (x, y)."""
        h, w = self.size
        col = w / 2 + (x - self.centre[0]) * self.ppm
        row = h / 2 - (y - self.centre[1]) * self.ppm
        return int(round(row)), int(round(col))


def _stamp(img: np.ndarray, row: int, col: int, radius: int, color: tuple[int, int, int]) -> None:
    h, w = img.shape[:2]
    r0, r1 = max(0, row - radius), min(h, row + radius + 1)
    c0, c1 = max(0, col - radius), min(w, col + radius + 1)
    if r0 < r1 and c0 < c1:
        img[r0:r1, c0:c1] = color


class RunVideo:
    """Frames of one run, streamed to the MP4 file ``path`` (``.mp4`` is added when it
    has another suffix).

    ``add(obs, info)`` after every control step; ``close()`` finishes the file and
    returns its path; ``abort()`` removes it (a run that failed).
    """

    scale = 2  # the camera and the map are shown at twice the camera's size

    def __init__(
        self,
        env: Any,
        path: str | Path,
        camera_size: tuple[int, int] = (120, 160),
        fps: float | None = None,
    ) -> None:
        self.env = env
        path = Path(path)
        if path.suffix.lower() != VIDEO_SUFFIX:
            path = path.with_name(path.name + VIDEO_SUFFIX)
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fps = fps or env.control_hz
        self.camera_size = (int(camera_size[0]), int(camera_size[1]))
        h, w = self.camera_size
        self.map = TopDownMap(env.track, (h * self.scale, w * self.scale))
        self._trail = self.map.image.copy()
        try:
            self._overlay: LabelOverlay | None = LabelOverlay(
                (h * self.scale, w * self.scale), bars=(STEERING,)
            )
        except ValueError:  # a camera too small to carry the bar: the frames without it
            self._overlay = None
        self._writer = Mp4Writer(self.path, self.fps)

    def _camera(self, obs: Any) -> np.ndarray:
        img = obs.get("image") if isinstance(obs, dict) else obs
        if not (
            isinstance(img, np.ndarray)
            and img.ndim == 3
            and img.dtype == np.uint8
            and img.shape[:2] == self.camera_size
        ):
            img = self.env.render_frame("camera", size=self.camera_size)
        return upscale(img, self.scale)

    def add(self, obs: Any, info: dict[str, Any]) -> None:
        x, y, yaw = info["pose"]
        row, col = self.map.to_pixel(x, y)
        _stamp(self._trail, row, col, 0, _TRAIL)
        if info.get("off_track") or info.get("flipped"):
            _stamp(self._trail, row, col, 2 * self.scale, _INTERVENTION)
        top = self._trail.copy()
        _stamp(top, row, col, 1 + self.scale, _CAR)
        nose = (
            row - round(math.sin(yaw) * 4 * self.scale),
            col + round(math.cos(yaw) * 4 * self.scale),
        )
        _stamp(top, nose[0], nose[1], self.scale // 2, _CAR)
        camera = self._camera(obs)
        if self._overlay is not None:
            self._overlay.draw(camera, (float(info.get("steering", 0.0)),))
        frame = self._caption(np.concatenate([camera, top], axis=1), info)
        self._writer.append(frame)

    @staticmethod
    def _caption(frame: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        from PIL import Image, ImageDraw

        img = Image.fromarray(frame)
        text = f"t {info['t']:5.1f}s  lap {info['lap']}  cte {info['lateral']:+.2f}m"
        ImageDraw.Draw(img).text((3, 2), text, fill=(255, 255, 255))
        return np.asarray(img)

    def close(self) -> Path:
        """Finish the file (written atomically) and return its path."""
        return self._writer.close()

    def abort(self) -> None:
        """Remove the unfinished file (a run that failed)."""
        self._writer.abort()
