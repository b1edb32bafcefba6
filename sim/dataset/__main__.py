"""``python -m sim.dataset``: see :mod:`sim.dataset.cli`."""

from sim.dataset.cli import main
from tracks.cli import run_main

raise SystemExit(run_main(main))
