"""Closed-loop evaluation runs: one pilot on one track, many in a pool, latency sweeps.

The loop itself (the latency model, interventions, metrics) is
:class:`agents.loop.ClosedLoop`, shared with recording, manual driving and RL
evaluation; its docstring states the latency model. Here:

:func:`run_closed_loop` builds the env a pilot needs (its ``needs``: observation mode,
camera, throttle) and drives one run with interventions (``"recentre"``), optionally
writing a video; :func:`run_many` runs many jobs (pilot specs, loaded inside each
worker through ``agents.registry``) on an execution backend (:mod:`evaluation.backends`:
the process pool ``sim.pool`` by default, or a Ray cluster); a run whose pilot cannot be
loaded where it runs is reported (:class:`~evaluation.backends.RunFailure`) while the
others finish;
:func:`sweep_latency` runs one pilot at increasing fixed latencies and
:func:`max_ok_latency` reads the answer off.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.base import pilot_needs
from agents.loop import (
    AUTONOMY_PENALTY_S,
    TRAJECTORY_HZ,
    ClosedLoop,
    InferenceSchedule,
    LoopObserver,
    RunResult,
    autonomy_percent,
    default_max_time,
)
from agents.registry import load_pilot
from evaluation.backends import Backend, RunFailure, RunsIncomplete, open_backend
from evaluation.backends.base import this_host
from evaluation.latency import LATENCY_MODES
from sim.env import TrackEnv
from tracks.progress import progress_bar

__all__ = [
    "AUTONOMY_PENALTY_S",
    "DEFAULT_SWEEP_MS",
    "TRAJECTORY_HZ",
    "InferenceSchedule",
    "RunJob",
    "RunResult",
    "autonomy_percent",
    "default_max_time",
    "group_sweeps",
    "max_ok_latency",
    "plot_sweep",
    "run_closed_loop",
    "run_job",
    "run_many",
    "sweep_latency",
]

logger = logging.getLogger(__name__)

DEFAULT_SWEEP_MS: tuple[float, ...] = (0, 20, 50, 70, 100, 150, 200, 300, 500)


class _Video(LoopObserver):
    """Every frame of the run into ``evaluation.video.RunVideo`` (camera and top-down)."""

    every_frame = True

    def __init__(self, env: TrackEnv, path: str | Path, camera_size: tuple[int, int]) -> None:
        self.env, self.path, self.camera_size = env, path, camera_size
        self.video: Any = None

    def on_reset(self, obs: Any, info: dict[str, Any]) -> None:
        from evaluation.video import RunVideo  # imageio: only when a video is asked for

        # Made after the reset: its map shows the track as driven.
        self.video = RunVideo(self.env, self.path, camera_size=self.camera_size)
        self.video.add(obs, info)

    def on_step(self, obs: Any, info: dict[str, Any]) -> None:
        self.video.add(obs, info)  # before any re-centring: the excursion is marked


def run_closed_loop(
    pilot: Any,
    track: Any,
    direction: str = "ccw",
    *,
    laps: int = 3,
    speed: float = 2.0,
    latency_s: float = 0.0,
    latency_mode: str = "zero",
    latency_samples: Sequence[float] | None = None,
    seed: int = 0,
    image_size: tuple[int, int] | None = None,
    obs_mode: str | None = None,
    max_time_s: float | None = None,
    record_trajectory: bool = True,
    video_path: str | Path | None = None,
    throttle: bool | None = None,
    lateral_noise: float = 0.0,
    heading_noise: float = 0.0,
    env_kwargs: dict[str, Any] | None = None,
) -> RunResult:
    """Drive ``laps`` laps of ``track`` with ``pilot`` under the latency model.

    ``track`` is anything ``TrackEnv`` accepts (a ``Track``, a built-in name,
    ``gen:<seed>``, a track file). ``image_size``, ``obs_mode`` and ``throttle``
    default to what the pilot needs (``pilot.needs``). Without throttle the env holds
    ``speed`` with cruise control and only the pilot's steering is used; with it the
    pilot's throttle drives the motors and the car starts at throttle ``speed /
    max_speed``. The run stops when the laps are done or at ``max_time_s`` of
    simulated time (default :func:`default_max_time`); leaving the road is an
    intervention (re-centre, go on). With ``video_path`` a video (camera and top-down
    side by side, MP4) is written there (:mod:`evaluation.video`). With ``latency_samples``
    (seconds) each inference draws its latency from them, seeded by ``seed``;
    ``latency_s`` is then the distribution's median, for the record.
    """
    if laps < 1:
        raise ValueError(f"laps must be >= 1, got {laps}")
    if not (math.isfinite(speed) and 0.0 < speed <= 5.0):
        raise ValueError(f"speed must be in (0, 5] m/s, got {speed}")
    if latency_mode not in LATENCY_MODES:
        raise ValueError(f"latency_mode must be one of {LATENCY_MODES}, got {latency_mode!r}")
    if latency_mode == "zero" and latency_s != 0.0:
        raise ValueError(f"latency_mode 'zero' with latency_s={latency_s}")
    if max_time_s is not None and not max_time_s > 0:
        raise ValueError(f"max_time_s must be > 0, got {max_time_s}")

    needs = pilot_needs(pilot)
    throttle = needs.throttle if throttle is None else throttle
    camera = tuple(image_size) if image_size is not None else needs.camera
    env = TrackEnv(
        track=track,
        direction=direction,
        image_size=camera,
        obs_mode=obs_mode or needs.obs_mode,
        fixed_speed=None if throttle else speed,
        max_laps=None,
        **dict(env_kwargs or {}),
    )
    video = None
    try:
        video = None if video_path is None else _Video(env, video_path, camera)
        loop = ClosedLoop(
            env,
            pilot,
            latency_s=latency_s,
            latency_mode=latency_mode,
            latency_samples=latency_samples,
            throttle=throttle,
            speed=speed,
            on_leave_road="recentre",
            observers=[video] if video else [],
            trajectory_hz=TRAJECTORY_HZ if record_trajectory else None,
        )
        options: dict[str, Any] = {}
        if lateral_noise or heading_noise:
            options = {"lateral_noise": lateral_noise, "heading_noise": heading_noise}
        loop.reset(seed=seed, options=options)
        result = loop.run(laps, max_time_s=max_time_s)
        if video is not None:
            result.video = str(video.video.close())
        return result
    finally:
        if video is not None and video.video is not None:
            video.video.abort()  # a failed run leaves no half-written video (no-op once closed)
        env.close()


# --------------------------------------------------------------------------- many runs
@dataclass(frozen=True)
class RunJob:
    """One run for :func:`run_many`: a pilot spec (loaded inside the worker) and settings."""

    pilot_spec: str  # "expert", "classical", a checkpoint or an SB3 agent (agents.registry)
    track: Any  # built-in name, gen:<seed>, a track file or a Track (picklable)
    direction: str = "ccw"
    laps: int = 3
    speed: float = 2.0
    latency_s: float = 0.0
    latency_mode: str = "zero"
    latency_samples: tuple[float, ...] | None = None  # seconds: drawn per inference
    seed: int = 0
    image_size: tuple[int, int] | None = None  # None: the pilot's own (pilot.needs)
    obs_mode: str | None = None  # None: the pilot's own (pilot.needs)
    throttle: bool | None = None  # None: the pilot's own (pilot.needs)
    device: str = "cpu"
    max_time_s: float | None = None
    record_trajectory: bool = True
    video_path: str | None = None
    domain_randomization: bool = False  # seeded colours, light and camera pose (robustness)

    def __post_init__(self) -> None:
        if self.latency_mode not in LATENCY_MODES:
            raise ValueError(f"latency_mode must be one of {LATENCY_MODES}")
        if not (math.isfinite(self.latency_s) and self.latency_s >= 0):
            raise ValueError(f"latency_s must be finite and >= 0, got {self.latency_s}")
        if self.laps < 1:
            raise ValueError(f"laps must be >= 1, got {self.laps}")


# Pilots loaded in this process, by (spec, device, speed): a worker loads each once.
_PILOT_CACHE: dict[tuple[str, str, float], Any] = {}


def cached_pilot(spec: str, device: str, speed: float) -> Any:
    """The pilot ``load_pilot(spec, device=device, speed=speed)``, loaded once per process."""
    key = (spec, device, speed)
    if key not in _PILOT_CACHE:
        _PILOT_CACHE[key] = load_pilot(spec, device=device, speed=speed)
    return _PILOT_CACHE[key]


def run_job(job: RunJob) -> RunResult | RunFailure:
    """Load the job's pilot (cached per process) and run it; a pilot that cannot be
    loaded here is a :class:`RunFailure` (which pilot, why, on which machine)."""
    try:
        pilot = cached_pilot(job.pilot_spec, job.device, job.speed)
    except (ValueError, OSError) as e:
        logger.debug("pilot %r could not be loaded: %s", job.pilot_spec, e)
        return RunFailure(job.pilot_spec, str(e), this_host())
    if "torch" in sys.modules:  # a torch pilot: seed any sampling it does
        sys.modules["torch"].manual_seed(job.seed)
    return run_closed_loop(
        pilot,
        job.track,
        job.direction,
        laps=job.laps,
        speed=job.speed,
        latency_s=job.latency_s,
        latency_mode=job.latency_mode,
        latency_samples=job.latency_samples,
        seed=job.seed,
        image_size=job.image_size,
        obs_mode=job.obs_mode,
        throttle=job.throttle,
        max_time_s=job.max_time_s,
        record_trajectory=job.record_trajectory,
        video_path=job.video_path,
        env_kwargs={"domain_randomization": True} if job.domain_randomization else None,
    )


def one_thread() -> None:
    """Keep this (worker) process to one thread of OpenMP, MKL and torch.

    Simulated latency does not depend on the worker's speed; one thread per worker
    keeps N workers on N cores instead of N * cores threads fighting.
    """
    # Set before torch is imported (by a pilot that needs it), which reads it then.
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def worker_init() -> None:
    """The initializer of an evaluation worker: one thread, warnings logged."""
    one_thread()
    logging.basicConfig(level=logging.WARNING)


@contextlib.contextmanager
def _using(backend: str | Backend, workers: int, address: str | None) -> Iterator[Backend]:
    if isinstance(backend, Backend):  # the caller's: it stays open
        yield backend
        return
    with open_backend(backend, workers=workers, address=address) as opened:
        yield opened


def run_many(
    jobs: Sequence[RunJob],
    workers: int = 1,
    *,
    progress: bool = True,
    desc: str = "closed loop",
    backend: str | Backend = "pool",
    address: str | None = None,
) -> list[RunResult]:
    """Run ``jobs`` on ``backend``; results in the order of ``jobs``.

    ``backend`` is a name (:data:`evaluation.backends.BACKENDS`; opened for this call:
    ``workers`` processes, or for ``ray`` the cluster at ``address``) or an open
    :class:`~evaluation.backends.Backend`. With the default process pool, ``workers=1``
    runs them in this process. Latencies must already be in the jobs (measure them once
    per pilot in the parent, :func:`evaluation.evaluate.prepare_pilot`), so that all
    runs of a pilot charge the same L. The progress bar counts finished runs.

    A run whose pilot cannot be loaded where it runs does not stop the others:
    :class:`~evaluation.backends.RunsIncomplete` is raised once they have finished,
    with their results and each failure. Any other failed run fails the evaluation:
    the runs not yet started are cancelled.
    """
    jobs = list(jobs)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    results: list[RunResult | None] = [None] * len(jobs)
    failures: dict[int, RunFailure] = {}
    with (
        _using(backend, workers, address) as runs,
        progress_bar(total=len(jobs), desc=desc, unit="run", enabled=progress, leave=False) as bar,
    ):
        for i, out in runs.imap_unordered(run_job, jobs, initializer=worker_init):
            if isinstance(out, RunFailure):
                failures[i] = out
            else:
                results[i] = out
            bar.update(1)
    if failures:
        raise RunsIncomplete(results, failures)
    return [r for r in results if r is not None]


# --------------------------------------------------------------------------- sweeps
def sweep_latency(
    pilot_spec: str,
    track: str,
    direction: str = "ccw",
    latencies_ms: Iterable[float] = DEFAULT_SWEEP_MS,
    *,
    laps: int = 3,
    speed: float = 2.0,
    seed: int = 0,
    device: str = "cpu",
    workers: int = 1,
    max_time_s: float | None = None,
    progress: bool = True,
    backend: str | Backend = "pool",
    address: str | None = None,
) -> list[RunResult]:
    """The same pilot, track, direction and seed at each fixed latency (ascending), on
    ``backend`` (:func:`run_many`)."""
    values = sorted({float(v) for v in latencies_ms})
    if not values or any(not math.isfinite(v) or v < 0 for v in values):
        raise ValueError(f"latencies_ms must be finite values >= 0, got {list(latencies_ms)}")
    jobs = [
        RunJob(
            pilot_spec=pilot_spec,
            track=track,
            direction=direction,
            laps=laps,
            speed=speed,
            latency_s=ms / 1000.0,
            latency_mode="zero" if ms == 0 else "fixed",
            seed=seed,
            device=device,
            max_time_s=max_time_s,
        )
        for ms in values
    ]
    return run_many(
        jobs,
        workers,
        progress=progress,
        desc=f"sweep {pilot_spec} {track}",
        backend=backend,
        address=address,
    )


def _sweep_key(r: Any) -> tuple[str, str, str, int, float, int]:
    return (r.pilot, r.track, r.direction, r.seed, r.speed, r.laps_target)


def group_sweeps(results: Iterable[Any]) -> dict[tuple, list[Any]]:
    """Results grouped by (pilot, track, direction, seed, speed, laps), each sorted by
    latency. Works on ``RunResult`` and on ``evaluation.results.ResultRow``."""
    groups: dict[tuple, list[Any]] = {}
    for r in results:
        groups.setdefault(_sweep_key(r), []).append(r)
    return {k: sorted(v, key=lambda r: r.latency_ms) for k, v in groups.items()}


def max_ok_latency(results: Iterable[Any]) -> float | None:
    """The largest tested latency (ms) at which the pilot completes its laps with no
    intervention, and so does it at every smaller tested latency; None if it fails at
    the smallest. ``results`` must be one sweep (one pilot, track, direction, seed)."""
    groups = group_sweeps(results)
    if not groups:
        raise ValueError("max_ok_latency needs at least one result")
    if len(groups) > 1:
        raise ValueError(
            f"max_ok_latency needs one sweep (one pilot, track, direction, seed), got "
            f"{len(groups)}: use group_sweeps() first"
        )
    best = None
    for r in next(iter(groups.values())):
        if not r.ok:
            break
        best = r.latency_ms
    return best


def plot_sweep(
    results: Iterable[Any],
    path: str | Path,
    title: str | None = None,
) -> Path:
    """PNG: laps completed and interventions against latency, one line per sweep."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = group_sweeps(results)
    if not groups:
        raise ValueError("plot_sweep needs at least one result")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (ax_laps, ax_int) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for (pilot, track, direction, seed, _, laps), rs in groups.items():
        x = [r.latency_ms for r in rs]
        label = f"{pilot} {track} {direction}" + (f" s{seed}" if seed else "")
        (line,) = ax_laps.plot(x, [r.laps_completed for r in rs], "o-", label=label)
        ax_int.plot(x, [r.interventions for r in rs], "o-", color=line.get_color())
        ok = max_ok_latency(rs)
        if ok is not None:
            for ax in (ax_laps, ax_int):
                ax.axvline(ok, color=line.get_color(), ls=":", lw=1)
        ax_laps.axhline(laps, color="0.7", lw=0.8)
    top = max(k[5] for k in groups)
    ax_laps.set_ylim(-0.2, top + 0.5)
    ax_int.set_ylim(bottom=-0.5)
    for ax in (ax_laps, ax_int):
        ax.yaxis.get_major_locator().set_params(integer=True)
    ax_laps.set_ylabel("laps completed")
    ax_int.set_ylabel("interventions (crashes)")
    ax_int.set_xlabel("latency (ms)  [dotted: largest latency that still laps cleanly]")
    ax_laps.legend(fontsize=8, loc="best")
    ax_laps.set_title(title or "Closed loop against latency")
    for ax in (ax_laps, ax_int):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path
