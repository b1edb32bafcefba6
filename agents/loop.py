"""The closed loop, written once: a pilot drives ``TrackEnv`` under a latency schedule.

Recording (``sim.record``), the autopilot in ``sim.drive``, the expert's lap check, RL
evaluation (``training.rl``) and closed-loop evaluation (``evaluation``) all drive
through :class:`ClosedLoop`, so they share one latency model, one intervention rule
and one set of metric names (:class:`RunResult`, whose metric fields are the
leaderboard store's columns).

The latency model, in simulated time so that a run is reproducible and independent of
how busy the machine is:

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
- With ``L = 0`` every period's command acts from the period's start: exactly
  ``env.step(command)``.
- ``L`` is one constant, or drawn afresh for every inference from a distribution's
  samples (``latency_samples``: a measured or on-car profile, a car computer's
  estimate), seeded by the run's seed so that a run is still reproducible. A slow
  outlier holds the previous command for its whole length, as on the car.

When the car leaves the road (or flips), ``on_leave_road`` decides:

- ``"recentre"`` (evaluation): PilotNet's autonomy metric. ``TrackEnv.recentre()``
  puts the car back on the centreline, one intervention is counted, any inference in
  flight is dropped, the pilot is ``reset()`` and the run goes on (time, progress and
  laps carry on). Autonomy = ``100 * (1 - interventions * 6 s / elapsed)``, clipped
  at 0.
- ``"stop"`` (recording, RL evaluation, manual driving): the episode ends there.

Observers (:class:`LoopObserver`) see every frame the pilot takes (with its command:
the recorder's labels) and every step (a video writer); the loop knows nothing of
files.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from agents.base import PilotNeeds, pilot_metadata, pilot_needs

__all__ = [
    "AUTONOMY_PENALTY_S",
    "LEAVE_ROAD",
    "TRAJECTORY_HZ",
    "ClosedLoop",
    "InferenceSchedule",
    "LoopObserver",
    "Outcome",
    "RunResult",
    "StepResult",
    "autonomy_percent",
    "completion",
    "default_max_time",
    "latency_substeps",
    "run_score",
]

#: Seconds charged per intervention in PilotNet's autonomy metric (Bojarski et al. 2016).
AUTONOMY_PENALTY_S = 6.0
#: Trajectories are kept at about this rate (points per simulated second).
TRAJECTORY_HZ = 10.0
#: What happens when the car leaves the road: re-centre and go on, or end the episode.
LEAVE_ROAD = ("recentre", "stop")


def autonomy_percent(interventions: int, elapsed_s: float) -> float:
    """PilotNet's autonomy: ``100 * (1 - interventions * 6 s / elapsed)``, clipped at 0."""
    if interventions < 0:
        raise ValueError(f"interventions must be >= 0, got {interventions}")
    if elapsed_s <= 0:
        return 100.0 if interventions == 0 else 0.0
    return max(0.0, 100.0 * (1.0 - interventions * AUTONOMY_PENALTY_S / elapsed_s))


def completion(laps_completed: float, laps_target: float | None, completed: bool) -> float:
    """Completed fraction of the target laps, in [0, 1]; without a target (none or 0),
    1 if the run completed, else 0."""
    if not laps_target:
        return 1.0 if completed else 0.0
    return max(0.0, min(1.0, laps_completed / laps_target))


def run_score(autonomy: float | None, lap_fraction: float) -> float:
    """One run's score in [0, 1], the leaderboard's optimizing number (100 x its mean over
    runs): the autonomy fraction times the completed fraction of the target laps, each
    clamped to [0, 1] (``None`` autonomy: 0)."""
    a = 0.0 if autonomy is None else max(0.0, min(1.0, autonomy / 100.0))
    return a * max(0.0, min(1.0, lap_fraction))


def default_max_time(laps: int, track_length_m: float, speed_m_s: float) -> float:
    """A generous time limit: three times the nominal time for the laps, plus 20 s."""
    return laps * track_length_m / speed_m_s * 3.0 + 20.0


def latency_substeps(latency_s: float, physics_hz: int) -> int:
    """The latency in whole physics substeps, rounded up.

    A command whose inference ends between two physics steps can only act from the
    next one. A tiny tolerance keeps exact multiples (50 ms at 240 Hz = 12) exact
    despite floating point.
    """
    if not math.isfinite(latency_s) or latency_s < 0:
        raise ValueError(f"latency must be finite and >= 0 s, got {latency_s}")
    return max(0, math.ceil(latency_s * physics_hz - 1e-6))


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

    def __init__(
        self,
        latency_substeps: int,
        substeps: int,
        initial_action: np.ndarray,
        draw: Callable[[], int] | None = None,
    ) -> None:
        if latency_substeps < 0 or substeps < 1:
            raise ValueError("latency_substeps must be >= 0 and substeps >= 1")
        self.latency_substeps = latency_substeps
        # Per-inference latency in substeps; None: always latency_substeps.
        self.draw = draw
        self.charged: list[int] = []  # the latency (substeps) each inference was charged
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
        lat = self.latency_substeps if self.draw is None else int(self.draw())
        if lat < 0:
            raise ValueError(f"a drawn latency must be >= 0 substeps, got {lat}")
        self.charged.append(lat)
        at = start + lat
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


class LoopObserver:
    """Sees what happens in a :class:`ClosedLoop`; override what you need.

    ``every_frame = True`` makes the loop render every period's camera frame (a video
    writer needs them; otherwise frames a slow pilot never looks at are skipped).
    """

    every_frame: bool = False

    def on_reset(self, obs: Any, info: dict[str, Any]) -> None:
        """After the env reset, before the first step."""

    def on_frame(self, obs: Any, info: dict[str, Any], command: np.ndarray) -> None:
        """The pilot took frame ``obs`` and returned ``command`` (before any perturbation)."""

    def on_step(self, obs: Any, info: dict[str, Any]) -> None:
        """After each control period, before any re-centring (an excursion shows)."""


@dataclass
class StepResult:
    """One control period of a :class:`ClosedLoop`."""

    command: np.ndarray | None  # the pilot's command from this period's frame, if it took one
    executed: np.ndarray | None  # what was sent to the motors for it (after ``perturb``)
    obs: Any  # the observation after the period (None if no frame was rendered)
    info: dict[str, Any]  # the env's info after the period (after a re-centring, if any)
    reward: float
    terminated: bool  # the env's own termination (off the road, flipped, max_laps)
    event: str | None  # "off_track" or "flipped" when the car left the road this period
    done: bool  # the run is over (laps done, step limit, stall, or left the road in "stop")


class Outcome:
    """``crashed`` and ``ok`` of anything with ``interventions`` and ``completed``
    (a :class:`RunResult`, a leaderboard row)."""

    interventions: int
    completed: bool

    @property
    def crashed(self) -> bool:
        """A crash for the leaderboard: at least one intervention."""
        return self.interventions > 0

    @property
    def ok(self) -> bool:
        """Completed its laps with no intervention."""
        return self.completed and self.interventions == 0


@dataclass
class RunResult(Outcome):
    """One closed-loop run: its settings and what happened.

    The metric field names are the leaderboard store's columns
    (:class:`evaluation.results.ResultRow` takes them over unchanged).
    """

    # what ran, where
    pilot: str  # the pilot's name
    pilot_kind: str
    track: str  # the track's own name (the direction says how it was driven)
    track_hash: str
    direction: str
    speed: float  # m/s cruise speed
    laps_target: int
    seed: int
    latency_mode: str  # how it was chosen: "measured", "fixed", "zero", "profile", "estimated"
    latency_ms: float  # the latency charged (the median of a distribution)
    latency_substeps: int  # ... in physics substeps (what was actually applied)
    obs_mode: str
    image_size: list[int]  # camera [H, W]
    control_period_ms: float  # camera / control period (50 ms at 20 Hz)
    # metrics
    laps_completed: int
    off_track: int  # off-track events
    flips: int
    interventions: int  # re-centrings ("recentre"), or 1 for the ending excursion ("stop")
    autonomy: float  # percent, PilotNet
    mean_abs_cte: float  # m, mean |cross-track error| over control periods
    max_abs_cte: float  # m
    lap_times: list[float]  # s, each completed lap
    mean_lap_time: float | None  # s; None when no lap was completed
    mean_speed: float  # m/s
    mean_steering: float  # signed mean servo steering (+ left): shows a steering bias
    elapsed_s: float  # simulated
    completed: bool  # laps_completed >= laps_target
    progress_m: float
    steps: int  # control periods
    inferences: int
    effective_control_hz: float
    episode_return: float  # sum of the env's rewards
    stalled: bool  # stopped for lack of progress (stall_s)
    max_time_s: float
    wall_s: float = 0.0  # real time the run took (informative only)
    latency_distribution: bool = False  # each inference drew its latency from samples
    latency_charged_mean_ms: float | None = None  # over this run's inferences
    latency_charged_max_ms: float | None = None
    trajectory: list[list[float]] = field(default_factory=list)  # [x, y], ~10 Hz
    interventions_at: list[list[float]] = field(default_factory=list)  # [x, y, t]
    pilot_meta: dict[str, Any] = field(default_factory=dict)
    video: str | None = None
    domain_randomization: bool = False  # the env drew colours, light and camera pose per reset

    @property
    def score(self) -> float:
        """:func:`run_score` of this run."""
        return run_score(
            self.autonomy, completion(self.laps_completed, self.laps_target, self.completed)
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def ending(self) -> str:
        """How the run ended, in the words of a dataset episode (``sim.dataset.ENDINGS``):
        ``laps_done``, else ``flipped`` / ``off_track`` (left the road, with
        ``on_leave_road="stop"``), ``stalled``, or ``time_limit`` (the step limit)."""
        if self.completed:
            return "laps_done"
        if self.flips:
            return "flipped"
        if self.off_track:
            return "off_track"
        return "stalled" if self.stalled else "time_limit"


#: Salt of the latency draws' random stream (any fixed number; part of reproducibility).
_LATENCY_STREAM = 0x1A7E
#: At most this many latency samples are kept (a profile's are bounded when read too).
MAX_LATENCY_SAMPLES = 1_000_000


def _latency_samples(samples: Any, physics_hz: int) -> np.ndarray | None:
    """Latency samples (s) as whole substeps (rounded up, as a constant latency is)."""
    if samples is None:
        return None
    s = np.asarray(samples, dtype=np.float64).reshape(-1)
    if s.size == 0 or s.size > MAX_LATENCY_SAMPLES:
        raise ValueError(f"latency_samples must hold 1..{MAX_LATENCY_SAMPLES} values, got {s.size}")
    if not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ValueError("latency_samples must be finite and >= 0 s")
    return np.maximum(0, np.ceil(s * physics_hz - 1e-6)).astype(np.int64)


def _env_action(action: Any, throttle: bool) -> np.ndarray:
    a = np.asarray(action, dtype=np.float32).reshape(-1)
    if a.shape[0] < (2 if throttle else 1):
        raise ValueError(f"pilot returned an action of shape {a.shape}, expected (2,)")
    return a[:2] if throttle else a[:1]


class ClosedLoop:
    """``pilot`` drives ``env`` (a ``sim.TrackEnv``) one control period at a time.

    ``reset()`` starts an episode; ``step()`` runs one period; ``run()`` steps until the
    laps are done, the step limit, a stall or (``on_leave_road="stop"``) leaving the
    road, and returns a :class:`RunResult`. ``throttle`` (default: the pilot's
    ``needs.throttle``) sends the pilot's throttle to the motors; otherwise only its
    steering is used and the env's cruise control holds ``env.fixed_speed``. ``speed``
    (default ``env.fixed_speed``) is the run's nominal speed: the throttle of the
    initial command, and the time limit's pace.
    ``perturb`` turns the pilot's command into what is executed (the recorder's
    expert noise and drift); the observers see the unperturbed command.
    """

    def __init__(
        self,
        env: Any,
        pilot: Any,
        *,
        latency_s: float = 0.0,
        latency_mode: str | None = None,
        latency_samples: Sequence[float] | np.ndarray | None = None,
        throttle: bool | None = None,
        speed: float | None = None,
        on_leave_road: str = "recentre",
        perturb: Callable[[np.ndarray], np.ndarray] | None = None,
        observers: Sequence[LoopObserver] = (),
        trajectory_hz: float | None = TRAJECTORY_HZ,
    ) -> None:
        if on_leave_road not in LEAVE_ROAD:
            raise ValueError(f"on_leave_road must be one of {LEAVE_ROAD}, got {on_leave_road!r}")
        self.env = env
        self.pilot = pilot
        self.needs: PilotNeeds = pilot_needs(pilot)
        self.throttle = self.needs.throttle if throttle is None else bool(throttle)
        self.latency_s = float(latency_s)
        self.latency_substeps = latency_substeps(self.latency_s, env.physics_hz)
        self.latency_mode = latency_mode or ("zero" if self.latency_s == 0 else "fixed")
        self.latency_samples = _latency_samples(latency_samples, env.physics_hz)
        self.on_leave_road = on_leave_road
        self.speed = speed
        self.perturb = perturb
        self.observers = list(observers)
        self._every_frame = any(o.every_frame for o in self.observers)
        self._traj_every = (
            None if trajectory_hz is None else max(1, round(env.control_hz / trajectory_hz))
        )
        self.obs: Any = None
        self.info: dict[str, Any] = {}

    # ------------------------------------------------------------------ episode
    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None):
        """Reset the env and the pilot (a privileged pilot gets the track as driven)."""
        env = self.env
        self.seed = seed
        obs, info = env.reset(seed=seed, options=options)
        if self.needs.privileged and callable(getattr(self.pilot, "set_track", None)):
            self.pilot.set_track(env.track)
        self.pilot.reset()
        cruise = self.speed if self.speed is not None else env.fixed_speed
        self.cruise_speed = float(cruise or 0.0)
        initial = np.array([0.0, self.cruise_speed / env.car_params.max_speed], dtype=np.float32)
        draw = None
        if self.latency_samples is not None:
            # Its own stream, seeded by the run's seed: the env's randomness is untouched.
            rng = np.random.default_rng([0 if seed is None else int(seed), _LATENCY_STREAM])
            table = self.latency_samples
            draw = lambda: int(table[rng.integers(len(table))])  # noqa: E731
        self.schedule = InferenceSchedule(
            self.latency_substeps, env.substeps, _env_action(initial, self.throttle), draw
        )
        self.k = 0
        self.inferences = self.off_track = self.flips = 0
        self.episode_return = 0.0
        self._abs_cte: list[float] = []
        self._speeds: list[float] = []
        self._steers: list[float] = []
        self._progress: list[float] = [0.0]
        self.trajectory: list[list[float]] = []
        self.interventions_at: list[list[float]] = []
        self.obs, self.info = obs, info
        if self._traj_every is not None:
            self._keep(info)
        for o in self.observers:
            o.on_reset(obs, info)
        return obs, info

    def _keep(self, info: dict[str, Any]) -> None:
        x, y, _ = info["pose"]
        self.trajectory.append([round(float(x), 3), round(float(y), 3)])

    @property
    def interventions(self) -> int:
        return self.off_track + self.flips

    # ------------------------------------------------------------------ one period
    def step(self) -> StepResult:
        """One control period: maybe a new inference, physics, metrics, interventions."""
        env, schedule, k = self.env, self.schedule, self.k
        command = executed = None
        if schedule.idle(k):
            command = np.asarray(self.pilot.act(self.obs, self.info), dtype=np.float32)
            for o in self.observers:
                o.on_frame(self.obs, self.info, command)
            executed = command if self.perturb is None else self.perturb(command)
            schedule.submit(_env_action(executed, self.throttle))
            self.inferences += 1
        held, new, switch = schedule.period()
        # Render the next frame only if someone will look at it.
        need = self._every_frame or schedule.wants_frame(k + 1)
        obs, reward, terminated, _, info = env.step_with_switch(held, new, switch, observe=need)
        self.k = k = k + 1
        self.episode_return += float(reward)
        self._abs_cte.append(abs(float(info["lateral"])))
        self._speeds.append(float(info["speed"]))
        self._steers.append(float(info["steering"]))
        self._progress.append(float(info["progress"]))
        if self._traj_every is not None and k % self._traj_every == 0:
            self._keep(info)
        for o in self.observers:
            o.on_step(obs, info)
        event = None
        if info["off_track"] or info["flipped"]:
            event = "off_track" if info["off_track"] else "flipped"
            self.off_track += bool(info["off_track"])
            self.flips += bool(info["flipped"] and not info["off_track"])
            x, y, _ = info["pose"]
            self.interventions_at.append([round(float(x), 3), round(float(y), 3), info["t"]])
            if self.on_leave_road == "recentre":
                info = env.recentre()
                obs = env.observe()
                schedule.cancel()
                self.pilot.reset()
        self.obs, self.info = obs, info
        done = bool(terminated or event) and self.on_leave_road == "stop"
        return StepResult(
            command, executed, obs, info, float(reward), bool(terminated), event, done
        )

    def stalled(self, stall_s: float | None) -> bool:
        """Less than 0.5 m of progress in the last ``stall_s`` seconds (a car standing
        still or circling would only run out the clock)."""
        if stall_s is None:
            return False
        window = int(round(stall_s * self.env.control_hz))
        p = self._progress
        return self.k >= window and p[-1] - p[-1 - window] < 0.5

    # ------------------------------------------------------------------ a whole run
    def run(
        self,
        laps: int,
        *,
        max_steps: int | None = None,
        max_time_s: float | None = None,
        stall_s: float | None = None,
    ) -> RunResult:
        """Step until ``laps`` laps, ``max_steps`` periods (default: ``max_time_s`` of
        simulated time, default :func:`default_max_time`), a stall or, in ``"stop"``
        mode, leaving the road. Call :meth:`reset` first."""
        if laps < 1:
            raise ValueError(f"laps must be >= 1, got {laps}")
        wall0 = time.perf_counter()
        env = self.env
        if max_time_s is None:
            speed = self.cruise_speed or 2.0
            max_time_s = default_max_time(laps, env.track.length, speed)
        if max_steps is None:
            max_steps = math.ceil(max_time_s / env.dt - 1e-9)
        stalled = False
        while self.info["lap"] < laps and self.k < max_steps and not stalled:
            done = self.step().done
            stalled = self.stalled(stall_s)
            if done:
                break
        if self._traj_every is not None and self.k % self._traj_every != 0:
            self._keep(self.info)
        return self.result(
            laps, max_time_s=max_time_s, stalled=stalled, wall_s=time.perf_counter() - wall0
        )

    def result(
        self, laps: int, *, max_time_s: float = 0.0, stalled: bool = False, wall_s: float = 0.0
    ) -> RunResult:
        """The :class:`RunResult` of the episode so far."""
        env, info = self.env, self.info
        meta = pilot_metadata(self.pilot)
        elapsed = float(info["t"])
        laps_done = int(info["lap"])
        lap_times = [float(t) for t in info["lap_times"]]
        abs_cte, speeds, steers = self._abs_cte, self._speeds, self._steers
        charged_ms = np.asarray(self.schedule.charged, dtype=float) * 1000.0 / env.physics_hz
        return RunResult(
            pilot=str(meta.get("name", getattr(self.pilot, "name", type(self.pilot).__name__))),
            pilot_kind=str(meta.get("kind", "unknown")),
            track=str(env.base_track.name),
            track_hash=str(env.base_track.geometry_hash),
            direction=str(info["direction"]),
            speed=float(self.cruise_speed),
            laps_target=int(laps),
            seed=int(self.seed) if self.seed is not None else 0,
            latency_mode=self.latency_mode,
            latency_ms=self.latency_s * 1000.0,
            latency_substeps=self.latency_substeps,
            obs_mode=str(env.obs_mode),
            image_size=[int(v) for v in env.image_size],
            control_period_ms=float(env.dt) * 1000.0,
            laps_completed=laps_done,
            off_track=self.off_track,
            flips=self.flips,
            interventions=self.interventions,
            autonomy=autonomy_percent(self.interventions, elapsed),
            mean_abs_cte=float(np.mean(abs_cte)) if abs_cte else 0.0,
            max_abs_cte=float(np.max(abs_cte)) if abs_cte else 0.0,
            lap_times=lap_times,
            mean_lap_time=sum(lap_times) / len(lap_times) if lap_times else None,
            mean_speed=float(np.mean(speeds)) if speeds else 0.0,
            mean_steering=float(np.mean(steers)) if steers else 0.0,
            elapsed_s=elapsed,
            completed=laps_done >= laps,
            progress_m=float(info["progress"]),
            steps=self.k,
            inferences=self.inferences,
            effective_control_hz=self.inferences / elapsed if elapsed > 0 else 0.0,
            episode_return=self.episode_return,
            stalled=bool(stalled),
            max_time_s=float(max_time_s),
            wall_s=wall_s,
            latency_distribution=self.latency_samples is not None,
            latency_charged_mean_ms=float(charged_ms.mean()) if charged_ms.size else None,
            latency_charged_max_ms=float(charged_ms.max()) if charged_ms.size else None,
            trajectory=self.trajectory,
            interventions_at=self.interventions_at,
            pilot_meta=meta,
            domain_randomization=bool(getattr(env, "domain_randomization", False)),
        )
