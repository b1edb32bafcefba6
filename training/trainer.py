"""The epoch loop of behaviour cloning: device and runtime settings, seeds, the model and its
AdamW optimiser, one training epoch, the per-epoch evaluation, early stopping and the
learning-rate plateau decay.

Reproducibility rests on :func:`seed_for`: batch order, augmentation draws and dropout are
seeded per (run seed, epoch), so an epoch is reproducible on its own, which is what makes a
resumed run match an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from agents.base import resolve_device as _resolve_device_name
from agents.models import IMAGENET_MEAN, IMAGENET_STD, SteeringNet, build_model, preprocess
from tracks.progress import progress_bar
from training.augment import apply_augment, draw_augment
from training.config import TrainConfig
from training.data import FrameSet, index_batches
from training.distributed import DistContext, wrap_model
from training.errors import RunError, TrainingDiverged
from training.evaluate import _autocast, compute_loss, evaluate_frames
from training.hardware import autocast_dtype
from training.prepare import PreparedData, channel_stats
from training.reporting import clean
from training.state import EarlyStopping

__all__ = [
    "Trainer",
    "amp_dtype_for",
    "loss_kwargs",
    "make_optimizer",
    "model_args_for",
    "resolve_device",
    "runtime",
    "seed_everything",
    "seed_for",
    "train_one_epoch",
]

logger = logging.getLogger(__name__)

#: Seed stream of the dropout masks of process ``rank > 0`` is this plus its rank.
_DROPOUT_STREAM = 1000


# --------------------------------------------------------------------------- runtime
def resolve_device(name: str) -> torch.device:
    """The torch device for ``--device`` (:func:`agents.base.resolve_device`); bad names and
    CUDA that is not there are a :class:`RunError`."""
    try:
        return torch.device(_resolve_device_name(name))
    except ValueError as e:
        raise RunError(str(e)) from None


def seed_for(seed: int, epoch: int, stream: int) -> int:
    """Independent, reproducible seed per (run seed, epoch, stream)."""
    return (seed * 1_000_003 + epoch * 7_919 + stream * 104_729) % (2**63 - 1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (legacy global RNG, for third-party code)
    torch.manual_seed(seed)


@contextlib.contextmanager
def runtime(cfg: TrainConfig, device: torch.device) -> Iterator[None]:
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


def amp_dtype_for(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``cfg.precision`` on ``device`` (:mod:`training.hardware`):
    ``auto`` is bf16 where supported, else fp16, on CUDA with ``amp``; None is fp32."""
    return autocast_dtype(cfg.precision, cfg.amp, device)


# --------------------------------------------------------------------------- model
def model_args_for(cfg: TrainConfig, data: PreparedData) -> dict[str, Any]:
    """``build_model`` arguments of a new run: the config's, with normalisation statistics."""
    args = cfg.model_args
    if cfg.normalize == "data":
        args["mean"], args["std"] = channel_stats(data.train, cfg.seed)
    else:
        args["mean"], args["std"] = list(IMAGENET_MEAN), list(IMAGENET_STD)
    return args


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    # Decoupled weight decay on conv/dense weights only; biases and batch-norm affine
    # parameters are not decayed (decaying them only fights the normalisation).
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr)


def loss_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """The loss settings of ``cfg`` as :func:`training.evaluate.compute_loss` takes them."""
    return {
        "loss": cfg.loss,
        "huber_delta": cfg.huber_delta,
        "throttle_weight": cfg.throttle_weight,
        "label_smoothing": cfg.label_smoothing,
    }


# --------------------------------------------------------------------------- one epoch
def train_one_epoch(
    model: SteeringNet,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    frames: FrameSet,
    cfg: TrainConfig,
    device: torch.device,
    epoch: int,
    amp_dtype: torch.dtype | None,
    *,
    dist: DistContext | None = None,
    net: torch.nn.Module | None = None,
    channels_last: bool = False,
) -> tuple[float, int]:
    """One pass over the training frames; returns ``(mean loss, images seen)``.

    Batch order and augmentation draws come from a generator seeded by (seed, epoch), and
    the global torch RNG (dropout) is re-seeded per epoch, so an epoch is reproducible on
    its own: the property that makes ``--resume`` match an uninterrupted run.

    Under torchrun (``dist``), each process trains on its shard of every global batch
    through ``net`` (the DDP wrapper of ``model``); the loss and images returned are the
    global batch's (:mod:`training.distributed`).
    """
    ctx = dist or DistContext()
    # Dropout: rank 0 keeps the single-process stream; the others get their own masks.
    torch.manual_seed(seed_for(cfg.seed, epoch, 0 if ctx.is_main else _DROPOUT_STREAM + ctx.rank))
    g = torch.Generator().manual_seed(seed_for(cfg.seed, epoch, 1))
    batches = index_batches(len(frames), cfg.batch_size, generator=g, drop_last=True)
    aug = cfg.augment
    model.train()
    total = torch.zeros((), device=device)
    seen = 0
    check_every = 1 if device.type == "cpu" else 20  # a .item() per step would stall a GPU
    bar = progress_bar(
        batches,
        desc=f"epoch {epoch}/{cfg.epochs}",
        unit="batch",
        leave=False,
        enabled=cfg.progress,
    )
    forward = net if net is not None else model
    for step, idx in enumerate(bar):
        local, pos = ctx.shard(idx)
        x8, steering, throttle = frames.batch(local, device)
        x = preprocess(x8, model.input_size)
        if aug.enabled:
            # Drawn for the whole global batch: a frame gets the draws it gets in one process.
            draws = draw_augment(len(idx), x.shape[-1], aug, g)
            x, steering, _ = apply_augment(
                x, steering, aug, draws if pos is None else draws.select(pos)
            )
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device, amp_dtype):
            out = forward(x)
        loss = compute_loss(model, out, steering, throttle, **loss_kwargs(cfg))
        total += loss.detach() * len(local)
        seen += len(local)
        if step % check_every == 0 or step == len(batches) - 1:
            value, step_loss = _running_loss(ctx, total, seen, loss)
            if not math.isfinite(step_loss) or not math.isfinite(value):
                raise TrainingDiverged(
                    f"loss became {step_loss} at epoch {epoch}, step {step + 1} "
                    f"(lr {cfg.lr:g}); the best checkpoint was left untouched"
                )
            bar.set_postfix(loss=f"{value:.4f}", refresh=False)
        if pos is not None:
            # DDP averages the processes' gradients: weighting each process's mean loss by
            # its share of the batch makes that the gradient of the global batch's mean.
            loss = loss * (len(local) * ctx.world_size / len(idx))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip is not None:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
    bar.close()
    if ctx.enabled:
        total_all, seen_all = ctx.sum_values(total, seen)
        return total_all / max(seen_all, 1), int(seen_all)
    return float(total) / max(seen, 1), seen


def _running_loss(
    ctx: DistContext, total: torch.Tensor, seen: int, loss: torch.Tensor
) -> tuple[float, float]:
    """``(mean loss so far, this step's loss)``; over every process under torchrun, so that
    all of them see a non-finite loss at the same step and stop together."""
    step = float(loss.detach())
    if not ctx.enabled:
        return float(total) / seen, step
    total_all, seen_all, bad = ctx.sum_values(total, seen, not math.isfinite(step))
    return total_all / seen_all, float("nan") if bad else step


# --------------------------------------------------------------------------- the loop
@dataclass
class Trainer:
    """A model with its optimiser, grad scaler and early stopping, trained epoch by epoch.

    ``history`` holds one JSON-safe metrics row per finished epoch; ``best_state`` the
    weights (on the CPU) of the best epoch so far. Under torchrun, ``net`` is the DDP
    wrapper the training step calls (``model`` in one process) and ``dist`` says where
    this process stands (:mod:`training.distributed`).
    """

    cfg: TrainConfig
    data: PreparedData
    model: SteeringNet
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    stopper: EarlyStopping
    device: torch.device
    amp_dtype: torch.dtype | None
    train_eval_idx: torch.Tensor  # the fixed subset of train frames evaluated each epoch
    history: list[dict[str, Any]] = field(default_factory=list)
    best_state: dict[str, torch.Tensor] | None = None
    epoch: int = 0
    dist: DistContext = field(default_factory=DistContext)
    net: torch.nn.Module | None = None  # what the training step calls; None: the model
    channels_last: bool = False  # model and batches in the NHWC memory layout

    @classmethod
    def build(
        cls,
        cfg: TrainConfig,
        data: PreparedData,
        model_args: dict[str, Any],
        device: torch.device,
        amp_dtype: torch.dtype | None,
        *,
        dist: DistContext | None = None,
        channels_last: bool = False,
    ) -> Trainer:
        """A fresh model (weights seeded by ``cfg.seed``) and optimiser on ``device``;
        under torchrun (``dist``) with synchronised batch norm, wrapped in DDP."""
        ctx = dist or DistContext()
        torch.manual_seed(cfg.seed)
        try:
            model = build_model(cfg.model, **model_args).to(device)
        except ValueError as e:
            raise RunError(str(e)) from None
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        model, net = wrap_model(model, ctx, device, sync_bn=cfg.sync_batch_norm)
        g = torch.Generator().manual_seed(seed_for(cfg.seed, 0, 2))
        n_eval = min(cfg.train_eval_frames, len(data.train))
        return cls(
            cfg=cfg,
            data=data,
            model=model,
            optimizer=make_optimizer(model, cfg),
            scaler=torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16),
            stopper=EarlyStopping(cfg.stop_mode, cfg.patience, cfg.min_delta),
            device=device,
            amp_dtype=amp_dtype,
            train_eval_idx=torch.randperm(len(data.train), generator=g)[:n_eval].sort().values,
            dist=ctx,
            net=net if ctx.enabled else None,
            channels_last=channels_last,
        )

    def close(self) -> None:
        """Let go of the DDP wrapper now: freed after its process group is destroyed, its
        reducer can hang the process at exit."""
        if self.net is not None:
            self.net = None
            gc.collect()

    @property
    def done(self) -> bool:
        return self.epoch >= self.cfg.epochs or self.stopper.should_stop

    def run_epoch(self) -> tuple[dict[str, Any], bool]:
        """Train and evaluate the next epoch; returns ``(metrics row, is the new best)``.

        :class:`TrainingDiverged` if the loss or the dev metric is not finite.
        """
        cfg = self.cfg
        self.epoch += 1
        t0 = time.perf_counter()
        train_loss, seen = train_one_epoch(
            self.model, self.optimizer, self.scaler, self.data.train, cfg, self.device,
            self.epoch, self.amp_dtype, dist=self.dist, net=self.net,
            channels_last=self.channels_last,
        )  # fmt: skip
        t_train = time.perf_counter() - t0
        row: dict[str, Any] = {"epoch": self.epoch, "train_loss": train_loss}
        row.update(self.evaluate())
        metric = row[cfg.resolved_stop_metric]
        if metric is None or not math.isfinite(metric):
            raise TrainingDiverged(
                f"{cfg.resolved_stop_metric} became {metric} at epoch {self.epoch}; "
                "the best checkpoint was left untouched"
            )
        improved = self.stopper.update(metric, self.epoch)
        lr_used = self.optimizer.param_groups[0]["lr"]
        if not improved:
            self._decay_on_plateau(lr_used)
        row.update(
            lr=lr_used,
            epoch_seconds=time.perf_counter() - t0,
            images_per_second=seen / t_train if t_train > 0 else None,
            is_best=int(improved),
        )
        self.history.append(clean(row))
        if improved:
            self.best_state = {
                k: v.detach().to("cpu").clone() for k, v in self.model.state_dict().items()
            }
        return row, improved

    def _decay_on_plateau(self, lr_used: float) -> None:
        stopper, cfg = self.stopper, self.cfg
        if (
            cfg.lr_decay_patience
            and stopper.bad_epochs % cfg.lr_decay_patience == 0
            and not stopper.should_stop
        ):
            # Plateau: a smaller step often finds the lower dev error that the
            # larger one kept jumping over (restored from the optimizer on resume).
            for group in self.optimizer.param_groups:
                group["lr"] *= cfg.lr_decay_factor
            logger.info(
                "no improvement for %d epochs: lr %g -> %g",
                stopper.bad_epochs,
                lr_used,
                self.optimizer.param_groups[0]["lr"],
            )

    def evaluate(self) -> dict[str, Any]:
        """Train error (fixed subset) and dev metrics in eval mode, without augmentation."""
        cfg = self.cfg
        # Every process evaluates with rank 0's batch-norm statistics, on its share of the
        # frames; all then compute the same metrics from the gathered outputs.
        self.dist.broadcast_buffers(self.model)
        kw = {
            "batch_size": cfg.eval_batch_size,
            "amp_dtype": self.amp_dtype,
            "loss_kwargs": loss_kwargs(cfg),
            "dist": self.dist,
        }
        tr = evaluate_frames(self.model, self.data.train, self.train_eval_idx, **kw)
        dv = evaluate_frames(self.model, self.data.dev, flip_frames=cfg.flip_eval_frames, **kw)
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

    def stop_reason(self) -> str:
        if self.stopper.should_stop:
            return f"early stopping: no {self.cfg.resolved_stop_metric} improvement for {self.cfg.patience} epochs"
        return f"epoch limit ({self.cfg.epochs}) reached"

    def restore_best(self) -> dict[str, Any]:
        """Load the best epoch's weights into the model; returns that epoch's metrics row."""
        if self.best_state is None:  # pragma: no cover - every finished epoch is finite
            raise TrainingDiverged("no finite dev metric in any epoch")
        self.model.load_state_dict(self.best_state)
        return next(r for r in self.history if r["epoch"] == self.stopper.best_epoch)

    def test_metrics(self, frames: FrameSet) -> dict[str, Any]:
        """Metrics of the (restored best) model on the test frames, per-class table included."""
        cfg = self.cfg
        return evaluate_frames(
            self.model, frames, batch_size=cfg.eval_batch_size, amp_dtype=self.amp_dtype,
            loss_kwargs=loss_kwargs(cfg), report=True, flip_frames=cfg.flip_eval_frames,
        )  # fmt: skip
