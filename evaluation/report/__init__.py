"""Leaderboard reports: ranking, constraint and staleness marks, and four renderings.

``python -m evaluation.report [--db FILE] [--out DIR] [--format terminal,md,csv,html]``

Ranking (the satisficing recipe: one optimizing number, constraints that must hold):

- **Score** (optimizing): for every closed-loop run of an entry, ``autonomy/100`` (clamped to
  [0, 1]) times the completed fraction of the target laps (capped at 1); the score is 100
  times the mean over the entry's runs (held-out track x direction x seed). 100 means every
  lap of every run driven without a single intervention. Ties break on the lower mean
  ``|cross-track error|``, then the lower mean lap time.
- **Constraints** (satisficing): the median inference latency must fit the control period
  (``latency <= 50 ms`` at 20 Hz), and the car must never flip. An entry that breaks one
  keeps its score but is ranked below every entry that satisfies them, and is marked
  (``✗ latency 180 ms > 50 ms``): marked, never hidden.
- **Stale** rows: measured on other hardware (their latencies do not apply here), from a
  checkpoint trained on another dataset than the current one, or written by another (older)
  code version. Stale entries are flagged, not dropped.

An *entry* is one pilot (name + checkpoint sha256) at one latency setting; its runs are the
newest row for each (track, track geometry, direction, speed, laps, seed).

One module per job, every name re-exported here:

- ``context``: :class:`Context` (this machine, code version, dataset) and the stale marks;
- ``ranking``: run scores, :class:`Entry`, :func:`rank_entries`, :func:`sweep_summary`;
- ``tables``: :class:`Report` (computed once from the store) and its :class:`Table` s;
- ``text``: terminal, Markdown and CSV; ``figures``: the PNG plots; ``html_page``: the page;
- ``write``: :func:`write_reports`; ``cli``: ``python -m evaluation.report``.
"""

from __future__ import annotations

from evaluation.report.cli import main
from evaluation.report.context import (
    CONTROL_PERIOD_MS,
    Context,
    code_version,
    current_context,
    stale_reasons,
)
from evaluation.report.figures import learning_curve_figure, sweep_figure, trajectory_figures
from evaluation.report.html_page import render_html
from evaluation.report.ranking import (
    Entry,
    completion,
    latest_offline,
    rank_entries,
    run_score,
    sweep_summary,
)
from evaluation.report.tables import Report, Table, build_report
from evaluation.report.text import render_markdown, render_terminal, write_csv
from evaluation.report.write import FORMATS, report_json, write_reports

__all__ = [
    "CONTROL_PERIOD_MS",
    "FORMATS",
    "Context",
    "Entry",
    "Report",
    "Table",
    "build_report",
    "code_version",
    "completion",
    "current_context",
    "latest_offline",
    "learning_curve_figure",
    "main",
    "rank_entries",
    "render_html",
    "render_markdown",
    "render_terminal",
    "report_json",
    "run_score",
    "stale_reasons",
    "sweep_figure",
    "sweep_summary",
    "trajectory_figures",
    "write_csv",
    "write_reports",
]
