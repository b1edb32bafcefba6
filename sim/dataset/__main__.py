"""``python -m sim.dataset``: see :mod:`sim.dataset.cli`."""

from sim.dataset.cli import main

raise SystemExit(main())
