"""DonkeyCar tubs in and out of trackpilot: :func:`import_tub` and :func:`export_tub`.

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
(or ``--track-id``), ``track_hash`` ``""`` (no geometry), ``direction`` ``--direction`` (a
tub does not say; ``extra["direction_known"]`` is false unless it was given), ``seed`` 0,
``laps`` 0; ``extra`` holds the tub's path, the catalogs, first and last record index, image
and ``_timestamp_ms``, the session id and the mapping. The dataset's ``info`` has no env
(``env_id`` null), the measured frame rate (``control_hz``: the median interval between
records) and each tub's inputs, types, metadata and sessions.

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

import io
import logging
import math
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from sim.dataset.format import (
    DIRECTIONS,
    DatasetError,
    EpisodeMeta,
    _is_int,
    _json_limit_problem,
)
from sim.dataset.frames import FRAME_FIELDS
from sim.dataset.reader import open_dataset
from sim.dataset.summary import dataset_fingerprint
from sim.dataset.tub_format import (
    MAX_TUB_IMAGE_BYTES,
    MAX_TUB_IMAGE_SIDE,
    MAX_TUB_RECORDS,
    TUB_IMAGES_DIRNAME,
    TubLine,
    TubManifest,
    TubWriter,
    _plain_name_problem,
    iter_tub_lines,
    read_limited,
    read_tub_manifest,
    tub_image_name,
)
from sim.dataset.writer import DatasetWriter
from tracks.common import format_size, parse_size
from tracks.fileio import fsync_dir, fsync_files, remove_stale_temp_files, temp_path
from tracks.outputs import check_output_dir

__all__ = [
    "IMAGE_KEY",
    "MODES",
    "TUB_SOURCE",
    "UNMEASURED_FIELDS",
    "TubExportConfig",
    "TubImportConfig",
    "TubMapping",
    "export_tub",
    "format_tub_summary",
    "import_tub",
]

logger = logging.getLogger("sim.dataset")

#: ``source`` of every imported episode.
TUB_SOURCE = "donkeycar-tub"
#: The ``user/mode`` values DonkeyCar records, in the order of how much the pilot drives.
MODES = ("user", "local_angle", "local")
#: The input that holds the camera image in a DonkeyCar tub.
IMAGE_KEY = "cam/image_array"
#: Frame fields a tub does not measure: 0 in imported episodes.
UNMEASURED_FIELDS = ("speed", "pose", "lateral", "heading_error", "progress", "lap")
#: Most frames in one imported episode, whatever ``--episode-seconds`` says: an episode is
#: held in memory while it is written (57.6 KB a frame at 120x160).
MAX_IMPORT_EPISODE_FRAMES = 20_000

# (steering input, throttle input) of the command the car executed, per user/mode
# (DonkeyCar's DriveMode part).
_EXECUTED = {
    "user": ("user/angle", "user/throttle"),
    "local_angle": ("pilot/angle", "user/throttle"),
    "local": ("pilot/angle", "pilot/throttle"),
}
_MAX_MS = 2**53  # the largest _timestamp_ms taken (a float holds it exactly; year 285,000)
_EXPORT_INPUTS = (IMAGE_KEY, "user/angle", "user/throttle", "user/mode")
_EXPORT_TYPES = ("image_array", "float", "float", "str")
_WORKERS = max(1, min(8, os.cpu_count() or 1))  # image decoding/encoding threads


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
    direction: str = field(
        default="ccw",
        metadata={
            "choices": DIRECTIONS,
            "help": "the way round the track the car drove (a tub does not record it; "
            "training stratifies its splits by it)",
        },
    )
    track_id: str | None = None  # the episodes' track id; none: each tub's directory name
    episode_seconds: float = (
        30.0  # longest episode: a drive is cut into episodes this long, so training can split it
    )
    max_gap: float = 1.0  # seconds: a longer pause between two records starts a new episode
    skip_bad_records: bool = (
        False  # skip unreadable records and images (each warned) instead of stopping at the first
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
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be ccw or cw, got {self.direction!r}")
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
    jpeg_quality: int = (
        75  # JPEG quality of the images (75: Pillow's default, what DonkeyCar writes)
    )

    def __post_init__(self) -> None:
        if not _is_int(self.max_len) or not 1 <= self.max_len <= 1_000_000:
            raise ValueError(f"max_len must be an int in [1, 1000000], got {self.max_len!r}")
        if not _is_int(self.jpeg_quality) or not 1 <= self.jpeg_quality <= 95:
            raise ValueError(f"jpeg_quality must be an int in [1, 95], got {self.jpeg_quality!r}")


# --------------------------------------------------------------------------------- import


class _Frame(NamedTuple):
    """One imported record, before its image is read."""

    index: int
    catalog: str
    image: str  # file name in images/
    steering: float
    throttle: float
    timestamp_ms: int
    session: str | None
    mode: str


@dataclass
class _Episode:
    tub: int  # index into the tubs imported
    frames: list[_Frame]
    ended: str = "tub_end"


@dataclass
class _TubPlan:
    root: Path
    manifest: TubManifest
    track_id: str
    key_prefix: str
    episodes: list[_Episode]
    counts: Counter  # records met, by what became of them
    clipped: int = 0  # steering values clipped to [-1, 1]
    index_drift: int = 0  # records whose _index is not their position


def _number(rec: dict, key: str, where: str) -> float:
    v = rec.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise DatasetError(f"{where}: {key} is {v!r}, expected a number")
    return float(v)


def _frame(line: TubLine, rec: dict, mode: str, mapping: TubMapping) -> tuple[_Frame, bool]:
    """The frame of a record to import (and whether its steering was clipped)."""
    where = f"{line.catalog}: line {line.line} (record {line.index})"
    image = rec.get(IMAGE_KEY)
    problem = _plain_name_problem(image)
    if problem:
        raise DatasetError(f"{where}: {IMAGE_KEY}: {problem}")
    steer_key, throttle_key = _EXECUTED[mode]
    for key in (steer_key, throttle_key):
        if key not in rec:
            raise DatasetError(
                f"{where}: user/mode {mode!r} but no {key!r} (DonkeyCar records it only with "
                "RECORD_DURING_AI); leave the mode out of --modes"
            )
    steering, throttle = mapping.to_trackpilot(
        _number(rec, steer_key, where), _number(rec, throttle_key, where)
    )
    ts = rec.get("_timestamp_ms")
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not 0 <= ts <= _MAX_MS:
        raise DatasetError(f"{where}: _timestamp_ms is {ts!r}, expected ms since 1970")
    session = rec.get("_session_id")
    if session is not None and not isinstance(session, str):
        raise DatasetError(f"{where}: _session_id is {session!r}, expected a string")
    clipped = abs(steering) > 1.0
    frame = _Frame(
        index=line.index,
        catalog=line.catalog,
        image=image,
        steering=max(-1.0, min(1.0, steering)),
        throttle=throttle,
        timestamp_ms=int(round(ts)),
        session=session,
        mode=mode,
    )
    return frame, clipped


def _key_part(text: str) -> str:
    """``text`` as part of an episode key ([A-Za-z0-9._-], starting with a letter or digit)."""
    s = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in text)
    s = s.lstrip("._-")[:96]
    return s or "tub"


def _plan_tub(
    root: Path, k: int, cfg: TubImportConfig, mapping: TubMapping, prefix: str
) -> _TubPlan:
    """Read a tub's records (not its images) and cut the imported ones into episodes."""
    m = read_tub_manifest(root)
    if IMAGE_KEY not in m.inputs:
        raise DatasetError(
            f"{root}: the tub records no {IMAGE_KEY!r} (its inputs: {', '.join(m.inputs)})"
        )
    plan = _TubPlan(
        root=root,
        manifest=m,
        track_id=cfg.track_id or root.resolve().name or "tub",
        key_prefix=prefix,
        episodes=[],
        counts=Counter(),
    )
    limit_ms = cfg.episode_seconds * 1000.0
    gap_ms = cfg.max_gap * 1000.0
    current: list[_Frame] = []

    def close(reason: str) -> None:
        nonlocal current
        if current:
            plan.episodes.append(_Episode(k, current, reason))
            current = []

    for line in iter_tub_lines(m, skip_bad=cfg.skip_bad_records):
        plan.counts["records"] += 1
        if line.skipped:
            plan.counts[line.skipped] += 1
            close(line.skipped)
            continue
        rec = line.record
        assert rec is not None
        if rec.get("_index", line.index) != line.index:
            plan.index_drift += 1
        if rec.get("__empty__"):
            plan.counts["empty"] += 1
            close("empty")
            continue
        mode = rec.get("user/mode", "user")
        if mode not in cfg.modes:
            plan.counts[f"mode {mode}"] += 1
            close("mode")
            continue
        try:
            frame, clipped = _frame(line, rec, mode, mapping)
        except DatasetError as e:
            if not cfg.skip_bad_records:
                raise DatasetError(f"{root}/{e}; --skip-bad-records skips such records") from None
            logger.warning("%s/%s; skipped", root, e)
            plan.counts["unreadable"] += 1
            close("unreadable")
            continue
        plan.clipped += clipped
        if current:
            prev, first = current[-1], current[0]
            dt = frame.timestamp_ms - prev.timestamp_ms
            if frame.session != prev.session:
                close("session_end")
            elif dt < 0 or dt > gap_ms:
                close("gap")
            elif (
                frame.timestamp_ms - first.timestamp_ms >= limit_ms
                or len(current) >= MAX_IMPORT_EPISODE_FRAMES
            ):
                close("split")
        current.append(frame)
        plan.counts["imported"] += 1
    close("tub_end")
    if plan.index_drift:
        logger.warning(
            "%s: %d records carry an _index other than their position; deleted indexes are "
            "applied to positions, as DonkeyCar's reader does",
            root,
            plan.index_drift,
        )
    if plan.clipped:
        logger.warning(
            "%s: %d steering values outside [-1, 1] after mapping were clipped",
            root,
            plan.clipped,
        )
    return plan


def _read_image_file(path: Path) -> Image.Image:
    """The image at ``path``, opened (header read, pixels not yet decoded), bounded."""
    try:
        data = read_limited(path, MAX_TUB_IMAGE_BYTES, "MAX_TUB_IMAGE_BYTES")
        im = Image.open(io.BytesIO(data), formats=("JPEG", "PNG"))
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing (its record names it)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetError(f"{path}: unreadable image ({e})") from None
    w, h = im.size
    if not (1 <= w <= MAX_TUB_IMAGE_SIDE and 1 <= h <= MAX_TUB_IMAGE_SIDE):
        raise DatasetError(
            f"{path}: {h}x{w} pixels; sides must be in [1, {MAX_TUB_IMAGE_SIDE}] "
            "(MAX_TUB_IMAGE_SIDE)"
        )
    return im


def _decode(path: Path, hw: tuple[int, int], resize: bool) -> np.ndarray:
    """The RGB ``uint8`` (H, W, 3) pixels of the image at ``path``, at size ``hw``."""
    im = _read_image_file(path)
    if (im.height, im.width) != hw and not resize:
        raise DatasetError(
            f"{path}: {im.height}x{im.width}, the dataset's frames are {format_size(hw)}; "
            f"--image-size {format_size(hw)} --resize resizes"
        )
    try:
        im = im.convert("RGB")
        if (im.height, im.width) != hw:
            im = im.resize((hw[1], hw[0]), Image.Resampling.BILINEAR)
        return np.asarray(im, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetError(f"{path}: unreadable image ({e})") from None


def _dataset_size(plans: Sequence[_TubPlan], cfg: TubImportConfig) -> tuple[int, int]:
    if cfg.image_size is not None:
        return cfg.image_size
    for plan in plans:
        for ep in plan.episodes:
            for frame in ep.frames:
                path = plan.root / TUB_IMAGES_DIRNAME / frame.image
                try:
                    im = _read_image_file(path)
                except DatasetError:
                    if cfg.skip_bad_records:
                        continue  # skipped, with its warning, when the frames are read
                    raise
                try:
                    return parse_size((im.height, im.width), what="image size")
                except ValueError as e:
                    raise DatasetError(
                        f"{path}: {e}; --image-size HxW --resize imports it smaller"
                    ) from None
    raise DatasetError("no readable image to import")


def _frame_rate(plans: Sequence[_TubPlan]) -> tuple[int | None, float | None]:
    """(control_hz, median interval ms) measured from the imported records' timestamps."""
    gaps = [
        b.timestamp_ms - a.timestamp_ms
        for plan in plans
        for ep in plan.episodes
        for a, b in zip(ep.frames, ep.frames[1:], strict=False)
    ]
    positive = [g for g in gaps if g > 0]
    if not positive:
        return None, None
    median = float(np.median(positive))
    return max(1, int(round(1000.0 / median))), median


def _tub_info(plan: _TubPlan) -> dict[str, Any]:
    m = plan.manifest
    metadata: Any = m.metadata
    if _json_limit_problem(metadata, base_depth=4):  # info -> tubs -> [i] -> metadata
        metadata = "(omitted: nested too deeply or strings too long for a dataset manifest)"
    sessions = m.manifest_metadata.get("sessions")
    ids = sessions.get("all_full_ids") if isinstance(sessions, dict) else None
    return {
        "path": str(plan.root.resolve()),
        "inputs": m.inputs,
        "types": m.types,
        "metadata": metadata,
        "created_at": m.manifest_metadata.get("created_at"),
        "sessions": ids if isinstance(ids, list) else None,
        "catalogs": len(m.paths),
        "max_len": m.max_len,
        "records": plan.counts["records"],
        "deleted": plan.counts["deleted"],
        "imported": plan.counts["imported"],
    }


def _segments(modes: Sequence[str]) -> list[dict[str, Any]]:
    """Run-length ``[{"start", "end", "mode"}]`` (end exclusive) of per-frame modes."""
    out: list[dict[str, Any]] = []
    for i, mode in enumerate(modes):
        if out and out[-1]["mode"] == mode:
            out[-1]["end"] = i + 1
        else:
            out.append({"start": i, "end": i + 1, "mode": mode})
    return out


def _episode_meta(
    plan: _TubPlan, frames: Sequence[_Frame], ended: str, cfg: TubImportConfig, mapping
) -> EpisodeMeta:
    first, last = frames[0], frames[-1]
    return EpisodeMeta(
        track_id=plan.track_id,
        track_hash="",  # no track geometry is known
        direction=cfg.direction,
        seed=0,
        source=TUB_SOURCE,
        laps=0,
        expert=None,
        extra={
            "importer": "python -m sim.dataset import-tub",
            "tub": str(plan.root.resolve()),
            "catalogs": sorted({f.catalog for f in frames}),
            "session_id": first.session,
            "records": {"first": first.index, "last": last.index},
            "images": {"first": first.image, "last": last.image},
            "timestamp_ms": {"first": first.timestamp_ms, "last": last.timestamp_ms},
            "modes": _segments([f.mode for f in frames]),
            "ended": ended,
            "unmeasured": list(UNMEASURED_FIELDS),
            "direction_known": False,
            "mapping": asdict(mapping),
        },
    )


def _arrays(frames: Sequence[_Frame], images: np.ndarray) -> dict[str, np.ndarray]:
    n = len(frames)
    ts = np.array([f.timestamp_ms for f in frames], dtype=np.int64)
    out = {
        name: np.zeros((n, *trailing), dtype)
        for name, (dtype, trailing) in FRAME_FIELDS.items()
        if trailing is not None
    }
    out["image"] = images
    out["steering"][:] = [f.steering for f in frames]
    out["throttle"][:] = [f.throttle for f in frames]
    out["t"][:] = (ts - ts[0]) / 1000.0
    return out


def _publish(tmp: Path, out: Path) -> None:
    """Rename the complete ``tmp`` directory to ``out`` (absent or an empty directory)."""
    fsync_dir(tmp)
    os.replace(tmp, out)
    fsync_dir(out.parent)


def _new_output(out: Path, what: str) -> Path:
    """A fresh temp directory beside ``out`` to build ``what`` in; ``out`` must not hold
    anything yet. Temp directories of killed earlier runs are removed."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError(f"{out}: exists and is not empty; {what} writes a new directory")
    check_output_dir(out.parent)
    removed = remove_stale_temp_files(out.parent, dirs=True, name=out.name)
    if removed:
        logger.warning("removed %s, left by a killed %s", removed[0], what)
    tmp = temp_path(out)
    tmp.mkdir(parents=True)
    return tmp


def import_tub(
    tubs: Iterable[str | Path],
    out: str | Path,
    cfg: TubImportConfig | None = None,
    mapping: TubMapping | None = None,
    *,
    progress: bool = False,
) -> dict[str, Any]:
    """Import DonkeyCar ``tubs`` into the new dataset ``out``; returns a summary (see
    :func:`format_tub_summary`). :class:`DatasetError` (one line) for anything wrong with a
    tub or ``out``; nothing is left at ``out`` then (see the module docstring)."""
    cfg = cfg or TubImportConfig()
    mapping = mapping or TubMapping()
    roots = [Path(t) for t in tubs]
    if not roots:
        raise DatasetError("no tubs to import")
    out = Path(out)
    t0 = time.perf_counter()
    plans: list[_TubPlan] = []
    used: Counter = Counter()
    for k, root in enumerate(roots):
        prefix = _key_part(root.resolve().name)
        used[prefix] += 1
        if used[prefix] > 1:
            prefix = f"{prefix}-{used[prefix]}"
        plans.append(_plan_tub(root, k, cfg, mapping, prefix))
    total = sum(len(ep.frames) for p in plans for ep in p.episodes)
    if total == 0:
        counts = sum((p.counts for p in plans), Counter())
        raise DatasetError(
            f"{', '.join(map(str, roots))}: nothing to import ({_counts_text(counts)}; "
            f"--modes {','.join(cfg.modes)})"
        )
    hw = _dataset_size(plans, cfg)
    hz, interval = _frame_rate(plans)
    info = {
        "env_id": None,
        "source": TUB_SOURCE,
        "renderer": "none: camera images of DonkeyCar tubs",
        "camera": {"image_size": list(hw)},
        "image_size": list(hw),
        "control_hz": hz,
        "frame_interval_ms": interval,
        "unmeasured": list(UNMEASURED_FIELDS),
        "mapping": asdict(mapping),
        "import": {
            **asdict(cfg),
            "image_size": list(cfg.image_size) if cfg.image_size else None,
            "modes": list(cfg.modes),
        },
        "tubs": [_tub_info(p) for p in plans],
    }
    tmp = _new_output(out, "import-tub")
    episodes = frames_written = 0
    try:
        writer = DatasetWriter(tmp, info)
        with (
            ThreadPoolExecutor(_WORKERS) as pool,
            tqdm(total=total, unit="frame", desc="import", disable=not progress) as bar,
        ):
            for plan in plans:
                n = 0
                for ep in plan.episodes:
                    for frames, images, ended in _decoded_runs(plan, ep, hw, cfg, pool, bar):
                        key = f"{plan.key_prefix}-{n:04d}"
                        n += 1
                        meta = _episode_meta(plan, frames, ended, cfg, mapping)
                        writer.write_episode(key, _arrays(frames, images), meta)
                        episodes += 1
                        frames_written += len(frames)
        del writer
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    counts = sum((p.counts for p in plans), Counter())
    counts["unreadable"] += total - frames_written  # images skipped with --skip-bad-records
    counts["imported"] = frames_written
    return {
        "command": "import-tub",
        "tubs": [str(r) for r in roots],
        "out": str(out),
        "episodes": episodes,
        "frames": frames_written,
        "image_size": list(hw),
        "control_hz": hz,
        "counts": {k: v for k, v in counts.items() if v},
        "seconds": time.perf_counter() - t0,
    }


def _decoded_runs(
    plan: _TubPlan,
    ep: _Episode,
    hw: tuple[int, int],
    cfg: TubImportConfig,
    pool: ThreadPoolExecutor,
    bar: tqdm,
) -> Iterable[tuple[list[_Frame], np.ndarray, str]]:
    """The episode's frames with their decoded images; with ``--skip-bad-records`` an
    unreadable image cuts it in two (the part before it ends ``"unreadable"``)."""
    images_dir = plan.root / TUB_IMAGES_DIRNAME
    images = np.empty((len(ep.frames), *hw, 3), dtype=np.uint8)

    def decode(j: int) -> str | None:
        try:
            images[j] = _decode(images_dir / ep.frames[j].image, hw, cfg.resize)
        except DatasetError as e:
            return str(e)
        return None

    problems = list(pool.map(decode, range(len(ep.frames))))
    bar.update(len(ep.frames))
    start = 0
    for j, problem in enumerate(problems):
        if problem is None:
            continue
        if not cfg.skip_bad_records:
            raise DatasetError(f"{problem}; --skip-bad-records skips such records")
        logger.warning("%s; skipped", problem)
        if j > start:
            yield ep.frames[start:j], images[start:j], "unreadable"
        start = j + 1
    if start < len(ep.frames):
        yield ep.frames[start:], images[start:], ep.ended


# --------------------------------------------------------------------------------- export


def export_tub(
    dataset: str | Path,
    out: str | Path,
    cfg: TubExportConfig | None = None,
    mapping: TubMapping | None = None,
    *,
    created_at: float | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Write the dataset at ``dataset`` as the new DonkeyCar tub ``out``; returns a summary.

    ``created_at`` (seconds since the epoch, default now) is the tub's creation time and the
    start of the timestamps of episodes that did not come from a tub: the same dataset and
    ``created_at`` give the same bytes.
    """
    cfg = cfg or TubExportConfig()
    mapping = mapping or TubMapping()
    t0 = time.perf_counter()
    ds = open_dataset(dataset)
    if len(ds) == 0:
        raise DatasetError(f"{ds.root}: the dataset has no frames to export")
    if len(ds) > MAX_TUB_RECORDS:
        raise DatasetError(
            f"{ds.root}: {len(ds)} frames, more than a tub may hold ({MAX_TUB_RECORDS}, "
            "MAX_TUB_RECORDS)"
        )
    out = Path(out)
    now = time.time() if created_at is None else float(created_at)
    metadata = {
        "trackpilot_dataset": str(Path(dataset).resolve()),
        "trackpilot_fingerprint": dataset_fingerprint(ds),
        "exported_by": "python -m sim.dataset export-tub",
        **asdict(mapping),
    }
    tmp = _new_output(out, "export-tub")
    try:
        writer = TubWriter(
            tmp, _EXPORT_INPUTS, _EXPORT_TYPES, metadata, max_len=cfg.max_len, created_at=now
        )
        images: list[Path] = []
        next_ms = int(round(now * 1000))
        with (
            ThreadPoolExecutor(_WORKERS) as pool,
            tqdm(total=len(ds), unit="frame", desc="export", disable=not progress) as bar,
        ):
            for i, rec in enumerate(ds.episodes):
                a = ds.load_episode(i, fields=["image", "steering", "throttle", "t"])
                t = a["t"].astype(np.float64)
                offsets = np.rint((t - t[0]) * 1000.0).astype(np.int64)
                start = _original_start(rec)
                start = next_ms if start is None else start
                next_ms = max(next_ms, start + int(offsets.max()) + 1000)
                writer.begin_session(start / 1000.0)
                names = []
                for k in range(len(t)):
                    name = tub_image_name(writer.current_index)
                    angle, throttle = mapping.to_donkeycar(
                        float(a["steering"][k]), float(a["throttle"][k])
                    )
                    contents = {
                        IMAGE_KEY: name,
                        "user/angle": float(angle),
                        "user/throttle": float(throttle),
                        "user/mode": "user",
                    }
                    writer.write_record(contents, start + int(offsets[k]))
                    names.append(name)
                images += pool.map(
                    _jpeg_writer(writer, a["image"], cfg.jpeg_quality), range(len(t)), names
                )
                bar.update(len(t))
        writer.close()
        fsync_files([*images, *writer.files], workers=2 * _WORKERS)
        fsync_dir(tmp / TUB_IMAGES_DIRNAME)
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {
        "command": "export-tub",
        "dataset": str(dataset),
        "out": str(out),
        "episodes": len(ds.episodes),
        "frames": len(ds),
        "catalogs": len(writer.paths),
        "seconds": time.perf_counter() - t0,
    }


def _original_start(rec: dict[str, Any]) -> int | None:
    """The first ``_timestamp_ms`` of an episode imported from a tub, else None."""
    extra = rec.get("extra") or {}
    if extra.get("importer") != "python -m sim.dataset import-tub":
        return None
    first = (extra.get("timestamp_ms") or {}).get("first")
    return int(first) if _is_int(first) else None


def _jpeg_writer(writer: TubWriter, images: np.ndarray, quality: int) -> Callable[[int, str], Path]:
    def write(k: int, name: str) -> Path:
        buf = io.BytesIO()
        # what DonkeyCar's Tub.write_record does: Image.fromarray(np.uint8(value)).save(path)
        Image.fromarray(images[k]).save(buf, format="JPEG", quality=quality)
        return writer.write_image(name, buf.getvalue())

    return write


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
