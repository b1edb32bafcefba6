"""Data-parallel behaviour cloning under ``torchrun`` (PyTorch DDP), on GPUs or CPUs.

    torchrun --nproc-per-node 4 -m training.train --data DATA --out RUN_DIR ...
    torchrun --nnodes 2 --node-rank R --master-addr HOST --master-port 29500 \\
             --nproc-per-node 8 -m training.train --data DATA --out RUN_DIR ...

``torchrun`` starts one process per GPU (or per CPU slot) and tells each its ``RANK``,
``LOCAL_RANK`` and ``WORLD_SIZE``; :func:`process_group` joins them (NCCL on CUDA, gloo on
the CPU). What each process does, and why the result is one process's training:

- **The global batch is one process's batch.** Every process draws the same seeded batch
  order (``training.data.index_batches``) and keeps every ``WORLD_SIZE``-th frame of each
  batch, starting at its rank (:meth:`DistContext.shard`: ``DistributedSampler``'s
  assignment, applied per batch). Augmentation draws are made for the whole batch and
  each process keeps its frames' rows (``training.augment.AugmentDraws.select``), so a
  frame is augmented as in one process. DDP averages the gradients; each process's loss
  is scaled by its share of the batch, so the average is the gradient of the global
  batch's mean loss. ``batch_size`` must be divisible by the number of processes.
- **Batch norm is synchronised** (``sync_batch_norm``, on by default): each process holds
  ``batch_size / WORLD_SIZE`` frames, and a batch-norm layer normalising with the
  statistics of its own shard behaves differently from one process (noisier statistics:
  4 frames per process for ResNet's batch of 32 on 8 GPUs), and its running statistics,
  which the pilot later drives with, are one shard's estimate. Synchronised, the
  statistics are the global batch's: CUDA uses ``torch.nn.SyncBatchNorm``; elsewhere
  (gloo, CPU), where PyTorch's refuses to run, :class:`AllReduceBatchNorm` does the same
  with one all-reduce per layer (forward and backward). It matters most for small
  per-process batches; with large ones across nodes, ``--no-sync-batch-norm`` saves the
  all-reduce per layer (rank 0's running statistics are then broadcast to all).
- **Rank 0 alone writes**: checkpoints, the training state, ``metrics.csv``, curves,
  TensorBoard, log lines and progress bars. Other processes log only errors.
  :meth:`DistContext.from_main` runs a step on rank 0 and hands its result, or its
  error, to every process, so a failure there (a full disk) ends every process with the
  same one-line error instead of leaving them waiting in a collective.
- **Evaluation is shared and identical**: each process predicts a contiguous slice of
  the dev frames; the outputs are gathered on every process, which then computes the
  same metrics from the same numbers, so early stopping and the learning-rate decay are
  decided identically everywhere (a divergence check is all-reduced the same way).
- **Resume** reads the training state on rank 0 and broadcasts it (nodes need no shared
  run directory, only the dataset at the same path: its fingerprint is compared across
  processes). The number of processes may change on resume: the global batch, hence the
  training, does not depend on it.

Outside torchrun (no ``WORLD_SIZE``, or 1) everything here is a no-op and training is
exactly the single-process code path.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from training.errors import RunError

__all__ = [
    "DistContext",
    "AllReduceBatchNorm",
    "environment",
    "is_main_process",
    "process_group",
    "run_device",
    "shared",
    "stand_down",
    "sync_batch_norm",
    "wrap_model",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")
E = TypeVar("E", bound=BaseException)

#: torch.distributed collectives time out as a RunError naming this setting.
_TIMEOUT_HINT = "a process is gone or stuck (dist_timeout_s)"
#: Seconds a process of rank > 0 waits to be stopped after an error rank 0 reports.
STAND_DOWN_S = 30.0
#: Errors :meth:`DistContext.from_main` hands from rank 0 to every process.
SHARED_ERRORS = (RunError, ValueError, OSError)


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise RunError(f"environment variable {name}={text!r} is not an integer") from None


def shared(error: E) -> E:
    """Mark ``error`` as one that every process of the run raises alike: rank 0 reports it,
    the others stay quiet (``training.train``'s command line reads the mark)."""
    error.shared = True  # type: ignore[attr-defined]
    return error


def stand_down(status: int) -> int:
    """How a process of rank > 0 ends on an error that rank 0 reports: it waits (up to
    :data:`STAND_DOWN_S`) for torchrun to stop it once rank 0 has failed, so that rank 0's
    error line is written and named as the root cause, instead of torchrun stopping rank 0
    before it could say why. Returns ``status`` if nobody stopped it."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # torchrun's SIGTERM: end quietly
    time.sleep(STAND_DOWN_S)
    return status


def is_main_process() -> bool:
    """True unless this is a process of rank > 0 under torchrun (from ``RANK``)."""
    try:
        return _env_int("RANK", 0) == 0
    except RunError:
        return True


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a data-parallel run (one process: rank 0 of 1)."""

    rank: int = 0  # this process, 0..world_size-1 (torchrun's RANK)
    world_size: int = 1  # processes in the run (torchrun's WORLD_SIZE)
    local_rank: int = 0  # this process on its machine: its GPU (torchrun's LOCAL_RANK)
    backend: str | None = None  # nccl | gloo once the process group is up; None alone

    def __post_init__(self) -> None:
        if self.world_size < 1:
            raise RunError(f"WORLD_SIZE must be >= 1, got {self.world_size}")
        if not 0 <= self.rank < self.world_size:
            raise RunError(f"RANK must be in 0..{self.world_size - 1}, got {self.rank}")
        if self.local_rank < 0:
            raise RunError(f"LOCAL_RANK must be >= 0, got {self.local_rank}")

    @property
    def enabled(self) -> bool:
        """More than one process: collectives are needed."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ----------------------------------------------------------------- work split
    def shard(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This process's frames of a global ``batch`` (indices) and their positions in it.

        Every ``world_size``-th frame from ``rank`` on, as ``DistributedSampler`` assigns
        them; one process keeps the whole batch (positions ``None``).
        """
        if not self.enabled:
            return batch, None
        pos = torch.arange(self.rank, len(batch), self.world_size)
        return batch.index_select(0, pos.to(batch.device)), pos

    def chunk(self, n: int) -> tuple[int, int]:
        """``(start, stop)`` of this process's contiguous slice of ``n`` items (evaluation)."""
        if not self.enabled:
            return 0, n
        base, extra = divmod(n, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return start, start + base + (1 if self.rank < extra else 0)

    # ----------------------------------------------------------------- collectives
    def _comm_device(self) -> torch.device:
        # NCCL moves only CUDA tensors; gloo takes CPU tensors.
        if self.backend == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def sum_values(self, *values: float | torch.Tensor) -> list[float]:
        """Each scalar summed over every process, in one all-reduce (alone: as given)."""
        t = torch.stack([torch.as_tensor(v).detach().to("cpu", torch.float64) for v in values])
        if self.enabled:
            t = t.to(self._comm_device())
            with _collective("all_reduce"):
                dist.all_reduce(t)
        return t.tolist()

    def gather_rows(self, local: torch.Tensor, n: int) -> torch.Tensor:
        """Every process's slice (:meth:`chunk` of ``n``) of rows, concatenated in rank order,
        on every process (on ``local``'s device)."""
        if not self.enabled:
            return local
        sizes = [self._chunk_of(r, n) for r in range(self.world_size)]
        width = max(sizes)
        dev = self._comm_device()
        padded = torch.zeros((width, *local.shape[1:]), dtype=local.dtype, device=dev)
        padded[: len(local)] = local.to(dev)
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        with _collective("all_gather"):
            dist.all_gather(parts, padded)
        return torch.cat([p[:k] for p, k in zip(parts, sizes, strict=True)]).to(local.device)

    def _chunk_of(self, rank: int, n: int) -> int:
        base, extra = divmod(n, self.world_size)
        return base + (1 if rank < extra else 0)

    def broadcast_object(self, obj: T) -> T:
        """Rank 0's ``obj`` on every process (in memory, between this run's processes)."""
        if not self.enabled:
            return obj
        box = [obj if self.is_main else None]
        with _collective("broadcast"):
            dist.broadcast_object_list(box, src=0)
        return box[0]  # type: ignore[return-value]

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in rank order, on every process."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        with _collective("all_gather_object"):
            dist.all_gather_object(out, obj)
        return out

    def from_main(self, fn: Callable[[], T]) -> T:
        """``fn()`` run on rank 0; its result, or the error it raised, on every process.

        Errors of the kinds a command line reports in one line (:data:`SHARED_ERRORS`) are
        raised on every process, so all end the same way; any other error ends rank 0 and
        torchrun stops the rest.
        """
        if not self.enabled:
            return fn()
        result: Any = None
        error: BaseException | None = None
        if self.is_main:
            try:
                result = fn()
            except SHARED_ERRORS as e:
                error = e
        result, error = self.broadcast_object((result, error))
        if error is not None:
            raise shared(error)
        return result

    def same_everywhere(self, value: Any, what: str) -> None:
        """:class:`RunError` on every process unless all hold the same ``value``."""
        values = self.gather_objects(value)
        odd = [r for r, v in enumerate(values) if v != values[0]]
        if odd:
            raise shared(
                RunError(
                    f"{what} differs between processes: rank 0 has {values[0]!r}, "
                    f"rank {odd[0]} has {values[odd[0]]!r}"
                )
            )

    def barrier(self) -> None:
        if self.enabled:
            with _collective("barrier"):
                dist.barrier()

    def broadcast_buffers(self, model: nn.Module) -> None:
        """Rank 0's buffers (batch-norm running statistics) on every process."""
        if not self.enabled:
            return
        with _collective("broadcast"), torch.no_grad():
            for b in model.buffers():
                if b.device.type == "cpu" and self.backend == "nccl":  # pragma: no cover
                    continue
                dist.broadcast(b, src=0)


@contextlib.contextmanager
def _collective(what: str) -> Iterator[None]:
    """A collective that times out (a process died or hangs) is a :class:`RunError`."""
    try:
        yield
    except (RuntimeError, dist.DistBackendError) as e:  # type: ignore[misc]
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "timeout" in text.lower() or "timed out" in text.lower():
            raise RunError(f"{what} timed out: {_TIMEOUT_HINT} ({text})") from None
        if "connection" in text.lower() or "closed" in text.lower():
            raise RunError(f"{what} failed: another process of the run is gone ({text})") from None
        raise


def environment() -> DistContext:
    """This process's place in the run, from torchrun's environment variables."""
    world = _env_int("WORLD_SIZE", 1)
    return DistContext(
        rank=_env_int("RANK", 0),
        world_size=world,
        local_rank=_env_int("LOCAL_RANK", 0),
    )


def run_device(name: str, ctx: DistContext) -> torch.device:
    """The training device of this process for ``--device name``.

    Under torchrun with more than one process, ``cuda`` (or ``auto`` on a CUDA machine)
    means this process's GPU, ``cuda:LOCAL_RANK``; a fixed ``cuda:N`` would put every
    process on one GPU and is refused.
    """
    from agents.base import resolve_device

    try:
        resolved = resolve_device(name)
    except ValueError as e:
        raise shared(RunError(str(e))) from None
    if not ctx.enabled or resolved == "cpu":
        return torch.device(resolved)
    if resolved != "cuda":
        raise shared(
            RunError(
                f"--device {name} under torchrun: use --device cuda (or auto); each process "
                "takes the GPU of its LOCAL_RANK"
            )
        )
    count = torch.cuda.device_count()
    if ctx.local_rank >= count:
        raise RunError(
            f"process of local rank {ctx.local_rank} has no GPU: {count} visible "
            "(--nproc-per-node must not exceed the GPUs per machine)"
        )
    device = torch.device("cuda", ctx.local_rank)
    torch.cuda.set_device(device)
    return device


@contextlib.contextmanager
def process_group(
    ctx: DistContext, device: torch.device, timeout_s: float
) -> Iterator[DistContext]:
    """Join the run's process group (NCCL for CUDA, gloo otherwise) for the block.

    Yields ``ctx`` with its backend set; one process yields it unchanged and joins nothing.
    Under torchrun the process also dies with the launcher, however that dies.
    """
    if not ctx.enabled:
        yield ctx
        return
    if os.environ.get("TORCHELASTIC_RUN_ID"):
        from sim.pool import die_with_parent

        die_with_parent(os.getppid())
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_available():  # pragma: no cover - every supported build has it
        raise RunError("this torch build has no torch.distributed")
    try:
        dist.init_process_group(
            backend=backend,
            timeout=datetime.timedelta(seconds=timeout_s),
            device_id=device if device.type == "cuda" else None,
        )
    except (RuntimeError, ValueError) as e:
        raise RunError(f"cannot join the torchrun process group ({backend}): {e}") from None
    try:
        yield DistContext(ctx.rank, ctx.world_size, ctx.local_rank, backend)
    finally:
        with contextlib.suppress(RuntimeError, ValueError):
            dist.destroy_process_group()


@contextlib.contextmanager
def quiet_unless_main(ctx: DistContext) -> Iterator[None]:
    """Only errors are logged by processes of rank > 0 during the block (rank 0 logs)."""
    root = logging.getLogger()
    level = root.level
    if not ctx.is_main:
        root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


# --------------------------------------------------------------------------- batch norm
class _AllReduceSum(torch.autograd.Function):
    """``sum over processes of x`` with its gradient: the sum over processes of the
    gradients (each process's loss depends on the same sum)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        y = x.clone()
        with _collective("all_reduce"):
            dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        g = grad.contiguous().clone()
        with _collective("all_reduce"):
            dist.all_reduce(g)
        return g


class AllReduceBatchNorm(_BatchNorm):
    """Batch norm over the global batch of every process, with any backend (gloo on CPU).

    In training mode each process computes its shard's frame count, per-channel mean and
    sum of squared deviations; one differentiable all-reduce shares them and every process
    combines them (Chan et al.'s parallel variance, no ``E[x^2] - E[x]^2`` cancellation)
    into the global batch's mean and variance: the numbers one process would compute on
    the whole batch. Running statistics are updated with them (unbiased variance, as
    ``nn.BatchNorm``). In eval mode, or in one process, it is plain batch norm. Parameter
    and buffer names are ``nn.BatchNorm``'s, so checkpoints load into the usual models.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:  # noqa: A002 - torch's name
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - torch's name
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        self._check_input_dim(input)
        c = input.shape[1]
        dims = [0, *range(2, input.dim())]
        shape = [1, c] + [1] * (input.dim() - 2)
        x = input.float()
        count = x.numel() // c
        if count == 0:
            raise ValueError("synchronised batch norm needs at least one value per channel")
        mean_local = x.mean(dims)
        m2_local = (x - mean_local.view(shape)).square().sum(dims)
        own = torch.cat([x.new_tensor([float(count)]), mean_local, m2_local])
        world, rank = dist.get_world_size(), dist.get_rank()
        rows = [own if r == rank else torch.zeros_like(own) for r in range(world)]
        stats = _AllReduceSum.apply(torch.stack(rows))
        counts, means, m2s = stats[:, :1], stats[:, 1 : 1 + c], stats[:, 1 + c :]
        n = counts.sum()
        mean = (counts * means).sum(0) / n
        var = (m2s + counts * (means - mean).square()).sum(0) / n
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)  # type: ignore[union-attr]
                factor = (
                    1.0 / float(self.num_batches_tracked)
                    if self.momentum is None
                    else self.momentum
                )
                unbiased = var * (n / (n - 1)) if float(n) > 1 else var
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                self.running_var.mul_(1 - factor).add_(unbiased.detach(), alpha=factor)  # type: ignore[union-attr]
        y = (x - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(input.dtype)


def sync_batch_norm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every batch-norm layer of ``model`` synchronised over the process group (in place
    below the top module; returns the model). CUDA: ``nn.SyncBatchNorm``; otherwise
    :class:`AllReduceBatchNorm`. Parameters are kept (the same objects)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _convert(model)


def _convert(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, _BatchNorm) and not isinstance(module, AllReduceBatchNorm):
        out = AllReduceBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,  # type: ignore[arg-type]
            module.affine,
            module.track_running_stats,
        )
        if module.affine:
            out.weight = module.weight
            out.bias = module.bias
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _convert(child))
    return out


def wrap_model(
    model: nn.Module, ctx: DistContext, device: torch.device, *, sync_bn: bool
) -> tuple[nn.Module, nn.Module]:
    """``(model, net)``: the model (batch norm synchronised when asked and the run has
    several processes) and what the training step calls: its DDP wrapper, or the model
    itself in one process."""
    if not ctx.enabled:
        return model, model
    has_bn = any(isinstance(m, _BatchNorm) for m in model.modules())
    if sync_bn and has_bn:
        model = sync_batch_norm(model, device)
    net = nn.parallel.DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        # Synchronised statistics are the same everywhere; otherwise rank 0's are sent to
        # every process before each forward pass.
        forward_sync_buffers=not (sync_bn and has_bn),
    )
    return model, net
