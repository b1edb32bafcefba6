"""Episode files (safetensors): header parsing and reading straight into numpy buffers.

The header is parsed here rather than by safetensors' loader so that ``load_arrays`` can
read each tensor with one ``readinto()`` into a preallocated output slice (one copy, no
temporaries). Every header is checked against :data:`~sim.dataset.FRAME_FIELDS` before
a byte of data is trusted; nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sim.dataset.format import (
    CONTENT_SHA_KEY,
    EPISODE_METADATA_KEY,
    MAX_EPISODE_FRAMES,
    MAX_HEADER_BYTES,
    MAX_TENSORS,
    DatasetError,
    _image_size_problem,
    _is_int,
    _loads_limited,
)
from sim.dataset.frames import FRAME_FIELDS

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
_ST_NAMES = {dt: name for name, dt in _ST_DTYPES.items()}


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

    @property
    def image_hw(self) -> tuple[int, int]:
        """(H, W) of the episode's images."""
        return tuple(self.tensors["image"].shape[1:3])


def _parse_header(prefix: bytes, read_json: Any, path: Path, size: int) -> _Header:
    """Parse a safetensors header; ``read_json(n)`` returns the n JSON bytes after the prefix."""
    bad = f"{path}: not a valid safetensors file"
    if len(prefix) < 8:
        raise DatasetError(f"{bad}: {size} bytes, too short for a header (truncated?)")
    (n,) = struct.unpack("<Q", prefix)
    if 8 + n > size:
        raise DatasetError(f"{bad}: header length {n} exceeds the file size {size} (truncated?)")
    if n > MAX_HEADER_BYTES:
        raise DatasetError(
            f"{path}: header of {n} bytes exceeds the limit {MAX_HEADER_BYTES} (MAX_HEADER_BYTES)"
        )
    raw_json = read_json(n)
    if len(raw_json) != n:
        raise DatasetError(f"{bad}: header cut short (truncated?)")
    try:
        text = raw_json.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{bad}: header is not JSON ({e})") from None
    h = _loads_limited(text, f"{path}: header")
    if not isinstance(h, dict):
        raise DatasetError(f"{bad}: header is not a JSON object")
    if len(h) > MAX_TENSORS + 1:
        raise DatasetError(
            f"{path}: header lists {len(h)} entries, more than the limit {MAX_TENSORS} "
            "tensors (MAX_TENSORS)"
        )
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


def _read_header_path(path: Path) -> _Header:
    """The header of the episode file at ``path``."""
    with open(path, "rb") as f:
        return _read_header_file(f, path, os.fstat(f.fileno()).st_size)


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
    if n is not None and n > MAX_EPISODE_FRAMES:
        out.append(f"{n} frames exceed the limit {MAX_EPISODE_FRAMES} (MAX_EPISODE_FRAMES)")
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
            elif _image_size_problem(t.shape[1:3]):
                out.append(f"field 'image': {_image_size_problem(t.shape[1:3])}")
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


def _episode_meta(hdr: _Header, path: Path) -> dict[str, Any]:
    """The episode metadata of a header (:data:`EPISODE_METADATA_KEY`), within the JSON limits."""
    raw = hdr.metadata.get(EPISODE_METADATA_KEY)
    if raw is None:
        raise DatasetError(f"{path}: no {EPISODE_METADATA_KEY!r} metadata in the header")
    where = f"{path}: header metadata {EPISODE_METADATA_KEY!r}"
    meta = _loads_limited(raw, where)
    if not isinstance(meta, dict):
        raise DatasetError(f"{where} is not a JSON object")
    return meta


def _serialize_episode(
    arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]
) -> tuple[bytearray, str]:
    """The safetensors file of ``arrays`` with ``meta`` as its episode metadata, plus
    :data:`CONTENT_SHA_KEY`: the sha256 of the data section. Returns (file, that sha256).

    Built in one buffer (one copy of the arrays): the header length does not depend on the
    digest (64 hex digits), so the data goes in first, is hashed, then the header is filled in.
    Tensors are laid out by name; the header is padded with spaces to 8 bytes, as the
    reference writer does.
    """
    names = sorted(arrays)
    entries: dict[str, dict[str, Any]] = {}
    pos = 0
    for name in names:
        a = arrays[name]
        dtype = next((k for k, v in _ST_DTYPES.items() if v == a.dtype), None)
        if dtype is None or not a.flags.c_contiguous:
            raise ValueError(f"field {name!r}: cannot store {a.dtype} (non-contiguous?) arrays")
        entries[name] = {
            "dtype": dtype,
            "shape": list(a.shape),
            "data_offsets": [pos, pos + a.nbytes],
        }
        pos += a.nbytes

    def header(digest: str) -> bytes:
        text = json.dumps({**meta, CONTENT_SHA_KEY: digest})
        raw = json.dumps(
            {"__metadata__": {EPISODE_METADATA_KEY: text}, **entries}, separators=(",", ":")
        ).encode("ascii")
        return raw + b" " * (-len(raw) % 8)

    start = 8 + len(header("0" * 64))
    buf = bytearray(start + pos)
    view = memoryview(buf)
    for name in names:
        begin, end = entries[name]["data_offsets"]
        view[start + begin : start + end] = _byte_view(arrays[name])
    digest = hashlib.sha256(view[start:]).hexdigest()
    head = header(digest)
    assert 8 + len(head) == start
    view[:8] = struct.pack("<Q", len(head))
    view[8:start] = head
    return buf, digest


def _hash_episode_file(f: Any, hdr: _Header, path: Path) -> tuple[str, str]:
    """(sha256 of the whole file, sha256 of its data section) of open file ``f``, in one pass."""
    whole, data = hashlib.sha256(hdr.raw), hashlib.sha256()
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    f.seek(hdr.data_start)
    while n := f.readinto(buf):
        whole.update(view[:n])
        data.update(view[:n])
    return whole.hexdigest(), data.hexdigest()


def _bytes_mismatch(path: Path, size: int, record: Mapping[str, Any]) -> str:
    """The problem of an episode file whose size is not the manifest's."""
    return f"{path}: {size} bytes, manifest says {record['bytes']} (truncated?)"


def _sha256_mismatch(path: Path, digest: str, record: Mapping[str, Any]) -> str:
    """The problem of an episode file whose sha256 is not the manifest's."""
    return (
        f"{path}: sha256 mismatch (file {digest[:16]}..., manifest "
        f"{record['sha256'][:16]}...): the file is corrupt"
    )


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
            raise DatasetError(_bytes_mismatch(path, size, record))
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
                raise DatasetError(_sha256_mismatch(path, h.hexdigest(), record))
        else:
            for name in fields:
                t = hdr.tensors[name]
                _readinto_exact(f, hdr.data_start + t.begin, _byte_view(out[name]), path)
    return out
