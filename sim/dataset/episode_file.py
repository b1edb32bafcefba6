"""Episode files (safetensors): header parsing and reading straight into numpy buffers.

Two layouts, told apart by the header: version 1 stores each frame field as a raw tensor of
its own name; version 2 (what the writer writes) stores each field zstd-compressed in chunks
(:mod:`~sim.dataset.codec`), described by :data:`~sim.dataset.ENCODING_METADATA_KEY`. Both
parse to the same :class:`_Field` table, so everything above this module sees frame fields
with their decoded dtype and shape, whatever the layout.

The header is parsed here rather than by safetensors' loader so that ``load_arrays`` can
read (version 1) or decode (version 2) each field straight into a preallocated output slice.
Every header is checked against :data:`~sim.dataset.FRAME_FIELDS` and the limits before a
byte of data is trusted or decompressed; nothing is ever unpickled.
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

from sim.dataset import codec
from sim.dataset.format import (
    CONTENT_SHA_KEY,
    ENCODING_METADATA_KEY,
    EPISODE_METADATA_KEY,
    MAX_DECODED_BYTES,
    MAX_EPISODE_FRAMES,
    MAX_HEADER_BYTES,
    MAX_TENSORS,
    SCHEMA_VERSION,
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
class _Field:
    """One frame field as stored: its decoded dtype and shape, and where its bytes are."""

    dtype: np.dtype
    shape: tuple[int, ...]
    data: _Tensor  # raw (version 1): the array's bytes; zstd (version 2): the chunks
    chunks: _Tensor | None = None  # version 2: the compressed size of each chunk (U64)
    chunk_frames: int = 0  # version 2: frames per chunk (the last may hold fewer)


@dataclass(frozen=True)
class _Header:
    raw: bytes  # the first data_start bytes of the file (length prefix + JSON)
    data_start: int
    tensors: dict[str, _Tensor]
    metadata: dict[str, str]
    version: int  # file layout: 1 raw tensors, 2 compressed (codec)
    fields: dict[str, _Field]  # frame fields by name, whatever the layout

    @property
    def image_hw(self) -> tuple[int, int]:
        """(H, W) of the episode's images."""
        return tuple(self.fields["image"].shape[1:3])


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
    if ENCODING_METADATA_KEY in metadata:
        version, fields = 2, _encoded_fields(metadata[ENCODING_METADATA_KEY], tensors, path)
    else:
        version = 1
        fields = {name: _Field(t.dtype, t.shape, t) for name, t in tensors.items()}
    return _Header(prefix + raw_json, data_start, tensors, metadata, version, fields)


def _encoded_fields(text: str, tensors: dict[str, _Tensor], path: Path) -> dict[str, _Field]:
    """The fields of a version-2 header, checked against its tensors and the limits (the
    decoded sizes it claims) before anything is decompressed."""
    where = f"{path}: header metadata {ENCODING_METADATA_KEY!r}"
    enc = _loads_limited(text, where)
    if not isinstance(enc, dict) or not isinstance(enc.get("fields"), dict):
        raise DatasetError(f"{where} is not an object with 'fields'")
    if enc.get("codec") != codec.CODEC:
        raise DatasetError(f"{where}: codec {enc.get('codec')!r}, this trackpilot reads 'zstd'")
    fields: dict[str, _Field] = {}
    used: set[str] = set()
    total = 0
    for name, spec in enc["fields"].items():
        try:
            dtype = _ST_DTYPES[spec["dtype"]]
            shape = tuple(spec["shape"])
            k = spec["chunk_frames"]
            if not shape or not all(_is_int(d) and d >= 0 for d in (*shape, k)) or k < 1:
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise DatasetError(f"{where}: malformed entry for field {name!r}") from None
        frame_bytes = math.prod(shape[1:]) * dtype.itemsize
        total += shape[0] * frame_bytes
        if total > MAX_DECODED_BYTES or frame_bytes > MAX_DECODED_BYTES:
            raise DatasetError(
                f"{path}: its fields decode to more than the limit {MAX_DECODED_BYTES} bytes "
                "(MAX_DECODED_BYTES)"
            )
        if k > 1 and k * frame_bytes > codec.MAX_CHUNK_BYTES:
            raise DatasetError(
                f"{where}: field {name!r} has chunks of {k * frame_bytes} decoded bytes, more "
                f"than the limit {codec.MAX_CHUNK_BYTES} (MAX_CHUNK_BYTES)"
            )
        data_name, chunks_name = name + codec.DATA_SUFFIX, name + codec.CHUNKS_SUFFIX
        data, chunks = tensors.get(data_name), tensors.get(chunks_name)
        n_chunks = -(-shape[0] // k)
        if data is None or data.dtype != np.uint8 or len(data.shape) != 1:
            raise DatasetError(f"{where}: field {name!r} has no U8 tensor {data_name!r}")
        if chunks is None or chunks.dtype != _ST_DTYPES["U64"] or chunks.shape != (n_chunks,):
            raise DatasetError(
                f"{where}: field {name!r} needs a U64 tensor {chunks_name!r} of {n_chunks} "
                "chunk sizes"
            )
        used.update((data_name, chunks_name))
        fields[name] = _Field(dtype, shape, data, chunks, k)
    stray = sorted(set(tensors) - used)
    if stray:
        raise DatasetError(f"{where}: tensors {stray[:5]} belong to no field")
    return fields


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
    """Mismatches between an episode's fields and FRAME_FIELDS (without the file prefix)."""
    out: list[str] = []
    missing = [k for k in FRAME_FIELDS if k not in hdr.fields]
    unexpected = sorted(k for k in hdr.fields if k not in FRAME_FIELDS)
    if missing:
        out.append(f"missing fields {missing}")
    if unexpected:
        out.append(f"unexpected fields {unexpected}")
    img = hdr.fields.get("image")
    n = img.shape[0] if img is not None and img.shape else None
    if n is None:
        n = next((t.shape[0] for t in hdr.fields.values() if t.shape), None)
    if n is not None and n > MAX_EPISODE_FRAMES:
        out.append(f"{n} frames exceed the limit {MAX_EPISODE_FRAMES} (MAX_EPISODE_FRAMES)")
    if frames is not None and n is not None and n != frames:
        out.append(f"{n} frames in the file, manifest says {frames}")
    for name, (dtype, trailing) in FRAME_FIELDS.items():
        t = hdr.fields.get(name)
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
    arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], version: int = SCHEMA_VERSION
) -> tuple[bytearray, str]:
    """The episode file of ``arrays`` with ``meta`` as its episode metadata, plus
    :data:`CONTENT_SHA_KEY`: the sha256 of the data section. Returns (file, that sha256).

    ``version`` 2 (the default) compresses every field (:func:`codec.encode_field`); version
    1 stores the raw arrays (kept for benchmarks and compatibility tests). Built in one
    buffer: the header length does not depend on the digest (64 hex digits), so the data
    goes in first, is hashed, then the header is filled in. Tensors are laid out by name; the
    header is padded with spaces to 8 bytes, as the reference writer does.
    """
    metadata: dict[str, str] = {}
    if version == 2:
        tensors: dict[str, Any] = {}
        encoding: dict[str, Any] = {}
        for name in sorted(arrays):
            a = arrays[name]
            dtype = _st_dtype(a, name)
            payload, sizes, k = codec.encode_field(a)
            tensors[name + codec.DATA_SUFFIX] = np.frombuffer(payload, np.uint8)
            tensors[name + codec.CHUNKS_SUFFIX] = sizes
            encoding[name] = {"dtype": dtype, "shape": list(a.shape), "chunk_frames": k}
        metadata[ENCODING_METADATA_KEY] = json.dumps({"codec": codec.CODEC, "fields": encoding})
    elif version == 1:
        tensors = dict(arrays)
    else:
        raise ValueError(f"cannot write episode files of version {version!r}")
    names = sorted(tensors)
    entries: dict[str, dict[str, Any]] = {}
    pos = 0
    for name in names:
        a = tensors[name]
        entries[name] = {
            "dtype": _st_dtype(a, name),
            "shape": list(a.shape),
            "data_offsets": [pos, pos + a.nbytes],
        }
        pos += a.nbytes

    def header(digest: str) -> bytes:
        text = json.dumps({**meta, CONTENT_SHA_KEY: digest})
        raw = json.dumps(
            {"__metadata__": {EPISODE_METADATA_KEY: text, **metadata}, **entries},
            separators=(",", ":"),
        ).encode("ascii")
        return raw + b" " * (-len(raw) % 8)

    start = 8 + len(header("0" * 64))
    buf = bytearray(start + pos)
    view = memoryview(buf)
    for name in names:
        begin, end = entries[name]["data_offsets"]
        view[start + begin : start + end] = _byte_view(tensors[name])
    digest = hashlib.sha256(view[start:]).hexdigest()
    head = header(digest)
    assert 8 + len(head) == start
    view[:8] = struct.pack("<Q", len(head))
    view[8:start] = head
    return buf, digest


def _st_dtype(a: np.ndarray, name: str) -> str:
    """The safetensors dtype name of ``a``; ValueError for what the format cannot hold."""
    dtype = _ST_NAMES.get(a.dtype)
    if dtype is None or not a.flags.c_contiguous:
        raise ValueError(f"field {name!r}: cannot store {a.dtype} (non-contiguous?) arrays")
    return dtype


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

    With ``verify`` the whole file is read in order and its sha256 compared to the record
    (before anything is decompressed). ``on_header(hdr)`` may return ``dests`` lazily
    (load_arrays sizes its outputs from the first header when the info block does not give
    the image size).
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
            t = hdr.fields[name]
            out[name] = np.empty(t.shape, t.dtype) if dests is None else dests[name]
        if hdr.version == 2:
            _read_encoded(f, hdr, record, out, verify, path)
        elif verify:
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


def _read_encoded(
    f: Any,
    hdr: _Header,
    record: Mapping[str, Any] | None,
    out: Mapping[str, np.ndarray],
    verify: bool,
    path: Path,
) -> None:
    """Decode the fields ``out`` names of version-2 file ``f`` into ``out``. With ``verify``
    the whole data section is read and its sha256 checked against ``record`` first."""
    if verify:
        data = memoryview(bytearray(max((t.end for t in hdr.tensors.values()), default=0)))
        _readinto_exact(f, hdr.data_start, data, path)
        digest = hashlib.sha256(hdr.raw)
        digest.update(data)
        if record is not None and digest.hexdigest() != record["sha256"]:
            raise DatasetError(_sha256_mismatch(path, digest.hexdigest(), record))
        _decode_fields(hdr, lambda t: data[t.begin : t.end], out, path)
        return

    def read(t: _Tensor) -> memoryview:
        buf = memoryview(bytearray(t.end - t.begin))
        _readinto_exact(f, hdr.data_start + t.begin, buf, path)
        return buf

    _decode_fields(hdr, read, out, path)


def _decode_fields(hdr: _Header, data_of: Any, out: Mapping[str, np.ndarray], path: Path) -> None:
    """Decode each field of ``out`` (version 2); ``data_of(tensor)`` gives a tensor's bytes."""
    for name, dest in out.items():
        fld = hdr.fields[name]
        sizes = np.frombuffer(data_of(fld.chunks), dtype="<u8")
        codec.decode_field_into(
            data_of(fld.data), sizes, fld.chunk_frames, dest, f"{path}: field {name!r}"
        )


def _decode_bytes(data: bytes | memoryview, hdr: _Header, path: Path) -> dict[str, np.ndarray]:
    """Every frame field of the whole episode file ``data`` (either version), decoded."""
    view = memoryview(data)[hdr.data_start :]
    if hdr.version == 1:
        return {
            name: np.frombuffer(view[t.data.begin : t.data.end], t.dtype).reshape(t.shape)
            for name, t in hdr.fields.items()
        }
    out = {name: np.empty(t.shape, t.dtype) for name, t in hdr.fields.items()}
    _decode_fields(hdr, lambda t: view[t.begin : t.end], out, path)
    return out
