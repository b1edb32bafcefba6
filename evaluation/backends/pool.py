"""The default backend: this machine's process pool (``sim.pool``), or this process.

``workers=1`` runs the jobs here, in order (no pool: easy to debug and profile, and the
pilots already loaded by the caller are reused); more run in spawn workers that die
with their parent. Pilots are loaded by their spec (a path): the workers share this
machine's file system.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from evaluation.backends.base import Backend
from sim.pool import imap_unordered

__all__ = ["PoolBackend"]


class PoolBackend(Backend):
    """``workers`` processes on this machine (1: this process)."""

    name = "pool"

    def __init__(self, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers

    def imap_unordered(
        self,
        fn: Callable[[Any], Any],
        jobs: Sequence[Any],
        *,
        initializer: Callable[[], None] | None = None,
    ) -> Iterator[tuple[int, Any]]:
        # sim.pool stops its workers when the generator ends, fails or is abandoned.
        return imap_unordered(fn, jobs, self.workers, initializer=initializer)
