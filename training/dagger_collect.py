"""One DAgger drive: the learner drives at its latency, the expert labels every frame.

DAgger (Ross et al. 2011) trains on the states the *learner* visits, labelled by the
expert. Here the learner drives through the one closed loop (``agents.loop.ClosedLoop``)
at the latency it has on its car, so the states it visits are those its latency leads
it to. Every camera frame of the drive is kept (not only those the learner looked at),
each labelled with the expert's command for the state at the moment a command computed
from it would act, ``t + L`` (:mod:`training.relabel`, from the drive's own trajectory:
the same function that relabels recorded data for ``--compensate-latency``).

A safety driver, as in HG-DAgger (Kelly et al. 2019): when the car strays past
``takeover_lateral`` of the half width from the centreline, the expert takes over
(its commands under the same latency) until the car is back within
``handback_lateral`` metres and ``handback_heading`` radians of the line; those frames
are marked ``takeover=1``, as ``sim.drive`` marks a person's takeover, and the episode's
``extra["segments"]`` says who drove which frames. Leaving the road all the same is an
intervention (re-centred, the drive goes on); the frames whose ``t + L`` falls across
that jump have no label and are left out.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agents.base import PilotNeeds, pilot_metadata, pilot_needs
from agents.expert import ExpertConfig, ExpertPilot
from agents.loop import ClosedLoop, LoopObserver
from sim.dataset import DatasetWriter, EpisodeMeta, append_frame, frames_to_arrays
from sim.dataset.frames import FRAME_KEYS
from sim.env import TrackEnv
from training.relabel import Trajectory, relabel_trajectory

__all__ = ["Copilot", "DriveJob", "DriveSettings", "drive_episode"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DriveSettings:
    """How DAgger drives (the same for every drive of a round)."""

    laps: int = 1  # laps per drive
    speed: float = 2.0  # m/s, cruise control (the expert's cruise speed when recording)
    latency_s: float = 0.0  # the latency the labels are for (the charge's median)
    latency_samples: tuple[float, ...] | None = None  # each inference draws from these (s)
    takeover_lateral: float = 0.6  # fraction of the half width off centre: the expert takes over
    handback_lateral: float = 0.1  # m off centre, at most, to hand back to the learner
    handback_heading: float = 0.15  # rad heading error, at most, to hand back
    max_time_s: float | None = None  # per drive; none: agents.loop.default_max_time

    def __post_init__(self) -> None:
        if self.laps < 1:
            raise ValueError(f"laps must be >= 1, got {self.laps}")
        if not 0 < self.takeover_lateral <= 1.5:
            raise ValueError(f"takeover_lateral must be in (0, 1.5], got {self.takeover_lateral}")
        if self.handback_lateral <= 0 or self.handback_heading <= 0:
            raise ValueError("handback_lateral and handback_heading must be > 0")
        if self.latency_s < 0:
            raise ValueError(f"latency_s must be >= 0, got {self.latency_s}")


@dataclass(frozen=True)
class DriveJob:
    """One drive: which track and direction, its episode key, seed and round."""

    key: str  # the episode's key in the dataset
    track: str  # track spec (built-in name, gen:<seed>, a file)
    direction: str
    seed: int
    round: int


class Copilot:
    """The learner drives; the expert takes over when the car strays (``driver``).

    Privileged (the loop hands it the track and the true state, for the expert and the
    takeover rule); the learner itself sees only its camera frame.
    """

    name = "dagger-copilot"

    def __init__(self, learner: Any, expert: ExpertPilot, settings: DriveSettings) -> None:
        self.learner = learner
        self.expert = expert
        self.settings = settings
        own = pilot_needs(learner)
        self.needs = PilotNeeds(obs_mode=own.obs_mode, image_size=own.image_size, privileged=True)
        self.driver = "pilot"  # who gives the command now: "pilot" or "takeover"
        self.takeovers = 0

    def set_track(self, track: Any) -> None:
        self.expert.set_track(track)

    def reset(self) -> None:
        # After a re-centring the car is on the line again: the learner drives.
        self.learner.reset()
        self.expert.reset()
        self.driver = "pilot"

    def act(self, observation: Any, info: dict[str, Any]) -> np.ndarray:
        s = self.settings
        lateral = float(info["lateral"])
        half = float(info["half_width_left"] if lateral >= 0 else info["half_width_right"])
        if self.driver == "pilot" and abs(lateral) > s.takeover_lateral * half:
            self.driver = "takeover"
            self.takeovers += 1
        elif (
            self.driver == "takeover"
            and abs(lateral) <= s.handback_lateral
            and abs(float(info["heading_error"])) <= s.handback_heading
        ):
            self.driver = "pilot"
        if self.driver == "takeover":
            return self.expert.act(observation, info)
        return self.learner.act(observation, info)

    def metadata(self) -> dict[str, Any]:
        meta = pilot_metadata(self.learner)
        return {**meta, "kind": str(meta.get("kind", "unknown"))}


class _EveryFrame(LoopObserver):
    """Every camera frame of the drive with its state and whether the expert drove it."""

    every_frame = True

    def __init__(self, copilot: Copilot) -> None:
        self.copilot = copilot
        self.frames: dict[str, list] = {k: [] for k in FRAME_KEYS}
        self.drivers: list[str] = []

    def _add(self, obs: Any, info: dict[str, Any]) -> None:
        takeover = self.copilot.driver == "takeover"
        # The label is filled in after the drive, from the trajectory (training.relabel).
        append_frame(self.frames, obs, (0.0, 0.0), info, takeover=takeover)
        self.drivers.append(self.copilot.driver)

    def on_reset(self, obs: Any, info: dict[str, Any]) -> None:
        self._add(obs, info)

    def on_step(self, obs: Any, info: dict[str, Any]) -> None:
        self._add(obs, info)


def _segments(drivers: list[str]) -> list[list[Any]]:
    """``[[driver, first frame, frame count], ...]`` of consecutive frames."""
    out: list[list[Any]] = []
    for i, d in enumerate(drivers):
        if out and out[-1][0] == d:
            out[-1][2] += 1
        else:
            out.append([d, i, 1])
    return out


def drive_episode(
    job: DriveJob,
    pilot: Any,
    expert_config: ExpertConfig,
    settings: DriveSettings,
    dataset: str | Path,
    dataset_info: dict[str, Any],
) -> dict[str, Any]:
    """Drive ``job`` with ``pilot`` (the learner) and append it to ``dataset`` as a
    ``source="dagger"`` episode; returns what happened (frames, takeovers, interventions).

    ``expert_config`` is the expert's (the one that recorded the dataset); the episode
    keeps it, and ``extra`` the round, the latency its labels are for, the segments and
    the drive's metrics.
    """
    t0 = time.perf_counter()
    needs = pilot_needs(pilot)
    env = TrackEnv(
        track=job.track,
        direction=job.direction,
        image_size=needs.camera,
        obs_mode="image",
        fixed_speed=settings.speed,
        max_laps=None,
    )
    try:
        expert = ExpertPilot(None, expert_config, env.car_params)
        copilot = Copilot(pilot, expert, settings)
        frames = _EveryFrame(copilot)
        loop = ClosedLoop(
            env,
            copilot,
            latency_s=settings.latency_s,
            latency_samples=settings.latency_samples,
            speed=settings.speed,
            on_leave_road="recentre",
            observers=[frames],
            trajectory_hz=None,
        )
        loop.reset(seed=job.seed, options={"start": "random"})
        run = loop.run(settings.laps, max_time_s=settings.max_time_s)
        track = env.track
    finally:
        env.close()
    arrays = frames_to_arrays(frames.frames)
    labels = relabel_trajectory(
        Trajectory.from_arrays(arrays), track, expert, settings.latency_s, env.dt
    )
    keep = labels.valid
    arrays["steering"] = labels.steering
    arrays["throttle"] = labels.throttle
    arrays = {k: v[keep] for k, v in arrays.items()}
    drivers = [d for d, k in zip(frames.drivers, keep, strict=True) if k]
    result = {
        "key": job.key,
        "track": job.track,
        "direction": job.direction,
        "frames": int(keep.sum()),
        "frames_unlabelled": int((~keep).sum()),
        "takeovers": copilot.takeovers,
        "takeover_frames": int(arrays["takeover"].sum()),
        "interventions": run.interventions,
        "laps": run.laps_completed,
        "autonomy": run.autonomy,
        "mean_abs_cte": run.mean_abs_cte,
        "elapsed_s": run.elapsed_s,
        "seconds": 0.0,
    }
    meta = EpisodeMeta(
        track_id=track.name,
        track_hash=track.geometry_hash,
        direction=job.direction,
        seed=job.seed,
        source="dagger",
        laps=run.laps_completed,
        expert=expert.metadata(),
        extra={
            "track_spec": job.track,
            "round": job.round,
            "label_latency_ms": settings.latency_s * 1000.0,
            "pilot": _pilot_name(pilot),
            "segments": _segments(drivers),
            "settings": asdict(settings) | {"latency_samples": None},
            "drive": {k: result[k] for k in ("takeovers", "interventions", "autonomy")},
        },
    )
    if len(drivers):
        DatasetWriter(dataset, dataset_info).write_episode(job.key, arrays, meta)
    result["seconds"] = time.perf_counter() - t0
    return result


def _pilot_name(pilot: Any) -> str:
    """The learner's name (its checkpoint sha256 prefix for a CNN)."""
    meta = pilot_metadata(pilot)
    return str(meta.get("name", getattr(pilot, "name", type(pilot).__name__)))
