"""Crash-safe file helpers shared by the whole project (tracks, datasets, checkpoints, leaderboards).

Standard library and numpy only. The pattern everywhere is: write a temp file in the destination's
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
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "JSON_MAX_BYTES",
    "JSON_MAX_DEPTH",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "file_lock",
    "fsync_dir",
    "fsync_files",
    "is_temp_file",
    "json_shape",
    "read_json",
    "remove_stale_temp_files",
    "sha256_bytes",
    "sha256_file",
    "staged_dir",
    "temp_file_pid",
    "temp_path",
    "write_temp_file",
]

#: Default bounds of :func:`read_json`: what a small JSON file handed in by a user (a
#: config, a checkpoint description, a profile) may claim.
JSON_MAX_BYTES = 16 << 20
JSON_MAX_DEPTH = 64

_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)-(?P<rand>[0-9a-f]+)$")


def _temp_name(final_name: str) -> str:
    return f".{final_name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"


def temp_path(path: str | Path) -> Path:
    """A fresh temp name next to ``path`` (for a file or a directory that is published by
    renaming it to ``path``); :func:`is_temp_file` recognises it, :func:`temp_file_pid`
    names its creator, and :func:`remove_stale_temp_files` removes it once that is gone."""
    path = Path(path)
    return path.with_name(_temp_name(path.name))


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


def fsync_files(paths: Iterable[str | Path], *, workers: int = 8) -> None:
    """fsync every file of ``paths`` (files written without it, e.g. thousands of small ones
    that are published together by renaming their directory), ``workers`` at a time: the
    disk serves concurrent fsyncs far faster than one after another."""
    from concurrent.futures import ThreadPoolExecutor  # only the callers with many files

    def sync(p: str | Path) -> None:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        for _ in pool.map(sync, paths):
            pass


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


def remove_stale_temp_files(
    directory: str | Path, *, dirs: bool = False, name: str | None = None
) -> list[Path]:
    """Remove temp files in ``directory`` whose creating process is gone; return what was removed.

    Temp files of live processes are kept: they may be a concurrent writer's work in progress.
    ``dirs=True`` also removes temp directories (:func:`temp_path` of a directory), whole;
    ``name`` keeps to the temp files and directories of that final name.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return removed
    for entry in entries:
        pid = temp_file_pid(entry.name)
        if pid is None or (name is not None and _TEMP_RE.match(entry.name)["name"] != name):
            continue
        is_dir = dirs and entry.is_dir(follow_symlinks=False)
        if not (is_dir or entry.is_file(follow_symlinks=False)):
            continue
        if _pid_alive(pid):  # our own pid too: another thread may be mid-write
            continue
        with contextlib.suppress(FileNotFoundError):
            if is_dir:
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def staged_dir(
    final: str | Path, *, on_stale: Callable[[list[Path]], object] | None = None
) -> Iterator[Path]:
    """Build a directory under a temp name beside ``final``; it becomes ``final`` (one rename,
    after the directory is fsynced) only when the ``with`` block ends normally, and is removed
    when it raises (Ctrl-C too), so ``final`` never holds half a result.

    ``final`` must not exist, or be an empty directory (``FileExistsError`` otherwise).
    Staging directories for ``final`` left by processes no longer running are removed first
    (:func:`remove_stale_temp_files`); ``on_stale`` is called with them, if there were any.
    """
    final = Path(final)
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    removed = remove_stale_temp_files(parent, dirs=True, name=final.name)
    if removed and on_stale is not None:
        on_stale(removed)
    if final.exists() and (not final.is_dir() or any(final.iterdir())):
        raise FileExistsError(errno.EEXIST, "exists and is not an empty directory", str(final))
    tmp = temp_path(final)
    tmp.mkdir()
    try:
        yield tmp
        fsync_dir(tmp)
        os.replace(tmp, final)  # over an empty directory too (POSIX rename)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(parent)


#: +1 for an opening bracket, -1 for a closing one, 0 for any other byte.
_BRACKET_STEP = np.zeros(256, dtype=np.int8)
_BRACKET_STEP[[ord("["), ord("{")]] = 1
_BRACKET_STEP[[ord("]"), ord("}")]] = -1


def json_shape(data: bytes) -> tuple[int, int]:
    """(deepest nesting of arrays and objects, number of arrays) of JSON text, without
    parsing it (brackets inside strings are ignored); bounded memory for any size."""
    bare = re.sub(rb'"(?:[^"\\]|\\.)*"', b'""', data)
    depth = deepest = 0
    chunk = 1 << 20
    for lo in range(0, len(bare), chunk):
        part = np.frombuffer(bare, dtype=np.uint8, count=min(chunk, len(bare) - lo), offset=lo)
        level = np.cumsum(_BRACKET_STEP[part], dtype=np.int64) + depth
        deepest = max(deepest, int(level.max()))
        depth = int(level[-1])
    return deepest, bare.count(b"[")


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON (numbers must be finite)")


def read_json(
    path: str | Path,
    *,
    what: str = "JSON file",
    max_bytes: int = JSON_MAX_BYTES,
    max_depth: int = JSON_MAX_DEPTH,
) -> Any:
    """The JSON document at ``path``, bounded before it is parsed: at most ``max_bytes``
    (checked before reading), nested at most ``max_depth`` deep (checked on the bytes,
    so 100k brackets never reach the parser's recursion), strict (no NaN/Infinity).
    Any problem is one ``ValueError`` naming the file and ``what`` it should be."""
    p = Path(path)
    try:
        size = p.stat().st_size
        limit = f"{max_bytes >> 20} MiB" if max_bytes % (1 << 20) == 0 else f"{max_bytes} bytes"
        if size > max_bytes:
            raise ValueError(f"{size} bytes, more than the {limit} a {what} may have")
        with p.open("rb") as f:
            data = f.read(max_bytes + 1)  # the file may have grown since stat
        if len(data) > max_bytes:
            raise ValueError(f"more than the {limit} a {what} may have")
        depth, _ = json_shape(data)
        if depth > max_depth:
            raise ValueError(f"nested more than {max_depth} levels deep ({depth})")
        return json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError(f"{p}: unreadable {what} (nested too deeply)") from None
    except OSError as e:
        raise ValueError(f"{p}: cannot read the {what} ({e.strerror or e})") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{p}: unreadable {what} ({e})") from None
