"""The read side: :func:`open_dataset` and :class:`Dataset`."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from sim.dataset.episode_file import _Header, _read_episode_into
from sim.dataset.format import DatasetError, EpisodeMeta, _info_image_hw, _is_int
from sim.dataset.frames import FRAME_FIELDS
from sim.dataset.manifest import _load_manifest_or_raise

__all__ = ["LOAD_WORKERS", "Dataset", "open_dataset"]

#: Threads :meth:`Dataset.load_arrays` reads files with by default: one per core, at most 8.
LOAD_WORKERS = max(1, min(8, os.cpu_count() or 1))


class Dataset:
    """A dataset opened for reading (see :func:`open_dataset`).

    ``episodes`` are the manifest records, in recording order; ``len(ds)`` is the number of
    frames. Episode ``i`` covers frames ``offsets[i]:offsets[i+1]`` of :meth:`load_arrays`.

    Every load checks each file's sha256 against the manifest unless ``verify=False``: a
    damaged file is a :class:`DatasetError` naming it (one line), never wrong frames.
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
        return self._read(rec, None, names, verify, self.image_size)

    def _read(self, rec: dict, *args) -> dict[str, np.ndarray]:
        """``_read_episode_into`` for record ``rec``; its errors say how to find the others."""
        try:
            return _read_episode_into(self.root / rec["file"], rec, *args)
        except DatasetError as e:
            raise DatasetError(
                f"{e}; `python -m sim.dataset validate {self.root}` lists every damaged file "
                "(re-running the sim.record command that recorded them records them again)"
            ) from None

    def load_arrays(
        self,
        fields: Sequence[str] | None = None,
        episodes: Sequence[int] | None = None,
        verify: bool = True,
        *,
        workers: int | None = None,
        on_episode: Callable[[int], None] | None = None,
    ) -> dict[str, np.ndarray]:
        """Concatenated arrays of ``fields`` (default all) over ``episodes`` (default all).

        Adds ``"episode"`` (int32 index into :attr:`episodes`) and ``"frame"`` (int32 index
        within the episode). Outputs are preallocated from the manifest's frame counts and each
        file's tensors are read straight into their slices. With ``verify`` (the default) each
        file is read whole and its sha256 checked against the manifest, even when ``fields``
        are only labels; ``verify=False`` reads only ``fields`` and trusts the bytes.

        Files are read by ``workers`` threads (default: up to :data:`LOAD_WORKERS`, one per
        core; reading and sha256 release the GIL). A damaged file raises its
        :class:`DatasetError`, the first in ``episodes`` order. ``on_episode(j)`` is called
        (from a worker thread) once the ``j``-th episode of ``episodes`` is in.
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
                    hw = image_hw or (hdr.image_hw if hdr else (0, 0))
                    trailing = (*hw, 3)
                out[name] = np.empty((total, *trailing), dtype)

        def read(j: int) -> None:
            a, b = int(starts[j]), int(starts[j + 1])

            def dests(hdr: _Header) -> dict[str, np.ndarray]:
                if not out:
                    allocate(hdr)
                return {name: out[name][a:b] for name in names}

            # the image size of later episodes is checked against the first one's
            hw = image_hw
            if hw is None and "image" in out:
                hw = tuple(out["image"].shape[1:3])
            self._read(self.episodes[idx[j]], None, names, verify, hw, dests)
            if on_episode is not None:
                on_episode(j)

        first = 0
        if image_hw is not None or "image" not in names or not idx:
            allocate(None)
        else:
            read(0)  # the first file sizes the outputs
            first = 1
        n = min(LOAD_WORKERS if workers is None else max(1, workers), len(idx) - first)
        if n <= 1:
            for j in range(first, len(idx)):
                read(j)
        else:
            with ThreadPoolExecutor(n, thread_name_prefix="load_arrays") as pool:
                futures = [pool.submit(read, j) for j in range(first, len(idx))]
                try:
                    for f in futures:  # in order: the first damaged episode is reported
                        f.result()
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise
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
