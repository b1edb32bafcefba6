"""What a dataset holds: :func:`dataset_summary` (counts, label statistics, fingerprint),
its text rendering for ``python -m sim.dataset info``, and :func:`dataset_fingerprint`."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import numpy as np

from sim.dataset.episode_file import _read_header_path
from sim.dataset.format import ENDINGS, FORMAT_NAME, DatasetError, episode_ending
from sim.dataset.reader import Dataset

__all__ = ["dataset_fingerprint", "dataset_summary", "format_summary"]


def _steering_histogram(steering: np.ndarray, bins: int) -> dict[str, list]:
    counts, edges = np.histogram(steering, bins=bins, range=(-1.0, 1.0))
    return {"edges": [round(float(e), 6) for e in edges], "counts": counts.tolist()}


def dataset_summary(ds: Dataset, bins: int = 21) -> dict[str, Any]:
    """Counts and label statistics of a dataset, JSON-serialisable."""
    recs = ds.episodes
    frames = len(ds)
    nbytes = sum(rec["bytes"] for rec in recs)

    def by(name: str) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for rec in recs:
            d = out.setdefault(str(rec[name]), {"episodes": 0, "frames": 0})
            d["episodes"] += 1
            d["frames"] += rec["frames"]
        return dict(sorted(out.items()))

    # a quick look reads only the labels; `python -m sim.dataset validate` checks the files
    labels = ds.load_arrays(fields=["steering", "takeover"], verify=False)
    steering = labels["steering"]
    takeovers = np.bincount(
        labels["episode"], weights=labels["takeover"], minlength=len(recs)
    ).astype(np.int64)
    versions = _file_versions(ds)
    image_hw = ds.image_size
    if image_hw is None and recs:
        image_hw = _read_header_path(ds.episode_path(0)).image_hw
    endings = [episode_ending(rec) for rec in recs]
    return {
        "root": str(ds.root),
        "format": FORMAT_NAME,
        "schema_version": ds.manifest["schema_version"],
        "file_versions": {str(v): versions.count(v) for v in sorted(set(versions))},
        "created": ds.manifest.get("created"),
        "episodes": len(recs),
        "frames": frames,
        "laps": sum(rec.get("laps", 0) for rec in recs),
        "bytes": nbytes,
        "bytes_per_frame": nbytes / frames if frames else 0.0,
        "image_size": list(image_hw) if image_hw else None,
        "takeover_frames": int(labels["takeover"].sum(dtype=np.int64)),
        "by_track": by("track_id"),
        "by_direction": by("direction"),
        "by_source": by("source"),
        "by_ending": {
            e: {
                "episodes": endings.count(e),
                "frames": sum(r["frames"] for r, x in zip(recs, endings, strict=True) if x == e),
            }
            for e in ENDINGS
            if e in endings
        },
        "per_episode": [
            {
                "key": rec["key"],
                "track_id": rec["track_id"],
                "direction": rec["direction"],
                "source": rec["source"],
                "frames": rec["frames"],
                "laps": rec.get("laps", 0),
                "ended": ending,
                "takeover_frames": int(tk),
                "file_version": v,
            }
            for rec, ending, tk, v in zip(recs, endings, takeovers, versions, strict=True)
        ],
        "steering_mean": float(steering.mean(dtype=np.float64)) if frames else 0.0,
        "steering_histogram": _steering_histogram(steering, bins),
        "fingerprint": dataset_fingerprint(ds),
        "info": ds.info,
    }


def _file_versions(ds: Dataset) -> list[int | None]:
    """Each episode file's layout version (1 raw, 2 compressed; None: unreadable header)."""
    out: list[int | None] = []
    for i in range(len(ds.episodes)):
        try:
            out.append(_read_header_path(ds.episode_path(i)).version)
        except (OSError, DatasetError):
            out.append(None)
    return out


def dataset_fingerprint(ds: Dataset) -> str:
    """sha256 over the sorted (key, sha256) pairs: identifies exactly which data a model saw."""
    h = hashlib.sha256()
    for key, sha in sorted((rec["key"], rec["sha256"]) for rec in ds.episodes):
        h.update(f"{key}\t{sha}\n".encode())
    return h.hexdigest()


_VERSION_NAMES = {"1": "raw (version 1)", "2": "compressed (version 2)"}


def format_summary(s: dict[str, Any]) -> str:
    """The text ``python -m sim.dataset info`` prints for a :func:`dataset_summary`."""
    lines = [f"dataset      {s['root']}"]
    lines.append(f"frames       {s['frames']:,} in {s['episodes']:,} episodes ({s['laps']:,} laps)")
    hw = s["image_size"]
    img = f"{hw[0]}x{hw[1]}x3 uint8" if hw else "?"
    lines.append(f"images       {img}, {s['bytes_per_frame']:,.0f} bytes/frame on disk")
    lines.append(f"disk         {s['bytes'] / 1e6:,.1f} MB")
    files = ", ".join(
        f"{n:,} {_VERSION_NAMES.get(v, 'unreadable')}" for v, n in s["file_versions"].items()
    )
    lines.append(f"format       schema_version {s['schema_version']}; episode files: {files}")
    if "1" in s["file_versions"]:
        lines.append(
            f"             (`python -m sim.dataset migrate {s['root']}` compresses the raw ones)"
        )
    lines.append(f"takeover     {s['takeover_frames']:,} frames")
    lines.append(f"fingerprint  {s['fingerprint']}")
    for title, key in (
        ("track", "by_track"),
        ("direction", "by_direction"),
        ("source", "by_source"),
        ("ending", "by_ending"),
    ):
        lines.append(f"by {title}:")
        for name, d in s[key].items():
            lines.append(f"  {name:<24} {d['episodes']:>6,} episodes {d['frames']:>10,} frames")
    lines.append("episodes:")
    eps = s["per_episode"]
    kw = max([3, *(len(e["key"]) for e in eps)])
    tw = max([5, *(len(e["track_id"]) for e in eps)])
    lines.append(
        f"  {'key':<{kw}} {'track':<{tw}} {'dir':<4} {'source':<9} {'frames':>7} {'laps':>4} "
        f"{'ended':<10} {'takeover':>8}"
    )
    for e in eps:
        lines.append(
            f"  {e['key']:<{kw}} {e['track_id']:<{tw}} {e['direction']:<4} {e['source']:<9} "
            f"{e['frames']:>7,} {e['laps']:>4} {e['ended']:<10} {e['takeover_frames']:>8,}"
        )
    hist = s["steering_histogram"]
    peak = max(hist["counts"], default=0) or 1
    lines.append(f"steering histogram (mean {s['steering_mean']:+.3f}, + = left):")
    for lo, hi, c in zip(hist["edges"][:-1], hist["edges"][1:], hist["counts"], strict=True):
        bar = "#" * math.ceil(40 * c / peak) if c else ""
        lines.append(f"  [{lo:+.2f}, {hi:+.2f}) {c:>9,} {bar}")
    lines.append("info:")
    lines.extend("  " + line for line in json.dumps(s["info"], indent=2).splitlines())
    return "\n".join(lines)
