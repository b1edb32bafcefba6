"""How every command line ends on Ctrl-C or SIGTERM: one line on stderr, exit 130 or 143.

Each ``python -m`` entry point ends with::

    if __name__ == "__main__":
        raise SystemExit(run_main(main))

:func:`run_main` turns SIGTERM into :class:`Terminated`, a ``KeyboardInterrupt``, so the
cleanup written for Ctrl-C (``except KeyboardInterrupt``, ``finally``) runs for both.
When either reaches it, it prints ``interrupted: DETAIL`` (``terminated: DETAIL``)
instead of a traceback and returns 130 (143). DETAIL is the interrupt's own message
when the code that saved something raised it with one (``raise type(exc)("saved ...")``),
else the command's ``note`` (what it keeps and what it discards).

Once interrupted, the process is on its way out: another Ctrl-C or SIGTERM ends it at
once, and a daemon timer ends it after ``exit_grace_s`` should anything at exit hang.
Worker processes are not this module's business (they ignore SIGINT and die with their
parent: :mod:`sim.pool`). Standard library only (the lowest layer).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["EXIT_SIGINT", "EXIT_SIGTERM", "Terminated", "run_main"]

EXIT_SIGINT = 128 + signal.SIGINT  # 130, what a shell reports for a Ctrl-C
EXIT_SIGTERM = 128 + signal.SIGTERM  # 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread where Ctrl-C raises ``KeyboardInterrupt``."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def _forked_child() -> None:
    # A forked child (a fork-context vector env, a data loader) keeps Python's signal
    # handlers: SIGTERM must end it, not raise Terminated in it (and print a traceback).
    if signal.getsignal(signal.SIGTERM) is _raise_terminated:
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


_fork_hook = False


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def _close_progress_bars() -> None:
    # A tqdm bar left open by the interrupt would have the line glued to its end.
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ())):
        with contextlib.suppress(Exception):
            bar.close()


def _forget_unhandled_interrupt() -> None:
    # CPython 3.10/3.11 flag a KeyboardInterrupt that passes through exec() of a string
    # (dataclasses and namedtuple build their methods that way) as unhandled, even when
    # it is then caught, and end the process with SIGINT (status -2, not 130) at exit.
    if sys.version_info >= (3, 12):  # pragma: no cover - no such global there
        return
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.c_int.in_dll(ctypes.pythonapi, "_Py_UnhandledKeyboardInterrupt").value = 0


def _exit_now(code: int) -> None:
    _flush()
    os._exit(code)


def _on_the_way_out(code: int, grace_s: float) -> None:
    """A second signal ends the process now; so does a timer if the exit hangs."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: _exit_now(code))
    timer = threading.Timer(grace_s, _exit_now, args=(code,))
    timer.daemon = True
    timer.start()


def run_main(
    main: Callable[..., int | None],
    *args: Any,
    note: str = "",
    exit_grace_s: float = 10.0,
) -> int:
    """``main(*args)``'s exit status; Ctrl-C gives 130 and SIGTERM 143, each with one line.

    ``note`` says what an interrupted run keeps (used when the interrupt carries no
    message of its own).
    """
    global _fork_hook
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)
        if not _fork_hook and hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_forked_child)
            _fork_hook = True
    try:
        status = main(*args)
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        code = EXIT_SIGTERM if terminated else EXIT_SIGINT
        _on_the_way_out(code, exit_grace_s)
        detail = str(exc) or note
        word = "terminated" if terminated else "interrupted"
        _forget_unhandled_interrupt()
        _close_progress_bars()
        _flush()
        print(f"{word}: {detail}" if detail else word, file=sys.stderr, flush=True)
        return code
    return 0 if status is None else status
