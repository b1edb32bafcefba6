"""``python -m sim.dataset export-tub``: a dataset as a new DonkeyCar tub (:func:`export_tub`).

One session per episode, one record per frame (see :mod:`sim.dataset.tub`), written by
:class:`~sim.dataset.tub_format.TubWriter` into a temporary directory; the JPEGs are encoded
by ``WORKERS`` threads, every file is fsynced, and the tub is renamed into place at the end.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sim.dataset.format import DatasetError, _is_int
from sim.dataset.reader import open_dataset
from sim.dataset.summary import dataset_fingerprint
from sim.dataset.tub import (
    IMAGE_KEY,
    IMPORTER,
    WORKERS,
    TubExportConfig,
    TubMapping,
    _staged_output,
)
from sim.dataset.tub_format import (
    MAX_TUB_RECORDS,
    TUB_IMAGES_DIRNAME,
    TubWriter,
    tub_image_name,
)
from tracks.fileio import fsync_dir, fsync_files
from tracks.progress import progress_bar

__all__ = ["export_tub"]

_INPUTS = (IMAGE_KEY, "user/angle", "user/throttle", "user/mode")
_TYPES = ("image_array", "float", "float", "str")


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
    with _staged_output(out, "export-tub") as tmp:
        writer = TubWriter(tmp, _INPUTS, _TYPES, metadata, max_len=cfg.max_len, created_at=now)
        images: list[Path] = []
        next_ms = int(round(now * 1000))
        with (
            ThreadPoolExecutor(WORKERS) as pool,
            progress_bar(total=len(ds), unit="frame", desc="export", enabled=progress) as bar,
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
        fsync_files([*images, *writer.files], workers=2 * WORKERS)
        fsync_dir(tmp / TUB_IMAGES_DIRNAME)
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
    if extra.get("importer") != IMPORTER:
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
