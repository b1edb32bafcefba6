"""Helper for tests/test_dataset.py's crash tests: record synthetic episodes into DIR forever.

Usage: python tests/_dataset_writer_proc.py DIR [SEED] [--die-at STEP:K]

Resumes on an existing DIR with the next unused key. Prints "ready" once the writer is open,
so the test can kill it while it is writing episodes rather than while it imports numpy.

``--die-at STEP:K`` makes the process SIGKILL itself at the K-th occurrence of STEP, to hit
each phase of a write deterministically:

- ``episode_temp``: halfway through writing an episode's temp file;
- ``manifest_temp``: halfway through writing the manifest's temp file;
- ``replace``: just before an ``os.replace`` (episode file or manifest);
- ``after_replace``: just after an ``os.replace``.
"""

from __future__ import annotations

import argparse
import os
import signal

import numpy as np

import sim.dataset.writer
import tracks.fileio
from sim.dataset import DatasetWriter, EpisodeMeta, synthetic_episode

INFO = {"env_id": "KillTest-v0", "camera": {"image_size": [16, 24]}, "control_hz": 20}
STEPS = ("episode_temp", "manifest_temp", "replace", "after_replace")


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _install_crash(step: str, k: int) -> None:
    calls = 0

    def hit() -> bool:
        nonlocal calls
        calls += 1
        return calls == k

    if step in ("episode_temp", "manifest_temp"):
        module = sim.dataset.writer if step == "episode_temp" else tracks.fileio
        write_temp_file = module.write_temp_file

        def half_write(path, data):
            if hit():
                write_temp_file(path, bytes(memoryview(data)[: len(data) // 2]))
                _die()
            return write_temp_file(path, data)

        module.write_temp_file = half_write
    else:
        replace = os.replace

        def crashing_replace(src, dst):
            if step == "replace" and hit():
                _die()
            replace(src, dst)
            if step == "after_replace" and hit():
                _die()

        os.replace = crashing_replace


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("seed", type=int, nargs="?", default=0)
    parser.add_argument("--die-at", default=None, help="STEP:K, STEP one of " + ", ".join(STEPS))
    args = parser.parse_args(argv)
    if args.die_at:
        step, k = args.die_at.split(":")
        if step not in STEPS:
            parser.error(f"unknown step {step!r}")
        _install_crash(step, int(k))
    writer = DatasetWriter(args.dir, INFO)
    i = len(writer.episodes)
    print("ready", flush=True)
    while True:
        key = f"ep{i:05d}"
        i += 1
        if writer.has_episode(key):
            continue
        rng = np.random.default_rng([args.seed, i])
        # mostly small episodes, some larger, so kills land in every phase of a write
        n = int(rng.integers(5, 60)) if rng.random() < 0.8 else int(rng.integers(200, 800))
        meta = EpisodeMeta("kill-track", "abc123", ("ccw", "cw")[i % 2], i, "expert", laps=1)
        writer.write_episode(key, synthetic_episode(rng, n, (16, 24)), meta)


if __name__ == "__main__":
    raise SystemExit(main())
