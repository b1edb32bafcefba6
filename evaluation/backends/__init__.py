"""Where closed-loop runs execute: one small interface, one module per backend.

- ``pool`` (:mod:`evaluation.backends.pool`, the default): this machine's process pool;
- ``ray`` (:mod:`evaluation.backends.ray_tasks`, the ``ray`` extra): a Ray cluster, each
  run a task, pilots shipped by content (:mod:`evaluation.backends.shipping`).

:func:`open_backend` maps a name to a :class:`Backend` (importing Ray only when asked
for); :func:`evaluation.runner.run_many` takes either. Adding a backend is one module
with a :class:`Backend` subclass and one line in :func:`open_backend`.
"""

from __future__ import annotations

from evaluation.backends.base import Backend, RunFailure, RunsIncomplete, comparable

__all__ = [
    "BACKENDS",
    "Backend",
    "RunFailure",
    "RunsIncomplete",
    "check_backend",
    "comparable",
    "open_backend",
    "validate_backend_options",
]

#: Backend names, as ``--backend`` takes them.
BACKENDS = ("pool", "ray")


def _ray_module():  # noqa: ANN202 - the module, imported on demand
    try:
        from evaluation.backends import ray_tasks
    except ImportError as e:
        if e.name is not None and e.name.split(".")[0] != "ray":
            raise
        raise ValueError(
            f"--backend ray needs Ray ({e}): pip install -e '.[ray]' (here and on "
            "every node of the cluster)"
        ) from None
    return ray_tasks


def validate_backend_options(backend: str, address: str | None, video: bool = False) -> None:
    """ValueError (one line) for options that cannot go together: an unknown backend
    name, an ``address`` for a backend other than ``ray``, or ``video`` with an
    ``address`` (each video would be written on the node that ran it). No network."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if address is not None and backend != "ray":
        raise ValueError("--address is for --backend ray")
    if address is not None and video:
        raise ValueError(
            "--video with --address: each video would be written on the cluster node that "
            "ran it; make videos with the process pool or a local Ray instance"
        )


def check_backend(name: str, address: str | None = None) -> None:
    """Fail now, before long work, if ``open_backend(name, address=address)`` would:
    an unknown name, Ray missing, or no cluster answering at ``address`` (probed with a
    bounded wait). Starts nothing."""
    validate_backend_options(name, address)
    if name == "ray":
        ray_tasks = _ray_module()
        if address:
            ray_tasks.probe(address)


def open_backend(name: str, *, workers: int = 1, address: str | None = None) -> Backend:
    """The backend called ``name``: ``workers`` local processes (``pool``; for ``ray``
    the CPUs of a Ray instance started here), or the Ray cluster at ``address``.

    ValueError for an unknown name, an address without Ray, Ray not installed, or a
    cluster that cannot be reached (one line each)."""
    validate_backend_options(name, address)
    if name == "pool":
        from evaluation.backends.pool import PoolBackend

        return PoolBackend(workers)
    return _ray_module().RayBackend(workers, address)
