"""``python -m sim.record``: expert laps recorded headless into a dataset.

    python -m sim.record --tracks oval,kidney --directions ccw,cw --laps 5 --out DIR

One episode is ``--laps`` laps of one track in one direction. Episodes run in
``--workers`` processes (default: all cores); each writes its own episode file
atomically and appends it to the manifest under a file lock, so a recorder
killed at any moment leaves a valid dataset. Re-running the same command
skips the episodes already complete (resumable), and the same ``--seed``
gives the same data (deterministic).

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
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

from agents.expert import ExpertConfig

# The frame schema is defined once, in sim.dataset; these names stay importable from here.
from sim.dataset import FRAME_DTYPES, FRAME_KEYS, append_frame, frames_to_arrays  # noqa: F401

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecordConfig:
    """What to record (one run of ``python -m sim.record``)."""

    tracks: tuple[str, ...] = ("oval",)  # built-in names, gen:<seed>, or track files
    directions: tuple[str, ...] = ("ccw", "cw")
    laps: int = 5  # laps per episode
    episodes: int = 1  # episodes per (track, direction)
    image_size: tuple[int, int] = (120, 160)
    expert: ExpertConfig = field(default_factory=ExpertConfig)
    # "random": each episode starts at an arc length drawn from its seed, so repeated
    # episodes of one track and direction differ; "line": all start on the start line
    start: str = "random"
    domain_randomization: bool = False
    seed: int = 0
    max_seconds: float = 600.0  # simulated-time cap per episode

    def __post_init__(self) -> None:
        if not self.tracks:
            raise ValueError("at least one track is needed")
        bad = [d for d in self.directions if d not in ("ccw", "cw")]
        if bad or not self.directions:
            raise ValueError(f"directions must be ccw and/or cw, got {list(self.directions)}")
        if self.laps < 1 or self.episodes < 1:
            raise ValueError("laps and episodes must be >= 1")
        if self.start not in ("line", "random"):
            raise ValueError(f"start must be 'line' or 'random', got {self.start!r}")

    def jobs(self) -> list[dict]:
        """One job per episode, each with its own derived seed."""
        out = []
        for track in self.tracks:
            for direction in self.directions:
                for k in range(self.episodes):
                    tag = f"{self.seed}|{track}|{direction}|{k}"
                    seed = int.from_bytes(hashlib.sha256(tag.encode()).digest()[:4], "little")
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

    from sim.env import ENV_ID, ENV_VERSION, TrackEnv
    from sim.world import CameraSpec

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
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def record_episode(job: dict, cfg: RecordConfig, out: str) -> dict:
    """Drive one episode with the expert and write it. Runs in a worker process."""
    from agents.expert import ExpertPilot
    from sim.dataset import DatasetWriter, EpisodeMeta
    from sim.env import TrackEnv

    t0 = time.perf_counter()
    env = TrackEnv(
        track=job["track"],
        direction=job["direction"],
        image_size=cfg.image_size,
        fixed_speed=None,
        max_laps=cfg.laps,
        domain_randomization=cfg.domain_randomization,
    )
    obs, info = env.reset(seed=job["seed"], options={"start": cfg.start})
    expert = ExpertPilot(env.track, cfg.expert, env.car_params, seed=job["seed"])
    max_steps = int(cfg.max_seconds * env.control_hz)
    frames: dict[str, list] = {k: [] for k in FRAME_KEYS}
    crashed = False
    for _ in range(max_steps):
        label = expert.act(obs, info)
        append_frame(frames, obs, label, info)
        obs, _, terminated, _, info = env.step(expert.executed(label))
        if terminated:
            crashed = info["off_track"] or info["flipped"]
            break
    track = env.track
    laps_done = info["lap"]
    lap_times = info["lap_times"]
    env.close()
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
        expert=expert.metadata(),
        extra={"track_spec": job["track"], "lap_times": lap_times, "start": cfg.start},
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
    from tqdm import tqdm

    from sim.dataset import DatasetWriter

    out = str(out)
    e = cfg.expert
    if cfg.episodes > 1 and cfg.start == "line" and not (e.steer_noise or e.drift_prob):
        logger.warning(
            "%d episodes per track and direction from the start line without noise are "
            "identical copies: dev and test would repeat the training frames "
            "(use --start random, --noise or --drift)",
            cfg.episodes,
        )
    writer = DatasetWriter(out, dataset_info_cached(cfg))
    jobs = [j for j in cfg.jobs() if not writer.has_episode(j["key"])]
    skipped = len(cfg.jobs()) - len(jobs)
    results: list[dict] = []
    t0 = time.perf_counter()
    bar = tqdm(total=len(jobs), unit="ep", disable=not progress, desc="recording")
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            results.append(record_episode(job, cfg, out))
            bar.update(1)
            bar.set_postfix(frames=sum(r["frames"] for r in results))
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(record_episode, job, cfg, out) for job in jobs]
            for fut in as_completed(futures):
                results.append(fut.result())
                bar.update(1)
                bar.set_postfix(frames=sum(r["frames"] for r in results))
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


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 120x160, got {text!r}") from None
    return h, w


def _csv(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m sim.record", description="Record expert laps headless."
    )
    ap.add_argument(
        "--tracks", type=_csv, default=("oval",), help="comma list: names, gen:<seed>, files"
    )
    ap.add_argument("--directions", type=_csv, default=("ccw", "cw"), help="ccw, cw or ccw,cw")
    ap.add_argument("--laps", type=int, default=5, help="laps per episode")
    ap.add_argument("--episodes", type=int, default=1, help="episodes per track and direction")
    ap.add_argument("--speed", type=float, default=2.0, help="expert cruise speed, m/s")
    ap.add_argument("--image-size", type=_size, default=(120, 160), help="camera HxW")
    ap.add_argument("--offset", type=float, default=0.0, help="expert line offset, m (+ left)")
    ap.add_argument("--noise", type=float, default=0.0, help="std of executed steering noise")
    ap.add_argument(
        "--drift", type=float, default=0.0, help="per-step chance of a drift-and-recover phase"
    )
    ap.add_argument(
        "--start",
        choices=("line", "random"),
        default="random",
        help="where episodes start: a random arc length per episode (default) or the start line",
    )
    ap.add_argument("--domain-randomization", action="store_true")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="dataset directory (created or resumed)")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        expert = ExpertConfig(
            cruise_speed=args.speed,
            line_offset=args.offset,
            steer_noise=args.noise,
            drift_prob=args.drift,
        )
        cfg = RecordConfig(
            tracks=args.tracks,
            directions=args.directions,
            laps=args.laps,
            episodes=args.episodes,
            image_size=args.image_size,
            expert=expert,
            start=args.start,
            domain_randomization=args.domain_randomization,
            seed=args.seed,
        )
        from tracks import load_track

        for t in cfg.tracks:
            if not t.startswith("gen:"):
                load_track(t)  # fail fast on a bad name or file, before any worker starts
        if args.workers < 1:
            raise ValueError("--workers must be >= 1")
        summary = record(cfg, args.out, workers=args.workers, progress=not args.no_progress)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
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
    raise SystemExit(main())
