"""``python -m sim.dataset bench``: write a synthetic dataset, then time reading it back."""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from pathlib import Path

import numpy as np

from sim.dataset.format import DIRECTIONS, EpisodeMeta
from sim.dataset.reader import LOAD_WORKERS, open_dataset
from sim.dataset.synthetic import synthetic_episode
from sim.dataset.writer import DatasetWriter
from tracks.progress import progress_bar

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
    (into ``out_dir``, kept, or a temporary directory), then print the write throughput and
    that of ``load_arrays`` without and with sha256 verification (medians of ``runs``, warm
    cache). Returns 0.

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
        for i in progress_bar(range(n_eps), desc="write", unit="ep"):
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
        ds.load_arrays(verify=False)  # warm the page cache

        def timed(verify: bool) -> tuple[list[float], int]:
            times, loaded = [], 0
            for _ in range(runs):
                t0 = time.perf_counter()
                arrays = ds.load_arrays(verify=verify)
                times.append(time.perf_counter() - t0)
                loaded = sum(a.nbytes for a in arrays.values())
                del arrays
            return times, loaded

        rows = {"verify=False": timed(False), "verify=True": timed(True)}
        print(f"dataset      {root}{'' if out_dir else ' (temporary)'}")
        print(f"frames       {total:,} at {hw[0]}x{hw[1]} in {len(ds.episodes)} episodes")
        print(f"disk         {disk / total:,.0f} bytes/frame ({disk / 1e6:,.1f} MB)")
        print(
            f"write        {total / t_write:,.0f} frames/s ({disk / 1e6 / t_write:,.0f} MB/s, fsync'd)"
        )
        print(f"load_arrays  median of {runs}, warm cache, {LOAD_WORKERS} reader threads:")
        for name, (times, loaded) in rows.items():
            t = float(np.median(times))
            note = "sha256 of every file, the default" if name == "verify=True" else "no sha256"
            print(
                f"  {name:<13} {total / t:>9,.0f} frames/s, {loaded / 1e6 / t:,.0f} MB/s "
                f"(min {min(times) * 1e3:.0f} ms, max {max(times) * 1e3:.0f} ms; {note})"
            )
    return 0
