"""Offline evaluation of a model or checkpoint on recorded frames.

:func:`evaluate_offline` is what the evaluator (and ``python -m training.evaluate``) calls:
steering MAE/MSE, for classifiers per-class precision/recall/F1 with their macro average,
and flip consistency, on one split of the run's own train/dev/test split (stored in the
checkpoint) or on all frames of any dataset.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from agents.cnn import load_model
from agents.models import SteeringNet, decode_steering, preprocess, steering_to_class
from sim.dataset import open_dataset
from tracks.cli import run_main
from training.augment import flip_consistency
from training.cli import fail
from training.data import SPLITS, FrameSet, load_frames
from training.metrics import classification_report, format_class_table, regression_metrics

__all__ = ["compute_loss", "evaluate_frames", "evaluate_offline", "predict_frames"]


def compute_loss(
    model: SteeringNet,
    outputs: torch.Tensor,
    steering: torch.Tensor,
    throttle: torch.Tensor | None,
    *,
    loss: str = "mse",
    huber_delta: float = 0.1,
    throttle_weight: float = 0.5,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """The training loss for the model's output kind.

    Regression: MSE or Huber on steering (plus ``throttle_weight`` times the same on
    throttle when the model predicts it). Classes: cross-entropy against the bin nearest
    to the steering label.
    """
    outputs = outputs.float()
    if model.output_kind == "classes":
        target = steering_to_class(steering, model.class_values)
        return F.cross_entropy(outputs, target, label_smoothing=label_smoothing)

    def reg(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if loss == "huber":
            return F.huber_loss(pred, y, delta=huber_delta)
        return F.mse_loss(pred, y)

    value = reg(outputs[:, 0], steering.float())
    if "throttle" in model.targets and throttle is not None:
        value = value + throttle_weight * reg(outputs[:, 1], throttle.float())
    return value


def _autocast(device: torch.device, amp_dtype: torch.dtype | None) -> Any:
    """Autocast to ``amp_dtype`` on ``device`` (CUDA, or bf16 on the CPU); None: fp32."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


@torch.no_grad()
def predict_frames(
    model: SteeringNet,
    frames: FrameSet,
    indices: torch.Tensor | None = None,
    *,
    batch_size: int = 512,
    amp_dtype: torch.dtype | None = None,
    dist: Any = None,
) -> torch.Tensor:
    """Raw model outputs (float32, CPU) for ``frames`` (all, or ``indices``), in eval mode.

    ``dist`` (a :class:`training.distributed.DistContext` under torchrun): each process
    predicts its slice of the frames and every process gets all the outputs.
    """
    idx = torch.arange(len(frames)) if indices is None else indices
    if dist is not None and dist.enabled:
        lo, hi = dist.chunk(len(idx))
        own = predict_frames(model, frames, idx[lo:hi], batch_size=batch_size, amp_dtype=amp_dtype)
        return dist.gather_rows(own, len(idx))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    outs = []
    try:
        for chunk in idx.split(batch_size):
            x8, _, _ = frames.batch(chunk, device)
            with _autocast(device, amp_dtype):
                out = model(preprocess(x8, model.input_size))
            outs.append(out.float().cpu())
    finally:
        model.train(was_training)
    if not outs:
        return torch.empty(0, model.num_outputs)
    return torch.cat(outs)


def evaluate_frames(
    model: SteeringNet,
    frames: FrameSet,
    indices: torch.Tensor | None = None,
    *,
    loss_kwargs: dict[str, Any] | None = None,
    report: bool = False,
    flip_frames: int = 0,
    batch_size: int = 512,
    amp_dtype: torch.dtype | None = None,
    dist: Any = None,
) -> dict[str, Any]:
    """Loss and steering metrics of ``model`` on ``frames`` (eval mode, no augmentation).

    Keys: ``n``, ``loss``, ``mae``, ``mse``, ``rmse``, ``mean_error``, ``max_abs_error``;
    classifiers add ``macro_f1``, ``accuracy``, ``mae_expected`` (steering from the softmax
    mean) and with ``report=True`` the per-class table ``classes``; models predicting
    throttle add ``throttle_mae``; ``flip_frames > 0`` adds ``flip_consistency`` on up to
    that many evenly spaced frames.

    ``dist`` (under torchrun): the processes share the work and every one returns the same
    metrics, computed from the same gathered outputs.
    """
    idx = torch.arange(len(frames)) if indices is None else indices
    out = predict_frames(model, frames, idx, batch_size=batch_size, amp_dtype=amp_dtype, dist=dist)
    steering = frames.steering.index_select(0, idx.to(frames.steering.device)).float().cpu()
    throttle = frames.throttle.index_select(0, idx.to(frames.throttle.device)).float().cpu()
    cpu_model_view = _OutputView(model)
    res: dict[str, Any] = {}
    if len(idx):
        res["loss"] = float(
            compute_loss(cpu_model_view, out, steering, throttle, **(loss_kwargs or {}))  # type: ignore[arg-type]
        )
    else:
        res["loss"] = float("nan")
    pred = decode_steering(cpu_model_view, out, "argmax") if len(idx) else torch.empty(0)  # type: ignore[arg-type]
    res.update(regression_metrics(pred.numpy(), steering.numpy()))
    if model.output_kind == "classes":
        k = model.num_outputs
        cv = model.class_values.cpu()
        y_true = steering_to_class(steering, cv).numpy()
        y_pred = out.argmax(dim=1).numpy() if len(idx) else np.empty(0, dtype=np.int64)
        rep = classification_report(y_true, y_pred, k, cv.tolist())
        res["macro_f1"] = rep["macro_f1"]
        res["accuracy"] = rep["accuracy"]
        if len(idx):
            expected = decode_steering(cpu_model_view, out, "expected")  # type: ignore[arg-type]
            res["mae_expected"] = float((expected - steering).abs().mean())
        if report:
            res["classes"] = rep
    if model.output_kind == "regression" and "throttle" in model.targets and len(idx):
        res["throttle_mae"] = float((out[:, 1] - throttle).abs().mean())
    if flip_frames > 0 and len(idx):
        m = min(flip_frames, len(idx))
        sel = idx[torch.linspace(0, len(idx) - 1, m).round().long()]
        device = next(model.parameters()).device
        if dist is not None and dist.enabled:
            lo, hi = dist.chunk(m)
            own = 0.0
            if hi > lo:
                images, _, _ = frames.batch(sel[lo:hi], device)
                own = flip_consistency(model, images, batch_size=batch_size) * (hi - lo)
            res["flip_consistency"] = dist.sum_values(own)[0] / m
        else:
            images, _, _ = frames.batch(sel, device)
            res["flip_consistency"] = flip_consistency(model, images, batch_size=batch_size)
    return res


class _OutputView:
    """The output description of a model with its class values on the CPU."""

    def __init__(self, model: SteeringNet) -> None:
        self.output_kind = model.output_kind
        self.targets = model.targets
        self.class_values = None if model.class_values is None else model.class_values.cpu()


def evaluate_offline(
    checkpoint: str | Path,
    dataset: Any,
    split: str = "test",
    *,
    device: str = "cpu",
    batch_size: int = 256,
    flip_frames: int = 1000,
    progress: bool = False,
    verify: bool = True,
) -> dict[str, Any]:
    """Offline metrics of a checkpoint on ``dataset`` (a path or ``sim.dataset.Dataset``).

    Each episode file's sha256 is checked while loading unless ``verify=False``: a damaged
    file is a ``sim.dataset.DatasetError`` (a ``ValueError``) naming it.

    ``split`` is ``"train"``, ``"dev"`` or ``"test"`` (the episodes the checkpoint's run put
    there, looked up by key in ``dataset``) or ``"all"`` (every episode of ``dataset``).
    Returns ``n``, ``mae``, ``mse``, ``rmse``, ``mean_error``, ``max_abs_error``,
    ``flip_consistency``; classifiers add ``macro_f1``, ``accuracy``, ``mae_expected`` and
    ``classes`` (per-class precision/recall/F1 and support); plus ``checkpoint_sha256``,
    ``split``, ``episodes``.
    """
    if split not in (*SPLITS, "all"):
        raise ValueError(f"split must be one of {(*SPLITS, 'all')}, got {split!r}")
    model, record = load_model(checkpoint, device)
    ds = open_dataset(dataset) if isinstance(dataset, (str, Path)) else dataset
    if split == "all":
        episodes = list(range(len(ds.episodes)))
    else:
        keys = (record.get("split") or {}).get(split)
        if keys is None:
            raise ValueError(f"{checkpoint}: the checkpoint records no {split!r} split")
        index = {rec["key"]: i for i, rec in enumerate(ds.episodes)}
        missing = [k for k in keys if k not in index]
        if missing:
            raise ValueError(
                f"{ds.root}: lacks {len(missing)} episodes of the checkpoint's {split} split "
                f"(e.g. {missing[0]!r}); evaluate with split='all' on other data"
            )
        episodes = sorted(index[k] for k in keys)
    frames = load_frames(ds, episodes, progress=progress, desc=f"load {split}", verify=verify)
    res = evaluate_frames(
        model, frames, batch_size=batch_size, report=True, flip_frames=flip_frames
    )
    res.pop("loss", None)
    res.update(
        {
            "split": split,
            "episodes": len(episodes),
            "checkpoint_sha256": record.get("weights_sha256"),
            "arch": record.get("arch"),
        }
    )
    return res


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m training.evaluate", description="Offline metrics of a checkpoint."
    )
    ap.add_argument("checkpoint", help="run directory, checkpoint .json or .safetensors")
    ap.add_argument("--data", required=True, help="dataset directory")
    ap.add_argument(
        "--split",
        default="test",
        choices=[*SPLITS, "all"],
        help="the run's split to score (default: %(default)s)",
    )
    ap.add_argument(
        "--device", default="cpu", help="torch device, e.g. cpu or cuda (default: %(default)s)"
    )
    ap.add_argument("--json", action="store_true", help="print JSON")
    ap.add_argument(
        "--no-verify",
        action="store_true",
        help="do not check the episode files' sha256 while loading (default: checked); the "
        "risk: a corrupted file is then scored on wrong labels or images without any error",
    )
    args = ap.parse_args(argv)
    try:
        res = evaluate_offline(
            args.checkpoint, args.data, args.split, device=args.device, verify=not args.no_verify
        )
    except (ValueError, KeyError) as e:
        return fail(e)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(
        f"{res['split']}: {res['n']} frames, steering MAE {res['mae']:.4f}, MSE {res['mse']:.5f}, "
        f"flip consistency {res.get('flip_consistency', float('nan')):.4f}"
    )
    if "classes" in res:
        print(format_class_table(res["classes"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
