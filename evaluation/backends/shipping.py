"""Pilots shipped by content: their files as bytes, addressed by sha256.

A worker on another machine has no access to the driver's files. :func:`pack` reads the
files a pilot spec is loaded from (``agents.registry.pilot_files``: an ``.onnx``, or a
checkpoint's JSON and the weights it names) into one payload and a small
:class:`PilotBundle` that lists each file's name, size and sha256. The bundle's
``address`` is the sha256 of that list, so the same pilot content has the same address
wherever it comes from, and changed content a new one.

On the worker, :func:`materialise` writes the files into ``CACHE/<address>/`` (checked
against their sha256, in a temp directory renamed into place, so a reader never sees a
half-written pilot and concurrent workers on one machine do not collide) and returns
the spec to load there. A later task on that machine finds the directory and does not
fetch the payload again. The cache directory is ``$TRACKPILOT_PILOT_CACHE``, else
``trackpilot-pilots-<uid>`` in the machine's temp directory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agents.base import MAX_WEIGHTS_BYTES
from agents.registry import pilot_files
from tracks.fileio import fsync_dir, sha256_bytes

__all__ = ["CACHE_ENV", "PilotBundle", "default_cache_dir", "materialise", "pack"]

logger = logging.getLogger(__name__)

#: Environment variable naming a worker machine's pilot cache directory.
CACHE_ENV = "TRACKPILOT_PILOT_CACHE"


@dataclass(frozen=True)
class PilotBundle:
    """A pilot's files by content; the bytes travel separately (the payload)."""

    spec: str  # the pilot as the user named it (for messages)
    entry: str  # the file name to load the pilot from, once the files are in one directory
    files: tuple[tuple[str, int, str], ...]  # (name, size in bytes, sha256), payload order

    @property
    def address(self) -> str:
        """sha256 of the file list: the same content, the same address."""
        doc = {"entry": self.entry, "files": [list(f) for f in self.files]}
        return sha256_bytes(json.dumps(doc, sort_keys=True).encode())

    @property
    def size(self) -> int:
        return sum(size for _, size, _ in self.files)


def pack(spec: str) -> tuple[PilotBundle, bytes] | None:
    """The bundle and payload of the pilot named by ``spec``; None for a keyword pilot
    (``expert``, ``classical``), which every worker has. ValueError when a file cannot
    be read."""
    found = pilot_files(spec)
    if found is None:
        return None
    entry, paths = found
    names = [p.name for p in paths]
    if len(set(names)) != len(names):
        raise ValueError(f"{spec}: two of its files have the same name ({names})")
    blobs, files = [], []
    for p in paths:
        try:
            size = p.stat().st_size
            if size > MAX_WEIGHTS_BYTES:
                raise ValueError(f"{p}: {size} bytes, more than a pilot file may have")
            data = p.read_bytes()
        except OSError as e:
            raise ValueError(f"{p}: cannot read ({e.strerror or e})") from None
        blobs.append(data)
        files.append((p.name, len(data), sha256_bytes(data)))
    return PilotBundle(spec=spec, entry=entry, files=tuple(files)), b"".join(blobs)


def default_cache_dir() -> Path:
    """``$TRACKPILOT_PILOT_CACHE``, else ``<temp dir>/trackpilot-pilots-<uid>``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"trackpilot-pilots-{uid}"


def _intact(directory: Path, bundle: PilotBundle) -> bool:
    for name, size, digest in bundle.files:
        p = directory / name
        try:
            if p.stat().st_size != size or sha256_bytes(p.read_bytes()) != digest:
                return False
        except OSError:
            return False
    return True


def materialise(
    bundle: PilotBundle, fetch: Callable[[], bytes], cache_dir: str | Path | None = None
) -> str:
    """The bundle's files on this machine; returns the spec to load the pilot from.

    ``fetch()`` gives the payload and is called only when the cache does not already hold
    an intact copy. A payload that does not match the bundle is a ValueError; nothing
    is left under the bundle's address then.
    """
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    final = root / bundle.address
    if final.is_dir():
        if _intact(final, bundle):
            return str(final / bundle.entry)
        logger.warning("%s: cached pilot files damaged; fetching them again", final)
        shutil.rmtree(final, ignore_errors=True)
    payload = memoryview(fetch())
    if len(payload) != bundle.size:
        raise ValueError(
            f"payload of {len(payload)} bytes, the bundle lists {bundle.size} (truncated?)"
        )
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{bundle.address[:16]}-", dir=root))
    try:
        offset = 0
        for name, size, digest in bundle.files:
            data = payload[offset : offset + size]
            offset += size
            if sha256_bytes(data) != digest:
                raise ValueError(f"{name}: sha256 does not match the bundle (damaged in transit)")
            with open(tmp / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        try:
            os.rename(tmp, final)  # atomic; fails when another worker got there first
            fsync_dir(root)
        except OSError:
            if not (final.is_dir() and _intact(final, bundle)):
                raise
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
    return str(final / bundle.entry)
