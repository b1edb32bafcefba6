"""The Ray backend on a real local Ray cluster (``ray.init(num_cpus=2)``): the same
results as the process pool, pilots shipped by content, a killed worker's run retried
and stored exactly once, unreachable addresses refused quickly.

Ray is an optional extra: without it these tests are skipped (``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")

from evaluation.backends import RunsIncomplete, comparable  # noqa: E402
from evaluation.backends.ray_tasks import RayBackend, RayUnreachable, probe  # noqa: E402
from evaluation.backends.shipping import pack  # noqa: E402
from evaluation.runner import RunJob, run_many  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TASK_TITLE = "ray::trackpilot_run"  # a worker's process title while it runs a task


@pytest.fixture(scope="module")
def ray_cluster():
    """A local two-CPU Ray cluster for this module (Ray's own processes, no mock)."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    for sig, handler in handlers.items():  # ray.init sets its own SIGTERM handler
        signal.signal(sig, handler)
    yield
    ray.shutdown()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_runs_match_the_pool_and_report_an_unloadable_pilot(
    ray_cluster, tmp_path, make_cnn_checkpoint
) -> None:
    cnn = make_cnn_checkpoint(tmp_path / "cnn")
    broken = make_cnn_checkpoint(tmp_path / "broken", seed=1)
    w = broken / "best.safetensors"
    w.write_bytes(w.read_bytes()[:-1] + b"\0")  # its JSON names another sha256 now
    jobs = [RunJob(str(cnn), "oval", d, laps=1, max_time_s=2.0, seed=3) for d in ("ccw", "cw")] + [
        RunJob(str(broken), "oval", laps=1, max_time_s=1.0),
        RunJob("expert", "oval", "cw", laps=1),
    ]
    with pytest.raises(RunsIncomplete) as pool:  # here, in this process
        run_many(jobs, workers=1, progress=False)
    cache = tmp_path / "cache"
    with RayBackend(2, cache_dir=str(cache)) as backend, pytest.raises(RunsIncomplete) as on_ray:
        run_many(jobs, progress=False, backend=backend)
    assert ray.is_initialized()  # the test's cluster: used, not stopped

    assert set(on_ray.value.failures) == set(pool.value.failures) == {2}
    for a, b in zip(pool.value.results, on_ray.value.results, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            assert comparable(a) == comparable(b)  # the same run, wherever it ran
    failure = on_ray.value.failures[2]
    assert failure.pilot_spec == str(broken)  # the user's spec, not the worker's cache path
    assert "sha256 does not match" in failure.reason
    # shipped by content: both checkpoints sit in the worker's cache under their address
    for spec in (cnn, broken):
        bundle, _ = pack(str(spec))
        assert sorted(p.name for p in (cache / bundle.address).iterdir()) == [
            "best.json",
            "best.safetensors",
        ]


def test_unreachable_ray_address_is_one_line_quickly(tmp_path, capsys) -> None:
    from evaluation.evaluate import main as evaluate_main
    from evaluation.leaderboard import main as leaderboard_main

    port = _closed_port()
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(RayUnreachable, match=r"cannot reach the Ray cluster at .*refused"):
            probe(address, timeout_s=2.0)
    with pytest.raises(RayUnreachable, match="bad Ray address"):
        probe("nowhere", timeout_s=1.0)

    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        t0 = time.monotonic()
        with pytest.raises(RayUnreachable, match="does not answer as a Ray head within 1 s"):
            probe(f"127.0.0.1:{silent.getsockname()[1]}", timeout_s=1.0)
        assert time.monotonic() - t0 < 5

    address = f"ray://127.0.0.1:{port}"
    argv = ["--backend", "ray", "--address", address, "--out", str(tmp_path / "o")]
    argv += ["--db", str(tmp_path / "o" / "lb.sqlite")]
    t0 = time.monotonic()
    rc = evaluate_main(["expert", "--tracks", "oval", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: cannot reach the Ray cluster at {address} ")
    rc = leaderboard_main(["--preset", "tiny", *argv])
    out = capsys.readouterr()
    assert rc == 2 and out.err.strip().startswith("error: cannot reach the Ray cluster")
    assert time.monotonic() - t0 < 10
    assert not (tmp_path / "o").exists()  # nothing written, nothing recorded


def _task_workers() -> list[int]:
    """Pids of Ray workers running one of our tasks right now."""
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    title = f.read().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            if title.startswith(TASK_TITLE):
                pids.append(int(name))
    return pids


def test_killed_worker_is_retried_and_every_run_stored_once(ray_cluster, tmp_path) -> None:
    from evaluation.evaluate import evaluate
    from evaluation.store import open_store

    settings = dict(
        tracks=("oval", "kidney"),
        directions=("ccw", "cw"),
        seeds=(0, 1),
        laps=2,
        latency="20ms",
        progress=False,
    )
    killed: list[int] = []

    def kill_one_mid_run() -> None:
        end = time.monotonic() + 120
        while not killed and time.monotonic() < end:
            busy = _task_workers()
            if busy:
                time.sleep(0.3)  # well inside the run (each takes about a second)
                if busy[0] in _task_workers():
                    os.kill(busy[0], signal.SIGKILL)
                    killed.append(busy[0])
                    return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_mid_run, daemon=True)
    killer.start()
    db = tmp_path / "lb.sqlite"  # the driver stores the evaluation in one transaction
    rows = evaluate(["expert"], backend="ray", db=str(db), **settings)  # the module's cluster
    killer.join(5)
    assert killed, "no worker was seen running a task"
    with open_store(db, readonly=True) as store:
        stored = store.closed_loop_rows()
        assert len(store.evaluations()) == 1
    keys = [(r["track"], r["direction"], r["seed"]) for r in stored]
    expected = {(t, d, s) for t in ("oval", "kidney") for d in ("ccw", "cw") for s in (0, 1)}
    assert len(keys) == len(expected) and set(keys) == expected  # none lost, none twice
    assert all(r["laps_completed"] == 2 for r in stored)
    # the retried run is the same run: identical to one made on the pool
    again = evaluate(["expert"], **settings)
    by_key = {(r.track, r.direction, r.seed): r for r in again}
    for r in rows:
        assert r.mean_abs_cte == by_key[(r.track, r.direction, r.seed)].mean_abs_cte


def test_cli_starts_and_stops_its_own_ray_instance(tmp_path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "evaluation.evaluate", "expert", "--tracks", "oval"]
        + ["--directions", "ccw,cw", "--laps", "1", "--latency", "0", "--backend", "ray"]
        + ["--workers", "2", "--json", "--no-progress", "--out", str(tmp_path)]
        + ["--db", str(tmp_path / "lb.sqlite")],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.strip().splitlines()) == 2
    from evaluation.store import open_store

    with open_store(tmp_path / "lb.sqlite", readonly=True) as store:
        assert {r["direction"] for r in store.closed_loop_rows()} == {"ccw", "cw"}
        assert store.counts()["closed_loop"] == 2
