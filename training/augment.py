"""Batched data augmentation on the training device.

Everything works on a whole preprocessed batch (float32 ``NCHW`` in ``[0, 1]``, see
``agents.models.preprocess``) with a handful of tensor ops and no per-image Python loop.
Random draws come from an explicit CPU ``torch.Generator`` and are moved to the device, so a
run is reproducible and a resumed run replays the same draws.

Augmentations (each switchable through :class:`AugmentParams`):

- **flip**: mirror the image left-right and negate the steering label. Laps driven only
  counter-clockwise teach a pilot to lean left; flipping half the frames removes that bias.
  Classifier bins are symmetric, so a flipped label is the mirrored bin
  (``agents.models.mirror_class``).
- **jitter**: brightness, contrast and per-channel colour gain, fused into one
  multiply-add per image.
- **shadow**: darken the image on one side of a random line (a tree or building shadow).
- **shift**: a lateral displacement of the car, rendered as a shear that moves the bottom
  rows by up to ``shift`` of the image width and leaves the horizon in place (ground points
  move in proportion to their nearness); the steering label gets
  ``-shift_steering * (bottom shift / width)``: road displaced to the right means the car is
  left of it and must steer right. The correction gain is a heuristic, like the synthetic
  viewpoints of NVIDIA's PilotNet paper; it is off by default.

Flip and shift share one ``gather`` over the batch; jitter and shadow one multiply-add and
one multiply.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from agents.models import decode_steering, preprocess

__all__ = [
    "AugmentDraws",
    "AugmentParams",
    "apply_augment",
    "augment_batch",
    "draw_augment",
    "flip_batch",
    "flip_consistency",
]


@dataclass(frozen=True)
class AugmentParams:
    """Switches and strengths; see the module docstring. 0 disables a numeric one."""

    flip: bool = True  # mirror half of the frames, negating their steering
    jitter: float = 0.2  # brightness and contrast factors drawn from [1 - j, 1 + j]
    colour: float = 0.05  # per-channel gains drawn from [1 - c, 1 + c]
    shadow: float = 0.3  # probability that a frame gets a random shadow
    shadow_strength: tuple[float, float] = (0.5, 0.85)  # brightness kept in the shadow
    shift: float = 0.0  # max lateral shift of the bottom row, as a fraction of the width
    shift_steering: float = 0.5  # steering correction per image width of bottom-row shift
    horizon: float = 0.3  # horizon row as a fraction of the height (rows above never move)

    def __post_init__(self) -> None:
        if not (0.0 <= self.jitter < 1.0):
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter}")
        if not (0.0 <= self.colour < 1.0):
            raise ValueError(f"colour must be in [0, 1), got {self.colour}")
        if not (0.0 <= self.shadow <= 1.0):
            raise ValueError(f"shadow must be a probability in [0, 1], got {self.shadow}")
        lo, hi = self.shadow_strength
        if not (0.0 <= lo <= hi <= 1.0):
            raise ValueError(f"shadow_strength must satisfy 0 <= lo <= hi <= 1, got {(lo, hi)}")
        if not (0.0 <= self.shift <= 0.5):
            raise ValueError(f"shift must be in [0, 0.5] (fraction of width), got {self.shift}")
        if not (0.0 <= self.shift_steering <= 10.0):
            raise ValueError(f"shift_steering must be in [0, 10], got {self.shift_steering}")
        if not (0.0 <= self.horizon < 1.0):
            raise ValueError(f"horizon must be in [0, 1), got {self.horizon}")

    @property
    def enabled(self) -> bool:
        return self.flip or self.jitter > 0 or self.colour > 0 or self.shadow > 0 or self.shift > 0


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g) * (hi - lo) + lo


@dataclass
class AugmentDraws:
    """The random draws of one batch, one row per frame (all on the CPU unless moved).

    Drawn once for a whole (global) batch by :func:`draw_augment`; :meth:`select` keeps the
    rows of the frames one process trains on, so the frames a data-parallel process
    augments get exactly the draws they get in one process.
    """

    n: int
    flipped: torch.Tensor  # bool (n,): mirrored left-right
    shift_px: torch.Tensor | None  # float (n,): bottom-row shift in pixels (shift on)
    b: torch.Tensor | None  # float (n, 1, 1, 1): brightness factor (jitter or colour on)
    c: torch.Tensor | None  # float (n, 1, 1, 1): contrast factor
    col: torch.Tensor | None  # float (n, 3, 1, 1): per-channel colour gain
    has_shadow: torch.Tensor | None  # bool (n,): the frame gets a shadow (shadow on)
    x_top: torch.Tensor | None  # float (n,): shadow edge column at the top row
    x_bot: torch.Tensor | None  # float (n,): shadow edge column at the bottom row
    side: torch.Tensor | None  # bool (n,): which side of the edge is dark
    keep: torch.Tensor | None  # float (n,): brightness kept in the shadow

    def select(self, rows: torch.Tensor) -> AugmentDraws:
        """The draws of frames ``rows`` (an index into this batch), in that order."""
        rows = rows.to("cpu")

        def pick(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.index_select(0, rows)

        return AugmentDraws(
            n=len(rows),
            flipped=self.flipped.index_select(0, rows),
            shift_px=pick(self.shift_px),
            b=pick(self.b),
            c=pick(self.c),
            col=pick(self.col),
            has_shadow=pick(self.has_shadow),
            x_top=pick(self.x_top),
            x_bot=pick(self.x_bot),
            side=pick(self.side),
            keep=pick(self.keep),
        )


def draw_augment(
    n: int, width: int, params: AugmentParams, generator: torch.Generator
) -> AugmentDraws:
    """Every random draw :func:`apply_augment` needs for ``n`` frames ``width`` pixels wide.

    All draws happen on the CPU from ``generator`` in a fixed order, whatever is switched on,
    so a run is reproducible and does not depend on the device.
    """
    w = width
    flipped = torch.zeros(n, dtype=torch.bool)
    if params.flip:
        flipped = torch.rand(n, generator=generator) < 0.5
    shift_px = b = c = col = None
    if params.shift > 0:
        shift_frac = _uniform(n, -params.shift, params.shift, generator)
        shift_px = torch.round(shift_frac * w)
    if params.jitter > 0 or params.colour > 0:
        b = _uniform(n, 1 - params.jitter, 1 + params.jitter, generator).view(n, 1, 1, 1)
        c = _uniform(n, 1 - params.jitter, 1 + params.jitter, generator).view(n, 1, 1, 1)
        col = _uniform(3 * n, 1 - params.colour, 1 + params.colour, generator).view(n, 3, 1, 1)
    has_shadow = x_top = x_bot = side = keep = None
    if params.shadow > 0:
        has_shadow = torch.rand(n, generator=generator) < params.shadow
        x_top = torch.rand(n, generator=generator) * w
        x_bot = torch.rand(n, generator=generator) * w
        side = torch.rand(n, generator=generator) < 0.5
        keep = _uniform(n, *params.shadow_strength, generator)
    return AugmentDraws(n, flipped, shift_px, b, c, col, has_shadow, x_top, x_bot, side, keep)


def augment_batch(
    x: torch.Tensor,
    steering: torch.Tensor,
    params: AugmentParams,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Augment a preprocessed batch; returns ``(images, steering, flipped)``.

    ``x``: float ``(N, 3, H, W)`` in ``[0, 1]`` (not modified). ``steering``: ``(N,)``.
    ``flipped``: bool ``(N,)`` (to mirror class labels or other targets if needed).
    ``generator`` is a CPU generator; all draws happen on the CPU in a fixed order, so the
    result does not depend on the device. The same as :func:`draw_augment` then
    :func:`apply_augment`.
    """
    return apply_augment(x, steering, params, draw_augment(len(x), x.shape[-1], params, generator))


def apply_augment(
    x: torch.Tensor,
    steering: torch.Tensor,
    params: AugmentParams,
    draws: AugmentDraws,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Augment a preprocessed batch with ``draws`` (one row per frame of ``x``); returns
    ``(images, steering, flipped)`` as :func:`augment_batch` does.

    Every operation is per frame, so a frame's result does not depend on the other frames
    of the batch: a process that holds part of a batch (and those frames' draws) gets the
    same frames as one process holding all of it.
    """
    n, _, h, w = x.shape
    if draws.n != n:
        raise ValueError(f"{draws.n} augmentation draws for a batch of {n} frames")
    dev = x.device
    steering = steering.float()
    flipped, shift_px = draws.flipped, draws.shift_px
    b, c, col = draws.b, draws.c, draws.col
    has_shadow, x_top, x_bot = draws.has_shadow, draws.x_top, draws.x_bot
    side, keep = draws.side, draws.keep

    # Geometry: flip and shift as one gather along the width, with an int64 source-column
    # index built at the smallest shape that broadcasts.
    if params.flip or shift_px is not None:
        cols = torch.arange(w, device=dev).view(1, 1, 1, w)
        if shift_px is not None:
            rows = torch.arange(h, dtype=torch.float32)
            y0 = params.horizon * h
            ramp = ((rows - y0) / max(h - 1 - y0, 1.0)).clamp(0.0, 1.0)  # 0 above horizon
            row_shift = torch.round(shift_px.view(n, 1) * ramp.view(1, h)).to(torch.int64)
            src = (cols - row_shift.to(dev).view(n, 1, h, 1)).clamp_(0, w - 1)  # (n,1,h,w)
            steering = steering - params.shift_steering * (shift_px / w).to(steering.device)
        else:
            src = cols.expand(n, 1, 1, w)
        if params.flip:
            src = torch.where(flipped.to(dev).view(n, 1, 1, 1), (w - 1) - src, src)
            steering = torch.where(flipped.to(steering.device), -steering, steering)
        x = torch.gather(x, 3, src.expand(n, 3, h, w))
    else:
        x = x.clone()

    # Photometric: y = ((x - m) * c + m) * b * col = x * (c b col) + m (1 - c) b col.
    if params.jitter > 0 or params.colour > 0:
        m = x.mean(dim=(1, 2, 3), keepdim=True)
        gain = (c * b * col).to(dev)
        offset = m * (1 - c.to(dev)) * (b.to(dev) * col.to(dev))
        x = torch.addcmul(offset, x, gain)
    if params.shadow > 0 and bool(has_shadow.any()):
        rows = torch.linspace(0.0, 1.0, h, device=dev).view(1, 1, h, 1)
        edge = x_top.to(dev).view(n, 1, 1, 1) + (x_bot - x_top).to(dev).view(n, 1, 1, 1) * rows
        cols = torch.arange(w, device=dev, dtype=torch.float32).view(1, 1, 1, w)
        left = cols < edge  # (n, 1, h, w)
        inside = left ^ side.to(dev).view(n, 1, 1, 1)
        inside = inside & has_shadow.to(dev).view(n, 1, 1, 1)
        factor = torch.where(inside, keep.to(dev).view(n, 1, 1, 1), torch.ones((), device=dev))
        x = x * factor
    if params.jitter > 0 or params.colour > 0:
        x = x.clamp_(0.0, 1.0)
    return x, steering, flipped


def flip_batch(x: torch.Tensor) -> torch.Tensor:
    """Mirror a batch left-right (the last dimension must be the width: ``NCHW``)."""
    return x.flip(-1)


@torch.no_grad()
def flip_consistency(
    model: torch.nn.Module,
    images: torch.Tensor,
    *,
    batch_size: int = 256,
    decode: str = "argmax",
) -> float:
    """Mean ``|f(flip(x)) + f(x)|`` of the predicted steering over ``images``.

    A pilot that learnt the road (and not a left/right prior) predicts mirrored steering
    for a mirrored frame, so this is 0 for a perfectly symmetric pilot. ``images`` are
    camera frames (``uint8`` ``NHWC``) on any device; the model's device is used.
    """
    if len(images) == 0:
        return float("nan")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total = 0.0
    try:
        for i in range(0, len(images), batch_size):
            xb = preprocess(images[i : i + batch_size].to(device), model.input_size)
            s = decode_steering(model, model(xb).float(), decode)
            s_flip = decode_steering(model, model(flip_batch(xb)).float(), decode)
            total += float((s + s_flip).abs().sum())
    finally:
        model.train(was_training)
    return total / len(images)
