"""Leaderboard reports: ranking, constraint and staleness marks, and four renderings.

``python -m evaluation.report [--db FILE] [--out DIR] [--format terminal,md,csv,html]``

Ranking (the satisficing recipe: one optimizing number, constraints that must hold):

- **Score** (optimizing): for every closed-loop run of an entry, ``autonomy/100`` (clamped to
  [0, 1]) times the completed fraction of the target laps (capped at 1); the score is 100
  times the mean over the entry's runs (held-out track x direction x seed). 100 means every
  lap of every run driven without a single intervention. Ties break on the lower mean
  ``|cross-track error|``, then the lower mean lap time.
- **Constraints** (satisficing): the median inference latency must fit the control period
  (``latency <= 50 ms`` at 20 Hz), and the car must never flip. An entry that breaks one
  keeps its score but is ranked below every entry that satisfies them, and is marked
  (``✗ latency 180 ms > 50 ms``): marked, never hidden.
- **Stale** rows: measured on other hardware (their latencies do not apply here), from a
  checkpoint trained on another dataset than the current one, or written by another (older)
  code version. Stale entries are flagged, not dropped.

An *entry* is one pilot (name + checkpoint sha256) at one latency setting; its runs are the
newest row for each (track, track geometry, direction, speed, laps, seed).
"""

from __future__ import annotations

import argparse
import base64
import csv
import functools
import html
import io
import json
import logging
import math
import re
import statistics
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluation.store import DEFAULT_DB, DEFAULT_OUT, Store

__all__ = [
    "CONTROL_PERIOD_MS",
    "FORMATS",
    "Context",
    "Entry",
    "Report",
    "Table",
    "build_report",
    "code_version",
    "current_context",
    "main",
    "rank_entries",
    "render_html",
    "render_markdown",
    "render_terminal",
    "run_score",
    "stale_reasons",
    "sweep_summary",
    "write_csv",
    "write_reports",
]

logger = logging.getLogger(__name__)

#: The camera and control loop run at 20 Hz: a pilot slower than this misses frames.
CONTROL_PERIOD_MS = 50.0
FORMATS = ("terminal", "md", "csv", "html")
_REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------- context
@functools.cache
def code_version() -> str:
    """The code version rows are written with: ``evaluation.results.code_version()`` when
    the runner provides it, else ``git describe --always --dirty`` of this checkout, else the
    package version."""
    try:
        from evaluation import results

        fn = getattr(results, "code_version", None)
        if callable(fn):
            return str(fn())
    except ImportError:
        pass
    try:
        out = subprocess.run(
            ["git", "-C", str(_REPO), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        if out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"trackpilot-{version('trackpilot')}"
    except PackageNotFoundError:
        return "unknown"


@functools.cache
def _hardware(device: str) -> str | None:
    try:
        from evaluation.latency import hardware_fingerprint

        return hardware_fingerprint(device)
    except Exception:  # noqa: BLE001 - e.g. a CUDA row read on a machine without CUDA
        return None


@dataclass(frozen=True)
class Context:
    """What rows are judged against: this machine, this code, the current dataset."""

    code_version: str | None = None  # None: never flag rows as stale for their code version
    dataset_fingerprint: str | None = None  # None: never flag for the dataset
    check_hardware: bool = True  # compare each row's hardware with this machine's
    control_period_ms: float = CONTROL_PERIOD_MS  # the latency constraint

    def __post_init__(self) -> None:
        if not (self.control_period_ms > 0 and math.isfinite(self.control_period_ms)):
            raise ValueError(f"control_period_ms must be > 0, got {self.control_period_ms}")

    def hardware_for(self, device: str | None) -> str | None:
        """This machine's hardware fingerprint for rows measured on ``device``."""
        # Rows name the device as described ("cpu (AMD EPYC, 2 cores)"): its first word.
        name = str(device or "cpu").split(" ", 1)[0] or "cpu"
        return _hardware(name) if self.check_hardware else None


def current_context(
    store: Store | None = None,
    dataset_fingerprint: str | None = None,
    control_period_ms: float = CONTROL_PERIOD_MS,
) -> Context:
    """This machine and code; the dataset is ``dataset_fingerprint``, else the one the most
    recent evaluation in ``store`` recorded as current."""
    if dataset_fingerprint is None and store is not None:
        dataset_fingerprint = store.latest_context("dataset_fingerprint")
    return Context(
        code_version=code_version(),
        dataset_fingerprint=dataset_fingerprint,
        control_period_ms=control_period_ms,
    )


def stale_reasons(row: Mapping[str, Any], ctx: Context) -> list[str]:
    """Why ``row`` may no longer describe this setup: ``hardware``, ``dataset``, ``code``."""
    out = []
    here = ctx.hardware_for(row.get("device"))
    if here is not None and row.get("hardware") and row["hardware"] != here:
        out.append("hardware")
    fp = row.get("dataset_fingerprint")
    if ctx.dataset_fingerprint and fp and fp != ctx.dataset_fingerprint:
        out.append("dataset")
    if ctx.code_version and row.get("code_version") and row["code_version"] != ctx.code_version:
        out.append("code")
    return out


# ---------------------------------------------------------------------------- ranking
def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _mean(values: Iterable[Any]) -> float | None:
    vals = [f for f in (_num(v) for v in values) if f is not None]
    return sum(vals) / len(vals) if vals else None


def _median(values: Iterable[Any]) -> float | None:
    vals = [f for f in (_num(v) for v in values) if f is not None]
    return statistics.median(vals) if vals else None


def completion(row: Mapping[str, Any]) -> float:
    """Completed fraction of the target laps, in [0, 1]."""
    target = _num(row.get("laps_target"))
    done = _num(row.get("laps_completed")) or 0.0
    if not target:
        return 1.0 if row.get("completed") else 0.0
    return max(0.0, min(1.0, done / target))


def run_score(row: Mapping[str, Any]) -> float:
    """One run's score in [0, 1]: clamped autonomy fraction x completed lap fraction."""
    autonomy = _num(row.get("autonomy"))
    a = 0.0 if autonomy is None else max(0.0, min(1.0, autonomy / 100.0))
    return a * completion(row)


def _latency_label(row: Mapping[str, Any]) -> str:
    mode = row.get("latency_mode") or "measured"
    if mode == "fixed":
        return f"{_num(row.get('latency_ms')) or 0:g}ms"
    return "0" if mode == "zero" else str(mode)


@dataclass
class Entry:
    """One pilot (checkpoint) at one latency setting, with its aggregated runs."""

    pilot: str
    pilot_kind: str | None
    checkpoint_sha256: str | None
    latency_label: str  # measured | 0 | 70ms
    runs: list[dict[str, Any]]
    score: float
    latency_ms: float | None  # median latency charged (or measured offline)
    latency_p95_ms: float | None
    violations: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    partial: str | None = None  # "2/4 runs" when it lacks runs the others have
    rank: int = 0

    @property
    def feasible(self) -> bool:
        return not self.violations

    def _sum(self, key: str) -> int | None:
        vals = [r.get(key) for r in self.runs if r.get(key) is not None]
        return int(sum(vals)) if vals else None

    @property
    def laps_completed(self) -> int:
        return self._sum("laps_completed") or 0

    @property
    def laps_target(self) -> int:
        return self._sum("laps_target") or 0

    @property
    def off_track(self) -> int | None:
        return self._sum("off_track")

    @property
    def interventions(self) -> int | None:
        return self._sum("interventions")

    @property
    def flips(self) -> int | None:
        return self._sum("flips")

    @property
    def autonomy(self) -> float | None:
        return _mean(r.get("autonomy") for r in self.runs)

    @property
    def mean_abs_cte(self) -> float | None:
        return _mean(r.get("mean_abs_cte") for r in self.runs)

    @property
    def max_abs_cte(self) -> float | None:
        vals = [_num(r.get("max_abs_cte")) for r in self.runs]
        vals = [v for v in vals if v is not None]
        return max(vals) if vals else None

    @property
    def mean_lap_time(self) -> float | None:
        return _mean(t for r in self.runs for t in (r.get("lap_times") or []))

    @property
    def runs_completed(self) -> int:
        return sum(1 for r in self.runs if completion(r) >= 1.0)

    def by_direction(self, direction: str) -> list[dict[str, Any]]:
        return [r for r in self.runs if r.get("direction") == direction]

    @property
    def marks(self) -> str:
        return "; ".join(f"✗ {v}" for v in self.violations) or "✓"

    @property
    def stale_mark(self) -> str:
        return ("stale: " + ", ".join(self.stale)) if self.stale else ""

    @property
    def label(self) -> str:
        return (
            self.pilot
            if self.latency_label == "measured"
            else f"{self.pilot} @{self.latency_label}"
        )


def _sort_key(e: Entry) -> tuple:
    inf = float("inf")
    cte = e.mean_abs_cte if e.mean_abs_cte is not None else inf
    lap = e.mean_lap_time if e.mean_lap_time is not None else inf
    return (not e.feasible, -round(e.score, 9), cte, lap, e.pilot)


def latest_offline(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The newest offline row per (pilot, checkpoint, split), in first-seen order."""
    latest: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        latest[(r.get("pilot"), r.get("checkpoint_sha256"), r.get("split"))] = dict(r)
    return list(latest.values())


def rank_entries(
    closed_loop_rows: Iterable[Mapping[str, Any]],
    ctx: Context,
    offline_rows: Iterable[Mapping[str, Any]] = (),
) -> list[Entry]:
    """Group rows into entries, score them, mark constraints and staleness, and rank."""
    groups: dict[tuple, dict[tuple, dict[str, Any]]] = {}
    for r in sorted(closed_loop_rows, key=lambda r: r.get("id") or 0):
        ekey = (r["pilot"], r.get("checkpoint_sha256"), _latency_label(r))
        rkey = (
            r.get("track"),
            r.get("track_hash"),
            r.get("direction"),
            r.get("speed"),
            r.get("laps_target"),
            r.get("seed"),
        )
        groups.setdefault(ekey, {})[rkey] = dict(r)  # newer rows replace older ones
    offline = latest_offline(offline_rows)
    entries = []
    for (pilot, sha, label), runs_by_key in groups.items():
        runs = list(runs_by_key.values())
        measured = [r for r in runs if (r.get("latency_mode") or "measured") == "measured"]
        latency = _median(r.get("latency_ms") for r in measured)
        p95 = _median(r.get("latency_p95_ms") for r in measured)
        if latency is None:  # fixed/zero runs: judge the pilot's real (offline) latency
            bench = [
                o for o in offline if o.get("pilot") == pilot and o.get("checkpoint_sha256") == sha
            ]
            latency = _median(o.get("latency_median_ms") for o in bench)
            p95 = _median(o.get("latency_p95_ms") for o in bench)
        period = _median(r.get("control_period_ms") for r in runs) or ctx.control_period_ms
        violations = []
        if latency is None:
            violations.append("latency not measured")
        elif latency > period:
            violations.append(f"latency {latency:.0f} ms > {period:g} ms")
        flips = sum(int(r.get("flips") or 0) for r in runs)
        if flips:
            violations.append(f"flipped {flips}×")
        stale = sorted({s for r in runs for s in stale_reasons(r, ctx)})
        entries.append(
            Entry(
                pilot=pilot,
                pilot_kind=runs[-1].get("pilot_kind"),
                checkpoint_sha256=sha,
                latency_label=label,
                runs=runs,
                score=100.0 * sum(run_score(r) for r in runs) / len(runs),
                latency_ms=latency,
                latency_p95_ms=p95,
                violations=violations,
                stale=stale,
            )
        )
    most = max((len(e.runs) for e in entries), default=0)
    for e in entries:
        if len(e.runs) < most:
            e.partial = f"{len(e.runs)}/{most} runs"
    entries.sort(key=_sort_key)
    for i, e in enumerate(entries, 1):
        e.rank = i
    return entries


def _clean_run(row: Mapping[str, Any]) -> bool:
    """All target laps completed with no intervention (the runner's ``ok``)."""
    return completion(row) >= 1.0 and not int(row.get("interventions") or 0)


def sweep_summary(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per pilot (checkpoint): the fraction of clean runs (all laps, no intervention) at each
    swept latency, and the largest latency up to which every run was clean (``max_ok_ms``,
    None if even the smallest failed) -- ``evaluation.runner.max_ok_latency``'s rule."""
    groups: dict[tuple, dict[float, list[Mapping[str, Any]]]] = {}
    for r in rows:
        lat = _num(r.get("latency_ms"))
        if lat is None:
            continue
        groups.setdefault((r["pilot"], r.get("checkpoint_sha256")), {}).setdefault(lat, []).append(
            r
        )
    out = []
    for (pilot, sha), by_lat in groups.items():
        points = []
        max_ok = None
        broken = False
        for lat in sorted(by_lat):
            rs = by_lat[lat]
            frac = sum(_clean_run(r) for r in rs) / len(rs)
            points.append(
                {
                    "latency_ms": lat,
                    "completed_fraction": frac,
                    "laps_fraction": sum(completion(r) for r in rs) / len(rs),
                    "off_track": sum(int(r.get("off_track") or 0) for r in rs),
                    "interventions": sum(int(r.get("interventions") or 0) for r in rs),
                    "score": 100.0 * sum(run_score(r) for r in rs) / len(rs),
                    "runs": len(rs),
                }
            )
            if frac >= 1.0 and not broken:
                max_ok = lat
            elif frac < 1.0:
                broken = True
        first_fail = next((p["latency_ms"] for p in points if p["completed_fraction"] < 1.0), None)
        out.append(
            {
                "pilot": pilot,
                "checkpoint_sha256": sha,
                "points": points,
                "max_ok_ms": max_ok,
                "first_fail_ms": first_fail,
            }
        )
    return out


# ---------------------------------------------------------------------------- tables
@dataclass
class Table:
    """A titled table of strings, rendered as text, Markdown, CSV or HTML."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""
    css_class: str = ""
    raw_html_cells: bool = False  # cells are already HTML (the per-class table)


def _f(v: Any, fmt: str = ".2f", none: str = "–") -> str:
    x = _num(v)
    return none if x is None else format(x, fmt)


def _short(sha: str | None) -> str:
    return sha[:10] if sha else "–"


@dataclass
class Report:
    """Everything the renderings show, computed once from the store."""

    entries: list[Entry]
    offline: list[dict[str, Any]]
    sweeps: list[dict[str, Any]]
    sweep_rows: list[dict[str, Any]]
    ctx: Context
    db: str
    notes: list[str] = field(default_factory=list)  # e.g. the main job's story checks

    # -- tables
    def leaderboard_table(self) -> Table:
        headers = [
            "#", "pilot", "kind", "score", "laps", "crashes", "interv.", "autonomy %",
            "|CTE| mean/max m", "lap s", "latency ms", "constraints", "stale",
        ]  # fmt: skip
        rows = []
        for e in self.entries:
            lat = _f(e.latency_ms, ".1f")
            if e.latency_p95_ms is not None:
                lat += f" (p95 {_f(e.latency_p95_ms, '.1f')})"
            if e.latency_label != "measured":
                lat += f" [charged {e.latency_label}]"
            stale = e.stale_mark
            if e.partial:
                stale = "; ".join(s for s in (stale, f"partial: {e.partial}") if s)
            rows.append(
                [
                    str(e.rank),
                    e.label,
                    e.pilot_kind or "–",
                    f"{e.score:.1f}",
                    f"{e.laps_completed}/{e.laps_target}",
                    str(e.off_track) if e.off_track is not None else "–",
                    str(e.interventions) if e.interventions is not None else "–",
                    _f(e.autonomy, ".1f"),
                    f"{_f(e.mean_abs_cte, '.3f')}/{_f(e.max_abs_cte, '.2f')}",
                    _f(e.mean_lap_time, ".1f"),
                    lat,
                    e.marks,
                    stale,
                ]
            )
        note = (
            f"score = 100 x mean over runs of autonomy fraction x completed lap fraction; "
            f"ranked by score among entries meeting the constraints (median latency <= "
            f"{self.ctx.control_period_ms:g} ms control period, no flips), then the others; "
            "ties: lower |CTE|, then lap time. Stale: measured on other hardware, trained on "
            "another dataset, or written by another code version."
        )
        return Table("Closed-loop leaderboard", headers, rows, note, "leaderboard")

    def runs_table(self) -> Table:
        headers = [
            "pilot", "track", "dir", "speed", "laps", "crashes", "interv.", "autonomy %",
            "|CTE| mean", "|CTE| max", "lap times s", "latency ms", "sim s", "stale",
        ]  # fmt: skip
        rows = []
        for e in self.entries:
            for r in sorted(e.runs, key=lambda r: (str(r.get("track")), str(r.get("direction")))):
                laps = ", ".join(_f(t, ".1f") for t in (r.get("lap_times") or [])) or "–"
                rows.append(
                    [
                        e.label,
                        str(r.get("track")),
                        str(r.get("direction") or "–"),
                        _f(r.get("speed"), ".1f"),
                        f"{r.get('laps_completed') or 0}/{r.get('laps_target') or '?'}",
                        str(r.get("off_track") if r.get("off_track") is not None else "–"),
                        str(r.get("interventions") if r.get("interventions") is not None else "–"),
                        _f(r.get("autonomy"), ".1f"),
                        _f(r.get("mean_abs_cte"), ".3f"),
                        _f(r.get("max_abs_cte"), ".2f"),
                        laps,
                        f"{_f(r.get('latency_ms'), '.1f')} ({r.get('latency_mode') or '?'})",
                        _f(r.get("elapsed_s"), ".1f"),
                        ", ".join(stale_reasons(r, self.ctx)),
                    ]
                )
        return Table("Closed-loop runs", headers, rows, css_class="runs")

    def offline_table(self) -> Table:
        headers = [
            "pilot", "kind", "output", "split", "frames", "MAE", "MSE", "macro F1",
            "runtime ms (median / p95)", "device", "fits 50 ms", "stale",
        ]  # fmt: skip
        rows = []
        period = self.ctx.control_period_ms
        for r in self.offline:
            lat = _num(r.get("latency_median_ms"))
            fits = "–" if lat is None else ("✓" if lat <= period else f"✗ {lat:.0f} ms")
            rows.append(
                [
                    str(r.get("pilot")),
                    str(r.get("pilot_kind") or "–"),
                    str(r.get("output_kind") or "–"),
                    str(r.get("split") or "–"),
                    str(r.get("n") if r.get("n") is not None else "–"),
                    _f(r.get("mae"), ".4f"),
                    _f(r.get("mse"), ".5f"),
                    _f(r.get("macro_f1"), ".3f"),
                    f"{_f(r.get('latency_median_ms'), '.2f')} / {_f(r.get('latency_p95_ms'), '.2f')}",
                    str(r.get("device") or "–"),
                    fits,
                    ", ".join(stale_reasons(r, self.ctx)),
                ]
            )
        headers[10] = f"fits {period:g} ms"
        return Table(
            "Offline (test split)",
            headers,
            rows,
            "Steering MAE/MSE on the test split (classifiers: value of the argmax bin); "
            "runtime = batch-1 inference, preprocessing included.",
            "offline",
        )

    def class_table(self, html_cells: bool = False) -> Table | None:
        """Per-class precision / recall / F1 of the classifiers, the recipe's table."""
        cls_rows = [r for r in self.offline if r.get("per_class")]
        if not cls_rows:
            return None
        values: dict[int, Any] = {}
        for r in cls_rows:
            for c in r["per_class"]:
                values.setdefault(int(c["class"]), c.get("value"))
        classes = sorted(values)
        headers = ["model"] + [
            f"steer {values[k]:+.2f}" if values[k] is not None else f"class {k}" for k in classes
        ]
        headers += ["macro F1", "runtime ms"]
        rows = []
        for r in cls_rows:
            by = {int(c["class"]): c for c in r["per_class"]}
            cells = [str(r.get("pilot"))]
            for k in classes:
                c = by.get(k)
                if not c or (not c.get("support") and not c.get("predicted")):
                    cells.append("–")
                    continue
                p, rc, f1 = (100 * float(c.get(x) or 0) for x in ("precision", "recall", "f1"))
                if html_cells:
                    cells.append(
                        f"P {p:.0f}%<br>R {rc:.0f}%<br><b>F1 {f1:.0f}%</b>"
                        f"<br><small>n={int(c.get('support') or 0)}</small>"
                    )
                else:
                    cells.append(f"{p:.0f}/{rc:.0f}/{f1:.0f}")
            cells.append(_f(100 * (_num(r.get("macro_f1")) or 0), ".1f") + "%")
            cells.append(_f(r.get("latency_median_ms"), ".2f"))
            rows.append(cells if not html_cells else [html.escape(cells[0]), *cells[1:]])
        return Table(
            "Per-class precision / recall / F1 (test split)",
            headers,
            rows,
            "Each cell: precision / recall / F1 in % for the steering bin; bins that neither "
            "occur nor are predicted are '–' and left out of the macro average.",
            "classes",
            raw_html_cells=html_cells,
        )

    def sweep_table(self) -> Table | None:
        if not self.sweeps:
            return None
        rows = []
        for s in self.sweeps:
            pts = ", ".join(
                f"{p['latency_ms']:g}:{100 * p['completed_fraction']:.0f}%" for p in s["points"]
            )
            rows.append(
                [
                    s["pilot"],
                    _f(s["max_ok_ms"], "g"),
                    _f(s["first_fail_ms"], "g"),
                    pts,
                ]
            )
        return Table(
            "Latency sweep",
            ["pilot", "clean up to ms", "first failure ms", "latency ms: clean runs"],
            rows,
            "Same pilot, tracks and seed at increasing charged latency; a clean run completes "
            "its laps without intervention.",
            "sweep",
        )

    def tables(self, html_cells: bool = False) -> list[Table]:
        out = [self.leaderboard_table(), self.offline_table()]
        for t in (self.class_table(html_cells), self.sweep_table()):
            if t is not None:
                out.append(t)
        out.append(self.runs_table())
        return out


def build_report(store: Store, ctx: Context | None = None, notes: Sequence[str] = ()) -> Report:
    """Rank the closed-loop rows of ``store`` and collect what the renderings need."""
    ctx = ctx or current_context(store)
    offline = store.offline_rows()
    sweep_rows = store.sweep_rows()
    return Report(
        entries=rank_entries(store.closed_loop_rows(with_trajectories=True), ctx, offline),
        offline=latest_offline(offline),
        sweeps=sweep_summary(_latest_sweep(sweep_rows)),
        sweep_rows=sweep_rows,
        ctx=ctx,
        db=str(store.path),
        notes=list(notes),
    )


def _latest_sweep(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    latest: dict[tuple, Mapping[str, Any]] = {}
    for r in rows:
        key = (
            r.get("pilot"), r.get("checkpoint_sha256"), r.get("track"), r.get("track_hash"),
            r.get("direction"), r.get("speed"), r.get("seed"), r.get("latency_ms"),
        )  # fmt: skip
        latest[key] = r
    return list(latest.values())


# ---------------------------------------------------------------------------- text renderings
def _text_table(t: Table) -> str:
    widths = [len(h) for h in t.headers]
    for row in t.rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    line = "  ".join("-" * w for w in widths)
    out = [
        t.title,
        line,
        "  ".join(h.ljust(w) for h, w in zip(t.headers, widths, strict=True)),
        line,
    ]
    out += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in t.rows
    ]
    if not t.rows:
        out.append("(no rows)")
    return "\n".join(out)


def render_terminal(report: Report) -> str:
    """The leaderboard and offline tables as aligned plain text."""
    parts = [_text_table(report.leaderboard_table()), _text_table(report.offline_table())]
    sweep = report.sweep_table()
    if sweep is not None:
        parts.append(_text_table(sweep))
    parts.append(report.leaderboard_table().note)
    if report.notes:
        parts.append("\n".join(report.notes))
    return "\n\n".join(parts) + "\n"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(t: Table) -> str:
    out = [f"## {t.title}", ""]
    out.append("| " + " | ".join(_md_cell(h) for h in t.headers) + " |")
    out.append("|" + "|".join("---" for _ in t.headers) + "|")
    out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t.rows]
    if t.note:
        out += ["", t.note]
    return "\n".join(out)


def render_markdown(report: Report) -> str:
    parts = ["# trackpilot leaderboard", "", f"Database: `{report.db}`"]
    if report.notes:
        parts += ["", "```", *report.notes, "```"]
    for t in report.tables():
        parts += ["", _md_table(t)]
    return "\n".join(parts) + "\n"


def write_csv(report: Report, out_dir: str | Path) -> list[Path]:
    """``leaderboard.csv`` (one line per entry), ``runs.csv``, ``offline.csv`` and, when
    there is a sweep, ``sweep.csv``; raw numbers, not the formatted text."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []

    def write(name: str, headers: list[str], rows: Iterable[Sequence[Any]]) -> None:
        path = out_dir / name
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(headers)
            for row in rows:
                w.writerow(["" if v is None else v for v in row])
        paths.append(path)

    write(
        "leaderboard.csv",
        [
            "rank", "pilot", "pilot_kind", "checkpoint_sha256", "latency_setting", "score",
            "feasible", "violations", "stale", "runs", "runs_completed", "laps_completed",
            "laps_target", "off_track", "interventions", "autonomy", "mean_abs_cte",
            "max_abs_cte", "mean_lap_time", "latency_ms", "latency_p95_ms",
        ],
        (
            [
                e.rank, e.pilot, e.pilot_kind, e.checkpoint_sha256, e.latency_label,
                round(e.score, 4), int(e.feasible), "; ".join(e.violations), ",".join(e.stale),
                len(e.runs), e.runs_completed, e.laps_completed, e.laps_target, e.off_track,
                e.interventions, e.autonomy, e.mean_abs_cte, e.max_abs_cte, e.mean_lap_time,
                e.latency_ms, e.latency_p95_ms,
            ]
            for e in report.entries
        ),
    )  # fmt: skip
    run_cols = [
        "pilot", "pilot_kind", "checkpoint_sha256", "dataset_fingerprint", "track", "track_hash",
        "direction", "speed", "laps_target", "seed", "latency_mode", "latency_ms",
        "latency_p95_ms", "laps_completed", "off_track", "interventions", "autonomy",
        "mean_abs_cte", "max_abs_cte", "mean_lap_time", "mean_speed", "elapsed_s", "completed",
        "device", "hardware", "code_version", "date",
    ]  # fmt: skip
    write(
        "runs.csv",
        [*run_cols, "stale"],
        (
            [*(r.get(c) for c in run_cols), ",".join(stale_reasons(r, report.ctx))]
            for e in report.entries
            for r in e.runs
        ),
    )
    off_cols = [
        "pilot", "pilot_kind", "checkpoint_sha256", "dataset_fingerprint", "split",
        "output_kind", "n", "mae", "mse", "macro_f1", "accuracy", "latency_median_ms",
        "latency_p95_ms", "device", "hardware", "code_version", "date", "run_dir",
    ]  # fmt: skip
    write("offline.csv", off_cols, ([r.get(c) for c in off_cols] for r in report.offline))
    if report.sweep_rows:
        sw_cols = [
            "pilot", "checkpoint_sha256", "track", "direction", "speed", "seed", "latency_ms",
            "laps_completed", "laps_target", "off_track", "interventions", "autonomy",
            "completed", "device", "date",
        ]  # fmt: skip
        write("sweep.csv", sw_cols, ([r.get(c) for c in sw_cols] for r in report.sweep_rows))
    return paths


# ---------------------------------------------------------------------------- plots
def _figure(w: float, h: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=80)


def _png_b64(fig: Any) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _load_track(name: str, direction: str | None) -> Any:
    from tracks import load_track

    track = load_track(name)
    return track.reversed() if direction == "cw" else track


def _break_jumps(trajectory: Sequence[Sequence[float]], max_step_m: float = 1.0) -> Any:
    """The (K, 2) path with NaN rows where the car was put back on the road, so that the
    plot shows no line across the map for an intervention."""
    import numpy as np

    xy = np.asarray(trajectory, dtype=float).reshape(-1, 2)
    if len(xy) < 2:
        return xy
    jumps = np.flatnonzero(np.hypot(*np.diff(xy, axis=0).T) > max_step_m) + 1
    return np.insert(xy, jumps, np.nan, axis=0)


def trajectory_figures(report: Report) -> list[tuple[str, str]]:
    """``(caption, base64 PNG)`` per track and direction: every entry's path on the map."""
    from tracks.plot import plot_track

    groups: dict[tuple[str, str], list[tuple[Entry, dict[str, Any]]]] = {}
    for e in report.entries:
        seen: set[tuple[str, str]] = set()
        for r in e.runs:
            key = (str(r.get("track")), str(r.get("direction") or "ccw"))
            if r.get("trajectory") and key not in seen:
                seen.add(key)
                groups.setdefault(key, []).append((e, r))
    out = []
    for (name, direction), items in sorted(groups.items()):
        try:
            track = _load_track(name, direction)
        except (ValueError, OSError) as exc:
            logger.warning("no map for track %s: %s", name, exc)
            continue
        fig = _figure(6.0, 5.2)
        ax = fig.add_subplot(1, 1, 1)
        trajs = [_break_jumps(r["trajectory"]) for _, r in items]
        plot_track(
            track, ax=ax, trajectories=trajs, title=f"{name} ({direction}; x: interventions)"
        )
        lines = ax.get_lines()[-len(trajs) :]
        for line, (e, r) in zip(lines, items, strict=True):
            line.set_label(
                f"{e.label}: {r.get('laps_completed') or 0}/{r.get('laps_target')} laps, "
                f"{r.get('interventions') or 0} interventions"
            )
            marks = (r.get("extra") or {}).get("interventions_at") or []
            if marks:
                ax.plot(
                    [m[0] for m in marks], [m[1] for m in marks], "x", ms=7, mew=2,
                    color=line.get_color(), zorder=6,
                )  # fmt: skip
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
        hashes = {r.get("track_hash") for _, r in items} - {None}
        mismatch = hashes and not hashes & {track.geometry_hash, track.reversed().geometry_hash}
        caption = f"{name}, {direction}" + (
            " (geometry differs from today's track: map is approximate)" if mismatch else ""
        )
        out.append((caption, _png_b64(fig)))
    return out


def _read_metrics_csv(path: Path) -> dict[str, list[float | None]]:
    cols: dict[str, list[float | None]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            for k, v in row.items():
                cols.setdefault(k, []).append(_num(v) if v not in ("", None) else None)
    return cols


def learning_curve_figure(report: Report) -> str | None:
    """Train/dev MAE per epoch (and dev macro F1 for classifiers), one panel per model."""
    runs = []
    seen = set()
    for r in report.offline:
        rd = r.get("run_dir")
        if rd and rd not in seen and (Path(rd) / "metrics.csv").is_file():
            seen.add(rd)
            try:
                runs.append((str(r.get("pilot")), _read_metrics_csv(Path(rd) / "metrics.csv")))
            except (OSError, csv.Error) as exc:
                logger.warning("cannot read %s/metrics.csv: %s", rd, exc)
    if not runs:
        return None
    ncols = min(3, len(runs))
    nrows = math.ceil(len(runs) / ncols)
    fig = _figure(4.2 * ncols, 3.2 * nrows)
    for i, (name, cols) in enumerate(runs):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        epochs = cols.get("epoch") or list(range(1, 1 + len(next(iter(cols.values())))))
        for key, style in (("train_mae", "-"), ("dev_mae", "--")):
            ys = cols.get(key)
            if ys and any(y is not None for y in ys):
                ax.plot(
                    epochs,
                    [y if y is not None else math.nan for y in ys],
                    style,
                    marker="o",
                    ms=3,
                    label=key,
                )
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("steering MAE")
        ax.grid(True, lw=0.3)
        f1 = cols.get("dev_macro_f1")
        if f1 and any(y is not None for y in f1):
            ax2 = ax.twinx()
            ax2.plot(
                epochs,
                [y if y is not None else math.nan for y in f1],
                ":",
                color="tab:green",
                marker="s",
                ms=3,
                label="dev macro F1",
            )
            ax2.set_ylabel("macro F1")
            ax2.set_ylim(0, 1)
            ax2.legend(loc="upper right", fontsize=7)
        ax.legend(loc="upper left" if f1 else "best", fontsize=7)
    fig.tight_layout()
    return _png_b64(fig)


def sweep_figure(report: Report) -> str | None:
    """Completed runs and crashes against the charged latency, one line per pilot."""
    if not report.sweeps:
        return None
    fig = _figure(10, 3.8)
    ax1 = fig.add_subplot(1, 2, 1)
    ax2 = fig.add_subplot(1, 2, 2)
    measured = {(e.pilot, e.checkpoint_sha256): e.latency_ms for e in report.entries}
    for s in report.sweeps:
        xs = [p["latency_ms"] for p in s["points"]]
        line = ax1.plot(xs, [p["score"] for p in s["points"]], marker="o", label=s["pilot"])[0]
        ax2.plot(
            xs,
            [p["interventions"] for p in s["points"]],
            marker="o",
            color=line.get_color(),
            label=s["pilot"],
        )
        lat = measured.get((s["pilot"], s["checkpoint_sha256"]))
        if lat is not None:
            ax1.axvline(lat, color=line.get_color(), lw=0.8, ls=":")
    for ax in (ax1, ax2):
        ax.axvline(report.ctx.control_period_ms, color="k", lw=1, ls="--", label="control period")
        ax.set_xlabel("charged latency [ms]")
        ax.grid(True, lw=0.3)
    ax1.set_ylabel("score (autonomy x laps, %)")
    ax1.set_ylim(-5, 105)
    ax2.set_ylabel("interventions (crashes)")
    ax1.legend(fontsize=7)
    ax1.set_title("score vs latency (dotted: measured latency)", fontsize=10)
    ax2.set_title("interventions vs latency", fontsize=10)
    fig.tight_layout()
    return _png_b64(fig)


# ---------------------------------------------------------------------------- HTML
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5em auto;
max-width:1400px;color:#222;padding:0 1em}
h1{margin-bottom:.2em} h2{margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f2f2f2} td.num{text-align:right;font-variant-numeric:tabular-nums}
table.classes td{font-size:11px;text-align:center}
tr.infeasible{background:#fff0f0} tr.stale td{color:#777}
.bad{color:#b00020;font-weight:600} .ok{color:#1b7f1b}
.note{color:#555;font-size:12px;max-width:1100px}
pre{background:#f7f7f7;padding:.8em;white-space:pre-wrap}
figure{display:inline-block;margin:.5em;vertical-align:top} figcaption{font-size:12px;color:#444}
img{max-width:100%;height:auto}
"""


_NUMERIC = re.compile(r"^[-+]?[0-9.]+(\s*[/(].*)?$")


def _html_table(t: Table, row_classes: Sequence[str] | None = None) -> str:
    out = [f"<h2>{html.escape(t.title)}</h2>", f'<table class="{t.css_class}">', "<thead><tr>"]
    out += [f"<th>{html.escape(h)}</th>" for h in t.headers]
    out.append("</tr></thead><tbody>")
    for i, row in enumerate(t.rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        cells = []
        for c in row:
            text = c if t.raw_html_cells else html.escape(c)
            if not t.raw_html_cells and c.startswith("✗"):
                text = f'<span class="bad">{text}</span>'
            elif c == "✓":
                text = f'<span class="ok">{text}</span>'
            num = ' class="num"' if _NUMERIC.match(c) else ""
            cells.append(f"<td{num}>{text}</td>")
        out.append(f"<tr{cls}>{''.join(cells)}</tr>")
    out.append("</tbody></table>")
    if t.note:
        out.append(f'<p class="note">{html.escape(t.note)}</p>')
    return "\n".join(out)


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def render_html(report: Report) -> str:
    """One self-contained page: inline CSS, plots as base64 PNG, no external resources."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>trackpilot leaderboard</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>trackpilot leaderboard</h1>",
        f'<p class="note">Database {html.escape(report.db)}; code {html.escape(str(report.ctx.code_version))}; '
        f"dataset {html.escape(_short(report.ctx.dataset_fingerprint))}.</p>",
    ]
    if report.notes:
        parts.append("<h2>Story</h2><pre>" + html.escape("\n".join(report.notes)) + "</pre>")
    board = report.leaderboard_table()
    classes = [
        " ".join(
            c for c in ("infeasible" if not e.feasible else "", "stale" if e.stale else "") if c
        )
        for e in report.entries
    ]
    parts.append(_html_table(board, classes))
    parts.append(_html_table(report.offline_table()))
    ct = report.class_table(html_cells=True)
    if ct is not None:
        parts.append(_html_table(ct))
    figs = trajectory_figures(report)
    if figs:
        parts.append("<h2>Trajectories over the track maps</h2>")
        parts += [
            f"<figure>{_img(b64, cap)}<figcaption>{html.escape(cap)}</figcaption></figure>"
            for cap, b64 in figs
        ]
    curves = learning_curve_figure(report)
    if curves:
        parts.append("<h2>Learning curves</h2>")
        parts.append(f"<figure>{_img(curves, 'learning curves')}</figure>")
    st = report.sweep_table()
    if st is not None:
        parts.append(_html_table(st))
        sweep = sweep_figure(report)
        if sweep:
            parts.append(f"<figure>{_img(sweep, 'latency sweep')}</figure>")
    parts.append(_html_table(report.runs_table()))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------- writing
def write_reports(
    report: Report, out_dir: str | Path, formats: Sequence[str] = FORMATS
) -> dict[str, list[Path]]:
    """Write the requested formats under ``out_dir`` (``terminal`` is printed, not written:
    it maps to ``leaderboard.txt``). Returns the paths per format."""
    from sim.io_utils import atomic_write_text

    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"unknown report format(s) {bad}; choose from {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[Path]] = {}
    if "terminal" in formats:
        path = out_dir / "leaderboard.txt"
        atomic_write_text(path, render_terminal(report))
        written["terminal"] = [path]
    if "md" in formats:
        path = out_dir / "leaderboard.md"
        atomic_write_text(path, render_markdown(report))
        written["md"] = [path]
    if "csv" in formats:
        written["csv"] = write_csv(report, out_dir)
    if "html" in formats:
        path = out_dir / "leaderboard.html"
        atomic_write_text(path, render_html(report))
        written["html"] = [path]
    return written


def _formats(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m evaluation.report``: render the leaderboard of a store."""
    ap = argparse.ArgumentParser(
        prog="python -m evaluation.report", description=__doc__.split("\n")[0]
    )
    ap.add_argument(
        "--db", default=str(DEFAULT_DB), help=f"leaderboard SQLite file (default {DEFAULT_DB})"
    )
    ap.add_argument(
        "--out", default=str(DEFAULT_OUT / "report"), help="directory for the report files"
    )
    ap.add_argument(
        "--format",
        default=",".join(FORMATS),
        type=_formats,
        help="comma list of terminal,md,csv,html",
    )
    ap.add_argument(
        "--dataset",
        default=None,
        help="current dataset directory or fingerprint (stale check); default: the latest evaluation's",
    )
    ap.add_argument(
        "--control-period-ms",
        type=float,
        default=CONTROL_PERIOD_MS,
        help="latency constraint (default 50)",
    )
    ap.add_argument(
        "--seed",
        type=int,
        default=0,
        help="unused (reports are deterministic); accepted for uniformity",
    )
    args = ap.parse_args(argv)
    try:
        if not Path(args.db).is_file():
            raise ValueError(
                f"{args.db}: no leaderboard database (run python -m evaluation.leaderboard first)"
            )
        fingerprint = args.dataset
        if fingerprint and Path(fingerprint).is_dir():
            from sim.dataset import dataset_fingerprint, open_dataset

            fingerprint = dataset_fingerprint(open_dataset(fingerprint))
        with Store(args.db) as store:
            ctx = current_context(store, fingerprint, args.control_period_ms)
            report = build_report(store, ctx)
        written = write_reports(report, args.out, args.format)
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if "terminal" in args.format:
        print(render_terminal(report))
    for paths in written.values():
        for p in paths:
            print(f"wrote {p}")
    return 0


def report_json(report: Report) -> str:
    """The ranking as JSON (for scripts)."""
    return json.dumps(
        [
            {
                "rank": e.rank,
                "pilot": e.pilot,
                "latency": e.latency_label,
                "score": e.score,
                "violations": e.violations,
                "stale": e.stale,
            }
            for e in report.entries
        ],
        indent=2,
    )


if __name__ == "__main__":
    raise SystemExit(main())
