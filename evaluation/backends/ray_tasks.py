"""Closed-loop runs as Ray tasks (``--backend ray``; the ``ray`` extra).

Each run is one task scheduled with ``num_cpus=1``, so a cluster runs as many at once as
it has cores. Where it connects (``--address``):

- none: a Ray instance started here for this evaluation, with ``--workers`` CPUs, and
  stopped at the end;
- ``auto``: the cluster this machine belongs to (``ray start --head`` / ``ray start
  --address=HEAD:6379`` were run on it);
- ``HOST:PORT``: that cluster's head (the driver runs on one of its machines);
- ``ray://HOST:PORT``: a remote cluster through the Ray Client (port 10001).

Before connecting, the head's port is probed with a bounded wait
(:data:`CONNECT_TIMEOUT_S`): an unreachable address is one clear error, not Ray's
minutes of retries. When Ray is already initialised in this process (a test's
``ray.init(num_cpus=2)``, a notebook), that cluster is used and left running.

Pilots travel by content (:mod:`evaluation.backends.shipping`): each pilot's files are
put once in Ray's object store; a task fetches them only when its machine's pilot cache
lacks them. A task whose worker dies (killed, out of memory, a lost node) is retried by
Ray (``max_retries``); its result comes back once, from whichever attempt finished, so
the driver writes every run exactly once. The driver keeps at most
:data:`IN_FLIGHT_PER_CPU` tasks per cluster CPU queued and takes results as they come.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import ray

from evaluation.backends.base import Backend, RunFailure, this_host
from evaluation.backends.shipping import PilotBundle, materialise, pack
from tracks.cli import Terminated

__all__ = [
    "CONNECT_TIMEOUT_S",
    "MAX_RETRIES",
    "RayBackend",
    "RUN_TASK",
    "RayUnreachable",
    "probe",
    "trackpilot_run",
]

logger = logging.getLogger(__name__)

#: Seconds to wait for the head's port before giving up.
CONNECT_TIMEOUT_S = 10.0
#: Times Ray runs a task again after its worker process died.
MAX_RETRIES = 3
#: Tasks queued per cluster CPU: enough to keep every core busy between results.
IN_FLIGHT_PER_CPU = 2

_initialized_here = False  # the per-worker-process initializer has run


class RayUnreachable(ValueError):
    """No Ray cluster answers at the address (one line: where, and why)."""


def _endpoint(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of the head for ``address``; None for a local instance."""
    text = address.strip()
    if text.startswith("ray://"):
        text = text[len("ray://") :]
    elif text == "auto":
        try:
            from ray._private.services import canonicalize_bootstrap_address
        except ImportError:  # pragma: no cover - Ray moved it: let ray.init look
            return None
        try:
            found = canonicalize_bootstrap_address("auto")
        except ConnectionError as e:
            raise RayUnreachable(
                "no Ray cluster on this machine (--address auto): start one with "
                f"'ray start --head' ({str(e).splitlines()[0]})"
            ) from None
        if found is None:
            return None
        text = found
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise RayUnreachable(
            f"bad Ray address {address!r}: expected auto, HOST:PORT or ray://HOST:PORT"
        )
    return host.strip("[]"), int(port)


def probe(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Raise :class:`RayUnreachable` unless something accepts connections at the head's
    port within ``timeout_s`` and speaks HTTP/2 (gRPC) there."""
    end = _endpoint(address)
    if end is None:
        return
    host, port = end
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as e:
        why = e.strerror or type(e).__name__
        if isinstance(e, TimeoutError | socket.timeout):
            why = f"no answer within {timeout_s:g} s"
        raise RayUnreachable(
            f"cannot reach the Ray cluster at {address} ({host}:{port}: {why})"
        ) from None
    try:
        import grpc  # Ray's own transport: installed with it
    except ImportError:  # pragma: no cover
        return
    channel = grpc.insecure_channel(f"{host}:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout_s)
    except grpc.FutureTimeoutError:
        raise RayUnreachable(
            f"cannot reach the Ray cluster at {address} ({host}:{port} accepts connections "
            f"but does not answer as a Ray head within {timeout_s:g} s)"
        ) from None
    finally:
        channel.close()


def _connect(address: str | None, workers: int, timeout_s: float) -> bool:
    """Initialise Ray in this process; True when this call started it."""
    if ray.is_initialized():
        return False
    if address:
        probe(address, timeout_s)
    main = threading.current_thread() is threading.main_thread()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    kw: dict[str, Any] = dict(include_dashboard=False, logging_level=logging.WARNING)
    try:
        if address:
            ray.init(address=address, **kw)
        else:  # a fresh instance here, even where RAY_ADDRESS names a cluster
            ray.init(address="local", num_cpus=workers, **kw)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise RayUnreachable(f"cannot connect to the Ray cluster at {address}: {first}") from None
    except BaseException as e:  # interrupted while connecting: leave nothing started
        with contextlib.suppress(Exception):
            ray.shutdown()
        if isinstance(e, SystemExit) and e.code == signal.SIGTERM:
            raise Terminated() from None  # Ray's own SIGTERM handler was in place
        raise
    finally:
        # ray.init installs its own SIGTERM handler: the command's (tracks.cli) stays.
        for sig, handler in handlers.items():
            if handler is not None:
                signal.signal(sig, handler)
    return True


def trackpilot_run(fn, job, bundle, payload, cache_dir, initializer):  # noqa: ANN001, ANN202
    """One run on a Ray worker: the pilot's files from the cache (else the object store),
    then ``fn(job)`` with the job's pilot spec pointing at them."""
    global _initialized_here
    if initializer is not None and not _initialized_here:
        initializer()
        _initialized_here = True
    if bundle is not None:
        try:
            local = materialise(bundle, lambda: ray.get(payload[0]), cache_dir)
        except (OSError, ValueError, ray.exceptions.RayError) as e:
            return RunFailure(job.pilot_spec, f"cannot fetch its files: {e}", this_host())
        out = fn(replace(job, pilot_spec=local))
        if isinstance(out, RunFailure):  # say which pilot the user named, not the cache path
            out = replace(out, pilot_spec=job.pilot_spec)
        return out
    return fn(job)


#: The task. A worker's process title says what it runs: ``ray::trackpilot_run``.
RUN_TASK = ray.remote(num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=False)(trackpilot_run)


class RayBackend(Backend):
    """Runs on a Ray cluster; see the module docstring for ``address``."""

    name = "ray"

    def __init__(
        self,
        workers: int = 1,
        address: str | None = None,
        *,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        cache_dir: str | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.address = address
        self.cache_dir = cache_dir
        self._owned = _connect(address, workers, connect_timeout_s)
        self._payloads: dict[str, Any] = {}  # bundle address -> object ref, shipped once

    def _ship(self, spec: str) -> tuple[PilotBundle | None, list[Any]] | RunFailure:
        try:
            packed = pack(spec)
        except ValueError as e:
            return RunFailure(spec, str(e), this_host())
        if packed is None:
            return None, []
        bundle, payload = packed
        if bundle.address not in self._payloads:
            self._payloads[bundle.address] = ray.put(payload)
            logger.info("%s: %d bytes shipped as %s", spec, bundle.size, bundle.address[:12])
        return bundle, [self._payloads[bundle.address]]  # a list: not resolved on arrival

    def imap_unordered(
        self,
        fn: Callable[[Any], Any],
        jobs: Sequence[Any],
        *,
        initializer: Callable[[], None] | None = None,
    ) -> Iterator[tuple[int, Any]]:
        jobs = list(jobs)
        shipments: dict[str, Any] = {}
        for spec in dict.fromkeys(j.pilot_spec for j in jobs):
            shipments[spec] = self._ship(spec)
        cpus = int(ray.cluster_resources().get("CPU", 1)) or 1
        limit = max(4, IN_FLIGHT_PER_CPU * cpus)
        todo = iter(range(len(jobs)))
        pending: dict[Any, int] = {}

        def submit() -> Iterator[tuple[int, Any]]:
            while len(pending) < limit:
                i = next(todo, None)
                if i is None:
                    return
                shipment = shipments[jobs[i].pilot_spec]
                if isinstance(shipment, RunFailure):
                    yield i, shipment  # not shippable: every run of that pilot fails here
                    continue
                bundle, payload = shipment
                ref = RUN_TASK.remote(fn, jobs[i], bundle, payload, self.cache_dir, initializer)
                pending[ref] = i

        try:
            yield from submit()
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                # then whatever else is ready, without waiting: results in batches
                more, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
                for ref in dict.fromkeys([*done, *more]):
                    i = pending.pop(ref)
                    yield i, self._get(ref, i)
                yield from submit()
        finally:
            for ref in pending:  # failed, interrupted or abandoned: stop the rest
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)

    @staticmethod
    def _get(ref: Any, i: int) -> Any:
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError:
            raise  # the run's own exception (also an instance of its type)
        except ray.exceptions.RayError as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise RuntimeError(f"run {i} failed on the Ray cluster: {first}") from e

    def close(self) -> None:
        self._payloads.clear()
        if self._owned and ray.is_initialized():
            t0 = time.perf_counter()
            ray.shutdown()
            logger.info("local Ray instance stopped in %.1f s", time.perf_counter() - t0)
        self._owned = False
