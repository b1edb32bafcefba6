"""The HTML report's figures, each a base64 PNG: trajectories over the track maps (small
multiples: one map per pilot), learning curves, the latency sweep, macro F1 against
latency per target."""

from __future__ import annotations

import base64
import csv
import io
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.report.formats import laps_cell
from evaluation.report.ranking import Entry, _num
from evaluation.report.recipe import pareto_front
from evaluation.report.tables import Report
from tracks import load_track
from tracks.plot import plot_track

__all__ = ["f1_latency_figure", "learning_curve_figure", "sweep_figure", "trajectory_figures"]

logger = logging.getLogger(__name__)


def _figure(w: float, h: float) -> Any:
    # matplotlib only when a figure is drawn: the other renderings do without it.
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=80)


def _png_b64(fig: Any, tight: bool = True) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazily, as in _figure

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    # a tight bounding box draws the figure twice: not for the many small maps
    fig.savefig(buf, format="png", bbox_inches="tight" if tight else None)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _load_track(name: str, direction: str | None) -> Any:
    track = load_track(name)
    return track.reversed() if direction == "cw" else track


def _break_jumps(trajectory: Sequence[Sequence[float]], max_step_m: float = 1.0) -> Any:
    """The (K, 2) path with NaN rows where the car was put back on the road, so that the
    plot shows no line across the map for an intervention."""
    xy = np.asarray(trajectory, dtype=float).reshape(-1, 2)
    if len(xy) < 2:
        return xy
    jumps = np.flatnonzero(np.hypot(*np.diff(xy, axis=0).T) > max_step_m) + 1
    return np.insert(xy, jumps, np.nan, axis=0)


#: Small maps per row in a trajectory figure.
TRAJECTORY_COLUMNS = 4


def trajectory_figures(report: Report) -> list[tuple[str, str]]:
    """``(caption, base64 PNG)`` per track and direction: small multiples, one small map
    per entry (in board order) with its own path and interventions, so that paths that
    overlay each other on one map can be told apart."""
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
        ncols = min(TRAJECTORY_COLUMNS, len(items))
        nrows = math.ceil(len(items) / ncols)
        # Each map as tall as the track is (a long, flat track leaves no empty bands), plus
        # its two-line title; a strip on top for the figure's title.
        edges = np.concatenate(track.edges())
        extent = edges.max(axis=0) - edges.min(axis=0)
        panel_h = min(2.9, max(1.0, 2.9 * float(extent[1] / max(extent[0], 1e-6)))) + 0.45
        height = panel_h * nrows + 0.6
        fig = _figure(2.9 * ncols, height)
        for i, (e, r) in enumerate(items):
            ax = fig.add_subplot(nrows, ncols, i + 1)
            plot_track(track, ax=ax, trajectories=[_break_jumps(r["trajectory"])], title="")
            line = ax.get_lines()[-1]
            line.set_color("tab:orange" if r.get("interventions") else "tab:green")
            line.set_linewidth(1.6)
            marks = (r.get("extra") or {}).get("interventions_at") or []
            if marks:
                ax.plot(
                    [m[0] for m in marks], [m[1] for m in marks], "x", ms=6, mew=1.8,
                    color="tab:red", zorder=6,
                )  # fmt: skip
            target = "" if e.car is None else f" @{e.car}"
            laps = laps_cell(r.get("laps_completed"), r.get("laps_target"), r.get("interventions"))
            ax.set_title(f"#{e.rank} {e.pilot_label}{target}\nlaps {laps}", fontsize=8)
            ax.set_axis_off()  # small maps need no axes (and ticks cost most of the drawing)
        fig.suptitle(
            f"{name} ({direction}): one map per pilot; green: no intervention, orange: "
            "rescued (x: where)",
            fontsize=9,
            y=1 - 0.05 / height,
            va="top",
        )
        fig.subplots_adjust(
            left=0.02,
            right=0.98,
            bottom=0.02,
            top=1 - 0.75 / height,
            wspace=0.05,
            hspace=0.45 / (panel_h - 0.45),
        )
        hashes = {r.get("track_hash") for _, r in items} - {None}
        mismatch = hashes and not hashes & {track.geometry_hash, track.reversed().geometry_hash}
        caption = f"{name}, {direction}: {len(items)} pilots, one map each" + (
            " (geometry differs from today's track: map is approximate)" if mismatch else ""
        )
        out.append((caption, _png_b64(fig, tight=False)))
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
    measured = {
        (e.pilot, e.checkpoint_sha256): e.latency_ms
        for e in report.entries
        if e.car is None and e.latency_label == "measured"
    }
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


_MARKERS = ("o", "s", "^", "D", "v", "P", "*", "X")


def f1_latency_figure(report: Report) -> tuple[str, str] | None:
    """``(caption, base64 PNG)``: each classifier on each target as (median latency, test
    macro F1), one colour and marker per target; each target's Pareto front as a step line;
    the control period as a vertical line; runs that crashed in closed loop outlined red
    with a red x. None when no pilot has a macro F1."""
    points = report.f1_points()
    if not points:
        return None
    targets = [t for t in report.targets if any(p.target == t for p in points)]
    fig = _figure(7.5, 4.6)
    ax = fig.add_subplot(1, 1, 1)
    xs = [p.latency_ms for p in points]
    right = max(max(xs), report.ctx.control_period_ms) * 2.0
    for i, t in enumerate(targets):
        mine = [p for p in points if p.target == t]
        color = f"C{i % 10}"
        marker = _MARKERS[i % len(_MARKERS)]
        ax.scatter(
            [p.latency_ms for p in mine], [p.macro_f1 for p in mine], s=55, marker=marker,
            color=color, edgecolors=["red" if p.crashed else color for p in mine],
            linewidths=[2.2 if p.crashed else 0.8 for p in mine], zorder=4, label=t.label,
        )  # fmt: skip
        for p in mine:
            if p.crashed:
                ax.plot(p.latency_ms, p.macro_f1, "x", color="red", ms=11, mew=1.6, zorder=5)
            ax.annotate(
                p.pilot, p.xy, xytext=(4, 4), textcoords="offset points", fontsize=7, color="#333"
            )
        front = pareto_front(p.xy for p in mine)
        fx = [x for x, _ in front] + [right]
        fy = [y for _, y in front] + [front[-1][1]]
        ax.step(fx, fy, where="post", color=color, lw=1.2, ls="-", alpha=0.7, zorder=3)
    period = report.ctx.control_period_ms
    ax.axvline(period, color="k", lw=1, ls="--", zorder=2)
    ax.text(period, 0.02, " control period", rotation=90, va="bottom", ha="right", fontsize=8)
    if any(p.crashed for p in points):
        ax.plot([], [], "x", color="red", ms=9, mew=1.6, label="crashed in closed loop")
    ax.set_xscale("log")
    ax.set_xlim(min(xs) / 2.0, right)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("median latency [ms] (log)")
    ax.set_ylabel("test macro F1")
    ax.grid(True, lw=0.3, which="both")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    estimates = [str(t.car) for t in targets if t.estimate]
    profiles = [str(t.car or "this machine") for t in targets if t.mode == "profile"]
    subtitle = f"estimates (not measured): {', '.join(estimates)}" if estimates else "no estimates"
    if profiles:
        subtitle += f"; profiles replayed: {', '.join(profiles)}"
    ax.set_title(f"macro F1 vs latency per target\n{subtitle}", fontsize=9)
    fig.tight_layout()
    caption = (
        "Test macro F1 against median latency, one marker per target; lines: each target's "
        "Pareto front (the best F1 at that latency or less); dashed: the "
        f"{period:g} ms control period; red outline and x: crashed in closed loop. "
        + (
            f"Latencies for {', '.join(estimates)} are estimates from counted FLOPs."
            if estimates
            else "Every latency here was measured or profiled."
        )
    )
    return caption, _png_b64(fig)
