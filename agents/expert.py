"""The expert autopilot: pure pursuit on the true centreline (privileged).

It reads the car's true pose from the env's ``info`` and the track geometry,
so it is the teacher for behaviour cloning, not a pilot that could run on a
real car. Speed comes from the curvature ahead (it slows for bends), capped by
the cruise speed.

Data diversity (DART-style, Laskey et al. 2017): ``executed()`` turns the
expert's command into the command actually sent to the car, with steering
noise and occasional drift phases that push the car off the ideal line. The
recorded label is always the expert's corrective command from ``act()``, so
the clone learns how to recover, never the noise.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from agents.base import PilotNeeds, as_action
from agents.loop import ClosedLoop
from sim.car import CarParams
from sim.env import TrackEnv
from tracks import Track, builtin_names
from tracks.cli import run_main


@dataclass(frozen=True)
class ExpertConfig:
    """Settings of the pure-pursuit expert."""

    cruise_speed: float = 2.0  # m/s cap on the target speed
    lookahead_base: float = 0.45  # m, pure-pursuit lookahead at standstill
    lookahead_gain: float = 0.25  # s, lookahead grows with speed
    max_lateral_accel: float = 3.0  # m/s^2, sets the speed in bends: v = sqrt(a / |k|)
    min_speed: float = 0.8  # m/s, never slower than this
    preview: float = 2.0  # m of road ahead scanned for the sharpest bend
    line_offset: float = 0.0  # m, drive this far left (+) of the centreline
    steer_noise: float = 0.0  # std of Gaussian noise on executed steering
    drift_prob: float = 0.0  # chance per step to start a drift phase
    drift_steer: float = 0.35  # magnitude of the steering bias while drifting
    drift_steps: int = 8  # length of a drift phase, steps

    def __post_init__(self) -> None:
        if not (0 < self.cruise_speed <= 5.0):
            raise ValueError(f"cruise_speed must be in (0, 5] m/s, got {self.cruise_speed}")
        if self.steer_noise < 0 or not (0 <= self.drift_prob <= 1):
            raise ValueError("steer_noise must be >= 0 and drift_prob in [0, 1]")
        if self.lookahead_base <= 0 or self.max_lateral_accel <= 0:
            raise ValueError("lookahead_base and max_lateral_accel must be > 0")

    @property
    def label_noise(self) -> float:
        """The expert's labels are noise-free; perturbations only move the car."""
        return 0.0


class ExpertPilot:
    """Pure pursuit with curvature-limited speed; implements ``agents.base.Pilot``."""

    def __init__(
        self,
        track: Track | None = None,
        config: ExpertConfig | None = None,
        car: CarParams | None = None,
        seed: int | None = None,
    ) -> None:
        self.track = track
        self.config = config or ExpertConfig()
        self.car = car or CarParams()
        self.name = "expert"
        # The true pose and the track, no camera. Judged like every steering pilot,
        # under cruise control; the recorder gives it the motors (throttle=True).
        self.needs = PilotNeeds(obs_mode="state", privileged=True)
        self._rng = np.random.default_rng(seed)
        self._drift_left = 0
        self._drift_sign = 1.0

    def set_track(self, track: Track) -> None:
        """The track as driven (already reversed for clockwise laps)."""
        self.track = track

    def reset(self) -> None:
        self._drift_left = 0

    def target_speed(self, s: float) -> float:
        cfg = self.config
        ahead = s + np.linspace(0.0, cfg.preview, 12)
        k = float(np.max(np.abs(self.track.curvature(ahead))))
        v = math.sqrt(cfg.max_lateral_accel / max(k, 1e-6))
        return float(np.clip(v, cfg.min_speed, cfg.cruise_speed))

    def act(self, observation: Any, info: dict[str, Any]) -> np.ndarray:
        if self.track is None:
            raise RuntimeError("ExpertPilot needs a track: call set_track() first")
        cfg = self.config
        x, y, yaw = info["pose"]
        s = float(info["s"])
        speed = max(float(info["speed"]), 0.0)
        half_wb = self.car.wheelbase / 2
        # Pure pursuit geometry is about the rear axle.
        rx, ry = x - half_wb * math.cos(yaw), y - half_wb * math.sin(yaw)
        ld = cfg.lookahead_base + cfg.lookahead_gain * speed
        target = (
            self.track.point(s + ld + half_wb)
            + self.track.normal(s + ld + half_wb) * cfg.line_offset
        )
        dx, dy = target[0] - rx, target[1] - ry
        alpha = math.atan2(dy, dx) - yaw
        dist = max(math.hypot(dx, dy), 1e-3)
        delta = math.atan2(2.0 * self.car.wheelbase * math.sin(alpha), dist)
        steer = delta / self.car.max_steer
        throttle = self.target_speed(s) / self.car.max_speed
        return as_action(steer, throttle)

    def executed(self, label: np.ndarray) -> np.ndarray:
        """The command actually applied: the label plus noise and drift phases."""
        cfg = self.config
        a = np.array(label, dtype=np.float32, copy=True)
        if self._drift_left == 0 and cfg.drift_prob > 0 and self._rng.random() < cfg.drift_prob:
            self._drift_left = cfg.drift_steps
            self._drift_sign = 1.0 if self._rng.random() < 0.5 else -1.0
        if self._drift_left > 0:
            a[0] += self._drift_sign * cfg.drift_steer
            self._drift_left -= 1
        if cfg.steer_noise > 0:
            a[0] += self._rng.normal(0.0, cfg.steer_noise)
        return np.clip(a, -1.0, 1.0)

    @property
    def perturbing(self) -> bool:
        return self._drift_left > 0

    def metadata(self) -> dict[str, Any]:
        return {"kind": "expert", "name": self.name, **asdict(self.config)}


def load_spec(target: Any, *, device: str = "cpu", speed: float = 2.0) -> ExpertPilot:
    """The registry's loader (``agents.registry``): the expert at cruise ``speed``."""
    return ExpertPilot(None, ExpertConfig(cruise_speed=speed))


def check_laps(
    track: str, direction: str, speed: float, laps: int, seed: int = 0
) -> dict[str, Any]:
    """Drive ``laps`` laps with the expert (state observations: it needs no camera)."""
    env = TrackEnv(
        track=track, direction=direction, obs_mode="state", fixed_speed=None, max_laps=laps
    )
    try:
        expert = ExpertPilot(None, ExpertConfig(cruise_speed=speed), env.car_params, seed=seed)
        loop = ClosedLoop(env, expert, throttle=True, on_leave_road="stop", trajectory_hz=None)
        loop.reset(seed=seed)
        limit = int(laps * env.track.length / ExpertConfig.min_speed * env.control_hz) + 100
        run = loop.run(laps, max_steps=limit)
    finally:
        env.close()
    return {
        "track": track,
        "direction": direction,
        "speed": speed,
        "laps": run.laps_completed,
        "off_track": run.interventions > 0,
        "max_abs_cte": run.max_abs_cte,
        "mean_lap_time": run.mean_lap_time,
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m agents.expert``: the expert's consecutive clean laps on every track."""
    ap = argparse.ArgumentParser(prog="python -m agents.expert", description=main.__doc__)
    ap.add_argument(
        "--laps", type=int, default=10, help="consecutive laps asked (default: %(default)s)"
    )
    ap.add_argument(
        "--speeds", default="2,3", help="comma list of cruise speeds, m/s (default: %(default)s)"
    )
    ap.add_argument(
        "--tracks",
        default=",".join(builtin_names()),
        help="comma list of tracks (default: every built-in: %(default)s)",
    )
    ap.add_argument(
        "--directions", default="ccw,cw", help="comma list of directions (default: %(default)s)"
    )
    args = ap.parse_args(argv)
    try:
        speeds = [float(v) for v in args.speeds.split(",")]
        ExpertConfig(cruise_speed=max(speeds))
    except ValueError as exc:
        print(f"error: bad --speeds: {exc}")
        return 2
    failures = 0
    print(
        f"{'speed':>5} {'track':<10} {'dir':<4} {'laps':>4} {'off':>4} {'max|cte| m':>10} {'lap s':>6}"
    )
    for speed in speeds:
        for track in args.tracks.split(","):
            for direction in args.directions.split(","):
                r = check_laps(track, direction, speed, args.laps)
                ok = r["laps"] == args.laps and not r["off_track"]
                failures += not ok
                print(
                    f"{speed:>5.1f} {track:<10} {direction:<4} {r['laps']:>4} {'yes' if r['off_track'] else 'no':>4}"
                    f" {r['max_abs_cte']:>10.3f} {r['mean_lap_time'] or 0:>6.2f}"
                )
    print("all clean" if not failures else f"{failures} runs failed")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
