"""sim.bench and sim.vector: the benchmark runs end to end; pinning pins workers only."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from sim import bench
from sim.vector import make_vector_env, worker_cpus


def test_worker_cpus_round_robin():
    if not hasattr(os, "sched_getaffinity"):
        assert worker_cpus(3) == [None, None, None]
        return
    cpus = sorted(os.sched_getaffinity(0))
    got = worker_cpus(len(cpus) + 1)
    assert got[: len(cpus)] == cpus and got[-1] == cpus[0]
    with pytest.raises(ValueError):
        worker_cpus(0)


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity here")
def test_pinned_vector_env_pins_workers_not_the_parent():
    before = os.sched_getaffinity(0)
    venv = make_vector_env(2, image_size=(32, 32), fixed_speed=2.0)
    try:
        # AsyncVectorEnv builds one env in the parent to read the spaces; that
        # must not pin the parent (everything else would share one CPU).
        assert os.sched_getaffinity(0) == before
        obs, info = venv.reset(seed=0)
        assert obs.shape == (2, 32, 32, 3)
        obs, *_ = venv.step(np.zeros((2, 1), np.float32))
        assert obs.dtype == np.uint8
        pids = [p.pid for p in venv.processes]
        expected = worker_cpus(2)
        for pid, cpu in zip(pids, expected, strict=True):
            assert os.sched_getaffinity(pid) == {cpu}
    finally:
        venv.close()


def test_bench_quick_json(capsys):
    assert bench.main(["--quick", "--json", "--envs", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {r["case"]: r for r in out["rows"]}
    assert all(r["steps_per_s"] > 0 for r in rows.values())
    for size in ("64x64", "96x96", "120x160"):
        assert f"trackpilot image {size}, 1 env" in rows
    for size in ("96x96", "120x160"):
        for case in (
            "2 envs, AsyncVectorEnv",
            "2 envs, AsyncVectorEnv, pinned",
            "2 envs, AsyncVectorEnv, pinned, 2 info keys",
            "2 independent processes",
            "2 busy-wait stand-ins, AsyncVectorEnv, pinned",
        ):
            assert "vs_1_env" in rows[f"trackpilot image {size}, {case}"]
    if "CarRacing-v3 96x96 (reference)" in rows:
        assert "vs_car_racing" in rows["trackpilot image 96x96, 1 env"]


def test_info_keys_filter_and_missing_key():
    venv = make_vector_env(2, pin=False, info_keys=("lap", "speed"), image_size=(32, 32))
    try:
        _, info = venv.reset(seed=0)
        assert {k for k in info if not k.startswith("_")} == {"lap", "speed"}
        _, _, _, _, info = venv.step(np.zeros((2, 2), np.float32))
        assert {k for k in info if not k.startswith("_")} == {"lap", "speed"}
    finally:
        venv.close()
    from sim.env import TrackEnv
    from sim.vector import InfoKeys

    env = InfoKeys(TrackEnv(image_size=(32, 32)), ("no_such_key",))
    with pytest.raises(KeyError, match="no_such_key"):
        env.reset(seed=0)
    env.close()


def test_bench_rejects_bad_arguments(capsys):
    assert bench.main(["--steps", "0"]) == 2
    assert "must be >= 1" in capsys.readouterr().err
