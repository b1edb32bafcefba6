"""The report's content: :class:`Report` (computed once from the store) and its tables.

Each table is a :class:`Table` of strings that every rendering (terminal, Markdown,
HTML) lays out in its own way; the CSV files hold the raw numbers instead.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from evaluation.report.context import (
    THIS_MACHINE,
    Context,
    current_context,
    stale_reasons,
    target_label,
)
from evaluation.report.ranking import (
    Entry,
    _num,
    latest_offline,
    rank_entries,
    sweep_summary,
)
from evaluation.report.recipe import (
    RecipeRow,
    TargetColumn,
    f1_latency_points,
    recipe_rows,
    recipe_targets,
)
from evaluation.store import Store

__all__ = ["Report", "Table", "build_report", "closed_loop_cell", "latency_cell"]


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


def _ms(median: Any, p99: Any = None, p95: Any = None) -> str:
    """``46.2 (p99 65.3)``; the p95 when there is no p99 (rows before schema 2)."""
    text = _f(median, ".1f")
    if _num(p99) is not None:
        text += f" (p99 {_f(p99, '.1f')})"
    elif _num(p95) is not None:
        text += f" (p95 {_f(p95, '.1f')})"
    return text


def latency_cell(e: Entry, labelled: bool = True) -> str:
    """The entry's median latency, its tail and where it is from: nothing more for this
    machine's measurement, ``estimated for NAME``, ``profile: DEVICE`` (when ``labelled``),
    ``[charged 70ms]``."""
    text = _ms(e.latency_ms, e.latency_p99_ms, e.latency_p95_ms)
    if e.latency_label in ("estimated", "profile"):
        if not labelled:
            return text
        return f"{text} {e.target_label}"
    if e.latency_label != "measured":
        return f"{text} [charged {e.latency_label}]"
    return text


def closed_loop_cell(e: Entry | None) -> str:
    """``✓ 100.0, 4/4 laps, 0 interv.`` (✗ when a run missed laps or needed a rescue)."""
    if e is None:
        return "–"
    interv = e.interventions if e.interventions is not None else "–"
    mark = "✓" if e.clean else "✗"
    return f"{mark} {e.score:.1f}, {e.laps_completed}/{e.laps_target} laps, {interv} interv."


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

    # -- the recipe's evidence
    @property
    def targets(self) -> list[TargetColumn]:
        return recipe_targets(self.entries)

    @property
    def recipe(self) -> list[RecipeRow]:
        return recipe_rows(self.offline, self.entries)

    def f1_points(self) -> list[Any]:
        return f1_latency_points(self.recipe, self.targets)

    # -- tables
    def leaderboard_table(self, compact: bool = False) -> Table:
        """The closed-loop board, sorted by target and ranked within it. ``compact`` (the
        terminal's): the target column says where the latency is from (``estimated for
        NAME``) and the latency cell holds only the numbers; otherwise the target column
        names the target and the latency cell is labelled."""
        headers = [
            "target", "#", "pilot", "kind", "score", "laps", "crashes", "interv.", "autonomy %",
            "|CTE| mean/max m", "lap s", "latency ms", "constraints", "stale",
        ]  # fmt: skip
        rows = []
        for e in self.entries:
            stale = e.stale_mark
            if e.partial:
                stale = "; ".join(s for s in (stale, f"partial: {e.partial}") if s)
            rows.append(
                [
                    e.target_label if compact else e.target,
                    str(e.rank),
                    e.pilot_label,
                    e.pilot_kind or "–",
                    f"{e.score:.1f}",
                    f"{e.laps_completed}/{e.laps_target}",
                    str(e.off_track) if e.off_track is not None else "–",
                    str(e.interventions) if e.interventions is not None else "–",
                    _f(e.autonomy, ".1f"),
                    f"{_f(e.mean_abs_cte, '.3f')}/{_f(e.max_abs_cte, '.2f')}",
                    _f(e.mean_lap_time, ".1f"),
                    latency_cell(e, labelled=not compact),
                    e.marks,
                    stale,
                ]
            )
        note = (
            f"One board per target (this machine, then each car computer or profiled "
            f"device), ranked within it. score = 100 x mean over runs of autonomy fraction x "
            f"completed lap fraction; ranked by score among entries meeting the constraints "
            f"(median latency on the target <= {self.ctx.control_period_ms:g} ms control "
            "period, no flips), then the others; ties: lower |CTE|, then lap time. Latency: "
            "median (p99) charged; 'estimated for NAME' from the pilot's counted FLOPs, "
            "'profile: DEVICE' replayed from a profile recorded there. Stale: measured on "
            "other hardware, profiled on another device or another model, estimated with "
            "other car constants, trained on an earlier dataset of the board, or written by "
            "another code version. " + self.ctx.describe()
        )
        return Table("Closed-loop leaderboard", headers, rows, note, "leaderboard")

    def runs_table(self) -> Table:
        headers = [
            "pilot", "target", "track", "dir", "speed", "laps", "crashes", "interv.",
            "autonomy %", "|CTE| mean", "|CTE| max", "lap times s", "latency ms", "sim s",
            "stale",
        ]  # fmt: skip
        rows = []
        for e in self.entries:
            for r in sorted(e.runs, key=lambda r: (str(r.get("track")), str(r.get("direction")))):
                laps = ", ".join(_f(t, ".1f") for t in (r.get("lap_times") or [])) or "–"
                mode = r.get("latency_mode") or "?"
                own = mode in ("profile", "estimated")
                source = target_label(mode, r.get("car")) if own else mode
                rows.append(
                    [
                        e.label,
                        e.target,
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
                        f"{_f(r.get('latency_ms'), '.1f')} ({source})",
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
                    s.get("car") or THIS_MACHINE,
                    _f(s["max_ok_ms"], "g"),
                    _f(s["first_fail_ms"], "g"),
                    pts,
                ]
            )
        return Table(
            "Latency sweep",
            ["pilot", "target", "clean up to ms", "first failure ms", "latency ms: clean runs"],
            rows,
            "Same pilot, tracks and seed at increasing charged latency; a clean run completes "
            "its laps without intervention.",
            "sweep",
        )

    def recipe_table(self) -> Table | None:
        """The recipe's table: per pilot, offline metrics beside runtime and closed-loop
        result on each target (this machine, each car computer or profiled device)."""
        rows = self.recipe
        if not rows:
            return None
        targets = self.targets
        headers = ["pilot", "output", "macro F1", "MAE", "MFLOP"]
        for col in targets:
            headers += [f"{col.label}: runtime ms", f"{col.label}: closed loop"]
        out = []
        for r in rows:
            cells = [
                r.pilot,
                r.output_kind or "–",
                _f(r.macro_f1, ".3f", "-"),
                _f(r.mae, ".4f"),
                _f(r.mflop, ".1f"),
            ]
            for col in targets:
                e = r.entries.get(col)
                if e is not None:
                    cells.append(_ms(e.latency_ms, e.latency_p99_ms, e.latency_p95_ms))
                elif col.car is None and r.offline_ms is not None:
                    cells.append(f"{_f(r.offline_ms, '.1f')} offline")
                else:
                    cells.append("–")
                cells.append(closed_loop_cell(e))
            out.append(cells)
        estimates = [c.car for c in targets if c.estimate]
        note = (
            "Offline test metrics (macro F1 for classifiers, '-' for regressors; MAE of the "
            "steering) beside each target's median runtime (p99) and closed-loop result "
            "(score, laps, interventions; ✓ every run clean, ✗ laps missed or rescued). "
            "This machine's runtime is the closed loop's measured median, else the offline "
            "batch-1 one."
        )
        if estimates:
            note += f" Estimated, not measured: {', '.join(str(c) for c in estimates)}."
        return Table("The recipe's table", headers, out, note, "recipe")

    def tables(self, html_cells: bool = False) -> list[Table]:
        out = [self.leaderboard_table()]
        recipe = self.recipe_table()
        if recipe is not None:
            out.append(recipe)
        out.append(self.offline_table())
        for t in (self.class_table(html_cells), self.sweep_table()):
            if t is not None:
                out.append(t)
        out.append(self.runs_table())
        return out


def build_report(store: Store, ctx: Context | None = None, notes: Sequence[str] = ()) -> Report:
    """Rank the closed-loop rows of ``store`` and collect what the renderings need."""
    closed_loop = store.closed_loop_rows(with_trajectories=True)
    ctx = (ctx or current_context(store)).for_rows(closed_loop)
    offline = store.offline_rows()
    sweep_rows = store.sweep_rows()
    return Report(
        entries=rank_entries(closed_loop, ctx, offline),
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
            r.get("car"),
        )  # fmt: skip
        latest[key] = r
    return list(latest.values())
