"""On-disk dataset format for recorded laps: episode files + one manifest.

Layout::

    DIR/
      manifest.json                      # the only index: an episode exists iff it is listed here
      episodes/ep-<key>.safetensors      # per-frame arrays; episode metadata in __metadata__

Guarantees:

- Crash safety. An episode file is written to a temp file, fsynced and renamed into place, and
  only then listed in the manifest (itself replaced atomically, under a file lock). A recorder
  killed at any moment leaves a dataset that opens, with every completed episode intact; the
  partial one is absent, at worst leaving a temp/orphan file that :func:`validate_dataset`
  reports as a warning and the next :class:`DatasetWriter` removes.
- Safe loading. Files are parsed as safetensors (a JSON header plus raw little-endian arrays);
  nothing is ever unpickled, and every header is checked against :data:`FRAME_FIELDS` before
  a byte of data is trusted.
- Self-description. The manifest's ``info`` block (env id and version, pybullet version,
  renderer, camera, rates...) is fixed at creation; appending with an incompatible camera,
  control rate or renderer is refused.

CLI: ``python -m sim.dataset {info,validate,bench} ...``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import math
import os
import re
import struct
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from sim.io_utils import (
    atomic_write_json,
    file_lock,
    fsync_dir,
    is_temp_file,
    remove_stale_temp_files,
    write_temp_file,
)

__all__ = [
    "EPISODE_METADATA_KEY",
    "FORMAT_NAME",
    "FRAME_FIELDS",
    "SCHEMA_VERSION",
    "Dataset",
    "DatasetError",
    "DatasetWriter",
    "EpisodeMeta",
    "dataset_fingerprint",
    "dataset_summary",
    "is_warning",
    "main",
    "open_dataset",
    "validate_dataset",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
FORMAT_NAME = "trackpilot-dataset"
MANIFEST_NAME = "manifest.json"
EPISODES_DIRNAME = "episodes"
LOCK_NAME = ".manifest.lock"
EPISODE_METADATA_KEY = "trackpilot_episode"

#: The per-frame fields of an episode: name -> (dtype, trailing shape); ``None`` marks the
#: image, whose trailing shape is (H, W, 3) with H, W fixed per dataset. Single source of truth.
FRAME_FIELDS: dict[str, tuple[np.dtype, tuple[int, ...] | None]] = {
    "image": (np.dtype(np.uint8), None),  # (N, H, W, 3) RGB
    "steering": (np.dtype(np.float32), ()),  # [-1, 1], + = left
    "throttle": (np.dtype(np.float32), ()),
    "speed": (np.dtype(np.float32), ()),  # m/s
    "t": (np.dtype(np.float32), ()),  # s since episode start
    "pose": (np.dtype(np.float32), (3,)),  # x, y, yaw
    "lateral": (np.dtype(np.float32), ()),  # m, + = left of centreline
    "heading_error": (np.dtype(np.float32), ()),  # rad
    "progress": (np.dtype(np.float32), ()),  # m along centreline since start, across laps
    "lap": (np.dtype(np.int32), ()),  # lap index
    "takeover": (np.dtype(np.uint8), ()),  # 1 where a human had taken over
}
#: Float label fields: must be finite.
LABEL_FIELDS = tuple(k for k, (dt, _) in FRAME_FIELDS.items() if dt.kind == "f")
#: Info fields that must agree between a dataset and a writer appending to it (frames
#: drawn by another renderer differ in colour and shading: no mixing within one dataset).
INFO_COMPAT_FIELDS = ("env_id", "image_size", "control_hz", "renderer")
DIRECTIONS = ("ccw", "cw")

_ST_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype(np.uint8),
    "I8": np.dtype(np.int8),
    "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"),
    "U32": np.dtype("<u4"),
    "I32": np.dtype("<i4"),
    "U64": np.dtype("<u8"),
    "I64": np.dtype("<i8"),
    "F16": np.dtype("<f2"),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
}
_MAX_HEADER_BYTES = 100_000_000  # same cap as the safetensors reference implementation
_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


class DatasetError(ValueError):
    """Anything wrong with a dataset; the message names the file and the problem in one line."""


def is_warning(problem: str) -> bool:
    """True for a :func:`validate_dataset` line that is a warning, not an error."""
    return problem.startswith("warning:")


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _json_roundtrip(obj: Any, what: str) -> Any:
    try:
        return json.loads(json.dumps(obj, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} must be JSON-serialisable without NaN/inf: {e}") from None


def _episode_filename(key: str) -> str:
    return f"ep-{key}.safetensors"


def _episode_relpath(key: str) -> str:
    return f"{EPISODES_DIRNAME}/{_episode_filename(key)}"


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise ValueError(
            f"episode key {key!r} is invalid: use 1-128 characters from [A-Za-z0-9._-], "
            "starting with a letter or digit"
        )
    return key


def _info_image_size(info: Mapping[str, Any]) -> Any:
    """The image size from an info block: ``camera.image_size`` (or top-level ``image_size``)."""
    cam = info.get("camera")
    if isinstance(cam, Mapping) and "image_size" in cam:
        return cam["image_size"]
    return info.get("image_size")


def _info_image_hw(info: Mapping[str, Any]) -> tuple[int, int] | None:
    """(H, W) from the info block, or None when it does not say (or says it badly)."""
    size = _info_image_size(info)
    if (
        isinstance(size, (list, tuple))
        and len(size) == 2
        and all(_is_int(v) and v > 0 for v in size)
    ):
        return int(size[0]), int(size[1])
    return None


def _info_compat_value(info: Mapping[str, Any], name: str) -> Any:
    return _info_image_size(info) if name == "image_size" else info.get(name)


# --------------------------------------------------------------------------------------------
# Episode metadata


@dataclass(frozen=True)
class EpisodeMeta:
    """What produced an episode; stored in its file header and its manifest record."""

    track_id: str  # id of the track in the track library (or imported file name)
    track_hash: str  # hash of the track geometry, so a changed track is recognised
    direction: str  # "ccw" or "cw"
    seed: int  # env reset seed
    source: str  # "expert", "human", "takeover" or another producer name
    laps: int = 0  # laps completed in the episode
    expert: dict | None = None  # expert (autopilot) parameters, None for a human
    extra: dict = field(default_factory=dict)  # anything else the recorder wants to keep

    def __post_init__(self) -> None:
        for name in ("track_id", "track_hash", "source"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"EpisodeMeta.{name} must be a str, got {getattr(self, name)!r}")
        if not self.track_id:
            raise ValueError("EpisodeMeta.track_id must not be empty")
        if not self.source:
            raise ValueError("EpisodeMeta.source must not be empty")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"EpisodeMeta.direction must be 'ccw' or 'cw', got {self.direction!r}")
        if not _is_int(self.seed):
            raise ValueError(f"EpisodeMeta.seed must be an int, got {self.seed!r}")
        if not _is_int(self.laps) or self.laps < 0:
            raise ValueError(f"EpisodeMeta.laps must be an int >= 0, got {self.laps!r}")
        # numpy ints are accepted but stored as plain ints so records stay JSON
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "laps", int(self.laps))
        if self.expert is not None and not isinstance(self.expert, dict):
            raise ValueError(f"EpisodeMeta.expert must be a dict or None, got {self.expert!r}")
        if not isinstance(self.extra, dict):
            raise ValueError(f"EpisodeMeta.extra must be a dict, got {self.extra!r}")
        _json_roundtrip(self.expert, "EpisodeMeta.expert")
        _json_roundtrip(self.extra, "EpisodeMeta.extra")

    def to_dict(self) -> dict[str, Any]:
        return _json_roundtrip(asdict(self), "EpisodeMeta")

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> EpisodeMeta:
        """Rebuild the metadata from a manifest record."""
        return cls(
            track_id=record["track_id"],
            track_hash=record["track_hash"],
            direction=record["direction"],
            seed=record["seed"],
            source=record["source"],
            laps=record.get("laps", 0),
            expert=record.get("expert"),
            extra=dict(record.get("extra") or {}),
        )


# --------------------------------------------------------------------------------------------
# Manifest


def _record_problems(rec: Any, i: int) -> list[str]:
    """Problems with manifest record ``i`` (without the file prefix)."""
    if not isinstance(rec, dict):
        return [f"episodes[{i}] is not an object"]
    key = rec.get("key")
    where = f"episodes[{i}] ({key!r})"
    if not isinstance(key, str) or not _KEY_RE.match(key):
        return [f"{where}: invalid key"]
    out: list[str] = []
    if rec.get("file") != _episode_relpath(key):
        out.append(f"{where}: file is {rec.get('file')!r}, expected {_episode_relpath(key)!r}")
    if not isinstance(rec.get("sha256"), str) or not _SHA_RE.match(rec["sha256"]):
        out.append(f"{where}: sha256 is not 64 lowercase hex digits")
    if not _is_int(rec.get("seed")):
        out.append(f"{where}: seed is {rec.get('seed')!r}, expected an int")
    for name in ("frames", "bytes", "laps"):
        v = rec.get(name)
        if not _is_int(v) or v < 0:
            out.append(f"{where}: {name} is {v!r}, expected an int >= 0")
    for name in ("track_id", "track_hash", "source"):
        if not isinstance(rec.get(name), str):
            out.append(f"{where}: {name} is {rec.get(name)!r}, expected a string")
    if rec.get("direction") not in DIRECTIONS:
        out.append(f"{where}: direction is {rec.get('direction')!r}, expected 'ccw' or 'cw'")
    if rec.get("expert") is not None and not isinstance(rec.get("expert"), dict):
        out.append(f"{where}: expert must be an object or null")
    if not isinstance(rec.get("extra", {}), dict):
        out.append(f"{where}: extra must be an object")
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _read_manifest(root: Path) -> tuple[dict | None, list[str]]:
    """Parse and check ``root/manifest.json``. Returns (manifest or None if unusable, problems).

    Records with problems are reported and dropped from the returned manifest's episodes.
    """
    path = root / MANIFEST_NAME
    if not root.is_dir():
        return None, [f"{root}: no such dataset directory"]
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, [f"{path}: missing (not a trackpilot dataset?)"]
    except (OSError, UnicodeDecodeError) as e:
        return None, [f"{path}: unreadable ({e})"]
    try:
        m = json.loads(text, parse_constant=_reject_constant)
    except ValueError as e:
        return None, [f"{path}: invalid JSON ({e})"]
    if not isinstance(m, dict):
        return None, [f"{path}: top level is {type(m).__name__}, expected an object"]
    if m.get("format") != FORMAT_NAME:
        return None, [f"{path}: format is {m.get('format')!r}, expected {FORMAT_NAME!r}"]
    version = m.get("schema_version")
    if version != SCHEMA_VERSION or not _is_int(version):
        return None, [
            f"{path}: schema_version is {version!r}, this trackpilot reads {SCHEMA_VERSION}"
        ]
    problems: list[str] = []
    if not isinstance(m.get("info"), dict):
        return None, [f"{path}: 'info' is missing or not an object"]
    episodes = m.get("episodes")
    if not isinstance(episodes, list):
        return None, [f"{path}: 'episodes' is missing or not a list"]
    good: list[dict] = []
    seen: set[str] = set()
    for i, rec in enumerate(episodes):
        p = _record_problems(rec, i)
        if not p and rec["key"] in seen:
            p = [f"episodes[{i}] ({rec['key']!r}): duplicate key"]
        problems.extend(f"{path}: {x}" for x in p)
        if not p:
            seen.add(rec["key"])
            good.append(rec)
    m["episodes"] = good
    return m, problems


def _load_manifest_or_raise(root: Path) -> dict:
    m, problems = _read_manifest(root)
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise DatasetError(problems[0] + more)
    assert m is not None
    return m


# --------------------------------------------------------------------------------------------
# Episode files (safetensors): header parsing and reading straight into numpy buffers.
# The header is parsed here rather than by safetensors' loader so that load_arrays can read
# each tensor with one readinto() into a preallocated output slice (one copy, no temporaries).


@dataclass(frozen=True)
class _Tensor:
    dtype: np.dtype
    shape: tuple[int, ...]
    begin: int  # offsets relative to the data section
    end: int


@dataclass(frozen=True)
class _Header:
    raw: bytes  # the first data_start bytes of the file (length prefix + JSON)
    data_start: int
    tensors: dict[str, _Tensor]
    metadata: dict[str, str]


def _parse_header(prefix: bytes, read_json: Any, path: Path, size: int) -> _Header:
    """Parse a safetensors header; ``read_json(n)`` returns the n JSON bytes after the prefix."""
    bad = f"{path}: not a valid safetensors file"
    if len(prefix) < 8:
        raise DatasetError(f"{bad}: {size} bytes, too short for a header (truncated?)")
    (n,) = struct.unpack("<Q", prefix)
    if n > _MAX_HEADER_BYTES or 8 + n > size:
        raise DatasetError(f"{bad}: header length {n} exceeds the file size {size} (truncated?)")
    raw_json = read_json(n)
    if len(raw_json) != n:
        raise DatasetError(f"{bad}: header cut short (truncated?)")
    try:
        h = json.loads(raw_json.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as e:
        raise DatasetError(f"{bad}: header is not JSON ({e})") from None
    if not isinstance(h, dict):
        raise DatasetError(f"{bad}: header is not a JSON object")
    metadata = h.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise DatasetError(f"{bad}: __metadata__ must map strings to strings")
    data_start = 8 + n
    data_len = size - data_start
    tensors: dict[str, _Tensor] = {}
    for name, spec in h.items():
        try:
            dtype = _ST_DTYPES[spec["dtype"]]
            shape = tuple(spec["shape"])
            begin, end = spec["data_offsets"]
            if not all(_is_int(d) and d >= 0 for d in (*shape, begin, end)):
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise DatasetError(f"{bad}: malformed entry for tensor {name!r}") from None
        nbytes = math.prod(shape) * dtype.itemsize
        if not (0 <= begin <= end <= data_len) or end - begin != nbytes:
            raise DatasetError(
                f"{bad}: tensor {name!r} has data_offsets [{begin}, {end}] inconsistent with "
                f"its shape {list(shape)} or the file size (truncated?)"
            )
        tensors[name] = _Tensor(dtype, shape, begin, end)
    # The data section must be covered exactly, without holes or overlaps (safetensors spec).
    pos = 0
    for t in sorted(tensors.values(), key=lambda t: (t.begin, t.end)):
        if t.begin != pos:
            raise DatasetError(f"{bad}: tensor data has holes or overlaps")
        pos = t.end
    if pos != data_len:
        raise DatasetError(
            f"{bad}: data section is {data_len} bytes but tensors cover {pos} (truncated?)"
        )
    return _Header(prefix + raw_json, data_start, tensors, metadata)


def _read_header_file(f: Any, path: Path, size: int) -> _Header:
    f.seek(0)
    return _parse_header(f.read(8), f.read, path, size)


def _read_header_bytes(data: bytes | memoryview, path: Path) -> _Header:
    mv = memoryview(data)
    return _parse_header(bytes(mv[:8]), lambda n: bytes(mv[8 : 8 + n]), path, len(mv))


def _tensor_problems(
    hdr: _Header, frames: int | None, image_hw: tuple[int, int] | None
) -> list[str]:
    """Mismatches between an episode's tensors and FRAME_FIELDS (without the file prefix)."""
    out: list[str] = []
    missing = [k for k in FRAME_FIELDS if k not in hdr.tensors]
    unexpected = sorted(k for k in hdr.tensors if k not in FRAME_FIELDS)
    if missing:
        out.append(f"missing fields {missing}")
    if unexpected:
        out.append(f"unexpected fields {unexpected}")
    img = hdr.tensors.get("image")
    n = img.shape[0] if img is not None and img.shape else None
    if n is None:
        n = next((t.shape[0] for t in hdr.tensors.values() if t.shape), None)
    if frames is not None and n is not None and n != frames:
        out.append(f"{n} frames in the file, manifest says {frames}")
    for name, (dtype, trailing) in FRAME_FIELDS.items():
        t = hdr.tensors.get(name)
        if t is None:
            continue
        if t.dtype != dtype:
            out.append(f"field {name!r} has dtype {t.dtype}, expected {dtype}")
        if trailing is None:
            ok = len(t.shape) == 4 and t.shape[3] == 3 and t.shape[1] > 0 and t.shape[2] > 0
            if not ok:
                out.append(f"field 'image' has shape {list(t.shape)}, expected (N, H, W, 3)")
            elif image_hw is not None and tuple(t.shape[1:3]) != image_hw:
                out.append(
                    f"image size {t.shape[1]}x{t.shape[2]} differs from the dataset's "
                    f"{image_hw[0]}x{image_hw[1]}"
                )
            if len(t.shape) >= 1 and n is not None and t.shape[0] != n:
                out.append(f"field 'image' has {t.shape[0]} frames, others {n}")
        elif n is not None and t.shape != (n, *trailing):
            out.append(f"field {name!r} has shape {list(t.shape)}, expected {[n, *trailing]}")
    return out


def _readinto_exact(f: Any, pos: int, buf: memoryview, path: Path) -> None:
    f.seek(pos)
    while len(buf):
        got = f.readinto(buf)
        if not got:
            raise DatasetError(f"{path}: unexpected end of file (truncated?)")
        buf = buf[got:]


def _byte_view(a: np.ndarray) -> memoryview:
    return memoryview(a.reshape(-1).view(np.uint8))


def _read_episode_into(
    path: Path,
    record: Mapping[str, Any],
    dests: Mapping[str, np.ndarray] | None,
    fields: Sequence[str],
    verify: bool,
    image_hw: tuple[int, int] | None,
    on_header: Any = None,
) -> dict[str, np.ndarray]:
    """Read ``fields`` of one episode file, into ``dests`` slices if given, else new arrays.

    With ``verify`` the whole file is read in order and its sha256 compared to the record.
    ``on_header(hdr)`` may return ``dests`` lazily (load_arrays sizes its outputs from the first
    header when the info block does not give the image size).
    """
    try:
        f = open(path, "rb", buffering=0)
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing (listed in the manifest)") from None
    except OSError as e:
        raise DatasetError(f"{path}: unreadable ({e})") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        if verify and size != record["bytes"]:
            raise DatasetError(
                f"{path}: {size} bytes, manifest says {record['bytes']} (truncated?)"
            )
        hdr = _read_header_file(f, path, size)
        problems = _tensor_problems(hdr, record["frames"], image_hw)
        if problems:
            raise DatasetError(f"{path}: {problems[0]}")
        if on_header is not None:
            dests = on_header(hdr)
        out: dict[str, np.ndarray] = {}
        for name in fields:
            t = hdr.tensors[name]
            out[name] = np.empty(t.shape, t.dtype) if dests is None else dests[name]
        if verify:
            h = hashlib.sha256(hdr.raw)
            for name, t in sorted(hdr.tensors.items(), key=lambda kv: kv[1].begin):
                buf = (
                    _byte_view(out[name]) if name in out else memoryview(bytearray(t.end - t.begin))
                )
                _readinto_exact(f, hdr.data_start + t.begin, buf, path)
                h.update(buf)
            if h.hexdigest() != record["sha256"]:
                raise DatasetError(
                    f"{path}: sha256 mismatch (file {h.hexdigest()[:16]}..., manifest "
                    f"{record['sha256'][:16]}...): the file is corrupt"
                )
        else:
            for name in fields:
                t = hdr.tensors[name]
                _readinto_exact(f, hdr.data_start + t.begin, _byte_view(out[name]), path)
    return out


# --------------------------------------------------------------------------------------------
# Read side


class Dataset:
    """A dataset opened for reading (see :func:`open_dataset`).

    ``episodes`` are the manifest records, in recording order; ``len(ds)`` is the number of
    frames. Episode ``i`` covers frames ``offsets[i]:offsets[i+1]`` of :meth:`load_arrays`.
    """

    def __init__(self, root: Path, manifest: dict) -> None:
        self.root = root
        self.manifest = manifest
        self.info: dict = manifest["info"]
        self.episodes: list[dict] = manifest["episodes"]
        self._index = {rec["key"]: i for i, rec in enumerate(self.episodes)}
        counts = np.array([rec["frames"] for rec in self.episodes], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __repr__(self) -> str:
        return f"Dataset({str(self.root)!r}, episodes={len(self.episodes)}, frames={len(self)})"

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    @property
    def image_size(self) -> tuple[int, int] | None:
        """(H, W) as declared in the info block, if it declares it."""
        return _info_image_hw(self.info)

    @property
    def keys(self) -> list[str]:
        return [rec["key"] for rec in self.episodes]

    def episode_index(self, i_or_key: int | str) -> int:
        if isinstance(i_or_key, str):
            try:
                return self._index[i_or_key]
            except KeyError:
                raise KeyError(f"no episode {i_or_key!r} in {self.root}") from None
        if not _is_int(i_or_key):
            raise TypeError(f"episode must be an index or a key, got {i_or_key!r}")
        n = len(self.episodes)
        i = int(i_or_key)
        if not -n <= i < n:
            raise IndexError(f"episode index {i} out of range for {n} episodes")
        return i % n

    def episode_path(self, i_or_key: int | str) -> Path:
        return self.root / self.episodes[self.episode_index(i_or_key)]["file"]

    def episode_meta(self, i_or_key: int | str) -> EpisodeMeta:
        return EpisodeMeta.from_record(self.episodes[self.episode_index(i_or_key)])

    def load_episode(
        self,
        i_or_key: int | str,
        fields: Sequence[str] | None = None,
        verify: bool = True,
    ) -> dict[str, np.ndarray]:
        """The frame arrays of one episode (fresh, writable), sha256-checked unless verify=False."""
        i = self.episode_index(i_or_key)
        rec = self.episodes[i]
        names = _check_fields(fields)
        return _read_episode_into(
            self.root / rec["file"], rec, None, names, verify, self.image_size
        )

    def load_arrays(
        self,
        fields: Sequence[str] | None = None,
        episodes: Sequence[int] | None = None,
        verify: bool = False,
    ) -> dict[str, np.ndarray]:
        """Concatenated arrays of ``fields`` (default all) over ``episodes`` (default all).

        Adds ``"episode"`` (int32 index into :attr:`episodes`) and ``"frame"`` (int32 index
        within the episode). Outputs are preallocated from the manifest's frame counts and each
        file's tensors are read straight into their slices.
        """
        names = _check_fields(fields)
        idx = (
            list(range(len(self.episodes)))
            if episodes is None
            else [self.episode_index(int(i)) for i in episodes]
        )
        counts = np.array([self.episodes[i]["frames"] for i in idx], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        total = int(starts[-1])
        if total >= 2**31:
            raise ValueError(f"{total} frames do not fit int32 frame indices")
        out: dict[str, np.ndarray] = {}
        image_hw = self.image_size

        def allocate(hdr: _Header | None) -> None:
            for name in names:
                dtype, trailing = FRAME_FIELDS[name]
                if trailing is None:
                    hw = image_hw or (tuple(hdr.tensors["image"].shape[1:3]) if hdr else (0, 0))
                    trailing = (*hw, 3)
                out[name] = np.empty((total, *trailing), dtype)

        if image_hw is not None or "image" not in names or not idx:
            allocate(None)
        for j, i in enumerate(idx):
            rec = self.episodes[i]
            a, b = int(starts[j]), int(starts[j + 1])

            def dests(hdr: _Header, a: int = a, b: int = b) -> dict[str, np.ndarray]:
                if not out:
                    allocate(hdr)
                return {name: out[name][a:b] for name in names}

            # the image size of later episodes is checked against the first one's
            hw = image_hw
            if hw is None and "image" in out:
                hw = tuple(out["image"].shape[1:3])
            _read_episode_into(self.root / rec["file"], rec, None, names, verify, hw, dests)
        out["episode"] = np.repeat(np.asarray(idx, dtype=np.int32), counts)
        out["frame"] = (np.arange(total, dtype=np.int64) - np.repeat(starts[:-1], counts)).astype(
            np.int32
        )
        return out


def _check_fields(fields: Sequence[str] | None) -> list[str]:
    if fields is None:
        return list(FRAME_FIELDS)
    if isinstance(fields, str):
        fields = [fields]
    names: list[str] = []
    for name in fields:
        if name in ("episode", "frame"):
            continue  # always included by load_arrays
        if name not in FRAME_FIELDS:
            raise ValueError(f"unknown frame field {name!r}; fields are {list(FRAME_FIELDS)}")
        if name not in names:
            names.append(name)
    return names


def open_dataset(root: str | Path) -> Dataset:
    """Open the dataset at ``root`` for reading; :class:`DatasetError` if it is not a valid one."""
    root = Path(root)
    return Dataset(root, _load_manifest_or_raise(root))


# --------------------------------------------------------------------------------------------
# Write side


def _prepare_frames(
    frames: Mapping[str, Any], path: Path, image_hw: tuple[int, int] | None
) -> dict[str, np.ndarray]:
    """Check and convert a recorder's frame arrays to the FRAME_FIELDS dtypes."""
    if not isinstance(frames, Mapping):
        raise TypeError(f"frames must be a mapping of field name to array, got {type(frames)}")
    missing = [k for k in FRAME_FIELDS if k not in frames]
    unexpected = sorted(k for k in frames if k not in FRAME_FIELDS)
    if missing or unexpected:
        raise DatasetError(f"{path}: missing fields {missing}, unexpected fields {unexpected}")
    image = np.asarray(frames["image"])
    if image.dtype != np.uint8 or image.ndim != 4 or image.shape[3] != 3:
        raise DatasetError(
            f"{path}: image must be uint8 (N, H, W, 3), got {image.dtype} {list(image.shape)}"
        )
    n = image.shape[0]
    if n < 1:
        raise DatasetError(f"{path}: an episode needs at least one frame")
    if image_hw is not None and tuple(image.shape[1:3]) != image_hw:
        raise DatasetError(
            f"{path}: image size {image.shape[1]}x{image.shape[2]} differs from the dataset's "
            f"{image_hw[0]}x{image_hw[1]}"
        )
    out = {"image": np.ascontiguousarray(image)}
    for name, (dtype, trailing) in FRAME_FIELDS.items():
        if trailing is None:
            continue
        a = np.asarray(frames[name])
        if a.shape != (n, *trailing):
            raise DatasetError(
                f"{path}: field {name!r} has shape {list(a.shape)}, expected {[n, *trailing]}"
            )
        if not np.can_cast(a.dtype, dtype, "same_kind"):
            raise DatasetError(f"{path}: field {name!r} has dtype {a.dtype}, expected {dtype}")
        if dtype.kind in "iu" and a.size:
            info = np.iinfo(dtype)
            if a.min() < info.min or a.max() > info.max:
                raise DatasetError(f"{path}: field {name!r} has values outside {dtype}")
        a = np.ascontiguousarray(a, dtype=dtype)
        if dtype.kind == "f" and not np.isfinite(a).all():
            raise DatasetError(f"{path}: field {name!r} has NaN or infinite values")
        out[name] = a
    if np.abs(out["steering"]).max() > 1.0:
        raise DatasetError(f"{path}: steering outside [-1, 1]")
    if out["takeover"].max() > 1:
        raise DatasetError(f"{path}: takeover must be 0 or 1")
    return out


class DatasetWriter:
    """Appends episodes to a dataset directory, crash-safely.

    Creates ``root`` (and its manifest) if needed, or opens an existing dataset after checking
    that ``info`` agrees with it on :data:`INFO_COMPAT_FIELDS` (:class:`DatasetError`, a
    ``ValueError``, otherwise; the stored info block is kept). Temp files of dead writers and
    orphan episode files (written but never listed: the work of a killed recorder) are removed.
    Several writers, in processes or threads, may append to one dataset at once.
    """

    def __init__(self, root: str | Path, info: dict) -> None:
        if not isinstance(info, Mapping):
            raise TypeError(f"info must be a dict, got {type(info)}")
        self.root = Path(root)
        self.episodes_dir = self.root / EPISODES_DIRNAME
        self.manifest_path = self.root / MANIFEST_NAME
        self._lock_path = self.root / LOCK_NAME
        info = _json_roundtrip(dict(info), "info")
        if _info_image_size(info) is not None and _info_image_hw(info) is None:
            raise ValueError(
                f"info image_size must be [height, width], got {_info_image_size(info)}"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        self.episodes_dir.mkdir(exist_ok=True)
        with self._lock():
            if self.manifest_path.exists():
                manifest = _load_manifest_or_raise(self.root)
                for name in INFO_COMPAT_FIELDS:
                    have = _info_compat_value(manifest["info"], name)
                    want = _info_compat_value(info, name)
                    if have != want:
                        raise DatasetError(
                            f"{self.manifest_path}: dataset has {name}={have!r}, writer has "
                            f"{name}={want!r}; record into a new dataset directory instead"
                        )
                self.info = manifest["info"]
            else:
                self._refuse_unknown_contents()
                self.info = info
                manifest = {
                    "format": FORMAT_NAME,
                    "schema_version": SCHEMA_VERSION,
                    "created": _now_iso(),
                    "info": info,
                    "episodes": [],
                }
                atomic_write_json(self.manifest_path, manifest)
                logger.info("created dataset %s", self.root)
            self._cleanup(manifest)
        self._image_hw = _info_image_hw(self.info)

    @contextlib.contextmanager
    def _lock(self) -> Any:
        with file_lock(self._lock_path):
            yield

    def _refuse_unknown_contents(self) -> None:
        """Never create a fresh manifest over existing data (e.g. a deleted manifest.json)."""
        allowed = {EPISODES_DIRNAME, LOCK_NAME}
        stray = [
            p.name for p in self.root.iterdir() if p.name not in allowed and not is_temp_file(p)
        ]
        stray += [
            f"{EPISODES_DIRNAME}/{p.name}"
            for p in self.episodes_dir.iterdir()
            if not is_temp_file(p)
        ]
        if stray:
            raise DatasetError(
                f"{self.manifest_path}: missing, but {self.root} is not empty ({sorted(stray)[:5]}); "
                "refusing to create a dataset over existing files"
            )

    def _cleanup(self, manifest: dict) -> None:
        """Remove dead writers' temp files and orphan episode files. Call under the lock."""
        removed = remove_stale_temp_files(self.root) + remove_stale_temp_files(self.episodes_dir)
        listed = {Path(rec["file"]).name for rec in manifest["episodes"]}
        for p in self.episodes_dir.glob("ep-*.safetensors"):
            if p.name not in listed and p.is_file():
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    removed.append(p)
        if removed:
            fsync_dir(self.episodes_dir)
            logger.warning(
                "%s: removed %d leftover files of an interrupted recorder: %s",
                self.root,
                len(removed),
                ", ".join(p.name for p in removed[:5]),
            )

    def _manifest(self) -> dict:
        return _load_manifest_or_raise(self.root)

    @property
    def episodes(self) -> list[dict]:
        """The manifest records as they are on disk now."""
        return self._manifest()["episodes"]

    def has_episode(self, key: str) -> bool:
        """True if ``key`` is listed in the manifest (so a resumed recorder can skip it)."""
        return any(rec["key"] == key for rec in self.episodes)

    def write_episode(
        self,
        key: str,
        frames: Mapping[str, np.ndarray],
        meta: EpisodeMeta,
        *,
        overwrite: bool = False,
    ) -> dict:
        """Write one episode and list it in the manifest; returns its manifest record.

        The episode becomes visible only once it is completely on disk. An existing ``key``
        raises :class:`DatasetError` unless ``overwrite=True``.
        """
        _check_key(key)
        if not isinstance(meta, EpisodeMeta):
            raise TypeError(f"meta must be an EpisodeMeta, got {type(meta)}")
        rel = _episode_relpath(key)
        final = self.root / rel
        if self._image_hw is None:
            # no declared size: the first episode fixes it for the dataset
            recs = self.episodes
            if recs:
                with open(self.root / recs[0]["file"], "rb") as f:
                    hdr = _read_header_file(
                        f, self.root / recs[0]["file"], os.fstat(f.fileno()).st_size
                    )
                self._image_hw = tuple(hdr.tensors["image"].shape[1:3])
        arrays = _prepare_frames(frames, final, self._image_hw)
        if not overwrite and self.has_episode(key):
            raise DatasetError(
                f"{final}: episode {key!r} exists (pass overwrite=True to replace it)"
            )
        n = int(arrays["image"].shape[0])
        header_meta = {
            "key": key,
            "schema_version": SCHEMA_VERSION,
            "frames": n,
            "created": _now_iso(),
            **meta.to_dict(),
        }
        from safetensors.numpy import save

        data = save(arrays, metadata={EPISODE_METADATA_KEY: json.dumps(header_meta)})
        del arrays
        record = {
            "key": key,
            "file": rel,
            "sha256": hashlib.sha256(data).hexdigest(),
            "frames": n,
            "bytes": len(data),
            **meta.to_dict(),
        }
        tmp = write_temp_file(final, data)
        del data
        try:
            with self._lock():
                manifest = self._manifest()
                old = [i for i, rec in enumerate(manifest["episodes"]) if rec["key"] == key]
                if old and not overwrite:
                    raise DatasetError(
                        f"{final}: episode {key!r} exists (pass overwrite=True to replace it)"
                    )
                if old:
                    # unlist first: a crash between the two manifest writes loses the episode
                    # being replaced, never leaves a listed file with the wrong checksum
                    del manifest["episodes"][old[0]]
                    atomic_write_json(self.manifest_path, manifest)
                os.replace(tmp, final)
                fsync_dir(self.episodes_dir)
                manifest["episodes"].append(record)
                atomic_write_json(self.manifest_path, manifest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        logger.debug("wrote %s (%d frames)", final, n)
        return dict(record)


# --------------------------------------------------------------------------------------------
# Validation, summary, fingerprint


def _content_problems(arrays: Mapping[str, np.ndarray]) -> list[str]:
    out: list[str] = []
    for name in LABEL_FIELDS:
        a = arrays.get(name)
        if a is not None and a.dtype.kind == "f" and not np.isfinite(a).all():
            out.append(f"field {name!r} has {int((~np.isfinite(a)).sum())} NaN/infinite values")
    s = arrays.get("steering")
    if s is not None and s.dtype.kind == "f" and np.isfinite(s).all() and s.size:
        if np.abs(s).max() > 1.0:
            out.append(f"steering outside [-1, 1] (min {s.min():.3f}, max {s.max():.3f})")
    tk = arrays.get("takeover")
    if tk is not None and tk.size and tk.max() > 1:
        out.append("takeover has values other than 0 and 1")
    return out


def validate_dataset(
    root: str | Path, check_checksums: bool = True, progress: bool = False
) -> list[str]:
    """Every problem with the dataset at ``root``, one line each, naming the file.

    Lines starting with ``"warning:"`` (see :func:`is_warning`) are leftovers of an interrupted
    recorder (temp and orphan files): harmless, and removed by the next :class:`DatasetWriter`.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load as st_load

    root = Path(root)
    manifest, problems = _read_manifest(root)
    if manifest is None:
        return problems
    image_hw = _info_image_hw(manifest["info"])
    size = _info_image_size(manifest["info"])
    if size is not None and image_hw is None:
        problems.append(f"{root / MANIFEST_NAME}: info image_size {size!r} is not [height, width]")
    records = manifest["episodes"]
    if progress:
        from tqdm import tqdm

        records = tqdm(records, desc="validate", unit="ep")
    for rec in records:
        path = root / rec["file"]
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            problems.append(f"{path}: missing (listed in the manifest)")
            continue
        except OSError as e:
            problems.append(f"{path}: unreadable ({e})")
            continue
        if len(data) != rec["bytes"]:
            problems.append(f"{path}: {len(data)} bytes, manifest says {rec['bytes']} (truncated?)")
        if check_checksums:
            digest = hashlib.sha256(data).hexdigest()
            if digest != rec["sha256"]:
                problems.append(
                    f"{path}: sha256 mismatch (file {digest[:16]}..., manifest "
                    f"{rec['sha256'][:16]}...): the file is corrupt"
                )
        try:
            hdr = _read_header_bytes(data, path)
            arrays = st_load(data)  # the reference parser must accept it too
        except DatasetError as e:
            problems.append(str(e))
            continue
        except (SafetensorError, ValueError, TypeError) as e:
            problems.append(f"{path}: unreadable safetensors ({e})")
            continue
        tensor_problems = _tensor_problems(hdr, rec["frames"], image_hw)
        problems.extend(f"{path}: {p}" for p in tensor_problems)
        if "image" in hdr.tensors and image_hw is None and not tensor_problems:
            image_hw = tuple(hdr.tensors["image"].shape[1:3])  # first episode sets it
        problems.extend(f"{path}: {p}" for p in _content_problems(arrays))
        try:
            emeta = json.loads(hdr.metadata.get(EPISODE_METADATA_KEY, "null"))
        except ValueError:
            emeta = None
        if not isinstance(emeta, dict):
            problems.append(f"{path}: no valid {EPISODE_METADATA_KEY!r} metadata in the header")
        elif emeta.get("key") != rec["key"]:
            problems.append(
                f"{path}: header says key {emeta.get('key')!r}, manifest says {rec['key']!r}"
            )
        del data, arrays
    listed = {Path(rec["file"]).name for rec in manifest["episodes"]}
    for directory in (root, root / EPISODES_DIRNAME):
        if not directory.is_dir():
            continue
        for p in sorted(directory.iterdir()):
            if is_temp_file(p):
                problems.append(f"warning: {p}: temp file of an interrupted write")
            elif directory != root and p.name not in listed:
                problems.append(f"warning: {p}: not listed in the manifest (orphan)")
    return problems


def _steering_histogram(steering: np.ndarray, bins: int) -> dict[str, list]:
    counts, edges = np.histogram(steering, bins=bins, range=(-1.0, 1.0))
    return {"edges": [round(float(e), 6) for e in edges], "counts": counts.tolist()}


def dataset_summary(ds: Dataset, bins: int = 21) -> dict[str, Any]:
    """Counts and label statistics of a dataset, JSON-serialisable."""
    recs = ds.episodes
    frames = len(ds)
    nbytes = sum(rec["bytes"] for rec in recs)

    def by(name: str) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for rec in recs:
            d = out.setdefault(str(rec[name]), {"episodes": 0, "frames": 0})
            d["episodes"] += 1
            d["frames"] += rec["frames"]
        return dict(sorted(out.items()))

    labels = ds.load_arrays(fields=["steering", "takeover"])
    steering = labels["steering"]
    image_hw = ds.image_size
    if image_hw is None and recs:
        with open(ds.episode_path(0), "rb") as f:
            hdr = _read_header_file(f, ds.episode_path(0), os.fstat(f.fileno()).st_size)
        image_hw = tuple(hdr.tensors["image"].shape[1:3])
    return {
        "root": str(ds.root),
        "format": FORMAT_NAME,
        "schema_version": SCHEMA_VERSION,
        "created": ds.manifest.get("created"),
        "episodes": len(recs),
        "frames": frames,
        "laps": sum(rec.get("laps", 0) for rec in recs),
        "bytes": nbytes,
        "bytes_per_frame": nbytes / frames if frames else 0.0,
        "image_size": list(image_hw) if image_hw else None,
        "takeover_frames": int(labels["takeover"].sum(dtype=np.int64)),
        "by_track": by("track_id"),
        "by_direction": by("direction"),
        "by_source": by("source"),
        "steering_mean": float(steering.mean(dtype=np.float64)) if frames else 0.0,
        "steering_histogram": _steering_histogram(steering, bins),
        "fingerprint": dataset_fingerprint(ds),
        "info": ds.info,
    }


def dataset_fingerprint(ds: Dataset) -> str:
    """sha256 over the sorted (key, sha256) pairs: identifies exactly which data a model saw."""
    h = hashlib.sha256()
    for key, sha in sorted((rec["key"], rec["sha256"]) for rec in ds.episodes):
        h.update(f"{key}\t{sha}\n".encode())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# CLI


def _format_summary(s: dict[str, Any]) -> str:
    lines = [f"dataset      {s['root']}"]
    lines.append(f"frames       {s['frames']:,} in {s['episodes']:,} episodes ({s['laps']:,} laps)")
    hw = s["image_size"]
    img = f"{hw[0]}x{hw[1]}x3 uint8" if hw else "?"
    lines.append(f"images       {img}, {s['bytes_per_frame']:,.0f} bytes/frame on disk")
    lines.append(f"disk         {s['bytes'] / 1e6:,.1f} MB")
    lines.append(f"takeover     {s['takeover_frames']:,} frames")
    lines.append(f"fingerprint  {s['fingerprint']}")
    for title, key in (
        ("track", "by_track"),
        ("direction", "by_direction"),
        ("source", "by_source"),
    ):
        lines.append(f"by {title}:")
        for name, d in s[key].items():
            lines.append(f"  {name:<24} {d['episodes']:>6,} episodes {d['frames']:>10,} frames")
    hist = s["steering_histogram"]
    peak = max(hist["counts"], default=0) or 1
    lines.append(f"steering histogram (mean {s['steering_mean']:+.3f}, + = left):")
    for lo, hi, c in zip(hist["edges"][:-1], hist["edges"][1:], hist["counts"], strict=True):
        bar = "#" * math.ceil(40 * c / peak) if c else ""
        lines.append(f"  [{lo:+.2f}, {hi:+.2f}) {c:>9,} {bar}")
    lines.append("info:")
    lines.extend("  " + line for line in json.dumps(s["info"], indent=2).splitlines())
    return "\n".join(lines)


def _parse_size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)x(\d+)", text)
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise argparse.ArgumentTypeError(f"size must be HxW, e.g. 120x160, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def synthetic_episode(
    rng: np.random.Generator, n: int, hw: tuple[int, int]
) -> dict[str, np.ndarray]:
    """Random but well-formed frames (for benchmarks and tests)."""
    t = np.arange(n, dtype=np.float32) / 20.0
    progress = np.cumsum(rng.uniform(0.0, 0.2, n)).astype(np.float32)
    return {
        "image": rng.integers(0, 256, (n, *hw, 3), dtype=np.uint8),
        "steering": rng.uniform(-1, 1, n).astype(np.float32),
        "throttle": rng.uniform(0, 1, n).astype(np.float32),
        "speed": rng.uniform(0, 3, n).astype(np.float32),
        "t": t,
        "pose": rng.normal(size=(n, 3)).astype(np.float32),
        "lateral": rng.normal(0, 0.1, n).astype(np.float32),
        "heading_error": rng.normal(0, 0.1, n).astype(np.float32),
        "progress": progress,
        "lap": (progress // 20.0).astype(np.int32),
        "takeover": (rng.random(n) < 0.05).astype(np.uint8),
    }


def _bench(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    hw = args.size
    rng = np.random.default_rng(args.seed)
    info = {
        "env_id": "bench",
        "camera": {"image_size": list(hw)},
        "control_hz": 20,
        "note": "synthetic data written by `python -m sim.dataset bench`",
    }
    with contextlib.ExitStack() as stack:
        if args.dir:
            root = Path(args.dir)
        else:
            root = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="trackpilot-bench-"))
            )
        writer = DatasetWriter(root, info)
        n_eps = max(1, math.ceil(args.frames / args.episode_frames))
        t0 = time.perf_counter()
        done = 0
        for i in tqdm(range(n_eps), desc="write", unit="ep", disable=not sys.stderr.isatty()):
            n = (
                min(args.episode_frames, args.frames - done)
                if i == n_eps - 1
                else args.episode_frames
            )
            key = f"bench-{i:05d}"
            if not writer.has_episode(key):
                meta = EpisodeMeta("bench", "0" * 8, DIRECTIONS[i % 2], args.seed + i, "synthetic")
                writer.write_episode(key, synthetic_episode(rng, n, hw), meta)
            done += n
        t_write = time.perf_counter() - t0
        ds = open_dataset(root)
        frames = len(ds)
        disk = sum(rec["bytes"] for rec in ds.episodes)
        ds.load_arrays()  # warm the page cache
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            arrays = ds.load_arrays()
            times.append(time.perf_counter() - t0)
            loaded = sum(a.nbytes for a in arrays.values())
            del arrays
        t = float(np.median(times))
        t0 = time.perf_counter()
        ds.load_arrays(verify=True)
        t_verify = time.perf_counter() - t0
        print(f"dataset      {root}{'' if args.dir else ' (temporary)'}")
        print(f"frames       {frames:,} at {hw[0]}x{hw[1]} in {len(ds.episodes)} episodes")
        print(f"disk         {disk / frames:,.0f} bytes/frame ({disk / 1e6:,.1f} MB)")
        print(
            f"write        {frames / t_write:,.0f} frames/s ({disk / 1e6 / t_write:,.0f} MB/s, fsync'd)"
        )
        print(
            f"load_arrays  {frames / t:,.0f} frames/s, {loaded / 1e6 / t:,.0f} MB/s "
            f"(median of {args.runs}, warm cache, min {min(times) * 1e3:.0f} ms, "
            f"max {max(times) * 1e3:.0f} ms)"
        )
        print(f"  verify=True {frames / t_verify:,.0f} frames/s (sha256 of every file)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sim.dataset",
        description="Inspect, check and benchmark trackpilot datasets.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="summary of a dataset")
    p.add_argument("dir", type=Path)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--bins", type=int, default=21, help="steering histogram bins")
    p = sub.add_parser("validate", help="check a dataset; exit 1 on errors")
    p.add_argument("dir", type=Path)
    p.add_argument("--no-checksums", action="store_true", help="skip sha256 verification")
    p = sub.add_parser("bench", help="time load_arrays on a synthetic dataset")
    p.add_argument("--frames", type=int, default=10_000)
    p.add_argument("--size", type=_parse_size, default=(120, 160), help="HxW (default 120x160)")
    p.add_argument("--episode-frames", type=int, default=500)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dir", type=Path, default=None, help="write (and keep) the dataset here")
    args = parser.parse_args(argv)

    if args.command == "bench":
        if args.frames < 1 or args.episode_frames < 1 or args.runs < 1:
            print("error: --frames, --episode-frames and --runs must be >= 1", file=sys.stderr)
            return 2
        return _bench(args)

    root: Path = args.dir
    if not root.is_dir():
        print(f"error: {root}: no such dataset directory", file=sys.stderr)
        return 2
    if not (root / MANIFEST_NAME).is_file():
        print(
            f"error: {root / MANIFEST_NAME}: missing (not a trackpilot dataset?)", file=sys.stderr
        )
        return 2
    if args.command == "validate":
        problems = validate_dataset(
            root, check_checksums=not args.no_checksums, progress=sys.stderr.isatty()
        )
        for line in problems:
            print(line)
        errors = [p for p in problems if not is_warning(p)]
        if errors:
            print(f"FAILED: {len(errors)} problems")
            return 1
        ds = open_dataset(root)
        warn = len(problems) - len(errors)
        print(
            f"OK: {len(ds.episodes)} episodes, {len(ds)} frames"
            + (f" ({warn} warnings)" if warn else "")
        )
        return 0
    try:
        summary = dataset_summary(open_dataset(root), bins=args.bins)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2) if args.json else _format_summary(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
