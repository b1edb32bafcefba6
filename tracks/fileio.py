"""Crash-safe file helpers shared by the whole project (tracks, datasets, checkpoints, leaderboards).

Standard library only. The pattern everywhere is: write a temp file in the destination's
directory, flush + fsync it, ``os.replace`` it over the final name, then fsync the directory so
the rename itself survives a power cut. A process killed at any point leaves either the old file
or the new one, never a mix; at worst a temp file named ``.<name>.tmp-<pid>-<rand>`` is left
behind, which :func:`remove_stale_temp_files` recognises and removes.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "file_lock",
    "fsync_dir",
    "is_temp_file",
    "remove_stale_temp_files",
    "sha256_bytes",
    "sha256_file",
    "temp_file_pid",
    "write_temp_file",
]

_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)-(?P<rand>[0-9a-f]+)$")


def _temp_name(final_name: str) -> str:
    return f".{final_name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"


def is_temp_file(path: str | Path) -> bool:
    """True if ``path`` is named like a temp file left by :func:`write_temp_file`."""
    return _TEMP_RE.match(Path(path).name) is not None


def temp_file_pid(path: str | Path) -> int | None:
    """The pid of the process that created temp file ``path``, or None if it is no temp file."""
    m = _TEMP_RE.match(Path(path).name)
    return int(m.group("pid")) if m else None


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def fsync_dir(directory: str | Path) -> None:
    """fsync a directory so that renames/creations inside it are durable (no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # pragma: no cover - e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError as e:  # pragma: no cover - some filesystems refuse fsync on directories
        if e.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def write_temp_file(path: str | Path, data: bytes | bytearray | memoryview) -> Path:
    """Write ``data`` to a fresh, fsynced temp file next to ``path`` and return the temp path.

    The caller publishes it with ``os.replace(temp, path)`` followed by :func:`fsync_dir`
    (this split lets a caller publish under a lock); on failure the temp file is removed.
    """
    path = Path(path)
    tmp = path.with_name(_temp_name(path.name))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644)
    try:
        with os.fdopen(fd, "wb", closefd=True) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return tmp


def atomic_write_bytes(path: str | Path, data: bytes | bytearray | memoryview) -> Path:
    """Atomically (and durably) replace ``path`` with ``data``. Returns ``path``."""
    path = Path(path)
    tmp = write_temp_file(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Atomically replace ``path`` with ``text``."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = 2) -> Path:
    """Atomically replace ``path`` with ``obj`` as strict JSON (NaN/inf are refused)."""
    text = json.dumps(obj, indent=indent, ensure_ascii=False, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def sha256_bytes(data: bytes | bytearray | memoryview) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of the file at ``path``, read in chunks."""
    h = hashlib.sha256()
    buf = bytearray(chunk_size)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


@contextlib.contextmanager
def file_lock(path: str | Path, *, shared: bool = False) -> Iterator[Path]:
    """Hold an advisory ``flock`` on ``path`` (created if missing) for the ``with`` block.

    Exclusive by default; ``shared=True`` takes a shared (reader) lock. The lock is released
    when the block exits or the process dies, so a killed holder never wedges other processes.
    Each call opens its own file description, so it also excludes threads of one process.
    """
    if fcntl is None:  # pragma: no cover
        raise OSError("file_lock needs fcntl.flock (POSIX)")
    path = Path(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield path
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def remove_stale_temp_files(directory: str | Path) -> list[Path]:
    """Remove temp files in ``directory`` whose creating process is gone; return what was removed.

    Temp files of live processes are kept: they may be a concurrent writer's work in progress.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return removed
    for entry in entries:
        pid = temp_file_pid(entry.name)
        if pid is None or not entry.is_file(follow_symlinks=False):
            continue
        if _pid_alive(pid):  # our own pid too: another thread may be mid-write
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed
