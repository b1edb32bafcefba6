"""Leaderboard reports: ranking, constraint and staleness marks, and four renderings.

``python -m evaluation.report [--db FILE] [--out DIR] [--format terminal,md,csv,html]``
renders the leaderboard of a store (see :mod:`evaluation.report` for the ranking rules).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from evaluation.report.context import CONTROL_PERIOD_MS, current_context
from evaluation.report.tables import build_report
from evaluation.report.text import render_terminal
from evaluation.report.write import FORMATS, write_reports
from evaluation.store import DEFAULT_DB, DEFAULT_OUT, Store
from sim.dataset import dataset_fingerprint, open_dataset

__all__ = ["main"]


def _formats(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m evaluation.report``: render the leaderboard of a store."""
    ap = argparse.ArgumentParser(
        prog="python -m evaluation.report", description=__doc__.split("\n")[0]
    )
    ap.add_argument(
        "--db", default=str(DEFAULT_DB), help=f"leaderboard SQLite file (default {DEFAULT_DB})"
    )
    ap.add_argument(
        "--out",
        default=str(DEFAULT_OUT / "report"),
        help="directory for the report files (default: %(default)s)",
    )
    ap.add_argument(
        "--format",
        default=",".join(FORMATS),
        type=_formats,
        help=f"comma list of terminal,md,csv,html (default: {','.join(FORMATS)})",
    )
    ap.add_argument(
        "--dataset",
        default=None,
        help="the current dataset, a directory or fingerprint: rows trained on an earlier "
        "dataset of the board are flagged stale (default: none: the one the latest main-job "
        "evaluation named)",
    )
    ap.add_argument(
        "--control-period-ms",
        type=float,
        default=CONTROL_PERIOD_MS,
        help="latency constraint, ms (default: %(default)s)",
    )
    ap.add_argument(
        "--seed",
        type=int,
        default=0,
        help="unused (reports are deterministic); accepted for uniformity (default: %(default)s)",
    )
    args = ap.parse_args(argv)
    try:
        # Read only, and checked first (integrity, schema): a missing, damaged or foreign
        # file is one line naming it, and nothing is created or written.
        with Store(args.db, readonly=True) as store:
            fingerprint = args.dataset
            if fingerprint and Path(fingerprint).is_dir():
                fingerprint = dataset_fingerprint(open_dataset(fingerprint))
            ctx = current_context(store, fingerprint, args.control_period_ms)
            report = build_report(store, ctx)
        written = write_reports(report, args.out, args.format)
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if "terminal" in args.format:
        print(render_terminal(report))
    for paths in written.values():
        for p in paths:
            print(f"wrote {p}")
    return 0
