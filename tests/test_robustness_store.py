"""A bad leaderboard file is one error line naming it, at opening, before any work.

Real files, really damaged: garbage bytes, a truncated store, pages overwritten, a
dropped table or column, a row with broken JSON, a directory as ``--db``, a read-only
directory. The store raises :class:`StoreError` (one line, the path first); the CLIs
(``python -m evaluation.report`` and ``python -m evaluation.leaderboard``, run as
subprocesses) exit non-zero in seconds with exactly one ``error:`` line, no traceback,
before recording anything, and leave the file as they found it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from evaluation.store import SchemaVersionError, Store, StoreError

REPO = Path(__file__).resolve().parents[1]


def _row(i: int) -> dict:
    return {
        "pilot": f"p{i % 3}",
        "pilot_kind": "cnn",
        "checkpoint_sha256": "ab" * 32,
        "track": "chicane",
        "direction": "ccw" if i % 2 == 0 else "cw",
        "seed": i,
        "latency_mode": "measured",
        "latency_ms": 3.5,
        "laps_target": 2,
        "laps_completed": 2,
        "autonomy": 100.0,
        "lap_times": [10.5, 10.2],
        "trajectory": [[0.01 * j, 0.02 * j + i] for j in range(200)],
    }


@pytest.fixture(scope="module")
def good_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real leaderboard of a few hundred kB (several b-tree pages per table)."""
    path = tmp_path_factory.mktemp("good") / "lb.sqlite"
    with Store(path) as store:
        for k in range(3):
            store.add(closed_loop=[_row(10 * k + i) for i in range(10)], offline=[{"pilot": "p0"}])
    assert not Path(f"{path}-wal").exists()  # checkpointed: the main file holds everything
    return path


def _sha(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _garbage(path: Path, good: Path) -> None:
    path.write_bytes(random.Random(0).randbytes(5000))


def _truncated(path: Path, good: Path) -> None:
    data = good.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _overwritten(path: Path, good: Path) -> None:
    data = bytearray(good.read_bytes())
    at = len(data) // 3
    data[at : at + 8192] = random.Random(1).randbytes(8192)
    path.write_bytes(bytes(data))


def _header_overwritten(path: Path, good: Path) -> None:
    data = bytearray(good.read_bytes())
    data[:100] = random.Random(2).randbytes(100)
    path.write_bytes(bytes(data))


def _edited(sql: str) -> Callable[[Path, Path], None]:
    def make(path: Path, good: Path) -> None:
        shutil.copy(good, path)
        con = sqlite3.connect(path)
        con.executescript(sql)
        con.close()

    return make


def _other_program(path: Path, good: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE notes (x TEXT)")
    con.commit()
    con.close()


def _directory(path: Path, good: Path) -> None:
    path.mkdir()


#: name -> (make the bad file, words the error line must hold)
BAD: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    "garbage": (_garbage, "not a trackpilot leaderboard database (file is not a database)"),
    "truncated": (_truncated, "damaged leaderboard database"),
    "overwritten": (_overwritten, "damaged leaderboard database"),
    "header-overwritten": (_header_overwritten, "not a trackpilot leaderboard database"),
    "dropped-table": (
        _edited("DROP TABLE trajectories; DROP TABLE closed_loop;"),
        "table 'closed_loop' is missing",
    ),
    "dropped-column": (
        _edited("ALTER TABLE offline DROP COLUMN macro_f1;"),
        "table 'offline' lacks column(s) macro_f1",
    ),
    "other-program": (_other_program, "without a trackpilot leaderboard schema"),
    "directory": (_directory, "a directory, not a leaderboard file"),
}


@pytest.fixture(params=sorted(BAD))
def bad_db(request: pytest.FixtureRequest, tmp_path: Path, good_store: Path) -> tuple[Path, str]:
    make, words = BAD[request.param]
    path = tmp_path / "bad.sqlite"
    make(path, good_store)
    return path, words


def _siblings(path: Path) -> set[str]:
    return {p.name for p in path.parent.iterdir()}


@pytest.mark.parametrize("readonly", [False, True], ids=["write", "read"])
def test_store_refuses_a_bad_file_with_one_line(bad_db: tuple[Path, str], readonly: bool) -> None:
    path, words = bad_db
    before, files = _sha(path), _siblings(path)
    with pytest.raises(StoreError) as exc:
        Store(path, readonly=readonly)
    msg = str(exc.value)
    assert msg.startswith(f"{path}: ") and words in msg and "\n" not in msg
    assert "--db" in msg  # what to do
    assert _sha(path) == before and _siblings(path) == files  # left as found, nothing added


def test_other_schema_version_is_still_a_schema_version_error(tmp_path: Path) -> None:
    path = tmp_path / "lb.sqlite"
    Store(path).close()
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    with pytest.raises(SchemaVersionError, match="schema version 999"):
        Store(path, readonly=True)


def test_reading_needs_an_existing_leaderboard_and_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no leaderboard database"):
        Store(tmp_path / "missing.sqlite", readonly=True)
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    with pytest.raises(StoreError, match="empty file, not a leaderboard"):
        Store(empty, readonly=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.sqlite"]
    assert empty.read_bytes() == b""


def test_a_file_as_parent_directory_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="cannot create its directory"):
        Store(tmp_path / "file" / "lb.sqlite")


def test_read_only_store_reads_and_refuses_writes(good_store: Path) -> None:
    before = _sha(good_store)
    with Store(good_store, readonly=True) as store:
        assert store.counts()["closed_loop"] == 30
        assert len(store.closed_loop_rows(with_trajectories=True)[0]["trajectory"]) == 200
        with pytest.raises(StoreError, match="opened read-only"):
            store.add(closed_loop=[_row(0)])
    assert _sha(good_store) == before
    assert not Path(f"{good_store}-wal").exists() and not Path(f"{good_store}-shm").exists()


def test_broken_json_in_a_row_is_one_line_naming_the_file(tmp_path: Path, good_store) -> None:
    path = tmp_path / "lb.sqlite"
    shutil.copy(good_store, path)
    con = sqlite3.connect(path)
    con.execute("UPDATE closed_loop SET lap_times = '[1.0, 2' WHERE id = 2")
    con.commit()
    con.close()
    with Store(path, readonly=True) as store:  # passes quick_check: the page is sound
        with pytest.raises(StoreError, match=r"closed_loop row 2 holds unreadable JSON"):
            store.closed_loop_rows()


def test_errors_after_opening_are_store_errors_and_keep_nothing(tmp_path: Path) -> None:
    path = tmp_path / "lb.sqlite"
    with Store(path) as store:
        store.add(closed_loop=[_row(0)])
        # A value SQLite cannot bind, after a good row of the same evaluation.
        with pytest.raises(StoreError, match=r"^.*lb\.sqlite: .*while writing an evaluation"):
            store.add(closed_loop=[_row(1), {**_row(2), "seed": object()}])
        assert store.counts()["closed_loop"] == 1 and store.counts()["evaluations"] == 1
        # The file changes under a long job (another program drops a table).
        con = sqlite3.connect(path)
        con.executescript("DROP TABLE trajectories; DROP TABLE closed_loop;")
        con.close()
        with pytest.raises(StoreError, match="no such table: closed_loop") as exc:
            store.add(closed_loop=[_row(3)])
        assert str(exc.value).startswith(f"{path}: ")
        with pytest.raises(StoreError, match="no such table"):
            store.closed_loop_rows()
        assert len(store.offline_rows()) == 0  # what is left still reads
    # Reopened, the damage is found at opening.
    with pytest.raises(StoreError, match="table 'closed_loop' is missing"):
        Store(path)


# ----------------------------------------------------------------------------- CLIs
def _cli(*args: str, prefix: tuple[str, ...] = (), env: dict | None = None, timeout: float = 120):
    t0 = time.monotonic()
    proc = subprocess.run(
        [*prefix, sys.executable, "-m", *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc, time.monotonic() - t0


def _one_error_line(proc: subprocess.CompletedProcess, path: Path, words: str) -> str:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith(f"error: {path}: ") and words in errors[0], errors[0]
    return errors[0]


CLI_CASES = ["garbage", "truncated", "overwritten", "dropped-table", "directory"]


@pytest.mark.parametrize("case", CLI_CASES)
def test_report_cli_fails_in_one_line(case: str, tmp_path: Path, good_store: Path) -> None:
    make, words = BAD[case]
    db = tmp_path / "bad.sqlite"
    make(db, good_store)
    before, files = _sha(db), _siblings(db)
    proc, took = _cli("evaluation.report", "--db", str(db), "--out", str(tmp_path / "rep"))
    _one_error_line(proc, db, words)
    assert proc.returncode == 2 and took < 60
    assert _sha(db) == before and _siblings(db) == files  # no report, no -wal/-shm


@pytest.mark.parametrize("case", CLI_CASES)
def test_leaderboard_cli_fails_before_recording(case: str, tmp_path: Path, good_store) -> None:
    make, words = BAD[case]
    db = tmp_path / "bad.sqlite"
    make(db, good_store)
    before, files = _sha(db), _siblings(db)
    out = tmp_path / "out"
    proc, took = _cli(
        "evaluation.leaderboard", "--preset", "tiny", "--db", str(db), "--out", str(out),
        "--workers", "1",
    )  # fmt: skip
    _one_error_line(proc, db, words)
    assert took < 60, f"took {took:.0f} s: the store must be checked before any work"
    assert "[1/4]" not in proc.stdout  # nothing recorded
    assert not out.exists()  # nothing half-written
    assert _sha(db) == before and _siblings(db) == files


def test_report_cli_on_a_good_store_still_works(tmp_path: Path, good_store: Path) -> None:
    proc, _ = _cli(
        "evaluation.report", "--db", str(good_store), "--out", str(tmp_path / "rep"),
        "--format", "md",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "rep" / "leaderboard.md").is_file()


# ----------------------------------------------------------------------------- read-only dir
@pytest.fixture
def unwritable(good_store: Path) -> Iterator[tuple[Path, Path, tuple[str, ...]]]:
    """``(read-only directory holding a good store, a writable directory, command prefix)``.

    File permissions do not stop root: as root the CLIs run as ``nobody`` (setpriv); the
    case is skipped where neither works, with the reason.
    """
    top = Path(tempfile.mkdtemp(prefix="trackpilot-ro-"))  # /tmp: reachable by nobody
    try:
        top.chmod(0o755)
        ro, rw = top / "ro", top / "rw"
        ro.mkdir()
        rw.mkdir()
        rw.chmod(0o777)
        shutil.copy(good_store, ro / "lb.sqlite")
        ro.chmod(0o555)
        prefix: tuple[str, ...] = ()
        if os.geteuid() == 0:
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                pytest.skip("running as root (chmod does not stop writes) and no setpriv")
            prefix = (setpriv, "--reuid=65534", "--regid=65534", "--clear-groups")
        probe = subprocess.run(
            [*prefix, sys.executable, "-c",
             "import sys, pathlib\n"
             "try:\n    pathlib.Path(sys.argv[1]).write_text('x')\nexcept PermissionError:\n"
             "    print('denied')\nelse:\n    print('wrote')", str(ro / "probe")],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if probe.stdout.strip() != "denied":
            pytest.skip(
                "cannot make a directory this process may not write "
                f"(probe: {probe.stdout.strip() or probe.stderr.strip()[-200:]})"
            )
        yield ro, rw, prefix
    finally:
        with contextlib.suppress(OSError):
            (top / "ro").chmod(0o755)
        shutil.rmtree(top, ignore_errors=True)


def test_read_only_directory(unwritable: tuple[Path, Path, tuple[str, ...]]) -> None:
    ro, rw, prefix = unwritable
    env = {"HOME": str(rw), "MPLCONFIGDIR": str(rw)}
    db = ro / "lb.sqlite"
    before = _sha(db)
    # Writing: an existing store, and a new one, in a read-only directory.
    for target, words in (
        (db, "read-only leaderboard database"),
        (ro / "new.sqlite", "cannot open"),
    ):
        proc, took = _cli(
            "evaluation.leaderboard", "--preset", "tiny", "--db", str(target),
            "--out", str(rw / "out"), "--workers", "1", prefix=prefix, env=env,
        )  # fmt: skip
        _one_error_line(proc, target, words)
        assert took < 60 and "[1/4]" not in proc.stdout and not (rw / "out").exists()
    # Reading a leaderboard that sits in a read-only directory works.
    proc, _ = _cli(
        "evaluation.report", "--db", str(db), "--out", str(rw / "rep"), "--format", "md",
        prefix=prefix, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (rw / "rep" / "leaderboard.md").is_file()
    assert sorted(p.name for p in ro.iterdir()) == ["lb.sqlite"] and _sha(db) == before
