"""The plain renderings: aligned terminal text, Markdown, and CSV files of raw numbers."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from evaluation.report.context import THIS_MACHINE, stale_reasons
from evaluation.report.formats import format_f1, mean_sd
from evaluation.report.ranking import run_score
from evaluation.report.tables import Report, Table, frame_counts, run_video


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


__all__ = ["render_markdown", "render_terminal", "write_csv"]


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
    """The leaderboard (compact: the target column says ``estimated for NAME``), the spread
    over seeds (when several were run), the offline and sweep tables as aligned plain
    text, then what the board's columns mean (and that test frame counts differ)."""
    parts = [_text_table(report.leaderboard_table(compact=True))]
    for t in (report.seeds_table(), report.offline_table(), report.sweep_table()):
        if t is not None:
            parts.append(_text_table(t))
    parts.append(report.leaderboard_table().note)
    frames = report.frames_note()
    if frames:
        parts.append(frames)
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


_RECIPE_COLS = [
    "pilot", "checkpoint_sha256", "output_kind", "macro_f1", "mae", "n", "mflop",
    "num_parameters", "model_bytes", "target", "target_label", "latency_ms", "latency_p99_ms",
    "score", "laps_completed", "laps_target", "interventions", "clean",
]  # fmt: skip


def _recipe_csv_rows(report: Report) -> list[list[Any]]:
    rows = []
    frames = frame_counts(report.offline)
    for r in report.recipe:
        for col in report.targets:
            e = r.entries.get(col)
            closed = (
                [e.latency_p99_ms, round(e.score, 4), e.laps_completed, e.laps_target,
                 e.interventions, int(e.clean)]
                if e is not None
                else [None] * 6
            )  # fmt: skip
            rows.append(
                [r.pilot, r.checkpoint_sha256, r.output_kind, format_f1(r.macro_f1, ""), r.mae,
                 frames.get(r.pilot), r.mflop, r.num_parameters, r.model_bytes,
                 col.car or THIS_MACHINE, col.label, r.latency_ms(col), *closed]
            )  # fmt: skip
    return rows


def _seed_csv_rows(report: Report) -> list[list[Any]]:
    """One line per entry, track, direction and environment run with several seeds."""
    rows = []
    for e, env, track, direction, rs in report.seed_groups():
        stats = [
            mean_sd([100.0 * run_score(r) for r in rs]),
            mean_sd([r.get("interventions") for r in rs]),
            mean_sd([r.get("mean_abs_cte") for r in rs]),
            mean_sd([r.get("mean_lap_time") for r in rs]),
        ]
        rows.append(
            [e.pilot, e.checkpoint_sha256, e.latency_label, e.target, track, direction,
             env, len(rs), *(v for m, sd, _ in stats for v in (m, sd))]
        )  # fmt: skip
    return rows


def write_csv(report: Report, out_dir: str | Path) -> list[Path]:
    """``leaderboard.csv`` (one line per entry), ``runs.csv`` (clean and randomised runs),
    ``offline.csv``, and when there are offline test rows ``recipe.csv`` (one line per
    pilot and target), when several seeds were run ``seeds.csv`` (mean and standard
    deviation per pilot, track and direction) and when there is a sweep ``sweep.csv``; raw
    numbers, not the formatted text, except F1 (``0.850``, as everywhere in the report)."""
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
            "max_abs_cte", "mean_lap_time", "latency_ms", "latency_p95_ms", "target", "car",
            "target_label", "latency_source", "latency_p99_ms", "mflop", "seeds", "score_sd",
            "robust_runs", "robust_score", "robust_score_sd", "num_parameters", "model_bytes",
        ],
        (
            [
                e.rank, e.pilot, e.pilot_kind, e.checkpoint_sha256, e.latency_label,
                round(e.score, 4) if e.runs else None, int(e.feasible), "; ".join(e.violations),
                ",".join(e.stale), len(e.runs), e.runs_completed, e.laps_completed,
                e.laps_target, e.off_track, e.interventions, e.autonomy, e.mean_abs_cte,
                e.max_abs_cte, e.mean_lap_time, e.latency_ms, e.latency_p95_ms, e.target,
                e.car, e.target_label, e.latency_source, e.latency_p99_ms, e.mflop,
                len(e.seeds), _round(e.score_sd), len(e.robust_runs), _round(e.robust_score),
                _round(e.robust_score_sd), e.num_parameters, e.model_bytes,
            ]
            for e in report.entries
        ),
    )  # fmt: skip
    run_cols = [
        "pilot", "pilot_kind", "checkpoint_sha256", "dataset_fingerprint", "track", "track_hash",
        "direction", "speed", "laps_target", "seed", "latency_mode", "latency_ms",
        "latency_p95_ms", "laps_completed", "off_track", "interventions", "autonomy",
        "mean_abs_cte", "max_abs_cte", "mean_lap_time", "mean_speed", "elapsed_s", "completed",
        "device", "hardware", "code_version", "date", "car", "latency_source", "latency_p99_ms",
        "latency_max_ms", "profile_sha256", "profile_model_sha256", "profile_hardware",
        "car_model", "mflop", "num_parameters", "model_bytes",
    ]  # fmt: skip
    write(
        "runs.csv",
        [*run_cols, "domain_randomization", "video", "stale"],
        (
            [
                *(r.get(c) for c in run_cols),
                int(bool(r.get("domain_randomization"))),
                run_video(r),
                ",".join(stale_reasons(r, report.ctx)),
            ]
            for e in report.entries
            for r in [*e.runs, *e.robust_runs]
        ),
    )
    off_cols = [
        "pilot", "pilot_kind", "checkpoint_sha256", "dataset_fingerprint", "split",
        "output_kind", "n", "mae", "mse", "macro_f1", "accuracy", "latency_median_ms",
        "latency_p95_ms", "device", "hardware", "code_version", "date", "run_dir", "mflop",
        "num_parameters", "model_bytes",
    ]  # fmt: skip
    write(
        "offline.csv",
        off_cols,
        (
            [format_f1(r.get(c), "") if c == "macro_f1" else r.get(c) for c in off_cols]
            for r in report.offline
        ),
    )
    if report.recipe:
        write("recipe.csv", _RECIPE_COLS, _recipe_csv_rows(report))
    seeds = _seed_csv_rows(report)
    if seeds:
        spread = [f"{m}_{s}" for m in ("score", "interventions", "mean_abs_cte", "mean_lap_time") for s in ("mean", "sd")]  # fmt: skip
        write(
            "seeds.csv",
            ["pilot", "checkpoint_sha256", "latency_setting", "target", "track", "direction",
             "env", "seeds", *spread],
            seeds,
        )  # fmt: skip
    if report.sweep_rows:
        sw_cols = [
            "pilot", "checkpoint_sha256", "track", "direction", "speed", "seed", "latency_ms",
            "laps_completed", "laps_target", "off_track", "interventions", "autonomy",
            "completed", "device", "date", "car", "domain_randomization",
        ]  # fmt: skip
        write("sweep.csv", sw_cols, ([r.get(c) for c in sw_cols] for r in report.sweep_rows))
    return paths
