"""Checking a whole dataset: :func:`validate_dataset` lists every problem, one line each."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from tqdm import tqdm

from sim.dataset.episode_file import (
    _bytes_mismatch,
    _read_header_bytes,
    _sha256_mismatch,
    _tensor_problems,
)
from sim.dataset.format import (
    EPISODE_METADATA_KEY,
    EPISODES_DIRNAME,
    MANIFEST_NAME,
    DatasetError,
    _info_image_hw,
    _info_image_size,
)
from sim.dataset.frames import LABEL_FIELDS
from sim.dataset.manifest import _read_manifest
from tracks.fileio import is_temp_file, sha256_bytes

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

    Lines starting with ``"warning:"`` (see :func:`is_warning`) are leftovers of an interrupted
    recorder (temp and orphan files): harmless, and removed by the next :class:`DatasetWriter`.
    """
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
            problems.append(_bytes_mismatch(path, len(data), rec))
        if check_checksums:
            digest = sha256_bytes(data)
            if digest != rec["sha256"]:
                problems.append(_sha256_mismatch(path, digest, rec))
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
            image_hw = hdr.image_hw  # first episode sets it
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
