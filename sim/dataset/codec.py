"""Compressed frame fields (episode files of format version 2): zstd over chunks of frames.

Every frame field of a version-2 episode file is stored as two safetensors tensors:

- ``<field>.zst`` (``U8``): one zstd frame per chunk of ``chunk_frames`` consecutive frames,
  concatenated; each zstd frame states its decoded size and carries zstd's content checksum;
- ``<field>.zst.chunks`` (``U64``): the compressed size of each chunk;

and the header metadata :data:`~sim.dataset.ENCODING_METADATA_KEY` states, per field, the
decoded dtype and shape and ``chunk_frames``. The file stays a plain safetensors file (any
safetensors reader opens it); the frames are lossless.

Why zstd level 1 over raw frames, in chunks of about 2 MiB (measured on ``sim.record``
datasets at 60x80 and 120x160 with zstd 1.5 through python-zstandard, README "Measured
figures"): the renders are flat-coloured, so plain zstd stores a 120x160 frame in ~0.6 KB and
a 60x80 one in ~0.2 KB (70-92x smaller) and decodes 115,000-142,000 frames/s of 120x160 on
one core. Level 3 is no smaller here; level 9 saves 7 % (120x160) to 32 % (60x80) but
compresses 6-7x slower, in the recorder's workers; a horizontal delta filter saves ~10 %
but undoing it (a cumulative sum) caps loading at ~16,000 frames/s; a frame-to-frame delta
saves at most 8 % and needs the same kind of undoing; a planar (channel-first) layout is
larger. Chunks let a reader decode straight into its output, one bounded piece at a time.

Reading is bounded before anything is decompressed: the decoded size a header claims is
checked against :data:`~sim.dataset.MAX_DECODED_BYTES` and :data:`MAX_CHUNK_BYTES`, every
zstd frame must state exactly the size its chunk decodes to, and it is decoded into a buffer
of exactly that size. Damage is one :class:`~sim.dataset.DatasetError` line.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import zstandard

from sim.dataset.format import DatasetError

__all__ = ["CHUNK_BYTES", "CODEC", "LEVEL", "MAX_CHUNK_BYTES"]

#: The codec of version-2 episode files.
CODEC = "zstd"
#: zstd level the writer uses (see the module docstring for the measurements behind it).
LEVEL = 1
#: About how many decoded bytes one chunk holds (at least one frame).
CHUNK_BYTES = 2 << 20
#: Most bytes one chunk may decode to, unless it is a single frame (whose size the image
#: limits bound): a reader never decodes more than this in one piece.
MAX_CHUNK_BYTES = 64 << 20
#: Largest zstd window a reader accepts (the writer's chunks need at most CHUNK_BYTES).
_MAX_WINDOW_BYTES = 1 << 27

#: Suffixes of the two tensors that hold a compressed field.
DATA_SUFFIX = ".zst"
CHUNKS_SUFFIX = ".zst.chunks"

_local = threading.local()


def chunk_frames_for(frame_bytes: int) -> int:
    """Frames per chunk for a field of ``frame_bytes`` bytes per frame."""
    return max(1, CHUNK_BYTES // max(1, frame_bytes))


def encode_field(a: np.ndarray, level: int = LEVEL) -> tuple[bytes, np.ndarray, int]:
    """``(payload, chunk sizes, chunk_frames)`` of the C-contiguous array ``a`` (frames first)."""
    n = a.shape[0]
    frame_bytes = a.nbytes // n if n else a.itemsize
    k = chunk_frames_for(frame_bytes)
    cctx = zstandard.ZstdCompressor(level=level, write_checksum=True, write_content_size=True)
    parts = [cctx.compress(a[i : i + k]) for i in range(0, n, k)]
    sizes = np.array([len(p) for p in parts], dtype="<u8")
    return b"".join(parts), sizes, k


def _decompressor() -> Any:
    """This thread's zstd decompressor (they are not thread-safe; creating one costs)."""
    d = getattr(_local, "dctx", None)
    if d is None:
        d = _local.dctx = zstandard.ZstdDecompressor(max_window_size=_MAX_WINDOW_BYTES)
    return d


def decode_field_into(
    payload: memoryview, sizes: np.ndarray, chunk_frames: int, dest: np.ndarray, where: str
) -> None:
    """Decode a field's ``payload`` (chunks of ``sizes`` bytes) into C-contiguous ``dest``.

    ``where`` prefixes every error (the file and the field). The header has been checked
    (sizes of the right count, decoded sizes within the limits); here the data is: each chunk
    must be one zstd frame that states the decoded size its frames have, decode to exactly
    that many bytes and pass zstd's checksum.
    """
    n = dest.shape[0]
    frame_bytes = dest.nbytes // n if n else 0
    if int(sizes.sum(dtype=np.uint64)) != len(payload) or (sizes.size and sizes.min() == 0):
        raise DatasetError(
            f"{where}: chunk sizes {int(sizes.sum(dtype=np.uint64))} bytes in all do not "
            f"match the {len(payload)} bytes of compressed data (the file is damaged)"
        )
    out = memoryview(dest.reshape(-1).view(np.uint8))
    dctx = _decompressor()
    pos = done = 0
    for i, size in enumerate(sizes.tolist()):
        chunk = payload[pos : pos + size]
        pos += size
        want = min(chunk_frames, n - i * chunk_frames) * frame_bytes
        bad = f"{where}: compressed chunk {i} of {len(sizes)}"
        try:
            params = zstandard.get_frame_parameters(chunk)
        except zstandard.ZstdError as e:
            raise DatasetError(f"{bad} is not zstd data ({e}): the file is damaged") from None
        if params.content_size != want:
            raise DatasetError(
                f"{bad} claims {params.content_size} decoded bytes, its frames need {want} "
                "(the file is damaged)"
            )
        if params.dict_id:
            raise DatasetError(f"{bad} needs a zstd dictionary, which this format never uses")
        view = out[done : done + want]
        got = 0
        try:
            with dctx.stream_reader(chunk, read_across_frames=False) as r:
                while got < want:
                    k = r.readinto(view[got:])
                    if not k:
                        break
                    got += k
                extra = r.read(1)  # the end of the frame: zstd checks its checksum here
        except zstandard.ZstdError as e:
            raise DatasetError(
                f"{bad}: corrupt compressed data ({e}): the file is damaged"
            ) from None
        if got != want or extra:
            raise DatasetError(
                f"{bad} decodes to {'more' if extra else got} bytes, not {want} "
                "(truncated or damaged)"
            )
        done += want
