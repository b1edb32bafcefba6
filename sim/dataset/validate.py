"""Checking a whole dataset: :func:`validate_dataset` lists every problem, one line each."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as st_load

from sim.dataset.episode_file import (
    _bytes_mismatch,
    _decode_bytes,
    _episode_meta,
    _read_header_bytes,
    _sha256_mismatch,
    _tensor_problems,
)
from sim.dataset.format import (
    EPISODES_DIRNAME,
    QUARANTINE_DIRNAME,
    DatasetError,
    _info_image_hw,
)
from sim.dataset.frames import LABEL_FIELDS
from sim.dataset.manifest import _read_manifest
from sim.dataset.writer import _inspect_unlisted
from tracks.fileio import is_temp_file, sha256_bytes
from tracks.progress import progress_bar

__all__ = ["validate_dataset"]


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

    Lines starting with ``"warning:"`` (see :func:`is_warning`) are files that are not part of
    the dataset, which the next :class:`DatasetWriter` tidies up: temp files of interrupted
    writes (removed), unlisted episode files (listed again when complete and intact, else
    moved to ``quarantine/``).
    """
    root = Path(root)
    manifest, problems = _read_manifest(root)
    if manifest is None:
        return problems
    image_hw = _info_image_hw(manifest["info"])
    records = manifest["episodes"]
    if progress:
        records = progress_bar(records, desc="validate", unit="ep")
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
            problems.append(_bytes_mismatch(path, len(data), rec))
        if check_checksums:
            digest = sha256_bytes(data)
            if digest != rec["sha256"]:
                problems.append(_sha256_mismatch(path, digest, rec))
        try:
            hdr = _read_header_bytes(data, path)
            st_load(data)  # the reference parser must accept it too
        except DatasetError as e:
            problems.append(str(e))
            continue
        except (SafetensorError, ValueError, TypeError) as e:
            problems.append(f"{path}: unreadable safetensors ({e})")
            continue
        tensor_problems = _tensor_problems(hdr, rec["frames"], image_hw)
        problems.extend(f"{path}: {p}" for p in tensor_problems)
        if "image" in hdr.fields and image_hw is None and not tensor_problems:
            image_hw = hdr.image_hw  # first episode sets it
        arrays: dict = {}
        if not tensor_problems:  # decoded only once its fields are what they should be
            try:
                arrays = _decode_bytes(data, hdr, path)
            except DatasetError as e:
                problems.append(str(e))
        problems.extend(f"{path}: {p}" for p in _content_problems(arrays))
        try:
            emeta = _episode_meta(hdr, path)
        except DatasetError as e:
            problems.append(str(e))
        else:
            if emeta.get("key") != rec["key"]:
                problems.append(
                    f"{path}: header says key {emeta.get('key')!r}, manifest says {rec['key']!r}"
                )
            if emeta.get("schema_version", hdr.version) != hdr.version:
                problems.append(
                    f"{path}: header says schema_version {emeta.get('schema_version')!r}, its "
                    f"layout is version {hdr.version}"
                )
            if hdr.version > manifest["schema_version"]:
                problems.append(
                    f"{path}: a version-{hdr.version} file in a version-"
                    f"{manifest['schema_version']} dataset"
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
                problems.append(
                    f"warning: {p}: not listed in the manifest{_orphan_fate(p, image_hw)}"
                )
    return problems


def _orphan_fate(path: Path, image_hw: tuple[int, int] | None) -> str:
    """What the next writer does with the unlisted file ``path`` (a clause for a warning)."""
    if not (path.name.startswith("ep-") and path.name.endswith(".safetensors")):
        return ""
    key = path.name[len("ep-") : -len(".safetensors")]
    found = _inspect_unlisted(path, key, image_hw)
    if isinstance(found, dict):
        return "; it is a complete, intact episode: the next writer lists it again"
    return f"; not an intact episode ({found}): the next writer moves it to {QUARANTINE_DIRNAME}/"
