"""``python -m evaluation.report``: render the leaderboard of a store."""

from evaluation.report.cli import main

raise SystemExit(main())
