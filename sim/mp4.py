"""H.264 MP4 files from RGB frames: imageio-ffmpeg (imageio's ffmpeg plugin) and its own
static ffmpeg binary, so no system ffmpeg is needed.

:class:`Mp4Writer` streams ``uint8`` HxWx3 frames to ffmpeg (H.264, yuv420p, the
``moov`` atom at the front so a browser reads the duration before the frames) into a
temp file beside the target, renamed into place on :meth:`Mp4Writer.close`; an aborted
writer leaves nothing. The binary is checked before the first frame
(:func:`check_ffmpeg`): one that is missing, does not run or lacks an H.264 encoder is a
:class:`VideoError` naming it and what to do, not a broken pipe minutes later.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from tracks.fileio import fsync_dir, write_temp_file

__all__ = ["VIDEO_SUFFIX", "Mp4Writer", "VideoError", "check_ffmpeg"]

VIDEO_SUFFIX = ".mp4"

_FIX = (
    "reinstall it (pip install --force-reinstall imageio-ffmpeg) or set IMAGEIO_FFMPEG_EXE "
    "to a working ffmpeg"
)


class VideoError(ValueError):
    """A video cannot be written; the message is one line naming the problem."""


@functools.cache
def _probe(exe: str) -> str | None:
    """Why ``exe`` cannot encode H.264, or None (asked once per binary and process)."""
    try:
        done = subprocess.run(
            [exe, "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=30
        )
    except OSError as e:
        return e.strerror or str(e)
    except subprocess.TimeoutExpired:
        return "it did not answer within 30 s"
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()
        return f"exit status {done.returncode}" + (f": {last[-1]}" if last else "")
    if "libx264" not in done.stdout:
        return "it has no H.264 encoder (libx264)"
    return None


def check_ffmpeg() -> str:
    """The ffmpeg binary imageio-ffmpeg uses, checked to run and to encode H.264;
    :class:`VideoError` (one line naming the binary and the fix) otherwise."""
    try:
        import imageio_ffmpeg
    except ImportError:
        raise VideoError("MP4 video needs imageio-ffmpeg (pip install imageio-ffmpeg)") from None
    try:
        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as e:
        raise VideoError(f"no ffmpeg binary for MP4 video ({e}); {_FIX}") from None
    problem = _probe(str(exe))
    if problem:
        raise VideoError(f"{exe}: this ffmpeg cannot write MP4 video ({problem}); {_FIX}")
    return str(exe)


def _even(frame: np.ndarray) -> np.ndarray:
    """``frame`` padded with black to even sides (yuv420p halves both)."""
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    out = np.zeros((h + h % 2, w + w % 2, 3), np.uint8)
    out[:h, :w] = frame
    return out


class Mp4Writer:
    """Frames into the H.264 MP4 file ``path`` (``.mp4``), written atomically.

    ``append(frame)`` takes ``uint8`` HxWx3 RGB frames, all of one size (odd sides are
    padded with a black row or column); :meth:`close` finishes the file, renames it
    into place and returns its path; :meth:`abort` (or leaving a ``with`` block on an
    exception) removes the unfinished file. ``quality`` is imageio-ffmpeg's 0-10 scale.
    """

    def __init__(self, path: str | Path, fps: float, *, quality: float = 7.0) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() != VIDEO_SUFFIX:
            raise VideoError(f"{self.path}: a video file must end in {VIDEO_SUFFIX}")
        if not (np.isfinite(fps) and 0 < fps <= 1000):
            raise VideoError(f"fps must be in (0, 1000], got {fps}")
        check_ffmpeg()
        self.fps = float(fps)
        self.quality = float(quality)
        self.frames = 0
        self.size: tuple[int, int] | None = None  # (H, W) of the frames as written
        self._tmp: Path | None = None
        self._gen: Any = None
        self._closed = False

    def _start(self, h: int, w: int) -> None:
        import imageio_ffmpeg  # checked in __init__; heavy: only when a video is written

        # Named like every atomic write's temp file (tracks.fileio), so a writer killed
        # mid-video leaves a file that is recognised as a leftover; ffmpeg overwrites it.
        self._tmp = write_temp_file(self.path, b"")
        self._gen = imageio_ffmpeg.write_frames(
            str(self._tmp),
            (w, h),
            fps=self.fps,
            codec="libx264",
            pix_fmt_in="rgb24",
            pix_fmt_out="yuv420p",
            quality=self.quality,
            macro_block_size=1,
            ffmpeg_log_level="error",
            # the temp name has no .mp4 suffix: say the container; the index goes first
            output_params=["-f", "mp4", "-movflags", "+faststart"],
        )
        self._gen.send(None)

    def append(self, frame: np.ndarray) -> None:
        """Add one ``uint8`` HxWx3 RGB frame."""
        if self._closed:
            raise VideoError(f"{self.path}: the writer is closed")
        if not (
            isinstance(frame, np.ndarray)
            and frame.dtype == np.uint8
            and frame.ndim == 3
            and frame.shape[2] == 3
        ):
            got = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame)
            raise VideoError(f"{self.path}: frames must be uint8 HxWx3 RGB, got {got}")
        frame = _even(frame)
        h, w = frame.shape[:2]
        if self.size is None:
            self.size = (h, w)
            self._start(h, w)
        elif (h, w) != self.size:
            raise VideoError(f"{self.path}: frame {self.frames} is {h}x{w}, not {self.size}")
        try:
            self._gen.send(np.ascontiguousarray(frame))
        except (OSError, RuntimeError) as e:
            raise VideoError(f"{self.path}: ffmpeg stopped writing ({e})") from None
        self.frames += 1

    def close(self) -> Path:
        """Finish the file and rename it into place; returns its path."""
        if self._closed:
            return self.path
        if self.frames == 0:
            self.abort()
            raise VideoError(f"{self.path}: no frames to write")
        try:
            self._gen.close()
        except (OSError, RuntimeError) as e:
            self.abort()
            raise VideoError(f"{self.path}: ffmpeg could not finish the file ({e})") from None
        self._gen = None
        with open(self._tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(self._tmp, self.path)
        fsync_dir(self.path.parent)
        self._tmp = None
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Stop ffmpeg and remove the unfinished file (safe to call twice)."""
        self._closed = True
        if self._gen is not None:
            with contextlib.suppress(Exception):
                self._gen.close()
            self._gen = None
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.unlink()
            self._tmp = None

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
