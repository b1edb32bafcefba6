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

from agents.base import PilotNeeds
from agents.expert import ExpertConfig, ExpertPilot
from agents.human import HumanConfig, HumanPilot
from agents.loop import ClosedLoop, LoopObserver
from sim.drive_display import Display
from sim.drive_record import EpisodeRecorder
from sim.env import TrackEnv
from tracks import builtin_names
from tracks.common import DIRECTIONS, parse_size

__all__ = ["OFF_TRACK_BANNER_FRAMES", "Copilot", "DriveConfig", "DriveSession"]

OFF_TRACK_BANNER_FRAMES = 30  # 1.5 s of simulated time at 20 Hz


@dataclass(frozen=True)
class DriveConfig:
    """One session of ``python -m sim.drive`` (stored in every episode it writes)."""

    track: str = "oval"  # built-in name, gen:<seed> or a track file
    direction: str = field(
        default="ccw",
        metadata={"choices": DIRECTIONS, "help": "ccw or cw, at the start (C switches)"},
    )
    image_size: tuple[int, int] = (120, 160)  # camera HxW (same as the dataset's)
    out: str = "data/manual"  # dataset directory (created, or appended to)
    seed: int = 0  # env seed of the first episode; episode k uses seed + k
    speed: float = 2.0  # autopilot cruise speed, m/s
    fps: float = 20.0  # frames per second, one 50 ms step each: 20 = real time, 0 = unthrottled
    max_frames: int | None = None  # quit after this many frames (tests)
    max_episode_frames: int = 6000  # split longer recordings (bounds memory: ~350 MB at 120x160)
    scale: int = 4  # camera view magnification in the window
    record: bool = False  # start with recording on
    autopilot: bool = False  # start with the autopilot on
    human: HumanConfig = field(default_factory=HumanConfig)

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be 'ccw' or 'cw', got {self.direction!r}")
        h, w = parse_size(self.image_size, what="image_size")
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


class Copilot:
    """The person and the autopilot as one pilot: who drives each frame, and its label.

    With the autopilot off the person drives (``driver = "human"``). With it on the
    expert drives (``"expert"``) and the person's smoothed command follows its
    command (``HumanPilot.sync``), so that a takeover is bumpless; any input from the
    person overrides it for that frame (``"takeover"``): the label is the person's
    command, except that a partial override keeps the autopilot's value for the
    control left alone (steering only: the autopilot's throttle, as with lane-keeping
    assists; throttle only: its steering). :meth:`executed` is what the motors get:
    the expert's perturbation (noise, drift) of its own label, the label itself when
    the person steers. Privileged: the loop hands it the track, for the expert.
    """

    name = "copilot"
    needs = PilotNeeds(obs_mode="image", throttle=True, privileged=True)

    def __init__(self, human: HumanPilot, expert: ExpertPilot, autopilot: bool = False) -> None:
        self.human = human
        self.expert = expert
        self.autopilot = autopilot
        self.driver = "expert" if autopilot else "human"  # who drove the last frame

    def set_track(self, track: Any) -> None:
        self.expert.set_track(track)

    def reset(self) -> None:
        self.expert.reset()
        self.human.reset()

    def act(self, observation: Any, info: dict[str, Any]) -> np.ndarray:
        human = self.human
        human_cmd = human.act(observation, info)
        if not self.autopilot:
            self.driver = "human"
            return human_cmd
        expert_cmd = self.expert.act(observation, info)
        if not human.active:
            self.driver = "expert"
            human.sync(expert_cmd)
            return expert_cmd
        self.driver = "takeover"
        label = human_cmd.copy()
        # a partial override keeps the autopilot's value for the other control
        if not human.steering_active:
            label[0] = human.steering = float(expert_cmd[0])
        if not human.throttle_active:
            label[1] = human.throttle = float(expert_cmd[1])
        return label

    def executed(self, label: np.ndarray) -> np.ndarray:
        """The command sent to the motors for this frame's ``label``."""
        return self.expert.executed(label) if self.driver == "expert" else label

    def metadata(self) -> dict[str, Any]:
        return {
            "kind": "copilot",
            "name": self.name,
            "human": self.human.metadata(),
            "expert": self.expert.metadata(),
        }


class DriveSession(LoopObserver):
    """The env, the copilot and the recorder; one :meth:`frame` per control step.

    The copilot drives the env through ``agents.loop.ClosedLoop`` (no latency, its
    throttle on the motors, the episode ends when the car leaves the road). The
    session observes that loop: every frame the copilot takes is recorded with its
    label and driver (while recording) before the env steps.
    """

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
        self.copilot = Copilot(self.human, self.expert, autopilot=cfg.autopilot)
        self.loop = ClosedLoop(
            self.env,
            self.copilot,
            throttle=True,
            speed=cfg.speed,
            on_leave_road="stop",
            perturb=self.copilot.executed,
            observers=[self],
            trajectory_hz=None,
        )
        self.track_spec = cfg.track
        self.direction = cfg.direction
        self.recording = cfg.record
        self.help_on = False
        self.banner = ""
        self.banner_frames = 0
        self.resets = 0
        self.seed = cfg.seed
        self.display: Display | None = None
        self.last_label = np.zeros(2, np.float32)

    @property
    def autopilot(self) -> bool:
        return self.copilot.autopilot

    @autopilot.setter
    def autopilot(self, on: bool) -> None:
        self.copilot.autopilot = bool(on)

    @property
    def driver(self) -> str:
        """Who drove the last frame: "human", "expert" or "takeover"."""
        return self.copilot.driver

    @property
    def obs(self) -> np.ndarray | None:
        return self.loop.obs

    @property
    def info(self) -> dict[str, Any]:
        return self.loop.info

    # -------------------------------------------------------------- episode control
    def reset(self) -> None:
        self.seed = self.cfg.seed + self.resets
        self.resets += 1
        self.loop.reset(
            seed=self.seed, options={"track": self.track_spec, "direction": self.direction}
        )
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
    def on_frame(self, obs: Any, info: dict[str, Any], command: np.ndarray) -> None:
        """The loop's observer hook: the copilot took ``obs``; ``command`` is its label."""
        if not self.recording:
            return
        self.recorder.add(obs, info, command, self.driver, self._context, self.expert.metadata)
        if len(self.recorder) >= self.cfg.max_episode_frames:
            self.end_episode("split")

    def frame(self) -> None:
        """One control step: the copilot drives, the frame is recorded, the env steps; an
        excursion (off the road, flipped) ends the episode and restarts at the line."""
        step = self.loop.step()
        self.last_label = np.asarray(step.command, np.float32)
        if self.banner_frames > 0:
            self.banner_frames -= 1
            if self.banner_frames == 0:
                self.banner = ""
        if step.done:
            ended = "flipped" if step.info["flipped"] else "off_track"
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
