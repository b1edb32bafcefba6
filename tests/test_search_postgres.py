"""``training.search`` on a shared study in a real PostgreSQL server.

The server is a throwaway one started here (Debian's ``postgresql`` package: initdb and
postgres in a temp directory, on a free local port, as the ``postgres`` user when run as
root; stopped and removed afterwards). Where none can be started the test is skipped
with the reason, except under ``CI=true``, where it must run (``.ci/run`` installs the
package; the ``dev`` extra brings the ``postgres`` one).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from sim.pool import pdeathsig_preexec
from training.synthetic import make_synthetic_dataset

ROOT = Path(__file__).resolve().parents[1]
STUDY = "shared"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _unavailable(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL must run under CI=true, but: {why}")
    pytest.skip(f"no PostgreSQL server can be started here: {why}")


def _bindir() -> Path | None:
    def version(p: str) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", p))

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@pytest.fixture(scope="module")
def postgres_url():
    """``postgresql://trackpilot@127.0.0.1:PORT/search`` on a server of its own."""
    try:
        import psycopg
    except ImportError:
        _unavailable("the postgres extra is not installed (pip install -e '.[postgres]')")
    bindir = _bindir()
    if bindir is None:
        _unavailable("initdb not found (Debian: apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="trackpilot-pg-"))
    as_user: dict = {}
    if os.geteuid() == 0:  # postgres refuses to run as root: its own user runs it
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root)
            _unavailable("running as root and there is no 'postgres' user")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
    data, log = root / "data", root / "server.log"
    proc = None
    try:
        init = subprocess.run(
            [bindir / "initdb", "-D", data, "-U", "trackpilot", "--auth=trust", "-E", "UTF8"]
            + ["--no-sync"],
            capture_output=True,
            text=True,
            timeout=120,
            **as_user,
        )
        if init.returncode != 0:
            _unavailable(f"initdb failed: {(init.stderr or init.stdout).strip()[-300:]}")
        port = _closed_port()
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [bindir / "postgres", "-D", data, "-p", str(port), "-k", root]
                + ["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
                stdout=out,
                stderr=subprocess.STDOUT,
                # runs in the child after it has become `postgres` (a change of user
                # would clear the parent-death signal)
                preexec_fn=pdeathsig_preexec(signal.SIGTERM),
                **as_user,
            )
        admin = f"postgresql://trackpilot@127.0.0.1:{port}/postgres"
        end = time.monotonic() + 60
        while True:
            try:
                with psycopg.connect(admin, connect_timeout=2, autocommit=True) as con:
                    con.execute("CREATE DATABASE search")
                break
            except psycopg.OperationalError as e:
                if proc.poll() is not None or time.monotonic() > end:
                    _unavailable(f"the server did not start ({e}): {log.read_text()[-300:]}")
                time.sleep(0.2)
        yield f"postgresql://trackpilot@127.0.0.1:{port}/search"
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        shutil.rmtree(root, ignore_errors=True)


# two trainings side by side: ~10 s on a quiet 2-core machine, 30-40 s on a shared one
def test_two_workers_share_one_study(postgres_url, tmp_path) -> None:
    import optuna

    data = tmp_path / "data"
    make_synthetic_dataset(data, episodes=4, frames=24, size=(32, 40), seed=0)
    trials = 4
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "training.search", "--data", str(data)]
            + ["--out", str(tmp_path / f"w{k}"), "--storage", postgres_url, "--study", STUDY]
            + ["--trials", str(trials), "--epochs", "1", "--input-size", "32x40"]
            + ["--no-progress", "--device", "cpu"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for k in (0, 1)
    ]
    finished: list[int] = []
    outputs: dict[int, tuple[str, str]] = {}
    end = time.monotonic() + 300
    try:
        while len(finished) < 2:
            for k, p in enumerate(procs):
                if k not in finished and p.poll() is not None:
                    finished.append(k)
                    outputs[k] = p.communicate()
            assert time.monotonic() < end, "the workers did not finish in 300 s"
            time.sleep(0.1)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for k in (0, 1):
        assert procs[k].returncode == 0, outputs[k][1][-2000:]

    study = optuna.load_study(study_name=STUDY, storage=postgres_url)
    got = study.get_trials(deepcopy=False)
    # each worker stops once the study holds --trials; both may start the last one
    assert trials <= len(got) <= trials + 1
    assert sorted(t.number for t in got) == list(range(len(got)))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in got)
    params = [tuple(sorted(t.params.items())) for t in got]
    assert len(set(params)) == len(params)  # no trial sampled twice
    dirs = [Path(t.user_attrs["run_dir"]) for t in got]
    assert len(set(dirs)) == len(dirs)
    by_worker = {k: [d for d in dirs if d.parent.parent == tmp_path / f"w{k}"] for k in (0, 1)}
    assert by_worker[0] and by_worker[1], "both workers ran trials"
    assert sum(len(v) for v in by_worker.values()) == len(got)

    # read back: the best trial is the best completed one, as the worker that finished
    # last reported it. Which one that was is not known here: both can end within one
    # poll, and the one found last may have reported before the other's final trial
    # completed (seen once in CI), so the report must come from one of them.
    best = min(got, key=lambda t: t.value)
    assert study.best_trial.number == best.number and study.best_value == best.value
    reports = [outputs[k][0] for k in (0, 1)]
    assert any(f"best trial {best.number} " in out for out in reports), reports


def test_workers_opening_a_new_database_at_once(postgres_url) -> None:
    """Optuna creates its tables on first use: workers racing to do so on a new database
    collide in PostgreSQL's catalogue (six threads did, every time, before
    ``study_storage`` opened the storage again); the losers find the tables."""
    import threading

    import psycopg

    from training.study_storage import StorageError, open_storage

    with psycopg.connect(postgres_url, autocommit=True) as con:
        con.execute("CREATE DATABASE race")
    url = postgres_url.rsplit("/", 1)[0] + "/race"
    start = threading.Barrier(6)
    errors: list[str] = []

    def open_it() -> None:
        start.wait()
        try:
            open_storage(url)
        except StorageError as e:
            errors.append(str(e))
        except Exception as e:  # any other failure must reach the assertion too
            errors.append(repr(e))

    threads = [threading.Thread(target=open_it) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert [t for t in threads if t.is_alive()] == []
    assert errors == []


def test_unreachable_database_is_one_line_quickly(tmp_path, capsys) -> None:
    from training.search import main

    url = f"postgresql://trackpilot:secret@127.0.0.1:{_closed_port()}/search"
    data = tmp_path / "data"
    make_synthetic_dataset(data, episodes=2, frames=8, size=(32, 40), seed=0)
    t0 = time.monotonic()
    rc = main(["--data", str(data), "--out", str(tmp_path / "s"), "--storage", url])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("error: ") and "127.0.0.1" in err[0]
    assert "secret" not in err[0]  # the password is not printed
    assert time.monotonic() - t0 < 15
    assert not (tmp_path / "s").exists()  # nothing written
