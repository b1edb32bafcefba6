"""Closed-loop evaluation of an RL pilot: laps and off-track events per (track, direction).

:func:`evaluate_pilot` drives any pilot from the start line; :func:`run_eval` loads a saved
SB3 pilot the safe way (no unpickling) and evaluates it, as ``python -m training.rl eval``
does with the :class:`EvalSettings` given on its command line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agents.sb3_pilot import load_sb3_pilot, resolve_sb3_checkpoint
from tracks.common import DIRECTIONS

__all__ = ["EvalSettings", "evaluate_pilot", "run_eval"]


def evaluate_pilot(
    pilot: Any,
    *,
    tracks: Sequence[str],
    directions: Sequence[str] = ("ccw", "cw"),
    laps: int = 3,
    obs_mode: str = "state",
    image_size: tuple[int, int] = (64, 64),
    fixed_speed: float | None = 2.0,
    seed: int = 0,
    max_steps: int | None = None,
    stall_s: int = 10,
    weights: Any = None,
) -> list[dict[str, Any]]:
    """Drive ``pilot`` closed-loop from the start line, ``laps`` laps per (track, direction).

    An episode ends when the laps are done, the car leaves the road (the env's
    off-track rule) or the step limit passes (default: 1.5x the time the laps take at
    the fixed speed, or at 1 m/s under full control, and at least 2400 steps), or when
    the car gained less than 0.5 m of progress in the last ``stall_s`` seconds.
    ``completed`` means all laps, consecutively, without leaving the road.
    """
    from sim.env import TrackEnv

    env = TrackEnv(
        track=tracks[0],
        obs_mode=obs_mode,
        image_size=tuple(image_size),
        fixed_speed=fixed_speed,
        max_laps=laps,
        reward_weights=weights,
    )
    results = []
    try:
        for track in tracks:
            for direction in directions:
                obs, info = env.reset(seed=seed, options={"track": track, "direction": direction})
                pilot.reset()
                speed = fixed_speed or 1.0
                limit = max_steps or max(
                    2400, math.ceil(1.5 * laps * env.track.length / speed * env.control_hz)
                )
                ret, steps, lat, progress = 0.0, 0, [], [0.0]
                terminated = stalled = False
                while steps < limit and not terminated and not stalled:
                    a = np.asarray(pilot.act(obs, info), dtype=np.float32)
                    obs, r, terminated, _, info = env.step(a[:1] if fixed_speed else a)
                    ret += float(r)
                    steps += 1
                    lat.append(abs(float(info["lateral"])))
                    progress.append(float(info["progress"]))
                    # A car that stands still or circles would only run out the clock.
                    window = stall_s * env.control_hz
                    stalled = steps >= window and progress[-1] - progress[-1 - window] < 0.5
                crashed = bool(info["off_track"] or info["flipped"])
                results.append(
                    {
                        "track": track,
                        "direction": direction,
                        "laps": int(info["lap"]),
                        "target_laps": laps,
                        "completed": bool(info["lap"] >= laps and not crashed),
                        "off_track": crashed,
                        "stalled": bool(stalled),
                        "steps": steps,
                        "time_s": round(float(info["t"]), 3),
                        "return": round(ret, 3),
                        "lap_times": [round(t, 3) for t in info["lap_times"]],
                        "mean_abs_lateral": round(float(np.mean(lat)), 4) if lat else 0.0,
                        "max_abs_lateral": round(float(np.max(lat)), 4) if lat else 0.0,
                    }
                )
    finally:
        env.close()
    return results


def _summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "mean_return": float(np.mean([r["return"] for r in results])),
        "completed": int(sum(r["completed"] for r in results)),
        "episodes": len(results),
        "solved": all(r["completed"] for r in results),
        "laps_fraction": float(
            np.mean([min(r["laps"], r["target_laps"]) / r["target_laps"] for r in results])
        ),
        "max_abs_lateral": float(max(r["max_abs_lateral"] for r in results)),
    }


def _format_results(results: list[dict[str, Any]]) -> str:
    lines = [f"{'track':<12} {'dir':<4} {'laps':>5} {'off':>4} {'time_s':>7} {'|lat| mean':>10}"]
    for r in results:
        lines.append(
            f"{r['track']:<12} {r['direction']:<4} {r['laps']:>2}/{r['target_laps']:<2} "
            f"{'yes' if r['off_track'] else 'no':>4} {r['time_s']:>7.1f} "
            f"{r['mean_abs_lateral']:>10.3f}  {'PASS' if r['completed'] else 'FAIL'}"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class EvalSettings:
    """What ``python -m training.rl eval`` drives (its flags; :func:`run_eval`'s keywords)."""

    tracks: tuple[str, ...] | None = None  # comma list; none: the run's eval tracks
    directions: tuple[str, ...] = DIRECTIONS  # ccw and/or cw
    laps: int = 3  # laps asked in each episode
    seed: int = 0  # reset seed of every episode
    device: str = "cpu"  # torch device of the policy


def run_eval(
    checkpoint: str | Path,
    *,
    tracks: Sequence[str] | None = None,
    directions: Sequence[str] = ("ccw", "cw"),
    laps: int = 3,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, Any]:
    """Load a pilot the safe way and evaluate it; returns ``{checkpoint, summary, results}``."""
    path = resolve_sb3_checkpoint(checkpoint)
    pilot = load_sb3_pilot(path, device=device)
    rec = pilot.record
    cfg = rec.get("config") or {}
    tracks = tuple(tracks or (cfg.get("resolved") or {}).get("eval_tracks") or ("oval",))
    for d in directions:
        if d not in ("ccw", "cw"):
            raise ValueError(f"directions must be ccw and/or cw, got {d!r}")
    if laps < 1:
        raise ValueError(f"laps must be >= 1, got {laps}")
    image = rec.get("image_size") or [64, 64]
    results = evaluate_pilot(
        pilot,
        tracks=tracks,
        directions=directions,
        laps=laps,
        obs_mode=pilot.obs_mode,
        image_size=tuple(image),
        fixed_speed=pilot.fixed_speed,
        seed=seed,
    )
    return {
        "checkpoint": str(path),
        "checkpoint_sha256": pilot.sha256,
        "pilot": pilot.metadata(),
        "summary": _summary(results),
        "results": results,
    }
