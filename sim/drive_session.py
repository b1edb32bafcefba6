"""One session of ``python -m sim.drive``: the env, the person, the autopilot, the recorder.

:class:`DriveSession` applies the keys (:meth:`~DriveSession.handle`) and runs one
control step per displayed frame (:meth:`~DriveSession.frame`); the window
(``sim.drive_display``) only draws what :meth:`~DriveSession.hud` reports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from agents.expert import ExpertConfig, ExpertPilot
from agents.human import HumanConfig, HumanPilot
from sim.drive_display import Display
from sim.drive_record import EpisodeRecorder
from sim.env import TrackEnv
from tracks import builtin_names

__all__ = ["OFF_TRACK_BANNER_FRAMES", "DriveConfig", "DriveSession"]

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


class DriveSession:
    """The env, both pilots and the recorder; one :meth:`frame` per control step."""

    def __init__(self, cfg: DriveConfig, recorder: EpisodeRecorder) -> None:
        self.cfg = cfg
        self.recorder = recorder
        self.env = TrackEnv(
            track=cfg.track, direction=cfg.direction, image_size=cfg.image_size, fixed_speed=None
        )
        human_cfg = cfg.human
        if abs(human_cfg.dt - self.env.dt) > 1e-12:
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
        import pygame  # lazy: importing it prints a banner and loads SDL (see sim.drive_display)

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
