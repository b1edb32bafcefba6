"""The dataset format's names, version and limits, its error type, and episode metadata.

Everything here is shared by the reader, the writer and the validator; nothing touches
the disk.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tracks.common import DIRECTIONS, MAX_IMAGE_SIDE, parse_size

__all__ = [
    "CONTENT_SHA_KEY",
    "DIRECTIONS",
    "DRIVE_ENDINGS",
    "ENCODING_METADATA_KEY",
    "ENDINGS",
    "EPISODES_DIRNAME",
    "EPISODE_METADATA_KEY",
    "FORMAT_NAME",
    "INFO_COMPAT_FIELDS",
    "LOCK_NAME",
    "MANIFEST_NAME",
    "MAX_EPISODES",
    "MAX_DECODED_BYTES",
    "MAX_EPISODE_FRAMES",
    "MAX_HEADER_BYTES",
    "MAX_IMAGE_SIDE",
    "MAX_JSON_DEPTH",
    "MAX_MANIFEST_BYTES",
    "MAX_NAME_CHARS",
    "MAX_STRING_CHARS",
    "MAX_TENSORS",
    "QUARANTINE_DIRNAME",
    "READ_SCHEMA_VERSIONS",
    "SCHEMA_VERSION",
    "DatasetError",
    "EpisodeMeta",
    "episode_ending",
    "is_warning",
]

#: The version this trackpilot writes. 2: frame fields zstd-compressed inside the episode
#: files (:mod:`~sim.dataset.codec`), episodes say how they ended (``ended``). 1: raw arrays.
#: A version-2 manifest may list files of either version (a dataset being migrated, or one
#: recorded before and appended to since); each file's header says which it is.
SCHEMA_VERSION = 2
#: Versions read (manifests and episode files); :mod:`~sim.dataset.migrate` rewrites 1 as 2.
READ_SCHEMA_VERSIONS = (1, 2)
FORMAT_NAME = "trackpilot-dataset"
MANIFEST_NAME = "manifest.json"
EPISODES_DIRNAME = "episodes"
LOCK_NAME = ".manifest.lock"
EPISODE_METADATA_KEY = "trackpilot_episode"
#: Key, in a version-2 episode header's metadata, of how each frame field is stored
#: (codec, decoded dtype and shape, frames per compressed chunk).
ENCODING_METADATA_KEY = "trackpilot_encoding"
#: Key, in an episode's header metadata, of the sha256 of the file's data section (every
#: byte after the header): the file vouches for its own content, so a writer can tell a
#: complete episode that the manifest does not list from a damaged one. Files written
#: before it existed lack it (the manifest's sha256 of the whole file still covers them).
CONTENT_SHA_KEY = "data_sha256"
#: Where a writer moves files of ``episodes/`` that it must not keep there (an unlisted file
#: that is not a complete, verifiable episode; a listed one that is corrupt): never deleted.
QUARANTINE_DIRNAME = "quarantine"

# --- Limits on what a dataset file may hold. Readers check them before trusting a file; the
# writer refuses to write beyond them. Each breach is one line naming the file, the limit and
# the value. The numbers leave wide room for real recordings: an expert episode is a few
# thousand frames of 120x160, its manifest record about 1 KB, its header under 10 KB.

#: Largest ``manifest.json``, bytes (checked before reading it).
MAX_MANIFEST_BYTES = 128 * 1024 * 1024
#: Most episodes in one dataset.
MAX_EPISODES = 100_000
#: Largest safetensors header (length prefix excluded) of an episode file, bytes.
MAX_HEADER_BYTES = 16 * 1024 * 1024
#: Most tensors in an episode file (the frame schema has 11).
MAX_TENSORS = 64
#: Most frames in one episode (13.9 h at 20 Hz).
MAX_EPISODE_FRAMES = 1_000_000
#: Most bytes the frame fields of one episode file may decode to (checked on the header,
#: before anything is decompressed or allocated: a small file cannot claim a huge episode).
#: 4 GiB: 74,000 frames at 120x160 (an hour at 20 Hz), 1,365 at 1024x1024.
MAX_DECODED_BYTES = 4 << 30
#: Deepest nesting of JSON arrays and objects in the manifest and in episode headers (the
#: format itself needs 5; the rest is room for recorders' ``extra`` metadata).
MAX_JSON_DEPTH = 16
#: Longest string (or object key) anywhere in the manifest or an episode's metadata.
MAX_STRING_CHARS = 4096
#: Longest ``track_id``, ``track_hash`` or ``source`` of an episode.
MAX_NAME_CHARS = 256
# Image sides are bounded by tracks.common.parse_size: 1..MAX_IMAGE_SIDE (1024) pixels.

#: How an episode ended (:attr:`EpisodeMeta.ended`): its laps were done; the car left the
#: road or flipped; the step or time limit ran out; it stalled (no progress); the person
#: stopped it (record key, reset, another track or direction, quit, Ctrl-C); the recorder
#: split a long recording; the recorder failed (frames kept); or nobody said (files
#: written before episodes recorded it).
ENDINGS = (
    "laps_done",
    "off_track",
    "flipped",
    "time_limit",
    "stalled",
    "user_stop",
    "split",
    "error",
    "unknown",
)

#: Why ``sim.drive`` ended an episode (its ``extra["ended"]``, the detail; files written
#: before ``ended`` existed have only that) -> the ending it is.
DRIVE_ENDINGS = {
    "off_track": "off_track",
    "flipped": "flipped",
    "split": "split",
    "max_frames": "time_limit",
    "error": "error",
    "stopped": "user_stop",
    "reset": "user_stop",
    "direction_change": "user_stop",
    "track_change": "user_stop",
    "quit": "user_stop",
    "interrupted": "user_stop",
}

#: Info fields that must agree between a dataset and a writer appending to it (frames
#: drawn by another renderer differ in colour and shading: no mixing within one dataset).
INFO_COMPAT_FIELDS = ("env_id", "image_size", "control_hz", "renderer")

_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


class DatasetError(ValueError):
    """Anything wrong with a dataset; the message names the file and the problem in one line."""


def is_warning(problem: str) -> bool:
    """True for a :func:`~sim.dataset.validate_dataset` line that is a warning, not an error."""
    return problem.startswith("warning:")


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _json_roundtrip(obj: Any, what: str) -> Any:
    try:
        return json.loads(json.dumps(obj, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} must be JSON-serialisable without NaN/inf: {e}") from None


def _reject_constant(name: str) -> Any:
    """``json.loads(parse_constant=...)``: NaN and infinities are not JSON."""
    raise ValueError(f"{name} is not valid JSON")


def _json_limit_problem(obj: Any, base_depth: int = 0) -> str | None:
    """The first limit parsed JSON ``obj`` breaks, or None.

    Limits: nesting of arrays and objects deeper than :data:`MAX_JSON_DEPTH` (``obj`` itself
    sits at depth ``base_depth + 1`` when it is a container), strings and object keys longer
    than :data:`MAX_STRING_CHARS`. The walk stops one level below the limit, so its own
    recursion is bounded whatever the input.
    """
    if type(obj) is str:
        return _long_string(obj) if len(obj) > MAX_STRING_CHARS else None
    if type(obj) is dict or type(obj) is list:
        return _walk_limits(obj, base_depth + 1)
    return None


def _long_string(s: str) -> str:
    return (
        f"a string of {len(s)} characters exceeds the limit {MAX_STRING_CHARS} "
        f"(MAX_STRING_CHARS): {s[:40]!r}..."
    )


def _walk_limits(x: dict | list, depth: int) -> str | None:
    """:func:`_json_limit_problem` of container ``x`` at ``depth``. The hot loop: ``x`` is
    parsed (or round-tripped) JSON, so exact type tests suffice and keys are strings."""
    if depth > MAX_JSON_DEPTH:
        return f"JSON nesting deeper than the limit {MAX_JSON_DEPTH} (MAX_JSON_DEPTH)"
    if type(x) is dict:
        for k in x:
            if len(k) > MAX_STRING_CHARS:
                return _long_string(k)
        values = x.values()
    else:
        values = x
    for v in values:
        t = type(v)
        if t is str:
            if len(v) > MAX_STRING_CHARS:
                return _long_string(v)
        elif t is dict or t is list:
            problem = _walk_limits(v, depth + 1)
            if problem:
                return problem
    return None


def _loads_limited(text: str | bytes, where: str) -> Any:
    """Strict JSON (no NaN/inf) within the JSON limits, else :class:`DatasetError`
    ``"<where>: <problem>"`` in one line."""
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise DatasetError(
            f"{where}: JSON nesting deeper than the limit {MAX_JSON_DEPTH} (MAX_JSON_DEPTH)"
        ) from None
    except (UnicodeDecodeError, ValueError) as e:
        raise DatasetError(f"{where}: invalid JSON ({e})") from None
    problem = _json_limit_problem(obj)
    if problem:
        raise DatasetError(f"{where}: {problem}")
    return obj


def _read_bounded(path: str | os.PathLike[str], limit: int) -> tuple[int, bytes]:
    """(size when opened, bytes) of the file ``path``, read only if that size is at most
    ``limit`` (else ``b""``), and then at most ``limit + 1`` bytes: more than ``limit``
    means it grew while being read. ``OSError`` passes through; the caller words the refusal."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        return size, (f.read(limit + 1) if size <= limit else b"")


def _image_size_problem(hw: Any) -> str | None:
    """Why ``hw`` is not an (H, W) image size within ``parse_size``'s bounds, or None."""
    try:
        parse_size(hw, what="image size")
    except (TypeError, ValueError) as e:
        return f"{e} (MAX_IMAGE_SIDE)" if "sides must be" in str(e) else str(e)
    return None


def _episode_filename(key: str) -> str:
    return f"ep-{key}.safetensors"


def _episode_relpath(key: str) -> str:
    return f"{EPISODES_DIRNAME}/{_episode_filename(key)}"


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise ValueError(
            f"episode key {key!r} is invalid: use 1-128 characters from [A-Za-z0-9._-], "
            "starting with a letter or digit"
        )
    return key


def _info_image_size(info: Mapping[str, Any]) -> Any:
    """The image size from an info block: ``camera.image_size`` (or top-level ``image_size``)."""
    cam = info.get("camera")
    if isinstance(cam, Mapping) and "image_size" in cam:
        return cam["image_size"]
    return info.get("image_size")


def _info_image_hw(info: Mapping[str, Any]) -> tuple[int, int] | None:
    """(H, W) from the info block, or None when it does not say (or says it badly)."""
    size = _info_image_size(info)
    if (
        isinstance(size, (list, tuple))
        and len(size) == 2
        and all(_is_int(v) and v > 0 for v in size)
    ):
        return int(size[0]), int(size[1])
    return None


def _info_compat_value(info: Mapping[str, Any], name: str) -> Any:
    return _info_image_size(info) if name == "image_size" else info.get(name)


@dataclass(frozen=True)
class EpisodeMeta:
    """What produced an episode; stored in its file header and its manifest record."""

    track_id: str  # id of the track in the track library (or imported file name)
    track_hash: str  # hash of the track geometry, so a changed track is recognised
    direction: str  # "ccw" or "cw"
    seed: int  # env reset seed
    source: str  # "expert", "human", "takeover" or another producer name
    laps: int = 0  # laps completed in the episode
    expert: dict | None = None  # expert (autopilot) parameters, None for a human
    extra: dict = field(default_factory=dict)  # anything else the recorder wants to keep
    ended: str = "unknown"  # how the episode ended: one of ENDINGS

    def __post_init__(self) -> None:
        for name in ("track_id", "track_hash", "source"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"EpisodeMeta.{name} must be a str, got {getattr(self, name)!r}")
        for name in ("track_id", "track_hash", "source"):
            if len(getattr(self, name)) > MAX_NAME_CHARS:
                raise ValueError(
                    f"EpisodeMeta.{name} has {len(getattr(self, name))} characters, more "
                    f"than the limit {MAX_NAME_CHARS} (MAX_NAME_CHARS)"
                )
        if not self.track_id:
            raise ValueError("EpisodeMeta.track_id must not be empty")
        if not self.source:
            raise ValueError("EpisodeMeta.source must not be empty")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"EpisodeMeta.direction must be 'ccw' or 'cw', got {self.direction!r}")
        if not _is_int(self.seed):
            raise ValueError(f"EpisodeMeta.seed must be an int, got {self.seed!r}")
        if not _is_int(self.laps) or self.laps < 0:
            raise ValueError(f"EpisodeMeta.laps must be an int >= 0, got {self.laps!r}")
        if self.ended not in ENDINGS:
            raise ValueError(f"EpisodeMeta.ended must be one of {ENDINGS}, got {self.ended!r}")
        # numpy ints are accepted but stored as plain ints so records stay JSON
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "laps", int(self.laps))
        if self.expert is not None and not isinstance(self.expert, dict):
            raise ValueError(f"EpisodeMeta.expert must be a dict or None, got {self.expert!r}")
        if not isinstance(self.extra, dict):
            raise ValueError(f"EpisodeMeta.extra must be a dict, got {self.extra!r}")
        for name in ("expert", "extra"):
            value = _json_roundtrip(getattr(self, name), f"EpisodeMeta.{name}")
            # in the manifest, a record's expert/extra object sits at depth 4
            problem = _json_limit_problem(value, base_depth=3)
            if problem:
                raise ValueError(f"EpisodeMeta.{name}: {problem}")

    def to_dict(self) -> dict[str, Any]:
        return _json_roundtrip(asdict(self), "EpisodeMeta")

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> EpisodeMeta:
        """Rebuild the metadata from a manifest record."""
        return cls(
            track_id=record["track_id"],
            track_hash=record["track_hash"],
            direction=record["direction"],
            seed=record["seed"],
            source=record["source"],
            laps=record.get("laps", 0),
            expert=record.get("expert"),
            extra=dict(record.get("extra") or {}),
            ended=episode_ending(record),
        )


def episode_ending(record: Mapping[str, Any]) -> str:
    """How the episode of a manifest record (or header metadata) ended: its ``ended``; for
    files written before episodes said so, what ``sim.drive`` kept in ``extra["ended"]``,
    else ``"unknown"``."""
    ended = record.get("ended")
    if ended is not None:
        return ended
    extra = record.get("extra")
    detail = extra.get("ended") if isinstance(extra, Mapping) else None
    return DRIVE_ENDINGS.get(detail, "unknown") if isinstance(detail, str) else "unknown"
