"""Writing a report: the requested formats as files under one directory, or as JSON."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from evaluation.report.html_page import render_html
from evaluation.report.tables import Report
from evaluation.report.text import render_markdown, render_terminal, write_csv
from tracks.fileio import atomic_write_bytes, atomic_write_text, sha256_file

__all__ = ["FORMATS", "VIDEO_DIRNAME", "copy_videos", "report_json", "write_reports"]

FORMATS = ("terminal", "md", "csv", "html")


def write_reports(
    report: Report, out_dir: str | Path, formats: Sequence[str] = FORMATS
) -> dict[str, list[Path]]:
    """Write the requested formats under ``out_dir`` (``terminal`` is printed, not written:
    it maps to ``leaderboard.txt``). Returns the paths per format."""
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"unknown report format(s) {bad}; choose from {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[Path]] = {}
    if "terminal" in formats:
        path = out_dir / "leaderboard.txt"
        atomic_write_text(path, render_terminal(report))
        written["terminal"] = [path]
    if "md" in formats:
        path = out_dir / "leaderboard.md"
        atomic_write_text(path, render_markdown(report))
        written["md"] = [path]
    if "csv" in formats:
        written["csv"] = write_csv(report, out_dir)
    if "html" in formats:
        links = copy_videos(report, out_dir)
        path = out_dir / "leaderboard.html"
        atomic_write_text(path, render_html(report, video_links=links))
        written["html"] = [path]
    return written


#: Where :func:`copy_videos` puts the run videos, beside the HTML page.
VIDEO_DIRNAME = "videos"
_COPY_RE = re.compile(r"^[0-9a-f]{12}-[^/]+\.mp4$")


def copy_videos(report: Report, out_dir: str | Path) -> dict[str, str]:
    """Copy each run video that exists into ``out_dir/videos/`` and return
    ``{video path: href relative to out_dir}``.

    A copy is named by the first 12 hex digits of its sha256 and its own name, so the same
    file is copied once and two runs' files never overwrite each other; copies are written
    atomically and only when missing. Earlier copies no run refers to any more are removed
    (only files named that way: nothing else in the directory is touched). The report
    directory then holds everything the page shows and can be moved as a whole.
    """
    target = Path(out_dir) / VIDEO_DIRNAME
    links: dict[str, str] = {}
    keep: set[str] = set()
    for *_, video in report.run_videos():
        src = Path(video)
        if video in links or not src.is_file():
            continue
        name = f"{sha256_file(src)[:12]}-{src.name}"
        keep.add(name)
        if not (target / name).is_file():
            target.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(target / name, src.read_bytes())
        links[video] = f"{VIDEO_DIRNAME}/{name}"
    if target.is_dir():
        for old in target.iterdir():
            if _COPY_RE.match(old.name) and old.name not in keep:
                old.unlink()
    return links


def report_json(report: Report) -> str:
    """The ranking as JSON (for scripts)."""
    return json.dumps(
        [
            {
                "rank": e.rank,
                "pilot": e.pilot,
                "latency": e.latency_label,
                "target": e.target,
                "target_label": e.target_label,
                "score": e.score if e.runs else None,
                "score_sd": e.score_sd,
                "seeds": e.seeds,
                "robust_score": e.robust_score,
                "num_parameters": e.num_parameters,
                "model_bytes": e.model_bytes,
                "violations": e.violations,
                "stale": e.stale,
            }
            for e in report.entries
        ],
        indent=2,
    )
