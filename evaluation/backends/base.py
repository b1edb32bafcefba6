"""What every execution backend offers: run closed-loop jobs, yield results as they finish.

A backend (like stable-baselines3's ``VecEnv``: a base class plus one module per
backend) takes a module-level function and a list of jobs and yields ``(index,
outcome)`` in the order the runs finish. The outcome is whatever the function returned:
for :func:`evaluation.runner.run_job`, a ``RunResult`` or a :class:`RunFailure` (the
run's pilot could not be loaded where it ran; the other runs go on). Any other
exception in a run stops the backend and is raised in the caller, as before.

Backends are context managers: leaving the block, however, stops what they started
(the pool's processes, a local Ray instance, tasks still queued).
"""

from __future__ import annotations

import dataclasses
import socket
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Backend", "RunFailure", "RunsIncomplete", "comparable", "this_host"]


def this_host() -> str:
    """This machine's name, for messages that say where something happened."""
    return socket.gethostname() or "localhost"


def comparable(result: Any) -> dict[str, Any]:
    """A run's result (a ``RunResult``) as a dict that must be the same on every backend:
    all of it but the real time it took and the file its pilot was loaded from (on Ray,
    a copy in the worker's cache)."""
    d = dataclasses.asdict(result)
    d.pop("wall_s")  # real time: differs from run to run
    d["pilot_meta"].pop("checkpoint", None)  # the file it was loaded from: on Ray, a copy
    return d


@dataclass(frozen=True)
class RunFailure:
    """A run that was not made: its pilot could not be loaded (or fetched) where it ran."""

    pilot_spec: str  # the pilot as the user named it
    reason: str  # the loader's one-line error
    host: str  # the machine it happened on

    def line(self) -> str:
        return f"pilot {self.pilot_spec!r} could not be loaded on {self.host}: {self.reason}"


class RunsIncomplete(RuntimeError):
    """Some runs were not made (:class:`RunFailure`); the others finished.

    ``results`` is in the order of the jobs, None where the run was not made;
    ``failures`` maps those job indices to their failure.
    """

    def __init__(self, results: Sequence[Any], failures: Mapping[int, RunFailure]) -> None:
        self.results = list(results)
        self.failures = dict(failures)
        groups: dict[str, tuple[RunFailure, int]] = {}
        for f in self.failures.values():
            key = f.line()
            groups[key] = (f, groups.get(key, (f, 0))[1] + 1)
        what = "; ".join(f"{f.line()} ({n} run{'s' if n > 1 else ''})" for f, n in groups.values())
        super().__init__(f"{len(self.failures)} of {len(self.results)} runs not made: {what}")


class Backend(ABC):
    """Runs jobs somewhere: this process and its pool, or a cluster."""

    name: str = "base"

    @abstractmethod
    def imap_unordered(
        self,
        fn: Callable[[Any], Any],
        jobs: Sequence[Any],
        *,
        initializer: Callable[[], None] | None = None,
    ) -> Iterator[tuple[int, Any]]:
        """``(i, fn(jobs[i]))`` for every job, in the order the runs finish.

        ``fn`` and ``initializer`` are module-level functions (they travel by name);
        ``initializer()`` runs once in each worker process before its first job.
        """

    def close(self) -> None:  # noqa: B027 - optional: most backends hold nothing
        """Stop what this backend started; safe to call twice."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
