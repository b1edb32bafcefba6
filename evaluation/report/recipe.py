"""The recipe's evidence: a slow but accurate classifier looks good offline and crashes on
the car.

- :func:`recipe_rows`: one :class:`RecipeRow` per pilot with offline test metrics (macro F1
  or MAE, counted MFLOP) beside its latency and closed-loop result on each target;
- :func:`f1_latency_points`: each classifier on each target as a (latency, macro F1) point,
  marked when it crashed in closed loop;
- :func:`pareto_front`: the points no other point beats (higher F1 at the same latency or
  lower), the step line of the F1-versus-latency scatter.

A *target column* is one (car, latency mode) pair of the entries whose latency is the
pilot's own (measured, profile, estimated): ``this machine``, ``estimated for NAME``,
``profile: DEVICE``; this machine's comes first, the others by name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from evaluation.report.context import target_label
from evaluation.report.ranking import OWN_LATENCY, Entry, _num, target_order

__all__ = [
    "F1Point",
    "RecipeRow",
    "TargetColumn",
    "f1_latency_points",
    "pareto_front",
    "recipe_rows",
    "recipe_targets",
]


@dataclass(frozen=True)
class TargetColumn:
    """One target of the recipe's table: a car (None = this machine) and a latency mode."""

    car: str | None
    mode: str  # measured | profile | estimated

    @property
    def label(self) -> str:
        return target_label(self.mode, self.car)

    @property
    def estimate(self) -> bool:
        return self.mode == "estimated"


THIS_MACHINE_COLUMN = TargetColumn(None, "measured")


@dataclass
class RecipeRow:
    """One pilot: its offline test metrics and, per target column, its closed-loop entry."""

    pilot: str
    checkpoint_sha256: str | None
    output_kind: str | None
    macro_f1: float | None
    mae: float | None
    mflop: float | None
    offline_ms: float | None  # batch-1 runtime measured offline on this machine
    entries: dict[TargetColumn, Entry] = field(default_factory=dict)
    num_parameters: int | None = None  # the model's parameters
    model_bytes: int | None = None  # its weights on disk

    def latency_ms(self, col: TargetColumn) -> float | None:
        """The median latency on ``col``: its entry's, else (this machine) the offline one."""
        e = self.entries.get(col)
        if e is not None and e.latency_ms is not None:
            return e.latency_ms
        return self.offline_ms if col == THIS_MACHINE_COLUMN else None


def recipe_targets(entries: Iterable[Entry]) -> list[TargetColumn]:
    """The target columns the entries have; this machine's always first."""
    cols = {THIS_MACHINE_COLUMN}
    cols |= {
        TargetColumn(e.car, e.latency_label) for e in entries if e.latency_label in OWN_LATENCY
    }
    return sorted(cols, key=lambda c: (*target_order(c.car), c.mode != "measured", c.mode))


def recipe_rows(offline: Iterable[Mapping[str, Any]], entries: Sequence[Entry]) -> list[RecipeRow]:
    """One row per pilot of the offline test split (the newest row per pilot and
    checkpoint), with the best-ranked own-latency entry of the same pilot (and checkpoint,
    when the offline row names one) on each target column."""
    out: dict[tuple[str, str | None], RecipeRow] = {}
    for r in offline:
        if (r.get("split") or "test") != "test":
            continue
        pilot, sha = str(r.get("pilot")), r.get("checkpoint_sha256")
        row = RecipeRow(
            pilot=pilot,
            checkpoint_sha256=sha,
            output_kind=r.get("output_kind"),
            macro_f1=_num(r.get("macro_f1")),
            mae=_num(r.get("mae")),
            mflop=_num(r.get("mflop")),
            offline_ms=_num(r.get("latency_median_ms")),
            num_parameters=_int(r.get("num_parameters")),
            model_bytes=_int(r.get("model_bytes")),
        )
        for e in entries:  # ranked order: the first match per column is the best
            if e.pilot != pilot or e.latency_label not in OWN_LATENCY:
                continue
            if sha and e.checkpoint_sha256 != sha:
                continue
            row.entries.setdefault(TargetColumn(e.car, e.latency_label), e)
        for name in ("mflop", "num_parameters", "model_bytes"):  # else the runs' figure
            if getattr(row, name) is None:
                found = (getattr(e, name) for e in row.entries.values())
                setattr(row, name, next((v for v in found if v is not None), None))
        out[(pilot, sha)] = row
    return list(out.values())


def _int(v: Any) -> int | None:
    x = _num(v)
    return None if x is None else int(x)


@dataclass(frozen=True)
class F1Point:
    """One pilot on one target: median latency (ms) against test macro F1."""

    pilot: str
    target: TargetColumn
    latency_ms: float
    macro_f1: float
    crashed: bool | None  # None: not driven in closed loop on this target

    @property
    def xy(self) -> tuple[float, float]:
        return (self.latency_ms, self.macro_f1)


def f1_latency_points(rows: Iterable[RecipeRow], targets: Iterable[TargetColumn]) -> list[F1Point]:
    """Every (pilot with a macro F1) x (target column with a latency) as a point; crashed
    means its closed-loop runs there were not all clean (laps missed or interventions)."""
    targets = list(targets)
    out = []
    for r in rows:
        if r.macro_f1 is None:
            continue
        for col in targets:
            lat = r.latency_ms(col)
            if lat is None or lat <= 0:
                continue
            e = r.entries.get(col)
            crashed = None if e is None else not e.clean
            out.append(F1Point(r.pilot, col, lat, r.macro_f1, crashed))
    return out


def pareto_front(points: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (latency, F1) points with the highest F1 for their latency or lower, by
    increasing latency: a point is on the front when every faster-or-equal point has a
    lower F1. Ties (same latency and F1) keep one point."""
    front: list[tuple[float, float]] = []
    best = float("-inf")
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front
