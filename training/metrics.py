"""Offline metrics for steering pilots (pure numpy).

- Regression: steering MAE, MSE, RMSE, mean signed error (bias to one side), max |error|.
- Classes: per-class precision, recall, F1 and support; their macro average (the single
  optimizing number of the recipe) and accuracy. A metric with no frames to stand on is
  NaN in the numbers and ``n/a`` in text (:func:`format_metric`), never ``nan`` beside
  a ``0.000`` for the same value.
- Distribution distances used by the split check.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "UNDEFINED",
    "classification_report",
    "format_class_table",
    "format_metric",
    "histogram_distance",
    "regression_metrics",
    "total_variation",
]


def regression_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Steering error statistics of ``pred`` against ``target`` (same shape, 1-D)."""
    pred = np.asarray(pred, dtype=np.float64).ravel()
    target = np.asarray(target, dtype=np.float64).ravel()
    if pred.shape != target.shape:
        raise ValueError(f"pred and target differ in shape: {pred.shape} vs {target.shape}")
    if pred.size == 0:
        return {"n": 0, "mae": float("nan"), "mse": float("nan"), "rmse": float("nan"),
                "mean_error": float("nan"), "max_abs_error": float("nan")}  # fmt: skip
    err = pred - target
    mse = float(np.mean(err**2))
    return {
        "n": int(err.size),
        "mae": float(np.mean(np.abs(err))),
        "mse": mse,
        "rmse": float(np.sqrt(mse)),
        "mean_error": float(np.mean(err)),
        "max_abs_error": float(np.max(np.abs(err))),
    }


#: The share of a split's frames a class must hold to count in the macro averages.
MIN_SUPPORT = 0.01


def classification_report(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    num_classes: int,
    class_values: Sequence[float] | None = None,
    min_support: float = MIN_SUPPORT,
) -> dict[str, Any]:
    """Per-class precision / recall / F1 / support, macro averages and accuracy.

    A class never predicted has precision 0 (and one never present has recall 0), as in
    scikit-learn's ``zero_division=0``. Macro averages run over the classes that hold at
    least ``min_support`` of the frames (a fraction of ``y_true``, and at least one frame):
    with 15 steering bins the extreme ones may never occur on a gentle track (counting them
    as F1 = 0 would only measure the track), and those that hold a handful of frames have an
    F1 of 0 or 1 by the luck of those frames. Measured on the quick preset's test split
    (7,750 frames, 13 episodes, seeds 0-2), a bootstrap over its episodes put the standard
    deviation of macro F1 over every occurring bin at 0.026-0.041, over the bins with >= 1%
    of the frames at 0.003-0.005. Every class, counted or not, keeps its row in
    ``per_class``; ``macro_f1_all`` averages over every class in ``y_true`` or ``y_pred``
    (the definition before ``min_support``).
    """
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in shape: {y_true.shape} vs {y_pred.shape}")
    if y_true.size and (
        min(y_true.min(), y_pred.min()) < 0 or max(y_true.max(), y_pred.max()) >= num_classes
    ):
        raise ValueError(f"class indices must lie in [0, {num_classes})")
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = (support > 0) | (predicted > 0)
    min_frames = max(1, math.ceil(min_support * y_true.size))
    counted = support >= min_frames
    classes = []
    for k in range(num_classes):
        row = {
            "class": k,
            "precision": float(precision[k]),
            "recall": float(recall[k]),
            "f1": float(f1[k]),
            "support": int(support[k]),
            "predicted": int(predicted[k]),
            "averaged": bool(counted[k]),
        }
        if class_values is not None:
            row["value"] = float(class_values[k])
        classes.append(row)

    def macro(v: np.ndarray, over: np.ndarray = counted) -> float:
        return float(v[over].mean()) if over.any() else float("nan")

    return {
        "n": int(y_true.size),
        "accuracy": float(tp.sum() / y_true.size) if y_true.size else float("nan"),
        "macro_precision": macro(precision),
        "macro_recall": macro(recall),
        "macro_f1": macro(f1),
        "classes_in_average": int(counted.sum()),
        "min_support_frames": min_frames,
        "macro_f1_all": macro(f1, present),
        "classes_present": int(present.sum()),
        "per_class": classes,
        "confusion": cm.tolist(),
    }


#: How an undefined metric (no frames to compute it on) is printed, never as ``nan``
#: and never as a 0 that looks measured.
UNDEFINED = "n/a"


def format_metric(value: Any, spec: str = ".3f") -> str:
    """``value`` formatted with ``spec``, or :data:`UNDEFINED` for ``None`` / NaN / inf.

    ``0.0`` is a measured value and prints as such (``f"{x or nan}"`` would print it as
    ``nan``)."""
    if value is None or isinstance(value, bool):
        return UNDEFINED
    try:
        v = float(value)
    except (TypeError, ValueError):
        return UNDEFINED
    return format(v, spec) if math.isfinite(v) else UNDEFINED


def format_class_table(report: dict[str, Any]) -> str:
    """The per-class table of :func:`classification_report` as aligned text.

    A class with no frames and no predictions has no precision, recall or F1: its row
    says ``n/a``; like a class with fewer frames than the report's minimum it is left out
    of the macro average (as in the leaderboard's class table). With no frames at all the
    macro values are ``n/a`` too."""
    lines = [f"{'class':>5} {'steer':>6} {'prec':>6} {'recall':>6} {'f1':>6} {'support':>8}"]
    for row in report["per_class"]:
        value = f"{row['value']:+.2f}" if "value" in row else ""
        if not row["support"] and not row.get("predicted", 1):
            cells = f"{UNDEFINED:>6} {UNDEFINED:>6} {UNDEFINED:>6}"
        else:
            cells = " ".join(f"{format_metric(row[k]):>6}" for k in ("precision", "recall", "f1"))
        lines.append(f"{row['class']:>5} {value:>6} {cells} {row['support']:8d}")
    macro = " ".join(
        f"{format_metric(report[k]):>6}" for k in ("macro_precision", "macro_recall", "macro_f1")
    )
    averaged = report["classes_in_average"]
    note = (
        f"accuracy {format_metric(report['accuracy'])}, {averaged} classes averaged"
        if averaged
        else f"{UNDEFINED}: no frames of any class"
    )
    least = report.get("min_support_frames", 1)
    if averaged and least > 1:
        note += (
            f": those with >= {least} frames; over every class present macro F1 "
            f"{format_metric(report.get('macro_f1_all'))}"
        )
    lines.append(f"{'macro':>5} {'':>6} {macro} {report['n']:8d}   ({note})")
    return "\n".join(lines)


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """Total variation distance (0..1) between two non-negative weight vectors."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.sum() <= 0 or q.sum() <= 0:
        return float("nan")
    return float(0.5 * np.abs(p / p.sum() - q / q.sum()).sum())


def histogram_distance(a: np.ndarray, b: np.ndarray, bins: int = 20) -> float:
    """Total variation distance between the steering histograms of ``a`` and ``b`` on [-1, 1]."""
    edges = np.linspace(-1.0, 1.0, bins + 1)
    ha, _ = np.histogram(np.clip(a, -1, 1), bins=edges)
    hb, _ = np.histogram(np.clip(b, -1, 1), bins=edges)
    return total_variation(ha, hb)
