"""DonkeyCar's tub format ("datastore v2"), read and written without DonkeyCar.

Followed from the source of autorope/donkeycar (its main branch; datastore v2 is how tubs
are written since DonkeyCar 4; tubs without session ids, from before they were added, read
too):

- ``donkeycar/parts/datastore_v2.py`` at commit 1e831b81: ``Manifest`` (the five lines of
  ``manifest.json``), ``Catalog`` and ``CatalogMetadata`` (``catalog_N.catalog`` and its
  ``.catalog_manifest``), ``Seekable`` (lines end in ``"\\n"``; a reader strips ``"\\r\\n"``,
  which an older datastore_v2, commit 0ab813de, wrote) and ``ManifestIterator`` (what
  DonkeyCar's readers, its trainer among them, get from a tub);
- ``donkeycar/parts/tub_v2.py`` at commit 38a1c2db: ``Tub.write_record`` (the private
  ``_timestamp_ms``, ``_index`` and ``_session_id`` fields; images saved by Pillow with its
  defaults, a JPEG of quality 75) and ``Tub._image_file_name``.

A tub directory::

    manifest.json      five JSON lines, each json.dumps() with its defaults:
                         1 inputs       ["cam/image_array", "user/angle", "user/throttle", ...]
                         2 types        ["image_array", "float", "float", ...]
                         3 metadata     the user's {"key": value}
                         4 manifest metadata {"created_at": <time>, "sessions":
                           {"all_full_ids": ["YY-MM-DD_0", ...], "last_id": N,
                            "last_full_id": "YY-MM-DD_N"}}
                         5 catalogs     {"paths": ["catalog_0.catalog", ...],
                           "current_index": <next index>, "max_len": <records per catalog>,
                           "deleted_indexes": [...]}
    catalog_N.catalog  one record per line, json.dumps(record, sort_keys=True); catalog N+1
                       starts when the index reaches a multiple of max_len
    catalog_N.catalog_manifest
                       one line, sorted keys: {"created_at", "line_lengths" (of each catalog
                       line, newline included), "path" (the catalog manifest's own name),
                       "start_index"}
    images/<index>_cam_image_array_.jpg

A record holds the inputs (an image input as its file name in ``images/``) and
``_timestamp_ms`` (wall clock, ms), ``_index`` and ``_session_id`` (``YY-MM-DD_N``: which
drive wrote it). Deleting a record (DonkeyCar's tub cleaner) only adds its index to
``deleted_indexes``.

Reading (:func:`read_tub_manifest`, :func:`iter_tub_lines`) follows ``ManifestIterator``: the
catalogs in ``paths`` order, each line by line up to its end (or a blank line); a record's
index is its position across the catalogs; an index in ``deleted_indexes`` is skipped unread.
DonkeyCar drops a line that is not JSON with a print. Here a partial last line of a catalog
(the car lost power while writing it) is dropped with a warning, as DonkeyCar drops it, and
any other unreadable line is an error unless ``skip_bad=True``. Everything a tub claims is
bounded before it is trusted (the ``MAX_TUB_*`` limits). :class:`TubWriter` writes a new tub
byte for byte as DonkeyCar's datastore leaves one after its drives (sessions) have ended.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from sim.dataset.format import DatasetError, _is_int, _loads_limited, _read_bounded

__all__ = [
    "MAX_TUB_CATALOGS",
    "MAX_TUB_CATALOG_BYTES",
    "MAX_TUB_IMAGE_BYTES",
    "MAX_TUB_IMAGE_SIDE",
    "MAX_TUB_INPUTS",
    "MAX_TUB_MANIFEST_BYTES",
    "MAX_TUB_RECORDS",
    "MAX_TUB_RECORD_BYTES",
    "TUB_IMAGES_DIRNAME",
    "TUB_MANIFEST_NAME",
    "TubLine",
    "TubManifest",
    "TubWriter",
    "is_donkeycar_tub",
    "iter_tub_lines",
    "read_limited",
    "read_tub_manifest",
    "tub_hint",
    "tub_image_name",
]

logger = logging.getLogger("sim.dataset")

TUB_MANIFEST_NAME = "manifest.json"
TUB_IMAGES_DIRNAME = "images"
_NEWLINE = "\n"  # what datastore_v2 writes after each line (json.dumps text is ASCII)
_CATALOG_RE = re.compile(r"^catalog_\d+\.catalog$")

# --- Limits on what a tub may claim; each breach is one DatasetError line naming the file.
# Real tubs are far inside them: a record is ~200 bytes, a catalog 1,000 records (~200 KB),
# an image a few KB of JPEG at 120x160.

#: Largest ``manifest.json``, bytes (its ``deleted_indexes`` list is the only part that grows).
MAX_TUB_MANIFEST_BYTES = 64 * 1024 * 1024
#: Most catalogs a manifest may list.
MAX_TUB_CATALOGS = 100_000
#: Largest catalog file, bytes.
MAX_TUB_CATALOG_BYTES = 256 * 1024 * 1024
#: Longest record line, bytes.
MAX_TUB_RECORD_BYTES = 1024 * 1024
#: Most records (lines) in one tub, and the largest index a manifest may name.
MAX_TUB_RECORDS = 10_000_000
#: Most inputs (and types) a tub may declare.
MAX_TUB_INPUTS = 1000
#: Largest image file, bytes.
MAX_TUB_IMAGE_BYTES = 16 * 1024 * 1024
#: Longest side of a tub image, pixels, checked from its header before it is decoded (a
#: dataset's frames are at most 1024 a side: larger tub images must be resized on import).
MAX_TUB_IMAGE_SIDE = 4096

_MANIFEST_LINES = ("inputs", "types", "metadata", "manifest metadata", "catalogs")


def tub_image_name(index: int, key: str = "cam/image_array") -> str:
    """The file name DonkeyCar gives the image of input ``key`` in record ``index``
    (``Tub._image_file_name``): ``"12_cam_image_array_.jpg"``."""
    return "_".join([str(index), key.replace("/", "_"), ".jpg"])


def _plain_name_problem(name: Any) -> str | None:
    """Why ``name`` is not a plain file name inside the tub (no directories, no ``..``)."""
    if not isinstance(name, str) or not name:
        return f"{name!r} is not a file name"
    if len(name) > 255 or "/" in name or "\\" in name or "\0" in name or name in (".", ".."):
        return f"{name[:80]!r} is not a plain file name inside the tub"
    return None


@dataclass(frozen=True)
class TubManifest:
    """The five lines of a tub's ``manifest.json``, checked."""

    root: Path  # the tub directory
    inputs: list[str]  # line 1: the recorded inputs, e.g. "cam/image_array", "user/angle"
    types: list[str]  # line 2: one type per input ("image_array", "float", "str", ...)
    metadata: dict[str, Any]  # line 3: the user's metadata
    manifest_metadata: dict[str, Any]  # line 4: created_at and the drive sessions
    paths: list[str]  # line 5: the catalog files, in index order
    current_index: int  # line 5: the index the next record would get
    max_len: int  # line 5: records per catalog
    deleted_indexes: frozenset[int] = field(default_factory=frozenset)  # line 5

    @property
    def input_types(self) -> dict[str, str]:
        return dict(zip(self.inputs, self.types, strict=True))


def read_limited(path: Path, limit: int, name: str) -> bytes:
    """The bytes of ``path``, refused (:class:`DatasetError` naming the limit ``name``) when
    larger than ``limit``, checked before reading; ``FileNotFoundError`` passes through."""
    try:
        size, data = _read_bounded(path, limit)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise DatasetError(f"{path}: unreadable ({e.strerror or e})") from None
    if size > limit or len(data) > limit:  # or it grew while being read
        raise DatasetError(
            f"{path}: {max(size, len(data)):,} bytes, more than the limit {limit:,} ({name})"
        )
    return data


def _read_manifest_lines(root: Path) -> list[str]:
    path = root / TUB_MANIFEST_NAME
    try:
        data = read_limited(path, MAX_TUB_MANIFEST_BYTES, "MAX_TUB_MANIFEST_BYTES")
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing (not a DonkeyCar tub?)") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text ({e})") from None
    return [line.rstrip("\r") for line in text.split(_NEWLINE)]


def read_tub_manifest(root: str | Path) -> TubManifest:
    """The checked ``manifest.json`` of the tub at ``root``; :class:`DatasetError` (one line
    naming the file and the problem) if it is not a readable DonkeyCar tub manifest."""
    root = Path(root)
    path = root / TUB_MANIFEST_NAME
    if not root.is_dir():
        raise DatasetError(f"{root}: no such tub directory")
    lines = _read_manifest_lines(root)
    if len(lines) < 5 or not all(lines[:5]):
        raise DatasetError(
            f"{path}: a tub manifest has five JSON lines ({', '.join(_MANIFEST_LINES)}); "
            f"this one has {sum(1 for x in lines if x)}"
        )
    inputs, types, metadata, mmeta, catalogs = (
        _loads_limited(lines[i], f"{path}: line {i + 1} ({_MANIFEST_LINES[i]})") for i in range(5)
    )
    for name, v in (("inputs", inputs), ("types", types)):
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise DatasetError(f"{path}: line 1-2: {name} must be a list of strings")
        if len(v) > MAX_TUB_INPUTS:
            raise DatasetError(
                f"{path}: {len(v)} {name}, more than the limit {MAX_TUB_INPUTS} (MAX_TUB_INPUTS)"
            )
    if len(inputs) != len(types):
        raise DatasetError(f"{path}: {len(inputs)} inputs but {len(types)} types")
    if not isinstance(metadata, dict):
        raise DatasetError(f"{path}: line 3 (metadata) must be an object")
    if not isinstance(mmeta, dict):
        raise DatasetError(f"{path}: line 4 (manifest metadata) must be an object")
    if not isinstance(catalogs, dict):
        raise DatasetError(f"{path}: line 5 (catalogs) must be an object")
    paths = catalogs.get("paths")
    if not isinstance(paths, list):
        raise DatasetError(f"{path}: line 5: 'paths' is missing or not a list")
    if len(paths) > MAX_TUB_CATALOGS:
        raise DatasetError(
            f"{path}: {len(paths)} catalogs, more than the limit {MAX_TUB_CATALOGS} "
            "(MAX_TUB_CATALOGS)"
        )
    for p in paths:
        problem = _plain_name_problem(p)
        if problem:
            raise DatasetError(f"{path}: line 5: catalog {problem}")
    ints = {}
    for name, low in (("current_index", 0), ("max_len", 1)):
        v = catalogs.get(name)
        if not _is_int(v) or not low <= v <= MAX_TUB_RECORDS:
            raise DatasetError(
                f"{path}: line 5: {name} is {v!r}, expected an int in [{low}, {MAX_TUB_RECORDS}]"
            )
        ints[name] = int(v)
    deleted = catalogs.get("deleted_indexes", [])
    if not isinstance(deleted, list) or len(deleted) > MAX_TUB_RECORDS:
        raise DatasetError(f"{path}: line 5: deleted_indexes must be a list of record indexes")
    if not all(_is_int(i) and 0 <= i <= MAX_TUB_RECORDS for i in deleted):
        raise DatasetError(f"{path}: line 5: deleted_indexes holds something not an index")
    return TubManifest(
        root=root,
        inputs=inputs,
        types=types,
        metadata=metadata,
        manifest_metadata=mmeta,
        paths=list(paths),
        current_index=ints["current_index"],
        max_len=ints["max_len"],
        deleted_indexes=frozenset(int(i) for i in deleted),
    )


class TubLine(NamedTuple):
    """One record line of a tub, as :func:`iter_tub_lines` meets it."""

    index: int  # the record's index: its position across the catalogs
    catalog: str  # the catalog file's name
    line: int  # 1-based line number in the catalog
    record: dict[str, Any] | None  # the parsed record; None when skipped
    skipped: str | None  # None, or why it was skipped: "deleted", "partial" or "unreadable"


def iter_tub_lines(m: TubManifest, *, skip_bad: bool = False) -> Iterator[TubLine]:
    """Every record line of the tub ``m``, in index order, as DonkeyCar's reader meets them.

    Deleted indexes come back unread with ``skipped="deleted"``. A catalog's last line that
    has no newline and is not JSON (a write cut short) comes back with ``skipped="partial"``
    and a warning. Any other line that is not a JSON object is a :class:`DatasetError`, or,
    with ``skip_bad``, comes back with ``skipped="unreadable"`` and a warning.
    """
    index = partial = 0
    for name in m.paths:
        path = m.root / name
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed below, whatever the consumer does
        except FileNotFoundError:
            raise DatasetError(
                f"{path}: listed in {TUB_MANIFEST_NAME} but missing; the tub is damaged"
            ) from None
        except OSError as e:
            raise DatasetError(f"{path}: unreadable ({e.strerror or e})") from None
        with f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_TUB_CATALOG_BYTES:
                raise DatasetError(
                    f"{path}: {size / 2**20:.1f} MiB, more than the limit "
                    f"{MAX_TUB_CATALOG_BYTES / 2**20:g} MiB (MAX_TUB_CATALOG_BYTES)"
                )
            line_no = 0
            while raw := f.readline(MAX_TUB_RECORD_BYTES + 1):
                line_no += 1
                where = f"{path}: line {line_no}"
                complete = raw.endswith(b"\n")
                if not complete and len(raw) > MAX_TUB_RECORD_BYTES:
                    raise DatasetError(
                        f"{where}: longer than the limit {MAX_TUB_RECORD_BYTES} bytes "
                        "(MAX_TUB_RECORD_BYTES)"
                    )
                text = raw.rstrip(b"\r\n")
                if not text:  # ManifestIterator ends a catalog at its first empty line
                    if f.read(1):
                        logger.warning(
                            "%s: a blank line; DonkeyCar reads no further in this catalog, "
                            "nor does this import",
                            where,
                        )
                    break
                i = index
                index += 1
                if index > MAX_TUB_RECORDS:
                    raise DatasetError(
                        f"{where}: more than {MAX_TUB_RECORDS} records (MAX_TUB_RECORDS)"
                    )
                if i in m.deleted_indexes:
                    yield TubLine(i, name, line_no, None, "deleted")
                    continue
                try:
                    record = _loads_limited(text, where)
                    if not isinstance(record, dict):
                        raise DatasetError(f"{where}: a record must be a JSON object")
                except DatasetError as e:
                    if not complete:
                        logger.warning(
                            "%s: ignoring a partial last record (index %d; the car stopped "
                            "while writing it), as DonkeyCar does",
                            where,
                            i,
                        )
                        partial += 1
                        yield TubLine(i, name, line_no, None, "partial")
                        continue
                    if not skip_bad:
                        raise DatasetError(
                            f"{e} (record index {i}); --skip-bad-records skips such records"
                        ) from None
                    logger.warning("%s: skipping an unreadable record (index %d)", where, i)
                    yield TubLine(i, name, line_no, None, "unreadable")
                    continue
                yield TubLine(i, name, line_no, record, None)
    if index - partial != m.current_index:
        logger.warning(
            "%s: the catalogs hold %d records, manifest.json says the next index is %d "
            "(the car stopped between writing a record and updating the manifest?)",
            m.root,
            index - partial,
            m.current_index,
        )


def is_donkeycar_tub(root: str | Path) -> bool:
    """True if ``root`` looks like a DonkeyCar tub: its ``manifest.json`` starts with two
    JSON lists of strings (inputs and types) and catalogs or ``images/`` lie beside it."""
    root = Path(root)
    try:
        with open(root / TUB_MANIFEST_NAME, "rb") as f:
            head = f.read(1 << 20)
    except OSError:
        return False
    lines = head.split(b"\n", 2)
    if len(lines) < 3:
        return False
    for line in lines[:2]:
        try:
            v = json.loads(line.rstrip(b"\r"))
        except (ValueError, RecursionError):
            return False
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            return False
    try:
        with os.scandir(root) as it:
            for entry in it:
                if _CATALOG_RE.match(entry.name) or entry.name == TUB_IMAGES_DIRNAME:
                    return True
    except OSError:
        return False
    return False


#: Subdirectories :func:`tub_hint` looks at for tubs inside a data directory.
_HINT_MAX_ENTRIES = 1000


def tub_hint(root: str | Path) -> str | None:
    """The one line telling a user that ``root`` is a DonkeyCar tub (or a directory of tubs)
    and not a trackpilot dataset, with the import command; None if it is neither."""
    root = Path(root)
    cmd = "python -m sim.dataset import-tub"
    if is_donkeycar_tub(root):
        return (
            f"{root} is a DonkeyCar tub, not a trackpilot dataset; import it with: "
            f"{cmd} {root} --out DATASET"
        )
    tubs: list[Path] = []
    try:
        with os.scandir(root) as it:
            for k, entry in enumerate(it):
                if k >= _HINT_MAX_ENTRIES:
                    break
                if entry.is_dir() and is_donkeycar_tub(entry.path):
                    tubs.append(root / entry.name)
    except OSError:
        return None
    if not tubs:
        return None
    tubs.sort()
    shown = " ".join(str(t) for t in tubs[:3]) + (" ..." if len(tubs) > 3 else "")
    return (
        f"{root} holds {len(tubs)} DonkeyCar tub{'s' if len(tubs) > 1 else ''}, not a "
        f"trackpilot dataset; import them with: {cmd} {shown} --out DATASET"
    )


class TubWriter:
    """Writes a new tub, byte for byte as DonkeyCar's datastore leaves one whose drives
    (sessions) each opened the tub, wrote their records and closed it.

    ``begin_session(t)`` starts a drive (DonkeyCar's session id ``YY-MM-DD_N``, local date
    of ``t``); ``write_record(contents, timestamp_ms)`` adds the private fields and returns
    the record's index (name its images with :func:`tub_image_name`, write them with
    :meth:`write_image`); ``close()`` writes the last catalog and ``manifest.json``. A
    catalog (and its ``.catalog_manifest``) is written once it is full. Files are written
    without fsync: the caller makes the whole tub durable before publishing it (the
    datastore itself never fsyncs). Times are seconds since the epoch, passed in, so the
    output is reproducible.
    """

    def __init__(
        self,
        root: str | Path,
        inputs: Sequence[str],
        types: Sequence[str],
        metadata: Mapping[str, Any],
        *,
        max_len: int = 1000,
        created_at: float,
    ) -> None:
        if len(inputs) != len(types):
            raise ValueError(f"{len(inputs)} inputs but {len(types)} types")
        if not 1 <= max_len <= MAX_TUB_RECORDS:
            raise ValueError(f"max_len must be in [1, {MAX_TUB_RECORDS}], got {max_len}")
        self.root = Path(root)
        self.images_dir = self.root / TUB_IMAGES_DIRNAME
        self.inputs = list(inputs)
        self.types = list(types)
        self.metadata = dict(metadata)
        self.max_len = int(max_len)
        self.created_at = float(created_at)
        self.root.mkdir(parents=True, exist_ok=True)
        self.images_dir.mkdir(exist_ok=True)
        self.paths: list[str] = []
        self.current_index = 0
        self.sessions: dict[str, Any] = {}
        self.session_id: str | None = None
        self.files: list[Path] = []  # every file written, for the caller to fsync
        self._lines: list[str] = []
        self._catalog_created = 0.0
        self._start_index = 0
        self._add_catalog(self.created_at)

    def _add_catalog(self, when: float) -> None:
        self._flush_catalog()
        self.paths.append(f"catalog_{len(self.paths)}.catalog")
        self._lines = []
        self._catalog_created = float(when)
        self._start_index = self.current_index

    def _write(self, path: Path, text: str) -> None:
        path.write_bytes(text.encode("ascii"))
        self.files.append(path)

    def _flush_catalog(self) -> None:
        if not self.paths:
            return
        name = self.paths[-1]
        stem = name[: -len(".catalog")]
        self._write(self.root / name, "".join(self._lines))
        meta = {
            "path": f"{stem}.catalog_manifest",  # sic: the catalog manifest's own name
            "created_at": self._catalog_created,
            "start_index": self._start_index,
            "line_lengths": [len(line) for line in self._lines],
        }
        text = json.dumps(meta, allow_nan=False, sort_keys=True) + _NEWLINE
        self._write(self.root / f"{stem}.catalog_manifest", text)

    def begin_session(self, when: float) -> str:
        """Start a drive; its id (``YY-MM-DD_N``) goes into every record written until the
        next one, and into the manifest's ``sessions``."""
        last = self.sessions.get("last_id", -1) if self.sessions else -1
        if not self.sessions:
            self.sessions["all_full_ids"] = []
        this = last + 1
        full = time.strftime("%y-%m-%d", time.localtime(when)) + "_" + str(this)
        self.sessions["last_id"] = this
        self.sessions["last_full_id"] = full
        self.sessions["all_full_ids"].append(full)
        self.session_id = full
        return full

    def write_record(self, contents: Mapping[str, Any], timestamp_ms: int) -> int:
        """Append one record (``contents``: input name -> JSON value, an image as its file
        name); returns its index. Opens the next catalog when this one is full."""
        if self.session_id is None:
            raise RuntimeError("begin_session() before write_record()")
        index = self.current_index
        if index > 0 and index % self.max_len == 0:
            self._add_catalog(timestamp_ms / 1000.0)
        record = dict(contents)
        record["_timestamp_ms"] = int(timestamp_ms)
        record["_index"] = index
        record["_session_id"] = self.session_id
        self._lines.append(json.dumps(record, allow_nan=False, sort_keys=True) + _NEWLINE)
        self.current_index += 1
        return index

    def write_image(self, name: str, data: bytes) -> Path:
        """Write one image file (already encoded) into ``images/``."""
        problem = _plain_name_problem(name)
        if problem:
            raise ValueError(problem)
        path = self.images_dir / name
        path.write_bytes(data)
        return path

    def close(self) -> None:
        """Write the last catalog and ``manifest.json`` (what DonkeyCar's ``close()`` leaves)."""
        self._flush_catalog()
        manifest_metadata: dict[str, Any] = {"created_at": self.created_at}
        if self.sessions:
            manifest_metadata["sessions"] = self.sessions
        catalogs = {
            "paths": self.paths,
            "current_index": self.current_index,
            "max_len": self.max_len,
            "deleted_indexes": [],
        }
        lines = [self.inputs, self.types, self.metadata, manifest_metadata, catalogs]
        text = "".join(json.dumps(x, allow_nan=False) + _NEWLINE for x in lines)
        self._write(self.root / TUB_MANIFEST_NAME, text)
