"""``python -m sim.drive`` and ``agents.human``: input smoothing, gamepad mapping, and a
headless drive (synthetic key events through pygame's real event queue) checked on disk."""

from __future__ import annotations

import os

# before pygame is imported anywhere: no window, no sound card
os.environ["SDL_VIDEODRIVER"] = "dummy"
os.environ["SDL_AUDIODRIVER"] = "dummy"

import numpy as np  # noqa: E402
import pygame  # noqa: E402
import pytest  # noqa: E402

from agents.base import Pilot  # noqa: E402
from agents.human import (  # noqa: E402
    GamepadConfig,
    HumanConfig,
    HumanPilot,
    gamepad_command,
    slew,
)
from sim import drive  # noqa: E402
from sim.dataset import DatasetWriter, is_warning, open_dataset, validate_dataset  # noqa: E402

SMALL = ["--image-size", "48x64", "--fps", "0", "--scale", "2"]


def key(kind: int, k: int) -> pygame.event.Event:
    return pygame.event.Event(kind, key=k, mod=0, scancode=0, unicode="")


def episodes(root) -> list[tuple[dict, dict]]:
    """(manifest record, arrays) of every episode, in writing order."""
    ds = open_dataset(root)
    return [(rec, ds.load_episode(i)) for i, rec in enumerate(ds.episodes)]


def assert_valid(root) -> None:
    problems = validate_dataset(root)
    assert [p for p in problems if not is_warning(p)] == []


# ------------------------------------------------------------------------------ HumanPilot


def test_slew_rises_falls_and_lands_on_centre() -> None:
    assert slew(0.0, 1.0, 0.05, 3.0, 5.0) == pytest.approx(0.15)
    assert slew(1.0, 0.0, 0.05, 3.0, 5.0) == pytest.approx(0.75)
    assert slew(0.1, -1.0, 0.05, 3.0, 5.0) == 0.0  # crossing centre stops on it once
    assert slew(0.0, -1.0, 0.05, 3.0, 5.0) == pytest.approx(-0.15)
    assert slew(0.5, 0.5, 0.05, 3.0, 5.0) == 0.5


def test_keyboard_steering_ramps_and_returns_to_centre() -> None:
    pilot = HumanPilot(HumanConfig(dt=0.05, steer_rate=3.0, steer_return_rate=5.0))
    assert isinstance(pilot, Pilot)
    pilot.handle_event(key(pygame.KEYDOWN, pygame.K_LEFT))
    steer = [float(pilot.act(None, {})[0]) for _ in range(9)]
    assert pilot.active
    assert np.all(np.diff(steer[:7]) > 0)  # a ramp, not bang-bang
    assert steer[0] == pytest.approx(0.15)
    assert steer[6:] == pytest.approx([1.0, 1.0, 1.0])  # full lock after 7 steps (0.35 s)

    pilot.handle_event(key(pygame.KEYUP, pygame.K_LEFT))
    back = [float(pilot.act(None, {})[0]) for _ in range(5)]
    assert back == pytest.approx([0.75, 0.5, 0.25, 0.0, 0.0])  # faster back to centre
    assert not pilot.active

    # WASD: D steers right; W throttles up to key_throttle
    pilot.handle_event(key(pygame.KEYDOWN, pygame.K_d))
    pilot.handle_event(key(pygame.KEYDOWN, pygame.K_w))
    for _ in range(10):
        a = pilot.act(None, {})
    assert a[0] == pytest.approx(-1.0)
    assert a[1] == pytest.approx(pilot.config.key_throttle)
    # losing focus releases every key (their KEYUPs go to another window)
    pilot.handle_event(pygame.event.Event(pygame.WINDOWFOCUSLOST))
    pilot.act(None, {})
    assert not pilot.active
    # unrelated keys are not driving input
    assert not pilot.handle_event(key(pygame.KEYDOWN, pygame.K_r))


class FakeJoystick:
    def __init__(self, axes: list[float]) -> None:
        self.axes = axes

    def get_numaxes(self) -> int:
        return len(self.axes)

    def get_axis(self, i: int) -> float:
        return self.axes[i]

    def get_name(self) -> str:
        return "fake pad"


def test_gamepad_mapping_deadzone_and_trigger_arming() -> None:
    cfg = GamepadConfig(steer_axis=0, throttle_axis=5, brake_axis=2, deadzone=0.1)
    axes = [0.0] * 6
    armed: set[int] = set()
    read = axes.__getitem__
    # a trigger reading 0 before it ever moved is not trusted (would be half throttle)
    cmd = gamepad_command(read, 6, cfg, armed)
    assert (cmd.steering, cmd.throttle, cmd.steering_active, cmd.throttle_active) == (
        0.0,
        0.0,
        False,
        False,
    )
    axes[2] = axes[5] = -1.0  # triggers at rest: armed
    axes[0] = 0.05  # inside the deadzone
    cmd = gamepad_command(read, 6, cfg, armed)
    assert armed == {2, 5} and cmd.steering == 0.0 and not cmd.throttle_active
    axes[0] = 0.55  # stick right -> steering right (negative), deadzone rescaled
    axes[5] = 1.0  # full right trigger
    cmd = gamepad_command(read, 6, cfg, armed)
    assert cmd.steering == pytest.approx(-0.5)
    assert cmd.throttle == pytest.approx(cfg.max_throttle)
    axes[2] = 1.0  # full brake cancels full throttle
    assert gamepad_command(read, 6, cfg, armed).throttle == pytest.approx(0.0)
    # stick mode: pushing up (-1) drives forward
    stick = GamepadConfig(steer_axis=0, throttle_axis=1, throttle_mode="stick", deadzone=0.0)
    cmd = gamepad_command([-1.0, -0.5].__getitem__, 2, stick)
    assert cmd.steering == pytest.approx(1.0) and cmd.throttle == pytest.approx(0.5 * 0.7)
    # axes the pad does not have read as 0
    assert gamepad_command([0.3].__getitem__, 1, cfg).throttle == 0.0
    with pytest.raises(ValueError, match="throttle_mode"):
        GamepadConfig(throttle_mode="pedal")


def test_human_pilot_uses_gamepad_and_keyboard_wins() -> None:
    pad = FakeJoystick([0.0, 0.0, -1.0, 0.0, 0.0, -1.0])
    pilot = HumanPilot(HumanConfig(gamepad=GamepadConfig(deadzone=0.0)))
    pilot.attach_joystick(pad)
    pilot.act(None, {})
    assert not pilot.active and pilot.joystick_name == "fake pad"
    pad.axes[0] = -1.0  # stick full left: analog, applied at once
    pad.axes[5] = 0.0  # trigger half way
    a = pilot.act(None, {})
    assert a[0] == pytest.approx(1.0)
    assert a[1] == pytest.approx(0.5 * 0.7)
    assert pilot.active
    pilot.handle_event(key(pygame.KEYDOWN, pygame.K_RIGHT))  # a held key overrides the pad
    a = pilot.act(None, {})
    assert a[0] < 1.0


# ------------------------------------------------------------------------------ sim.drive


def test_drive_records_human_autopilot_and_takeover(tmp_path) -> None:
    script = [
        (0, "press", "r"),  # recording on
        (1, "down", "up"),
        (1, "down", "left"),
        (5, "up", "left"),  # left held for frames 1-4
        (9, "down", "d"),
        (13, "up", "d"),  # right (WASD) held for frames 9-12
        (20, "up", "up"),
        (22, "press", "p"),  # autopilot on
        (30, "down", "right"),  # takeover, frames 30-35
        (36, "up", "right"),
        (40, "press", "h"),  # help overlay on and off: drawing only
        (41, "press", "f1"),
        (42, "press", "r"),  # recording off: episode 1 = frames 0-41
        (44, "press", "r"),
        (50, "press", "c"),  # direction change: episode 2 = frames 44-49 (ccw)
        (56, "press", "escape"),  # quit: episode 3 = frames 50-55 (cw)
    ]
    out = tmp_path / "ds"
    assert drive.main([*SMALL, "--out", str(out), "--max-frames", "500"], script=script) == 0
    assert_valid(out)
    eps = episodes(out)
    assert [rec["frames"] for rec, _ in eps] == [42, 6, 6]

    rec, a = eps[0]
    assert rec["source"] == "takeover"
    assert (rec["extra"]["ended"], rec["ended"]) == ("stopped", "user_stop")
    assert rec["expert"] is not None and rec["expert"]["kind"] == "expert"
    assert a["image"].shape == (42, 48, 64, 3) and a["image"].dtype == np.uint8
    s, takeover = a["steering"], a["takeover"]
    assert s[0] == 0.0
    assert np.all(s[1:5] > 0)  # LEFT = positive steering
    assert np.all(np.diff(s[1:5]) > 0)  # ramped, not bang-bang
    assert np.all(s[5:8] >= 0) and s[7] == 0.0  # back to centre after release
    assert np.all(s[9:13] < 0)  # D = negative steering
    assert np.all(a["throttle"][1:20] > 0)
    expected_takeover = np.zeros(42, np.uint8)
    expected_takeover[30:36] = 1
    np.testing.assert_array_equal(takeover, expected_takeover)
    assert np.all(s[31:36] < 0)  # the human's right turn (bumpless start from the expert's)
    assert np.all(np.diff(s[30:36]) < 0)
    assert np.all(a["throttle"][30:36] > 0.2)  # steering-only takeover keeps the cruise throttle
    assert rec["extra"]["segments"] == [
        {"start": 0, "end": 22, "driver": "human"},
        {"start": 22, "end": 30, "driver": "expert"},
        {"start": 30, "end": 36, "driver": "takeover"},
        {"start": 36, "end": 42, "driver": "expert"},
    ]
    assert np.all(np.diff(a["t"]) > 0)

    rec, a = eps[1]
    assert (rec["source"], rec["direction"], rec["extra"]["ended"]) == (
        "expert",
        "ccw",
        "direction_change",
    )
    assert not a["takeover"].any()
    rec, a = eps[2]
    assert (rec["source"], rec["direction"], rec["extra"]["ended"]) == ("expert", "cw", "quit")
    assert [rec["ended"] for rec, _ in eps] == ["user_stop"] * 3
    assert a["t"][0] == pytest.approx(0.0)  # a fresh env episode after the switch
    assert len({rec["key"] for rec, _ in eps}) == 3
    assert all(rec["key"].startswith("manual-oval") for rec, _ in eps)

    # same info block as python -m sim.record: expert data can be appended to this dataset
    from sim.record import RecordConfig, dataset_info

    DatasetWriter(out, dataset_info(RecordConfig(image_size=(48, 64))))


def test_drive_off_track_track_change_and_reset(tmp_path) -> None:
    script = tmp_path / "script.txt"
    script.write_text(
        "# hold full left until the car leaves the road\n"
        "0 press r\n1 down up\n1 down left\n"
        "30 press t   # next built-in track\n"
        "32 press backspace\n"
    )
    out = tmp_path / "ds"
    argv = [*SMALL, "--out", str(out), "--max-frames", "36", "--script", str(script)]
    assert drive.main(argv) == 0
    assert_valid(out)
    eps = episodes(out)
    ended = [rec["extra"]["ended"] for rec, _ in eps]
    assert ended[0] == "off_track"  # saved, flagged
    assert ended[-3:] == ["track_change", "reset", "max_frames"]
    endings = [rec["ended"] for rec, _ in eps]  # the episode's ending, in dataset words
    assert endings[0] == "off_track" and endings[-3:] == ["user_stop", "user_stop", "time_limit"]
    assert sum(rec["frames"] for rec, _ in eps) == 36  # nothing lost, nothing twice
    rec, a = eps[0]
    assert rec["source"] == "human" and np.all(a["steering"][1:] > 0)
    assert abs(a["lateral"][-1]) > 0.3
    assert eps[-3][0]["track_id"] == "oval"
    assert [rec["track_id"] for rec, _ in eps[-2:]] == ["kidney", "kidney"]
    assert [rec["frames"] for rec, _ in eps[-2:]] == [2, 4]


def test_drive_writes_recorded_frames_when_it_crashes(tmp_path, monkeypatch) -> None:
    from sim.env import TrackEnv

    # every control step goes through step_with_switch (TrackEnv.step and agents.loop)
    real_step = TrackEnv.step_with_switch
    calls = {"n": 0}

    def failing_step(self, held, new, switch, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:
            raise RuntimeError("boom")
        return real_step(self, held, new, switch, **kwargs)

    monkeypatch.setattr(TrackEnv, "step_with_switch", failing_step)
    out = tmp_path / "ds"
    with pytest.raises(RuntimeError, match="boom"):
        drive.main([*SMALL, "--out", str(out), "--record", "--autopilot"])
    assert_valid(out)
    ((rec, _),) = episodes(out)
    assert rec["frames"] == 6 and rec["extra"]["ended"] == "error"
    assert rec["source"] == "expert"


def test_drive_retries_a_failed_write_at_exit(tmp_path, monkeypatch, capsys) -> None:
    real_write = DatasetWriter.write_episode
    calls = {"n": 0}

    def flaky_write(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("disk full")
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(DatasetWriter, "write_episode", flaky_write)
    out = tmp_path / "ds"
    argv = [*SMALL, "--out", str(out), "--record", "--max-frames", "50"]
    assert drive.main(argv, script=[(5, "press", "r")]) == 2  # stopping recording failed ...
    assert "disk full" in capsys.readouterr().err
    ((rec, _),) = episodes(out)  # ... but the frames were kept and written on the way out
    assert rec["frames"] == 5 and rec["extra"]["ended"] == "error"


def test_drive_splits_long_recordings(tmp_path) -> None:
    cfg = drive.DriveConfig(
        image_size=(48, 64),
        out=str(tmp_path / "ds"),
        fps=0,
        scale=1,
        max_frames=10,
        max_episode_frames=4,
        record=True,
        autopilot=True,
    )
    summary = drive.run(cfg)
    assert summary["frames_written"] == 10
    eps = episodes(tmp_path / "ds")
    assert [rec["frames"] for rec, _ in eps] == [4, 4, 2]
    assert [rec["extra"]["ended"] for rec, _ in eps] == ["split", "split", "max_frames"]
    assert all(rec["source"] == "expert" for rec, _ in eps)


def test_drive_rejects_bad_input(tmp_path, capsys) -> None:
    assert drive.main([*SMALL, "--image-size", "8x8", "--out", str(tmp_path / "a")]) == 2
    assert drive.main([*SMALL, "--track", "nope", "--out", str(tmp_path / "b")]) == 2
    assert "unknown track" in capsys.readouterr().err
    # an existing dataset with another camera size is refused before any driving
    from sim.record import RecordConfig, dataset_info

    DatasetWriter(tmp_path / "c", dataset_info(RecordConfig(image_size=(32, 48))))
    assert drive.main([*SMALL, "--out", str(tmp_path / "c"), "--max-frames", "3"]) == 2
    assert "image_size" in capsys.readouterr().err
    with pytest.raises(ValueError, match="line 1"):
        drive.parse_script("x down left")
    with pytest.raises(ValueError, match="needs a key"):
        drive.ScriptEvent(0, "down")
