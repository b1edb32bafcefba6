"""Bias / variance diagnosis and the basic recipe's recommendation.

``python -m training.diagnose RUN_DIR [--base-error X]`` reads the numbers the trainer
stored (``RUN_DIR/best.json``: steering MAE on train and dev at the best epoch, both measured
in eval mode without augmentation, and the base-error estimate) and prints:

- avoidable bias = train error - base error (the model does not even fit the training data),
- variance = dev error - train error (it does not generalise),

and what the recipe says to do about the larger one:

- high bias: a bigger network (more width/depth), train longer, a better architecture; and
  ask whether the task is possible at this base error;
- high variance: more data (more laps, both directions, more tracks), regularisation
  (weight decay, dropout, augmentation), a better architecture.

The base error is the irreducible steering error. Unless given, it is estimated from the
data source's label noise: an episode whose ``expert`` record states ``label_noise`` (std
of Gaussian noise on the recorded label, whose expected absolute value is
``std * sqrt(2/pi)``) contributes that; trackpilot's pure-pursuit expert records
noise-free labels (its ``steer_noise`` perturbs only the executed command), so expert
episodes contribute 0; for other sources (humans) the noise is unknown and the estimate
says so.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tracks.cli import run_main
from training.cli import fail

__all__ = ["DEFAULT_TOLERANCE", "diagnose", "estimate_base_error", "format_diagnosis", "main"]

#: Differences of steering MAE below this count as small (1% of the [-1, 1] range = 0.02).
DEFAULT_TOLERANCE = 0.01


def estimate_base_error(records: Sequence[Mapping[str, Any]]) -> tuple[float, str]:
    """Frame-weighted label-noise MAE of ``records`` (manifest episode records) and a note."""
    total = 0
    acc = 0.0
    unknown = 0
    stated = 0
    for rec in records:
        n = int(rec.get("frames", 0))
        total += n
        expert = rec.get("expert")
        if isinstance(expert, Mapping) and isinstance(expert.get("label_noise"), (int, float)):
            acc += n * float(expert["label_noise"]) * math.sqrt(2 / math.pi)
            stated += n
        elif isinstance(expert, Mapping) or rec.get("source") == "expert":
            stated += n  # noise-free expert labels
        else:
            unknown += n
    if total == 0:
        return 0.0, "no frames: base error 0"
    value = acc / total
    if unknown == total:
        return value, (
            "base error unknown (no episode states its label noise); 0 assumed, "
            "pass --base-error for a better estimate"
        )
    note = f"from the recorded label noise of {stated} of {total} frames"
    if unknown:
        note += f"; {unknown} frames of unknown noise counted as 0"
    elif acc == 0:
        note += " (noise-free expert labels)"
    return value, note


def diagnose(
    train_error: float,
    dev_error: float,
    base_error: float = 0.0,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    metric: str = "steering MAE",
    base_note: str = "",
) -> dict[str, Any]:
    """The recipe's diagnosis from three errors (same metric, lower is better)."""
    bias = train_error - base_error
    variance = dev_error - train_error
    high_bias = bias > tolerance
    high_var = variance > tolerance
    recs: list[str] = []
    bias_recs = [
        "try a bigger network (--width, --depth, or a deeper model such as pilotnet/resnet_cls)",
        "train longer (--epochs, --patience) or tune the optimiser (--lr)",
        "try another architecture",
        "check the task is possible: is the base error really this low at this image size?",
    ]
    var_recs = [
        "get more data: more laps, both directions, more tracks",
        "regularise more: --weight-decay, --dropout, augmentation (keep flips on, try --shift)",
        "try another architecture",
    ]
    if high_bias and high_var:
        verdict = "high bias and high variance"
        recs = ["fix the bias first:", *bias_recs, "then the variance:", *var_recs]
    elif high_bias:
        verdict = "high bias (underfitting)"
        recs = bias_recs
    elif high_var:
        verdict = "high variance (overfitting)"
        recs = var_recs
    else:
        verdict = "low bias and low variance"
        recs = ["both gaps are within the tolerance: the model is as good as the data allows"]
    if variance < -tolerance:
        recs.append(
            "dev error is below train error: the dev set may be easier than train "
            "(see the split's distribution check)"
        )
    return {
        "metric": metric,
        "train_error": float(train_error),
        "dev_error": float(dev_error),
        "base_error": float(base_error),
        "base_error_note": base_note,
        "avoidable_bias": float(bias),
        "variance": float(variance),
        "tolerance": float(tolerance),
        "high_bias": bool(high_bias),
        "high_variance": bool(high_var),
        "verdict": verdict,
        "recommendations": recs,
    }


def format_diagnosis(d: Mapping[str, Any]) -> str:
    lines = [
        f"diagnosis ({d['metric']}):",
        f"  base error       {d['base_error']:.4f}"
        + (f"  ({d['base_error_note']})" if d.get("base_error_note") else ""),
        f"  train error      {d['train_error']:.4f}",
        f"  dev error        {d['dev_error']:.4f}",
        f"  avoidable bias   {d['avoidable_bias']:+.4f}  (train - base)",
        f"  variance         {d['variance']:+.4f}  (dev - train)",
        f"  verdict          {d['verdict']} (tolerance {d['tolerance']:.4f})",
        "  basic recipe:",
    ]
    lines += [f"    - {r}" if not r.endswith(":") else f"    {r}" for r in d["recommendations"]]
    return "\n".join(lines)


def diagnose_run(
    run_dir: str | Path, base_error: float | None = None, tolerance: float = DEFAULT_TOLERANCE
) -> dict[str, Any]:
    """Diagnosis from the numbers stored in ``RUN_DIR/best.json`` (``ValueError`` if absent)."""
    path = Path(run_dir) / "best.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        metrics = record["metrics"]
        train_error = float(metrics["train_mae"])
        dev_error = float(metrics["dev_mae"])
    except FileNotFoundError:
        raise ValueError(f"{path}: not found (is {run_dir} a training run directory?)") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: no train/dev errors stored ({e})") from None
    stored = record.get("base_error") or {}
    if base_error is not None:
        base, note = float(base_error), "given by the user"
    else:
        base, note = float(stored.get("value", 0.0)), str(stored.get("note", ""))
    return diagnose(train_error, dev_error, base, tolerance=tolerance, base_note=note)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m training.diagnose",
        description="Bias/variance diagnosis of a training run (the basic recipe).",
    )
    ap.add_argument("run_dir", type=Path, help="run directory written by python -m training.train")
    ap.add_argument(
        "--base-error",
        type=float,
        default=None,
        help="irreducible steering MAE (default: none: the one the run recorded)",
    )
    ap.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help="gap counted as small (default: %(default)s)",
    )
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args(argv)
    if args.base_error is not None and not (
        math.isfinite(args.base_error) and args.base_error >= 0
    ):
        return fail("--base-error must be a finite number >= 0")
    if not (math.isfinite(args.tolerance) and args.tolerance >= 0):
        return fail("--tolerance must be a finite number >= 0")
    try:
        d = diagnose_run(args.run_dir, args.base_error, args.tolerance)
    except ValueError as e:
        return fail(e)
    print(json.dumps(d, indent=2) if args.json else format_diagnosis(d))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
