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

from sim.dataset.format import DatasetError, _is_int, _reject_constant
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
_MAX_HEADER_BYTES = 100_000_000  # same cap as the safetensors reference implementation


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
