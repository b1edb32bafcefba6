"""The window of ``python -m sim.drive``: the camera view, a top-down map and the HUD.

:class:`Display` draws one frame from the camera image and the session's HUD values
(``DriveSession.hud()``); :class:`TrackMap` is the track drawn once, with the car on
top each frame. Drawing only: nothing here changes what is driven or recorded.

pygame is imported inside the methods that draw, never at the top: importing it prints
its banner and loads SDL, and ``import sim.drive`` (``--help``, the tests) must stay
quiet and headless, leaving callers free to set ``SDL_VIDEODRIVER`` first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["HELP_LINES", "Display", "TrackMap"]

HELP_LINES = (
    ("arrows / WASD", "steer, throttle, brake"),
    ("R", "start / stop recording"),
    ("P", "autopilot on / off"),
    ("", "(steer or throttle to take over)"),
    ("Backspace", "reset to the start line"),
    ("C", "switch direction ccw / cw"),
    ("T", "next built-in track"),
    ("H / F1", "this help"),
    ("Esc / Q", "quit"),
)


def _polygon_area(pts: Sequence[tuple[float, float]]) -> float:
    xy = np.asarray(pts)
    x, y = xy[:, 0], xy[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


class TrackMap:
    """The track edges drawn once onto a surface; the car is drawn on top each frame."""

    def __init__(self, track, size: tuple[int, int], pad: int = 8) -> None:
        import pygame  # lazy: see the module docstring

        w, h = size
        left, right = track.edges()
        pts = np.concatenate([left, right])
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        span = np.maximum(hi - lo, 1e-6)
        self.scale = float(min((w - 2 * pad) / span[0], (h - 2 * pad) / span[1]))
        # centre the drawing in the rectangle
        self.offset = np.array(
            [
                (w - span[0] * self.scale) / 2 - lo[0] * self.scale,
                (h + span[1] * self.scale) / 2 + lo[1] * self.scale,
            ]
        )
        self.surface = pygame.Surface(size)
        self.surface.fill((28, 44, 28))
        stride = max(1, len(left) // 400)  # a few hundred points per edge is plenty
        poly_l = self.to_px(left[::stride])
        poly_r = self.to_px(right[::stride])
        # road = outer edge filled, then the infield (the inner edge) painted back as grass
        outer, inner = sorted((poly_l, poly_r), key=_polygon_area, reverse=True)
        pygame.draw.polygon(self.surface, (70, 70, 75), outer)
        pygame.draw.polygon(self.surface, (28, 44, 28), inner)
        pygame.draw.lines(self.surface, (235, 235, 235), True, poly_l, 1)
        pygame.draw.lines(self.surface, (235, 235, 235), True, poly_r, 1)
        start = self.to_px(np.array([left[0], right[0]]))
        pygame.draw.line(self.surface, (220, 40, 40), start[0], start[1], 2)

    def to_px(self, xy: np.ndarray) -> list[tuple[float, float]]:
        xy = np.atleast_2d(np.asarray(xy, dtype=np.float64))
        px = xy[:, 0] * self.scale + self.offset[0]
        py = self.offset[1] - xy[:, 1] * self.scale
        return list(zip(px.tolist(), py.tolist(), strict=True))

    def draw(self, target, topleft: tuple[int, int], pose: Sequence[float], color) -> None:
        import pygame  # lazy: see the module docstring

        target.blit(self.surface, topleft)
        x, y, yaw = (float(v) for v in pose)
        (cx, cy), (hx, hy) = self.to_px(
            np.array([[x, y], [x + 0.6 * math.cos(yaw), y + 0.6 * math.sin(yaw)]])
        )
        ox, oy = topleft
        pygame.draw.line(target, color, (ox + cx, oy + cy), (ox + hx, oy + hy), 2)
        pygame.draw.circle(target, color, (int(ox + cx), int(oy + cy)), 4)


class Display:
    """The window: camera view on the left; map and HUD in a side panel."""

    PANEL = 260
    BG = (18, 18, 22)
    TEXT = (225, 225, 225)
    DIM = (140, 140, 150)
    RED = (230, 40, 40)
    COLORS = {"human": (90, 170, 255), "expert": (90, 220, 120), "takeover": (255, 170, 40)}

    def __init__(self, image_size: tuple[int, int], scale: int) -> None:
        import pygame  # lazy: see the module docstring

        h, w = image_size
        self.view_size = (w * scale, h * scale)
        self.map_size = (self.PANEL - 16, 150)
        height = max(self.view_size[1], 8 + self.map_size[1] + 8 + 17 * 18)
        self.size = (self.view_size[0] + self.PANEL, height)
        pygame.display.set_caption("trackpilot drive")
        self.screen = pygame.display.set_mode(self.size)
        self.font = pygame.font.Font(None, 20)
        self.big = pygame.font.Font(None, max(24, self.view_size[0] // 8))
        self.map: TrackMap | None = None

    def set_track(self, track) -> None:
        self.map = TrackMap(track, self.map_size)

    def _text(self, text: str, pos: tuple[int, int], color=None, font=None) -> None:
        surf = (font or self.font).render(text, True, color or self.TEXT)
        self.screen.blit(surf, pos)

    def _bar(self, x: int, y: int, w: int, value: float, centred: bool, color) -> None:
        import pygame  # lazy: see the module docstring

        pygame.draw.rect(self.screen, (50, 50, 58), (x, y, w, 8))
        v = max(-1.0, min(1.0, value))
        if centred:
            mid = x + w // 2
            # + steering is left: draw it to the left of the centre mark
            px = int(round(-v * w / 2))
            pygame.draw.rect(self.screen, color, (min(mid, mid + px), y, abs(px), 8))
            pygame.draw.line(self.screen, self.TEXT, (mid, y - 2), (mid, y + 9))
        else:
            pygame.draw.rect(self.screen, color, (x, y, int(w * max(0.0, v)), 8))

    def draw(self, frame: np.ndarray, hud: dict[str, Any], help_on: bool, banner: str) -> None:
        import pygame  # lazy: see the module docstring

        scr = self.screen
        scr.fill(self.BG)
        img = np.ascontiguousarray(frame)
        surf = pygame.image.frombuffer(img.tobytes(), (img.shape[1], img.shape[0]), "RGB")
        scr.blit(pygame.transform.scale(surf, self.view_size), (0, 0))
        x0 = self.view_size[0] + 8
        driver_color = self.COLORS[hud["driver"]]
        if self.map is not None:
            self.map.draw(scr, (x0, 8), hud["pose"], driver_color)
        y = 8 + self.map_size[1] + 10
        rec = hud["recording"]
        if rec:
            pygame.draw.circle(scr, self.RED, (x0 + 7, y + 7), 7)
            self._text(f"REC  {hud['frames']} frames", (x0 + 20, y), self.RED)
        else:
            pygame.draw.circle(scr, self.DIM, (x0 + 7, y + 7), 7, 2)
            self._text("not recording (R)", (x0 + 20, y), self.DIM)
        y += 20
        self._text(
            f"saved {hud['episodes_written']} episodes, {hud['frames_written']} frames",
            (x0, y),
            self.DIM,
        )
        y += 22
        mode = {"human": "HUMAN", "expert": "AUTOPILOT", "takeover": "TAKEOVER"}[hud["driver"]]
        if hud["autopilot"] and hud["driver"] != "takeover":
            mode = "AUTOPILOT (steer to take over)"
        self._text(mode, (x0, y), driver_color)
        y += 22
        rows = [
            ("track", f"{hud['track']} {hud['direction']}"),
            ("speed", f"{hud['speed']:.2f} m/s"),
            ("lap", f"{hud['lap']}   time {hud['lap_time']:.1f} s"),
            ("last lap", f"{hud['last_lap']:.2f} s" if hud["last_lap"] else "-"),
            ("cross-track", f"{hud['lateral']:+.2f} m"),
            ("steering", f"{hud['steering']:+.2f}"),
        ]
        for name, value in rows:
            self._text(name, (x0, y), self.DIM)
            self._text(value, (x0 + 90, y))
            y += 18
        self._bar(x0 + 90, y - 4, self.PANEL - 110, hud["steering"], True, driver_color)
        y += 10
        self._text("throttle", (x0, y), self.DIM)
        self._text(f"{hud['throttle']:+.2f}", (x0 + 90, y))
        y += 18
        self._bar(x0 + 90, y - 4, self.PANEL - 110, hud["throttle"], False, driver_color)
        y += 10
        if hud["gamepad"]:
            self._text(f"pad: {hud['gamepad'][:28]}", (x0, y), self.DIM)
            y += 18
        self._text("H / F1: help", (x0, y), self.DIM)
        if banner:
            surf = self.big.render(banner, True, self.RED)
            r = surf.get_rect(center=(self.view_size[0] // 2, self.view_size[1] // 2))
            scr.blit(surf, r)
        if help_on:
            self._help()
        pygame.display.flip()

    def _help(self) -> None:
        import pygame  # lazy: see the module docstring

        w, h = self.size
        overlay = pygame.Surface((w, h), pygame.SRCALPHA)
        overlay.fill((0, 0, 0, 200))
        self.screen.blit(overlay, (0, 0))
        y = 20
        self._text("trackpilot drive: keys", (20, y))
        y += 28
        for key, what in HELP_LINES:
            self._text(key, (20, y), (255, 210, 90))
            self._text(what, (150, y))
            y += 20
