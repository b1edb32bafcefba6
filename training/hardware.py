"""How a training run uses its device: numeric precision and memory layout.

The settings are :class:`~training.config.TrainConfig` fields whose ``auto`` picks what
suits the device; these functions resolve them once per run (and for ``training.bench``).

- ``precision``: ``auto`` is bf16 autocast on a CUDA GPU that supports it (Ampere and
  newer: no loss scaling needed, fp32's exponent range), else fp16 autocast with a
  ``GradScaler`` (fp16's narrow range makes small gradients underflow without it); fp32
  on the CPU, where autocast mostly costs conversions. ``bf16`` runs on the CPU too (the
  tests train that way). ``--no-amp`` keeps ``auto`` at fp32.
- ``channels_last``: the NHWC layout lets cuDNN use tensor-core convolution kernels
  without transposes; on the CPU, PyTorch's NCHW convolutions are faster for these small
  models, so ``auto`` is on for CUDA only.
- Where the frames live (``frames_on_device``, ``pin_memory``) is
  :meth:`training.data.FrameSet.to`'s business.
"""

from __future__ import annotations

import torch

from training.errors import RunError

__all__ = ["autocast_dtype", "channels_last_for", "precision_name"]


def autocast_dtype(precision: str, amp: bool, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a run (None: fp32, no autocast); :class:`RunError` if the
    device cannot run the requested precision."""
    if precision == "fp32" or (precision == "auto" and not amp):
        return None
    cuda = device.type == "cuda"
    if precision == "auto":
        if not cuda:
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "bf16":
        if cuda and not torch.cuda.is_bf16_supported():
            raise RunError(f"precision bf16: {torch.cuda.get_device_name(device)} lacks bf16")
        if device.type not in ("cuda", "cpu"):
            raise RunError(f"precision bf16 needs a CUDA or CPU device, not {device}")
        return torch.bfloat16
    if precision == "fp16":
        if not cuda:
            raise RunError(
                f"precision fp16 needs a CUDA device (got {device}); use bf16 on the CPU"
            )
        return torch.float16
    raise RunError(f"unknown precision {precision!r}")


def precision_name(dtype: torch.dtype | None) -> str:
    """``fp32``, ``bf16`` or ``fp16`` for an autocast dtype."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def channels_last_for(setting: str, device: torch.device) -> bool:
    """Whether the model and its batches use the NHWC layout (``auto``: on CUDA)."""
    if setting == "auto":
        return device.type == "cuda"
    return setting == "on"
