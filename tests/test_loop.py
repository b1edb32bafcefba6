"""The one closed loop (agents.loop), the pilot protocol's needs and the pilot registry."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

from agents import registry
from agents.base import DEFAULT_IMAGE_SIZE, PilotNeeds, pilot_needs
from agents.expert import ExpertConfig, ExpertPilot
from agents.loop import ClosedLoop, LoopObserver
from sim.env import TrackEnv


class Weave:
    """A camera-free pilot that weaves (sin of the call index), needing nothing privileged."""

    name = "weave"
    needs = PilotNeeds(obs_mode="state")

    def __init__(self, amplitude: float = 0.6) -> None:
        self.amplitude = amplitude
        self.calls = 0

    def reset(self) -> None:
        self.calls = 0

    def act(self, observation, info):
        self.calls += 1
        return np.array([self.amplitude * np.sin(self.calls / 7.0), 0.3], dtype=np.float32)

    def metadata(self):
        return {"kind": "test", "name": self.name}


def _env(track, **kw) -> TrackEnv:
    return TrackEnv(track=track, obs_mode="state", fixed_speed=1.5, max_laps=None, **kw)


def test_zero_latency_loop_is_exactly_env_step(tiny_track) -> None:
    """With L = 0 a period of the loop is ``env.step(pilot.act(obs, info))``: same states."""
    env_a, env_b = _env(tiny_track), _env(tiny_track)
    try:
        loop = ClosedLoop(env_a, Weave(), on_leave_road="stop", trajectory_hz=None)
        loop.reset(seed=3)
        pilot = Weave()
        obs, info = env_b.reset(seed=3)
        pilot.reset()
        for _ in range(60):
            step = loop.step()
            obs, _, _, _, info = env_b.step(pilot.act(obs, info)[:1])
            assert step.info["pose"] == info["pose"]
            np.testing.assert_array_equal(step.obs, obs)
    finally:
        env_a.close()
        env_b.close()


def test_observer_sees_each_frame_with_the_unperturbed_command(tiny_track) -> None:
    class Frames(LoopObserver):
        def __init__(self) -> None:
            self.commands: list[np.ndarray] = []
            self.steps = 0

        def on_frame(self, obs, info, command) -> None:
            self.commands.append(command.copy())

        def on_step(self, obs, info) -> None:
            self.steps += 1

    seen = Frames()
    env = _env(tiny_track)
    try:
        loop = ClosedLoop(
            env,
            Weave(),
            latency_s=0.12,  # 29 physics substeps at 240 Hz; a period is 12
            on_leave_road="stop",
            perturb=lambda a: np.clip(a + np.float32(0.1), -1, 1),
            observers=[seen],
        )
        loop.reset(seed=0)
        for _ in range(30):
            step = loop.step()
            if step.command is not None:
                assert step.executed[0] == pytest.approx(min(1.0, step.command[0] + 0.1))
    finally:
        env.close()
    assert seen.steps == 30
    # back to back, one inference every 29 substeps: ceil(30 * 12 / 29) = 13 in 30 periods
    assert len(seen.commands) == loop.inferences == 13
    assert all(c.dtype == np.float32 for c in seen.commands)


def test_stop_mode_ends_the_run_when_the_car_leaves_the_road(tiny_track) -> None:
    class HardLeft(Weave):
        def act(self, observation, info):
            return np.array([1.0, 0.0], dtype=np.float32)

    env = _env(tiny_track)
    try:
        for mode, expect_done in (("stop", True), ("recentre", False)):
            loop = ClosedLoop(env, HardLeft(), on_leave_road=mode)
            loop.reset(seed=0)
            r = loop.run(laps=5, max_time_s=8.0)
            assert r.interventions >= 1
            if expect_done:  # ended at the first excursion
                assert r.interventions == 1 and r.elapsed_s < 8.0 and not r.completed
            else:  # re-centred and went on to the time limit
                assert r.elapsed_s == pytest.approx(8.0, abs=0.05)
    finally:
        env.close()


def test_stall_ends_a_run_that_makes_no_progress(tiny_track) -> None:
    env = TrackEnv(track=tiny_track, obs_mode="state", fixed_speed=None, max_laps=None)
    try:

        class Parked(Weave):
            needs = PilotNeeds(obs_mode="state", throttle=True)

            def act(self, observation, info):
                return np.array([0.0, 0.0], dtype=np.float32)

        loop = ClosedLoop(env, Parked(), on_leave_road="stop")
        loop.reset(seed=0)
        r = loop.run(laps=1, max_steps=2000, stall_s=2)
        assert r.stalled and r.steps == 40 and r.progress_m < 0.5
    finally:
        env.close()


def test_privileged_pilot_gets_the_track_as_driven(tiny_track) -> None:
    env = TrackEnv(track=tiny_track, direction="cw", obs_mode="state", fixed_speed=2.0)
    try:
        expert = ExpertPilot(None, ExpertConfig(cruise_speed=2.0))
        loop = ClosedLoop(env, expert)
        loop.reset(seed=0)
        assert expert.track is env.track  # the reversed track, not the base one
        r = loop.run(laps=1)
        assert r.ok and r.direction == "cw" and r.laps_completed == 1
    finally:
        env.close()


# --------------------------------------------------------------------------- needs
def test_needs_are_declared_by_each_pilot_kind() -> None:
    from agents.classical import EdgePilot

    assert ExpertPilot(None).needs == PilotNeeds(obs_mode="state", privileged=True)
    assert EdgePilot().needs.obs_mode == "image"
    assert PilotNeeds().camera == DEFAULT_IMAGE_SIZE
    assert PilotNeeds(image_size=(96, 96)).camera == (96, 96)
    with pytest.raises(ValueError, match="obs_mode"):
        PilotNeeds(obs_mode="lidar")
    with pytest.raises(ValueError, match="image_size"):
        PilotNeeds(image_size=(0, 96))

    class Legacy:  # a user's duck-typed pilot with no needs: the default camera
        name = "legacy"

    assert pilot_needs(Legacy()) == PilotNeeds()


# --------------------------------------------------------------------------- registry
def test_registry_keywords_and_errors(tmp_path) -> None:
    assert isinstance(registry.load_pilot("expert", speed=2.5), ExpertPilot)
    assert registry.load_pilot("expert", speed=2.5).config.cruise_speed == 2.5
    with pytest.raises(ValueError, match="no such file"):
        registry.load_pilot("nowhere")
    (tmp_path / "x.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="neither a CNN checkpoint"):
        registry.load_pilot(str(tmp_path / "x.json"))
    (tmp_path / "agent.zip").write_bytes(b"PK")
    with pytest.raises(ValueError, match="pickles"):
        registry.load_pilot(str(tmp_path / "agent.zip"))
    (tmp_path / "deep.json").write_text("[" * 100_000)
    with pytest.raises(ValueError, match="unreadable pilot description"):
        registry.load_pilot(str(tmp_path / "deep.json"))


def test_a_new_pilot_kind_is_one_module_and_one_entry(tmp_path, monkeypatch) -> None:
    """The recipe in the architecture notes: a module with load_spec, a KINDS entry."""
    module = types.ModuleType("fake_pilot")

    class FakePilot(Weave):
        name = "fake"

    def load_spec(target, *, device, speed):
        pilot = FakePilot()
        pilot.path = target
        return pilot

    module.load_spec = load_spec
    monkeypatch.setitem(sys.modules, "fake_pilot", module)
    kind = registry.PilotKind("fake", "fake_pilot", "a fake model", suffixes=(".fake",))
    monkeypatch.setattr(registry, "KINDS", (*registry.KINDS, kind))
    model = tmp_path / "model.fake"
    model.write_bytes(b"\x08\x07")
    pilot = registry.load_pilot(str(model))
    assert isinstance(pilot, FakePilot) and pilot.path == model
    assert "a fake model" in str(pytest.raises(ValueError, registry.load_pilot, "nowhere").value)


# --------------------------------------------------------------------------- the camera
class _Seen(LoopObserver):
    def __init__(self) -> None:
        self.shapes: set[tuple[int, ...]] = set()

    def on_frame(self, obs, info, command) -> None:
        self.shapes.add(np.asarray(obs).shape)


@pytest.mark.parametrize(
    ("dataset_size", "input_size", "camera"),
    [
        ((96, 96), (96, 96), (96, 96)),  # trained on 96x96 frames: evaluated on 96x96 frames
        ((60, 80), (96, 128), (60, 80)),  # upsampled in training: the recorded camera
        (None, (64, 64), (64, 64)),  # no dataset recorded in the checkpoint: its input size
    ],
)
def test_cnn_pilot_gets_the_camera_it_was_trained_on(
    tmp_path, tiny_track, dataset_size, input_size, camera
) -> None:
    from agents.cnn import write_checkpoint
    from agents.models import build_model
    from evaluation.runner import run_closed_loop

    extra = {"dataset": {"image_size": list(dataset_size)}} if dataset_size else {}
    write_checkpoint(tmp_path, "best", build_model("compact", input_size=input_size), extra)
    pilot = registry.load_pilot(str(tmp_path))
    assert pilot.needs.image_size == camera
    seen = _Seen()
    r = run_closed_loop(pilot, tiny_track, laps=1, max_time_s=0.5, record_trajectory=False)
    assert r.image_size == list(camera)
    env = TrackEnv(track=tiny_track, image_size=pilot.needs.camera, fixed_speed=2.0)
    try:
        loop = ClosedLoop(env, pilot, observers=[seen])
        loop.reset(seed=0)
        loop.step()
    finally:
        env.close()
    assert seen.shapes == {(*camera, 3)}
