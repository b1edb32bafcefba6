"""``python -m sim.record``: expert laps recorded headless into a dataset.

    python -m sim.record --tracks oval,kidney --directions ccw,cw --laps 5 --out DIR

One episode is ``--laps`` laps of one track in one direction. Episodes run in
``--workers`` processes (default: all cores); each writes its own episode file
atomically and appends it to the manifest under a file lock, so a recorder
killed at any moment leaves a valid dataset. Re-running the same command
skips the episodes already complete (resumable), and the same ``--seed``
gives the same data (deterministic). On resume nothing recorded is deleted:
complete episode files the manifest does not list are listed again, and a
listed episode whose file is missing or corrupt (its sha256 is checked) is
recorded again, the corrupt file moved to ``DIR/quarantine/``.

Episodes are keyed by track, direction, index and ``--seed``; each also keeps
the settings that shaped its frames (laps, start, domain randomisation, the
expert's parameters: ``extra["settings"]``). Running the command again with
other settings into the same ``--out`` would skip those episodes and record
nothing, so it is refused, naming the settings that differ: record into
another ``--out``, or add a separate set of episodes with another ``--seed``.

An episode in which the expert leaves the road (possible only with large
perturbations) is not written: its frames would teach a crash. It is
reported, and the command exits 1 if any episode failed.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from agents.expert import ExpertConfig, ExpertPilot
from agents.loop import ClosedLoop, LoopObserver
from sim.dataset import (  # the frame schema is defined once, there; importable from here too
    FRAME_DTYPES,  # noqa: F401
    FRAME_KEYS,
    DatasetWriter,
    EpisodeMeta,
    append_frame,
    frames_to_arrays,
)
from sim.env import ENV_ID, ENV_VERSION, TrackEnv
from sim.pool import imap_unordered
from sim.world import CameraSpec
from tracks import load_track
from tracks.cli import run_main
from tracks.cliargs import add_config_args, config_from_args
from tracks.common import DIRECTIONS, parse_size
from tracks.outputs import check_output_dir, os_error_line
from tracks.progress import progress_bar

logger = logging.getLogger(__name__)


def derive_seed(*parts: object) -> int:
    """A 32-bit seed derived from ``parts`` (their ``str`` joined by ``|``): the first
    four bytes, little-endian, of the SHA-256 of the joined text. The same parts give
    the same seed on every machine and Python version (unlike ``hash``)."""
    tag = "|".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(tag.encode()).digest()[:4], "little")


@dataclass(frozen=True)
class RecordConfig:
    """What to record (one run of ``python -m sim.record``)."""

    tracks: tuple[str, ...] = ("oval",)  # comma list: built-in names, gen:<seed>, or track files
    directions: tuple[str, ...] = DIRECTIONS  # ccw, cw or ccw,cw
    laps: int = 5  # laps per episode
    episodes: int = 1  # episodes per track and direction
    image_size: tuple[int, int] = (120, 160)  # camera HxW
    expert: ExpertConfig = field(default_factory=ExpertConfig)
    start: str = field(
        default="random",
        metadata={
            "choices": ("line", "random"),
            "help": "where episodes start: a random arc length per episode, so repeated "
            "episodes of one track and direction differ, or the start line",
        },
    )
    domain_randomization: bool = False  # seeded colours, light and camera jitter per episode
    seed: int = 0  # the dataset's seed: each episode's own seed is derived from it
    max_seconds: float = 600.0  # simulated-time cap per episode
    allow_undrivable: bool = False  # record on tracks that fail the drivability check (warns)

    def __post_init__(self) -> None:
        if not self.tracks:
            raise ValueError("at least one track is needed")
        bad = [d for d in self.directions if d not in DIRECTIONS]
        if bad or not self.directions:
            raise ValueError(f"directions must be ccw and/or cw, got {list(self.directions)}")
        parse_size(self.image_size, what="image_size")
        if self.laps < 1 or self.episodes < 1:
            raise ValueError("laps and episodes must be >= 1")
        if self.start not in ("line", "random"):
            raise ValueError(f"start must be 'line' or 'random', got {self.start!r}")

    def episode_settings(self) -> dict:
        """What shapes an episode's frames besides its key (track, direction, index, seed)."""
        return {
            "laps": self.laps,
            "start": self.start,
            "domain_randomization": self.domain_randomization,
            "expert": asdict(self.expert),
        }

    def jobs(self) -> list[dict]:
        """One job per episode, each with its own derived seed."""
        out = []
        for track in self.tracks:
            for direction in self.directions:
                for k in range(self.episodes):
                    seed = derive_seed(self.seed, track, direction, k)
                    name = (
                        Path(track).stem
                        if os.sep in track or track.endswith((".csv", ".json"))
                        else track
                    )
                    key = f"{name.replace(':', '')}-{direction}-{k:03d}-s{self.seed}"
                    out.append({"key": key, "track": track, "direction": direction, "seed": seed})
        return out


_RENDERERS = {
    "plane": "road plane ray-cast against a 5 mm label raster of the road meshes (sim.plane); "
    "bodies by pybullet TinyRenderer, composited by depth",
    "tiny": "pybullet TinyRenderer (ER_TINY_RENDERER), ground painted from the depth buffer",
}


def dataset_info(cfg: RecordConfig) -> dict:
    """The dataset-level self-description written into the manifest."""
    import pybullet

    env = TrackEnv(image_size=cfg.image_size)
    info = {
        "env_id": ENV_ID,
        "env_version": ENV_VERSION,
        "pybullet_version": getattr(pybullet, "__version__", None) or _dist_version("pybullet"),
        "renderer": _RENDERERS[env.camera_renderer],
        "camera": asdict(CameraSpec()),
        "image_size": list(cfg.image_size),
        "control_hz": env.control_hz,
        "physics_hz": env.physics_hz,
        "car": asdict(env.car_params),
        "domain_randomization": cfg.domain_randomization,
    }
    env.close()
    return info


def _dist_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


class _Frames(LoopObserver):
    """Every frame the expert looks at, with its noise-free label."""

    def __init__(self) -> None:
        self.frames: dict[str, list] = {k: [] for k in FRAME_KEYS}

    def on_frame(self, obs, info: dict, command: np.ndarray) -> None:
        append_frame(self.frames, obs, command, info)


def record_episode(job: dict, cfg: RecordConfig, out: str) -> dict:
    """Drive one episode with the expert and write it. Runs in a worker process."""
    t0 = time.perf_counter()
    env = TrackEnv(
        track=job["track"],
        direction=job["direction"],
        image_size=cfg.image_size,
        fixed_speed=None,
        max_laps=cfg.laps,
        domain_randomization=cfg.domain_randomization,
        allow_undrivable=cfg.allow_undrivable,
    )
    expert = ExpertPilot(None, cfg.expert, env.car_params, seed=job["seed"])
    recorder = _Frames()
    # The expert drives the motors; its labels are clean, what it executes is perturbed.
    loop = ClosedLoop(
        env,
        expert,
        throttle=True,
        on_leave_road="stop",
        perturb=expert.executed,
        observers=[recorder],
        trajectory_hz=None,
    )
    try:
        loop.reset(seed=job["seed"], options={"start": cfg.start})
        run = loop.run(cfg.laps, max_steps=int(cfg.max_seconds * env.control_hz))
    finally:
        env.close()
    frames, info = recorder.frames, loop.info
    crashed = bool(run.interventions)
    track = env.track
    laps_done = info["lap"]
    lap_times = info["lap_times"]
    result = {
        "key": job["key"],
        "frames": len(frames["t"]),
        "laps": laps_done,
        "lap_times": lap_times,
        "crashed": bool(crashed),
        "seconds": time.perf_counter() - t0,
    }
    if crashed or laps_done < cfg.laps:
        result["error"] = (
            f"{job['key']}: expert {'left the road' if crashed else 'ran out of time'} "
            f"after {laps_done} of {cfg.laps} laps; episode not written"
        )
        return result
    arrays = frames_to_arrays(frames)
    meta = EpisodeMeta(
        track_id=track.name,
        track_hash=track.geometry_hash,
        direction=job["direction"],
        seed=job["seed"],
        source="expert",
        laps=laps_done,
        ended=run.ending,
        expert=expert.metadata(),
        extra={
            "track_spec": job["track"],
            "lap_times": lap_times,
            "start": cfg.start,
            "settings": cfg.episode_settings(),
        },
    )
    DatasetWriter(out, dataset_info_cached(cfg)).write_episode(job["key"], arrays, meta)
    return result


_INFO_CACHE: dict = {}


def dataset_info_cached(cfg: RecordConfig) -> dict:
    key = (cfg.image_size, cfg.domain_randomization)
    if key not in _INFO_CACHE:
        _INFO_CACHE[key] = dataset_info(cfg)
    return _INFO_CACHE[key]


def record(cfg: RecordConfig, out: str | Path, workers: int = 1, progress: bool = True) -> dict:
    """Record every episode of ``cfg`` not yet in ``out``; return a summary."""
    out = str(out)
    e = cfg.expert
    if cfg.episodes > 1 and cfg.start == "line" and not (e.steer_noise or e.drift_prob):
        logger.warning(
            "%d episodes per track and direction from the start line without noise are "
            "identical copies: dev and test would repeat the training frames "
            "(use --start random, --noise or --drift)",
            cfg.episodes,
        )
    # Opening the writer lists again complete episode files the manifest lacks; repair()
    # unlists this run's episodes whose file is gone or damaged, so they are recorded again.
    writer = DatasetWriter(out, dataset_info_cached(cfg))
    all_jobs = cfg.jobs()
    damaged = writer.repair(j["key"] for j in all_jobs)
    if damaged:
        logger.warning(
            "%s: recording again %d listed episodes whose file is missing or damaged: %s",
            out,
            len(damaged),
            "; ".join(damaged[:3]) + ("; ..." if len(damaged) > 3 else ""),
        )
    listed = {rec["key"]: rec for rec in writer.episodes}
    _refuse_other_settings(
        cfg, out, writer.info, [listed[j["key"]] for j in all_jobs if j["key"] in listed]
    )
    jobs = [j for j in all_jobs if j["key"] not in listed]
    skipped = len(all_jobs) - len(jobs)
    results: list[dict] = []
    t0 = time.perf_counter()
    bar = progress_bar(total=len(jobs), unit="ep", enabled=progress, desc="recording")
    try:
        for _, result in imap_unordered(record_episode, jobs, workers, args=(cfg, out)):
            results.append(result)
            bar.update(1)
            bar.set_postfix(frames=sum(r["frames"] for r in results))
    finally:
        bar.close()
    wall = time.perf_counter() - t0
    frames = sum(r["frames"] for r in results if "error" not in r)
    return {
        "out": out,
        "episodes_recorded": sum(1 for r in results if "error" not in r),
        "episodes_skipped": skipped,
        "errors": [r["error"] for r in results if "error" in r],
        "frames": frames,
        "wall_seconds": wall,
        "frames_per_second": frames / wall if wall > 0 else 0.0,
        "episodes": sorted(results, key=lambda r: r["key"]),
    }


#: Expert settings on the command line, under the recorder's short names.
EXPERT_FLAGS = {
    "cruise_speed": "--speed",
    "line_offset": "--offset",
    "steer_noise": "--noise",
    "drift_prob": "--drift",
}


def _recorded_settings(rec: dict, info: dict) -> dict:
    """The settings episode ``rec`` was recorded with: ``extra["settings"]``, or for episodes
    recorded before it was kept, what the record says (its laps, start and expert, the
    dataset's domain randomisation)."""
    extra = rec.get("extra") or {}
    if isinstance(extra.get("settings"), dict):
        return extra["settings"]
    expert = {k: v for k, v in (rec.get("expert") or {}).items() if k not in ("kind", "name")}
    return {
        "laps": rec.get("laps"),
        "start": extra.get("start"),
        "domain_randomization": info.get("domain_randomization", False),
        "expert": expert,
    }


def settings_differences(cfg: RecordConfig, rec: dict, info: dict) -> list[str]:
    """``"--flag THERE there, NOW now"`` for each setting in which the episode of record
    ``rec`` differs from what ``cfg`` would record (settings an older record does not state
    are not compared)."""
    have, want = _recorded_settings(rec, info), cfg.episode_settings()
    out = []
    for name in ("laps", "start", "domain_randomization"):
        if have.get(name) is not None and have[name] != want[name]:
            out.append(f"--{name.replace('_', '-')} {have[name]} there, {want[name]} now")
    for name, value in want["expert"].items():
        there = (have.get("expert") or {}).get(name)
        if there is not None and there != value:
            flag = EXPERT_FLAGS.get(name, f"expert {name}")
            out.append(f"{flag} {there} there, {value} now")
    return out


def _refuse_other_settings(cfg: RecordConfig, out: str, info: dict, recorded: list[dict]) -> None:
    """ValueError when episodes this run would skip as complete were recorded with other
    settings: resuming would silently record nothing of what was asked."""
    clash = [(rec["key"], settings_differences(cfg, rec, info)) for rec in recorded]
    clash = [(key, diff) for key, diff in clash if diff]
    if not clash:
        return
    keys, diff = [k for k, _ in clash], clash[0][1]
    raise ValueError(
        f"{out}: {len(keys)} of this command's episodes are already recorded with other "
        f"settings ({'; '.join(diff)}), e.g. {keys[0]}; resuming would record none of them. "
        f"Record into another --out, or add a separate set of episodes to this dataset "
        f"with another --seed"
    )


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m sim.record", description="Record expert laps headless."
    )
    add_config_args(ap, RecordConfig, exclude=("expert",))
    add_config_args(
        ap.add_argument_group("expert"), ExpertConfig, only=EXPERT_FLAGS, flags=EXPERT_FLAGS
    )
    ap.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="recording processes (default: all cores, %(default)s here)",
    )
    ap.add_argument("--out", required=True, help="dataset directory (created or resumed)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        expert = config_from_args(ExpertConfig, args)
        cfg = config_from_args(RecordConfig, args, expert=expert)
        for t in cfg.tracks:
            if not t.startswith("gen:"):
                # fail fast on a bad name or file or an undrivable track, before any worker starts
                load_track(t, allow_undrivable=cfg.allow_undrivable)
        if args.workers < 1:
            raise ValueError("--workers must be >= 1")
        check_output_dir(args.out)  # before any episode is driven
        summary = record(cfg, args.out, workers=args.workers, progress=not args.no_progress)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # while writing the dataset: one line, no traceback
        print(f"error: {os_error_line(exc, args.out)}", file=sys.stderr)
        return 2
    print(
        f"wrote {summary['episodes_recorded']} episodes ({summary['frames']} frames) to {summary['out']}"
        f" in {summary['wall_seconds']:.1f} s ({summary['frames_per_second']:.0f} frames/s);"
        f" {summary['episodes_skipped']} already complete"
    )
    for err in summary["errors"]:
        print(f"error: {err}", file=sys.stderr)
    return 1 if summary["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(run_main(main, note="finished episodes kept; rerun to record the rest"))
