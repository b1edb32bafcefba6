"""Random but well-formed episodes, for benchmarks and tests."""

from __future__ import annotations

import numpy as np

__all__ = ["synthetic_episode"]


def synthetic_episode(
    rng: np.random.Generator, n: int, hw: tuple[int, int]
) -> dict[str, np.ndarray]:
    """Random but well-formed frames (for benchmarks and tests)."""
    t = np.arange(n, dtype=np.float32) / 20.0
    progress = np.cumsum(rng.uniform(0.0, 0.2, n)).astype(np.float32)
    return {
        "image": rng.integers(0, 256, (n, *hw, 3), dtype=np.uint8),
        "steering": rng.uniform(-1, 1, n).astype(np.float32),
        "throttle": rng.uniform(0, 1, n).astype(np.float32),
        "speed": rng.uniform(0, 3, n).astype(np.float32),
        "t": t,
        "pose": rng.normal(size=(n, 3)).astype(np.float32),
        "lateral": rng.normal(0, 0.1, n).astype(np.float32),
        "heading_error": rng.normal(0, 0.1, n).astype(np.float32),
        "progress": progress,
        "lap": (progress // 20.0).astype(np.int32),
        "takeover": (rng.random(n) < 0.05).astype(np.uint8),
    }
