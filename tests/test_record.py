"""Headless expert recording: contents, resume, determinism, and SIGKILL safety."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from sim.dataset import is_warning, open_dataset, validate_dataset
from sim.record import main

ARGS = ["--tracks", "oval", "--laps", "1", "--image-size", "24x32", "--no-progress"]


def test_record_writes_a_valid_self_describing_dataset(tmp_path):
    out = tmp_path / "ds"
    assert main([*ARGS, "--directions", "ccw,cw", "--workers", "1", "--out", str(out)]) == 0
    ds = open_dataset(out)
    assert [e["direction"] for e in ds.episodes] == ["ccw", "cw"]
    assert all(e["source"] == "expert" and e["laps"] == 1 for e in ds.episodes)
    assert ds.info["env_id"] == "trackpilot/TrackDrive-v0" and ds.info["image_size"] == [24, 32]
    assert ds.info["pybullet_version"] and ds.info["control_hz"] == 20
    assert not [p for p in validate_dataset(out) if not is_warning(p)]
    a = ds.load_arrays()
    assert a["image"].shape[1:] == (24, 32, 3) and a["image"].dtype == np.uint8
    # Counter-clockwise laps steer left on average, clockwise laps right.
    ccw = a["steering"][a["episode"] == 0].mean()
    cw = a["steering"][a["episode"] == 1].mean()
    assert ccw > 0.05 and cw < -0.05
    assert np.all(np.diff(a["t"][a["episode"] == 0]) > 0)


def test_record_resumes_and_is_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert (
        main([*ARGS, "--directions", "ccw", "--workers", "1", "--out", str(a), "--noise", "0.05"])
        == 0
    )
    first = open_dataset(a).episodes
    assert (
        main([*ARGS, "--directions", "ccw", "--workers", "1", "--out", str(a), "--noise", "0.05"])
        == 0
    )
    assert open_dataset(a).episodes == first  # nothing re-recorded
    assert (
        main([*ARGS, "--directions", "ccw", "--workers", "1", "--out", str(b), "--noise", "0.05"])
        == 0
    )
    # Same seed, same data (the files differ only in their creation time stamp).
    xa, xb = open_dataset(a).load_arrays(), open_dataset(b).load_arrays()
    assert xa.keys() == xb.keys()
    for k in xa:
        np.testing.assert_array_equal(xa[k], xb[k], err_msg=k)


def test_bad_arguments_exit_2(tmp_path, capsys):
    assert main(["--tracks", "nowhere", "--out", str(tmp_path / "x")]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["--tracks", "oval", "--directions", "up", "--out", str(tmp_path / "x")]) == 2


def test_sigkill_at_random_points_leaves_a_valid_dataset(tmp_path):
    out = tmp_path / "ds"
    cmd = [
        sys.executable,
        "-m",
        "sim.record",
        *ARGS,
        "--directions",
        "ccw,cw",
        "--episodes",
        "4",
        "--workers",
        "1",
        "--out",
        str(out),
    ]
    rng = np.random.default_rng(0)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    seen = 0
    for delay in rng.uniform(2.0, 6.0, size=3):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if not (out / "manifest.json").exists():
            continue
        errors = [p for p in validate_dataset(out) if not is_warning(p)]
        assert not errors, errors
        ds = open_dataset(out)
        for i in range(len(ds.episodes)):
            ds.load_episode(i)  # verifies the checksum
        assert len(ds.episodes) >= seen
        seen = len(ds.episodes)
    if seen == 0:
        pytest.fail("no episode completed before the kills: the test proved nothing")
