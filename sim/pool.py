"""The one process pool: spawn-context workers, results as they finish, nothing left running.

Recording, closed-loop evaluation and the leaderboard's trainings all fan work out the
same way: ``workers=1`` runs in this process (no pool, easy to debug and profile);
otherwise a ``spawn`` pool (never ``fork``: PyBullet clients and torch threads do not
survive a fork) runs the jobs and :func:`imap_unordered` yields ``(index, result)`` as
each finishes. A failing job, or Ctrl-C, cancels what has not started and shuts the
pool down before the error propagates, so no worker outlives the call.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, TypeVar

__all__ = ["imap_unordered", "spawn_pool"]

J = TypeVar("J")
R = TypeVar("R")


def spawn_pool(workers: int, initializer: Callable[[], None] | None = None) -> ProcessPoolExecutor:
    """A ``ProcessPoolExecutor`` of ``workers`` spawn-context processes."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    return ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=initializer)


def imap_unordered(
    fn: Callable[..., R],
    jobs: Sequence[J],
    workers: int = 1,
    *,
    args: tuple[Any, ...] = (),
    initializer: Callable[[], None] | None = None,
) -> Iterator[tuple[int, R]]:
    """``(i, fn(jobs[i], *args))`` for every job, in the order they finish.

    ``workers <= 1`` (or a single job) runs them here, in order. The first exception
    from a job is raised after the pool has been shut down with its pending jobs
    cancelled.
    """
    jobs = list(jobs)
    if workers <= 1 or len(jobs) <= 1:
        for i, job in enumerate(jobs):
            yield i, fn(job, *args)
        return
    pool = spawn_pool(min(workers, len(jobs)), initializer)
    ok = False
    try:
        pending: dict[Future, int] = {pool.submit(fn, job, *args): i for i, job in enumerate(jobs)}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                i = pending.pop(fut)
                yield i, fut.result()
        ok = True
    finally:
        # On error, Ctrl-C or an abandoned generator: cancel what has not started and do
        # not wait for the rest.
        pool.shutdown(wait=ok, cancel_futures=not ok)
