"""Progress bars that go quiet when nobody is watching: one helper for every bar.

Every long loop in trackpilot (recording, loading episodes, training epochs, RL steps,
closed-loop runs, dataset checks) shows its progress through :func:`progress_bar`. On a
terminal that is a ``tqdm`` bar on stderr. When stderr is not a terminal (a log file, a
pipe, a batch job, CI), a bar's carriage-return redraws would fill the log with hundreds
of partial lines, so there is no bar at all: a bar that would stay on screen
(``leave=True``) writes one summary line when it closes (``recording: 4/4 ep in 5.3 s,
frames=2978``) and a transient one (``leave=False``: a data-loading or per-epoch bar)
writes nothing. A bar closed while an exception propagates (Ctrl-C, an error) writes
nothing either: the command's own line (``interrupted: ...``, ``error: ...``) is then the
only one.

``enabled=False`` (the commands' ``--no-progress``) silences both. The returned object has
the part of tqdm's interface the code uses (iteration, ``update``, ``set_postfix``,
``set_description``, ``close``, ``n``, ``total``, use as a context manager).

Standard library only at import; tqdm is imported when a bar is drawn (the lowest layer:
tracks <- sim <- agents <- training, evaluation).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

__all__ = ["QuietBar", "progress_bar", "stderr_is_terminal"]


def stderr_is_terminal(stream: TextIO | None = None) -> bool:
    """True when ``stream`` (default ``sys.stderr``) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # closed, or not a real stream
        return False


class QuietBar:
    """A progress bar that draws nothing; on :meth:`close` it writes one summary line to
    ``file`` when ``summary`` is set. It counts like tqdm (``n``, ``update``)."""

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        *,
        total: float | None = None,
        desc: str | None = None,
        unit: str = "it",
        initial: float = 0,
        summary: bool = False,
        file: TextIO | None = None,
    ) -> None:
        self.iterable = iterable
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.total = total
        self.desc = desc or ""
        self.unit = unit
        self.n = initial
        self.summary = summary
        self.file = file
        self.postfix = ""
        self.closed = False
        self._t0 = time.perf_counter()

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("this progress bar was made without an iterable")
        if not self.summary:  # nothing to count for: no wrapper on the loop
            return iter(self.iterable)
        return self._counted()

    def _counted(self) -> Iterator[Any]:
        for item in self.iterable or ():
            yield item
            self.n += 1

    def __len__(self) -> int:
        return int(self.total or 0)

    def update(self, n: float = 1) -> None:
        self.n += n

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
        items = dict(ordered_dict or {}, **kwargs)
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:
        pass

    def line(self) -> str:
        """The summary line: ``DESC: N/TOTAL UNIT in S s, POSTFIX``."""
        done = f"{self.n:g}" + (f"/{self.total:g}" if self.total is not None else "")
        text = f"{self.desc}: " if self.desc else ""
        text += f"{done} {self.unit} in {time.perf_counter() - self._t0:.1f} s"
        return text + (f", {self.postfix}" if self.postfix else "")

    def close(self, *, failed: bool = False) -> None:
        """Done; the summary line unless ``failed`` or an exception is being handled."""
        if self.closed:
            return
        self.closed = True
        if self.summary and not failed and sys.exc_info()[0] is None:
            out = self.file if self.file is not None else sys.stderr
            try:
                print(self.line(), file=out, flush=True)
            except (OSError, ValueError):  # a closed pipe: a summary is not worth a crash
                pass

    def __enter__(self) -> QuietBar:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(failed=exc_type is not None)


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    total: float | None = None,
    desc: str | None = None,
    unit: str = "it",
    enabled: bool = True,
    leave: bool = True,
    initial: float = 0,
    file: TextIO | None = None,
) -> Any:
    """A tqdm bar on stderr when it is a terminal, else a :class:`QuietBar`.

    ``enabled=False``: nothing at all. Not a terminal: no bar; one summary line at the end
    for a bar that would stay on screen (``leave=True``), nothing for a transient one.
    ``file`` replaces stderr (tests).
    """
    stream = sys.stderr if file is None else file
    if enabled and stderr_is_terminal(stream):
        from tqdm import tqdm  # drawn only on a terminal

        return tqdm(
            iterable,
            total=total,
            desc=desc,
            unit=unit,
            leave=leave,
            initial=initial,
            file=stream,
        )
    return QuietBar(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        initial=initial,
        summary=enabled and leave,
        file=file,
    )
