"""The two ways a behaviour-cloning run fails, and how the command line reports them."""

from __future__ import annotations

__all__ = ["RunError", "TrainingDiverged"]


class RunError(ValueError):
    """Bad input (data, flags, run directory): reported as one ``error:`` line, exit 2."""


class TrainingDiverged(RuntimeError):
    """The loss or a dev metric became NaN/inf; the best checkpoint was left untouched."""
