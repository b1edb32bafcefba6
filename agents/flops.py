"""Counted cost of a model: floating-point operations per frame at batch 1.

The car-computer cost model (:mod:`agents.cars`) estimates a pilot's latency from
this count. It is counted, not guessed: :class:`torch.utils.flop_counter.FlopCounterMode`
over one forward pass of a zero frame at the model's input size, which counts the
matrix multiplications and convolutions (2 FLOPs per multiply-accumulate); element-wise
work (activations, batch norm, the resize in preprocessing) is left out, as in the
published FLOP tables the cost model is calibrated against.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_mflop", "count_mflop_fn"]


def count_mflop(model: nn.Module, input_size: tuple[int, int] | None = None) -> float:
    """MFLOP (1e6 FLOPs) of one batch-1 forward pass of ``model`` at ``input_size`` (H, W).

    ``input_size`` defaults to the model's own ``input_size`` attribute. The model is run
    on the CPU in eval mode under ``torch.inference_mode``; its mode is restored after.
    """
    size = input_size or getattr(model, "input_size", None)
    if size is None:
        raise ValueError("count_mflop needs an input_size (the model declares none)")
    h, w = int(size[0]), int(size[1])
    if h < 1 or w < 1:
        raise ValueError(f"input_size must be positive, got {size}")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return count_mflop_fn(model, torch.zeros(1, 3, h, w, device=device))


def count_mflop_fn(module: nn.Module, *inputs: torch.Tensor) -> float:
    """MFLOP of one forward pass of ``module`` on ``inputs`` (any input layout: an SB3
    policy's stacked uint8 frames, say), in eval mode under ``torch.inference_mode``; the
    module's mode is restored after."""
    was_training = module.training
    module.eval()
    try:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            module(*inputs)
        return counter.get_total_flops() / 1e6
    finally:
        module.train(was_training)
