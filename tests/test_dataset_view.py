"""``python -m sim.dataset view``, the label overlay and the MP4 writer: the files decode
with the right frames, the labels are where they are said to be, bad input is one line."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
from test_dataset import INFO as DATASET_INFO

from sim import mp4
from sim.dataset import DatasetWriter, EpisodeMeta, main, open_dataset, synthetic_episode
from sim.dataset.view import ViewConfig, episode_stamps, view_scale, write_view
from sim.mp4 import Mp4Writer, VideoError
from sim.overlay import STEERING, THROTTLE, LabelOverlay, upscale

HW = (40, 60)
INFO = {**DATASET_INFO, "camera": {**DATASET_INFO["camera"], "image_size": list(HW)}}


def _flat_frames(seed: int, n: int, takeover: tuple[int, ...] = ()) -> dict[str, np.ndarray]:
    """Frames like the renders: flat sky, ground and road bands (H.264 keeps them close)."""
    frames = synthetic_episode(np.random.default_rng(seed), n, HW)
    img = np.empty((n, *HW, 3), np.uint8)
    img[:, :15] = (150, 190, 230)
    img[:, 15:] = (70, 120, 60)
    img[:, 22:, 15:45] = (80, 80, 85)
    frames["image"] = img
    frames["steering"] = np.linspace(-0.8, 0.8, n, dtype=np.float32)
    frames["throttle"] = np.full(n, 0.5, np.float32)
    frames["takeover"] = np.zeros(n, np.uint8)
    frames["takeover"][list(takeover)] = 1
    return frames


def _dataset(root: Path) -> Path:
    writer = DatasetWriter(root, INFO)
    for i, (n, direction, takeover) in enumerate(((12, "ccw", ()), (9, "cw", (2, 3)))):
        meta = EpisodeMeta(
            track_id="oval", track_hash="h0", direction=direction, seed=i, source="human"
        )
        writer.write_episode(f"e{i}", _flat_frames(i, n, takeover), meta)
    return root


def _read(path: Path) -> list[np.ndarray]:
    import imageio.v2 as iio

    with iio.get_reader(str(path)) as reader:
        return [np.asarray(f) for f in reader]


def _diff(a: np.ndarray, b: np.ndarray, region: tuple[int, int, int, int]) -> float:
    r0, r1, c0, c1 = region
    return float(np.abs(a[r0:r1, c0:c1].astype(int) - b[r0:r1, c0:c1].astype(int)).mean())


def test_view_mp4_decodes_with_every_frame_and_the_labels_drawn(tmp_path, capsys) -> None:
    root = _dataset(tmp_path / "ds")
    out = tmp_path / "view.mp4"
    assert main(["view", str(root), "--out", str(out), "--scale", "4"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}: 21 frames of 2 episodes, 240x160 at 20 fps" in printed
    assert "frames/s" in printed
    frames = _read(out)
    assert len(frames) == 21 and all(f.shape == (160, 240, 3) for f in frames)
    raw = open_dataset(root).load_episode("e0", fields=["image"])["image"]
    overlay = LabelOverlay((160, 240))
    steer_bar = overlay.regions["steer_bar"]
    # Where the labels are drawn the video differs from the enlarged camera frame; above
    # the strip it is the camera frame (up to H.264's loss).
    assert _diff(frames[0], upscale(raw[0], 4), steer_bar) > 30
    assert _diff(frames[0], upscale(raw[0], 4), (60, overlay.strip[0] - 4, 0, 240)) < 6
    # The corner caption is there, on every frame.
    assert _diff(frames[5], upscale(raw[5], 4), (4, 20, 4, 40)) > 30
    assert not list(tmp_path.glob(".view.mp4.tmp-*"))


def test_view_episodes_max_frames_and_the_takeover_badge(tmp_path) -> None:
    root = _dataset(tmp_path / "ds")
    out = tmp_path / "cw.mp4"
    cfg = ViewConfig(out=str(out), episodes=("e1",), max_frames=5, scale=4)
    result = write_view(root, cfg, progress=False)
    assert (result.frames, result.episodes, result.size) == (5, 1, (160, 240))
    frames = _read(out)
    assert len(frames) == 5
    # Frames 2 and 3 of e1 are takeovers: a red badge below the caption, on them only.
    ds = open_dataset(root)
    caption, badge = episode_stamps("e1", ds, LabelOverlay((160, 240)).px)
    top = 4 + caption.shape[0] + 2
    region = (top + 2, top + badge.shape[0] - 2, 6, 4 + badge.shape[1] - 2)
    raw = ds.load_episode("e1", fields=["image"])["image"]
    r0, r1, c0, c1 = region
    for i in (2, 3):
        red = frames[i][r0:r1, c0:c1].astype(int)
        assert red[..., 0].mean() - red[..., 2].mean() > 80
    for i in (0, 1, 4):
        assert _diff(frames[i], upscale(raw[i], 4), region) < 8
    # Without --scale the frames are enlarged to at least 480 px tall.
    assert view_scale(HW, None) == 12 and view_scale(HW, 3) == 3


def test_steering_fills_to_the_left_for_left(tmp_path) -> None:
    overlay = LabelOverlay((160, 240), bars=(STEERING, THROTTLE))
    r0, r1, c0, c1 = overlay.regions["steer_bar"]
    mid = (c0 + c1) // 2
    left = overlay.draw(np.zeros((160, 240, 3), np.uint8), (0.5, 0.0))
    right = overlay.draw(np.zeros((160, 240, 3), np.uint8), (-0.5, 0.0))
    row = (r0 + r1) // 2
    fill = np.array(STEERING.color)
    assert (left[row, mid - 10] == fill).all() and not (left[row, mid + 10] == fill).all()
    assert (right[row, mid + 10] == fill).all() and not (right[row, mid - 10] == fill).all()
    tr0, tr1, _, _ = overlay.regions["thr_bar"]
    assert not (left[(tr0 + tr1) // 2, c0 + 2 : c1 - 2] == np.array(THROTTLE.color)).all(-1).any()


def test_view_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys) -> None:
    root = _dataset(tmp_path / "ds")
    out = tmp_path / "v.mp4"
    assert main(["view", str(root), "--out", str(out), "--episodes", "e0,nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no episode 'nope'" in err and err.count("\n") == 1
    assert main(["view", str(root), "--out", str(tmp_path / "v.gif")]) == 2
    assert "must name an .mp4 file" in capsys.readouterr().err
    assert main(["view", str(root), "--out", str(out), "--max-frames", "0"]) == 2
    assert "max_frames must be >= 1" in capsys.readouterr().err
    assert main(["view", str(tmp_path / "none"), "--out", str(out)]) == 2
    assert "no such dataset directory" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".v.mp4*"))


def test_unusable_ffmpeg_is_one_clear_line(tmp_path, monkeypatch, capsys) -> None:
    root = _dataset(tmp_path / "ds")
    broken = tmp_path / "ffmpeg"
    broken.write_text("not a program\n")
    broken.chmod(broken.stat().st_mode & ~(stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH))
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(broken))
    mp4._probe.cache_clear()
    out = tmp_path / "v.mp4"
    try:
        assert main(["view", str(root), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {broken}: this ffmpeg cannot write MP4 video")
        assert "IMAGEIO_FFMPEG_EXE" in err and err.count("\n") == 1
        assert not out.exists() and not list(tmp_path.glob(".v.mp4*"))
    finally:
        mp4._probe.cache_clear()


def test_mp4_writer_is_atomic(tmp_path) -> None:
    path = tmp_path / "a.mp4"
    frame = np.full((31, 41, 3), 90, np.uint8)  # odd sides: padded to even
    with pytest.raises(VideoError, match="frame 2 is 32x40"):
        with Mp4Writer(path, 10) as w:
            w.append(frame)
            w.append(frame)
            w.append(np.zeros((32, 40, 3), np.uint8))
    assert not path.exists() and os.listdir(tmp_path) == []
    with Mp4Writer(path, 10) as w:
        for _ in range(3):
            w.append(frame)
    assert w.size == (32, 42)
    frames = _read(path)
    assert len(frames) == 3 and frames[0].shape == (32, 42, 3)
    assert os.listdir(tmp_path) == ["a.mp4"]
    with pytest.raises(VideoError, match="must end in .mp4"):
        Mp4Writer(tmp_path / "a.gif", 10)
    with pytest.raises(VideoError, match="uint8 HxWx3"):
        Mp4Writer(tmp_path / "b.mp4", 10).append(np.zeros((4, 4), np.uint8))
