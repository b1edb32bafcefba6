"""``python -m sim.dataset import-tub``: DonkeyCar tubs into a new dataset (:func:`import_tub`).

What is imported, how a drive is cut into episodes and what each frame field holds: see
:mod:`sim.dataset.tub`. Two passes: the records of every tub are read and cut into episodes
first (JSON only, so a bad record stops the import before any image is decoded), then each
episode's images are decoded (``WORKERS`` threads) and the episode is written through
:class:`~sim.dataset.DatasetWriter` into a temporary directory, renamed into place at the end.
"""

from __future__ import annotations

import io
import logging
import math
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from sim.dataset.format import DatasetError, EpisodeMeta, _json_limit_problem
from sim.dataset.frames import FRAME_FIELDS
from sim.dataset.tub import (
    IMAGE_KEY,
    IMPORTER,
    TUB_SOURCE,
    UNMEASURED_FIELDS,
    WORKERS,
    TubImportConfig,
    TubMapping,
    _counts_text,
    _staged_output,
)
from sim.dataset.tub_format import (
    MAX_TUB_IMAGE_BYTES,
    MAX_TUB_IMAGE_SIDE,
    TUB_IMAGES_DIRNAME,
    TubLine,
    TubManifest,
    _plain_name_problem,
    iter_tub_lines,
    read_limited,
    read_tub_manifest,
)
from sim.dataset.writer import DatasetWriter
from tracks.common import format_size, parse_size
from tracks.progress import progress_bar

__all__ = ["MAX_IMPORT_EPISODE_FRAMES", "import_tub"]

logger = logging.getLogger("sim.dataset")

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
        direction=cfg.direction or "ccw",
        seed=0,
        source=TUB_SOURCE,
        laps=0,
        expert=None,
        extra={
            "importer": IMPORTER,
            "tub": str(plan.root.resolve()),
            "catalogs": sorted({f.catalog for f in frames}),
            "session_id": first.session,
            "records": {"first": first.index, "last": last.index},
            "images": {"first": first.image, "last": last.image},
            "timestamp_ms": {"first": first.timestamp_ms, "last": last.timestamp_ms},
            "modes": _segments([f.mode for f in frames]),
            "ended": ended,
            "unmeasured": list(UNMEASURED_FIELDS),
            "direction_known": cfg.direction is not None,
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
    episodes = frames_written = 0
    with _staged_output(out, "import-tub") as tmp:
        writer = DatasetWriter(tmp, info)
        with (
            ThreadPoolExecutor(WORKERS) as pool,
            progress_bar(total=total, unit="frame", desc="import", enabled=progress) as bar,
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
    bar: Any,  # a tracks.progress bar
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
