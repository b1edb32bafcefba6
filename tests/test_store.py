"""The leaderboard store: round trips, schema version, concurrent writers, a killed writer."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from evaluation.store import (
    ADDED_COLUMNS,
    SCHEMA_VERSION,
    V3_COLUMNS,
    SchemaVersionError,
    Store,
)

REPO = Path(__file__).resolve().parents[1]


def closed_row(i: int = 0, pilot: str = "compact", **kw: object) -> dict:
    row = {
        "pilot": pilot,
        "pilot_kind": "cnn",
        "checkpoint_sha256": "ab" * 32,
        "dataset_fingerprint": "cd" * 32,
        "track": "chicane",
        "track_hash": "ef" * 8,
        "direction": "ccw" if i % 2 == 0 else "cw",
        "speed": 2.0,
        "laps_target": 2,
        "seed": i,
        "latency_mode": "measured",
        "latency_ms": 3.5,
        "latency_p95_ms": 4.0,
        "device": "cpu",
        "hardware": "test-cpu",
        "code_version": "abc123",
        "laps_completed": 2,
        "off_track": 0,
        "interventions": 0,
        "autonomy": 100.0,
        "mean_abs_cte": 0.05,
        "max_abs_cte": 0.2,
        "lap_times": [10.5, 10.2],
        "mean_speed": 1.9,
        "elapsed_s": 20.7,
        "completed": True,
        "trajectory": [[0.0, 0.0], [1.0, 0.5], [2.0, 1.0]],
    }
    row.update(kw)
    return row


def test_round_trip(tmp_path: Path) -> None:
    with Store(tmp_path / "lb.sqlite") as store:
        eid = store.add(
            closed_loop=[closed_row(0), closed_row(1, unknown_field=7)],
            offline=[
                {
                    "pilot": "compact_cls",
                    "split": "test",
                    "macro_f1": 0.8,
                    "per_class": [{"class": 0, "precision": 1.0, "recall": 0.5, "f1": 0.66}],
                    "latency_median_ms": 2.0,
                }
            ],
            sweep=[{"pilot": "compact", "track": "chicane", "latency_ms": 100.0, "completed": 0}],
            context={"dataset_fingerprint": "cd" * 32},
        )
        assert eid == 1
        rows = store.closed_loop_rows(with_trajectories=True)
        assert [r["seed"] for r in rows] == [0, 1]
        assert rows[0]["lap_times"] == [10.5, 10.2]
        assert rows[0]["mean_lap_time"] == pytest.approx(10.35)
        assert rows[0]["completed"] == 1
        assert rows[1]["extra"] == {"unknown_field": 7}
        assert rows[0]["trajectory"] == [[0.0, 0.0], [1.0, 0.5], [2.0, 1.0]]
        off = store.offline_rows()[0]
        assert off["per_class"][0]["recall"] == 0.5
        assert store.sweep_rows()[0]["latency_ms"] == 100.0
        assert store.latest_context("dataset_fingerprint") == "cd" * 32
        assert store.schema_version == SCHEMA_VERSION
        assert store.integrity_check() == "ok"
    with Store(tmp_path / "lb.sqlite") as store:  # reopen: schema accepted, rows kept
        assert store.counts()["closed_loop"] == 2


def test_bad_row_rolls_back_the_whole_evaluation(tmp_path: Path) -> None:
    with Store(tmp_path / "lb.sqlite") as store:
        with pytest.raises(ValueError, match="no pilot"):
            store.add(closed_loop=[closed_row(0), {"track": "x"}])
        assert store.counts() == {
            "evaluations": 0,
            "closed_loop": 0,
            "offline": 0,
            "sweep": 0,
            "trajectories": 0,
        }


def test_schema_version_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "lb.sqlite"
    Store(path).close()
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    with pytest.raises(SchemaVersionError, match="schema version 999.*reads version"):
        Store(path)
    other = tmp_path / "other.sqlite"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    with pytest.raises(SchemaVersionError, match="without a trackpilot leaderboard schema"):
        Store(other)


def _make_old(path: Path, row: dict, version: int = 1) -> None:
    """A leaderboard of schema ``version`` as earlier code wrote it: no later columns."""
    with Store(path) as store:
        store.add(closed_loop=[row])
    con = sqlite3.connect(path)
    for added, tables in ADDED_COLUMNS.items():
        if added <= version:
            continue
        for table, columns in tables.items():
            for name, _ in columns:
                con.execute(f"ALTER TABLE {table} DROP COLUMN {name}")
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
    con.commit()
    con.close()


def test_version_1_file_is_read_as_is_and_upgraded_by_a_writer(tmp_path: Path) -> None:
    path = tmp_path / "lb.sqlite"
    _make_old(path, closed_row(), version=1)
    with Store(path, readonly=True) as store:  # a report reads it unchanged
        assert store.schema_version == 1
        (old,) = store.closed_loop_rows()
        assert "car" not in old and old["pilot"] == "compact"
    with Store(path) as store:  # a writer upgrades it in place, keeping the old rows
        assert store.schema_version == SCHEMA_VERSION == 3
        store.add(closed_loop=[closed_row(1, car="rpi4-tflite", latency_mode="estimated")])
        rows = store.closed_loop_rows()
    assert [r["car"] for r in rows] == [None, "rpi4-tflite"]


def test_version_2_file_is_upgraded_with_the_size_and_robustness_columns(tmp_path: Path) -> None:
    path = tmp_path / "lb.sqlite"
    _make_old(path, closed_row(), version=2)
    with Store(path, readonly=True) as store:
        assert store.schema_version == 2
        (old,) = store.closed_loop_rows()
        assert "domain_randomization" not in old and "car" in old
    with Store(path) as store:
        assert store.schema_version == 3
        new = closed_row(1, domain_randomization=True, num_parameters=1234, model_bytes=5678)
        store.add(closed_loop=[new], offline=[{"pilot": "compact", "num_parameters": 1234}])
        rows = store.closed_loop_rows()
        (offline,) = store.offline_rows()
    assert [r["domain_randomization"] for r in rows] == [None, 1]
    assert [r["num_parameters"] for r in rows] == [None, 1234]
    assert rows[1]["model_bytes"] == 5678 and offline["num_parameters"] == 1234
    for table, columns in V3_COLUMNS.items():
        con = sqlite3.connect(path)
        have = {r[1] for r in con.execute(f"PRAGMA table_info({table})")}
        con.close()
        assert {c for c, _ in columns} <= have


_WRITER = textwrap.dedent(
    """
    import json, sys, time
    sys.path.insert(0, {repo!r})
    from evaluation.store import Store
    from tests.test_store import closed_row

    path, tag, n, sleep = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])

    def rows():
        for i in range(n):
            if i == n // 2:
                print("inside", flush=True)  # the transaction is open and half written
            time.sleep(sleep)
            yield closed_row(i, pilot=tag)

    store = Store(path, timeout=30)
    for k in range({batches}):
        store.add(closed_loop=rows())
    print("done", flush=True)
    """
)


def _writer(tmp_path: Path, batches: int) -> Path:
    script = tmp_path / "writer.py"
    script.write_text(_WRITER.format(repo=str(REPO), batches=batches))
    return script


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    db = tmp_path / "lb.sqlite"
    script = _writer(tmp_path, batches=3)
    n = 20
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(db), tag, str(n), "0.002"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("a", "b")
    ]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    with Store(db) as store:
        rows = store.closed_loop_rows()
        assert len(rows) == 2 * 3 * n
        assert sum(r["pilot"] == "a" for r in rows) == 3 * n
        assert store.counts()["evaluations"] == 6
        assert store.counts()["trajectories"] == 2 * 3 * n
        # Each evaluation's rows are contiguous: the transactions never interleaved.
        by_eval: dict[int, set[str]] = {}
        for r in rows:
            by_eval.setdefault(r["evaluation_id"], set()).add(r["pilot"])
        assert all(len(p) == 1 for p in by_eval.values())
        assert store.integrity_check() == "ok"


def test_killed_writer_leaves_only_complete_evaluations(tmp_path: Path) -> None:
    db = tmp_path / "lb.sqlite"
    with Store(db) as store:
        store.add(closed_loop=[closed_row(i, pilot="before") for i in range(3)])
    script = _writer(tmp_path, batches=1)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(db), "killed", "200", "0.02"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()  # blocks until the writer is half-way in its transaction
        assert line.strip() == "inside", proc.stderr.read()
        time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    with Store(db) as store:
        assert store.integrity_check() == "ok"
        rows = store.closed_loop_rows()
        assert {r["pilot"] for r in rows} == {"before"}
        assert len(rows) == 3
        assert store.counts()["evaluations"] == 1
        assert store.counts()["trajectories"] == 3
        # The database still takes new evaluations.
        store.add(closed_loop=[closed_row(0, pilot="after")])
        assert store.counts()["closed_loop"] == 4
    json.dumps(rows)  # rows are plain JSON-able dicts
