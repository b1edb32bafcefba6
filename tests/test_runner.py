"""The closed-loop runner: latency in simulated time, interventions, metrics, sweeps."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

from agents.expert import ExpertConfig, ExpertPilot
from evaluation.latency import latency_substeps
from evaluation.runner import (
    RunJob,
    RunResult,
    autonomy_percent,
    max_ok_latency,
    plot_sweep,
    run_closed_loop,
    run_many,
)

STATE = {"obs_mode": "state", "record_trajectory": False}


class ScriptedPilot:
    """Returns ``steering`` (a constant or a function of the call index) and records
    the simulated time and servo steering of every frame it is given."""

    name = "scripted"

    def __init__(self, steering=1.0) -> None:
        self.steering = steering
        self.times: list[float] = []
        self.servo: list[float] = []
        self.resets = 0
        self.resets_at: list[int] = []  # resets so far, at each frame

    def reset(self) -> None:
        self.resets += 1

    def act(self, observation, info):
        self.times.append(float(info["t"]))
        self.servo.append(float(info["steering"]))
        self.resets_at.append(self.resets)
        i = len(self.times) - 1
        steer = self.steering(i, observation, info) if callable(self.steering) else self.steering
        return np.array([steer, 0.0], dtype=np.float32)

    def metadata(self):
        return {"kind": "scripted", "name": self.name}


class RecordingExpert(ExpertPilot):
    """The expert, remembering the pose of every frame it was given."""

    def __init__(self) -> None:
        super().__init__(None, ExpertConfig(cruise_speed=2.0))
        self.poses: list[tuple[float, float, float]] = []

    def act(self, observation, info):
        self.poses.append(tuple(info["pose"]))
        return super().act(observation, info)


# --------------------------------------------------------------------------- timing
def _frames_taken(lsub: int, periods: int) -> list[int]:
    """The latency model restated: an idle pilot takes the newest unused frame."""
    starts, frame = [0], 0
    while True:
        finish = starts[-1] + lsub
        nxt = finish if finish // 12 > frame else (frame + 1) * 12
        frame = nxt // 12
        if frame >= periods:
            return [s // 12 for s in starts]
        starts.append(nxt)


@pytest.mark.parametrize("latency_ms", [0, 20, 50, 70, 100, 120, 150])
def test_pilot_takes_the_newest_frame_when_idle(latency_ms) -> None:
    # Straight ahead on the oval's start straight: no intervention in 1.2 s.
    pilot = ScriptedPilot(0.0)
    L = latency_ms / 1000
    mode = "fixed" if L else "zero"
    r = run_closed_loop(pilot, "oval", latency_s=L, latency_mode=mode, max_time_s=1.2, **STATE)
    assert r.interventions == 0
    lsub = latency_substeps(L, 240)
    expected = [round(k * 0.05, 6) for k in _frames_taken(lsub, 24)]
    assert [round(t, 6) for t in pilot.times] == expected
    assert r.inferences == len(expected)
    assert r.elapsed_s == pytest.approx(1.2)
    # min(camera rate, 1 / L), up to one inference at the ends of the run
    rate = min(20.0, 240 / lsub) if lsub else 20.0
    assert abs(r.effective_control_hz - rate) <= 1 / 1.2 + 1e-9


@pytest.mark.parametrize("latency_ms", [0, 20, 70, 100, 130, 300])
def test_command_takes_effect_exactly_latency_later(tiny_track, latency_ms) -> None:
    # The servo turns at 8 rad/s = 1/12 of full lock per physics substep, from 0. The
    # first command (full left) acts from substep ceil(L * 240), so at every frame
    # the pilot sees, the servo has moved by exactly the substeps since then.
    pilot = ScriptedPilot(1.0)
    L = latency_ms / 1000
    mode = "fixed" if L else "zero"
    run_closed_loop(pilot, tiny_track, latency_s=L, latency_mode=mode, max_time_s=1.0, **STATE)
    lsub = latency_substeps(L, 240)
    assert len(pilot.times) >= 2
    for t, servo, resets in zip(pilot.times, pilot.servo, pilot.resets_at, strict=True):
        if resets > 1:
            break  # an intervention re-centred the car and reset the servo
        substep = round(t * 240)
        assert servo == pytest.approx(min(1.0, max(0.0, (substep - lsub) / 12)), abs=1e-9)
    assert max(pilot.servo) > 0  # the command did act within the run


def test_zero_latency_equals_plain_env_stepping(tiny_track) -> None:
    from sim.env import TrackEnv

    env = TrackEnv(track=tiny_track, obs_mode="state", fixed_speed=2.0)
    try:
        obs, info = env.reset(seed=3)
        expert = ExpertPilot(env.track, ExpertConfig(cruise_speed=2.0))
        poses = []
        for _ in range(40):
            poses.append(tuple(info["pose"]))
            obs, _, _, _, info = env.step(expert.act(obs, info)[:1])
    finally:
        env.close()
    pilot = RecordingExpert()
    run_closed_loop(pilot, tiny_track, seed=3, max_time_s=2.0, **STATE)
    assert pilot.poses == poses  # bit for bit


def test_same_seed_same_run(tiny_track) -> None:
    runs = [
        run_closed_loop(
            RecordingExpert(),
            tiny_track,
            latency_s=0.07,
            latency_mode="fixed",
            max_time_s=2.0,
            obs_mode="state",
        )
        for _ in range(2)
    ]
    assert runs[0].trajectory == runs[1].trajectory
    assert runs[0].mean_abs_cte == runs[1].mean_abs_cte


# --------------------------------------------------------------------------- metrics
def test_autonomy_arithmetic() -> None:
    assert autonomy_percent(0, 100.0) == 100.0
    assert autonomy_percent(1, 60.0) == pytest.approx(90.0)
    assert autonomy_percent(2, 60.0) == pytest.approx(80.0)
    assert autonomy_percent(10, 60.0) == 0.0  # 60 s of penalty in 60 s
    assert autonomy_percent(20, 60.0) == 0.0  # clipped
    assert autonomy_percent(0, 0.0) == 100.0
    with pytest.raises(ValueError):
        autonomy_percent(-1, 10.0)


def test_intervention_recentres_and_the_run_goes_on(tiny_track) -> None:
    # Full right lock on a left-hand circle for 0.5 s (off the road), then the expert.
    expert = ExpertPilot(None, ExpertConfig(cruise_speed=2.0))

    def steer(i, obs, info):
        return -1.0 if i < 10 else float(expert.act(obs, info)[0])

    pilot = ScriptedPilot(steer)
    pilot.set_track = expert.set_track
    r = run_closed_loop(pilot, tiny_track, laps=1, **STATE)
    assert r.interventions == r.off_track == 1
    assert len(r.interventions_at) == 1
    assert r.crashed and not r.ok
    assert r.completed and r.laps_completed == 1  # it went on and finished the lap
    assert r.autonomy == pytest.approx(100 * (1 - 6.0 / r.elapsed_s))
    assert pilot.resets == 2  # at the start and after the intervention
    assert r.max_abs_cte > 0.5 + 0.15  # the excursion is in the CTE


def test_metrics_of_a_clean_lap(tiny_track) -> None:
    r = run_closed_loop(RecordingExpert(), tiny_track, laps=2, obs_mode="state")
    assert r.completed and r.laps_completed == 2 and r.interventions == 0
    assert r.autonomy == 100.0
    assert len(r.lap_times) == 2 and all(5.0 < t < 8.0 for t in r.lap_times)
    assert 1.8 < r.mean_speed < 2.2
    assert 0 < r.mean_abs_cte <= r.max_abs_cte < 0.3
    assert r.mean_steering > 0  # a left-hand circle
    assert r.elapsed_s < sum(r.lap_times) + 0.05 + 0.05  # stops right after the laps
    assert len(r.trajectory) == pytest.approx(r.elapsed_s * 10, abs=2)
    assert r.track == "tiny" and r.direction == "ccw" and r.pilot_kind == "expert"


def test_bad_settings_are_value_errors(tiny_track) -> None:
    pilot = ScriptedPilot(0.0)
    with pytest.raises(ValueError):
        run_closed_loop(pilot, tiny_track, laps=0, **STATE)
    with pytest.raises(ValueError):
        run_closed_loop(pilot, tiny_track, latency_mode="sometimes", **STATE)
    with pytest.raises(ValueError):
        run_closed_loop(pilot, tiny_track, latency_s=0.05, latency_mode="zero", **STATE)
    with pytest.raises(ValueError):
        run_closed_loop(pilot, "no-such-track", **STATE)


# --------------------------------------------------------------------------- physics
def test_expert_laps_at_20_and_70_ms_and_crashes_at_300_ms() -> None:
    # Pure pursuit at 2 m/s on a 1 m wide road: the architecture's reference physics.
    results = {
        ms: run_closed_loop(
            load_expert(),
            "oval",
            "ccw",
            laps=1,
            latency_s=ms / 1000,
            latency_mode="fixed",
            **STATE,
        )
        for ms in (20, 70, 300)
    }
    for ms in (20, 70):
        assert results[ms].ok, (ms, results[ms].interventions)
    assert results[300].interventions > 0


def load_expert():
    from evaluation.pilots import load_pilot_spec

    return load_pilot_spec("expert", speed=2.0)


# --------------------------------------------------------------------------- many / sweep
def test_run_many_in_subprocesses_matches_serial() -> None:
    jobs = [
        RunJob("expert", "oval", d, laps=1, latency_s=0.07, latency_mode="fixed", max_time_s=1.5)
        for d in ("ccw", "cw")
    ]
    serial = run_many(jobs, workers=1, progress=False)
    parallel = run_many(jobs, workers=2, progress=False)
    assert [r.direction for r in parallel] == ["ccw", "cw"]
    assert [r.track for r in parallel] == ["oval", "oval"]  # the track's own name both ways
    assert [r.trajectory for r in parallel] == [r.trajectory for r in serial]


def _result(latency_ms: float, ok: bool, **kw) -> RunResult:
    base = RunResult(
        pilot="p",
        pilot_kind="test",
        track="oval",
        track_hash="h",
        direction="ccw",
        speed=2.0,
        laps_target=1,
        seed=0,
        latency_mode="fixed",
        latency_ms=latency_ms,
        latency_substeps=0,
        obs_mode="state",
        image_size=[120, 160],
        control_period_ms=50.0,
        laps_completed=1 if ok else 0,
        off_track=0 if ok else 2,
        flips=0,
        interventions=0 if ok else 2,
        autonomy=100.0,
        mean_abs_cte=0.0,
        max_abs_cte=0.0,
        lap_times=[],
        mean_lap_time=None,
        mean_speed=2.0,
        mean_steering=0.0,
        elapsed_s=10.0,
        completed=ok,
        progress_m=0.0,
        steps=200,
        inferences=10,
        effective_control_hz=1.0,
        episode_return=0.0,
        stalled=False,
        max_time_s=60.0,
    )
    return dataclasses.replace(base, **kw)


def test_max_ok_latency() -> None:
    rs = [_result(0, True), _result(20, True), _result(50, False), _result(70, True)]
    assert max_ok_latency(rs) == 20  # not 70: every smaller latency must pass too
    assert max_ok_latency([_result(0, False), _result(20, True)]) is None
    assert max_ok_latency([_result(100, True), _result(0, True)]) == 100
    with pytest.raises(ValueError, match="one sweep"):
        max_ok_latency([_result(0, True), _result(0, True, direction="cw")])


def test_plot_sweep_writes_png(tmp_path) -> None:
    rs = [_result(ms, ms < 200) for ms in (0, 100, 200, 300)]
    rs += [_result(ms, ms < 300, track="chicane") for ms in (0, 100, 200, 300)]
    out = plot_sweep(rs, tmp_path / "sweep.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_video_of_a_run(tiny_track, tmp_path) -> None:
    import imageio.v2 as iio

    from sim.overlay import STEERING, LabelOverlay

    r = run_closed_loop(
        RecordingExpert(),
        tiny_track,
        max_time_s=1.0,
        obs_mode="state",
        video_path=tmp_path / "run.mp4",
        image_size=(48, 64),
    )
    path = Path(r.video)
    assert path == tmp_path / "run.mp4" and path.is_file()
    with iio.get_reader(str(path)) as reader:
        frames = [np.asarray(f) for f in reader]
    # One frame after the reset and one per control period: camera and map, twice the
    # camera's size each, side by side.
    assert len(frames) == r.steps + 1 and frames[0].shape == (96, 256, 3)
    # The servo's steering bar is drawn over the camera half.
    r0, r1, c0, c1 = LabelOverlay((96, 128), bars=(STEERING,)).regions["steer_bar"]
    bar = frames[-1][r0:r1, c0:c1].astype(int)
    assert (np.abs(bar - np.array([70, 70, 70])).sum(-1) < 40).mean() > 0.3  # its grey track
    assert os.listdir(tmp_path) == ["run.mp4"]


def test_a_failed_run_leaves_no_video(tiny_track, tmp_path) -> None:
    class Crashing(RecordingExpert):
        def act(self, obs, info):
            if info["t"] > 0.3:
                raise RuntimeError("pilot broke")
            return super().act(obs, info)

    with pytest.raises(RuntimeError, match="pilot broke"):
        run_closed_loop(
            Crashing(), tiny_track, max_time_s=1.0, obs_mode="state",
            video_path=tmp_path / "run.mp4", image_size=(48, 64),
        )  # fmt: skip
    assert os.listdir(tmp_path) == []
