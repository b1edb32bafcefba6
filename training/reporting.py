"""What a behaviour-cloning run reports: ``metrics.csv``, ``curves.png``, TensorBoard scalars,
the per-epoch log line and the command line's final summary."""

from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from sim.io_utils import atomic_write_bytes, atomic_write_text
from training.diagnose import format_diagnosis
from training.metrics import format_class_table, format_metric

__all__ = [
    "METRIC_COLUMNS",
    "Board",
    "clean",
    "format_summary",
    "log_epoch",
    "plot_curves",
    "write_metrics_csv",
]

logger = logging.getLogger(__name__)

METRIC_COLUMNS = (
    "epoch",
    "train_loss",
    "train_mae",
    "dev_loss",
    "dev_mae",
    "dev_mse",
    "dev_macro_f1",
    "dev_accuracy",
    "flip_consistency",
    "lr",
    "epoch_seconds",
    "images_per_second",
    "is_best",
    # --closed-loop-every (training.drive_check): empty in epochs without a drive
    "closed_loop_score",
    "closed_loop_abs_cte",
    "closed_loop_interventions",
    "is_best_closed_loop",
)


def _finite_or_none(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def clean(obj: Any) -> Any:
    """JSON-safe copy: non-finite floats become null."""
    if isinstance(obj, dict):
        return {k: clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        obj = obj.item()
    return _finite_or_none(obj)


def write_metrics_csv(path: Path, history: list[dict[str, Any]]) -> None:
    """One row per epoch, the :data:`METRIC_COLUMNS` (missing values left empty)."""
    buf = io.StringIO()
    w = csv.DictWriter(
        buf, fieldnames=list(METRIC_COLUMNS), extrasaction="ignore", lineterminator="\n"
    )
    w.writeheader()
    for row in history:
        w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in METRIC_COLUMNS})
    atomic_write_text(path, buf.getvalue())


def plot_curves(
    path: Path, history: list[dict[str, Any]], best_epoch: int, stop_metric: str
) -> None:
    """Learning curves: losses (left) and steering MAE (right), best epoch marked."""
    # matplotlib takes a second or two to import: only code that plots pays for it.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ep = [r["epoch"] for r in history]

    def col(k: str) -> list[float]:
        return [float("nan") if r.get(k) is None else r[k] for r in history]

    drives = [r for r in history if r.get("closed_loop_score") is not None]
    fig = Figure(figsize=(15 if drives else 10, 4), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3 if drives else 2)
    ax1, ax2 = axes[0], axes[1]
    ax1.plot(ep, col("train_loss"), "o-", label="train loss (augmented, dropout on)")
    ax1.plot(ep, col("dev_loss"), "o-", label="dev loss")
    ax1.set_title("loss")
    ax2.plot(ep, col("train_mae"), "o-", label="train MAE (eval mode)")
    ax2.plot(ep, col("dev_mae"), "o-", label="dev MAE")
    ax2.set_title("steering MAE")
    if drives:
        # Checkpoint choice by driving: the closed-loop score beside the dev metrics.
        ax3 = axes[2]
        ax3.plot([r["epoch"] for r in drives], [r["closed_loop_score"] for r in drives], "o-",
                 color="tab:green", label="closed-loop score (dev tracks)")  # fmt: skip
        chosen = [r["epoch"] for r in drives if r.get("is_best_closed_loop")]
        if chosen:
            ax3.axvline(chosen[-1], color="tab:green", ls=":", lw=1,
                        label=f"best closed loop: epoch {chosen[-1]}")  # fmt: skip
        ax3.set_ylim(-5, 105)
        ax3.set_title("driving (autonomy x laps, %)")
    for ax in axes:
        ax.set_xlabel("epoch")
        if best_epoch > 0:
            ax.axvline(
                best_epoch,
                color="tab:red",
                ls="--",
                lw=1,
                label=f"best epoch {best_epoch} ({stop_metric})",
            )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


class Board:
    """TensorBoard scalars (no-op when disabled or unavailable)."""

    def __init__(self, run_dir: Path, enabled: bool, purge_step: int | None) -> None:
        self.writer = None
        if enabled:
            try:
                # Optional, and slow to import: only runs that log to TensorBoard load it.
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(log_dir=str(run_dir / "tb"), purge_step=purge_step)
            except ImportError as e:  # pragma: no cover
                logger.warning("TensorBoard disabled: %s", e)

    def log(self, row: dict[str, Any]) -> None:
        if self.writer is None:
            return
        e = row["epoch"]
        for k in METRIC_COLUMNS[1:]:
            v = row.get(k)
            if v is not None and not k.startswith("is_best"):
                group, _, name = k.partition("_")
                self.writer.add_scalar(f"{name}/{group}" if group in ("train", "dev") else k, v, e)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def log_epoch(row: dict[str, Any], improved: bool) -> None:
    """The one log line of a finished epoch."""
    f1 = f" dev F1 {format_metric(row['dev_macro_f1'])}" if "dev_macro_f1" in row else ""
    logger.info(
        "epoch %3d  train loss %.5f  train MAE %.4f  dev loss %.5f  dev MAE %.4f%s  flip %s  %.0f img/s%s",
        row["epoch"], row["train_loss"], row["train_mae"], row["dev_loss"], row["dev_mae"], f1,
        format_metric(row.get("flip_consistency"), ".4f"), row["images_per_second"] or 0.0,
        "  *best*" if improved else "",
    )  # fmt: skip


def format_summary(summary: dict[str, Any]) -> str:
    """What ``python -m training.train`` prints when a run has finished."""
    best = summary["best"]
    lines = [
        f"{summary['reason']}; best epoch {summary['best_epoch']} of {summary['epochs_run']}",
        f"best: train MAE {best['train_mae']:.4f}, dev MAE {best['dev_mae']:.4f}" + (
        f", dev macro F1 {format_metric(best['dev_macro_f1'])}" if "dev_macro_f1" in best else ""),
    ]  # fmt: skip
    driving = summary.get("best_closed_loop")
    if driving is not None:
        lines.append(
            f"best closed loop: epoch {driving['epoch']} (score {driving['closed_loop_score']:.1f}, "
            f"mean |CTE| {driving['closed_loop_abs_cte']:.3f} m on "
            f"{', '.join(driving['closed_loop']['tracks'])}): best_closed_loop.json"
        )
    test = summary["test"]
    if test is not None:
        lines.append(
            f"test: steering MAE {test['mae']:.4f}, MSE {test['mse']:.5f}, "
            f"flip consistency {format_metric(test.get('flip_consistency'), '.4f')} ({test['n']} frames)"
        )
        if "classes" in test:
            lines.append(format_class_table(test["classes"]))
    lines.append(format_diagnosis(summary["diagnosis"]))
    lines.append(f"wrote {summary['run_dir']}")
    return "\n".join(lines)
