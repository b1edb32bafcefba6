"""TrackEnv refuses bad parameters and actions with a ValueError naming them.

Before: ``control_hz=0`` / ``physics_hz=0`` were a ZeroDivisionError, ``offtrack_margin=nan``
a car that never left the road, ``max_laps`` 0 or -1 an episode of one step, bool and
complex actions were cast to floats, and ``image_size=(120.7, 160)`` was truncated.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim.env import TrackEnv


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"control_hz": 0}, "control_hz"),
        ({"physics_hz": 0}, "physics_hz"),
        ({"control_hz": -20}, "control_hz"),
        ({"control_hz": 20.0}, "control_hz"),
        ({"physics_hz": True}, "physics_hz"),
        ({"physics_hz": 240, "control_hz": 7}, "physics_hz"),
        ({"offtrack_margin": math.nan}, "offtrack_margin"),
        ({"offtrack_margin": math.inf}, "offtrack_margin"),
        ({"offtrack_margin": -0.1}, "offtrack_margin"),
        ({"offtrack_margin": "0.15"}, "offtrack_margin"),
        ({"max_laps": 0}, "max_laps"),
        ({"max_laps": -1}, "max_laps"),
        ({"max_laps": 1.5}, "max_laps"),
        ({"max_laps": True}, "max_laps"),
        ({"image_size": (120.7, 160)}, "image_size"),
        ({"image_size": (120.0, 160.0)}, "image_size"),
        ({"image_size": (True, 160)}, "image_size"),
        ({"image_size": "120x160.5"}, "image_size"),
        ({"image_size": (4, 4)}, "image_size"),
        ({"image_size": (2048, 160)}, "image_size"),
        ({"image_size": (120,)}, "image_size"),
        ({"fixed_speed": math.nan}, "fixed_speed"),
        ({"fixed_speed": True}, "fixed_speed"),
    ],
)
def test_bad_parameters_name_themselves(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        TrackEnv(**kwargs)


def test_good_parameters_still_work() -> None:
    env = TrackEnv(image_size=(np.int64(48), 64), physics_hz=np.int64(240), max_laps=np.int64(2))
    assert env.image_size == (48, 64) and env.substeps == 12 and env.max_laps == 2
    assert type(env.image_size[0]) is int and type(env.max_laps) is int
    assert TrackEnv(image_size="32x40").image_size == (32, 40)
    assert TrackEnv(image_size=[1024, 16]).image_size == (1024, 16)
    assert TrackEnv(offtrack_margin=0).offtrack_margin == 0.0
    assert TrackEnv(fixed_speed=np.float32(2.0), max_laps=None).fixed_speed == 2.0


@pytest.fixture(scope="module")
def env() -> TrackEnv:
    e = TrackEnv(obs_mode="state", track="oval")
    e.reset(seed=0)
    yield e
    e.close()


@pytest.mark.parametrize(
    "action",
    [
        np.array([True, False]),
        [True, 0.5],
        (0.1, np.bool_(True)),
        np.array([0.5 + 1j, 0.2]),
        [0.5 + 0j, 0.2],
        [0.5, np.complex64(0.2)],
        np.array(["0.1", "0.2"]),
        ["0.1", 0.2],
        np.array([0.1, None], dtype=object),
        [0.1, object()],
        [[0.1, 0.2], [0.3]],
    ],
    ids=repr,
)
def test_bool_complex_and_non_numeric_actions_are_refused(env: TrackEnv, action) -> None:
    with pytest.raises(ValueError, match="action"):
        env.step(action)


def test_real_actions_still_step(env: TrackEnv) -> None:
    for action in (
        np.array([0.1, 0.5], np.float32),
        np.array([0.1, 0.5]),
        [0.1, 0.5],
        (0, 1),
        np.array([0, 1], np.int64),
        np.array([3.0, -7.0], np.float16),  # clipped, as before
    ):
        _, _, _, _, info = env.step(action)
        assert math.isfinite(info["lateral"])
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([math.nan, 0.0], np.float32))
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(3, np.float32))


def test_offtrack_margin_ends_the_episode() -> None:
    """A finite margin terminates a car driving straight off the oval (nan never did)."""
    e = TrackEnv(obs_mode="state", track="oval", offtrack_margin=0.0, max_laps=1)
    e.reset(seed=0, options={"start": "line"})
    try:
        for _ in range(400):
            _, _, terminated, _, info = e.step(np.array([1.0, 0.6], np.float32))
            if terminated:
                break
        assert terminated and e.laps == 0
    finally:
        e.close()
