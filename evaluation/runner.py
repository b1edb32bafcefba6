"""The latency-aware closed-loop runner: a pilot drives laps, its latency charged in sim time.

The latency model (``docs/architecture.md``), in simulated time so that a run is
reproducible and independent of how busy the machine is:

- The camera produces a frame at the start of every control period, ``t_k = k * dt``.
- A pilot that is idle at ``t_k`` grabs that frame; the command it computes takes
  effect at ``t_k + L``, to the physics substep (``ceil(L * physics_hz)`` substeps
  later, so it may switch in the middle of a period, or in a later period when
  ``L > dt``: ``TrackEnv.step_with_switch``). Until then the previous command stays
  applied and the car keeps moving.
- No new inference starts while one is running: the next frame the pilot takes is the
  first one at or after the previous inference ended (with ``L = 120 ms`` at 20 Hz it
  is called at t = 0, 0.15, 0.30 ...). Its control rate is therefore ``1 / (dt *
  ceil(L / dt))``, which is ``min(camera rate, 1 / L)`` whenever ``L`` is below one
  period or a whole number of periods.
- Before the first command arrives the car is given zero steering at cruise speed.

When the car leaves the road (or flips) the runner intervenes as in PilotNet's autonomy
metric: ``TrackEnv.recentre()`` puts it back on the centreline, one intervention is
counted, any inference in flight is dropped, the pilot is ``reset()`` and the run goes
on (time, progress and laps carry on). Autonomy = ``100 * (1 - interventions * 6 s /
elapsed)``, clipped at 0.

:func:`run_closed_loop` runs one pilot object; :func:`run_many` runs many jobs (pilot
specs, loaded inside each worker) in a process pool; :func:`sweep_latency` runs one
pilot at increasing fixed latencies and :func:`max_ok_latency` reads the answer off.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.latency import LATENCY_MODES, latency_substeps

__all__ = [
    "AUTONOMY_PENALTY_S",
    "DEFAULT_SWEEP_MS",
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

#: Seconds charged per intervention in PilotNet's autonomy metric (Bojarski et al. 2016).
AUTONOMY_PENALTY_S = 6.0
DEFAULT_SWEEP_MS: tuple[float, ...] = (0, 20, 50, 70, 100, 150, 200, 300, 500)
#: Trajectories are kept at about this rate (points per simulated second).
TRAJECTORY_HZ = 10.0


def autonomy_percent(interventions: int, elapsed_s: float) -> float:
    """PilotNet's autonomy: ``100 * (1 - interventions * 6 s / elapsed)``, clipped at 0."""
    if interventions < 0:
        raise ValueError(f"interventions must be >= 0, got {interventions}")
    if elapsed_s <= 0:
        return 100.0 if interventions == 0 else 0.0
    return max(0.0, 100.0 * (1.0 - interventions * AUTONOMY_PENALTY_S / elapsed_s))


def default_max_time(laps: int, track_length_m: float, speed_m_s: float) -> float:
    """A generous time limit: three times the nominal time for the laps, plus 20 s."""
    return laps * track_length_m / speed_m_s * 3.0 + 20.0


class InferenceSchedule:
    """When each command takes effect, in whole physics substeps (the latency model).

    Period ``k`` covers substeps ``[k * substeps, (k + 1) * substeps)``; the
    camera delivers frame ``k`` at its start. A pilot that is idle grabs the
    newest frame it has not yet used and starts an inference; its command acts
    ``latency_substeps`` later, and until then the previous command holds. It
    never runs two inferences at once, so with a latency L above the control
    period it starts the next one the moment the last one ends (on the newest
    frame, already up to one period old) and its effective control rate is
    ``min(camera rate, 1 / L)``.

    Per period: :meth:`idle` says whether the pilot takes this period's frame
    (it is idle at the period start, or becomes idle before the next frame);
    if so, :meth:`submit` the command computed from that frame; then
    :meth:`period` gives ``(held, new, switch_substep)`` for
    ``TrackEnv.step_with_switch``.
    """

    def __init__(self, latency_substeps: int, substeps: int, initial_action: np.ndarray) -> None:
        if latency_substeps < 0 or substeps < 1:
            raise ValueError("latency_substeps must be >= 0 and substeps >= 1")
        self.latency_substeps = latency_substeps
        self.substeps = substeps
        self.initial_action = np.asarray(initial_action, dtype=np.float32).copy()
        self.applied = self.initial_action.copy()  # command acting now
        self._queue: list[tuple[int, np.ndarray]] = []  # (absolute substep, command) to come
        self._busy_until = 0  # substep at which the running inference ends (<= now: idle)
        self._last_frame = -1  # the newest frame the pilot has taken
        self._k = 0
        self.starts: list[int] = []  # absolute substep at which each inference started

    def wants_frame(self, k: int) -> bool:
        """Whether the pilot will take frame ``k`` (no side effects)."""
        return self._last_frame < k and self._busy_until < (k + 1) * self.substeps

    def idle(self, k: int) -> bool:
        """Start period ``k``; True if the pilot takes its frame during the period."""
        self._k = k
        return self.wants_frame(k)

    def submit(self, action: np.ndarray) -> int:
        """The command computed from this period's frame; returns the substep it acts at."""
        k = self._k
        if not self.wants_frame(k):
            raise RuntimeError(
                "an inference is already running past this period: no overlapping inference"
            )
        start = max(k * self.substeps, self._busy_until)
        at = start + self.latency_substeps
        self._queue.append((at, np.asarray(action, dtype=np.float32)))
        self._busy_until = at
        self._last_frame = k
        self.starts.append(start)
        return at

    def period(self) -> tuple[np.ndarray, np.ndarray, int]:
        """``(held, new, switch)`` for the current period; commits what acts in it."""
        start = self._k * self.substeps
        while self._queue and self._queue[0][0] <= start:
            self.applied = self._queue.pop(0)[1]
        held = self.applied
        if self._queue and self._queue[0][0] < start + self.substeps:
            at, new = self._queue.pop(0)
            self.applied = new
            return held, new, at - start
        return held, held, 0

    def cancel(self) -> None:
        """An intervention: drop any inference in flight, back to the initial command."""
        self._queue.clear()
        self._busy_until = 0
        self.applied = self.initial_action.copy()


@dataclass
class RunResult:
    """One closed-loop run: its settings and what happened."""

    pilot_name: str
    pilot_kind: str
    track: str
    track_hash: str
    direction: str
    speed: float  # m/s cruise speed
    laps_target: int
    seed: int
    latency_mode: str  # "measured", "fixed" or "zero"
    latency_s: float  # the latency charged (seconds)
    latency_substeps: int  # ... in physics substeps (what was actually applied)
    obs_mode: str
    image_size: tuple[int, int]
    control_period_s: float  # camera / control period (0.05 s at 20 Hz)
    # metrics
    laps_completed: int
    off_track_events: int
    flips: int
    interventions: int
    autonomy_pct: float
    mean_abs_cte_m: float
    max_abs_cte_m: float
    lap_times_s: list[float]
    mean_speed_m_s: float
    mean_steering: float  # signed mean servo steering (+ left): shows a steering bias
    progress_m: float
    elapsed_s: float  # simulated
    inferences: int
    effective_control_hz: float
    completed: bool
    max_time_s: float
    wall_s: float = 0.0  # real time the run took (informative only)
    trajectory: list[list[float]] = field(default_factory=list)  # [x, y], ~10 Hz
    interventions_at: list[list[float]] = field(default_factory=list)  # [x, y, t]
    pilot_meta: dict[str, Any] = field(default_factory=dict)
    video_path: str | None = None

    @property
    def crashed(self) -> bool:
        """A crash for the leaderboard: at least one intervention."""
        return self.interventions > 0

    @property
    def ok(self) -> bool:
        """Completed its laps with no intervention."""
        return self.completed and self.interventions == 0

    @property
    def latency_ms(self) -> float:
        return self.latency_s * 1000.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["image_size"] = list(self.image_size)
        return d


def _env_action(action: np.ndarray, throttle: bool) -> np.ndarray:
    a = np.asarray(action, dtype=np.float32).reshape(-1)
    if a.shape[0] < (2 if throttle else 1):
        raise ValueError(f"pilot returned an action of shape {a.shape}, expected (2,)")
    return a[:2] if throttle else a[:1]


def _pilot_meta(pilot: Any) -> dict[str, Any]:
    meta = getattr(pilot, "metadata", None)
    out = meta() if callable(meta) else {}
    return dict(out) if isinstance(out, dict) else {}


def run_closed_loop(
    pilot: Any,
    track: Any,
    direction: str = "ccw",
    *,
    laps: int = 3,
    speed: float = 2.0,
    latency_s: float = 0.0,
    latency_mode: str = "zero",
    seed: int = 0,
    image_size: tuple[int, int] = (120, 160),
    obs_mode: str = "image",
    max_time_s: float | None = None,
    record_trajectory: bool = True,
    video_path: str | Path | None = None,
    throttle: bool = False,
    lateral_noise: float = 0.0,
    heading_noise: float = 0.0,
    env_kwargs: dict[str, Any] | None = None,
) -> RunResult:
    """Drive ``laps`` laps of ``track`` with ``pilot`` under the latency model.

    ``track`` is anything ``TrackEnv`` accepts (a ``Track``, a built-in name,
    ``gen:<seed>``, a track file). With ``throttle=False`` (default) the env holds
    ``speed`` with cruise control and only the pilot's steering is used; with
    ``throttle=True`` the pilot's throttle drives the motors and the car starts at
    throttle ``speed / max_speed``. A privileged pilot with ``set_track`` gets the
    track as driven after the reset. The run stops when the laps are done or at
    ``max_time_s`` of simulated time (default :func:`default_max_time`). With
    ``video_path`` a video (camera and top-down side by side) is written there
    (:mod:`evaluation.video`).
    """
    import time

    from sim.env import TrackEnv

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

    wall0 = time.perf_counter()
    env = TrackEnv(
        track=track,
        direction=direction,
        image_size=tuple(image_size),
        obs_mode=obs_mode,
        fixed_speed=None if throttle else speed,
        max_laps=None,
        **dict(env_kwargs or {}),
    )
    try:
        lsub = latency_substeps(latency_s, env.physics_hz)
        options: dict[str, Any] = {}
        if lateral_noise or heading_noise:
            options = {"lateral_noise": lateral_noise, "heading_noise": heading_noise}
        obs, info = env.reset(seed=seed, options=options)
        if hasattr(pilot, "set_track"):
            pilot.set_track(env.track)  # privileged pilots: the track as driven
        pilot.reset()
        if max_time_s is None:
            max_time_s = default_max_time(laps, env.track.length, speed)

        initial = np.array([0.0, speed / env.car_params.max_speed], dtype=np.float32)
        schedule = InferenceSchedule(lsub, env.substeps, _env_action(initial, throttle))
        video = None
        if video_path is not None:
            from evaluation.video import RunVideo

            video = RunVideo(env, video_path, camera_size=tuple(image_size))
            video.add(obs, info)

        traj_every = max(1, round(env.control_hz / TRAJECTORY_HZ))
        trajectory: list[list[float]] = []
        interventions_at: list[list[float]] = []
        abs_cte: list[float] = []
        speeds: list[float] = []
        steers: list[float] = []
        off_track = flips = inferences = 0
        max_steps = math.ceil(max_time_s / env.dt - 1e-9)

        def keep(i: dict[str, Any]) -> None:
            x, y, _ = i["pose"]
            trajectory.append([round(float(x), 3), round(float(y), 3)])

        if record_trajectory:
            keep(info)
        k = 0
        while info["lap"] < laps and k < max_steps:
            if schedule.idle(k):
                schedule.submit(_env_action(pilot.act(obs, info), throttle))
                inferences += 1
            held, new, switch = schedule.period()
            # Render the next frame only if the pilot will look at it.
            need = video is not None or schedule.wants_frame(k + 1)
            obs, _, _, _, info = env.step_with_switch(held, new, switch, observe=need)
            k += 1
            abs_cte.append(abs(float(info["lateral"])))
            speeds.append(float(info["speed"]))
            steers.append(float(info["steering"]))
            if record_trajectory and k % traj_every == 0:
                keep(info)
            if video is not None:
                video.add(obs, info)  # before any re-centring: the excursion is marked
            if info["off_track"] or info["flipped"]:
                off_track += bool(info["off_track"])
                flips += bool(info["flipped"] and not info["off_track"])
                x, y, _ = info["pose"]
                interventions_at.append([round(float(x), 3), round(float(y), 3), info["t"]])
                info = env.recentre()
                obs = env.observe()
                schedule.cancel()
                pilot.reset()
                logger.debug("intervention at t=%.2f s (s=%.2f m)", info["t"], info["s"])
        if record_trajectory and k % traj_every != 0:
            keep(info)
        if video is not None:
            video_path = str(video.close())

        meta = _pilot_meta(pilot)
        interventions = off_track + flips
        elapsed = float(info["t"])
        laps_done = int(info["lap"])
        return RunResult(
            pilot_name=str(meta.get("name", getattr(pilot, "name", type(pilot).__name__))),
            pilot_kind=str(meta.get("kind", "unknown")),
            # The track by its own name and geometry; the direction says how it was driven.
            track=str(env.base_track.name),
            track_hash=str(env.base_track.geometry_hash),
            direction=str(info["direction"]),
            speed=float(speed),
            laps_target=int(laps),
            seed=int(seed),
            latency_mode=latency_mode,
            latency_s=float(latency_s),
            latency_substeps=lsub,
            obs_mode=obs_mode,
            image_size=(int(image_size[0]), int(image_size[1])),
            control_period_s=float(env.dt),
            laps_completed=laps_done,
            off_track_events=off_track,
            flips=flips,
            interventions=interventions,
            autonomy_pct=autonomy_percent(interventions, elapsed),
            mean_abs_cte_m=float(np.mean(abs_cte)) if abs_cte else 0.0,
            max_abs_cte_m=float(np.max(abs_cte)) if abs_cte else 0.0,
            lap_times_s=[float(t) for t in info["lap_times"]],
            mean_speed_m_s=float(np.mean(speeds)) if speeds else 0.0,
            mean_steering=float(np.mean(steers)) if steers else 0.0,
            progress_m=float(info["progress"]),
            elapsed_s=elapsed,
            inferences=inferences,
            effective_control_hz=inferences / elapsed if elapsed > 0 else 0.0,
            completed=laps_done >= laps,
            max_time_s=float(max_time_s),
            wall_s=time.perf_counter() - wall0,
            trajectory=trajectory,
            interventions_at=interventions_at,
            pilot_meta=meta,
            video_path=None if video_path is None else str(video_path),
        )
    finally:
        env.close()


# --------------------------------------------------------------------------- many runs
@dataclass(frozen=True)
class RunJob:
    """One run for :func:`run_many`: a pilot spec (loaded inside the worker) and settings."""

    pilot_spec: str  # "expert", "classical", a checkpoint or an SB3 agent (evaluation.pilots)
    track: Any  # built-in name, gen:<seed>, a track file or a Track (picklable)
    direction: str = "ccw"
    laps: int = 3
    speed: float = 2.0
    latency_s: float = 0.0
    latency_mode: str = "zero"
    seed: int = 0
    image_size: tuple[int, int] | None = None  # None: the pilot's own, else (120, 160)
    obs_mode: str | None = None  # None: the pilot's own (pilot_env_settings)
    throttle: bool | None = None  # None: the pilot's own
    device: str = "cpu"
    max_time_s: float | None = None
    record_trajectory: bool = True
    video_path: str | None = None

    def __post_init__(self) -> None:
        if self.latency_mode not in LATENCY_MODES:
            raise ValueError(f"latency_mode must be one of {LATENCY_MODES}")
        if not (math.isfinite(self.latency_s) and self.latency_s >= 0):
            raise ValueError(f"latency_s must be finite and >= 0, got {self.latency_s}")
        if self.laps < 1:
            raise ValueError(f"laps must be >= 1, got {self.laps}")


# Pilots loaded in this process, by (spec, device, speed): a worker loads each once.
_PILOT_CACHE: dict[tuple[str, str, float], Any] = {}


def _cached_pilot(spec: str, device: str, speed: float) -> Any:
    from evaluation.pilots import load_pilot_spec

    key = (spec, device, speed)
    if key not in _PILOT_CACHE:
        _PILOT_CACHE[key] = load_pilot_spec(spec, device=device, speed=speed)
    return _PILOT_CACHE[key]


def run_job(job: RunJob) -> RunResult:
    """Load the job's pilot (cached per process) and run it."""
    from evaluation.pilots import pilot_env_settings

    pilot = _cached_pilot(job.pilot_spec, job.device, job.speed)
    env = pilot_env_settings(pilot)
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
        seed=job.seed,
        image_size=tuple(job.image_size or env["image_size"]),
        obs_mode=job.obs_mode or env["obs_mode"],
        throttle=env["throttle"] if job.throttle is None else job.throttle,
        max_time_s=job.max_time_s,
        record_trajectory=job.record_trajectory,
        video_path=job.video_path,
    )


def _worker_init() -> None:
    # Simulated latency does not depend on the worker's speed; one thread per worker
    # keeps N workers on N cores instead of N * cores threads fighting.
    # Set before torch is imported (by a pilot that needs it), which reads it then.
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)


def run_many(
    jobs: Sequence[RunJob],
    workers: int = 1,
    *,
    progress: bool = True,
    desc: str = "closed loop",
) -> list[RunResult]:
    """Run ``jobs`` in a spawn-context process pool; results in the order of ``jobs``.

    ``workers=1`` runs them in this process (no pool). Latencies must already be in
    the jobs (measure them once per pilot in the parent, :func:`evaluation.evaluate.
    measure_pilot_latency`), so that all runs of a pilot charge the same L.
    """
    import multiprocessing as mp

    from tqdm import tqdm

    jobs = list(jobs)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    workers = min(workers, len(jobs)) or 1
    bar = tqdm(total=len(jobs), desc=desc, unit="run", disable=not progress, leave=False)
    results: list[RunResult | None] = [None] * len(jobs)
    try:
        if workers == 1:
            for i, job in enumerate(jobs):
                results[i] = run_job(job)
                bar.update(1)
        else:
            ctx = mp.get_context("spawn")
            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init) as pool:
                futures = {pool.submit(run_job, job): i for i, job in enumerate(jobs)}
                try:
                    for fut in as_completed(futures):
                        results[futures[fut]] = fut.result()
                        bar.update(1)
                except BaseException:
                    # One failed run fails the evaluation: do not wait for the others.
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
    finally:
        bar.close()
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
) -> list[RunResult]:
    """The same pilot, track, direction and seed at each fixed latency (ascending)."""
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
    return run_many(jobs, workers, progress=progress, desc=f"sweep {pilot_spec} {track}")


def _sweep_key(r: Any) -> tuple[str, str, str, int, float, int]:
    pilot = r.pilot_name if hasattr(r, "pilot_name") else r.pilot
    return (pilot, r.track, r.direction, r.seed, r.speed, r.laps_target)


def group_sweeps(results: Iterable[Any]) -> dict[tuple, list[Any]]:
    """Results grouped by (pilot, track, direction, seed, speed, laps), each sorted by
    latency. Works on ``RunResult`` and on ``evaluation.results.ResultRow``."""
    groups: dict[tuple, list[RunResult]] = {}
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
