"""What a dataset holds: :func:`dataset_summary` (counts, label statistics, fingerprint),
its text rendering for ``python -m sim.dataset info``, and :func:`dataset_fingerprint`."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import numpy as np

from sim.dataset.episode_file import _read_header_path
from sim.dataset.format import FORMAT_NAME, SCHEMA_VERSION
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
    image_hw = ds.image_size
    if image_hw is None and recs:
        image_hw = _read_header_path(ds.episode_path(0)).image_hw
    return {
        "root": str(ds.root),
        "format": FORMAT_NAME,
        "schema_version": SCHEMA_VERSION,
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
        "steering_mean": float(steering.mean(dtype=np.float64)) if frames else 0.0,
        "steering_histogram": _steering_histogram(steering, bins),
        "fingerprint": dataset_fingerprint(ds),
        "info": ds.info,
    }


def dataset_fingerprint(ds: Dataset) -> str:
    """sha256 over the sorted (key, sha256) pairs: identifies exactly which data a model saw."""
    h = hashlib.sha256()
    for key, sha in sorted((rec["key"], rec["sha256"]) for rec in ds.episodes):
        h.update(f"{key}\t{sha}\n".encode())
    return h.hexdigest()


def format_summary(s: dict[str, Any]) -> str:
    """The text ``python -m sim.dataset info`` prints for a :func:`dataset_summary`."""
    lines = [f"dataset      {s['root']}"]
    lines.append(f"frames       {s['frames']:,} in {s['episodes']:,} episodes ({s['laps']:,} laps)")
    hw = s["image_size"]
    img = f"{hw[0]}x{hw[1]}x3 uint8" if hw else "?"
    lines.append(f"images       {img}, {s['bytes_per_frame']:,.0f} bytes/frame on disk")
    lines.append(f"disk         {s['bytes'] / 1e6:,.1f} MB")
    lines.append(f"takeover     {s['takeover_frames']:,} frames")
    lines.append(f"fingerprint  {s['fingerprint']}")
    for title, key in (
        ("track", "by_track"),
        ("direction", "by_direction"),
        ("source", "by_source"),
    ):
        lines.append(f"by {title}:")
        for name, d in s[key].items():
            lines.append(f"  {name:<24} {d['episodes']:>6,} episodes {d['frames']:>10,} frames")
    hist = s["steering_histogram"]
    peak = max(hist["counts"], default=0) or 1
    lines.append(f"steering histogram (mean {s['steering_mean']:+.3f}, + = left):")
    for lo, hi, c in zip(hist["edges"][:-1], hist["edges"][1:], hist["counts"], strict=True):
        bar = "#" * math.ceil(40 * c / peak) if c else ""
        lines.append(f"  [{lo:+.2f}, {hi:+.2f}) {c:>9,} {bar}")
    lines.append("info:")
    lines.extend("  " + line for line in json.dumps(s["info"], indent=2).splitlines())
    return "\n".join(lines)
