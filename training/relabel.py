"""Latency-compensated labels: the expert's command for the state at ``t + L``.

A pilot with latency ``L`` looks at the frame taken at ``t`` and its command acts from
``t + L`` (``agents.loop``). Behaviour cloning teaches it the expert's command *for the
state at t*, which is stale by the time it acts; at large ``L`` it steers too late and
leaves the road. The compensated label of the frame at ``t`` is instead the expert's command
for the state at ``t + L`` (``python -m training.train --compensate-latency L``).

What a recorded episode carries is enough to relabel after the fact, so no new per-frame
field is needed:

- frames hold ``t``, ``pose`` (x, y, yaw of the car's centre) and ``speed``; the episode
  names its track (``extra.track_spec`` or ``track_id``, with the geometry hash of the
  track as driven) and the expert's parameters (``expert``); the dataset's info block
  holds the car (wheelbase, steering limit, top speed);
- the expert (``agents.expert.ExpertPilot``: pure pursuit with a curvature-limited speed)
  is a pure function of (pose, arc length ``s``, speed, track, its parameters): no hidden
  state enters its command. Its drift phases and noise only perturb what is *executed*
  while recording, never the label; the steering servo's slew (8 rad/s) is the car's, and
  acts on whatever command is applied, as it does when the pilot drives;
- so the state at ``t + L`` is interpolated between the two frames around it (linear in
  x, y, unwrapped yaw and speed; frames are one control period apart), its ``s`` is the
  projection of (x, y) onto the track as driven (as the env computes it), and the label is
  ``ExpertPilot.act`` on that state: the very expert that recorded the data.

When ``L`` is a whole number of control periods no interpolation happens and the label
is exactly the expert's recorded command of the frame ``L`` later (tested). Otherwise the
interpolation error is the only error; ``python -m training.relabel check DATA`` measures
it on real episodes (it drops every other frame, relabels the rest at one period and
compares with the dropped frames' recorded labels).

Frames whose ``t + L`` lies past the episode's last frame, or across a jump in the
trajectory (a re-centring intervention teleports the car; a gap in time), have no
compensated label and are left out (:attr:`Labels.valid`).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agents.expert import ExpertConfig, ExpertPilot
from sim.car import CarParams
from tracks import Track, load_track
from tracks.cli import run_main
from training.compensation import parse_compensation

__all__ = [
    "Labels",
    "RelabelError",
    "Trajectory",
    "check_dataset",
    "compensated_labels",
    "driven_track",
    "expert_from_record",
    "interpolation_check",
    "label_latency_s",
    "main",
    "relabel_episode",
    "relabel_trajectory",
]

logger = logging.getLogger(__name__)

#: A target time this close (s) to a frame's time is that frame (float32 times of long
#: episodes are that coarse); below a millimetre of travel at the cruise speeds here.
SNAP_S = 2e-4
#: A step between consecutive frames longer than this many control periods is a gap.
MAX_GAP_PERIODS = 1.5
#: A step that moves the car farther than its speed allows by more than this (m) is a jump
#: (a re-centring teleports the car onto the centreline).
JUMP_SLACK_M = 0.05


class RelabelError(ValueError):
    """An episode that cannot be relabelled (its track, its expert, its frames)."""


# --------------------------------------------------------------------------- episodes
def driven_track(record: Mapping[str, Any]) -> Track:
    """The track of an episode as it was driven (reversed for the other orientation, as
    ``TrackEnv.reset`` does), checked against the episode's geometry hash."""
    extra = record.get("extra") or {}
    spec = extra.get("track_spec") or record["track_id"]
    try:
        base = load_track(spec)
    except (ValueError, OSError) as e:
        raise RelabelError(f"episode {record.get('key')}: cannot load its track: {e}") from None
    track = base if base.orientation == record["direction"] else base.reversed()
    if track.geometry_hash != record["track_hash"]:
        raise RelabelError(
            f"episode {record.get('key')}: track {spec!r} driven {record['direction']} has "
            f"geometry hash {track.geometry_hash}, the episode was recorded on "
            f"{record['track_hash']} (the track changed)"
        )
    return track


def expert_from_record(record: Mapping[str, Any], car: Mapping[str, Any] | None) -> ExpertPilot:
    """The expert that recorded an episode (its parameters from the episode metadata, the
    car from the dataset's info block)."""
    meta = record.get("expert")
    if not isinstance(meta, Mapping) or meta.get("kind", "expert") != "expert":
        raise RelabelError(
            f"episode {record.get('key')} ({record.get('source')}): no expert parameters, "
            "so no expert labels to compensate"
        )
    names = {f.name for f in dataclasses.fields(ExpertConfig)}
    try:
        cfg = ExpertConfig(**{k: v for k, v in meta.items() if k in names})
        params = CarParams(**{k: v for k, v in dict(car or {}).items()})
    except (TypeError, ValueError) as e:
        raise RelabelError(
            f"episode {record.get('key')}: bad expert or car parameters: {e}"
        ) from None
    return ExpertPilot(None, cfg, params)


@dataclass(frozen=True)
class Trajectory:
    """An episode's recorded states, in float64: time, the car centre's pose, speed."""

    t: np.ndarray  # s
    x: np.ndarray  # m
    y: np.ndarray  # m
    yaw: np.ndarray  # rad, unwrapped (continuous across +-pi)
    speed: np.ndarray  # m/s

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> Trajectory:
        """From an episode's ``t``, ``pose`` and ``speed`` fields."""
        pose = np.asarray(arrays["pose"], dtype=np.float64).reshape(-1, 3)
        t = np.asarray(arrays["t"], dtype=np.float64).reshape(-1)
        speed = np.asarray(arrays["speed"], dtype=np.float64).reshape(-1)
        if not (len(t) == len(pose) == len(speed)) or len(t) == 0:
            raise RelabelError("t, pose and speed must have the same, non-zero length")
        if np.any(np.diff(t) <= 0):
            raise RelabelError("frame times must increase")
        return cls(t, pose[:, 0], pose[:, 1], np.unwrap(pose[:, 2]), speed)

    def __len__(self) -> int:
        return len(self.t)

    def breaks(self, period_s: float) -> np.ndarray:
        """``(N - 1,)`` bool: the step from frame i to i + 1 is a gap or a jump, across
        which the state cannot be interpolated."""
        dt = np.diff(self.t)
        step = np.hypot(np.diff(self.x), np.diff(self.y))
        reach = np.maximum(self.speed[:-1], self.speed[1:]) * dt * 1.5 + JUMP_SLACK_M
        return (dt > MAX_GAP_PERIODS * period_s) | (step > reach)


@dataclass(frozen=True)
class Labels:
    """Compensated labels of one episode; ``valid`` marks the frames that have one."""

    steering: np.ndarray  # float32 (N,); 0 where not valid
    throttle: np.ndarray  # float32 (N,)
    valid: np.ndarray  # bool (N,)


def relabel_trajectory(
    traj: Trajectory,
    track: Track,
    expert: ExpertPilot,
    latency_s: float,
    period_s: float,
) -> Labels:
    """The expert's command for the state at ``t + latency_s``, for every frame.

    The state is interpolated between the frames around ``t + latency_s`` (exactly a
    frame when it falls on one, within :data:`SNAP_S`); frames whose target time is past
    the last frame or beyond a gap or jump (:meth:`Trajectory.breaks`) are not valid.
    """
    if not (math.isfinite(latency_s) and latency_s >= 0):
        raise RelabelError(f"latency must be finite and >= 0 s, got {latency_s}")
    n = len(traj)
    target = traj.t + latency_s
    # j: the frame at or before the target; w: how far towards frame j + 1.
    j = np.searchsorted(traj.t, target + SNAP_S, side="right") - 1
    j = np.clip(j, 0, n - 1)
    on_frame = np.abs(target - traj.t[j]) <= SNAP_S
    valid = on_frame | (j < n - 1)
    valid &= target <= traj.t[-1] + SNAP_S
    # No break between the frame and the one whose interval holds the target.
    cut = np.concatenate([[0], np.cumsum(traj.breaks(period_s))])  # breaks before frame k
    last = np.where(on_frame, j, np.minimum(j + 1, n - 1))
    valid &= cut[last] == cut[np.arange(n)]
    jn = np.minimum(j + 1, n - 1)
    span = np.where(jn > j, traj.t[jn] - traj.t[j], 1.0)
    w = np.where(on_frame | (jn == j), 0.0, (target - traj.t[j]) / span)

    def at(a: np.ndarray) -> np.ndarray:
        return a[j] + w * (a[jn] - a[j])

    x, y, yaw, speed = at(traj.x), at(traj.y), at(traj.yaw), at(traj.speed)
    steering = np.zeros(n, dtype=np.float32)
    throttle = np.zeros(n, dtype=np.float32)
    idx = np.flatnonzero(valid)
    if idx.size:
        s = track.project_many(np.column_stack([x[idx], y[idx]])).s
        expert.set_track(track)
        for k, sk in zip(idx, s, strict=True):
            info = {"pose": (x[k], y[k], yaw[k]), "s": float(sk), "speed": speed[k]}
            steering[k], throttle[k] = expert.act(None, info)
    return Labels(steering, throttle, valid)


def relabel_episode(
    arrays: Mapping[str, np.ndarray],
    record: Mapping[str, Any],
    info: Mapping[str, Any],
    latency_s: float,
) -> Labels:
    """Compensated labels of one episode of a dataset: ``arrays`` holds its ``t``, ``pose``
    and ``speed``, ``record`` is its manifest record, ``info`` the dataset's info block."""
    try:
        traj = Trajectory.from_arrays(arrays)
    except RelabelError as e:
        raise RelabelError(f"episode {record.get('key')}: {e}") from None
    period = 1.0 / float(info.get("control_hz") or 20.0)
    expert = expert_from_record(record, info.get("car"))
    return relabel_trajectory(traj, driven_track(record), expert, latency_s, period)


def compensated_labels(ds: Any, episodes: Sequence[int], stride: int, latency_s: float) -> Labels:
    """Compensated labels of ``episodes`` of the dataset ``ds`` (a ``sim.dataset.Dataset``),
    concatenated in that order and keeping every ``stride``-th frame of each episode: the
    frames ``training.data.load_frames`` loads for the same arguments, in its order."""
    parts: list[Labels] = []
    for i in episodes:
        rec = ds.episodes[i]
        arrays = ds.load_episode(rec["key"], fields=["t", "pose", "speed"], verify=False)
        lab = relabel_episode(arrays, rec, ds.info, latency_s)
        parts.append(Labels(lab.steering[::stride], lab.throttle[::stride], lab.valid[::stride]))
    if not parts:
        empty = np.empty(0, dtype=np.float32)
        return Labels(empty, empty.copy(), np.empty(0, dtype=bool))
    return Labels(
        np.concatenate([p.steering for p in parts]),
        np.concatenate([p.throttle for p in parts]),
        np.concatenate([p.valid for p in parts]),
    )


def label_latency_s(text: str, model: str, model_args: Mapping[str, Any]) -> float:
    """The latency (s) ``--compensate-latency text`` means for a model ``model`` built with
    ``model_args``: the fixed value, or the car computer's median estimate from the model's
    counted MFLOP (the same count the evaluator charges it by)."""
    comp = parse_compensation(text)
    if comp.car is None:
        return comp.latency_s()
    # torch only for car:NAME, to count the model's FLOPs
    from agents.flops import count_mflop
    from agents.models import build_model

    return comp.latency_s(count_mflop(build_model(model, **dict(model_args))))


# --------------------------------------------------------------------------- checks
def interpolation_check(
    arrays: Mapping[str, np.ndarray],
    record: Mapping[str, Any],
    info: Mapping[str, Any],
) -> dict[str, float]:
    """How well relabelling reproduces recorded expert labels on one real episode.

    ``exact``: relabelled at L = 0 against the recorded labels (the projection and the
    expert are reproduced exactly). ``interpolated``: every other frame dropped, the rest
    relabelled at one control period, compared with the dropped frames' recorded labels
    (the error of interpolating over one period, what a latency that is not a whole
    number of periods costs; an upper bound, since the gap here is two periods).
    """
    period = 1.0 / float(info.get("control_hz") or 20.0)
    steer = np.asarray(arrays["steering"], dtype=np.float64)
    full = relabel_episode(arrays, record, info, 0.0)
    half = {k: np.asarray(arrays[k])[::2] for k in ("t", "pose", "speed")}
    traj = Trajectory.from_arrays(half)
    expert = expert_from_record(record, info.get("car"))
    lab = relabel_trajectory(traj, driven_track(record), expert, period, 2 * period)
    odd = np.arange(len(traj))[lab.valid] * 2 + 1
    keep = odd < len(steer)
    err_i = lab.steering[lab.valid][keep] - steer[odd[keep]]
    err_e = full.steering[full.valid] - steer[full.valid]
    return {
        "frames": int(len(steer)),
        "exact_max": float(np.abs(err_e).max()) if err_e.size else 0.0,
        "interpolated_mean": float(np.abs(err_i).mean()) if err_i.size else 0.0,
        "interpolated_p99": float(np.quantile(np.abs(err_i), 0.99)) if err_i.size else 0.0,
        "interpolated_max": float(np.abs(err_i).max()) if err_i.size else 0.0,
        "label_mean_abs": float(np.abs(steer).mean()),
    }


def check_dataset(root: str, episodes: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """:func:`interpolation_check` of every (or the named) expert episode of a dataset."""
    from sim.dataset import open_dataset

    ds = open_dataset(root)
    out = []
    for rec in ds.episodes:
        if episodes and rec["key"] not in episodes:
            continue
        if not isinstance(rec.get("expert"), Mapping):
            continue
        arrays = ds.load_episode(rec["key"], fields=["t", "pose", "speed", "steering"])
        out.append({"key": rec["key"], **interpolation_check(arrays, rec, ds.info)})
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m training.relabel check DATA``: relabelling's error on real episodes."""
    ap = argparse.ArgumentParser(prog="python -m training.relabel", description=main.__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="relabel at 0 and over one dropped frame; compare")
    c.add_argument("data", help="dataset directory")
    c.add_argument("--episodes", default=None, help="comma list of episode keys (default all)")
    args = ap.parse_args(argv)
    try:
        rows = check_dataset(args.data, args.episodes.split(",") if args.episodes else None)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not rows:
        print(f"error: {args.data}: no expert episodes to check", file=sys.stderr)
        return 2
    print(f"{'episode':<28} {'frames':>6} {'L=0 max':>9} {'interp mean':>11} {'p99':>8} {'max':>8}")
    for r in rows:
        print(
            f"{r['key']:<28} {r['frames']:>6} {r['exact_max']:>9.2e} "
            f"{r['interpolated_mean']:>11.5f} {r['interpolated_p99']:>8.5f} "
            f"{r['interpolated_max']:>8.5f}"
        )
    n = sum(r["frames"] for r in rows)
    mean = sum(r["interpolated_mean"] * r["frames"] for r in rows) / n
    print(
        f"{len(rows)} episodes, {n} frames: L=0 max |error| "
        f"{max(r['exact_max'] for r in rows):.2e}; interpolated over one period: mean "
        f"|error| {mean:.5f}, max {max(r['interpolated_max'] for r in rows):.5f} "
        f"(steering units; mean |label| "
        f"{sum(r['label_mean_abs'] * r['frames'] for r in rows) / n:.3f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
