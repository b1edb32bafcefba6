"""``python -m training.train``: behaviour cloning with the basic recipe, on CPU or GPU.

    python -m training.train --data DATA --out RUN_DIR [--model compact] [--epochs 30]
                             [--device auto|cpu|cuda] [--seed 0] [--resume] ...

One loop you can read top to bottom (:func:`run`): seed; load the data (split by episode,
stratified; distribution check); build model and AdamW; then per epoch: train on augmented
batches, evaluate train (a fixed subset) and dev in eval mode, write metrics, keep the best
checkpoint (early stopping on the dev metric) and the last one with the full training state;
finally restore the best weights, evaluate on test, diagnose bias/variance.

RUN_DIR receives: ``config.json`` (resolved config: ``--config RUN_DIR/config.json``
reproduces the run), ``split.json``, ``metrics.csv``, ``curves.png``, ``tb/``
(TensorBoard), ``best.safetensors`` + ``best.json``, ``last.safetensors`` + ``last.json``,
``last-state.safetensors`` (+ readable ``last-state.json``), ``test_metrics.json``,
``diagnosis.json``.

Exit status: 0 done; 1 training diverged (NaN/inf loss: the best checkpoint is left as it
was); 2 bad input (one ``error:`` line, nothing written).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.cnn import write_checkpoint
from agents.models import IMAGENET_MEAN, IMAGENET_STD, SteeringNet, build_model, preprocess
from training.augment import augment_batch
from training.config import TrainConfig, parse_size
from training.data import (
    SPLITS,
    FrameSet,
    default_ratios,
    distribution_check,
    index_batches,
    load_frames,
    split_episodes,
)
from training.diagnose import diagnose, estimate_base_error, format_diagnosis
from training.evaluate import _autocast, compute_loss, evaluate_frames
from training.metrics import format_class_table
from training.state import (
    EarlyStopping,
    load_train_state,
    restore_optimizer,
    save_train_state,
    set_rng_state,
    state_part,
)

__all__ = ["RunError", "TrainingDiverged", "build_parser", "main", "prepare_data", "run"]

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
)


class RunError(ValueError):
    """Bad input (data, flags, run directory): reported as one ``error:`` line, exit 2."""


class TrainingDiverged(RuntimeError):
    """The loss or a dev metric became NaN/inf; the best checkpoint was left untouched."""


# --------------------------------------------------------------------------- helpers
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RunError(f"--device {name}: CUDA is not available (torch {torch.__version__})")
    return dev


def _seed_for(seed: int, epoch: int, stream: int) -> int:
    """Independent, reproducible seed per (run seed, epoch, stream)."""
    return (seed * 1_000_003 + epoch * 7_919 + stream * 104_729) % (2**63 - 1)


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (legacy global RNG, for third-party code)
    torch.manual_seed(seed)


@contextlib.contextmanager
def _runtime(cfg: TrainConfig, device: torch.device):
    """Threads and deterministic kernels for the run; the previous settings come back after."""
    threads = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    try:
        if cfg.threads is not None:
            torch.set_num_threads(cfg.threads)
        if cfg.deterministic:
            if device.type == "cuda":
                # cuBLAS needs this to be deterministic; it must be set before its first use.
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
                torch.backends.cudnn.benchmark = False
            torch.use_deterministic_algorithms(True, warn_only=True)
        elif device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det)


def _amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if not cfg.amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _finite_or_none(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _clean(obj: Any) -> Any:
    """JSON-safe copy: non-finite floats become null."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        obj = obj.item()
    return _finite_or_none(obj)


# --------------------------------------------------------------------------- data
@dataclass
class PreparedData:
    """Everything loaded from the dataset for one run (reusable across search trials)."""

    root: str
    info: dict[str, Any]
    records: list[dict[str, Any]]  # all manifest records (indices below point here)
    fingerprint: str
    split: dict[str, list[int]]  # episode indices per split
    ratios: tuple[float, float, float]  # the frame ratios the split aimed at
    stride: int
    train: FrameSet
    dev: FrameSet
    check: dict[str, Any]
    warnings: list[str]

    def keys(self, split: str) -> list[str]:
        return [self.records[i]["key"] for i in self.split[split]]

    @property
    def image_size(self) -> tuple[int, int]:
        return (int(self.train.images.shape[1]), int(self.train.images.shape[2]))


def _open(cfg: TrainConfig) -> Any:
    from sim.dataset import DatasetError, open_dataset

    root = Path(cfg.data)
    if not root.is_dir():
        raise RunError(f"--data {root}: no such directory")
    try:
        return open_dataset(root)
    except DatasetError as e:
        raise RunError(str(e)) from None


def prepare_data(cfg: TrainConfig, split_keys: dict[str, list[str]] | None = None) -> PreparedData:
    """Open, filter, split (or re-use ``split_keys``), check and load train/dev frames."""
    ds = _open(cfg)
    from sim.dataset import DatasetError, dataset_fingerprint

    if len(ds.episodes) == 0 or len(ds) == 0:
        raise RunError(f"{ds.root}: the dataset has no frames")
    keep = [
        i
        for i, rec in enumerate(ds.episodes)
        if rec["direction"] in cfg.directions and rec["frames"] > 0
    ]
    if not keep:
        raise RunError(
            f"{ds.root}: no episodes driven {'/'.join(cfg.directions)} "
            f"({len(ds.episodes)} episodes in other directions)"
        )
    if split_keys is not None:
        index = {rec["key"]: i for i, rec in enumerate(ds.episodes)}
        missing = [k for s in SPLITS for k in split_keys.get(s, []) if k not in index]
        if missing:
            raise RunError(f"{ds.root}: lacks episode {missing[0]!r} of the saved split")
        split = {s: sorted(index[k] for k in split_keys.get(s, [])) for s in SPLITS}
    else:
        sub = split_episodes([ds.episodes[i] for i in keep], cfg.split_ratios, cfg.split_seed)
        split = {s: sorted(keep[j] for j in sub[s]) for s in SPLITS}
    if not split["train"] or not split["dev"]:
        raise RunError(
            f"{ds.root}: {len(keep)} usable episodes cannot give both a train and a dev split "
            "(need at least 2 episodes; early stopping needs dev data)"
        )
    total = sum(ds.episodes[i]["frames"] for s in SPLITS for i in split[s])
    stride = 1 if cfg.max_frames is None else max(1, math.ceil(total / cfg.max_frames))

    # Distribution check on labels only (cheap: images are not read).
    steer, dirs, tracks = {}, {}, {}
    try:
        for s in SPLITS:
            a = ds.load_arrays(fields=["steering"], episodes=split[s]) if split[s] else {
                "steering": np.empty(0, np.float32), "episode": np.empty(0, np.int32)}  # fmt: skip
            steer[s] = a["steering"][::stride] if stride > 1 else a["steering"]
            ep = a["episode"][::stride] if stride > 1 else a["episode"]
            dirs[s] = np.array([ds.episodes[i]["direction"] for i in ep], dtype=object)
            tracks[s] = np.array([ds.episodes[i]["track_id"] for i in ep], dtype=object)
        check, warnings = distribution_check(steer, dirs, tracks)
        if not split["test"]:
            warnings.append("no test episodes: the final test evaluation is skipped")
        train = load_frames(
            ds, split["train"], stride=stride, progress=cfg.progress, desc="load train"
        )
        dev = load_frames(ds, split["dev"], stride=stride, progress=cfg.progress, desc="load dev")
    except DatasetError as e:
        raise RunError(str(e)) from None
    if len(train) < 2:
        raise RunError(f"{ds.root}: only {len(train)} training frames")
    for name, fs in (("train", train), ("dev", dev)):
        if not (torch.isfinite(fs.steering).all() and torch.isfinite(fs.throttle).all()):
            raise RunError(f"{ds.root}: non-finite labels in the {name} split")
    return PreparedData(
        root=str(ds.root),
        info=dict(ds.info),
        records=[dict(r) for r in ds.episodes],
        fingerprint=dataset_fingerprint(ds),
        split=split,
        ratios=cfg.split_ratios or default_ratios(sum(ds.episodes[i]["frames"] for i in keep)),
        stride=stride,
        train=train,
        dev=dev,
        check=check,
        warnings=warnings,
    )


def _channel_stats(frames: FrameSet, seed: int, n: int = 2000) -> tuple[list[float], list[float]]:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(frames), generator=g)[:n]
    x = frames.images.index_select(0, idx.to(frames.images.device)).to("cpu").double() / 255.0
    mean = x.mean(dim=(0, 1, 2))
    std = x.std(dim=(0, 1, 2)).clamp_min(1e-3)
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


# --------------------------------------------------------------------------- outputs
def _write_metrics_csv(path: Path, history: list[dict[str, Any]]) -> None:
    from sim.io_utils import atomic_write_text

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
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from sim.io_utils import atomic_write_bytes

    ep = [r["epoch"] for r in history]

    def col(k: str) -> list[float]:
        return [float("nan") if r.get(k) is None else r[k] for r in history]

    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(ep, col("train_loss"), "o-", label="train loss (augmented, dropout on)")
    ax1.plot(ep, col("dev_loss"), "o-", label="dev loss")
    ax1.set_title("loss")
    ax2.plot(ep, col("train_mae"), "o-", label="train MAE (eval mode)")
    ax2.plot(ep, col("dev_mae"), "o-", label="dev MAE")
    ax2.set_title("steering MAE")
    for ax in (ax1, ax2):
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


class _Board:
    """TensorBoard scalars (no-op when disabled or unavailable)."""

    def __init__(self, run_dir: Path, enabled: bool, purge_step: int | None) -> None:
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(log_dir=str(run_dir / "tb"), purge_step=purge_step)
            except ImportError as e:  # pragma: no cover
                logger.warning("TensorBoard disabled: %s", e)

    def log(self, row: dict[str, Any]) -> None:
        if self.writer is None:
            return
        e = row["epoch"]
        for k in METRIC_COLUMNS[1:-1]:
            v = row.get(k)
            if v is not None:
                group, _, name = k.partition("_")
                self.writer.add_scalar(f"{name}/{group}" if group in ("train", "dev") else k, v, e)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# --------------------------------------------------------------------------- training
def _make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    # Decoupled weight decay on conv/dense weights only; biases and batch-norm affine
    # parameters are not decayed (decaying them only fights the normalisation).
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr)


def _loss_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    return {
        "loss": cfg.loss,
        "huber_delta": cfg.huber_delta,
        "throttle_weight": cfg.throttle_weight,
        "label_smoothing": cfg.label_smoothing,
    }


def train_one_epoch(
    model: SteeringNet,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    frames: FrameSet,
    cfg: TrainConfig,
    device: torch.device,
    epoch: int,
    amp_dtype: torch.dtype | None,
) -> tuple[float, int]:
    """One pass over the training frames; returns ``(mean loss, images seen)``.

    Batch order and augmentation draws come from a generator seeded by (seed, epoch), and
    the global torch RNG (dropout) is re-seeded per epoch, so an epoch is reproducible on
    its own: the property that makes ``--resume`` match an uninterrupted run.
    """
    from tqdm import tqdm

    torch.manual_seed(_seed_for(cfg.seed, epoch, 0))
    g = torch.Generator().manual_seed(_seed_for(cfg.seed, epoch, 1))
    batches = index_batches(len(frames), cfg.batch_size, generator=g, drop_last=True)
    aug = cfg.augment
    model.train()
    total = torch.zeros((), device=device)
    seen = 0
    check_every = 1 if device.type == "cpu" else 20  # a .item() per step would stall a GPU
    bar = tqdm(
        batches,
        desc=f"epoch {epoch}/{cfg.epochs}",
        unit="batch",
        leave=False,
        disable=not cfg.progress,
    )
    for step, idx in enumerate(bar):
        x8, steering, throttle = frames.batch(idx, device)
        x = preprocess(x8, model.input_size)
        if aug.enabled:
            x, steering, _ = augment_batch(x, steering, aug, g)
        with _autocast(device, amp_dtype):
            out = model(x)
        loss = compute_loss(model, out, steering, throttle, **_loss_kwargs(cfg))
        total += loss.detach() * len(idx)
        seen += len(idx)
        if step % check_every == 0 or step == len(batches) - 1:
            value = float(total) / seen
            if not math.isfinite(float(loss.detach())) or not math.isfinite(value):
                raise TrainingDiverged(
                    f"loss became {float(loss.detach())} at epoch {epoch}, step {step + 1} "
                    f"(lr {cfg.lr:g}); the best checkpoint was left untouched"
                )
            bar.set_postfix(loss=f"{value:.4f}", refresh=False)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip is not None:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
    bar.close()
    return float(total) / max(seen, 1), seen


def _eval_row(
    model: SteeringNet,
    data: PreparedData,
    train_eval_idx: torch.Tensor,
    cfg: TrainConfig,
    amp_dtype: torch.dtype | None,
) -> dict[str, Any]:
    kw = {
        "batch_size": cfg.eval_batch_size,
        "amp_dtype": amp_dtype,
        "loss_kwargs": _loss_kwargs(cfg),
    }
    tr = evaluate_frames(model, data.train, train_eval_idx, **kw)
    dv = evaluate_frames(model, data.dev, flip_frames=cfg.flip_eval_frames, **kw)
    return {
        "train_mae": tr["mae"],
        "dev_loss": dv["loss"],
        "dev_mae": dv["mae"],
        "dev_mse": dv["mse"],
        "dev_macro_f1": dv.get("macro_f1"),
        "dev_accuracy": dv.get("accuracy"),
        "flip_consistency": dv.get("flip_consistency"),
        "train_macro_f1": tr.get("macro_f1"),
    }


def run(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    data: PreparedData | None = None,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train according to ``cfg``; returns a summary (best/test metrics, diagnosis, paths).

    ``data``: already prepared data (hyperparameter search reuses it across trials).
    ``on_epoch_end(epoch, row)`` is called after each epoch's checkpoints are written (the
    search reports to Optuna there and may raise ``optuna.TrialPruned``).
    Raises :class:`RunError` for bad input and :class:`TrainingDiverged` on NaN/inf.
    """
    from sim.io_utils import atomic_write_json

    if not cfg.data:
        raise RunError("--data is required")
    if not cfg.out:
        raise RunError("--out is required")
    run_dir = Path(cfg.out)
    device = resolve_device(cfg.device)
    amp_dtype = _amp_dtype(cfg, device)
    state_record: dict[str, Any] | None = None
    state_tensors: dict[str, torch.Tensor] | None = None
    if resume:
        try:
            state_record, state_tensors = load_train_state(run_dir)
            saved_split = json.loads((run_dir / "split.json").read_text(encoding="utf-8"))[
                "episodes"
            ]
        except (OSError, ValueError, KeyError) as e:
            raise RunError(f"cannot resume from {run_dir}: {e}") from None
    else:
        if run_dir.exists() and not run_dir.is_dir():
            raise RunError(f"--out {run_dir}: exists and is not a directory")
        if run_dir.is_dir() and any(run_dir.iterdir()):
            raise RunError(
                f"--out {run_dir}: not empty (use --resume to continue that run, or a new directory)"
            )
        saved_split = None

    with _runtime(cfg, device):
        seed_everything(cfg.seed)
        if data is None:
            data = prepare_data(cfg, saved_split)
        if (
            resume
            and state_record is not None
            and state_record.get("dataset_fingerprint") != data.fingerprint
        ):
            raise RunError(
                f"cannot resume: {cfg.data} is not the dataset this run was trained on (fingerprint differs)"
            )
        for w in data.warnings:
            logger.warning("distribution check: %s", w)

        # ------------------------------------------------------------ model and optimiser
        args = cfg.model_args
        if cfg.normalize == "data":
            args["mean"], args["std"] = _channel_stats(data.train, cfg.seed)
        else:
            args["mean"], args["std"] = list(IMAGENET_MEAN), list(IMAGENET_STD)
        if state_record is not None:
            args = dict(state_record["model_args"])
        torch.manual_seed(cfg.seed)
        try:
            model = build_model(cfg.model, **args).to(device)
        except ValueError as e:
            raise RunError(str(e)) from None
        optimizer = _make_optimizer(model, cfg)
        scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
        stopper = EarlyStopping(cfg.stop_mode, cfg.patience, cfg.min_delta)
        history: list[dict[str, Any]] = []
        best_state: dict[str, torch.Tensor] | None = None
        start_epoch = 0
        if state_record is not None and state_tensors is not None:
            model.load_state_dict(state_part(state_tensors, "model"))
            best_state = state_part(state_tensors, "best")
            restore_optimizer(optimizer, state_record, state_tensors)
            if state_record.get("scaler") and scaler.is_enabled():
                scaler.load_state_dict(state_record["scaler"])
            set_rng_state(state_tensors, state_record["rng"])
            stopper.load_state_dict(state_record["early_stopping"])
            history = list(state_record["history"])
            start_epoch = int(state_record["epoch"])
            logger.info("resuming %s after epoch %d", run_dir, start_epoch)

        base_value, base_note = (
            (cfg.base_error, "given by the user")
            if cfg.base_error is not None
            else estimate_base_error([data.records[i] for i in data.split["train"]])
        )
        g = torch.Generator().manual_seed(_seed_for(cfg.seed, 0, 2))
        n_eval = min(cfg.train_eval_frames, len(data.train))
        train_eval_idx = torch.randperm(len(data.train), generator=g)[:n_eval].sort().values

        # ------------------------------------------------------------ run directory
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / "config.json", cfg.to_dict())
        split_doc = {
            "dataset": data.root,
            "dataset_fingerprint": data.fingerprint,
            "ratios": list(data.ratios),
            "ratios_from": "--split"
            if cfg.split_ratios
            else "data size (training.data.default_ratios)",
            "frame_stride": data.stride,
            "episodes": {s: data.keys(s) for s in SPLITS},
            "frames": {s: data.check[s]["frames"] for s in SPLITS},
            "distribution": data.check,
            "warnings": data.warnings,
        }
        atomic_write_json(run_dir / "split.json", _clean(split_doc))
        common = {
            "config": cfg.to_dict(),
            "dataset": {
                "root": data.root,
                "fingerprint": data.fingerprint,
                "image_size": list(data.image_size),
                "frame_stride": data.stride,
                "info": data.info,
            },
            "split": {s: data.keys(s) for s in SPLITS},
            "base_error": {"value": base_value, "note": base_note},
            "stop_metric": cfg.resolved_stop_metric,
        }
        logger.info(
            "%s: %s on %s, %d train / %d dev frames (stride %d), %d parameters",
            run_dir, cfg.model, device, len(data.train), len(data.dev), data.stride,
            sum(p.numel() for p in model.parameters()),
        )  # fmt: skip
        board = _Board(run_dir, cfg.tensorboard, start_epoch + 1 if resume else None)
        data.train.to(device)
        data.dev.to(device)

        # ------------------------------------------------------------ epochs
        try:
            epoch = start_epoch
            while epoch < cfg.epochs and not stopper.should_stop:
                epoch += 1
                t0 = time.perf_counter()
                train_loss, seen = train_one_epoch(
                    model, optimizer, scaler, data.train, cfg, device, epoch, amp_dtype
                )
                t_train = time.perf_counter() - t0
                row: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss}
                row.update(_eval_row(model, data, train_eval_idx, cfg, amp_dtype))
                metric = row[cfg.resolved_stop_metric]
                if metric is None or not math.isfinite(metric):
                    raise TrainingDiverged(
                        f"{cfg.resolved_stop_metric} became {metric} at epoch {epoch}; "
                        "the best checkpoint was left untouched"
                    )
                improved = stopper.update(metric, epoch)
                lr_used = optimizer.param_groups[0]["lr"]
                if (
                    not improved
                    and cfg.lr_decay_patience
                    and stopper.bad_epochs % cfg.lr_decay_patience == 0
                    and not stopper.should_stop
                ):
                    # Plateau: a smaller step often finds the lower dev error that the
                    # larger one kept jumping over (restored from the optimizer on resume).
                    for group in optimizer.param_groups:
                        group["lr"] *= cfg.lr_decay_factor
                    logger.info(
                        "no improvement for %d epochs: lr %g -> %g",
                        stopper.bad_epochs,
                        lr_used,
                        optimizer.param_groups[0]["lr"],
                    )
                row.update(
                    lr=lr_used,
                    epoch_seconds=time.perf_counter() - t0,
                    images_per_second=seen / t_train if t_train > 0 else None,
                    is_best=int(improved),
                )
                history.append(_clean(row))
                if improved:
                    best_state = {
                        k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()
                    }
                    write_checkpoint(
                        run_dir,
                        "best",
                        model,
                        {**common, "epoch": epoch, "metrics": history[-1], "created": _now()},
                    )
                write_checkpoint(
                    run_dir,
                    "last",
                    model,
                    {**common, "epoch": epoch, "metrics": history[-1], "created": _now()},
                )
                save_train_state(
                    run_dir,
                    model=model,
                    best_state=best_state,
                    optimizer=optimizer,
                    scaler=scaler,
                    info={
                        "epoch": epoch,
                        "early_stopping": stopper.state_dict(),
                        "history": history,
                        "model_args": model.args,
                        "dataset_fingerprint": data.fingerprint,
                        "created": _now(),
                    },
                )
                _write_metrics_csv(run_dir / "metrics.csv", history)
                plot_curves(
                    run_dir / "curves.png", history, stopper.best_epoch, cfg.resolved_stop_metric
                )
                board.log(history[-1])
                f1 = (
                    f" dev F1 {row['dev_macro_f1']:.3f}"
                    if row.get("dev_macro_f1") is not None
                    else ""
                )
                logger.info(
                    "epoch %3d  train loss %.5f  train MAE %.4f  dev loss %.5f  dev MAE %.4f%s  flip %.4f  %.0f img/s%s",
                    epoch, train_loss, row["train_mae"], row["dev_loss"], row["dev_mae"], f1,
                    row.get("flip_consistency") or float("nan"), row["images_per_second"] or 0.0,
                    "  *best*" if improved else "",
                )  # fmt: skip
                if on_epoch_end is not None:
                    on_epoch_end(epoch, history[-1])
        finally:
            board.close()

        if stopper.should_stop:
            reason = f"early stopping: no {cfg.resolved_stop_metric} improvement for {cfg.patience} epochs"
        else:
            reason = f"epoch limit ({cfg.epochs}) reached"
        logger.info(
            "%s; best epoch %d (%s %.4f)",
            reason,
            stopper.best_epoch,
            cfg.resolved_stop_metric,
            stopper.best or float("nan"),
        )
        if best_state is None:  # pragma: no cover - every finished epoch is finite
            raise TrainingDiverged("no finite dev metric in any epoch")
        model.load_state_dict(best_state)
        best_row = next(r for r in history if r["epoch"] == stopper.best_epoch)

        # ------------------------------------------------------------ test and diagnosis
        test_metrics: dict[str, Any] | None = None
        if data.split["test"]:
            ds = _open(cfg)
            test = load_frames(
                ds, data.split["test"], stride=data.stride, progress=cfg.progress, desc="load test"
            )
            test_metrics = evaluate_frames(
                model, test, batch_size=cfg.eval_batch_size, amp_dtype=amp_dtype,
                loss_kwargs=_loss_kwargs(cfg), report=True, flip_frames=cfg.flip_eval_frames,
            )  # fmt: skip
            test_metrics = _clean(
                {
                    "split": "test",
                    "episodes": len(data.split["test"]),
                    "epoch": stopper.best_epoch,
                    **test_metrics,
                }
            )
            atomic_write_json(run_dir / "test_metrics.json", test_metrics)
            del test
        diag = diagnose(best_row["train_mae"], best_row["dev_mae"], base_value, base_note=base_note)
        atomic_write_json(run_dir / "diagnosis.json", _clean(diag))
        best_json = run_dir / "best.json"
        record = json.loads(best_json.read_text(encoding="utf-8"))
        record.update(
            {
                "test_metrics": None
                if test_metrics is None
                else {k: v for k, v in test_metrics.items() if k != "classes"},
                "diagnosis": _clean(diag),
                "stopped": reason,
                "epochs_run": history[-1]["epoch"] if history else 0,
            }
        )
        atomic_write_json(best_json, _clean(record))
        plot_curves(run_dir / "curves.png", history, stopper.best_epoch, cfg.resolved_stop_metric)
    return {
        "run_dir": str(run_dir),
        "best_epoch": stopper.best_epoch,
        "epochs_run": history[-1]["epoch"] if history else 0,
        "stopped_early": stopper.should_stop,
        "reason": reason,
        "stop_metric": cfg.resolved_stop_metric,
        "best_metric": stopper.best,
        "best": best_row,
        "test": test_metrics,
        "diagnosis": diag,
        "history": history,
    }


# --------------------------------------------------------------------------- CLI
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one clear line, exit 2
        self.exit(2, f"error: {message}\n")


def _type(fn: Callable[[str], Any], what: str) -> Callable[[str], Any]:
    def conv(text: str) -> Any:
        try:
            return fn(text)
        except (ValueError, TypeError):
            raise argparse.ArgumentTypeError(f"{what}, got {text!r}") from None

    conv.__name__ = what
    return conv


def _ratios(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def _directions(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


#: CLI flag -> (config field, type, help). Flags left out keep the config's value.
_FLAGS: dict[str, tuple[str, Any, str]] = {
    "--model": ("model", str, "pilotnet | compact (default) | compact_cls | resnet_cls"),
    "--epochs": ("epochs", _type(int, "an integer"), "maximum epochs (default 30)"),
    "--device": ("device", str, "auto (default) | cpu | cuda | cuda:N"),
    "--seed": ("seed", _type(int, "an integer"), "random seed (default 0)"),
    "--lr": ("lr", _type(float, "a number"), "AdamW learning rate (default 1e-3)"),
    "--weight-decay": (
        "weight_decay",
        _type(float, "a number"),
        "decoupled AdamW weight decay lambda (default 1e-2)",
    ),
    "--dropout": (
        "dropout",
        _type(float, "a number"),
        "dropout rate before dense layers (default 0.2)",
    ),
    "--batch-size": ("batch_size", _type(int, "an integer"), "batch size (default 128)"),
    "--lr-decay-patience": (
        "lr_decay_patience",
        _type(int, "an integer"),
        "multiply lr by 0.5 after this many epochs without dev improvement (default 2, 0 = constant)",
    ),
    "--patience": (
        "patience",
        _type(int, "an integer"),
        "early-stopping patience in epochs (default 5)",
    ),
    "--min-delta": (
        "min_delta",
        _type(float, "a number"),
        "early-stopping min improvement (default 1e-4)",
    ),
    "--stop-metric": ("stop_metric", str, "auto | dev_mae | dev_mse | dev_loss | dev_macro_f1"),
    "--directions": (
        "directions",
        _type(_directions, "comma-separated ccw/cw"),
        "keep episodes driven these ways, e.g. ccw (default ccw,cw)",
    ),
    "--max-frames": (
        "max_frames",
        _type(int, "an integer"),
        "use at most this many frames (every k-th)",
    ),
    "--split": (
        "split_ratios",
        _type(_ratios, "train,dev,test fractions"),
        "split ratios, e.g. 0.8,0.1,0.1 (default: by data size)",
    ),
    "--base-error": (
        "base_error",
        _type(float, "a number"),
        "irreducible steering MAE for the diagnosis",
    ),
    "--width": (
        "width",
        _type(float, "a number"),
        "channel multiplier (default: the architecture's, 1; resnet_cls 0.5)",
    ),
    "--depth": ("depth", _type(int, "an integer"), "network depth (architecture-specific)"),
    "--input-size": ("input_size", _type(parse_size, "HxW"), "model input size HxW"),
    "--num-classes": (
        "num_classes",
        _type(int, "an integer"),
        "steering bins of classifiers (default 15)",
    ),
    "--loss": ("loss", str, "regression loss: mse (default) | huber"),
    "--jitter": (
        "jitter",
        _type(float, "a number"),
        "brightness/contrast jitter (default 0.2, 0 = off)",
    ),
    "--shadow": ("shadow", _type(float, "a number"), "random shadow probability (default 0.3)"),
    "--shift": (
        "shift",
        _type(float, "a number"),
        "lateral shift augmentation, fraction of width (default 0 = off)",
    ),
    "--threads": ("threads", _type(int, "an integer"), "CPU threads for torch"),
}
_SWITCHES: dict[str, tuple[str, bool, str]] = {
    "--no-flip": ("flip", False, "no horizontal-flip augmentation"),
    "--no-batch-norm": ("batch_norm", False, "no batch norm"),
    "--predict-throttle": ("predict_throttle", True, "regression models also predict throttle"),
    "--no-amp": ("amp", False, "no mixed precision on CUDA"),
    "--no-progress": ("progress", False, "no progress bars"),
    "--no-tensorboard": ("tensorboard", False, "no TensorBoard events"),
}
#: Fields that may change when resuming (they do not affect the weights).
_RESUME_FIELDS = {"epochs", "device", "threads", "progress", "tensorboard", "data"}


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(
        prog="python -m training.train",
        description="Behaviour cloning: turn a recorded dataset into a driving pilot.",
    )
    ap.add_argument("--data", default=None, help="dataset directory (python -m sim.record)")
    ap.add_argument("--out", default=None, help="run directory (must be new or empty)")
    ap.add_argument(
        "--config",
        default=None,
        help="config JSON (e.g. RUN_DIR/config.json or a search's best_config.json); flags override it",
    )
    ap.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    for flag, (dest, typ, help_) in _FLAGS.items():
        ap.add_argument(flag, dest=dest, type=typ, default=None, help=help_)
    for flag, (dest, value, help_) in _SWITCHES.items():
        ap.add_argument(
            flag, dest=dest, action="store_const", const=value, default=None, help=help_
        )
    return ap


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    given = {
        f.name: getattr(args, f.name)
        for f in fields(TrainConfig)
        if getattr(args, f.name, None) is not None
    }
    if args.resume:
        if not args.out:
            raise RunError("--resume needs --out RUN_DIR")
        path = Path(args.out) / "config.json"
        if not path.is_file():
            raise RunError(f"cannot resume: {path} not found")
        base = TrainConfig.from_json(path)
        changed = sorted(
            k
            for k, v in given.items()
            if k not in _RESUME_FIELDS | {"out"} and getattr(base, k) != v
        )
        if changed:
            raise RunError(
                f"cannot change {', '.join(changed)} when resuming (only {', '.join(sorted(_RESUME_FIELDS))})"
            )
        return replace(base, **given)
    if args.config:
        return TrainConfig.from_json(args.config, **given)
    return TrainConfig(**given)


def _setup_logging() -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging()
    try:
        cfg = config_from_args(args)
        summary = run(cfg, resume=args.resume)
    except (RunError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"error: training diverged: {e}", file=sys.stderr)
        return 1
    best = summary["best"]
    print(f"{summary['reason']}; best epoch {summary['best_epoch']} of {summary['epochs_run']}")
    print(f"best: train MAE {best['train_mae']:.4f}, dev MAE {best['dev_mae']:.4f}" + (
        f", dev macro F1 {best['dev_macro_f1']:.3f}" if best.get("dev_macro_f1") is not None else ""))  # fmt: skip
    test = summary["test"]
    if test is not None:
        print(
            f"test: steering MAE {test['mae']:.4f}, MSE {test['mse']:.5f}, "
            f"flip consistency {test.get('flip_consistency') or float('nan'):.4f} ({test['n']} frames)"
        )
        if "classes" in test:
            print(format_class_table(test["classes"]))
    print(format_diagnosis(summary["diagnosis"]))
    print(f"wrote {summary['run_dir']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
