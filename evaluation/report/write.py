"""Writing a report: the requested formats as files under one directory, or as JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from evaluation.report.html_page import render_html
from evaluation.report.tables import Report
from evaluation.report.text import render_markdown, render_terminal, write_csv
from tracks.fileio import atomic_write_text

__all__ = ["FORMATS", "report_json", "write_reports"]

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
        path = out_dir / "leaderboard.html"
        atomic_write_text(path, render_html(report))
        written["html"] = [path]
    return written


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
                "score": e.score,
                "violations": e.violations,
                "stale": e.stale,
            }
            for e in report.entries
        ],
        indent=2,
    )
