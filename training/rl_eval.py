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

from agents.loop import ClosedLoop, RunResult
from agents.sb3_pilot import load_sb3_pilot, resolve_sb3_checkpoint
from sim.env import TrackEnv
from tracks.common import DIRECTIONS

__all__ = ["EvalSettings", "evaluate_pilot", "run_eval"]


def evaluate_pilot(
    pilot: Any,
    *,
    tracks: Sequence[str],
    directions: Sequence[str] = DIRECTIONS,
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

    The episodes run in the one closed loop (``agents.loop.ClosedLoop``, no latency,
    ``on_leave_road="stop"``): an episode ends when the laps are done, the car leaves
    the road (the env's off-track rule), the step limit passes (default: 1.5x the time
    the laps take at the fixed speed, or at 1 m/s under full control, and at least 2400
    steps), or the car gained less than 0.5 m of progress in the last ``stall_s``
    seconds. ``ok`` means all laps, consecutively, without leaving the road. Each
    episode is a dict with the loop's metric names (:func:`_episode`).
    """
    env = TrackEnv(
        track=tracks[0],
        obs_mode=obs_mode,
        image_size=tuple(image_size),
        fixed_speed=fixed_speed,
        max_laps=laps,
        reward_weights=weights,
    )
    # Under cruise control only the policy's steering is used.
    loop = ClosedLoop(
        env, pilot, throttle=fixed_speed is None, on_leave_road="stop", trajectory_hz=None
    )
    results = []
    try:
        for track in tracks:
            for direction in directions:
                loop.reset(seed=seed, options={"track": track, "direction": direction})
                speed = fixed_speed or 1.0
                limit = max_steps or max(
                    2400, math.ceil(1.5 * laps * env.track.length / speed * env.control_hz)
                )
                results.append(_episode(track, loop.run(laps, max_steps=limit, stall_s=stall_s)))
    finally:
        env.close()
    return results


def _episode(track: str, r: RunResult) -> dict[str, Any]:
    """One RL evaluation episode for ``evaluations.jsonl``: the run's metrics, rounded."""
    return {
        "track": track,
        "direction": r.direction,
        "laps_completed": r.laps_completed,
        "laps_target": r.laps_target,
        "completed": r.completed,
        "interventions": r.interventions,
        "ok": r.ok,
        "stalled": r.stalled,
        "steps": r.steps,
        "elapsed_s": round(r.elapsed_s, 3),
        "episode_return": round(r.episode_return, 3),
        "lap_times": [round(t, 3) for t in r.lap_times],
        "mean_abs_cte": round(r.mean_abs_cte, 4),
        "max_abs_cte": round(r.max_abs_cte, 4),
    }


def _summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "mean_return": float(np.mean([r["episode_return"] for r in results])),
        "completed": int(sum(r["ok"] for r in results)),
        "episodes": len(results),
        "solved": all(r["ok"] for r in results),
        "laps_fraction": float(
            np.mean(
                [min(r["laps_completed"], r["laps_target"]) / r["laps_target"] for r in results]
            )
        ),
        "max_abs_cte": float(max(r["max_abs_cte"] for r in results)),
    }


def _format_results(results: list[dict[str, Any]]) -> str:
    lines = [f"{'track':<12} {'dir':<4} {'laps':>5} {'off':>4} {'time_s':>7} {'|cte| mean':>10}"]
    for r in results:
        lines.append(
            f"{r['track']:<12} {r['direction']:<4} {r['laps_completed']:>2}/{r['laps_target']:<2} "
            f"{'yes' if r['interventions'] else 'no':>4} {r['elapsed_s']:>7.1f} "
            f"{r['mean_abs_cte']:>10.3f}  {'PASS' if r['ok'] else 'FAIL'}"
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
