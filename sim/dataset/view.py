"""``python -m sim.dataset view``: episodes as one MP4, their labels drawn over the frames.

    python -m sim.dataset view data/expert --out expert.mp4 --episodes KEY1,KEY2 \\
        --max-frames 2000 --scale 4

Each camera frame is enlarged ``--scale`` times (repeated pixels: the flat renders stay
sharp), the steering and throttle labels are drawn over its bottom strip (a bar centred
on zero and the number; steering fills to the left for + = left, as the wheels turn),
and the episode key, track, direction and source sit in the top-left corner, with a red
``TAKEOVER`` badge on the frames a human drove. The drawing is :mod:`sim.overlay`
(numpy, Pillow only ahead of time); the file is :class:`sim.mp4.Mp4Writer` (H.264,
written atomically). Episodes are read through the public reader only
(:func:`sim.dataset.open_dataset`, :meth:`Dataset.load_episode`), so any episode format
the reader knows can be viewed.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sim.dataset.format import DatasetError
from sim.dataset.reader import Dataset, open_dataset
from sim.mp4 import VIDEO_SUFFIX, Mp4Writer
from sim.overlay import LabelOverlay, Stamp, render_text, upscale
from tracks.outputs import check_output_file
from tracks.progress import progress_bar

__all__ = ["VIEW_FIELDS", "ViewConfig", "ViewResult", "episode_stamps", "view_scale", "write_view"]

logger = logging.getLogger(__name__)

#: The frame fields a view reads (the public reader loads only these).
VIEW_FIELDS = ("image", "steering", "throttle", "takeover")
#: Without ``--scale``: the smallest integer factor that makes frames this tall.
TARGET_HEIGHT = 480
#: Largest side of a video frame (H.264 levels and players cope up to here).
MAX_VIDEO_SIDE = 4096


@dataclass(frozen=True)
class ViewConfig:
    """What ``sim.dataset view`` writes."""

    out: str  # the MP4 file to write (must end in .mp4)
    episodes: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "comma-separated episode keys, in the order to show them; none given: "
            "every episode, in recording order",
            "metavar": "K1,K2",
        },
    )
    max_frames: int | None = None  # stop after this many frames in all; none: every frame
    scale: int | None = field(
        default=None,
        metadata={
            "help": f"integer enlargement of the camera frames; none: the smallest that makes "
            f"them at least {TARGET_HEIGHT} px tall"
        },
    )
    fps: float | None = None  # frames per second; none: the dataset's control rate (real time)

    def __post_init__(self) -> None:
        if not str(self.out).lower().endswith(VIDEO_SUFFIX):
            raise ValueError(f"--out must name an {VIDEO_SUFFIX} file, got {self.out!r}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {self.max_frames}")
        if self.scale is not None and not 1 <= self.scale <= 16:
            raise ValueError(f"scale must be an integer in 1..16, got {self.scale}")
        if self.fps is not None and not (math.isfinite(self.fps) and 0 < self.fps <= 240):
            raise ValueError(f"fps must be in (0, 240], got {self.fps}")
        if len(set(self.episodes)) != len(self.episodes):
            raise ValueError(f"episodes are named more than once: {list(self.episodes)}")


@dataclass(frozen=True)
class ViewResult:
    """What :func:`write_view` wrote."""

    path: Path
    frames: int
    episodes: int
    size: tuple[int, int]  # (H, W) of the video frames
    fps: float  # playback rate
    seconds: float  # wall time the view took (read, draw, encode)

    @property
    def frames_per_s(self) -> float:
        """Frames read, drawn and encoded per second of wall time."""
        return self.frames / self.seconds if self.seconds > 0 else float("inf")


def view_scale(image_hw: tuple[int, int], scale: int | None) -> int:
    """``scale``, or the smallest factor making ``image_hw`` at least
    :data:`TARGET_HEIGHT` tall; ValueError if the frames would exceed
    :data:`MAX_VIDEO_SIDE`."""
    h, w = image_hw
    s = scale if scale is not None else max(1, math.ceil(TARGET_HEIGHT / h))
    if max(h, w) * s > MAX_VIDEO_SIDE:
        if scale is None:
            s = max(1, MAX_VIDEO_SIDE // max(h, w))
        else:
            raise ValueError(
                f"scale {scale} makes {h}x{w} frames {h * s}x{w * s}, larger than "
                f"{MAX_VIDEO_SIDE} px a side"
            )
    return s


def episode_stamps(key: str, ds: Dataset, px: int) -> tuple[Stamp, Stamp]:
    """The corner caption of episode ``key`` (key; track, direction and source) and the
    badge of its takeover frames."""
    meta = ds.episode_meta(key)
    caption = render_text([key, f"{meta.track_id}  {meta.direction}  {meta.source}"], px)
    badge = render_text(["TAKEOVER"], px, background=(200, 0, 0), opacity=0.85)
    return caption, badge


def write_view(
    dataset: Dataset | str | Path, cfg: ViewConfig, *, progress: bool | None = None
) -> ViewResult:
    """Write the MP4 ``cfg`` describes from ``dataset``; see the module doc.

    ValueError (a :class:`DatasetError`, :class:`sim.mp4.VideoError` or
    :class:`tracks.outputs.OutputError`, each one line) for an unknown episode, an
    unreadable dataset, an unwritable output or an unusable ffmpeg; nothing is left at
    ``cfg.out`` then.
    """
    t0 = time.perf_counter()
    ds = dataset if isinstance(dataset, Dataset) else open_dataset(dataset)
    keys = list(cfg.episodes) or ds.keys
    for key in keys:
        try:
            ds.episode_index(key)
        except KeyError:
            raise DatasetError(
                f"{ds.root}: no episode {key!r} (it has {len(ds.keys)}: "
                f"{', '.join(ds.keys[:5])}{', ...' if len(ds.keys) > 5 else ''})"
            ) from None
    counts = [int(ds.episodes[ds.episode_index(k)]["frames"]) for k in keys]
    total = sum(counts) if cfg.max_frames is None else min(sum(counts), cfg.max_frames)
    if total == 0:
        raise DatasetError(f"{ds.root}: no frames to view")
    out = check_output_file(cfg.out)
    fps = float(cfg.fps or ds.info.get("control_hz") or 20.0)
    writer = Mp4Writer(out, fps)
    overlay: LabelOverlay | None = None
    scale = 1
    shown = 0
    bar = progress_bar(
        total=total, unit="frame", desc="view", enabled=True if progress is None else progress
    )
    with writer, bar:
        for key in keys:
            if shown >= total:
                break
            arrays = ds.load_episode(key, fields=VIEW_FIELDS)
            images = arrays["image"]
            if overlay is None:
                scale = view_scale(images.shape[1:3], cfg.scale)
                h, w = images.shape[1] * scale, images.shape[2] * scale
                overlay = LabelOverlay((h, w))
            caption, badge = episode_stamps(key, ds, overlay.px)
            corner = (caption, 4, 4)
            flagged = (badge, 4 + caption.shape[0] + 2, 4)
            n = min(len(images), total - shown)
            steer, throttle, takeover = arrays["steering"], arrays["throttle"], arrays["takeover"]
            for i in range(n):
                frame = upscale(images[i], scale)
                stamps = [corner, flagged] if takeover[i] else [corner]
                overlay.draw(frame, (float(steer[i]), float(throttle[i])), stamps)
                writer.append(frame)
            shown += n
            bar.update(n)
    size = writer.size or (0, 0)
    return ViewResult(
        path=out,
        frames=writer.frames,
        episodes=len(keys) if cfg.max_frames is None else _episodes_shown(counts, total),
        size=size,
        fps=fps,
        seconds=time.perf_counter() - t0,
    )


def _episodes_shown(counts: list[int], total: int) -> int:
    """How many episodes (of ``counts`` frames each, in order) the first ``total`` frames
    touch."""
    ends = np.cumsum(counts)
    return int(np.searchsorted(ends, total) + 1) if total else 0
