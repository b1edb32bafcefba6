"""The expert autopilot laps cleanly, and its perturbations never reach the labels."""

from __future__ import annotations

import numpy as np
import pytest

from agents.base import Pilot
from agents.expert import ExpertConfig, ExpertPilot
from sim.env import TrackEnv


def drive(
    track: str, direction: str, speed: float, laps: int, cfg: ExpertConfig | None = None, seed=0
):
    env = TrackEnv(
        track=track, direction=direction, obs_mode="state", fixed_speed=None, max_laps=laps
    )
    obs, info = env.reset(seed=seed)
    cfg = cfg or ExpertConfig(cruise_speed=speed)
    expert = ExpertPilot(env.track, cfg, env.car_params, seed=seed)
    labels, executed, max_cte = [], [], 0.0
    for _ in range(int(laps * env.track.length / 0.5 * env.control_hz)):
        label = expert.act(obs, info)
        a = expert.executed(label)
        labels.append(label)
        executed.append(a)
        obs, _, term, _, info = env.step(a)
        max_cte = max(max_cte, abs(info["lateral"]))
        if term:
            break
    env.close()
    return info, np.array(labels), np.array(executed), max_cte


def test_expert_is_a_pilot():
    assert isinstance(ExpertPilot(), Pilot)


@pytest.mark.parametrize("track", ["kidney", "hairpin"])
@pytest.mark.parametrize("direction", ["ccw", "cw"])
@pytest.mark.parametrize("speed", [2.0, 3.0])
def test_expert_laps_without_leaving_the_road(track, direction, speed):
    info, _, _, max_cte = drive(track, direction, speed, laps=3)
    assert info["lap"] == 3 and not info["off_track"] and not info["flipped"]
    assert max_cte < 0.3  # stays well inside a half width of >= 0.4 m


def test_expert_slows_for_bends():
    expert = ExpertPilot(None, ExpertConfig(cruise_speed=3.0))
    from tracks import get_track

    track = get_track("hairpin")
    expert.set_track(track)
    k = np.abs(track.curvature(np.linspace(0, track.length, 400)))
    s_tight, s_straight = np.linspace(0, track.length, 400)[[np.argmax(k), np.argmin(k)]]
    assert expert.target_speed(s_tight - 0.5) < expert.target_speed(s_straight) - 0.5


def test_dart_perturbations_move_the_car_but_not_the_labels():
    cfg = ExpertConfig(cruise_speed=2.0, steer_noise=0.1, drift_prob=0.02, drift_steer=0.3)
    info, labels, executed, max_cte = drive("oval", "ccw", 2.0, laps=2, cfg=cfg)
    assert info["lap"] == 2 and not info["off_track"]
    assert np.abs(executed[:, 0] - labels[:, 0]).mean() > 0.05
    _, _, _, clean_cte = drive("oval", "ccw", 2.0, laps=2)
    assert max_cte > clean_cte  # the perturbations really moved the car
    np.testing.assert_array_equal(executed[:, 1], labels[:, 1])  # throttle untouched


def test_expert_config_validation():
    with pytest.raises(ValueError):
        ExpertConfig(cruise_speed=0)
    with pytest.raises(ValueError):
        ExpertConfig(drift_prob=2.0)
    with pytest.raises(RuntimeError):
        ExpertPilot().act(None, {"pose": (0, 0, 0), "s": 0.0, "speed": 0.0})
