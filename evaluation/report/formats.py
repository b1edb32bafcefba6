"""How the report writes its numbers, once, for every rendering (terminal, Markdown, CSV,
HTML): F1, parameter counts, bytes, laps with their interventions, mean ± spread.

- **F1** (macro and per class, precision and recall beside it): a fraction with three
  decimals, ``0.850``, everywhere; the CSV files hold the same text.
- **Laps** never stand alone beside crashes: a run goes on after an intervention (the car
  is put back on the road), so ``4/4`` laps may have needed rescues; :func:`laps_cell`
  writes ``4/4 (14 interv.)`` then, and ``4/4`` only for laps driven without one.
- **Spread** over seeds: ``87.5 ± 5.2``, the sample standard deviation.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from typing import Any

__all__ = [
    "format_bytes",
    "format_count",
    "format_f1",
    "laps_cell",
    "mean_sd",
    "mean_sd_cell",
    "model_cell",
]


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def format_f1(value: Any, none: str = "–") -> str:
    """An F1 score (or precision, recall) in [0, 1]: ``0.850``."""
    x = _num(value)
    return none if x is None else f"{x:.3f}"


def _scaled(value: Any, units: tuple[tuple[float, str], ...], fmt: str, none: str) -> str:
    x = _num(value)
    if x is None:
        return none
    for div, unit in units:
        if abs(x) >= div:
            return f"{x / div:.3g}{unit}"
    return format(x, fmt)


def format_count(value: Any, none: str = "–") -> str:
    """A parameter count: ``812``, ``45.2k``, ``11.2M``."""
    return _scaled(value, ((1e9, "G"), (1e6, "M"), (1e3, "k")), ".0f", none)


def format_bytes(value: Any, none: str = "–") -> str:
    """Bytes on disk in decimal units: ``812 B``, ``181 kB``, ``44.7 MB``."""
    x = _num(value)
    if x is not None and abs(x) < 1e3:
        return f"{x:.0f} B"
    return _scaled(x, ((1e9, " GB"), (1e6, " MB"), (1e3, " kB")), ".0f", none)


def model_cell(num_parameters: Any, model_bytes: Any) -> str:
    """``45.2k / 181 kB`` (parameters / weights on disk); ``–`` for a pilot without weights."""
    if _num(num_parameters) is None and _num(model_bytes) is None:
        return "–"
    return f"{format_count(num_parameters)} / {format_bytes(model_bytes)}"


def laps_cell(completed: Any, target: Any, interventions: Any) -> str:
    """``4/4`` when no intervention was needed, else ``4/4 (14 interv.)``: laps counted
    with the car put back on the road are never shown as if driven."""
    done = int(_num(completed) or 0)
    goal = _num(target)
    text = f"{done}/{int(goal) if goal is not None else '?'}"
    n = _num(interventions)
    if n:
        text += f" ({int(n)} interv.)"
    return text


def mean_sd(values: Iterable[Any]) -> tuple[float | None, float | None, int]:
    """``(mean, sample standard deviation, n)`` of the finite values; the deviation is
    None below two values."""
    vals = [f for f in (_num(v) for v in values) if f is not None]
    if not vals:
        return None, None, 0
    sd = statistics.stdev(vals) if len(vals) > 1 else None
    return statistics.fmean(vals), sd, len(vals)


def mean_sd_cell(values: Iterable[Any], fmt: str = ".1f") -> str:
    """``87.5 ± 5.2`` (mean ± sample standard deviation), ``87.5`` for one value, ``–``
    for none."""
    mean, sd, _ = mean_sd(values)
    if mean is None:
        return "–"
    return format(mean, fmt) + ("" if sd is None else f" ± {format(sd, fmt)}")
