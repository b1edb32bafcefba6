"""``python -m sim.dataset bench``: write a synthetic dataset, then time reading it back."""

from __future__ import annotations

import contextlib
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from sim.dataset.format import DIRECTIONS, EpisodeMeta
from sim.dataset.reader import open_dataset
from sim.dataset.synthetic import synthetic_episode
from sim.dataset.writer import DatasetWriter

__all__ = ["run_bench"]


def run_bench(
    *,
    frames: int,
    size: tuple[int, int],
    episode_frames: int,
    runs: int,
    seed: int,
    out_dir: Path | None = None,
) -> int:
    """Write ``frames`` synthetic frames of ``size`` (H, W) in episodes of ``episode_frames``
    (into ``out_dir``, kept, or a temporary directory), then print write, ``load_arrays``
    (median of ``runs``, warm cache) and ``verify=True`` throughput. Returns 0.

    Episodes already in ``out_dir`` (same keys) are not written again.
    """
    hw = size
    rng = np.random.default_rng(seed)
    info = {
        "env_id": "bench",
        "camera": {"image_size": list(hw)},
        "control_hz": 20,
        "note": "synthetic data written by `python -m sim.dataset bench`",
    }
    with contextlib.ExitStack() as stack:
        if out_dir:
            root = Path(out_dir)
        else:
            root = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="trackpilot-bench-"))
            )
        writer = DatasetWriter(root, info)
        n_eps = max(1, math.ceil(frames / episode_frames))
        t0 = time.perf_counter()
        done = 0
        for i in tqdm(range(n_eps), desc="write", unit="ep", disable=not sys.stderr.isatty()):
            n = min(episode_frames, frames - done) if i == n_eps - 1 else episode_frames
            key = f"bench-{i:05d}"
            if not writer.has_episode(key):
                meta = EpisodeMeta("bench", "0" * 8, DIRECTIONS[i % 2], seed + i, "synthetic")
                writer.write_episode(key, synthetic_episode(rng, n, hw), meta)
            done += n
        t_write = time.perf_counter() - t0
        ds = open_dataset(root)
        total = len(ds)
        disk = sum(rec["bytes"] for rec in ds.episodes)
        ds.load_arrays()  # warm the page cache
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            arrays = ds.load_arrays()
            times.append(time.perf_counter() - t0)
            loaded = sum(a.nbytes for a in arrays.values())
            del arrays
        t = float(np.median(times))
        t0 = time.perf_counter()
        ds.load_arrays(verify=True)
        t_verify = time.perf_counter() - t0
        print(f"dataset      {root}{'' if out_dir else ' (temporary)'}")
        print(f"frames       {total:,} at {hw[0]}x{hw[1]} in {len(ds.episodes)} episodes")
        print(f"disk         {disk / total:,.0f} bytes/frame ({disk / 1e6:,.1f} MB)")
        print(
            f"write        {total / t_write:,.0f} frames/s ({disk / 1e6 / t_write:,.0f} MB/s, fsync'd)"
        )
        print(
            f"load_arrays  {total / t:,.0f} frames/s, {loaded / 1e6 / t:,.0f} MB/s "
            f"(median of {runs}, warm cache, min {min(times) * 1e3:.0f} ms, "
            f"max {max(times) * 1e3:.0f} ms)"
        )
        print(f"  verify=True {total / t_verify:,.0f} frames/s (sha256 of every file)")
    return 0
