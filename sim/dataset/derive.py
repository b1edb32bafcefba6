"""New datasets from existing ones: :func:`filter_dataset` (``python -m sim.dataset filter``)
and :func:`merge_datasets` (``python -m sim.dataset merge``).

Both write a whole new dataset or nothing: it is built in a staging directory beside ``out``
and renamed into place when complete (:func:`tracks.fileio.staged_dir`); Ctrl-C leaves no
trace of it. Sources are read verified (sha256) and never changed. The new manifest's
``info`` keeps the (first) source's info and appends one step to ``info["provenance"]``:
the command, its options, each source's path and fingerprint, and what was dropped or
renamed; each derived episode lists its own steps in ``extra["derived"]`` (source key and
frame range).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sim.dataset.format import (
    DatasetError,
    EpisodeMeta,
    _check_key,
    _info_compat_value,
)
from sim.dataset.migrate import source_header_extra
from sim.dataset.reader import Dataset, open_dataset
from sim.dataset.summary import dataset_fingerprint
from sim.dataset.writer import DatasetWriter
from tracks.common import now_iso
from tracks.fileio import staged_dir
from tracks.progress import progress_bar

__all__ = ["MERGE_FIELDS", "TRIM_ENDINGS", "FilterConfig", "filter_dataset", "merge_datasets"]

logger = logging.getLogger("sim.dataset")

#: Endings whose last seconds ``--trim-offtrack-s`` drops: the car left the road (or flipped,
#: which it does only by leaving it), so those frames teach the way off it.
TRIM_ENDINGS = ("off_track", "flipped")

#: Info fields merged datasets must agree on: the same env and version, camera and image
#: size, renderer, rates, car and whether colours were randomised. Frames that differ in
#: any of these are not one distribution.
MERGE_FIELDS = (
    "env_id",
    "env_version",
    "image_size",
    "camera",
    "renderer",
    "control_hz",
    "physics_hz",
    "car",
    "domain_randomization",
)


@dataclass(frozen=True)
class FilterConfig:
    """What ``python -m sim.dataset filter`` leaves out of the new dataset."""

    trim_offtrack_s: float = 0.0  # s dropped before an off-track (or flipped) ending; 0 keeps all
    drop_takeovers: bool = False  # drop frames where a person overrode the autopilot
    drop_episodes: tuple[str, ...] = ()  # comma list of episode keys to leave out

    def __post_init__(self) -> None:
        if not (math.isfinite(self.trim_offtrack_s) and self.trim_offtrack_s >= 0):
            raise ValueError(f"trim_offtrack_s must be >= 0 s, got {self.trim_offtrack_s}")
        for key in self.drop_episodes:
            _check_key(key)


@dataclass(frozen=True)
class _Part:
    """One episode of the new dataset: frames ``lo:hi`` of a source episode."""

    key: str
    lo: int
    hi: int
    meta: EpisodeMeta


def _derived_meta(rec: dict, step: dict, **changes: Any) -> EpisodeMeta:
    """The metadata of an episode made from record ``rec`` by ``step`` (added to its
    ``extra["derived"]``), with ``changes`` (``ended``, ``laps``) applied."""
    meta = asdict(EpisodeMeta.from_record(rec))
    extra = dict(meta["extra"])
    extra["derived"] = [*extra.get("derived", []), step]
    return EpisodeMeta(**{**meta, "extra": extra, **changes})


def _runs(keep: np.ndarray) -> list[tuple[int, int]]:
    """``[(start, stop)]`` of the runs of True in ``keep``."""
    edges = np.diff(np.concatenate([[0], keep.astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()
    return list(zip(starts, stops, strict=True))


def _was_trimmed(rec: dict) -> bool:
    steps = (rec.get("extra") or {}).get("derived", [])
    return isinstance(steps, list) and any(
        isinstance(s, dict) and s.get("trimmed_s") for s in steps
    )


def _source_entry(path: str | Path, ds: Dataset) -> dict[str, Any]:
    return {
        "path": str(path),
        "fingerprint": dataset_fingerprint(ds),
        "episodes": ds.num_episodes,
        "frames": len(ds),
    }


def _write_all(
    out: str | Path,
    info: dict,
    plan: Sequence[tuple[Dataset, int, list[_Part]]],
    progress: bool,
    desc: str,
) -> list[dict]:
    """Write the new dataset at ``out`` (staged: all or nothing): for each ``(ds, i, parts)``
    of ``plan``, episode ``i`` of ``ds`` is read (verified) and each part written. Returns
    the records written."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError(f"{out}: exists and is not an empty directory; choose a new --out")
    if not any(parts for _, _, parts in plan):
        raise DatasetError(f"{out}: nothing would be left; no dataset written")
    written: list[dict] = []
    with staged_dir(out) as root:
        writer = DatasetWriter(root, info)
        for ds, i, parts in progress_bar(plan, desc=desc, unit="ep", enabled=progress):
            if not parts:
                continue
            arrays = ds.load_episode(i, verify=True)
            header = source_header_extra(ds, i)
            for p in parts:
                frames = {k: v[p.lo : p.hi] for k, v in arrays.items()}
                written.append(writer.write_episode(p.key, frames, p.meta, header_extra=header))
            del arrays
    return written


def filter_dataset(
    src: str | Path, out: str | Path, cfg: FilterConfig, *, progress: bool = False
) -> dict[str, Any]:
    """Write the dataset ``src`` without what ``cfg`` drops to ``out``; returns a summary.

    ``trim_offtrack_s``: episodes that ended off the road (or flipped) lose the frames of
    their last ``trim_offtrack_s`` seconds (by the ``t`` field; once: an episode trimmed by
    an earlier filter is not trimmed again). ``drop_takeovers``: frames a person drove over
    the autopilot are dropped; an episode they split becomes several, ``KEY-p0``,
    ``KEY-p1``... (every part but the last ends ``"split"``, and counts its own laps).
    Per-frame fields keep their values (``t`` and ``progress`` are not shifted). An episode
    left without frames is dropped. Unknown ``drop_episodes`` keys are an error (a typo
    would drop nothing).
    """
    ds = open_dataset(src)
    unknown = sorted(set(cfg.drop_episodes) - set(ds.keys))
    if unknown:
        raise DatasetError(f"{src}: no episodes {unknown} (see `python -m sim.dataset info {src}`)")
    stats: dict[str, Any] = {"dropped_episodes": sorted(cfg.drop_episodes), "emptied_episodes": []}
    stats |= {"trimmed_episodes": 0, "trimmed_frames": 0, "takeover_frames_dropped": 0}
    plan: list[tuple[Dataset, int, list[_Part]]] = []
    keys = set(ds.keys)
    for i, rec in enumerate(ds.episodes):
        if rec["key"] in cfg.drop_episodes:
            continue
        # the plan reads labels only; the frames are read (verified) when written
        a = ds.load_episode(i, fields=["t", "takeover", "lap"], verify=False)
        n = len(a["t"])
        keep = np.ones(n, dtype=bool)
        step: dict[str, Any] = {"command": "filter", "key": rec["key"]}
        trim = cfg.trim_offtrack_s
        if (
            trim > 0
            and EpisodeMeta.from_record(rec).ended in TRIM_ENDINGS
            and not _was_trimmed(rec)
        ):
            keep &= a["t"] <= a["t"][-1] - trim
            stats["trimmed_episodes"] += 1
            stats["trimmed_frames"] += int(n - keep.sum())
            step["trimmed_s"] = trim
        if cfg.drop_takeovers:
            taken = (a["takeover"] != 0) & keep
            stats["takeover_frames_dropped"] += int(taken.sum())
            step["takeover_frames_dropped"] = int(taken.sum())
            keep &= ~taken
        runs = _runs(keep)
        if not runs:
            stats["emptied_episodes"].append(rec["key"])
        parts = []
        for j, (lo, hi) in enumerate(runs):
            changes: dict[str, Any] = {}
            key = rec["key"]
            if len(runs) > 1:
                key = f"{key}-p{j}"
                if key in keys:
                    raise DatasetError(
                        f"{src}: cannot name a part of {rec['key']!r} {key!r}: taken"
                    )
                changes["laps"] = max(0, int(a["lap"][hi - 1]) - int(a["lap"][lo]))
                if j < len(runs) - 1:
                    changes["ended"] = "split"
            parts.append(
                _Part(key, lo, hi, _derived_meta(rec, {**step, "frames": [lo, hi]}, **changes))
            )
        plan.append((ds, i, parts))
    prov = {
        "command": "filter",
        "date": now_iso(),
        "sources": [_source_entry(src, ds)],
        "options": {**asdict(cfg), "drop_episodes": list(cfg.drop_episodes)},
        "result": stats,
    }
    info = {**ds.info, "provenance": [*ds.info.get("provenance", []), prov]}
    written = _write_all(out, info, plan, progress, "filter")
    return {
        **stats,
        "src": str(src),
        "out": str(out),
        "episodes": len(written),
        "frames": sum(r["frames"] for r in written),
        "source_episodes": ds.num_episodes,
        "source_frames": len(ds),
    }


def merge_datasets(
    sources: Sequence[str | Path], out: str | Path, *, progress: bool = False
) -> dict[str, Any]:
    """Write the episodes of every dataset in ``sources`` to one new dataset at ``out``.

    The sources must agree on :data:`MERGE_FIELDS` (else :class:`DatasetError` naming the
    field and both values); other info fields that differ are listed in the provenance. An
    episode key in two sources is kept once when the files are identical (same sha256),
    else the later one becomes ``KEY-mJ`` (J: its source's position, from 0).
    """
    if len(sources) < 2:
        raise ValueError("merge needs at least two datasets")
    dss = [open_dataset(s) for s in sources]
    first = dss[0].info
    for path, ds in zip(sources[1:], dss[1:], strict=True):
        for name in MERGE_FIELDS:
            a, b = _info_compat_value(first, name), _info_compat_value(ds.info, name)
            if a != b:
                raise DatasetError(
                    f"cannot merge {path} with {sources[0]}: {name} is {b!r} in {path} but "
                    f"{a!r} in {sources[0]}"
                )
    names = sorted({k for ds in dss for k in ds.info} - set(MERGE_FIELDS) - {"provenance"})
    differ = {
        k: [ds.info.get(k) for ds in dss]
        for k in names
        if any(ds.info.get(k) != first.get(k) for ds in dss)
    }
    taken = {k for ds in dss for k in ds.keys}
    seen: dict[str, str] = {}
    stats: dict[str, Any] = {"duplicates": 0, "renamed": {}}
    plan: list[tuple[Dataset, int, list[_Part]]] = []
    for j, ds in enumerate(dss):
        for i, rec in enumerate(ds.episodes):
            key = rec["key"]
            if key in seen:
                if seen[key] == rec["sha256"]:
                    stats["duplicates"] += 1
                    continue
                key = f"{key}-m{j}"
                if key in seen or key in taken:
                    raise DatasetError(
                        f"{sources[j]}: episode {rec['key']!r} clashes with another of that "
                        f"key, and {key!r} is taken too"
                    )
                stats["renamed"][f"{j}:{rec['key']}"] = key
            seen[key] = rec["sha256"]
            meta = _derived_meta(rec, {"command": "merge", "source": j, "key": rec["key"]})
            plan.append((ds, i, [_Part(key, 0, rec["frames"], meta)]))
    entries = [
        {**_source_entry(p, ds), "provenance": ds.info.get("provenance", [])}
        for p, ds in zip(sources, dss, strict=True)
    ]
    prov = {"command": "merge", "date": now_iso(), "sources": entries}
    prov |= {"info_differences": differ, "result": stats}
    info = {**{k: v for k, v in first.items() if k != "provenance"}, "provenance": [prov]}
    written = _write_all(out, info, plan, progress, "merge")
    return {
        **stats,
        "sources": [str(s) for s in sources],
        "out": str(out),
        "episodes": len(written),
        "frames": sum(r["frames"] for r in written),
    }
