"""The write side: :class:`DatasetWriter`, which appends episodes crash-safely.

An episode file is written to a temp file, fsynced and renamed into place, and only then
listed in the manifest (itself replaced atomically, under a file lock). A recorder killed
at any moment leaves a dataset that opens, with every completed episode intact; the
partial one is absent, at worst leaving a temp file (which the next writer removes) or a
complete but unlisted episode file (which the next writer lists).

A writer never deletes an episode file. Each file carries the sha256 of its own data in its
header (:data:`~sim.dataset.CONTENT_SHA_KEY`), so an unlisted file that is a complete,
intact episode (killed recorder, a manifest restored from a backup or merged) is listed
again; any other unlisted file, and a listed one found damaged by :meth:`DatasetWriter.repair`,
is moved to ``quarantine/``. Only temp files of writers that are no longer running are removed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sim.dataset.episode_file import (
    _episode_meta,
    _hash_episode_file,
    _read_episode_into,
    _read_header_file,
    _read_header_path,
    _serialize_episode,
    _tensor_problems,
)
from sim.dataset.format import (
    CONTENT_SHA_KEY,
    EPISODES_DIRNAME,
    FORMAT_NAME,
    INFO_COMPAT_FIELDS,
    LOCK_NAME,
    MANIFEST_NAME,
    MAX_DECODED_BYTES,
    MAX_EPISODE_FRAMES,
    MAX_EPISODES,
    MAX_MANIFEST_BYTES,
    QUARANTINE_DIRNAME,
    READ_SCHEMA_VERSIONS,
    SCHEMA_VERSION,
    DatasetError,
    EpisodeMeta,
    _check_key,
    _episode_filename,
    _episode_relpath,
    _image_size_problem,
    _info_compat_value,
    _info_image_hw,
    _info_image_size,
    _json_limit_problem,
    _json_roundtrip,
)
from sim.dataset.frames import FRAME_FIELDS
from sim.dataset.manifest import _load_manifest_or_raise, _record_problems
from tracks.common import now_iso
from tracks.fileio import (
    atomic_write_bytes,
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
    if n > MAX_EPISODE_FRAMES:
        raise DatasetError(
            f"{path}: {n} frames exceed the limit {MAX_EPISODE_FRAMES} (MAX_EPISODE_FRAMES)"
        )
    if _image_size_problem(image.shape[1:3]):
        raise DatasetError(f"{path}: {_image_size_problem(image.shape[1:3])}")
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
    nbytes = sum(a.nbytes for a in out.values())
    if nbytes > MAX_DECODED_BYTES:
        raise DatasetError(
            f"{path}: {n} frames of {nbytes} bytes exceed the limit {MAX_DECODED_BYTES} bytes "
            "an episode may decode to (MAX_DECODED_BYTES); split it into shorter episodes"
        )
    if out["takeover"].max() > 1:
        raise DatasetError(f"{path}: takeover must be 0 or 1")
    return out


def _manifest_bytes(manifest: dict, path: Path) -> bytes:
    """``manifest`` as the bytes of ``manifest.json``; :class:`DatasetError` past the limit."""
    text = json.dumps(manifest, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    data = text.encode("utf-8")
    if len(data) > MAX_MANIFEST_BYTES:
        raise DatasetError(
            f"{path}: would grow to {len(data) / 2**20:.1f} MiB, past the limit "
            f"{MAX_MANIFEST_BYTES / 2**20:g} MiB (MAX_MANIFEST_BYTES); record into a new dataset"
        )
    return data


def _strip(message: str, path: Path) -> str:
    """``message`` without a leading ``"<path>: "``."""
    prefix = f"{path}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def _inspect_unlisted(path: Path, key: str, image_hw: tuple[int, int] | None) -> dict | str:
    """The manifest record of the unlisted episode file ``path`` if it is a complete, intact
    episode named ``key`` (its data matches the sha256 in its own header); else why not."""
    try:
        with open(path, "rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            hdr = _read_header_file(f, path, size)
            problems = _tensor_problems(hdr, None, image_hw)
            if problems:
                return problems[0]
            meta = _episode_meta(hdr, path)
            content = meta.get(CONTENT_SHA_KEY)
            if not isinstance(content, str):
                return (
                    f"no {CONTENT_SHA_KEY!r} in its header (written before episode files "
                    "carried one), so its content cannot be verified"
                )
            if meta.get("key") != key:
                return f"its header says key {meta.get('key')!r}, its name says {key!r}"
            frames = hdr.fields["image"].shape[0]
            if meta.get("frames") != frames or meta.get("schema_version") != hdr.version:
                return "its header metadata does not match its tensors or its layout version"
            whole, data = _hash_episode_file(f, hdr, path)
            if data != content:
                return "its data does not match the sha256 in its header: the file is corrupt"
            record = {
                "key": key,
                "file": _episode_relpath(key),
                "sha256": whole,
                "frames": frames,
                "bytes": size,
                **EpisodeMeta.from_record(meta).to_dict(),
            }
    except DatasetError as e:
        return _strip(str(e), path)
    except OSError as e:
        return f"unreadable ({e})"
    except (KeyError, TypeError, ValueError) as e:
        return f"invalid episode metadata in its header ({e})"
    problems = _record_problems(record, 0, raw_files=hdr.version == 1, image_hw=image_hw)
    return record if not problems else problems[0].split(": ", 1)[-1]


class DatasetWriter:
    """Appends episodes to a dataset directory, crash-safely.

    Creates ``root`` (and its manifest) if needed, or opens an existing dataset after checking
    that ``info`` agrees with it on :data:`INFO_COMPAT_FIELDS` (:class:`DatasetError`, a
    ``ValueError``, otherwise; the stored info block is kept). Opening tidies up, under the
    lock, and says what it did in one warning line per kind: temp files of dead writers are
    removed; an unlisted episode file that is complete and intact (the work of a recorder
    killed between writing and listing it, or a manifest restored from a backup) is listed
    again; any other unlisted ``ep-*.safetensors`` is moved to ``quarantine/``, never deleted.
    Several writers, in processes or threads, may append to one dataset at once.

    Episode files are written in format ``schema_version`` (default :data:`SCHEMA_VERSION`,
    compressed; 1 writes raw arrays, for benchmarks and compatibility tests only). Appending
    a version-2 file to a version-1 dataset first upgrades its manifest to version 2 (its
    files stay as they are and are still read; ``python -m sim.dataset migrate`` compresses
    them), with a warning.
    """

    def __init__(
        self, root: str | Path, info: dict, *, schema_version: int = SCHEMA_VERSION
    ) -> None:
        if not isinstance(info, Mapping):
            raise TypeError(f"info must be a dict, got {type(info)}")
        if schema_version not in READ_SCHEMA_VERSIONS:
            raise ValueError(f"schema_version must be one of {READ_SCHEMA_VERSIONS}")
        self.schema_version = schema_version
        self.root = Path(root)
        self.episodes_dir = self.root / EPISODES_DIRNAME
        self.manifest_path = self.root / MANIFEST_NAME
        self._lock_path = self.root / LOCK_NAME
        info = _json_roundtrip(dict(info), "info")
        size = _info_image_size(info)
        if size is not None and (_info_image_hw(info) is None or _image_size_problem(size)):
            raise ValueError(
                f"info image_size must be [height, width] within [1, 1024], got {size}"
            )
        problem = _json_limit_problem(info, base_depth=1)  # info sits at depth 2 in the manifest
        if problem:
            raise ValueError(f"info: {problem}")
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
                    "schema_version": schema_version,
                    "created": now_iso(),
                    "info": info,
                    "episodes": [],
                }
                self._write_manifest(manifest)
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

    def _write_manifest(self, manifest: dict) -> None:
        atomic_write_bytes(self.manifest_path, _manifest_bytes(manifest, self.manifest_path))

    def _quarantine(self, path: Path) -> Path:
        """Move ``path`` into ``quarantine/`` (a fresh name there); returns where it went."""
        qdir = self.root / QUARANTINE_DIRNAME
        qdir.mkdir(exist_ok=True)
        dest, i = qdir / path.name, 1
        while dest.exists():
            dest, i = qdir / f"{path.stem}.{i}{path.suffix}", i + 1
        os.rename(path, dest)
        fsync_dir(qdir)
        fsync_dir(path.parent)
        return dest

    def _dataset_image_hw(self, manifest: dict) -> tuple[int, int] | None:
        """(H, W) of the dataset: declared in info, else that of its first listed episode."""
        hw = _info_image_hw(manifest["info"])
        if hw is None and manifest["episodes"]:
            with contextlib.suppress(OSError, DatasetError, KeyError):
                hw = _read_header_path(self.root / manifest["episodes"][0]["file"]).image_hw
        return hw

    def _cleanup(self, manifest: dict) -> None:
        """Remove dead writers' temp files; list again the unlisted episode files that are
        complete and intact, move the other unlisted ones to quarantine. Call under the lock."""
        removed = remove_stale_temp_files(self.root) + remove_stale_temp_files(self.episodes_dir)
        if removed:
            fsync_dir(self.episodes_dir)
            logger.warning(
                "%s: removed %d temp files of interrupted writes: %s",
                self.root,
                len(removed),
                ", ".join(p.name for p in removed[:5]) + (", ..." if len(removed) > 5 else ""),
            )
        listed = {Path(rec["file"]).name for rec in manifest["episodes"]}
        unlisted = sorted(
            p
            for p in self.episodes_dir.glob("ep-*.safetensors")
            if p.name not in listed and p.is_file()
        )
        if not unlisted:
            return
        image_hw = self._dataset_image_hw(manifest)
        relisted: list[dict] = []
        rejected: list[tuple[Path, str]] = []
        for p in unlisted:
            key = p.name[len("ep-") : -len(".safetensors")]
            found = _inspect_unlisted(p, key, image_hw)
            if isinstance(found, dict):
                relisted.append(found)
                image_hw = image_hw or self._dataset_image_hw({**manifest, "episodes": [found]})
            else:
                rejected.append((p, found))
        if relisted:
            if len(manifest["episodes"]) + len(relisted) > MAX_EPISODES:
                raise DatasetError(
                    f"{self.manifest_path}: listing {len(relisted)} unlisted episodes would "
                    f"pass the limit {MAX_EPISODES} (MAX_EPISODES)"
                )
            manifest["episodes"].extend(relisted)
            self._write_manifest(manifest)
            logger.warning(
                "%s: listed again %d complete, intact episode files that the manifest did not "
                "list: %s",
                self.root,
                len(relisted),
                ", ".join(_episode_filename(r["key"]) for r in relisted[:5])
                + (", ..." if len(relisted) > 5 else ""),
            )
        moved = [(self._quarantine(p), why) for p, why in rejected]
        if moved:
            logger.warning(
                "%s: moved %d unlisted files that are not intact episodes to %s/: %s",
                self.root,
                len(moved),
                QUARANTINE_DIRNAME,
                "; ".join(f"{dest.name} ({why})" for dest, why in moved[:3])
                + ("; ..." if len(moved) > 3 else ""),
            )

    def repair(self, keys: Iterable[str] | None = None) -> list[str]:
        """Unlist the listed episodes (those of ``keys``, default all) whose file is missing
        or damaged, so that a recorder records them again; returns one line per episode
        unlisted (``"<file name>: <problem>"``). A damaged file is moved to ``quarantine/``.

        Reads every file checked whole (its sha256 against the manifest's).
        """
        wanted = None if keys is None else set(keys)
        manifest = self._manifest()
        image_hw = self._dataset_image_hw(manifest)
        damaged: dict[str, tuple[str, str]] = {}
        for rec in manifest["episodes"]:
            if wanted is not None and rec["key"] not in wanted:
                continue
            path = self.root / rec["file"]
            try:
                _read_episode_into(path, rec, None, [], True, image_hw)
            except DatasetError as e:
                damaged[rec["key"]] = (rec["sha256"], _strip(str(e), path))
        if not damaged:
            return []
        lines: list[str] = []
        with self._lock():
            manifest = self._manifest()
            keep = []
            for rec in manifest["episodes"]:
                sha, why = damaged.get(rec["key"], (None, ""))
                if sha != rec["sha256"]:  # intact, or replaced meanwhile
                    keep.append(rec)
                    continue
                path = self.root / rec["file"]
                if path.exists():
                    dest = self._quarantine(path)
                    why += f"; moved to {QUARANTINE_DIRNAME}/{dest.name}"
                lines.append(f"{path.name}: {why}")
            manifest["episodes"] = keep
            self._write_manifest(manifest)
        return lines

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
        verify_written: bool = False,
        header_extra: Mapping[str, Any] | None = None,
        replaces: str | None = None,
    ) -> dict:
        """Write one episode and list it in the manifest; returns its manifest record.

        The episode becomes visible only once it is completely on disk. An existing ``key``
        raises :class:`DatasetError` unless ``overwrite=True`` (the new record takes the old
        one's place in the manifest). ``verify_written``: before it is published, the file on
        disk is read back, its sha256 checked and its fields decoded and compared with
        ``frames``. ``header_extra``: more keys for the file's header metadata (``created``
        kept from an older file, provenance). ``replaces``: the sha256 the listed episode
        ``key`` must still have when it is replaced (else :class:`DatasetError`).
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
            "created": now_iso(),
            **(header_extra or {}),
            "key": key,
            "schema_version": self.schema_version,
            "frames": n,
            **meta.to_dict(),
        }
        data, _ = _serialize_episode(arrays, header_meta, self.schema_version)
        if not verify_written:
            del arrays
        record = {
            "key": key,
            "file": rel,
            "sha256": sha256_bytes(data),
            "frames": n,
            "bytes": len(data),
            **meta.to_dict(),
        }
        problems = _record_problems(record, 0, raw_files=self.schema_version == 1)
        if problems:
            raise DatasetError(f"{final}: {problems[0].split(': ', 1)[-1]}")
        tmp = write_temp_file(final, data)
        del data
        try:
            if verify_written:
                self._verify_written(tmp, record, arrays)
                del arrays
            with self._lock():
                manifest = self._manifest()
                old = [i for i, rec in enumerate(manifest["episodes"]) if rec["key"] == key]
                if old and not overwrite:
                    raise DatasetError(
                        f"{final}: episode {key!r} exists (pass overwrite=True to replace it)"
                    )
                if replaces is not None and (
                    not old or manifest["episodes"][old[0]]["sha256"] != replaces
                ):
                    raise DatasetError(
                        f"{final}: episode {key!r} changed or went while it was being "
                        "rewritten; nothing replaced"
                    )
                if not old and len(manifest["episodes"]) >= MAX_EPISODES:
                    raise DatasetError(
                        f"{self.manifest_path}: holds {MAX_EPISODES} episodes, the limit "
                        "(MAX_EPISODES); record into a new dataset"
                    )
                place = old[0] if old else len(manifest["episodes"])
                if old:
                    del manifest["episodes"][place]
                unlisted = _manifest_bytes(manifest, self.manifest_path) if old else None
                manifest["episodes"].insert(place, record)
                self._upgrade(manifest)
                listed = _manifest_bytes(manifest, self.manifest_path)  # refuses past the limit
                if unlisted is not None:
                    # unlist first: a crash between the two manifest writes leaves whichever
                    # file is in place unlisted (the next writer lists it again), never a
                    # listed file with the wrong checksum
                    atomic_write_bytes(self.manifest_path, unlisted)
                os.replace(tmp, final)
                fsync_dir(self.episodes_dir)
                atomic_write_bytes(self.manifest_path, listed)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        logger.debug("wrote %s (%d frames)", final, n)
        return dict(record)

    def upgrade_manifest(self) -> None:
        """Raise the manifest's schema version to this writer's (its files stay readable)."""
        with self._lock():
            manifest = self._manifest()
            if manifest["schema_version"] < self.schema_version:
                logger.info(
                    "%s: schema_version %d -> %d",
                    self.manifest_path,
                    manifest["schema_version"],
                    self.schema_version,
                )
                manifest["schema_version"] = self.schema_version
                self._write_manifest(manifest)

    def _upgrade(self, manifest: dict) -> None:
        """Raise ``manifest``'s schema version to that of the files this writer writes."""
        if manifest["schema_version"] < self.schema_version:
            logger.warning(
                "%s: upgraded from schema_version %d to %d to append compressed episodes; "
                "its %d older episode files are kept as they are (`python -m sim.dataset "
                "migrate %s` compresses them)",
                self.manifest_path,
                manifest["schema_version"],
                self.schema_version,
                len(manifest["episodes"]) - 1,
                self.root,
            )
            manifest["schema_version"] = self.schema_version

    def _verify_written(self, path: Path, record: dict, arrays: Mapping[str, np.ndarray]) -> None:
        """The file at ``path`` has ``record``'s sha256 and decodes to exactly ``arrays``."""
        got = _read_episode_into(path, record, None, list(arrays), True, self._image_hw)
        for name, a in arrays.items():
            if not np.array_equal(got[name], a):
                raise DatasetError(
                    f"{self.root / record['file']}: field {name!r} read back differs from what "
                    "was written; nothing replaced"
                )
