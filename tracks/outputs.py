"""Where a command will write, checked before it starts its work (standard library only).

A command that records for minutes, or trains for hours, should learn that its output
directory cannot be written before it starts, not when it saves its first file. The
commands call :func:`check_output_dir` (a directory, e.g. ``--out RUN_DIR``) or
:func:`check_output_file` (one file, e.g. a PNG) up front, and report an ``OSError`` met
later, while writing, with :func:`os_error_line`; either way the user reads one line.

The checks leave nothing behind: the directories they create and their probe file are
removed again, so a command that fails afterwards for another reason (a bad dataset, a
bad flag) has written nothing.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from tracks.fileio import is_temp_file, write_temp_file

__all__ = ["OutputError", "check_output_dir", "check_output_file", "os_error_line"]


class OutputError(ValueError):
    """The output path cannot be written; its message is one line naming the path."""


def _reason(e: OSError) -> str:
    return e.strerror or str(e) or type(e).__name__


def os_error_line(e: OSError, where: str | Path | None = None) -> str:
    """``PATH: what went wrong`` for an ``OSError`` met while writing (no traceback).

    ``PATH`` is the file the error names (a temp file of an atomic write as the file it
    was to replace), else ``where`` (e.g. the output directory: a failed ``write`` names
    no file).
    """
    path = e.filename if e.filename is not None else where
    if path is None:
        return _reason(e)
    p = Path(os.fsdecode(path))
    if is_temp_file(p):  # ".NAME.tmp-PID-RAND": the file being written was NAME
        p = p.with_name(p.name[1:].rsplit(".tmp-", 1)[0])
    return f"{p}: {_reason(e)}"


def _make_dirs(path: Path) -> list[Path]:
    """Create ``path`` and its missing parents; returns those this call created."""
    missing: list[Path] = []
    p = path
    while not p.is_dir():
        if os.path.lexists(p):
            raise NotADirectoryError(errno.ENOTDIR, f"{p} is not a directory", str(p))
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    created: list[Path] = []
    try:
        for d in reversed(missing):
            try:
                os.mkdir(d)
            except FileExistsError:
                if not d.is_dir():
                    raise
                continue
            created.append(d)
    except BaseException:
        _remove_dirs(created)
        raise
    return created


def _remove_dirs(created: list[Path]) -> None:
    for d in reversed(created):
        with contextlib.suppress(OSError):
            d.rmdir()


def check_output_dir(path: str | Path, *, name: str | None = None) -> Path:
    """Make sure files can be written into directory ``path`` (created if missing).

    Creates the missing directories, writes and removes a probe temp file, then removes
    the directories it created. :class:`OutputError` (``PATH: exists and is not a
    directory``, or ``NAME: cannot write here (REASON)`` where ``NAME`` is ``path`` unless
    given) when ``path`` is a file, a parent cannot be created, or the directory refuses
    new files (read-only, no permission, a path under ``/proc``, ...).
    """
    path = Path(path)
    try:
        if path.exists() and not path.is_dir():
            if name is None:
                raise OutputError(f"{path}: exists and is not a directory")
            raise OutputError(f"{name}: cannot write here ({path} is not a directory)")
        created = _make_dirs(path)
        try:
            write_temp_file(path / ".write-probe", b"").unlink()
        finally:
            _remove_dirs(created)
    except OSError as e:
        raise OutputError(f"{name or path}: cannot write here ({_reason(e)})") from None
    return path


def check_output_file(path: str | Path) -> Path:
    """Make sure file ``path`` can be written: not a directory, and its directory writable
    (:func:`check_output_dir`); :class:`OutputError` naming ``path`` otherwise."""
    path = Path(path)
    try:
        is_dir = path.is_dir()
    except OSError as e:
        raise OutputError(f"{path}: cannot write here ({_reason(e)})") from None
    if is_dir:
        raise OutputError(f"{path}: is a directory")
    check_output_dir(path.parent, name=str(path))
    return path
