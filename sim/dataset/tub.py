"""DonkeyCar tubs in and out of trackpilot: the settings and what the two commands do.

:func:`~sim.dataset.tub_import.import_tub` and :func:`~sim.dataset.tub_export.export_tub`
hold the work; the files are :mod:`~sim.dataset.tub_format`'s.

``python -m sim.dataset import-tub TUB [TUB ...] --out DATASET`` turns tubs (DonkeyCar's
datastore v2, :mod:`~sim.dataset.tub_format`) into a new trackpilot dataset, written through
:class:`~sim.dataset.DatasetWriter`; ``python -m sim.dataset export-tub DATASET --out TUB``
writes a dataset as a tub that DonkeyCar's own reader (and trainer) accepts.

Import
------
Records are read as DonkeyCar's reader yields them: deleted indexes are skipped, a partial
last record (the car lost power mid-write) is dropped with a warning. Which records become
frames, and their labels, follow DonkeyCar's ``DriveMode`` (what the car executed):

- ``user/mode`` ``user`` (a person drove; also a record without ``user/mode``):
  ``user/angle``, ``user/throttle``;
- ``local_angle`` (the pilot steered, the person throttled): ``pilot/angle``,
  ``user/throttle``;
- ``local`` (the pilot drove): ``pilot/angle``, ``pilot/throttle`` (recorded with
  DonkeyCar's ``RECORD_DURING_AI``).

Only ``user`` records are imported unless ``--modes`` says otherwise. Steering signs differ:
DonkeyCar's angle is + = right (``PWMSteering`` maps -1 to the left pulse, +1 to the right
one), trackpilot's steering + = left, so ``--steering-sign`` defaults to -1
(:class:`TubMapping`).

Each drive (``_session_id``) becomes episodes: a new episode starts at a new session, after
a record that is not imported (deleted, another mode, unreadable, DonkeyCar's ``__empty__``
gap marker), after a pause longer than ``--max-gap``, and every ``--episode-seconds`` (so that
training can split a long drive into train, dev and test episodes). ``extra["ended"]`` says
which (``session_end``, ``deleted``, ``mode``, ``gap``, ``split``, ``tub_end``...).

What an imported frame's fields hold (the frame schema requires every field, finite):

- ``image``: the tub's image (JPEG or PNG, as RGB; resized only with ``--resize``);
- ``steering``, ``throttle``: the executed command above, mapped by :class:`TubMapping`
  (steering clipped to [-1, 1], with a warning);
- ``t``: seconds since the episode's first record, from ``_timestamp_ms``;
- ``speed``, ``pose``, ``lateral``, ``heading_error``, ``progress``, ``lap``: a tub does not
  measure them (no track, no pose): they are 0, and the dataset's ``info["unmeasured"]`` and
  each episode's ``extra["unmeasured"]`` list them, so that nothing reads them as a pose;
- ``takeover``: 0 (DonkeyCar marks none); ``extra["modes"]`` says who drove which frames.

An episode's metadata: ``source`` ``"donkeycar-tub"``, ``track_id`` the tub's directory name
(or ``--track-id``), ``track_hash`` ``""`` (no geometry), ``direction`` ``--direction``,
or ``ccw`` with ``extra["direction_known"]`` false when it is not given (a tub does not
say), ``seed`` 0, ``laps`` 0; ``extra`` holds the tub's path, the catalogs, first and last
record index, image and ``_timestamp_ms``, the session id and the mapping. The dataset's
``info`` has no env (``env_id`` null), the measured frame rate (``control_hz``: the median
interval between records) and each tub's inputs, types, metadata and sessions.

Export
------
Every episode becomes one DonkeyCar session; every frame one record with the inputs
``cam/image_array``, ``user/angle``, ``user/throttle``, ``user/mode`` (``"user"``: an
expert's or a person's frames are the teaching labels DonkeyCar trains on) and a JPEG made
as DonkeyCar makes it (Pillow, quality 75). ``_timestamp_ms`` is the episode's ``t`` after
its start: the original time for an episode imported from a tub, else the export time.

Either command writes into a temporary directory beside ``--out`` and renames it into place
when complete: an error or Ctrl-C leaves nothing behind (a killed process leaves only the
hidden temporary directory, which the next import or export to that path removes).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sim.dataset.format import DIRECTIONS, DatasetError, _is_int
from tracks.common import format_size, parse_size
from tracks.fileio import staged_dir
from tracks.outputs import check_output_dir

__all__ = [
    "IMAGE_KEY",
    "IMPORTER",
    "MODES",
    "TUB_SOURCE",
    "UNMEASURED_FIELDS",
    "TubExportConfig",
    "TubImportConfig",
    "TubMapping",
    "format_tub_summary",
]

logger = logging.getLogger("sim.dataset")

#: ``source`` of every imported episode.
TUB_SOURCE = "donkeycar-tub"
#: ``extra["importer"]`` of every imported episode.
IMPORTER = "python -m sim.dataset import-tub"
#: The ``user/mode`` values DonkeyCar records, in the order of how much the pilot drives.
MODES = ("user", "local_angle", "local")
#: The input that holds the camera image in a DonkeyCar tub.
IMAGE_KEY = "cam/image_array"
#: Frame fields a tub does not measure: 0 in imported episodes.
UNMEASURED_FIELDS = ("speed", "pose", "lateral", "heading_error", "progress", "lap")
#: Threads that decode (import) or encode (export) images.
WORKERS = max(1, min(8, os.cpu_count() or 1))


@dataclass(frozen=True)
class TubMapping:
    """How DonkeyCar's labels map onto trackpilot's; export applies the inverse."""

    steering_sign: int = field(
        default=-1,
        metadata={
            "choices": (-1, 1),
            "help": "trackpilot steering (+ = left) = SIGN x SCALE x DonkeyCar user/angle "
            "(+ = right: PWMSteering's -1 is full left); -1 flips the sign",
        },
    )
    steering_scale: float = 1.0  # trackpilot steering per unit of DonkeyCar angle (> 0)
    throttle_scale: float = 1.0  # trackpilot throttle per unit of DonkeyCar throttle (> 0)

    def __post_init__(self) -> None:
        if self.steering_sign not in (-1, 1):
            raise ValueError(f"steering_sign must be -1 or 1, got {self.steering_sign!r}")
        for name in ("steering_scale", "throttle_scale"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")

    def to_trackpilot(self, angle: float, throttle: float) -> tuple[float, float]:
        """(steering, throttle) of trackpilot from DonkeyCar's (angle, throttle); unclipped."""
        return self.steering_sign * self.steering_scale * angle, self.throttle_scale * throttle

    def to_donkeycar(self, steering: float, throttle: float) -> tuple[float, float]:
        """DonkeyCar's (angle, throttle) from trackpilot's (steering, throttle)."""
        return steering / (self.steering_sign * self.steering_scale), throttle / self.throttle_scale


@dataclass(frozen=True)
class TubImportConfig:
    """What ``import-tub`` keeps of a tub and how it cuts it into episodes."""

    image_size: tuple[int, int] | None = field(
        default=None,
        metadata={
            "help": "HxW of the dataset's frames; none: the tub's own size (every image must "
            "have it)"
        },
    )
    resize: bool = field(
        default=False,
        metadata={
            "help": "resize images of another size to --image-size (bilinear; the aspect "
            "ratio follows); off: such an image is an error"
        },
    )
    modes: tuple[str, ...] = field(
        default=("user",),
        metadata={
            "help": "user/mode values to import: user (a person drove), local_angle (the "
            "pilot steered), local (the pilot drove)"
        },
    )
    direction: str | None = field(
        default=None,
        metadata={
            "help": "ccw or cw: the way round the track the car drove (training stratifies "
            "its splits by it); none: unknown (a tub does not record it), stored as ccw with "
            "extra direction_known false"
        },
    )
    track_id: str | None = None  # the episodes' track id; none: each tub's directory name
    episode_seconds: float = field(
        default=30.0,
        metadata={
            "help": "longest episode: a drive is cut into episodes this long, so that "
            "training can split it"
        },
    )
    max_gap: float = 1.0  # seconds: a longer pause between two records starts a new episode
    skip_bad_records: bool = field(
        default=False,
        metadata={
            "help": "skip unreadable records and images (each warned) instead of "
            "stopping at the first"
        },
    )

    def __post_init__(self) -> None:
        if self.image_size is not None:
            object.__setattr__(self, "image_size", parse_size(self.image_size, what="image_size"))
        if self.resize and self.image_size is None:
            raise ValueError("resize needs image_size (--image-size HxW): the size to resize to")
        modes = tuple(self.modes)
        if not modes or any(m not in MODES for m in modes):
            raise ValueError(f"modes must be some of {', '.join(MODES)}, got {modes!r}")
        object.__setattr__(self, "modes", modes)
        if self.direction is not None and self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be ccw, cw or none, got {self.direction!r}")
        if self.track_id is not None and not 1 <= len(self.track_id) <= 256:
            raise ValueError("track_id must have 1 to 256 characters")
        for name, top in (("episode_seconds", 3600.0), ("max_gap", 3600.0)):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 < v <= top):
                raise ValueError(f"{name} must be in (0, {top:g}] seconds, got {v!r}")


@dataclass(frozen=True)
class TubExportConfig:
    """How ``export-tub`` writes a tub."""

    max_len: int = 1000  # records per catalog file (DonkeyCar's max_catalog_len default)
    jpeg_quality: int = 75  # JPEG quality (75: Pillow's default, what DonkeyCar writes)

    def __post_init__(self) -> None:
        if not _is_int(self.max_len) or not 1 <= self.max_len <= 1_000_000:
            raise ValueError(f"max_len must be an int in [1, 1000000], got {self.max_len!r}")
        if not _is_int(self.jpeg_quality) or not 1 <= self.jpeg_quality <= 95:
            raise ValueError(f"jpeg_quality must be an int in [1, 95], got {self.jpeg_quality!r}")


# --------------------------------------------------------------------------- output dirs


@contextlib.contextmanager
def _staged_output(out: Path, what: str) -> Iterator[Path]:
    """:func:`~tracks.fileio.staged_dir` for the new directory ``out`` that ``what`` writes:
    ``out`` must not hold anything yet and its parent must be writable (both checked first,
    one line each); temp directories of killed earlier runs are removed, with a warning."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError(f"{out}: exists and is not empty; {what} writes a new directory")
    check_output_dir(out.parent)

    def warn(removed: list[Path]) -> None:
        logger.warning("removed %s, left by a killed %s", removed[0], what)

    with staged_dir(out, on_stale=warn) as tmp:
        yield tmp


# ----------------------------------------------------------------------------- summary


def _counts_text(counts: Counter | dict) -> str:
    order = ["records", "imported", "deleted", "empty", "partial", "unreadable"]
    keys = [k for k in order if counts.get(k)] + sorted(
        k for k in counts if k not in order and counts[k]
    )
    return ", ".join(f"{counts[k]:,} {k}" for k in keys) or "no records"


def format_tub_summary(s: dict[str, Any]) -> str:
    """The lines ``import-tub`` / ``export-tub`` print for their summary."""
    rate = s["frames"] / s["seconds"] if s["seconds"] > 0 else float("inf")
    if s["command"] == "import-tub":
        hz = f", {s['control_hz']} Hz" if s["control_hz"] else ""
        return (
            f"imported {len(s['tubs'])} tub{'s' if len(s['tubs']) > 1 else ''} into "
            f"{s['out']}: {s['frames']:,} frames ({format_size(s['image_size'])}{hz}) in "
            f"{s['episodes']:,} episodes, {s['seconds']:.1f} s ({rate:,.0f} frames/s)\n"
            f"records: {_counts_text(s['counts'])}"
        )
    return (
        f"exported {s['dataset']} to the tub {s['out']}: {s['frames']:,} records in "
        f"{s['episodes']:,} sessions, {s['catalogs']:,} catalogs, {s['seconds']:.1f} s "
        f"({rate:,.0f} frames/s)"
    )
