"""``python -m sim.dataset migrate``: rewrite a dataset's raw (version 1) episode files as
compressed (version 2) ones, in place or into another directory.

One episode at a time, each atomically (:meth:`DatasetWriter.write_episode`: temp file,
fsync, read back and compared with the original frames, then published in place of the old
file under the manifest lock, which is unlisted first so that a crash never leaves a listed
file with the wrong checksum). An interrupted migration leaves a valid dataset of old and
new files (a version-2 manifest reads both) and the next run goes on where it stopped.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from sim.dataset.episode_file import _episode_meta, _read_header_path
from sim.dataset.format import SCHEMA_VERSION, DatasetError, EpisodeMeta
from sim.dataset.reader import Dataset, open_dataset
from sim.dataset.writer import DatasetWriter
from tracks.common import now_iso
from tracks.progress import progress_bar

__all__ = ["migrate_dataset"]

logger = logging.getLogger("sim.dataset")

#: Header metadata key of a migrated episode file: the file it was made from.
MIGRATED_KEY = "migrated_from"


def source_header_extra(ds: Dataset, i: int) -> dict[str, Any]:
    """What an episode rewritten from episode ``i`` of ``ds`` keeps of its file's header
    metadata: when it was first written."""
    path = ds.episode_path(i)
    meta = _episode_meta(_read_header_path(path), path)
    created = meta.get("created")
    return {"created": created} if isinstance(created, str) else {}


def migrate_dataset(
    src: str | Path,
    out: str | Path | None = None,
    *,
    progress: bool = False,
) -> dict[str, Any]:
    """Rewrite every episode of ``src`` whose file is not version :data:`SCHEMA_VERSION` (into
    ``out``: every episode), verified; returns a summary (counts, bytes before and after).

    In place (``out`` None) the manifest is raised to version 2 first, then each raw file is
    replaced by its compressed twin. With ``out`` a new dataset of the same info is written
    there; episodes it already holds from this ``src`` (an interrupted run) are kept, and an
    ``out`` holding anything else is refused.
    """
    ds = open_dataset(src)
    in_place = out is None
    dest = Path(src) if in_place else Path(out)
    if not in_place and dest.resolve() == Path(src).resolve():
        raise DatasetError(f"{dest}: --out is the dataset itself; leave it out to migrate in place")
    writer = DatasetWriter(dest, ds.info)
    if not in_place and writer.info != ds.info:
        raise DatasetError(
            f"{dest}: holds another dataset (its info differs from {src}'s); migrate into a "
            "new directory"
        )
    if in_place:
        writer.upgrade_manifest()
    done = {rec["key"]: rec for rec in writer.episodes} if not in_place else {}
    summary = {"src": str(src), "out": str(dest), "migrated": 0, "kept": 0}
    summary |= {"frames": 0, "bytes_before": 0, "bytes_after": 0}
    bar = progress_bar(ds.episodes, desc="migrate", unit="ep", enabled=progress)
    for i, rec in enumerate(bar):
        key = rec["key"]
        summary["frames"] += rec["frames"]
        summary["bytes_before"] += rec["bytes"]
        if in_place:
            have = _read_header_path(ds.episode_path(i)).version
            if have == SCHEMA_VERSION:
                summary["kept"] += 1
                summary["bytes_after"] += rec["bytes"]
                continue
        elif key in done:
            _check_migrated(dest, done[key], rec, src)
            summary["kept"] += 1
            summary["bytes_after"] += done[key]["bytes"]
            continue
        arrays = ds.load_episode(i, verify=True)
        header = source_header_extra(ds, i)
        header[MIGRATED_KEY] = {"sha256": rec["sha256"], "date": now_iso()}
        new = writer.write_episode(
            key,
            arrays,
            EpisodeMeta.from_record(rec),
            overwrite=in_place,
            verify_written=True,
            header_extra=header,
            replaces=rec["sha256"] if in_place else None,
        )
        del arrays
        summary["migrated"] += 1
        summary["bytes_after"] += new["bytes"]
    return summary


def _check_migrated(dest: Path, have: dict, rec: dict, src: str | Path) -> None:
    """Episode ``have`` of ``dest`` must be the migrated twin of ``rec`` of ``src``."""
    path = dest / have["file"]
    meta = _episode_meta(_read_header_path(path), path)
    origin = meta.get(MIGRATED_KEY)
    if not isinstance(origin, dict) or origin.get("sha256") != rec["sha256"]:
        raise DatasetError(
            f"{path}: episode {rec['key']!r} is not the one of {src} (its header does not name "
            "that file as its origin); migrate into a new directory"
        )


def print_summary(s: dict[str, Any], file: Any = None) -> None:
    """The lines ``python -m sim.dataset migrate`` prints for :func:`migrate_dataset`'s result."""
    ratio = s["bytes_before"] / s["bytes_after"] if s["bytes_after"] else float("nan")
    per = s["bytes_after"] / s["frames"] if s["frames"] else 0.0
    print(
        f"migrated {s['migrated']} episodes to version {SCHEMA_VERSION} in {s['out']} "
        f"({s['kept']} already were); {s['frames']:,} frames: "
        f"{s['bytes_before'] / 1e6:,.1f} MB -> {s['bytes_after'] / 1e6:,.1f} MB "
        f"({ratio:.1f}x smaller, {per:,.0f} bytes/frame)",
        file=file or sys.stdout,
    )
