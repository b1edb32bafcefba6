"""The write side: :class:`DatasetWriter`, which appends episodes crash-safely.

An episode file is written to a temp file, fsynced and renamed into place, and only then
listed in the manifest (itself replaced atomically, under a file lock). A recorder killed
at any moment leaves a dataset that opens, with every completed episode intact; the
partial one is absent, at worst leaving a temp/orphan file that the next writer removes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save

from sim.dataset.episode_file import _read_header_path
from sim.dataset.format import (
    EPISODE_METADATA_KEY,
    EPISODES_DIRNAME,
    FORMAT_NAME,
    INFO_COMPAT_FIELDS,
    LOCK_NAME,
    MANIFEST_NAME,
    SCHEMA_VERSION,
    DatasetError,
    EpisodeMeta,
    _check_key,
    _episode_relpath,
    _info_compat_value,
    _info_image_hw,
    _info_image_size,
    _json_roundtrip,
)
from sim.dataset.frames import FRAME_FIELDS
from sim.dataset.manifest import _load_manifest_or_raise
from tracks.common import now_iso
from tracks.fileio import (
    atomic_write_json,
    file_lock,
    fsync_dir,
    is_temp_file,
    remove_stale_temp_files,
    sha256_bytes,
    write_temp_file,
)

__all__ = ["DatasetWriter"]

logger = logging.getLogger("sim.dataset")  # the package's logger, as before the split


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
                    "created": now_iso(),
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
                self._image_hw = _read_header_path(self.root / recs[0]["file"]).image_hw
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
            "created": now_iso(),
            **meta.to_dict(),
        }
        data = save(arrays, metadata={EPISODE_METADATA_KEY: json.dumps(header_meta)})
        del arrays
        record = {
            "key": key,
            "file": rel,
            "sha256": sha256_bytes(data),
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
