"""Headless expert recording: contents, resume, determinism, and SIGKILL safety."""

from __future__ import annotations

import json
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
    assert all(e["ended"] == "laps_done" for e in ds.episodes)
    assert ds.episodes[0]["extra"]["settings"]["expert"]["steer_noise"] == 0.0
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


def test_recording_again_with_other_settings_is_refused_never_a_silent_no_op(tmp_path, capsys):
    """The issue: ``--noise 0.2 --drift 0.05 --speed 3`` into a dataset recorded with other
    settings printed "wrote 0 episodes ... already complete"."""
    out = tmp_path / "ds"
    one = [*ARGS, "--directions", "ccw", "--workers", "1", "--out", str(out)]
    assert main([*one, "--noise", "0.05"]) == 0
    first = open_dataset(out).episodes
    capsys.readouterr()
    assert main([*one, "--noise", "0.2", "--drift", "0.05", "--speed", "3"]) == 2
    out_err = capsys.readouterr()
    lines = [line for line in out_err.err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "wrote" not in out_err.out, out_err
    for said in ("--noise 0.05 there, 0.2 now", "--drift 0.0 there, 0.05 now", "--speed 2.0"):
        assert said in lines[0], lines[0]
    assert "oval-ccw-000-s0" in lines[0] and "another --out" in lines[0]
    assert "another --seed" in lines[0]
    assert main([*one, "--noise", "0.05", "--laps", "2"]) == 2  # laps shape episodes too
    assert "--laps 1 there, 2 now" in capsys.readouterr().err
    assert open_dataset(out).episodes == first  # nothing written, nothing changed
    # the same settings resume (nothing to do); another seed adds a separate set
    assert main([*one, "--noise", "0.05"]) == 0
    assert "1 already complete" in capsys.readouterr().out
    assert main([*one, "--noise", "0.2", "--seed", "1"]) == 0
    keys = [e["key"] for e in open_dataset(out).episodes]
    assert keys == ["oval-ccw-000-s0", "oval-ccw-000-s1"]


def test_episodes_recorded_before_settings_were_kept_are_compared_too(tmp_path, capsys):
    out = tmp_path / "ds"
    one = [*ARGS, "--directions", "ccw", "--workers", "1", "--out", str(out)]
    assert main([*one, "--noise", "0.05"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["episodes"][0]["extra"]["settings"]  # as an older sim.record wrote it
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert main([*one, "--noise", "0.05"]) == 0
    assert main([*one, "--noise", "0.1"]) == 2
    assert "--noise 0.05 there, 0.1 now" in capsys.readouterr().err


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
