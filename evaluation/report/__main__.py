"""``python -m evaluation.report``: render the leaderboard of a store."""

from evaluation.report.cli import main
from tracks.cli import run_main

raise SystemExit(run_main(main))
