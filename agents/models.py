"""CNN architectures for end-to-end steering, built from JSON-able argument dicts.

Every model here is a :class:`SteeringNet`: it consumes camera frames as they come from
the env (``uint8`` RGB, ``NHWC`` or ``NCHW``) and does its own preprocessing, so training
and the closed-loop pilot cannot disagree on it:

1. :func:`preprocess` (the one function both sides call): ``uint8 -> float`` in ``[0, 1]``,
   ``NCHW``, resized on the device with ``F.interpolate`` to the model's ``input_size``.
2. Per-channel normalisation ``(x - mean) / std`` inside the model (``mean``/``std`` are
   model arguments, stored with the weights).

The trainer calls :func:`preprocess`, augments the float batch, then calls the model on
it; a float ``NCHW`` tensor already at ``input_size`` skips step 1.

Output kinds:

- ``"regression"``: ``(N, len(targets))`` with targets ``("steering",)`` or
  ``("steering", "throttle")``.
- ``"classes"``: ``(N, K)`` logits over steering bins whose centres are ``class_values``
  (symmetric, in ``[-1, 1]``). The prediction is the value of the argmax bin; the
  expected value under the softmax is available too (:func:`decode_steering`).

Architectures (``build_model(arch, **args)``):

- ``pilotnet``: NVIDIA's PilotNet (5 convolutions, 3 hidden dense layers), 66x200 input.
- ``compact``: a small fast regression CNN (stride-2 convolutions, small pooled grid).
- ``compact_cls``: the same trunk with ``num_classes`` steering bins (default 15).
- ``resnet_cls``: a ResNet-18-style classifier at 240x320 input; more accurate per frame,
  dozens of times slower (the "99% F1 that needs 3 s per frame" end of the trade-off).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_NUM_CLASSES",
    "SteeringNet",
    "build_model",
    "decode_steering",
    "make_class_values",
    "mirror_class",
    "preprocess",
    "steering_to_class",
]

#: ImageNet statistics; the trainer replaces them with the training data's own.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_NUM_CLASSES = 15
OUTPUT_KINDS = ("regression", "classes")


# --------------------------------------------------------------------------- preprocessing
def to_nchw(images: torch.Tensor) -> torch.Tensor:
    """View a ``HWC``/``CHW``/``NHWC``/``NCHW`` RGB tensor as ``NCHW`` (no copy).

    A trailing dimension of 3 means channels-last; otherwise dimension 1 must be 3.
    """
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4:
        raise ValueError(
            f"expected an image batch with 3 or 4 dims, got shape {tuple(images.shape)}"
        )
    if images.shape[-1] == 3:
        return images.permute(0, 3, 1, 2)
    if images.shape[1] == 3:
        return images
    raise ValueError(f"expected RGB images (3 channels), got shape {tuple(images.shape)}")


def preprocess(images: torch.Tensor, input_size: Sequence[int]) -> torch.Tensor:
    """Camera frames -> float32 ``NCHW`` in ``[0, 1]`` at ``input_size`` (H, W).

    ``images`` is ``uint8`` (0..255) or floating point (already 0..1), in any layout
    :func:`to_nchw` accepts, on any device; the work happens on that device. Resizing is
    bilinear, antialiased when shrinking (on the CPU ``uint8`` frames are resized before the
    float conversion, elsewhere after: the two differ by rounding, at most 1/255). Training
    and the pilot both call this function.
    """
    x = to_nchw(images)
    if not (x.dtype == torch.uint8 or x.is_floating_point()):
        raise ValueError(f"images must be uint8 or float, got {x.dtype}")
    h, w = int(input_size[0]), int(input_size[1])
    resize = tuple(x.shape[-2:]) != (h, w)
    shrink = x.shape[-2] > h or x.shape[-1] > w
    if resize and x.dtype == torch.uint8 and x.device.type == "cpu":
        # PyTorch has a fast CPU kernel for antialiased bilinear resizing of channels-last
        # uint8 images (the NHWC camera frames viewed as NCHW); resize before converting.
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=shrink)
        resize = False
    # Contiguous NCHW: the convolutions are much slower on channels-last float input on CPU.
    x = x.contiguous()
    x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
    if resize:
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=shrink)
    return x


# --------------------------------------------------------------------------- classes
def make_class_values(num_classes: int) -> list[float]:
    """``num_classes`` evenly spaced steering bin centres from -1 to 1 (symmetric)."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    return [round(-1.0 + 2.0 * i / (num_classes - 1), 10) for i in range(num_classes)]


def steering_to_class(steering: torch.Tensor, class_values: torch.Tensor) -> torch.Tensor:
    """Index of the nearest bin centre; ties go to the centre closer to zero.

    The tie rule keeps binning mirror-symmetric for symmetric ``class_values``:
    ``steering_to_class(-s) == mirror_class(steering_to_class(s))``.
    """
    cv = class_values.to(device=steering.device, dtype=torch.float32)
    d = (steering.float().unsqueeze(-1) - cv).abs()
    # Scale the tie-break far below any real distance difference.
    d = d + cv.abs() * 1e-6
    return d.argmin(dim=-1)


def mirror_class(index: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class index of the horizontally mirrored steering (bins are symmetric)."""
    return (num_classes - 1) - index


# --------------------------------------------------------------------------- base class
class SteeringNet(nn.Module):
    """Base of every pilot CNN: preprocessing, normalisation, output description."""

    arch: str = ""

    def __init__(
        self,
        *,
        input_size: Sequence[int],
        output: str,
        targets: Sequence[str],
        class_values: Sequence[float] | None,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        super().__init__()
        if output not in OUTPUT_KINDS:
            raise ValueError(f"output must be one of {OUTPUT_KINDS}, got {output!r}")
        self.input_size = (int(input_size[0]), int(input_size[1]))
        if min(self.input_size) < 16:
            raise ValueError(f"input_size must be at least 16x16, got {self.input_size}")
        self.output_kind = output
        self.targets = tuple(targets)
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError("mean and std need 3 values each, std > 0")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        if output == "classes":
            if class_values is None or len(class_values) < 2:
                raise ValueError("a classifier needs at least 2 class_values")
            cv = torch.tensor(class_values, dtype=torch.float32)
            if not torch.all(cv[1:] > cv[:-1]) or cv.abs().max() > 1:
                raise ValueError("class_values must increase strictly and lie in [-1, 1]")
            self.register_buffer("class_values", cv)
        else:
            self.class_values = None
        self.args: dict[str, Any] = {}

    @property
    def num_outputs(self) -> int:
        if self.output_kind == "classes":
            return int(self.class_values.numel())
        return len(self.targets)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs for camera frames (``uint8`` any layout) or preprocessed floats."""
        if (
            x.dtype == torch.uint8
            or x.dim() != 4
            or x.shape[1] != 3
            or tuple(x.shape[-2:]) != self.input_size
        ):
            x = preprocess(x, self.input_size)
        x = (x - self.mean) / self.std
        return self.forward_features(x)

    def describe(self) -> dict[str, Any]:
        """JSON-able description stored with a checkpoint."""
        return {
            "arch": self.arch,
            "args": dict(self.args),
            "input_size": list(self.input_size),
            "output": {
                "kind": self.output_kind,
                "targets": list(self.targets),
                "class_values": (
                    None if self.class_values is None else [float(v) for v in self.class_values]
                ),
            },
            "preprocessing": {
                "input": "uint8 RGB, NHWC or NCHW (camera frames as the env returns them)",
                "convert": "float32 / 255",
                "resize": "bilinear (antialiased when shrinking) to input_size, on the device",
                "normalize": {
                    "mean": [float(v) for v in self.mean.flatten()],
                    "std": [float(v) for v in self.std.flatten()],
                },
            },
            "num_parameters": int(sum(p.numel() for p in self.parameters())),
        }


def decode_steering(
    model: SteeringNet, outputs: torch.Tensor, mode: str = "argmax"
) -> torch.Tensor:
    """Steering ``(N,)`` from model outputs.

    Regression: the first output. Classes: ``mode="argmax"`` gives the value of the most
    likely bin, ``mode="expected"`` the softmax-weighted mean of the bin values.
    """
    if model.output_kind == "regression":
        return outputs[:, 0].float()
    cv = model.class_values.to(outputs.device)
    if mode == "argmax":
        return cv[outputs.argmax(dim=1)]
    if mode == "expected":
        return torch.softmax(outputs.float(), dim=1) @ cv
    raise ValueError(f"mode must be 'argmax' or 'expected', got {mode!r}")


# --------------------------------------------------------------------------- blocks
def _conv_block(
    c_in: int, c_out: int, k: int, stride: int, batch_norm: bool, padding: int | None = None
) -> nn.Sequential:
    pad = k // 2 if padding is None else padding
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, k, stride, pad, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _head(
    n_in: int, hidden: Sequence[int], n_out: int, dropout: float, batch_norm: bool = False
) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    for h in hidden:
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(n_in, h, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm1d(h))
        layers.append(nn.ReLU(inplace=True))
        n_in = h
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


def _ch(base: int, width: float) -> int:
    return max(4, int(round(base * width)))


def _check_common(width: float, dropout: float) -> None:
    if not (math.isfinite(width) and 0.05 <= width <= 16):
        raise ValueError(f"width must be in [0.05, 16], got {width}")
    if not (0.0 <= dropout < 1.0):
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


def _targets(predict_throttle: bool) -> tuple[str, ...]:
    return ("steering", "throttle") if predict_throttle else ("steering",)


def _flat_size(trunk: nn.Module, input_size: tuple[int, int]) -> int:
    with torch.no_grad():
        was = trunk.training
        trunk.eval()
        n = trunk(torch.zeros(1, 3, *input_size)).numel()
        trunk.train(was)
    return int(n)


# --------------------------------------------------------------------------- PilotNet
class PilotNet(SteeringNet):
    """NVIDIA PilotNet (Bojarski et al. 2016): 5 convs, dense 100-50-10, regression.

    ``width`` scales every layer; ``depth`` is the number of 3x3 convolutions after the
    three 5x5 stride-2 ones (2 in the paper).
    """

    arch = "pilotnet"

    def __init__(
        self,
        input_size: Sequence[int] = (66, 200),
        width: float = 1.0,
        depth: int = 2,
        batch_norm: bool = True,
        dropout: float = 0.3,
        predict_throttle: bool = False,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__(
            input_size=input_size,
            output="regression",
            targets=_targets(predict_throttle),
            class_values=None,
            mean=mean,
            std=std,
        )
        _check_common(width, dropout)
        if not (0 <= depth <= 4):
            raise ValueError(f"pilotnet depth (3x3 convs) must be in 0..4, got {depth}")
        c = [_ch(24, width), _ch(36, width), _ch(48, width), _ch(64, width)]
        layers = [
            _conv_block(3, c[0], 5, 2, batch_norm, 0),
            _conv_block(c[0], c[1], 5, 2, batch_norm, 0),
            _conv_block(c[1], c[2], 5, 2, batch_norm, 0),
        ]
        c_in = c[2]
        for _ in range(depth):
            layers.append(_conv_block(c_in, c[3], 3, 1, batch_norm, 0))
            c_in = c[3]
        self.trunk = nn.Sequential(*layers)
        n_flat = _flat_size(self.trunk, self.input_size)
        hidden = [_ch(100, width), _ch(50, width), _ch(10, width)]
        self.head = _head(n_flat, hidden, self.num_outputs, dropout)
        self.args = {
            "input_size": list(self.input_size),
            "width": float(width),
            "depth": int(depth),
            "batch_norm": bool(batch_norm),
            "dropout": float(dropout),
            "predict_throttle": bool(predict_throttle),
            "mean": [float(v) for v in mean],
            "std": [float(v) for v in std],
        }

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


# --------------------------------------------------------------------------- compact
class CompactNet(SteeringNet):
    """Small fast CNN: ``depth`` stride-2 3x3 convs (5x5 first), pooled to a small grid.

    Channels double from ``16 * width`` up to ``64 * width``. Pooling to a ``pool`` grid
    (not to 1x1) keeps *where* the road is in the image, which is what steering needs.
    With ``num_classes`` set it is a steering classifier (``compact_cls``).
    """

    arch = "compact"

    def __init__(
        self,
        input_size: Sequence[int] = (60, 80),
        width: float = 1.0,
        depth: int = 4,
        batch_norm: bool = True,
        dropout: float = 0.2,
        pool: Sequence[int] = (3, 4),
        hidden: int = 64,
        predict_throttle: bool = False,
        num_classes: int | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        classes = num_classes is not None
        super().__init__(
            input_size=input_size,
            output="classes" if classes else "regression",
            targets=("steering",) if classes else _targets(predict_throttle),
            class_values=make_class_values(num_classes) if classes else None,
            mean=mean,
            std=std,
        )
        _check_common(width, dropout)
        if not (2 <= depth <= 6):
            raise ValueError(f"compact depth (stride-2 convs) must be in 2..6, got {depth}")
        if classes and predict_throttle:
            raise ValueError("a steering classifier does not predict throttle")
        layers: list[nn.Module] = []
        c_in = 3
        for i in range(depth):
            c_out = _ch(16 * 2 ** min(i, 2), width)
            layers.append(_conv_block(c_in, c_out, 5 if i == 0 else 3, 2, batch_norm))
            c_in = c_out
        layers.append(nn.AdaptiveAvgPool2d((int(pool[0]), int(pool[1]))))
        self.trunk = nn.Sequential(*layers)
        n_flat = c_in * int(pool[0]) * int(pool[1])
        self.head = _head(n_flat, [_ch(hidden, width)], self.num_outputs, dropout)
        self.args = {
            "input_size": list(self.input_size),
            "width": float(width),
            "depth": int(depth),
            "batch_norm": bool(batch_norm),
            "dropout": float(dropout),
            "pool": [int(pool[0]), int(pool[1])],
            "hidden": int(hidden),
            "mean": [float(v) for v in mean],
            "std": [float(v) for v in std],
        }
        if classes:
            self.args["num_classes"] = int(num_classes)
        else:
            self.args["predict_throttle"] = bool(predict_throttle)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


class CompactClassifier(CompactNet):
    """``compact`` with ``num_classes`` steering bins (cross-entropy)."""

    arch = "compact_cls"

    def __init__(self, num_classes: int = DEFAULT_NUM_CLASSES, **kwargs: Any) -> None:
        super().__init__(num_classes=int(num_classes), **kwargs)


# --------------------------------------------------------------------------- ResNet
class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, batch_norm: bool) -> None:
        super().__init__()
        norm: Callable[[int], nn.Module] = (
            nn.BatchNorm2d if batch_norm else (lambda c: nn.Identity())
        )
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=not batch_norm)
        self.bn1 = norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=not batch_norm)
        self.bn2 = norm(c_out)
        if batch_norm:
            # Zero-init the last BN of each residual branch: every block starts as identity,
            # which is what lets deep ResNets train without vanishing/exploding gradients.
            nn.init.zeros_(self.bn2.weight)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=not batch_norm), norm(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x), inplace=True)


class ResNetClassifier(SteeringNet):
    """ResNet-18-style steering classifier (He et al. 2016) at a higher input resolution.

    Four stages of ``depth`` basic blocks each, ``64 * width`` to ``512 * width`` channels
    (``width=0.5`` by default: 32 to 256, 2.8M parameters; ``width=1`` is ResNet-18's 11M),
    input 240x320 (camera frames are upsampled on the device). Global average pooling after
    a deep trunk is fine here: the receptive field covers the whole frame.
    """

    arch = "resnet_cls"

    def __init__(
        self,
        input_size: Sequence[int] = (240, 320),
        width: float = 0.5,
        depth: int = 2,
        batch_norm: bool = True,
        dropout: float = 0.2,
        num_classes: int = DEFAULT_NUM_CLASSES,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__(
            input_size=input_size,
            output="classes",
            targets=("steering",),
            class_values=make_class_values(int(num_classes)),
            mean=mean,
            std=std,
        )
        _check_common(width, dropout)
        if not (1 <= depth <= 8):
            raise ValueError(f"resnet_cls depth (blocks per stage) must be in 1..8, got {depth}")
        c0 = _ch(64, width)
        stem: list[nn.Module] = [nn.Conv2d(3, c0, 7, 2, 3, bias=not batch_norm)]
        if batch_norm:
            stem.append(nn.BatchNorm2d(c0))
        stem += [nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
        blocks: list[nn.Module] = []
        c_in = c0
        for stage in range(4):
            c_out = _ch(64 * 2**stage, width)
            for b in range(depth):
                stride = 2 if (b == 0 and stage > 0) else 1
                blocks.append(_BasicBlock(c_in, c_out, stride, batch_norm))
                c_in = c_out
        self.trunk = nn.Sequential(*stem, *blocks, nn.AdaptiveAvgPool2d(1))
        self.head = _head(c_in, [], self.num_outputs, dropout)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self.args = {
            "input_size": list(self.input_size),
            "width": float(width),
            "depth": int(depth),
            "batch_norm": bool(batch_norm),
            "dropout": float(dropout),
            "num_classes": int(num_classes),
            "mean": [float(v) for v in mean],
            "std": [float(v) for v in std],
        }

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


# --------------------------------------------------------------------------- registry
ARCHITECTURES: dict[str, type[SteeringNet]] = {
    "pilotnet": PilotNet,
    "compact": CompactNet,
    "compact_cls": CompactClassifier,
    "resnet_cls": ResNetClassifier,
}


def build_model(arch: str, **args: Any) -> SteeringNet:
    """Build architecture ``arch`` from JSON-able keyword arguments.

    ``model.args`` holds the resolved arguments (defaults filled in), so
    ``build_model(model.arch, **model.args)`` rebuilds the same network.
    Unknown architectures or arguments raise ``ValueError``.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose from {sorted(ARCHITECTURES)}")
    try:
        return ARCHITECTURES[arch](**args)
    except TypeError as e:
        raise ValueError(f"bad arguments for {arch!r}: {e}") from None
