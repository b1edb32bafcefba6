"""The dataset format's names, version and limits, its error type, and episode metadata.

Everything here is shared by the reader, the writer and the validator; nothing touches
the disk.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tracks.common import DIRECTIONS

__all__ = [
    "DIRECTIONS",
    "EPISODES_DIRNAME",
    "EPISODE_METADATA_KEY",
    "FORMAT_NAME",
    "INFO_COMPAT_FIELDS",
    "LOCK_NAME",
    "MANIFEST_NAME",
    "SCHEMA_VERSION",
    "DatasetError",
    "EpisodeMeta",
    "is_warning",
]

SCHEMA_VERSION = 1
FORMAT_NAME = "trackpilot-dataset"
MANIFEST_NAME = "manifest.json"
EPISODES_DIRNAME = "episodes"
LOCK_NAME = ".manifest.lock"
EPISODE_METADATA_KEY = "trackpilot_episode"

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

    def __post_init__(self) -> None:
        for name in ("track_id", "track_hash", "source"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"EpisodeMeta.{name} must be a str, got {getattr(self, name)!r}")
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
        # numpy ints are accepted but stored as plain ints so records stay JSON
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "laps", int(self.laps))
        if self.expert is not None and not isinstance(self.expert, dict):
            raise ValueError(f"EpisodeMeta.expert must be a dict or None, got {self.expert!r}")
        if not isinstance(self.extra, dict):
            raise ValueError(f"EpisodeMeta.extra must be a dict, got {self.extra!r}")
        _json_roundtrip(self.expert, "EpisodeMeta.expert")
        _json_roundtrip(self.extra, "EpisodeMeta.extra")

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
        )
