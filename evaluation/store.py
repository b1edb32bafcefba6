"""The leaderboard store: every evaluation result as a row in one SQLite file.

Three result tables, each with flat columns for everything a report filters or ranks on:

- ``closed_loop``: one row per closed-loop run (pilot x track x direction x latency x seed),
  lap times as JSON text; its trajectory in ``trajectories`` (one row per run, JSON text).
- ``offline``: one row per pilot and split (MAE/MSE, macro F1, per-class metrics as JSON,
  batch-1 latency median/p95 on a named device).
- ``sweep``: one row per latency-sweep point (the same run repeated at increasing latency).

Each call of :meth:`Store.add` is one evaluation: its rows, of all three kinds, go in ONE
``BEGIN IMMEDIATE`` transaction. With WAL journaling and a busy timeout, two evaluations
writing at once serialise on the write lock and lose nothing, and an evaluation killed
mid-insert leaves nothing of its batch (SQLite rolls the open transaction back on the next
open). ``meta.schema_version`` names the layout; another version is a clear
:class:`SchemaVersionError`, never a silent misread. Version 2 added the columns that say
where a latency comes from and for which car computer (:data:`V2_COLUMNS`); version 3 the
model's size (parameters, bytes on disk) and whether a run was randomised
(:data:`V3_COLUMNS`). An older file is upgraded in place when opened for writing (the new
columns are NULL for its old rows: measured on the machine that ran them, not
randomised, size unknown) and read as it is by a read-only report.

Opening checks the file before anyone spends minutes on an evaluation: SQLite's
``quick_check`` (a garbage, truncated or partly overwritten file), the schema (every table
and column this version writes), and for a writer a write transaction that is rolled
back (a read-only file or directory). Every ``sqlite3.Error`` and ``OSError`` from the
store, at opening or later, is a :class:`StoreError`: one line naming the file and what
to do about it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from tracks.common import now_iso

__all__ = [
    "CLOSED_LOOP_COLUMNS",
    "DEFAULT_DB",
    "DEFAULT_OUT",
    "OFFLINE_COLUMNS",
    "READABLE_VERSIONS",
    "SCHEMA_VERSION",
    "SWEEP_COLUMNS",
    "ADDED_COLUMNS",
    "V2_COLUMNS",
    "V3_COLUMNS",
    "SchemaVersionError",
    "Store",
    "StoreError",
    "open_store",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 3
#: Versions this code reads (older ones are upgraded when opened for writing).
READABLE_VERSIONS = (1, 2, 3)
DEFAULT_OUT = Path("trackpilot_out")
DEFAULT_DB = DEFAULT_OUT / "leaderboard.sqlite"

# Columns shared by every result kind: who was judged, on what, where, with which code.
_IDENTITY: list[tuple[str, str]] = [
    ("pilot", "TEXT NOT NULL"),
    ("pilot_kind", "TEXT"),  # expert | classical | cnn | sb3
    ("checkpoint_sha256", "TEXT"),  # None for expert / classical
    ("dataset_fingerprint", "TEXT"),  # the training data the checkpoint saw
    ("device", "TEXT"),
    ("hardware", "TEXT"),  # hardware fingerprint (CPU/GPU model, threads)
    ("code_version", "TEXT"),
    ("date", "TEXT"),  # ISO 8601, UTC
]

CLOSED_LOOP_COLUMNS: list[tuple[str, str]] = [
    *_IDENTITY,
    ("track", "TEXT NOT NULL"),
    ("track_hash", "TEXT"),
    ("direction", "TEXT"),  # ccw | cw (cw runs drive track.reversed())
    ("speed", "REAL"),
    ("laps_target", "INTEGER"),
    ("seed", "INTEGER"),
    ("latency_mode", "TEXT"),  # measured | fixed | zero | profile | estimated
    ("latency_ms", "REAL"),  # the latency charged in simulated time (median)
    ("latency_p95_ms", "REAL"),
    ("control_period_ms", "REAL"),
    ("laps_completed", "INTEGER"),
    ("off_track", "INTEGER"),  # off-track events (crashes)
    ("interventions", "INTEGER"),
    ("flips", "INTEGER"),
    ("autonomy", "REAL"),  # percent, PilotNet's definition
    ("mean_abs_cte", "REAL"),
    ("max_abs_cte", "REAL"),
    ("mean_lap_time", "REAL"),
    ("lap_times", "TEXT"),  # JSON list of seconds
    ("mean_speed", "REAL"),
    ("mean_steering", "REAL"),
    ("elapsed_s", "REAL"),  # simulated seconds
    ("completed", "INTEGER"),  # 1 when laps_completed >= laps_target
    ("extra", "TEXT"),  # JSON: any other field of the result
]

OFFLINE_COLUMNS: list[tuple[str, str]] = [
    *_IDENTITY,
    ("split", "TEXT"),
    ("output_kind", "TEXT"),  # regression | classes
    ("n", "INTEGER"),
    ("mae", "REAL"),
    ("mse", "REAL"),
    ("macro_f1", "REAL"),
    ("accuracy", "REAL"),
    ("per_class", "TEXT"),  # JSON list: class, value, precision, recall, f1, support
    ("latency_median_ms", "REAL"),
    ("latency_p95_ms", "REAL"),
    ("run_dir", "TEXT"),  # training run directory (learning curves)
    ("extra", "TEXT"),
]

SWEEP_COLUMNS: list[tuple[str, str]] = [
    *_IDENTITY,
    ("track", "TEXT NOT NULL"),
    ("track_hash", "TEXT"),
    ("direction", "TEXT"),
    ("speed", "REAL"),
    ("laps_target", "INTEGER"),
    ("seed", "INTEGER"),
    ("latency_ms", "REAL"),
    ("laps_completed", "INTEGER"),
    ("off_track", "INTEGER"),
    ("interventions", "INTEGER"),
    ("autonomy", "REAL"),
    ("completed", "INTEGER"),
    ("extra", "TEXT"),
]

#: Columns schema version 2 added to each table (appended, so version-1 files upgrade
#: with ALTER TABLE ... ADD COLUMN).
V2_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "closed_loop": [
        ("car", "TEXT"),  # the latency's target: NULL = this machine; a car computer
        ("latency_source", "TEXT"),  # measured on ..., profile FILE (...), estimated for ...
        ("latency_p99_ms", "REAL"),
        ("latency_max_ms", "REAL"),
        ("profile_sha256", "TEXT"),  # the profile file the latency came from
        ("profile_model_sha256", "TEXT"),  # the model that profile timed
        ("profile_hardware", "TEXT"),  # that profile's device fingerprint
        ("car_model", "TEXT"),  # hash of the car computer's constants (estimates)
        ("mflop", "REAL"),  # the pilot's counted MFLOP per frame
    ],
    "offline": [("mflop", "REAL")],
    "sweep": [("car", "TEXT")],
}
#: Columns schema version 3 added: what a chooser compares besides the score (the model's
#: size) and whether a run was a robustness run (domain randomisation).
V3_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "closed_loop": [
        ("domain_randomization", "INTEGER"),  # 1: colours, light and camera pose randomised
        ("num_parameters", "INTEGER"),  # the pilot's parameter count (NULL: no weights)
        ("model_bytes", "INTEGER"),  # its weights file on disk
    ],
    "offline": [("num_parameters", "INTEGER"), ("model_bytes", "INTEGER")],
    "sweep": [("domain_randomization", "INTEGER")],
}
#: The columns each schema version added, oldest first (version 1 is the base layout).
ADDED_COLUMNS: dict[int, dict[str, list[tuple[str, str]]]] = {2: V2_COLUMNS, 3: V3_COLUMNS}
for _added in ADDED_COLUMNS.values():
    CLOSED_LOOP_COLUMNS += _added["closed_loop"]
    OFFLINE_COLUMNS += _added["offline"]
    SWEEP_COLUMNS += _added["sweep"]

_TABLES = {"closed_loop": CLOSED_LOOP_COLUMNS, "offline": OFFLINE_COLUMNS, "sweep": SWEEP_COLUMNS}
_JSON_COLUMNS = {"lap_times", "per_class", "extra"}

# Other spellings of a column that result objects may use (first match wins).
_ALIASES: dict[str, tuple[str, ...]] = {
    "pilot": ("pilot_name", "name"),
    "checkpoint_sha256": ("checkpoint_sha", "checkpoint"),
    "track": ("track_name",),
    "track_hash": ("track_geometry_hash", "geometry_hash"),
    "laps_target": ("laps",),
    "latency_ms": ("latency",),
    "latency_p95_ms": ("p95_ms", "latency_p95"),
    "hardware": ("hardware_fingerprint",),
    "off_track": ("off_track_events", "crashes"),
    "autonomy": ("autonomy_pct", "autonomy_percent"),
    "mean_abs_cte": ("mean_cte", "cte_mean"),
    "max_abs_cte": ("max_cte", "cte_max"),
    "elapsed_s": ("elapsed", "sim_time"),
    "latency_median_ms": ("latency_ms", "latency_median"),
}


class StoreError(RuntimeError):
    """The leaderboard file cannot be used; the message is one line naming the file and
    what to do (move it away, pass another ``--db``, ...)."""


class SchemaVersionError(StoreError):
    """The database was written with another leaderboard schema version."""


# What to do, for a program that writes the leaderboard and for one that only reads it.
_ADVICE_WRITE = "move it away or pass --db NEW.sqlite"
_ADVICE_READ = (
    "pass --db with a leaderboard written by python -m evaluation.leaderboard or "
    "python -m evaluation.evaluate"
)


def _damaged_advice(readonly: bool) -> str:
    """What to do with a damaged file."""
    if readonly:
        return "restore a backup, or " + _ADVICE_READ
    return "move it away (or restore a backup) and pass --db NEW.sqlite"


def _explain(path: Path, exc: BaseException, doing: str, *, readonly: bool) -> str:
    """One line for an ``sqlite3.Error`` or ``OSError`` met while ``doing``."""
    advice = _ADVICE_READ if readonly else _ADVICE_WRITE
    if isinstance(exc, OSError) and not isinstance(exc, sqlite3.Error):
        reason = exc.strerror or str(exc)
        if exc.filename and str(exc.filename) != str(path):
            reason = f"cannot create or open {exc.filename}: {reason}"
        return f"{path}: {reason} while {doing}; pass --db FILE in a writable directory"
    msg = str(exc) or type(exc).__name__
    low = msg.lower()
    if "file is not a database" in low or "not a database" in low:
        what = "not a trackpilot leaderboard database"
    elif "malformed" in low or "corrupt" in low:
        what = "damaged leaderboard database"
        advice = _damaged_advice(readonly)
    elif "no such table" in low or "no such column" in low or "has no column" in low:
        what = "not a complete trackpilot leaderboard database"
    elif "readonly" in low or "read-only" in low:
        what = "read-only leaderboard database"
        advice = "make the file and its directory writable, or pass --db NEW.sqlite in a writable directory"
    elif "unable to open" in low or "cannot open" in low:
        what = "cannot open the leaderboard database"
        advice = (
            "check that its directory exists and is writable, or pass --db NEW.sqlite"
            if not readonly
            else "check that the file and its directory are readable, or " + _ADVICE_READ
        )
    elif "locked" in low or "busy" in low:
        what = "leaderboard database locked by another process"
        advice = "wait for that process to finish, or pass --db NEW.sqlite"
    elif "full" in low or "i/o error" in low:
        what = "cannot write the leaderboard database"
        advice = "free disk space, or pass --db NEW.sqlite on another disk"
    else:
        what = "leaderboard database error"
    return f"{path}: {what} ({msg}) while {doing}; {advice}"


def _as_mapping(obj: Any) -> dict[str, Any]:
    if isinstance(obj, Mapping):
        return dict(obj)
    if hasattr(obj, "to_dict"):
        return dict(obj.to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    raise TypeError(f"a result must be a mapping, a dataclass or have to_dict(), got {type(obj)}")


def _flatten(d: Mapping[str, Any]) -> dict[str, Any]:
    # Result objects may nest their metrics (``{"metrics": {...}}``); columns are flat.
    flat: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping) and k in ("metrics", "result", "pilot_info", "latency_info"):
            for k2, v2 in v.items():
                flat.setdefault(k2, v2)
        else:
            flat[k] = v
    return flat


def _clean(value: Any) -> Any:
    """A JSON-safe version of ``value`` (numpy scalars and arrays, non-finite floats -> None)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _sql_value(column: str, value: Any) -> Any:
    value = _clean(value)
    if value is None:
        return None
    if column in _JSON_COLUMNS:
        return json.dumps(value, allow_nan=False, sort_keys=True)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value, allow_nan=False, sort_keys=True)
    return value


def _to_row(obj: Any, columns: Sequence[tuple[str, str]]) -> tuple[dict[str, Any], Any]:
    """``(column values, trajectory or None)`` for one result object."""
    d = _flatten(_as_mapping(obj))
    names = [c for c, _ in columns]
    trajectory = d.pop("trajectory", None)
    row: dict[str, Any] = {}
    used: set[str] = set()
    for name in names:
        if name == "extra":
            continue
        for key in (name, *_ALIASES.get(name, ())):
            if key in d and key not in used and (key == name or key not in names):
                row[name] = d[key]
                used.add(key)
                break
    if "mean_lap_time" in names and row.get("mean_lap_time") is None:
        laps = [t for t in (row.get("lap_times") or []) if t is not None]
        row["mean_lap_time"] = sum(laps) / len(laps) if laps else None
    if "completed" in names and row.get("completed") is None:
        done, target = row.get("laps_completed"), row.get("laps_target")
        if done is not None and target is not None:
            row["completed"] = done >= target
    if not row.get("date"):
        row["date"] = now_iso()
    extra = {k: v for k, v in d.items() if k not in used and k != "extra"}
    if isinstance(d.get("extra"), Mapping):
        extra = {**d["extra"], **extra}
    if extra:
        row["extra"] = extra
    if not row.get("pilot"):
        raise ValueError(f"result has no pilot name: {sorted(d)}")
    return {k: _sql_value(k, v) for k, v in row.items()}, trajectory


#: Every table and the columns this version writes and reads (``meta`` and
#: ``evaluations`` besides the result tables); an existing file must have them all.
_SCHEMA: dict[str, tuple[str, ...]] = {
    "meta": ("key", "value"),
    "evaluations": ("id", "date", "context"),
    **{t: ("id", "evaluation_id", *(c for c, _ in cols)) for t, cols in _TABLES.items()},
    "trajectories": ("result_id", "xy"),
}


class Store:
    """The leaderboard database at ``path`` (created with its schema when missing).

    ``Store(path).add(closed_loop=rows, offline=rows, sweep=rows)`` writes one evaluation
    atomically; the ``*_rows()`` methods read them back as dicts.

    Opening checks the file (SQLite's ``quick_check``, every expected table and column,
    the schema version) and, unless ``readonly``, that it can be written (a write
    transaction, rolled back). ``readonly=True`` opens an existing leaderboard for
    reading only (a report): nothing is created or written. Any problem, then or later,
    is a :class:`StoreError` naming the file.
    """

    def __init__(
        self, path: str | Path = DEFAULT_DB, timeout: float = 60.0, *, readonly: bool = False
    ) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._con: sqlite3.Connection | None = None
        before = {f for f in self._files() if f.exists()}
        try:
            self._open(timeout)
        except BaseException as exc:
            if self._con is not None:
                self._con.close()
                self._con = None
            self._remove_created(before)
            if isinstance(exc, (sqlite3.Error, OSError)):
                raise StoreError(_explain(self.path, exc, "opening", readonly=readonly)) from exc
            raise

    def _open(self, timeout: float) -> None:
        advice = _ADVICE_READ if self.readonly else _ADVICE_WRITE
        if self.path.is_dir():
            raise StoreError(
                f"{self.path}: a directory, not a leaderboard file; pass --db "
                f"{self.path / DEFAULT_DB.name} (a file) instead"
            )
        if self.readonly:
            if not self.path.is_file():
                raise StoreError(
                    f"{self.path}: no leaderboard database (run python -m evaluation.leaderboard "
                    "or python -m evaluation.evaluate first, or pass --db FILE)"
                )
            self._con = self._connect_readonly(timeout)
        else:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(
                    f"{self.path}: cannot create its directory {self.path.parent} "
                    f"({e.strerror or e}); pass --db FILE in a writable directory"
                ) from e
            # isolation_level=None: no implicit transactions; each write is an explicit
            # BEGIN IMMEDIATE, which takes the write lock up front (a deferred transaction
            # that upgrades later can fail with SQLITE_BUSY without waiting).
            self._con = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None)
        con = self._con
        con.row_factory = sqlite3.Row
        con.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        # The whole file, before a reader trusts it or a writer spends minutes on it:
        # garbage, a truncated file or overwritten pages fail here.
        problems = [str(r[0]) for r in con.execute("PRAGMA quick_check(3)").fetchall()]
        if problems != ["ok"]:
            raise StoreError(
                f"{self.path}: damaged leaderboard database (quick_check: {problems[0]}); "
                + _damaged_advice(self.readonly)
            )
        if self.readonly:
            if not self._check_schema(con):
                raise StoreError(
                    f"{self.path}: an empty file, not a leaderboard database; {advice}"
                )
            return
        # Checked before anything changes the file (switching to WAL rewrites the header
        # of a foreign SQLite file); checked again inside the transaction that creates it.
        self._check_schema(con)
        self._retry(lambda: con.execute("PRAGMA journal_mode = WAL"), timeout)
        con.execute("PRAGMA synchronous = FULL")
        con.execute("PRAGMA foreign_keys = ON")
        self._init_schema()
        self._check_writable()

    def _connect_readonly(self, timeout: float) -> sqlite3.Connection:
        # mode=rw: never create the file; query_only: never write through SQL. (A mode=ro
        # connection cannot remove the -wal and -shm files when it closes.)
        uri = f"{self.path.resolve().as_uri()}?mode=rw"
        con = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)
        try:
            con.execute("PRAGMA query_only = ON")
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return con
        except sqlite3.OperationalError as e:
            con.close()
            # A WAL database in a directory this process cannot write: SQLite cannot
            # create the -shm file a reader needs. With no -wal file there is nothing
            # beyond the main file, and nobody can be writing (a writer would need the
            # directory too), so the file can be read as immutable.
            wal = Path(f"{self.path}-wal")
            unwritable_dir = not os.access(self.path.parent, os.W_OK)
            cannot = "unable to open" in str(e) or "readonly" in str(e)
            if not cannot or not unwritable_dir or wal.exists():
                raise
        immutable = f"{self.path.resolve().as_uri()}?mode=ro&immutable=1"
        return sqlite3.connect(immutable, uri=True, isolation_level=None)

    def _files(self) -> list[Path]:
        """The database file and the files SQLite keeps beside it."""
        return [Path(f"{self.path}{s}") for s in ("", "-journal", "-wal", "-shm")]

    def _remove_created(self, before: set[Path]) -> None:
        # What this failed opening created and left without content goes again, so
        # nothing half-written stays behind; a file found here is left as it was.
        main, journal, wal, shm = self._files()
        with contextlib.suppress(OSError):
            wal_empty = not wal.is_file() or wal.stat().st_size == 0
            for f in (shm, wal, journal, main):
                if f in before or not f.is_file():
                    continue
                if f in (wal, shm) and not wal_empty:
                    continue  # a WAL with content is data: keep it
                if f in (main, journal) and f.stat().st_size > 0:
                    continue
                f.unlink()

    @staticmethod
    def _retry(fn: Any, timeout: float) -> Any:
        # Switching to WAL needs a moment of exclusive access; a writer may hold the lock.
        deadline = time.monotonic() + timeout
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @contextlib.contextmanager
    def _guard(self, doing: str) -> Iterator[None]:
        """``sqlite3.Error`` / ``OSError`` -> :class:`StoreError` naming the file."""
        try:
            yield
        except (sqlite3.Error, OSError) as e:
            raise StoreError(_explain(self.path, e, doing, readonly=self.readonly)) from e

    def _json(self, text: str | None, where: str) -> Any:
        """``json.loads(text)``; broken JSON (a damaged row) is a :class:`StoreError`."""
        if text is None:
            return None
        try:
            return json.loads(text)
        except ValueError as e:
            raise StoreError(
                f"{self.path}: damaged leaderboard database ({where} holds unreadable JSON: "
                f"{e}); {_damaged_advice(self.readonly)}"
            ) from e

    def _decoded(self, table: str, row: sqlite3.Row) -> dict[str, Any]:
        out = dict(row)
        for k in _JSON_COLUMNS:
            if out.get(k) is not None:
                out[k] = self._json(out[k], f"{table} row {out.get('id')}")
        return out

    # ------------------------------------------------------------------ schema
    def _check_schema(self, con: sqlite3.Connection) -> bool:
        """True for a complete leaderboard of this version, False for a file without
        tables (a new one); :class:`StoreError` for anything else."""
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            return False
        advice = _ADVICE_READ if self.readonly else _ADVICE_WRITE
        if "meta" not in tables:
            raise SchemaVersionError(
                f"{self.path}: an SQLite file without a trackpilot leaderboard schema "
                f"(tables: {', '.join(sorted(tables))}); {advice}"
            )
        found = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = found[0] if found else None
        if str(version) not in {str(v) for v in READABLE_VERSIONS}:
            raise SchemaVersionError(
                f"{self.path}: leaderboard schema version {version}, this trackpilot "
                f"reads versions {', '.join(map(str, READABLE_VERSIONS))}; move the file "
                "away (or pass another --db) and re-run the evaluation"
            )
        later = {
            c
            for v, tables in ADDED_COLUMNS.items()
            if v > int(str(version))
            for cols in tables.values()
            for c, _ in cols
        }
        for table, columns in _SCHEMA.items():
            columns = tuple(c for c in columns if c not in later)
            if table not in tables:
                raise StoreError(
                    f"{self.path}: not a complete trackpilot leaderboard database (table "
                    f"{table!r} is missing); {advice}"
                )
            have = {r[1] for r in con.execute(f"PRAGMA table_info({table})")}
            missing = [c for c in columns if c not in have]
            if missing:
                raise StoreError(
                    f"{self.path}: not a complete trackpilot leaderboard database (table "
                    f"{table!r} lacks column(s) {', '.join(missing)}); {advice}"
                )
        return True

    def _init_schema(self) -> None:
        with self.transaction() as con:
            if self._check_schema(con):
                self._upgrade(con)
                return
            con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            con.execute(
                "INSERT INTO meta VALUES ('schema_version', ?), ('created', ?)",
                (str(SCHEMA_VERSION), now_iso()),
            )
            con.execute(
                "CREATE TABLE evaluations (id INTEGER PRIMARY KEY, date TEXT NOT NULL, "
                "context TEXT)"
            )
            for table, columns in _TABLES.items():
                cols = ", ".join(f"{name} {sqltype}" for name, sqltype in columns)
                con.execute(
                    f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, evaluation_id INTEGER NOT "
                    f"NULL REFERENCES evaluations(id) ON DELETE CASCADE, {cols})"
                )
                con.execute(f"CREATE INDEX {table}_pilot ON {table} (pilot, checkpoint_sha256)")
            con.execute(
                "CREATE TABLE trajectories (result_id INTEGER PRIMARY KEY REFERENCES "
                "closed_loop(id) ON DELETE CASCADE, xy TEXT NOT NULL)"
            )

    @staticmethod
    def _upgrade(con: sqlite3.Connection) -> None:
        """An older version -> this one inside the open transaction: add the columns each
        later version added (:data:`ADDED_COLUMNS`); their values are NULL for old rows."""
        found = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = int(str(found[0]))
        if version == SCHEMA_VERSION:
            return
        for _, tables in sorted(ADDED_COLUMNS.items()):
            for table, columns in tables.items():
                have = {r[1] for r in con.execute(f"PRAGMA table_info({table})")}
                for name, sqltype in columns:
                    if name not in have:
                        con.execute(f"ALTER TABLE {table} ADD COLUMN {name} {sqltype}")
        con.execute(
            "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),)
        )
        logger.info("leaderboard upgraded to schema version %s", SCHEMA_VERSION)

    def _check_writable(self) -> None:
        # A write that is rolled back: a read-only file or directory fails here, at
        # opening, not after minutes of recording and training.
        con = self._con
        self._retry(lambda: con.execute("BEGIN IMMEDIATE"), 600.0)
        try:
            con.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('write_check', ?)", (now_iso(),)
            )
        finally:
            if con.in_transaction:
                con.execute("ROLLBACK")

    @property
    def schema_version(self) -> int:
        with self._guard("reading the schema version"):
            row = self._con.execute("SELECT value FROM meta WHERE key = 'schema_version'")
            return int(row.fetchone()[0])

    # ------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any exception."""
        if self.readonly:
            raise StoreError(f"{self.path}: opened read-only; open it with Store(path) to write")
        self._retry(lambda: self._con.execute("BEGIN IMMEDIATE"), 600.0)
        try:
            yield self._con
        except BaseException:
            # SQLite itself rolls back after some errors (a full disk, an I/O error):
            # then there is nothing left to roll back, and the first error is the one
            # to report.
            if self._con.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._con.execute("ROLLBACK")
            raise
        self._con.execute("COMMIT")

    def add(
        self,
        closed_loop: Iterable[Any] = (),
        offline: Iterable[Any] = (),
        sweep: Iterable[Any] = (),
        context: Mapping[str, Any] | None = None,
    ) -> int:
        """Insert one evaluation's rows in one transaction; returns its evaluation id.

        Closed-loop rows flagged ``sweep`` (``ResultRow.sweep``) go to the sweep table.
        ``context`` (JSON) records what the evaluation was judged against, e.g. the current
        ``dataset_fingerprint``, used by the reports to flag stale rows.
        """
        with self._guard("writing an evaluation (nothing of it was kept)"):
            return self._add(closed_loop, offline, sweep, context)

    def _add(
        self,
        closed_loop: Iterable[Any],
        offline: Iterable[Any],
        sweep: Iterable[Any],
        context: Mapping[str, Any] | None,
    ) -> int:
        with self.transaction() as con:
            cur = con.execute(
                "INSERT INTO evaluations (date, context) VALUES (?, ?)",
                (now_iso(), json.dumps(_clean(dict(context or {})), sort_keys=True)),
            )
            eid = int(cur.lastrowid)
            # Rows are converted inside the transaction, so a bad row (or a killed process)
            # part-way through leaves nothing of this evaluation behind.
            for obj in closed_loop:
                d = _as_mapping(obj)
                if d.get("sweep"):  # a latency-sweep point handed over with the runs
                    self._insert(con, "sweep", eid, _to_row(d, SWEEP_COLUMNS)[0])
                    continue
                row, trajectory = _to_row(d, CLOSED_LOOP_COLUMNS)
                rid = self._insert(con, "closed_loop", eid, row)
                if trajectory is not None:
                    con.execute(
                        "INSERT INTO trajectories (result_id, xy) VALUES (?, ?)",
                        (rid, json.dumps(_round_xy(trajectory))),
                    )
            for obj in offline:
                self._insert(con, "offline", eid, _to_row(obj, OFFLINE_COLUMNS)[0])
            for obj in sweep:
                self._insert(con, "sweep", eid, _to_row(obj, SWEEP_COLUMNS)[0])
        return eid

    @staticmethod
    def _insert(con: sqlite3.Connection, table: str, eid: int, row: Mapping[str, Any]) -> int:
        cols = ["evaluation_id", *row]
        cur = con.execute(
            f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
            (eid, *row.values()),
        )
        return int(cur.lastrowid)

    # ------------------------------------------------------------------ reading
    def _rows(self, table: str, where: str = "", args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        sql = f"SELECT * FROM {table} {where} ORDER BY id"
        with self._guard(f"reading the {table} rows"):
            rows = self._con.execute(sql, tuple(args)).fetchall()
        return [self._decoded(table, r) for r in rows]

    def closed_loop_rows(self, with_trajectories: bool = False) -> list[dict[str, Any]]:
        """Every closed-loop row, oldest first (``trajectory`` added when asked)."""
        rows = self._rows("closed_loop")
        if with_trajectories:
            with self._guard("reading the trajectories"):
                trajs = dict(self._con.execute("SELECT result_id, xy FROM trajectories").fetchall())
            for r in rows:
                r["trajectory"] = self._json(trajs.get(r["id"]), f"trajectory {r['id']}")
        return rows

    def offline_rows(self) -> list[dict[str, Any]]:
        return self._rows("offline")

    def sweep_rows(self) -> list[dict[str, Any]]:
        return self._rows("sweep")

    def trajectory(self, result_id: int) -> list[list[float]] | None:
        with self._guard("reading a trajectory"):
            row = self._con.execute(
                "SELECT xy FROM trajectories WHERE result_id = ?", (result_id,)
            ).fetchone()
        return self._json(row[0], f"trajectory {result_id}") if row else None

    def evaluations(self) -> list[dict[str, Any]]:
        with self._guard("reading the evaluations"):
            rows = self._con.execute("SELECT * FROM evaluations ORDER BY id").fetchall()
        out = []
        for r in rows:
            d = dict(r)
            context = self._json(d["context"] or None, f"evaluation {d['id']}")
            d["context"] = context if isinstance(context, dict) else {}
            out.append(d)
        return out

    def latest_context(self, key: str) -> Any:
        """The value of ``key`` in the most recent evaluation context that has it."""
        for ev in reversed(self.evaluations()):
            if ev["context"].get(key) is not None:
                return ev["context"][key]
        return None

    def counts(self) -> dict[str, int]:
        with self._guard("counting rows"):
            return {
                t: int(self._con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0])
                for t in ("evaluations", *_TABLES, "trajectories")
            }

    def integrity_check(self) -> str:
        """``"ok"`` when SQLite finds the file sound."""
        with self._guard("checking integrity"):
            return str(self._con.execute("PRAGMA integrity_check").fetchone()[0])

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        if self._con is not None:
            self._con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _round_xy(trajectory: Any) -> list[list[float]]:
    # Millimetres are plenty for a map and keep the JSON small.
    pts = _clean(trajectory) or []
    return [[round(float(p[0]), 3), round(float(p[1]), 3)] for p in pts]


def open_store(path: str | Path = DEFAULT_DB, *, readonly: bool = False) -> Store:
    """Open (or create, unless ``readonly``) the leaderboard at ``path``, checked."""
    return Store(path, readonly=readonly)
