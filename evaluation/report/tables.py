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
from evaluation.report.formats import (
    format_f1,
    laps_cell,
    mean_sd_cell,
    model_cell,
)
from evaluation.report.ranking import (
    Entry,
    _num,
    latest_offline,
    rank_entries,
    run_score,
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
from training.metrics import MIN_SUPPORT

__all__ = [
    "Report",
    "Table",
    "build_report",
    "closed_loop_cell",
    "frame_counts",
    "latency_cell",
    "robustness_cell",
    "run_video",
    "score_cell",
]


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


def score_cell(e: Entry) -> str:
    """``100.0``, ``87.5 ± 5.2`` over several seeds (sample standard deviation of the
    per-seed scores), ``–`` without clean runs."""
    if not e.runs:
        return "–"
    sd = e.score_sd
    return f"{e.score:.1f}" + ("" if sd is None else f" ± {sd:.1f}")


def robustness_cell(e: Entry) -> str:
    """The score over the domain-randomised runs and its change from the clean score:
    ``31.0 (-69.0)``; ``–`` when none were run."""
    rs = e.robust_score
    if rs is None:
        return "–"
    sd = e.robust_score_sd
    text = f"{rs:.1f}" + ("" if sd is None else f" ± {sd:.1f}")
    return text + (f" ({rs - e.score:+.1f})" if e.runs else "")


def _entry_runs(e: Entry) -> list[tuple[dict[str, Any], str]]:
    """``(run, env)`` of every closed-loop run of ``e``, clean and randomized (``env``),
    by track, direction and env."""
    runs = [(r, "clean") for r in e.runs] + [(r, "randomized") for r in e.robust_runs]
    return sorted(runs, key=lambda x: (str(x[0].get("track")), str(x[0].get("direction")), x[1]))


def run_video(row: Mapping[str, Any]) -> str | None:
    """The video file a closed-loop run wrote (``evaluate --video``), if any."""
    extra = row.get("extra") if isinstance(row.get("extra"), Mapping) else {}
    video = row.get("video") or extra.get("video")
    return str(video) if video else None


def frame_counts(offline: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Test frames each pilot's offline metrics are over (pilots whose rows say)."""
    out: dict[str, int] = {}
    for r in offline:
        n = _num(r.get("n"))
        if (r.get("split") or "test") == "test" and n is not None:
            out[str(r.get("pilot"))] = int(n)
    return out


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

    # -- what the tables' notes say
    def frames_note(self) -> str | None:
        """When the offline rows are over different numbers of test frames, which and why
        that matters (None when they agree)."""
        counts = frame_counts(self.offline)
        if len(set(counts.values())) < 2:
            return None
        listed = ", ".join(f"{p} {n}" for p, n in counts.items())
        return (
            f"Test frame counts differ between pilots ({listed}): their MAE and F1 are over "
            "different frames (a model trained on one direction is tested on that direction "
            "only; labels compensated for a latency L have none for each episode's last L "
            "seconds), so compare them with care."
        )

    def run_videos(self) -> list[tuple[Entry, dict[str, Any], str, str]]:
        """``(entry, run, env, video path)`` of every run that wrote a video, in board
        order (``env``: clean or randomized)."""
        out = []
        for e in self.entries:
            for r, env in _entry_runs(e):
                video = run_video(r)
                if video:
                    out.append((e, r, env, video))
        return out

    def seed_groups(self) -> list[tuple[Entry, str, str, str, list[dict[str, Any]]]]:
        """``(entry, env, track, direction, runs)`` for each entry, environment (clean,
        randomized), track and direction run with several seeds, in board order."""
        out = []
        for e in self.entries:
            for env, runs in (("clean", e.runs), ("randomized", e.robust_runs)):
                by: dict[tuple[str, str], list[dict[str, Any]]] = {}
                for r in runs:
                    by.setdefault((str(r.get("track")), str(r.get("direction"))), []).append(r)
                for (track, direction), rs in sorted(by.items()):
                    if len({r.get("seed") for r in rs}) > 1:
                        out.append((e, env, track, direction, rs))
        return out

    # -- tables
    def leaderboard_table(self, compact: bool = False) -> Table:
        """The closed-loop board, sorted by target and ranked within it. ``compact`` (the
        terminal's): the target column says where the latency is from (``estimated for
        NAME``) and the latency cell holds only the numbers; otherwise the target column
        names the target and the latency cell is labelled."""
        headers = [
            "target", "#", "pilot", "kind", "score", "robustness", "laps", "crashes",
            "autonomy %", "|CTE| mean/max m", "lap s", "latency ms", "params / size",
            "constraints", "stale",
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
                    score_cell(e),
                    robustness_cell(e),
                    laps_cell(e.laps_completed, e.laps_target, e.interventions) if e.runs else "–",
                    str(e.off_track) if e.off_track is not None else "–",
                    _f(e.autonomy, ".1f"),
                    f"{_f(e.mean_abs_cte, '.3f')}/{_f(e.max_abs_cte, '.2f')}",
                    _f(e.mean_lap_time, ".1f"),
                    latency_cell(e, labelled=not compact),
                    model_cell(e.num_parameters, e.model_bytes),
                    e.marks,
                    stale,
                ]
            )
        note = (
            f"One board per target (this machine, then each car computer or profiled "
            f"device), ranked within it. score = 100 x mean over runs of autonomy fraction x "
            f"completed lap fraction ('± s': the standard deviation of the per-seed scores "
            f"when several seeds were run); ranked by score among entries meeting the "
            f"constraints (median latency on the target <= {self.ctx.control_period_ms:g} ms "
            "control period, no flips), then the others; ties: lower |CTE|, then lap time. "
            "laps: completed/target over the runs; a run goes on after an intervention (the "
            "car is put back on the road), so laps that needed rescues read '4/4 (14 "
            "interv.)'; crashes: off-track events. robustness: the same score over runs with "
            "domain randomisation (seeded road, line and ground colours, light, camera height "
            "and pitch) on the same held-out tracks, and its change from the clean score; a "
            "pilot that drives only on the training palette drops here ('–': not run). "
            "params / size: parameters and weights on disk. Latency: median (p99) charged; "
            "'estimated for NAME' from the pilot's counted FLOPs, 'profile: DEVICE' replayed "
            "from a profile recorded there. Stale: measured on other hardware, profiled on "
            "another device or another model, estimated with other car constants, trained "
            "on an earlier dataset of the board, or written by another code version. "
            + self.ctx.describe()
        )
        return Table("Closed-loop leaderboard", headers, rows, note, "leaderboard")

    def seeds_table(self) -> Table | None:
        """Per entry, track and direction run with several seeds: mean ± spread of the
        score, interventions, |CTE| and lap time over the seeds (None: one seed each)."""
        rows = [
            [
                e.label,
                e.target,
                track,
                direction,
                env,
                str(len(rs)),
                mean_sd_cell([100.0 * run_score(r) for r in rs]),
                mean_sd_cell([r.get("interventions") for r in rs]),
                mean_sd_cell([r.get("mean_abs_cte") for r in rs], ".3f"),
                mean_sd_cell([r.get("mean_lap_time") for r in rs]),
            ]
            for e, env, track, direction, rs in self.seed_groups()
        ]
        if not rows:
            return None
        return Table(
            "Spread over seeds",
            [
                "pilot", "target", "track", "dir", "env", "seeds", "score", "interv.",
                "|CTE| mean m", "lap s",
            ],
            rows,
            "Mean ± sample standard deviation over the seeds run for the same pilot, track "
            "and direction (clean or with domain randomisation).",
            "seeds",
        )  # fmt: skip

    def runs_table(self) -> Table:
        headers = [
            "pilot", "target", "track", "dir", "seed", "env", "speed", "laps", "crashes",
            "autonomy %", "|CTE| mean", "|CTE| max", "lap times s", "latency ms", "sim s",
            "stale",
        ]  # fmt: skip
        rows = []
        for e in self.entries:
            for r, env in _entry_runs(e):
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
                        str(r.get("seed") if r.get("seed") is not None else "–"),
                        env,
                        _f(r.get("speed"), ".1f"),
                        laps_cell(
                            r.get("laps_completed"), r.get("laps_target"), r.get("interventions")
                        ),
                        str(r.get("off_track") if r.get("off_track") is not None else "–"),
                        _f(r.get("autonomy"), ".1f"),
                        _f(r.get("mean_abs_cte"), ".3f"),
                        _f(r.get("max_abs_cte"), ".2f"),
                        laps,
                        f"{_f(r.get('latency_ms'), '.1f')} ({source})",
                        _f(r.get("elapsed_s"), ".1f"),
                        ", ".join(stale_reasons(r, self.ctx)),
                    ]
                )
        return Table(
            "Closed-loop runs",
            headers,
            rows,
            "env: clean (the training palette) or randomized (domain randomisation); laps as "
            "on the board.",
            "runs",
        )

    def offline_table(self) -> Table:
        headers = [
            "pilot", "kind", "output", "split", "frames", "MAE", "MSE", "macro F1",
            "runtime ms (median / p95)", "params / size", "device", "fits 50 ms", "stale",
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
                    format_f1(r.get("macro_f1")),
                    f"{_f(r.get('latency_median_ms'), '.2f')} / {_f(r.get('latency_p95_ms'), '.2f')}",
                    model_cell(r.get("num_parameters"), r.get("model_bytes")),
                    str(r.get("device") or "–"),
                    fits,
                    ", ".join(stale_reasons(r, self.ctx)),
                ]
            )
        headers[11] = f"fits {period:g} ms"
        note = (
            "Steering MAE/MSE on the test split (classifiers: value of the argmax bin); "
            f"macro F1 over the steering bins that hold at least {MIN_SUPPORT:.0%} of the "
            "test frames (rarer bins have a handful of frames, whose F1 is 0 or 1 by luck); "
            "runtime = batch-1 inference, preprocessing included; params / size: parameters "
            "and weights on disk."
        )
        frames = self.frames_note()
        if frames:
            note += " " + frames
        return Table("Offline (test split)", headers, rows, note, "offline")

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
                p, rc, f1 = (format_f1(c.get(x) or 0) for x in ("precision", "recall", "f1"))
                left_out = c.get("averaged") is False  # rows stored before the key: unmarked
                if html_cells:
                    cells.append(
                        f"P {p}<br>R {rc}<br><b>F1 {f1}</b>"
                        f"<br><small>n={int(c.get('support') or 0)}"
                        f"{' (not in average)' if left_out else ''}</small>"
                    )
                else:
                    cells.append(f"{p}/{rc}/{f1}{'*' if left_out else ''}")
            cells.append(format_f1(r.get("macro_f1")))
            cells.append(_f(r.get("latency_median_ms"), ".2f"))
            rows.append(cells if not html_cells else [html.escape(cells[0]), *cells[1:]])
        return Table(
            "Per-class precision / recall / F1 (test split)",
            headers,
            rows,
            "Each cell: precision / recall / F1 (fractions, as every F1 in this report) for "
            "the steering bin; bins that neither occur nor are predicted are '–'. The macro "
            f"average counts the bins that hold at least {MIN_SUPPORT:.0%} of the test frames "
            "(the others are marked '*', 'not in average' in HTML).",
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
                    s["pilot"] + (" (randomized)" if s.get("randomized") else ""),
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
        frames = frame_counts(self.offline)
        differ = len(set(frames.values())) > 1
        headers = ["pilot", "output", "macro F1", "MAE"]
        headers += ["test frames"] if differ else []
        headers += ["MFLOP", "params / size"]
        for col in targets:
            headers += [f"{col.label}: runtime ms", f"{col.label}: closed loop"]
        out = []
        for r in rows:
            cells = [r.pilot, r.output_kind or "–", format_f1(r.macro_f1, "-"), _f(r.mae, ".4f")]
            if differ:
                cells.append(str(frames[r.pilot]) if r.pilot in frames else "–")
            cells += [_f(r.mflop, ".1f"), model_cell(r.num_parameters, r.model_bytes)]
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
            "Offline test metrics (macro F1 for classifiers, over the steering bins that "
            f"hold at least {MIN_SUPPORT:.0%} of the test frames, '-' for regressors; MAE of "
            "the steering) beside the model's counted MFLOP per frame, parameters and weights on "
            "disk, and each target's median runtime (p99) and closed-loop result (score, "
            "laps, interventions; ✓ every run clean, ✗ laps missed or rescued). This "
            "machine's runtime is the closed loop's measured median, else the offline "
            "batch-1 one."
        )
        if differ:
            note += " " + (self.frames_note() or "")
        if estimates:
            note += f" Estimated, not measured: {', '.join(str(c) for c in estimates)}."
        return Table("The recipe's table", headers, out, note, "recipe")

    def tables(self, html_cells: bool = False) -> list[Table]:
        out = [self.leaderboard_table()]
        for t in (self.seeds_table(), self.recipe_table()):
            if t is not None:
                out.append(t)
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
            r.get("car"), bool(r.get("domain_randomization")),
        )  # fmt: skip
        latest[key] = r
    return list(latest.values())
