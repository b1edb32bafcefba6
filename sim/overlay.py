"""Labels drawn over camera frames for videos: value bars with their numbers, and captions.

numpy and Pillow only, and Pillow only ahead of time: the text that does not change
(captions, bar names) is rendered once into a :class:`Stamp` (colour + alpha), and the
numbers that change every frame are composed from a glyph atlas of ``+-.0123456789``
rendered once per font size. Drawing a frame is then a few numpy slices and blends.

:class:`LabelOverlay` lays out, for one frame size, a strip at the bottom with one row
per bar (``name  +0.23  [----|====    ]``): each bar is centred on zero and fills towards
the value's sign over [-1, 1]; a bar can be marked ``left_positive`` (steering: + is
left, so a positive value fills to the left, the way the wheels turn). Its
:attr:`LabelOverlay.regions` say where each part lands (for tests and callers that
place other things).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Bar", "LabelOverlay", "Stamp", "font_px", "render_text", "upscale"]

_DIGITS = "+-.0123456789"
_WHITE = (255, 255, 255)
_TRACK = (70, 70, 70)  # a bar's empty track
_TICK = (230, 230, 230)


def font_px(frame_height: int) -> int:
    """The label font size for frames ``frame_height`` pixels tall (legible, not crowding)."""
    return int(max(9, min(28, round(frame_height / 24))))


@functools.cache
def _font(px: int):  # -> PIL.ImageFont.FreeTypeFont | ImageFont
    from PIL import ImageFont

    return ImageFont.load_default(size=px)


@dataclass(frozen=True)
class Stamp:
    """A pre-rendered label: ``rgb`` (h, w, 3) uint8 and ``alpha`` (h, w, 1) float32."""

    rgb: np.ndarray
    alpha: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.rgb.shape[0]), int(self.rgb.shape[1])

    def blit(self, frame: np.ndarray, row: int, col: int) -> None:
        """Blend onto ``frame`` (in place) with its top-left corner at (row, col), clipped."""
        h, w = self.shape
        fh, fw = frame.shape[:2]
        r0, c0 = max(row, 0), max(col, 0)
        r1, c1 = min(row + h, fh), min(col + w, fw)
        if r0 >= r1 or c0 >= c1:
            return
        src = self.rgb[r0 - row : r1 - row, c0 - col : c1 - col]
        a = self.alpha[r0 - row : r1 - row, c0 - col : c1 - col]
        dst = frame[r0:r1, c0:c1]
        dst[:] = (dst * (1.0 - a) + src * a).astype(np.uint8)


def render_text(
    lines: Sequence[str],
    px: int,
    *,
    color: tuple[int, int, int] = _WHITE,
    background: tuple[int, int, int] = (0, 0, 0),
    opacity: float = 0.6,
    pad: int = 3,
) -> Stamp:
    """``lines`` of text on a box of ``background`` at ``opacity`` (the text is opaque)."""
    from PIL import Image, ImageDraw

    font = _font(px)
    ascent, descent = font.getmetrics()
    line_h = ascent + descent
    width = max((int(math.ceil(font.getlength(s))) for s in lines), default=0)
    h, w = line_h * len(lines) + 2 * pad, width + 2 * pad
    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    for i, s in enumerate(lines):
        draw.text((pad, pad + i * line_h), s, fill=255, font=font)
    text = np.asarray(mask, dtype=np.float32)[..., None] / 255.0
    alpha = opacity + (1.0 - opacity) * text
    rgb = np.asarray(background, np.float32) * (1.0 - text) + np.asarray(color, np.float32) * text
    return Stamp(rgb.astype(np.uint8), alpha.astype(np.float32))


@functools.cache
def _glyphs(px: int) -> tuple[dict[str, np.ndarray], int]:
    """Alpha masks (h, w, 1) of the characters numbers are written with; their height.
    The signs share one width, so a number does not shift when its sign changes."""
    from PIL import Image, ImageDraw

    font = _font(px)
    ascent, descent = font.getmetrics()
    h = ascent + descent
    sign_w = int(math.ceil(max(font.getlength("+"), font.getlength("-"))))
    out = {}
    for ch in _DIGITS:
        adv = font.getlength(ch)
        w = sign_w if ch in "+-" else max(1, int(math.ceil(adv)))
        img = Image.new("L", (w, h), 0)
        ImageDraw.Draw(img).text(((w - adv) / 2, 0), ch, fill=255, font=font)
        out[ch] = np.asarray(img, dtype=np.float32)[..., None] / 255.0
    return out, h


def _number_width(text: str, px: int) -> int:
    glyphs, _ = _glyphs(px)
    return sum(glyphs[c].shape[1] for c in text)


def _write_number(frame: np.ndarray, text: str, row: int, col: int, px: int) -> None:
    """``text`` (characters of ``+-.0-9``) in white at (row, col), in place."""
    glyphs, h = _glyphs(px)
    for ch in text:
        a = glyphs[ch]
        w = a.shape[1]
        dst = frame[row : row + h, col : col + w]
        if dst.shape[:2] != a.shape[:2]:
            return  # past the frame's edge
        dst[:] = (dst * (1.0 - a) + 255.0 * a).astype(np.uint8)
        col += w


def upscale(image: np.ndarray, scale: int) -> np.ndarray:
    """``image`` (H, W, 3) enlarged ``scale`` times by repeating pixels (sharp edges)."""
    if scale == 1:
        return np.array(image, copy=True)
    return image.repeat(scale, axis=0).repeat(scale, axis=1)


@dataclass(frozen=True)
class Bar:
    """One labelled value bar of a :class:`LabelOverlay`."""

    name: str  # shown left of the value, e.g. "steer"
    color: tuple[int, int, int]  # the fill
    left_positive: bool = False  # a positive value fills to the left (steering: + = left)
    ends: tuple[str, str] = ("", "")  # small labels at the bar's left and right ends


STEERING = Bar("steer", (255, 170, 0), left_positive=True, ends=("L", "R"))
THROTTLE = Bar("thr", (70, 200, 90))


class LabelOverlay:
    """Bars with their values at the bottom of frames of one size (H, W); see module doc.

    ``draw(frame, values, stamps)`` draws in place: the strip (darkened), each bar's
    name, number (``+0.23``) and fill, then each ``(stamp, row, col)`` given (a caption).
    """

    def __init__(self, size: tuple[int, int], bars: Sequence[Bar] = (STEERING, THROTTLE)) -> None:
        h, w = int(size[0]), int(size[1])
        if h < 16 or w < 64:
            raise ValueError(f"frames of {h}x{w} are too small to label (at least 16x64)")
        self.size = (h, w)
        self.bars = tuple(bars)
        self.px = font_px(h)
        _, glyph_h = _glyphs(self.px)
        self.row_h = glyph_h + 4
        pad = max(2, self.px // 4)
        strip_h = self.row_h * len(self.bars) + 2
        self.strip = (h - strip_h, h)
        self.names = [render_text([b.name], self.px, opacity=0.0, pad=0) for b in self.bars]
        self.ends = [
            tuple(render_text([e], self.px, opacity=0.0, pad=0) if e else None for e in b.ends)
            for b in self.bars
        ]
        name_w = max(s.shape[1] for s in self.names)
        self.value_col = pad + name_w + pad
        self.bar_col0 = self.value_col + _number_width("+0.00", self.px) + 2 * pad
        self.bar_col1 = w - pad
        if self.bar_col1 - self.bar_col0 < 20:
            raise ValueError(f"frames {w} px wide leave no room for a bar (font {self.px} px)")
        self.regions: dict[str, tuple[int, int, int, int]] = {"strip": (*self.strip, 0, w)}
        for i, b in enumerate(self.bars):
            r0 = self.strip[0] + 1 + i * self.row_h
            self.regions[b.name] = (r0, r0 + self.row_h, 0, w)
            self.regions[f"{b.name}_bar"] = (
                r0 + 3,
                r0 + self.row_h - 3,
                self.bar_col0,
                self.bar_col1,
            )

    def draw(
        self,
        frame: np.ndarray,
        values: Sequence[float | None],
        stamps: Sequence[tuple[Stamp, int, int]] = (),
    ) -> np.ndarray:
        """Draw onto ``frame`` (H, W, 3 uint8, in place) and return it. ``values``: one per
        bar, clipped to [-1, 1] for the fill (the number shows the value itself); None
        (or a non-finite value) draws the bar empty, without a number."""
        if frame.shape[:2] != self.size:
            raise ValueError(f"frame is {frame.shape[:2]}, this overlay draws on {self.size}")
        s0, s1 = self.strip
        band = frame[s0:s1]
        band[:] = (band * 0.35).astype(np.uint8)
        c0, c1 = self.bar_col0, self.bar_col1
        mid = (c0 + c1) // 2
        for i, (bar, value) in enumerate(zip(self.bars, values, strict=True)):
            r0, r1, _, _ = self.regions[f"{bar.name}_bar"]
            row = self.regions[bar.name][0]
            self.names[i].blit(frame, row + 2, self.value_col - self.names[i].shape[1] - 3)
            frame[r0:r1, c0:c1] = _TRACK
            if value is not None and math.isfinite(value):
                v = max(-1.0, min(1.0, float(value)))
                reach = int(round(abs(v) * (c1 - c0) / 2))
                towards_left = (v > 0) == bar.left_positive
                a, b = (mid - reach, mid) if towards_left else (mid, mid + reach)
                frame[r0:r1, a:b] = bar.color
                _write_number(frame, f"{float(value):+.2f}", row + 2, self.value_col, self.px)
            frame[r0 - 1 : r1 + 1, mid - 1 : mid + 1] = _TICK
            left, right = self.ends[i]
            if left is not None:
                left.blit(frame, r0 + (r1 - r0 - left.shape[0]) // 2, c0 + 2)
            if right is not None:
                right.blit(frame, r0 + (r1 - r0 - right.shape[0]) // 2, c1 - right.shape[1] - 2)
        for stamp, row, col in stamps:
            stamp.blit(frame, row, col)
        return frame
