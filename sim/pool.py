"""The one process pool: spawn-context workers, results as they finish, nothing left running.

Recording, closed-loop evaluation and the leaderboard's trainings all fan work out the
same way: ``workers=1`` runs in this process (no pool, easy to debug and profile);
otherwise ``spawn`` workers (never ``fork``: PyBullet clients and torch threads do not
survive a fork) run the jobs and :func:`imap_unordered` yields ``(index, result)`` as
each finishes.

No worker outlives the call or its parent:

- a failing job, Ctrl-C, SIGTERM or an abandoned generator stops the pool: the workers
  get SIGTERM, which ends them on the spot (unwinding them would run library
  destructors that print about half-built objects), then SIGKILL if still there after
  :data:`TERM_GRACE_S`; every wait is bounded. What a worker was writing is then at
  worst a temp file (``tracks.fileio``: the next writer removes it), never a partial
  file under its real name;
- workers ignore SIGINT (a terminal's Ctrl-C reaches the whole process group: the parent
  decides, and no worker prints a traceback); they are even born with it blocked, so a
  Ctrl-C while they import cannot reach them either;
- a worker gets SIGTERM when its parent dies, however it dies (SIGKILL too): Linux's
  ``PR_SET_PDEATHSIG``, and a thread watching the parent's pid where that is missing.

:func:`prepare_worker` and :func:`spawning` do the same for processes started by other
code (stable-baselines3's ``SubprocVecEnv``: :mod:`training.rl_env`).

The pool is a few pipes rather than ``concurrent.futures.ProcessPoolExecutor``, whose
manager thread is joined without a timeout at interpreter exit (a worker killed while
sending a large result leaves it waiting for the rest of the message for ever).
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import multiprocessing.connection as mpc
import os
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

__all__ = [
    "BrokenPool",
    "RemoteTraceback",
    "die_with_parent",
    "imap_unordered",
    "pdeathsig_preexec",
    "prepare_worker",
    "spawning",
    "stop_processes",
]

J = TypeVar("J")
R = TypeVar("R")

#: Seconds a stopped worker has to exit after SIGTERM before it gets SIGKILL.
TERM_GRACE_S = 3.0
#: Seconds idle workers have to exit when the pool is done, before they are stopped.
CLOSE_GRACE_S = 10.0
#: How often a worker's watchdog thread looks at its parent's pid.
WATCHDOG_PERIOD_S = 0.5

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class BrokenPool(RuntimeError):
    """A worker process died while running a job (killed, out of memory, a crash)."""


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker (its ``__cause__``)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


# --------------------------------------------------------------------------- workers
def _set_pdeathsig(sig: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):  # pragma: no cover - no libc prctl
        return False


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(WATCHDOG_PERIOD_S)
    with contextlib.suppress(OSError):
        os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(TERM_GRACE_S)
    os._exit(1)


def prepare_worker(parent_pid: int) -> None:
    """Make the calling process a well-behaved worker of ``parent_pid``.

    It ignores SIGINT (and unblocks it, see :func:`spawning`), dies at once on SIGTERM
    (the default action), and gets SIGTERM when the parent dies (:func:`die_with_parent`).
    If the parent is already gone, it exits now.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    die_with_parent(parent_pid)


def die_with_parent(parent_pid: int) -> None:
    """SIGTERM for the calling process when ``parent_pid`` (its parent) dies, however it dies.

    ``prctl`` ``PR_SET_PDEATHSIG`` on Linux, plus a daemon thread that watches the parent's
    pid; exits now if the parent is already gone. What SIGTERM then does is the process's
    own business (a command line under :func:`tracks.cli.run_main` ends with one line).
    """
    _set_pdeathsig(signal.SIGTERM)
    if os.getppid() != parent_pid:  # died before the prctl took effect
        os._exit(1)
    threading.Thread(
        target=_watch_parent, args=(parent_pid,), name="parent-watchdog", daemon=True
    ).start()


def pdeathsig_preexec(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets ``sig`` when this process
    dies (Linux; elsewhere it does nothing).

    libc is looked up here, in the parent: the function runs between fork and exec, where
    loading a library could deadlock on a lock another thread held at the fork.
    """
    prctl = None
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            prctl = ctypes.CDLL(None, use_errno=True).prctl

    def preexec() -> None:
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)

    return preexec


@contextlib.contextmanager
def spawning() -> Iterator[None]:
    """Start worker processes inside this block.

    They are born with SIGINT blocked (the signal mask survives fork and exec), so a
    Ctrl-C while they start and import cannot raise ``KeyboardInterrupt`` in them
    before :func:`prepare_worker` ignores it. SIGINT and SIGTERM for this process are
    held meanwhile, and delivered when the block ends, so that no process is started
    without being recorded. Outside the main thread it does nothing.
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(
        signal, "pthread_sigmask"
    ):
        yield
        return
    # The resource tracker's first start unblocks SIGINT in this thread: start it first.
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    held: list[int] = []
    sigs = (signal.SIGINT, signal.SIGTERM)
    old = {sig: signal.signal(sig, lambda signum, frame: held.append(signum)) for sig in sigs}
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        for sig, handler in old.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(held):
            if old[sig] not in (signal.SIG_IGN, None):
                signal.raise_signal(sig)


def stop_processes(processes: Sequence[Any], grace_s: float = TERM_GRACE_S) -> None:
    """SIGTERM each live process, SIGKILL those still alive ``grace_s`` later; reap all.

    ``processes`` are ``multiprocessing.Process`` objects (unstarted ones are skipped).
    """
    started = [p for p in processes if p.pid is not None]
    for p in started:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            if p.exitcode is None:
                p.terminate()
    _join_all(started, grace_s)
    for p in started:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            if p.exitcode is None:
                p.kill()
    _join_all(started, 1.0)


def _join_all(processes: Sequence[Any], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for p in processes:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            p.join(max(0.0, deadline - time.monotonic()))


def _error(exc: BaseException) -> tuple[BaseException, str]:
    return exc, "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def _serve(
    conn: Any,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    initializer: Callable[[], None] | None,
    parent_pid: int,
) -> None:
    """A worker: run ``(i, job)`` messages until ``None`` or end of file."""
    prepare_worker(parent_pid)
    if initializer is not None:
        initializer()
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        i, job = msg
        try:
            reply = (i, True, fn(job, *args))
        except Exception as exc:
            reply = (i, False, _error(exc))
        try:
            try:
                conn.send(reply)
            except (OSError, EOFError):
                raise
            except Exception as exc:  # the result or the exception does not pickle
                what = "result" if reply[1] else f"exception {reply[2][0]!r}"
                err = RuntimeError(f"job {i}: its {what} could not be sent back: {exc}")
                conn.send((i, False, _error(err)))
        except (OSError, EOFError):  # the parent is gone
            return


# --------------------------------------------------------------------------- the pool
class _Pool:
    def __init__(
        self,
        n: int,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        initializer: Callable[[], None] | None,
    ) -> None:
        ctx = mp.get_context("spawn")
        self.procs: list[Any] = []
        self.conns: list[Any] = []
        try:
            with spawning():
                for k in range(n):
                    parent, child = ctx.Pipe()
                    self.conns.append(parent)
                    p = ctx.Process(
                        target=_serve,
                        args=(child, fn, args, initializer, os.getpid()),
                        name=f"pool-worker-{k}",
                    )
                    self.procs.append(p)
                    try:
                        p.start()
                    finally:
                        child.close()
        except BaseException:
            self.close(graceful=False)
            raise

    def run(self, jobs: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        todo = deque(enumerate(jobs))
        busy: dict[int, int] = {}  # worker -> job index
        idle = list(range(len(self.procs)))

        def dispatch() -> None:
            while todo and idle:
                w = idle.pop()
                i, job = todo.popleft()
                busy[w] = i
                try:
                    self.conns[w].send((i, job))
                except (BrokenPipeError, ConnectionResetError):
                    raise self._died(w, i) from None
            if not todo:  # let the idle ones go now
                for w in idle:
                    with contextlib.suppress(OSError):
                        self.conns[w].send(None)
                idle.clear()

        dispatch()
        while busy:
            waiting = {self.conns[w]: w for w in busy}
            waiting.update({self.procs[w].sentinel: w for w in busy})
            for obj in mpc.wait(list(waiting)):
                w = waiting[obj]
                if w not in busy:  # its pipe and its sentinel both became ready
                    continue
                conn = self.conns[w]
                if obj is not conn and not conn.poll():
                    raise self._died(w, busy[w])
                try:
                    i, ok, payload = conn.recv()
                except (EOFError, ConnectionResetError):
                    raise self._died(w, busy[w]) from None
                del busy[w]
                if not ok:
                    exc, tb = payload
                    exc.__cause__ = RemoteTraceback(tb)
                    raise exc
                idle.append(w)
                dispatch()
                yield i, payload

    def _died(self, w: int, job: int) -> BrokenPool:
        p = self.procs[w]
        p.join(1.0)
        return BrokenPool(
            f"worker process {p.pid} died while running job {job} ({_exit_text(p.exitcode)})"
        )

    def close(self, graceful: bool) -> None:
        if graceful:
            for conn in self.conns:
                with contextlib.suppress(OSError):
                    conn.send(None)
            _join_all(self.procs, CLOSE_GRACE_S)
        stop_processes(self.procs)
        for conn in self.conns:
            conn.close()
        for p in self.procs:
            with contextlib.suppress(ValueError, AttributeError):
                p.close()


def _exit_text(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def imap_unordered(
    fn: Callable[..., R],
    jobs: Sequence[J],
    workers: int = 1,
    *,
    args: tuple[Any, ...] = (),
    initializer: Callable[[], None] | None = None,
) -> Iterator[tuple[int, R]]:
    """``(i, fn(jobs[i], *args))`` for every job, in the order they finish.

    ``workers <= 1`` (or a single job) runs them here, in order. Otherwise
    ``min(workers, len(jobs))`` spawn workers each run ``initializer()`` once, then
    jobs. The first exception from a job is raised (with the worker's traceback as its
    ``__cause__``) after the pool has been stopped, its pending jobs dropped; a worker
    that dies raises :class:`BrokenPool`.
    """
    jobs = list(jobs)
    if workers <= 1 or len(jobs) <= 1:
        for i, job in enumerate(jobs):
            yield i, fn(job, *args)
        return
    pool = _Pool(min(workers, len(jobs)), fn, args, initializer)
    ok = False
    try:
        yield from pool.run(jobs)
        ok = True
    finally:
        # On error, Ctrl-C, SIGTERM or an abandoned generator: stop the workers now.
        pool.close(graceful=ok)
