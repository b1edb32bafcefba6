"""Helper for tests/test_distributed.py: one process of a torchrun job (gloo, CPU) that runs
synchronised batch norm on its shard of a seeded global batch.

Usage: torchrun --nproc-per-node N tests/_ddp_batchnorm_worker.py OUT_DIR

Every process builds the same seeded layers (a ``BatchNorm2d`` and a ``BatchNorm1d``),
converts them with :func:`training.distributed.sync_batch_norm`, takes every N-th frame of
the global batch from its rank on (:meth:`DistContext.shard`), runs forward and backward
on a loss weighted by its share of the batch (as the trainer does) and writes
``OUT_DIR/rank{R}.safetensors``: its outputs, input gradients, parameter gradients and
running statistics. The test compares them with plain batch norm on the whole batch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from training.distributed import environment, process_group, sync_batch_norm

BATCH = 12


def layers() -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.nn.ModuleDict(
        {"bn2d": torch.nn.BatchNorm2d(3, momentum=0.3), "bn1d": torch.nn.BatchNorm1d(5)}
    )
    with torch.no_grad():
        for m in net.values():
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.5, 0.5)
    return net


def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x2 = torch.randn(BATCH, 3, 4, 5, generator=g) * 3 + 2
    x1 = torch.randn(BATCH, 5, generator=g) - 1
    w2 = torch.randn(BATCH, 3, 4, 5, generator=g)
    w1 = torch.randn(BATCH, 5, generator=g)
    return x2, x1, w2, w1


def loss_of(net: torch.nn.Module, x2, x1, w2, w1) -> tuple[torch.Tensor, ...]:
    y2 = net["bn2d"](x2)
    y1 = net["bn1d"](x1)
    return y2, y1, (y2 * w2).sum() / BATCH + (y1 * w1).sum() / BATCH


def main(out: Path) -> None:
    ctx = environment()
    with process_group(ctx, torch.device("cpu"), 60.0) as ctx:
        net = sync_batch_norm(layers(), torch.device("cpu")).train()
        x2, x1, w2, w1 = inputs()
        local, _ = ctx.shard(torch.arange(BATCH))
        x2 = x2[local].requires_grad_(True)
        x1 = x1[local].requires_grad_(True)
        y2, y1, loss = loss_of(net, x2, x1, w2[local], w1[local])
        loss.backward()
        # DDP would average the parameter gradients over the processes: the test sums them.
        tensors = {
            "index": local,
            "y2": y2.detach(),
            "y1": y1.detach(),
            "gx2": x2.grad,
            "gx1": x1.grad,
            "kinds": torch.tensor([type(m).__name__ == "AllReduceBatchNorm" for m in net.values()]),
        }
        for name, m in net.items():
            tensors[f"{name}.gw"] = m.weight.grad
            tensors[f"{name}.gb"] = m.bias.grad
            tensors[f"{name}.running_mean"] = m.running_mean
            tensors[f"{name}.running_var"] = m.running_var
        save_file(
            {k: v.contiguous() for k, v in tensors.items()},
            str(out / f"rank{ctx.rank}.safetensors"),
        )
        ctx.barrier()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
