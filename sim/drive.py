"""``python -m sim.drive``: drive the car yourself (pygame), record laps, hand over to the autopilot.

    python -m sim.drive --track kidney --direction cw --out data/manual

The window shows the car's camera (what a learned pilot sees, scaled up), a
top-down map with the car, and a HUD. Keys (also on the help overlay, H / F1):

    arrows / WASD   steer, throttle (W / UP), brake and reverse (S / DOWN)
    R               start / stop recording
    P               autopilot on / off (the expert; steer or throttle to take over)
    Backspace       reset to the start line
    C               switch direction (ccw <-> cw)
    T               next built-in track
    H, F1           help overlay
    Esc, Q          quit (also the window's close button)

The autopilot is the privileged expert (``agents.expert``). WASD steering wins
over the brief's "A = autopilot, D = direction", hence P and C.

Takeover: while the autopilot is on, any human input (a driving key held, the
gamepad outside its deadzone) overrides it for that frame: the frame is marked
``takeover=1`` and its labels are the human's command. A partial override
keeps the autopilot's value for the control the person leaves alone (steering
only: the autopilot's throttle, as with lane-keeping assists, so a quick
correction does not brake the car; throttle only: the autopilot's steering).
The takeover is bumpless: the human's smoothed command starts from the
autopilot's current one.

Recording: frames are kept in memory and written as one episode (through
``sim.dataset.DatasetWriter``: temp file, fsync, rename, manifest) when
recording is stopped, on reset, on a track or direction change, when the car
leaves the road, and on quit, including a quit by an exception (``finally``).
The frame fields and the dataset info are those of ``python -m sim.record``,
so manual and expert episodes can share one dataset directory. An episode's
``source`` is ``"expert"`` (autopilot only), ``"human"`` (no autopilot) or
``"takeover"`` (both); ``meta.extra["segments"]`` lists who drove which frames
(``expert``, ``human``, ``takeover``) and ``extra["ended"]`` why it ended.
A recording longer than ``max_episode_frames`` (5 minutes) is split
(``ended = "split"``) to bound memory. If a write fails, the frames are kept
and written again when the session ends.

Off track: leaving the road (or flipping) ends the episode. Its frames are
saved, flagged ``extra["ended"] = "off_track"`` (or ``"flipped"``), because a
person's approach to the edge and the attempts to recover are useful data; a
consumer that wants clean laps only can drop them by that flag. The car is
then reset to the start line and "OFF TRACK" is shown for a moment; recording
stays on (the next frames form a new episode).

Time: each displayed frame advances the simulation by one control step
(50 ms at 20 Hz), so ``--fps 20`` is real time, lower is slow motion, and
``--fps 0`` runs unthrottled (tests). Works headless with
``SDL_VIDEODRIVER=dummy``; ``--script FILE`` feeds it scripted key events.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from agents.human import GamepadConfig, HumanConfig

logger = logging.getLogger(__name__)

DRIVERS = ("human", "expert", "takeover")
SCRIPT_ACTIONS = ("down", "up", "press", "quit")
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
OFF_TRACK_BANNER_FRAMES = 30  # 1.5 s of simulated time at 20 Hz


@dataclass(frozen=True)
class DriveConfig:
    """One session of ``python -m sim.drive`` (stored in every episode it writes)."""

    track: str = "oval"  # built-in name, gen:<seed> or a track file
    direction: str = "ccw"  # "ccw" or "cw"
    image_size: tuple[int, int] = (120, 160)  # camera H, W (same as the dataset's)
    out: str = "data/manual"  # dataset directory (created, or appended to)
    seed: int = 0  # env seed of the first episode; episode k uses seed + k
    speed: float = 2.0  # autopilot cruise speed, m/s
    fps: float = 20.0  # frames per second shown; one 50 ms control step per frame; 0 = unthrottled
    max_frames: int | None = None  # quit after this many frames (tests)
    max_episode_frames: int = 6000  # split longer recordings (bounds memory: ~350 MB at 120x160)
    scale: int = 4  # camera view magnification in the window
    record: bool = False  # start with recording on
    autopilot: bool = False  # start with the autopilot on
    human: HumanConfig = field(default_factory=HumanConfig)

    def __post_init__(self) -> None:
        if self.direction not in ("ccw", "cw"):
            raise ValueError(f"direction must be 'ccw' or 'cw', got {self.direction!r}")
        h, w = self.image_size
        if not (16 <= h <= 1024 and 16 <= w <= 1024):
            raise ValueError(f"image size must be 16..1024 pixels each way, got {h}x{w}")
        if not 0.0 < self.speed <= 5.0:
            raise ValueError(f"speed must be in (0, 5] m/s, got {self.speed}")
        if not (self.fps >= 0 and math.isfinite(self.fps)):
            raise ValueError(f"fps must be >= 0 (0 = unthrottled), got {self.fps}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max-frames must be >= 1, got {self.max_frames}")
        if self.max_episode_frames < 1:
            raise ValueError(f"max_episode_frames must be >= 1, got {self.max_episode_frames}")
        if not 1 <= self.scale <= 16:
            raise ValueError(f"scale must be in 1..16, got {self.scale}")


# ------------------------------------------------------------------------------------ script


@dataclass(frozen=True)
class ScriptEvent:
    """A synthetic input posted at the start of frame ``frame`` (tests, demos)."""

    frame: int
    action: str  # "down", "up", "press" (down then up in the same frame) or "quit"
    key: str = ""  # a pygame key name: "left", "w", "r", "backspace", "escape", "f1" ...

    def __post_init__(self) -> None:
        if self.frame < 0:
            raise ValueError(f"script frame must be >= 0, got {self.frame}")
        if self.action not in SCRIPT_ACTIONS:
            raise ValueError(f"script action must be one of {SCRIPT_ACTIONS}, got {self.action!r}")
        if self.action != "quit" and not self.key:
            raise ValueError(f"script action {self.action!r} needs a key")


def parse_script(text: str) -> list[ScriptEvent]:
    """``FRAME ACTION [KEY]`` per line (``#`` starts a comment), e.g. ``12 down left``."""
    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        try:
            if len(parts) not in (2, 3):
                raise ValueError("expected FRAME ACTION [KEY]")
            out.append(ScriptEvent(int(parts[0]), parts[1], parts[2] if len(parts) > 2 else ""))
        except ValueError as e:
            raise ValueError(f"script line {n} ({raw.strip()!r}): {e}") from None
    return out


class ScriptPlayer:
    """Posts scripted inputs as real pygame events, so they take the normal event path."""

    def __init__(self, events: Iterable[ScriptEvent | tuple]) -> None:
        import pygame

        self._by_frame: dict[int, list[ScriptEvent]] = {}
        for e in events:
            ev = e if isinstance(e, ScriptEvent) else ScriptEvent(*e)
            if ev.key:
                try:
                    pygame.key.key_code(ev.key)
                except ValueError:
                    raise ValueError(f"script: unknown key name {ev.key!r}") from None
            self._by_frame.setdefault(ev.frame, []).append(ev)

    def post(self, frame: int) -> None:
        import pygame

        for ev in self._by_frame.get(frame, ()):
            if ev.action == "quit":
                pygame.event.post(pygame.event.Event(pygame.QUIT))
                continue
            key = pygame.key.key_code(ev.key)
            types = {
                "down": (pygame.KEYDOWN,),
                "up": (pygame.KEYUP,),
                "press": (pygame.KEYDOWN, pygame.KEYUP),
            }[ev.action]
            for t in types:
                pygame.event.post(pygame.event.Event(t, key=key, mod=0, scancode=0, unicode=""))


# ------------------------------------------------------------------------------------ recorder


def _key_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "", text) or "track"


class EpisodeRecorder:
    """Frames of the episode being recorded, kept in memory until :meth:`flush`."""

    def __init__(self, out: str | Path, info: dict, config: DriveConfig) -> None:
        from sim.record import FRAME_KEYS

        self.out = Path(out)
        self.info = info
        self.config = config
        self.frame_keys = FRAME_KEYS
        self._writer = None
        self._stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
        self._count = 0
        self.episodes_written = 0
        self.frames_written = 0
        self.last_written: str | None = None
        self._clear()

    def _clear(self) -> None:
        self.frames: dict[str, list] = {k: [] for k in self.frame_keys}
        self.drivers: list[str] = []
        self.context: dict[str, Any] | None = None
        self.expert_meta: dict | None = None
        self.lap0 = 0

    def writer(self):
        """The dataset writer, created on first use (checks an existing dataset's info)."""
        if self._writer is None:
            from sim.dataset import DatasetWriter

            self._writer = DatasetWriter(self.out, self.info)
        return self._writer

    def __len__(self) -> int:
        return len(self.drivers)

    def add(
        self,
        obs: np.ndarray,
        info: dict,
        label: np.ndarray,
        driver: str,
        context: Callable[[], dict[str, Any]],
        expert_meta: Callable[[], dict] | None = None,
    ) -> None:
        """One frame: what the camera saw, the state, and the command given for it.

        ``context()`` (track, direction, seed ...) is called on an episode's first frame;
        ``expert_meta()`` on its first frame driven by the autopilot.
        """
        if driver not in DRIVERS:
            raise ValueError(f"driver must be one of {DRIVERS}, got {driver!r}")
        if self.context is None:
            self.context = dict(context())
            self.lap0 = int(info["lap"])
        from sim.record import append_frame

        append_frame(
            self.frames, np.asarray(obs, dtype=np.uint8), label, info, driver == "takeover"
        )
        self.drivers.append(driver)
        if driver != "human" and expert_meta is not None and self.expert_meta is None:
            self.expert_meta = expert_meta()

    @staticmethod
    def segments(drivers: Sequence[str]) -> list[dict[str, Any]]:
        """Run-length ``[{"start", "end", "driver"}]`` (end exclusive) of per-frame drivers."""
        out: list[dict[str, Any]] = []
        for i, d in enumerate(drivers):
            if out and out[-1]["driver"] == d:
                out[-1]["end"] = i + 1
            else:
                out.append({"start": i, "end": i + 1, "driver": d})
        return out

    @staticmethod
    def source(drivers: Sequence[str]) -> str:
        kinds = set(drivers)
        if kinds == {"expert"}:
            return "expert"
        if kinds == {"human"}:
            return "human"
        return "takeover"

    def arrays(self) -> dict[str, np.ndarray]:
        from sim.record import frames_to_arrays

        return frames_to_arrays(self.frames)

    def _new_key(self, track_name: str, direction: str) -> str:
        writer = self.writer()
        while True:
            self._count += 1
            key = f"manual-{_key_part(track_name)}-{direction}-{self._stamp}-{self._count:03d}"
            if not writer.has_episode(key):
                return key

    def flush(self, ended: str, laps_now: int, lap_times: Sequence[float]) -> dict | None:
        """Write the frames held (if any) as one episode; returns its manifest record."""
        if not self.drivers:
            self._clear()
            return None
        from sim.dataset import EpisodeMeta

        ctx = self.context or {}
        drivers = list(self.drivers)
        meta = EpisodeMeta(
            track_id=ctx["track_id"],
            track_hash=ctx["track_hash"],
            direction=ctx["direction"],
            seed=ctx["seed"],
            source=self.source(drivers),
            laps=max(0, int(laps_now) - self.lap0),
            expert=self.expert_meta,
            extra={
                "recorder": "sim.drive",
                "track_spec": ctx["track_spec"],
                "ended": ended,
                "segments": self.segments(drivers),
                "takeover_frames": drivers.count("takeover"),
                "lap_times": [float(x) for x in lap_times],  # env lap times since its reset
                "human": ctx.get("human"),
                "drive_config": _config_dict(self.config),
            },
        )
        key = self._new_key(ctx["track_id"], ctx["direction"])
        record = self.writer().write_episode(key, self.arrays(), meta)
        # cleared only once written: after a failed write the frames stay, for the final flush
        self._clear()
        self.episodes_written += 1
        self.frames_written += record["frames"]
        self.last_written = key
        print(
            f"wrote episode {key}: {record['frames']} frames, source {record['source']}, "
            f"ended {ended}"
        )
        return record


def _config_dict(cfg: DriveConfig) -> dict[str, Any]:
    d = asdict(cfg)
    d["image_size"] = list(cfg.image_size)
    return d


# ------------------------------------------------------------------------------------ drawing


def _polygon_area(pts: Sequence[tuple[float, float]]) -> float:
    xy = np.asarray(pts)
    x, y = xy[:, 0], xy[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


class TrackMap:
    """The track edges drawn once onto a surface; the car is drawn on top each frame."""

    def __init__(self, track, size: tuple[int, int], pad: int = 8) -> None:
        import pygame

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
        import pygame

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
        import pygame

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
        import pygame

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
        import pygame

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
        import pygame

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


# ------------------------------------------------------------------------------------ session


class DriveSession:
    """The env, both pilots and the recorder; one :meth:`frame` per control step."""

    def __init__(self, cfg: DriveConfig, recorder: EpisodeRecorder) -> None:
        from agents.expert import ExpertConfig, ExpertPilot
        from agents.human import HumanPilot
        from sim.env import TrackEnv

        self.cfg = cfg
        self.recorder = recorder
        self.env = TrackEnv(
            track=cfg.track, direction=cfg.direction, image_size=cfg.image_size, fixed_speed=None
        )
        human_cfg = cfg.human
        if abs(human_cfg.dt - self.env.dt) > 1e-12:
            from dataclasses import replace

            human_cfg = replace(human_cfg, dt=self.env.dt)
        self.human = HumanPilot(human_cfg)
        self.expert = ExpertPilot(None, ExpertConfig(cruise_speed=cfg.speed), self.env.car_params)
        self.track_spec = cfg.track
        self.direction = cfg.direction
        self.autopilot = cfg.autopilot
        self.recording = cfg.record
        self.help_on = False
        self.banner = ""
        self.banner_frames = 0
        self.resets = 0
        self.seed = cfg.seed
        self.display: Display | None = None
        self.obs: np.ndarray | None = None
        self.info: dict[str, Any] = {}
        self.last_label = np.zeros(2, np.float32)
        self.driver = "expert" if self.autopilot else "human"

    # -------------------------------------------------------------- episode control
    def reset(self) -> None:
        self.seed = self.cfg.seed + self.resets
        self.resets += 1
        self.obs, self.info = self.env.reset(
            seed=self.seed, options={"track": self.track_spec, "direction": self.direction}
        )
        self.expert.set_track(self.env.track)
        self.expert.reset()
        self.human.reset()
        self.last_label = np.zeros(2, np.float32)
        if self.display is not None:
            self.display.set_track(self.env.track)

    def end_episode(self, ended: str) -> None:
        """Write what was recorded since the last episode boundary."""
        info = self.info or {}
        self.recorder.flush(ended, info.get("lap", 0), info.get("lap_times", ()))

    def _context(self) -> dict[str, Any]:
        return {
            "track_id": self.env.track.name,
            "track_hash": self.env.track.geometry_hash,
            "track_spec": self.track_spec,
            "direction": self.direction,
            "seed": self.seed,
            "human": self.human.metadata(),
        }

    # -------------------------------------------------------------- input
    def handle(self, event: Any) -> bool:
        """Apply one pygame event; False when the user asked to quit."""
        import pygame

        if event.type == pygame.QUIT:
            return False
        self.human.handle_event(event)
        if event.type != pygame.KEYDOWN:
            return True
        k = event.key
        if k in (pygame.K_ESCAPE, pygame.K_q):
            return False
        if k == pygame.K_r:
            if self.recording:
                self.end_episode("stopped")
            self.recording = not self.recording
        elif k == pygame.K_p:
            self.autopilot = not self.autopilot
            if not self.autopilot:
                self.human.sync(self.last_label)  # hand over without a jolt
        elif k == pygame.K_BACKSPACE:
            self.end_episode("reset")
            self.reset()
        elif k == pygame.K_c:
            self.end_episode("direction_change")
            self.direction = "cw" if self.direction == "ccw" else "ccw"
            self.reset()
        elif k == pygame.K_t:
            from tracks import builtin_names

            self.end_episode("track_change")
            names = list(builtin_names())
            i = names.index(self.track_spec) + 1 if self.track_spec in names else 0
            self.track_spec = names[i % len(names)]
            self.reset()
        elif k in (pygame.K_h, pygame.K_F1):
            self.help_on = not self.help_on
        return True

    # -------------------------------------------------------------- one control step
    def frame(self) -> None:
        obs, info = self.obs, self.info
        human_cmd = self.human.act(obs, info)
        if self.autopilot:
            expert_cmd = self.expert.act(obs, info)
            if self.human.active:
                driver = "takeover"
                label = human_cmd.copy()
                # a partial override keeps the autopilot's value for the other control
                if not self.human.steering_active:
                    label[0] = self.human.steering = float(expert_cmd[0])
                if not self.human.throttle_active:
                    label[1] = self.human.throttle = float(expert_cmd[1])
                executed = label
            else:
                driver = "expert"
                label = expert_cmd
                executed = self.expert.executed(label)
                self.human.sync(label)
        else:
            driver = "human"
            label = executed = human_cmd
        self.driver = driver
        if self.recording:
            self.recorder.add(obs, info, label, driver, self._context, self.expert.metadata)
            if len(self.recorder) >= self.cfg.max_episode_frames:
                self.end_episode("split")
        self.last_label = np.asarray(label, np.float32)
        self.obs, _, terminated, _, self.info = self.env.step(executed)
        if self.banner_frames > 0:
            self.banner_frames -= 1
            if self.banner_frames == 0:
                self.banner = ""
        if terminated:
            ended = "flipped" if self.info["flipped"] else "off_track"
            self.end_episode(ended)
            self.banner = "FLIPPED" if ended == "flipped" else "OFF TRACK"
            self.banner_frames = OFF_TRACK_BANNER_FRAMES
            self.reset()

    def hud(self) -> dict[str, Any]:
        info = self.info
        lap_times = info.get("lap_times", [])
        return {
            "driver": self.driver,
            "autopilot": self.autopilot,
            "recording": self.recording,
            "frames": len(self.recorder),
            "episodes_written": self.recorder.episodes_written,
            "frames_written": self.recorder.frames_written,
            "track": self.env.track.name,
            "direction": self.direction,
            "speed": float(info.get("speed", 0.0)),
            "lap": int(info.get("lap", 0)),
            "lap_time": float(info.get("t", 0.0)) - float(sum(lap_times)),
            "last_lap": float(lap_times[-1]) if lap_times else 0.0,
            "lateral": float(info.get("lateral", 0.0)),
            "steering": float(self.last_label[0]),
            "throttle": float(self.last_label[1]),
            "pose": info.get("pose", (0.0, 0.0, 0.0)),
            "gamepad": self.human.joystick_name,
        }

    def close(self) -> None:
        self.env.close()


def run(cfg: DriveConfig, script: Iterable[ScriptEvent | tuple] | None = None) -> dict[str, Any]:
    """Open the window and drive until quit; returns a summary. Writes what was recorded."""
    import pygame

    from sim.record import RecordConfig, dataset_info_cached

    info = dataset_info_cached(RecordConfig(image_size=cfg.image_size))
    recorder = EpisodeRecorder(cfg.out, info, cfg)
    if (Path(cfg.out) / "manifest.json").exists():
        recorder.writer()  # refuse an incompatible dataset now, not after a lap of driving

    # only what is used: pygame.init() would also open audio, which fails noisily without a card
    pygame.display.init()
    pygame.font.init()
    pygame.joystick.init()
    session = None
    ended = "error"
    frames = 0
    try:
        session = DriveSession(cfg, recorder)
        session.display = Display(cfg.image_size, cfg.scale)
        player = ScriptPlayer(script or ())
        if pygame.joystick.get_count() > 0:
            session.human.attach_joystick(pygame.joystick.Joystick(0))
        session.reset()
        clock = pygame.time.Clock()
        running = True
        while running:
            player.post(frames)
            for event in pygame.event.get():
                if not session.handle(event):
                    running = False
            if not running:
                ended = "quit"
                break
            session.frame()
            frames += 1
            session.display.draw(session.obs, session.hud(), session.help_on, session.banner)
            if cfg.fps > 0:
                clock.tick(cfg.fps)
            if cfg.max_frames is not None and frames >= cfg.max_frames:
                ended = "max_frames"
                break
    except BaseException as exc:
        ended = "interrupted" if isinstance(exc, KeyboardInterrupt) else "error"
        raise
    finally:
        # Never lose recorded frames: whatever ended the loop, write them. If the write itself
        # fails while an exception is already propagating, log it and let the first one through.
        try:
            if session is not None:
                session.end_episode(ended)
        except Exception:
            if ended not in ("error", "interrupted"):
                raise
            logger.exception("could not write the recorded frames")
        finally:
            if session is not None:
                session.close()
            pygame.quit()
    return {
        "out": str(cfg.out),
        "frames": frames,
        "episodes_written": recorder.episodes_written,
        "frames_written": recorder.frames_written,
    }


# ------------------------------------------------------------------------------------ CLI


def _size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)x(\d+)", text.strip().lower())
    if not m:
        raise argparse.ArgumentTypeError(f"expected HxW such as 120x160, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def _axes(text: str) -> tuple[int, int, int | None]:
    try:
        parts = [int(v) for v in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) not in (2, 3):
        raise argparse.ArgumentTypeError(
            f"expected STEER,THROTTLE[,BRAKE] axis numbers such as 0,5,2, got {text!r}"
        )
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m sim.drive",
        description="Drive the car with the keyboard or a gamepad; record laps; "
        "hand over to the autopilot (P) and take over at any moment.",
    )
    ap.add_argument("--track", default="oval", help="built-in name, gen:<seed> or a track file")
    ap.add_argument("--direction", choices=("ccw", "cw"), default="ccw")
    ap.add_argument("--image-size", type=_size, default=(120, 160), help="camera HxW")
    ap.add_argument("--out", default="data/manual", help="dataset directory (created or appended)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--speed", type=float, default=2.0, help="autopilot cruise speed, m/s")
    ap.add_argument(
        "--fps",
        type=float,
        default=20.0,
        help="frames per second; one 50 ms step per frame, so 20 = real time, 0 = unthrottled",
    )
    ap.add_argument("--max-frames", type=int, default=None, help="quit after N frames")
    ap.add_argument("--scale", type=int, default=4, help="camera view magnification")
    ap.add_argument("--record", action="store_true", help="start with recording on")
    ap.add_argument("--autopilot", action="store_true", help="start with the autopilot on")
    ap.add_argument(
        "--joy-axes",
        type=_axes,
        default=(0, 5, None),
        help="gamepad axes STEER,THROTTLE[,BRAKE] (default 0,5: left stick x, right trigger)",
    )
    ap.add_argument(
        "--joy-throttle",
        choices=("trigger", "stick"),
        default="trigger",
        help="throttle axis is a trigger (rests at -1) or a stick (up = forward)",
    )
    ap.add_argument("--deadzone", type=float, default=0.08, help="gamepad deadzone")
    ap.add_argument("--script", type=Path, default=None, help="scripted inputs: FRAME ACTION [KEY]")
    return ap


def main(
    argv: Sequence[str] | None = None, script: Iterable[ScriptEvent | tuple] | None = None
) -> int:
    """Run the driving UI. ``script`` (tests): inputs posted as pygame events, see ScriptEvent."""
    args = build_parser().parse_args(argv)
    try:
        steer_axis, throttle_axis, brake_axis = args.joy_axes
        cfg = DriveConfig(
            track=args.track,
            direction=args.direction,
            image_size=args.image_size,
            out=args.out,
            seed=args.seed,
            speed=args.speed,
            fps=args.fps,
            max_frames=args.max_frames,
            scale=args.scale,
            record=args.record,
            autopilot=args.autopilot,
            human=HumanConfig(
                gamepad=GamepadConfig(
                    steer_axis=steer_axis,
                    throttle_axis=throttle_axis,
                    brake_axis=brake_axis,
                    throttle_mode=args.joy_throttle,
                    deadzone=args.deadzone,
                )
            ),
        )
        events: list[ScriptEvent | tuple] = list(script or ())
        if args.script is not None:
            events += parse_script(args.script.read_text(encoding="utf-8"))
        from tracks import load_track

        if not cfg.track.startswith("gen:"):
            load_track(cfg.track)  # fail fast on a bad name or file
        t0 = time.perf_counter()
        summary = run(cfg, events)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    wall = time.perf_counter() - t0
    print(
        f"wrote {summary['episodes_written']} episodes ({summary['frames_written']} frames) "
        f"to {os.path.abspath(summary['out'])}; drove {summary['frames']} frames in {wall:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
