"""``python -m sim.dataset bench``: the same frames written as version-1 (raw) and version-2
(compressed) episode files, then the bytes per frame on disk and the load rate of each.

What the frames are decides what compression achieves, so the bench says which it used:

- ``render`` (the default): camera frames rendered by ``TrackEnv`` while a P-controller on
  the true pose drives ``oval`` and ``kidney`` in both directions at 2 m/s from random
  starts, i.e. what ``sim.record`` stores (the expert's line differs a little);
- ``noise``: uniform random pixels, which no lossless codec compresses (the worst case for
  disk and load rate);
- ``--data DIR``: every episode of an existing dataset (a real recording).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sim.dataset import codec
from sim.dataset.episode_file import _read_header_path
from sim.dataset.format import DIRECTIONS, EpisodeMeta
from sim.dataset.frames import FRAME_KEYS, append_frame, frames_to_arrays
from sim.dataset.reader import open_dataset
from sim.dataset.synthetic import synthetic_episode
from sim.dataset.writer import DatasetWriter
from tracks.progress import progress_bar

__all__ = ["BENCH_SOURCES", "run_bench"]

#: Where the bench's frames come from (see the module docstring).
BENCH_SOURCES = ("render", "noise")
#: The tracks the ``render`` source drives (left and right bends), alternating per episode.
_RENDER_TRACKS = ("oval", "kidney")
#: Format versions compared, and what they are.
_VERSIONS = {1: "raw", 2: f"zstd level {codec.LEVEL}"}


def _rendered(
    frames: int, size: tuple[int, int], episode_frames: int, seed: int
) -> Iterator[tuple[dict[str, np.ndarray], EpisodeMeta]]:
    """Episodes of rendered camera frames (see the module docstring)."""
    from sim.bench import _p_control  # lazy, as TrackEnv: gymnasium, PyBullet
    from sim.env import TrackEnv  # lazy: the dataset format itself does not need PyBullet

    env = TrackEnv(track=_RENDER_TRACKS[0], image_size=size, fixed_speed=2.0)
    try:
        done = i = 0
        while done < frames:
            track, direction = _RENDER_TRACKS[(i // 2) % 2], DIRECTIONS[i % 2]
            options = {"track": track, "direction": direction, "start": "random"}
            obs, info = env.reset(seed=seed + i, options=options)
            buf: dict[str, list] = {k: [] for k in FRAME_KEYS}
            ended = "time_limit"
            for _ in range(min(episode_frames, frames - done)):
                steer = float(_p_control(info["lateral"], info["heading_error"]))
                append_frame(buf, obs, (steer, 0.0), info)
                obs, _, terminated, truncated, info = env.step(np.array([steer], np.float32))
                if terminated or truncated:
                    ended = "flipped" if info["flipped"] else "off_track"
                    break
            arrays = frames_to_arrays(buf)
            meta = EpisodeMeta(
                track, env.track.geometry_hash, direction, seed + i, "bench", ended=ended
            )
            yield arrays, meta
            done += len(arrays["t"])
            i += 1
    finally:
        env.close()


def _noise(
    frames: int, size: tuple[int, int], episode_frames: int, seed: int
) -> Iterator[tuple[dict[str, np.ndarray], EpisodeMeta]]:
    rng = np.random.default_rng(seed)
    for i, lo in enumerate(range(0, frames, episode_frames)):
        n = min(episode_frames, frames - lo)
        yield (
            synthetic_episode(rng, n, size),
            EpisodeMeta("noise", "0" * 8, DIRECTIONS[i % 2], seed + i, "synthetic"),
        )


def _from_dataset(root: Path) -> Iterator[tuple[dict[str, np.ndarray], EpisodeMeta]]:
    ds = open_dataset(root)
    for i in range(ds.num_episodes):
        yield ds.load_episode(i), ds.episode_meta(i)


def run_bench(
    *,
    frames: int,
    size: tuple[int, int],
    episode_frames: int,
    runs: int,
    seed: int,
    out_dir: Path | None = None,
    source: str = "render",
    data: Path | None = None,
    workers: Sequence[int] = (1, 2),
    as_json: bool = False,
) -> int:
    """Write the bench's frames (``source``, or every episode of ``data``) as version-1 and
    version-2 datasets (under ``out_dir``, kept, or a temporary directory) and print, per
    version, bytes per frame on disk, the write rate (fsync'd) and the ``load_arrays`` rate
    without and with sha256 verification, with each count of reader threads in ``workers``
    (medians of ``runs``, warm page cache). Returns 0."""
    if data is None and source not in BENCH_SOURCES:
        raise ValueError(f"source must be one of {BENCH_SOURCES}, got {source!r}")
    with contextlib.ExitStack() as stack:
        if out_dir:
            root = Path(out_dir)
        else:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tp-bench-")))
        if data is not None:
            episodes, what = _from_dataset(data), f"every episode of {data}"
            info = dict(open_dataset(data).info)
        else:
            make = _rendered if source == "render" else _noise
            episodes = make(frames, size, episode_frames, seed)
            what = (
                f"rendered by TrackEnv ({' and '.join(_RENDER_TRACKS)}, both directions, "
                "P-controller at 2 m/s)"
                if source == "render"
                else "uniform random pixels (incompressible: the worst case)"
            )
            info = {"env_id": "bench", "camera": {"image_size": list(size)}, "control_hz": 20}
            info["note"] = f"written by `python -m sim.dataset bench` ({source} frames)"
        writers = {v: DatasetWriter(root / f"v{v}", info, schema_version=v) for v in _VERSIONS}
        write_s = dict.fromkeys(_VERSIONS, 0.0)
        for j, (arrays, meta) in enumerate(progress_bar(episodes, desc="write", unit="ep")):
            key = f"bench-{j:05d}"
            for v, writer in writers.items():
                if not writer.has_episode(key):
                    t0 = time.perf_counter()
                    writer.write_episode(key, arrays, meta)
                    write_s[v] += time.perf_counter() - t0
        results: dict[str, Any] = {"dataset": str(root), "frames_from": what, "versions": {}}
        for v in _VERSIONS:
            ds = open_dataset(root / f"v{v}")
            total = len(ds)
            disk = sum(rec["bytes"] for rec in ds.episodes)
            ds.load_arrays(verify=False)  # warm the page cache
            loads: dict[str, float] = {}
            for w in workers:
                for verify in (False, True):
                    times = []
                    for _ in range(runs):
                        t0 = time.perf_counter()
                        arrays = ds.load_arrays(verify=verify, workers=w)
                        times.append(time.perf_counter() - t0)
                        del arrays
                    loads[f"{w}_{'sha256' if verify else 'nosha'}"] = total / float(
                        np.median(times)
                    )
            results["versions"][str(v)] = {
                "format": _VERSIONS[v],
                "frames": total,
                "episodes": ds.num_episodes,
                "image_size": list(_read_header_path(ds.episode_path(0)).image_hw),
                "bytes_per_frame": disk / total,
                "write_frames_per_s": (total / write_s[v]) if write_s[v] else None,
                "load_frames_per_s": loads,
            }
        if as_json:
            print(json.dumps(results, indent=2))
        else:
            _print(results, runs, workers, kept=bool(out_dir))
    return 0


def _print(r: dict[str, Any], runs: int, workers: Sequence[int], kept: bool) -> None:
    v1 = r["versions"]["1"]
    h, w = v1["image_size"]
    print(f"dataset   {r['dataset']}{'' if kept else ' (temporary)'}")
    print(f"frames    {v1['frames']:,} at {h}x{w} in {v1['episodes']} episodes, {r['frames_from']}")
    cols = "".join(f"  {n} thread{'s' if n > 1 else ' '}: no sha256 / sha256" for n in workers)
    print(f"load_arrays frames/s, median of {runs}, warm cache;{cols}")
    print(f"{'format':<18} {'bytes/frame':>11} {'smaller':>8} {'write f/s':>10}  load f/s")
    for s in r["versions"].values():
        ratio = v1["bytes_per_frame"] / s["bytes_per_frame"]
        wr = f"{s['write_frames_per_s']:,.0f}" if s["write_frames_per_s"] else "-"
        loads = "   ".join(
            f"{s['load_frames_per_s'][f'{n}_nosha']:>9,.0f} / {s['load_frames_per_s'][f'{n}_sha256']:>9,.0f}"
            for n in workers
        )
        print(f"{s['format']:<18} {s['bytes_per_frame']:>11,.0f} {ratio:>7.1f}x {wr:>10}  {loads}")
