"""Latency-compensated labels (training.relabel): the expert's command for the state at t + L."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from agents.expert import ExpertConfig, ExpertPilot
from sim.car import CarParams
from training.compensation import parse_compensation
from training.relabel import (
    RelabelError,
    Trajectory,
    compensated_labels,
    interpolation_check,
    relabel_episode,
    relabel_trajectory,
)

DT = 0.05


def _expert(track) -> ExpertPilot:
    expert = ExpertPilot(track, ExpertConfig(), CarParams())
    return expert


def _label(expert: ExpertPilot, track, x: float, y: float, yaw: float, v: float) -> np.ndarray:
    """The expert's command for an exact state (s as the env projects it)."""
    s = track.project(x, y, yaw=yaw).s
    return expert.act(None, {"pose": (x, y, yaw), "s": s, "speed": v})


def _arc(track, n: int, v: float = 2.0, offset: float = 0.1):
    """A car driving the circle track's centreline (offset left) at speed v, every DT."""
    t = np.arange(n) * DT
    r = 2.5 - offset  # left of a counter-clockwise circle is towards its centre
    ang = v * t / 2.5
    pose = np.column_stack([r * np.cos(ang), r * np.sin(ang), ang + math.pi / 2])
    return {"t": t, "pose": pose, "speed": np.full(n, v)}


def test_whole_periods_give_the_expert_label_of_the_later_frame(make_circle_track) -> None:
    track = make_circle_track(radius=2.5)
    expert = _expert(track)
    a = _arc(track, 40)
    traj = Trajectory.from_arrays(a)
    recorded = np.array([_label(expert, track, *p, 2.0)[0] for p in a["pose"]])
    for k in (0, 1, 3):
        lab = relabel_trajectory(traj, track, expert, k * DT, DT)
        assert lab.valid.sum() == 40 - k and not lab.valid[40 - k :].any()
        np.testing.assert_allclose(lab.steering[: 40 - k], recorded[k:], rtol=0, atol=1e-9)


def test_between_frames_the_state_is_interpolated_exactly(make_circle_track) -> None:
    # A straight-line motion is exactly linear between frames: the label at t + L must be
    # the expert's command for the exact state at t + L, whatever L.
    track = make_circle_track(radius=2.5)
    expert = _expert(track)
    n, v = 30, 1.5
    t = np.arange(n) * DT
    x0, y0, yaw = 2.4, -0.6, 1.45

    def state(time: float) -> tuple[float, float, float]:
        return x0 + v * time * math.cos(yaw), y0 + v * time * math.sin(yaw), yaw

    pose = np.array([state(tt) for tt in t])
    traj = Trajectory.from_arrays({"t": t, "pose": pose, "speed": np.full(n, v)})
    latency = 0.07  # 1.4 periods
    lab = relabel_trajectory(traj, track, expert, latency, DT)
    want = np.array([_label(expert, track, *state(tt + latency), v) for tt in t])
    m = lab.valid
    assert m.sum() == n - 2  # the last two frames have no state 70 ms later
    np.testing.assert_allclose(lab.steering[m], want[m, 0], rtol=0, atol=1e-9)
    np.testing.assert_allclose(lab.throttle[m], want[m, 1], rtol=0, atol=1e-9)


def test_jumps_and_gaps_leave_frames_without_a_label(make_circle_track) -> None:
    track = make_circle_track(radius=2.5)
    expert = _expert(track)
    a = _arc(track, 40)
    a["pose"][20:, :2] *= 0.9  # a re-centring teleports the car between frames 19 and 20
    lab = relabel_trajectory(Trajectory.from_arrays(a), track, expert, 2 * DT, DT)
    assert lab.valid[:18].all() and not lab.valid[18:20].any() and lab.valid[20:38].all()
    b = _arc(track, 40)
    b["t"] = b["t"].copy()
    b["t"][25:] += 0.5  # a gap of ten periods: no interpolation across it
    lab = relabel_trajectory(Trajectory.from_arrays(b), track, expert, 0.5 * DT, DT)
    assert not lab.valid[24] and lab.valid[23] and lab.valid[25]
    with pytest.raises(RelabelError, match="increase"):
        Trajectory.from_arrays({**a, "t": a["t"][::-1].copy()})


def test_compensation_syntax() -> None:
    assert parse_compensation("70ms").ms == 70 and parse_compensation("70").ms == 70
    assert parse_compensation("0.15s").ms == pytest.approx(150)
    assert parse_compensation("car:rpi4-tflite").car == "rpi4-tflite"
    assert parse_compensation("car:rpi4-tflite").latency_s(100.0) > 0.017
    for bad in ("fast", "-5ms", "car:", "3000ms"):
        with pytest.raises(ValueError):
            parse_compensation(bad)
    with pytest.raises(ValueError, match="known"):
        parse_compensation("car:no-such-car").check()


# --------------------------------------------------------------------------- real episodes
def test_relabelling_recorded_episodes_reproduces_the_expert(ring_dataset: Path) -> None:
    from sim.dataset import open_dataset

    ds = open_dataset(ring_dataset)
    for rec in ds.episodes:
        arrays = ds.load_episode(rec["key"], fields=["t", "pose", "speed", "steering", "throttle"])
        lab = relabel_episode(arrays, rec, ds.info, 0.0)
        assert lab.valid.all()
        np.testing.assert_allclose(lab.steering, arrays["steering"], rtol=0, atol=1e-5)
        np.testing.assert_allclose(lab.throttle, arrays["throttle"], rtol=0, atol=1e-5)
        later = relabel_episode(arrays, rec, ds.info, 2 * DT)
        np.testing.assert_allclose(later.steering[:-2], arrays["steering"][2:], atol=1e-5)
        check = interpolation_check(arrays, rec, ds.info)
        assert check["exact_max"] < 1e-5 and check["interpolated_max"] < 0.1
    # What training loads: every stride-th frame, in the order of the episodes given.
    lab = compensated_labels(ds, [1, 0], 3, 0.1)
    want = []
    for i in (1, 0):
        a = ds.load_episode(i, fields=["t", "pose", "speed"])
        one = relabel_episode(a, ds.episodes[i], ds.info, 0.1)
        want.append((one.steering[::3], one.valid[::3]))
    np.testing.assert_array_equal(lab.valid, np.concatenate([v for _, v in want]))
    np.testing.assert_array_equal(lab.steering, np.concatenate([s for s, _ in want]))


def test_a_changed_track_or_a_missing_expert_is_refused(ring_dataset: Path) -> None:
    from sim.dataset import open_dataset

    ds = open_dataset(ring_dataset)
    rec = dict(ds.episodes[0])
    arrays = ds.load_episode(rec["key"], fields=["t", "pose", "speed"])
    with pytest.raises(RelabelError, match="geometry hash"):
        relabel_episode(arrays, {**rec, "track_hash": "0" * 16}, ds.info, 0.05)
    with pytest.raises(RelabelError, match="no expert parameters"):
        relabel_episode(arrays, {**rec, "expert": None, "source": "human"}, ds.info, 0.05)


def test_training_with_compensated_labels(ring_dataset: Path, tmp_path: Path) -> None:
    from training.config import TrainConfig
    from training.train import run

    common = dict(
        data=str(ring_dataset), epochs=1, input_size=(24, 32), depth=3, split_ratios=(0.5, 0.5, 0.0),
        progress=False, tensorboard=False, threads=1,
    )  # fmt: skip
    plain = run(TrainConfig(out=str(tmp_path / "plain"), **common))
    comp = run(TrainConfig(out=str(tmp_path / "comp"), compensate_latency="120ms", **common))
    import json

    rec = json.loads((tmp_path / "comp" / "best.json").read_text())
    assert rec["labels"]["latency_ms"] == pytest.approx(120)
    assert rec["labels"]["dropped_frames"]["train"] == 3  # the last 120 ms of the episode
    assert rec["config"]["compensate_latency"] == "120ms"
    assert comp["best"]["train_mae"] != plain["best"]["train_mae"]
