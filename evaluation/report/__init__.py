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
  The latency judged is the entry's own median on its target (measured here, replayed
  from a profile, or estimated for a car computer); fixed and zero settings are judged on
  the pilot's offline latency.
- **Stale** rows: measured on other hardware (their latencies do not apply here), profiled
  on another device than the target's latest profile or for another model, estimated with
  car constants that have changed since, from a checkpoint trained on an earlier dataset of
  the board than the current one (pilots trained on data the board never used are not
  compared), or written by another (older) code version. Stale entries are flagged, not
  dropped (:mod:`evaluation.report.context` has the rules).

- **Robustness**: runs with domain randomisation (``domain_randomization``: seeded
  colours, light and camera pose on the same held-out tracks) are kept out of the score
  and the ranking; their own score is the entry's robustness, shown beside the clean one
  with the change (a pilot that drives only on the training palette drops there).
- **Seeds**: with several seeds per track and direction, the score shows the sample
  standard deviation of the per-seed scores (``65.0 ± 14.1``), and a table gives mean ±
  spread per track and direction.

How numbers are written (F1 as ``0.850``, laps with their interventions as ``4/4 (14
interv.)``, parameters and weights on disk as ``45.2k / 181 kB``) is
:mod:`evaluation.report.formats`, the same in every rendering.

An *entry* is one pilot (name + checkpoint sha256) on one *target* (this machine, a car
computer or a profiled device: the row's ``car``) at one latency setting; its runs are the
newest row for each (track, track geometry, direction, speed, laps, seed). Every table
shows the target; entries are sorted by target (this machine first) and ranked within it,
so each target has its own board (in HTML, a header row per target).

The recipe (a slow but accurate classifier looks good offline and crashes on the car):
:mod:`evaluation.report.recipe` puts each pilot's offline macro F1 and counted MFLOP beside
its runtime and closed-loop result on every target (the Markdown and HTML "recipe's
table") and draws macro F1 against latency with each target's Pareto front (HTML).

One module per job, every name re-exported here:

- ``context``: :class:`Context` (this machine, code version, dataset) and the stale marks;
- ``ranking``: run scores, :class:`Entry`, :func:`rank_entries`, :func:`sweep_summary`;
- ``recipe``: the recipe's table rows, the F1-vs-latency points, :func:`pareto_front`;
- ``formats``: how F1, parameter counts, bytes, laps and spreads are written (one way,
  every rendering);
- ``tables``: :class:`Report` (computed once from the store) and its :class:`Table` s;
- ``text``: terminal, Markdown and CSV; ``figures``: the PNG plots; ``html_page``: the page;
- ``write``: :func:`write_reports` (and the run videos copied beside the page);
  ``cli``: ``python -m evaluation.report``.
"""

from __future__ import annotations

from evaluation.report.cli import main
from evaluation.report.context import (
    CONTROL_PERIOD_MS,
    THIS_MACHINE,
    Context,
    car_model_hash,
    code_version,
    current_context,
    latest_profile_hardware,
    stale_reasons,
)
from evaluation.report.figures import (
    f1_latency_figure,
    learning_curve_figure,
    sweep_figure,
    trajectory_figures,
)
from evaluation.report.formats import (
    format_bytes,
    format_count,
    format_f1,
    laps_cell,
    mean_sd,
    mean_sd_cell,
    model_cell,
)
from evaluation.report.html_page import render_html
from evaluation.report.ranking import (
    Entry,
    completion,
    latest_offline,
    rank_entries,
    run_score,
    sweep_summary,
)
from evaluation.report.recipe import (
    F1Point,
    RecipeRow,
    TargetColumn,
    f1_latency_points,
    pareto_front,
    recipe_rows,
)
from evaluation.report.tables import (
    Report,
    Table,
    build_report,
    frame_counts,
    robustness_cell,
    run_video,
    score_cell,
)
from evaluation.report.text import render_markdown, render_terminal, write_csv
from evaluation.report.write import (
    FORMATS,
    VIDEO_DIRNAME,
    copy_videos,
    report_json,
    write_reports,
)

__all__ = [
    "CONTROL_PERIOD_MS",
    "FORMATS",
    "THIS_MACHINE",
    "VIDEO_DIRNAME",
    "Context",
    "Entry",
    "F1Point",
    "RecipeRow",
    "Report",
    "Table",
    "TargetColumn",
    "build_report",
    "car_model_hash",
    "code_version",
    "completion",
    "copy_videos",
    "current_context",
    "f1_latency_figure",
    "f1_latency_points",
    "format_bytes",
    "format_count",
    "format_f1",
    "frame_counts",
    "latest_offline",
    "laps_cell",
    "latest_profile_hardware",
    "learning_curve_figure",
    "main",
    "mean_sd",
    "mean_sd_cell",
    "model_cell",
    "pareto_front",
    "rank_entries",
    "recipe_rows",
    "render_html",
    "render_markdown",
    "render_terminal",
    "report_json",
    "robustness_cell",
    "run_score",
    "run_video",
    "score_cell",
    "stale_reasons",
    "sweep_figure",
    "sweep_summary",
    "trajectory_figures",
    "write_csv",
    "write_reports",
]
