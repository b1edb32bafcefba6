"""Step 4 of the main job: the expected outcome (the story), checked honestly.

Each :class:`Check` states one outcome the main job is meant to show and whether this
:class:`Evaluation` (what step 3 produced) bears it out: the compact CNN laps the held-out
tracks in both directions; the slow classifier has a near-best offline F1 yet crashes at
its latency (or the latency sweep shows where it would); the counter-clockwise-only model
without flip augmentation shows a left bias; and on the reference car computer, at each
model's latency estimated there, a classifier with best or near-best F1 crashes or needs
interventions while the compact CNN laps both directions; and the slow classifier trained
with latency-compensated labels laps at the latency where the plain one crashes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from evaluation.presets import ModelSpec, Preset
from evaluation.report import format_f1, run_score, sweep_summary
from evaluation.results import ResultRow
from tracks import load_track

__all__ = ["Check", "Evaluation", "compensation_check", "lateral_offset", "story_checks"]


@dataclass
class Evaluation:
    """What step 3 produced (also written to the store as one evaluation)."""

    closed_loop: list[ResultRow]
    sweep: list[ResultRow]  # sweep=True
    offline: list[dict[str, Any]]
    evaluation_id: int
    names: dict[str, str]  # pilot spec -> board name
    car_rows: list[ResultRow] = dataclasses.field(default_factory=list)  # on the reference car
    car: str | None = None  # the reference car computer (evaluation.cars)
    robust_rows: list[ResultRow] = dataclasses.field(default_factory=list)  # randomised runs
    # The slow classifier and its compensated (and DAgger) versions at the latency the
    # compensated one was trained for, and that latency's label ("150ms", "estimated for X")
    compensation_rows: list[ResultRow] = dataclasses.field(default_factory=list)
    compensation_latency: str | None = None


@dataclass(frozen=True)
class Check:
    """One expected outcome and whether it held."""

    name: str
    held: bool
    detail: str

    def line(self) -> str:
        return f"{'✓' if self.held else '✗'} {self.name}: {self.detail}"


def _runs(rows: Sequence[Any], name: str, direction: str | None = None) -> list[Any]:
    return [r for r in rows if r.pilot == name and (direction is None or r.direction == direction)]


def _crashed(run: Any) -> bool:
    """The run needed an intervention or did not finish its laps."""
    return run.interventions > 0 or not run.completed


def _laps_cleanly(runs: Sequence[Any]) -> bool:
    """Every run finished without an intervention, and the runs cover both directions."""
    return all(not _crashed(r) for r in runs) and {r.direction for r in runs} == {"ccw", "cw"}


def _score(rows: Sequence[Any]) -> float:
    return 100.0 * sum(run_score(dataclasses.asdict(r)) for r in rows) / len(rows) if rows else 0.0


def lateral_offset(row: Any) -> float | None:
    """Mean signed distance (m) of a run's trajectory from the centreline, + = left of it
    in the driving direction; None when the track cannot be loaded."""
    xy = np.asarray(row.trajectory, dtype=float).reshape(-1, 2)
    if len(xy) == 0:
        return None
    try:
        track = load_track(row.track)
    except (ValueError, OSError):
        return None
    track = track.reversed() if row.direction == "cw" else track
    return float(np.mean(track.project_many(xy).lateral))


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def _bias(rows: Sequence[Any], value: Callable[[Any], float | None]) -> float | None:
    """Left (+) / right (-) bias of a pilot: driving a track clockwise is driving its mirror
    image counter-clockwise, so an unbiased pilot's signed means cancel across directions."""
    a = _mean([value(r) for r in rows if r.direction == "ccw"])
    b = _mean([value(r) for r in rows if r.direction == "cw"])
    return None if a is None or b is None else (a + b) / 2


def story_checks(preset: Preset, ev: Evaluation) -> list[Check]:
    """The expected outcome of the main job, each checked against this evaluation."""
    checks = []
    rows = ev.closed_loop
    compact = preset.role("compact")
    if compact:
        runs = _runs(rows, compact.name)
        clean = [r for r in runs if not _crashed(r)]
        where = ", ".join(
            f"{r.track} {r.direction} {r.laps_completed}/{r.laps_target} laps, "
            f"{r.interventions} interventions"
            for r in runs
        )
        checks.append(
            Check(
                f"{compact.name} completes its laps in both directions on the held-out tracks",
                _laps_cleanly(runs),
                f"{len(clean)}/{len(runs)} runs clean ({where})",
            )
        )
    slow = preset.role("slow_classifier")
    if slow:
        checks.append(_slow_check(slow, ev))
    ccw = preset.role("ccw_only")
    if ccw:
        checks.append(_left_bias_check(ccw, compact, rows))
    if ev.car and compact:
        checks.append(_car_check(preset, compact, ev))
    comp = preset.role("compensated")
    if slow and comp:
        checks.append(compensation_check(slow, comp, preset.role("dagger"), ev))
    return checks


def compensation_check(
    slow: ModelSpec, comp: ModelSpec, dagger: ModelSpec | None, ev: Evaluation
) -> Check:
    """At the latency the compensated model was trained for, the plain slow classifier
    crashes (an intervention or an unfinished run) while the compensated one, or its
    DAgger version, laps every held-out run cleanly in both directions."""
    where = ev.compensation_latency or comp.compensate_latency or "its latency"
    name = f"{comp.name} laps at the latency where {slow.name} crashes ({where})"
    rows = ev.compensation_rows
    plain = _runs(rows, slow.name)
    versions = [m for m in (comp, dagger) if m is not None and _runs(rows, m.name)]
    if not plain or not versions:
        return Check(name, False, f"no runs at {where}")

    def summary(runs: Sequence[Any]) -> str:
        clean = sum(1 for r in runs if not _crashed(r))
        dirs = "/".join(sorted({r.direction for r in runs}))
        return (
            f"{clean}/{len(runs)} runs clean ({dirs}), "
            f"{sum(r.interventions for r in runs)} interventions"
        )

    crashed = any(_crashed(r) for r in plain)
    lapped = [m.name for m in versions if _laps_cleanly(_runs(rows, m.name))]
    parts = [f"{slow.name} at {_lat(plain)}: {summary(plain)}"]
    parts += [f"{m.name}: {summary(_runs(rows, m.name))}" for m in versions]
    return Check(name, crashed and bool(lapped), "; ".join(parts))


def _car_check(preset: Preset, compact: ModelSpec, ev: Evaluation) -> Check:
    """On the reference car: a near-best-F1 classifier crashes, the compact CNN laps."""
    name = (
        f"estimated for {ev.car}: a classifier with best or near-best offline F1 (within "
        f"0.05) crashes or needs interventions, while {compact.name} laps both directions"
    )
    rows = ev.car_rows
    f1 = {o["pilot"]: o["macro_f1"] for o in ev.offline if o.get("macro_f1") is not None}
    best = max(f1.values(), default=None)
    if best is None or not rows:
        return Check(name, False, "no classifier F1" if best is None else "no runs on the car")
    runs = _runs(rows, compact.name)
    clean = [r for r in runs if not _crashed(r)]
    compact_ok = _laps_cleanly(runs)
    parts = [f"{compact.name} at {_lat(runs)}: {len(clean)}/{len(runs)} runs clean"]
    crashed_any = False
    for pilot in sorted((p for p in f1 if f1[p] >= best - 0.05), key=lambda p: -f1[p]):
        mine = _runs(rows, pilot)
        if not mine:
            continue
        bad = [r for r in mine if _crashed(r)]
        crashed_any = crashed_any or bool(bad)
        parts.append(
            f"{pilot} (F1 {format_f1(f1[pilot])}, best {format_f1(best)}) at {_lat(mine)}: "
            f"{len(bad)}/{len(mine)} runs crash or do not finish, "
            f"{sum(r.interventions for r in mine)} interventions"
        )
    return Check(name, compact_ok and crashed_any, "; ".join(parts))


def _lat(runs: Sequence[Any]) -> str:
    if not runs:
        return "no runs"
    r = runs[0]
    p99 = f", p99 {r.latency_p99_ms:.0f}" if r.latency_p99_ms is not None else ""
    return f"{r.latency_ms:.0f} ms{p99}"


def _slow_check(slow: ModelSpec, ev: Evaluation) -> Check:
    f1 = {o["pilot"]: o["macro_f1"] for o in ev.offline if o.get("macro_f1") is not None}
    best = max(f1.values(), default=None)
    mine = f1.get(slow.name)
    near = mine is not None and best is not None and mine >= best - 0.05
    f1_text = (
        f"test macro F1 {format_f1(mine)} (best of the zoo {format_f1(best)})"
        if mine is not None and best is not None
        else "no test F1"
    )
    runs = _runs(ev.closed_loop, slow.name)
    if not runs:
        return Check(f"{slow.name}: near-best F1 yet crashes at its latency", False, "no runs")
    lat, period = runs[0].latency_ms, runs[0].control_period_ms
    crashed = [r for r in runs if _crashed(r)]
    sw = [
        s for s in sweep_summary(dataclasses.asdict(r) for r in ev.sweep) if s["pilot"] == slow.name
    ]
    ok_up_to = sw[0]["max_ok_ms"] if sw else None
    fail_at = sw[0]["first_fail_ms"] if sw else None
    if not sw:
        sweep_text = "no sweep"
    elif ok_up_to is None:
        sweep_text = f"the sweep fails even at its lowest latency ({fail_at:g} ms)"
    elif fail_at is None:
        sweep_text = f"the sweep laps cleanly at every latency up to {ok_up_to:g} ms"
    else:
        sweep_text = f"the sweep laps cleanly up to {ok_up_to:g} ms and fails from {fail_at:g} ms"
    if lat > period:
        ok = bool(crashed)
        outcome = (
            f"at its measured {lat:.0f} ms (> {period:g} ms control period) "
            f"{len(crashed)}/{len(runs)} runs crash or do not finish"
        )
    else:
        # Within the control period its latency is not what crashes it: the fallback is
        # the sweep's answer to "at which latency would it crash?".
        ok = ok_up_to is not None and fail_at is not None
        n = len(crashed)
        anyway = f" ({n} run{'s' if n != 1 else ''} crashed anyway)" if n else ""
        outcome = (
            f"its measured {lat:.1f} ms fits the {period:g} ms control period on this "
            f"hardware{anyway}; {sweep_text}"
        )
    return Check(
        f"{slow.name}: best or near-best offline F1 (within 0.05) yet crashes at its latency "
        "(or the sweep shows where it would)",
        near and ok,
        f"{f1_text}; {outcome}",
    )


def _left_bias_check(ccw: ModelSpec, ref: ModelSpec | None, rows: Sequence[Any]) -> Check:
    a, b = _runs(rows, ccw.name, "ccw"), _runs(rows, ccw.name, "cw")
    name = f"{ccw.name} shows the left bias (worse clockwise)"
    if not (a and b):
        return Check(name, False, "no runs in both directions")
    s_ccw, s_cw = _score(a), _score(b)
    i_ccw, i_cw = sum(r.interventions for r in a), sum(r.interventions for r in b)
    c_ccw = sum(r.mean_abs_cte for r in a) / len(a)
    c_cw = sum(r.mean_abs_cte for r in b) / len(b)
    offset = _bias(a + b, lateral_offset)
    steer_bias = _bias(a + b, lambda r: r.mean_steering)
    worse = s_cw < s_ccw or i_cw > i_ccw or c_cw > 1.2 * c_ccw
    # A left bias is the car holding a line left of centre (or steering left on
    # balance) in both directions, not merely a worse clockwise score.
    left = (offset is not None and offset >= 0.01) or (steer_bias or 0.0) >= 0.02
    detail = (
        f"score ccw {s_ccw:.1f} / cw {s_cw:.1f}, interventions {i_ccw} / {i_cw}, "
        f"mean |CTE| {c_ccw:.3f} / {c_cw:.3f} m"
    )
    if offset is not None:
        detail += f"; left bias of its line {100 * offset:+.1f} cm"
    detail += f", of its steering {steer_bias:+.3f}" if steer_bias is not None else ""
    if ref:
        rr = _runs(rows, ref.name)
        ro = _bias(rr, lateral_offset)
        if ro is not None:
            detail += f" (flip-augmented {ref.name}: line {100 * ro:+.1f} cm"
            detail += f", steering {_bias(rr, lambda r: r.mean_steering):+.3f})"
    return Check(name, bool(worse and left), detail)
