"""Reading and checking ``manifest.json``, the dataset's only index."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from sim.dataset.format import (
    _KEY_RE,
    _SHA_RE,
    DIRECTIONS,
    ENDINGS,
    FORMAT_NAME,
    MANIFEST_NAME,
    MAX_DECODED_BYTES,
    MAX_EPISODE_FRAMES,
    MAX_EPISODES,
    MAX_MANIFEST_BYTES,
    MAX_NAME_CHARS,
    READ_SCHEMA_VERSIONS,
    DatasetError,
    _episode_relpath,
    _image_size_problem,
    _info_image_hw,
    _info_image_size,
    _is_int,
    _loads_limited,
    _read_bounded,
)
from sim.dataset.frames import FRAME_FIELDS
from sim.dataset.tub_format import tub_hint

#: The fewest bytes a frame can take in a raw (version 1) episode file (a 1x1 image and the
#: labels): a record of a version-1 dataset claiming more frames than its bytes can hold is
#: refused before anything is allocated for them. (Compressed files are bounded by what
#: their frames decode to: :data:`MAX_DECODED_BYTES`.)
_MIN_FRAME_BYTES = sum(
    dt.itemsize * (3 if trailing is None else math.prod(trailing))
    for dt, trailing in FRAME_FIELDS.values()
)


def _record_problems(
    rec: Any, i: int, raw_files: bool = False, image_hw: tuple[int, int] | None = None
) -> list[str]:
    """Problems with manifest record ``i`` (without the file prefix). ``raw_files``: its file
    stores raw arrays (version 1), so its size bounds its frames; ``image_hw``: the dataset's
    image size, which bounds what its frames decode to."""
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
    frames, nbytes = rec.get("frames"), rec.get("bytes")
    if _is_int(frames) and frames > MAX_EPISODE_FRAMES:
        out.append(
            f"{where}: {frames} frames exceed the limit {MAX_EPISODE_FRAMES} (MAX_EPISODE_FRAMES)"
        )
    elif raw_files and _is_int(frames) and _is_int(nbytes) and frames * _MIN_FRAME_BYTES > nbytes:
        out.append(f"{where}: {frames} frames cannot fit in a file of {nbytes} bytes")
    elif (
        _is_int(frames) and image_hw and frames * image_hw[0] * image_hw[1] * 3 > MAX_DECODED_BYTES
    ):
        out.append(
            f"{where}: {frames} frames of {image_hw[0]}x{image_hw[1]} decode to more than the "
            f"limit {MAX_DECODED_BYTES} bytes (MAX_DECODED_BYTES)"
        )
    for name in ("track_id", "track_hash", "source"):
        v = rec.get(name)
        if not isinstance(v, str):
            out.append(f"{where}: {name} is {v!r}, expected a string")
        elif len(v) > MAX_NAME_CHARS:
            out.append(
                f"{where}: {name} has {len(v)} characters, more than the limit "
                f"{MAX_NAME_CHARS} (MAX_NAME_CHARS)"
            )
    if rec.get("direction") not in DIRECTIONS:
        out.append(f"{where}: direction is {rec.get('direction')!r}, expected 'ccw' or 'cw'")
    if rec.get("expert") is not None and not isinstance(rec.get("expert"), dict):
        out.append(f"{where}: expert must be an object or null")
    if not isinstance(rec.get("extra", {}), dict):
        out.append(f"{where}: extra must be an object")
    if rec.get("ended", "unknown") not in ENDINGS:
        out.append(f"{where}: ended is {rec.get('ended')!r}, expected one of {list(ENDINGS)}")
    return out


def _read_manifest(root: Path) -> tuple[dict | None, list[str]]:
    """Parse and check ``root/manifest.json``. Returns (manifest or None if unusable, problems).

    Records with problems are reported and dropped from the returned manifest's episodes.
    """
    path = root / MANIFEST_NAME
    if not root.is_dir():
        return None, [f"{root}: no such dataset directory"]
    try:
        size, data = _read_bounded(path, MAX_MANIFEST_BYTES)
        if size > MAX_MANIFEST_BYTES:
            return None, [
                f"{path}: file size {size / 2**20:.1f} MiB exceeds the limit "
                f"{MAX_MANIFEST_BYTES / 2**20:g} MiB (MAX_MANIFEST_BYTES)"
            ]
        text = data.decode("utf-8")
    except FileNotFoundError:
        return None, [tub_hint(root) or f"{path}: missing (not a trackpilot dataset?)"]
    except (OSError, UnicodeDecodeError) as e:
        return None, [f"{path}: unreadable ({e})"]
    if len(data) > MAX_MANIFEST_BYTES:  # grew while being read
        return None, [f"{path}: larger than the limit (MAX_MANIFEST_BYTES)"]
    try:
        m = _loads_limited(text, str(path))
    except DatasetError as e:
        return None, [tub_hint(root) or str(e)]
    if not isinstance(m, dict):
        return None, [f"{path}: top level is {type(m).__name__}, expected an object"]
    if m.get("format") != FORMAT_NAME:
        return None, [f"{path}: format is {m.get('format')!r}, expected {FORMAT_NAME!r}"]
    version = m.get("schema_version")
    if not _is_int(version) or version not in READ_SCHEMA_VERSIONS:
        readable = " and ".join(map(str, READ_SCHEMA_VERSIONS))
        return None, [f"{path}: schema_version is {version!r}, this trackpilot reads {readable}"]
    problems: list[str] = []
    if not isinstance(m.get("info"), dict):
        return None, [f"{path}: 'info' is missing or not an object"]
    size = _info_image_size(m["info"])
    if size is not None and _image_size_problem(size):
        return None, [f"{path}: info {_image_size_problem(size)}"]
    episodes = m.get("episodes")
    if not isinstance(episodes, list):
        return None, [f"{path}: 'episodes' is missing or not a list"]
    if len(episodes) > MAX_EPISODES:
        return None, [
            f"{path}: {len(episodes)} episodes exceed the limit {MAX_EPISODES} (MAX_EPISODES)"
        ]
    good: list[dict] = []
    seen: set[str] = set()
    image_hw = _info_image_hw(m["info"])
    for i, rec in enumerate(episodes):
        p = _record_problems(rec, i, raw_files=version == 1, image_hw=image_hw)
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
