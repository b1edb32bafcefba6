"""Ranking: one run's score, entries (a pilot on one target at one latency setting), their
order.

- **Score** (optimizing): per run, ``autonomy/100`` (clamped to [0, 1]) times the
  completed fraction of the target laps (capped at 1); an entry's score is 100 times the
  mean over its runs. Ties break on the lower mean ``|cross-track error|``, then the
  lower mean lap time.
- **Constraints** (satisficing): median latency within the control period, no flips. An
  entry that breaks one keeps its score but ranks below every entry that meets them. The
  latency judged is the entry's own (measured, profile or estimated median); fixed and
  zero settings are judged on the pilot's offline (this machine's) latency.
- **Targets**: the same pilot on this machine and estimated for a car computer are two
  entries. Entries are ordered by target (this machine first, then the others by name)
  and ranked within their target: each target has its own board, ``#`` 1 at its top.
- **Seeds**: an entry's runs are one per (track, direction, seed, ...); with several
  seeds its score has a spread (:attr:`Entry.score_sd`, the standard deviation of the
  per-seed scores).
- **Robustness**: runs with domain randomisation (``domain_randomization``: seeded
  colours, light and camera pose) are not part of the score or the ranking; they are the
  entry's :attr:`Entry.robust_runs`, scored the same way (:attr:`Entry.robust_score`). A
  pilot with randomised runs only is an entry without (clean) runs, ranked last on its
  target.
- The latency sweep's summary: the fraction of clean runs at each charged latency.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agents.loop import completion as _completion
from agents.loop import run_score as _run_score
from evaluation.report.context import THIS_MACHINE, Context, stale_reasons, target_label
from evaluation.report.formats import _num

__all__ = [
    "OWN_LATENCY",
    "Entry",
    "completion",
    "latest_offline",
    "rank_entries",
    "run_score",
    "sweep_summary",
    "target_order",
]


def _mean(values: Iterable[Any]) -> float | None:
    vals = [f for f in (_num(v) for v in values) if f is not None]
    return sum(vals) / len(vals) if vals else None


def _median(values: Iterable[Any]) -> float | None:
    vals = [f for f in (_num(v) for v in values) if f is not None]
    return statistics.median(vals) if vals else None


def completion(row: Mapping[str, Any]) -> float:
    """Completed fraction of the target laps of a stored run, in [0, 1]
    (:func:`agents.loop.completion`)."""
    done = _num(row.get("laps_completed")) or 0.0
    return _completion(done, _num(row.get("laps_target")), bool(row.get("completed")))


def run_score(row: Mapping[str, Any]) -> float:
    """One stored run's score in [0, 1] (:func:`agents.loop.run_score`)."""
    return _run_score(_num(row.get("autonomy")), completion(row))


def _latency_label(row: Mapping[str, Any]) -> str:
    mode = row.get("latency_mode") or "measured"
    if mode == "fixed":
        return f"{_num(row.get('latency_ms')) or 0:g}ms"
    return "0" if mode == "zero" else str(mode)


#: Latency modes whose charged latency is the pilot's own on its target (judged as is).
OWN_LATENCY = ("measured", "profile", "estimated")


@dataclass
class Entry:
    """One pilot (checkpoint) on one target at one latency setting, with its aggregated runs."""

    pilot: str
    pilot_kind: str | None
    checkpoint_sha256: str | None
    latency_label: str  # measured | profile | estimated | 0 | 70ms
    runs: list[dict[str, Any]]
    score: float
    latency_ms: float | None  # median latency charged (or measured offline)
    latency_p95_ms: float | None
    violations: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    partial: str | None = None  # "2/4 track-directions" when it lacks what others were run on
    rank: int = 0  # within its target
    car: str | None = None  # the target: None = this machine
    latency_p99_ms: float | None = None
    latency_source: str = ""  # the newest run's, e.g. "estimated for X from 10.2 MFLOP (...)"
    mflop: float | None = None  # counted MFLOP per frame, when the runs say
    robust_runs: list[dict[str, Any]] = field(default_factory=list)  # domain-randomised runs
    num_parameters: int | None = None  # the pilot's parameters, when the runs say
    model_bytes: int | None = None  # its weights file on disk, bytes

    @property
    def feasible(self) -> bool:
        return not self.violations

    @property
    def robust_score(self) -> float | None:
        """The score over the domain-randomised runs (None: none were run)."""
        return _score(self.robust_runs) if self.robust_runs else None

    @property
    def seeds(self) -> list[int]:
        """The seeds of the (clean) runs."""
        return sorted({int(r.get("seed") or 0) for r in self.runs})

    def seed_scores(self, runs: list[dict[str, Any]] | None = None) -> dict[int, float]:
        """Per seed, the score over that seed's runs (of ``runs``, default the clean ones)."""
        by: dict[int, list[dict[str, Any]]] = {}
        for r in self.runs if runs is None else runs:
            by.setdefault(int(r.get("seed") or 0), []).append(r)
        return {seed: _score(rs) for seed, rs in sorted(by.items())}

    @property
    def score_sd(self) -> float | None:
        """The sample standard deviation of the per-seed scores (None below two seeds)."""
        scores = list(self.seed_scores().values())
        return statistics.stdev(scores) if len(scores) > 1 else None

    @property
    def robust_score_sd(self) -> float | None:
        scores = list(self.seed_scores(self.robust_runs).values())
        return statistics.stdev(scores) if len(scores) > 1 else None

    @property
    def target(self) -> str:
        """``this machine`` or the car computer (or profiled device)."""
        return self.car or THIS_MACHINE

    @property
    def target_label(self) -> str:
        """``this machine``, ``estimated for NAME`` or ``profile: DEVICE``."""
        return target_label(self.latency_label, self.car)

    @property
    def clean(self) -> bool:
        """Every run completed its laps without an intervention."""
        return bool(self.runs) and all(_clean_run(r) for r in self.runs)

    def _sum(self, key: str) -> int | None:
        vals = [r.get(key) for r in self.runs if r.get(key) is not None]
        return int(sum(vals)) if vals else None

    @property
    def laps_completed(self) -> int:
        return self._sum("laps_completed") or 0

    @property
    def laps_target(self) -> int:
        return self._sum("laps_target") or 0

    @property
    def off_track(self) -> int | None:
        return self._sum("off_track")

    @property
    def interventions(self) -> int | None:
        return self._sum("interventions")

    @property
    def flips(self) -> int | None:
        return self._sum("flips")

    @property
    def autonomy(self) -> float | None:
        return _mean(r.get("autonomy") for r in self.runs)

    @property
    def mean_abs_cte(self) -> float | None:
        return _mean(r.get("mean_abs_cte") for r in self.runs)

    @property
    def max_abs_cte(self) -> float | None:
        vals = [_num(r.get("max_abs_cte")) for r in self.runs]
        vals = [v for v in vals if v is not None]
        return max(vals) if vals else None

    @property
    def mean_lap_time(self) -> float | None:
        return _mean(t for r in self.runs for t in (r.get("lap_times") or []))

    @property
    def runs_completed(self) -> int:
        return sum(1 for r in self.runs if completion(r) >= 1.0)

    def by_direction(self, direction: str) -> list[dict[str, Any]]:
        return [r for r in self.runs if r.get("direction") == direction]

    @property
    def marks(self) -> str:
        return "; ".join(f"✗ {v}" for v in self.violations) or "✓"

    @property
    def stale_mark(self) -> str:
        return ("stale: " + ", ".join(self.stale)) if self.stale else ""

    @property
    def pilot_label(self) -> str:
        """The pilot, with its latency setting when it is not its own (``p @70ms``)."""
        if self.latency_label in OWN_LATENCY:
            return self.pilot
        return f"{self.pilot} @{self.latency_label}"

    @property
    def label(self) -> str:
        """The pilot, its setting and its target when that is not this machine."""
        return self.pilot_label + (f" @{self.car}" if self.car else "")


def target_order(car: str | None) -> tuple[bool, str]:
    """Sort key of a target: this machine first, then the others by name."""
    return (car is not None, str(car or ""))


def _sort_key(e: Entry) -> tuple:
    inf = float("inf")
    cte = e.mean_abs_cte if e.mean_abs_cte is not None else inf
    lap = e.mean_lap_time if e.mean_lap_time is not None else inf
    return (*target_order(e.car), not e.feasible, not e.runs, -round(e.score, 9), cte, lap, e.pilot)


def _condition(r: Mapping[str, Any]) -> tuple:
    """What a run was driven on, apart from its seed."""
    keys = ("track", "track_hash", "direction", "speed", "laps_target")
    return tuple(r.get(k) for k in keys)


def _score(runs: list[dict[str, Any]]) -> float:
    """100 x the mean run score of ``runs`` (0 for none)."""
    return 100.0 * sum(run_score(r) for r in runs) / len(runs) if runs else 0.0


def latest_offline(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The newest offline row per (pilot, checkpoint, split), in first-seen order."""
    latest: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        latest[(r.get("pilot"), r.get("checkpoint_sha256"), r.get("split"))] = dict(r)
    return list(latest.values())


def rank_entries(
    closed_loop_rows: Iterable[Mapping[str, Any]],
    ctx: Context,
    offline_rows: Iterable[Mapping[str, Any]] = (),
) -> list[Entry]:
    """Group rows into entries (pilot, checkpoint, target, latency setting), score them,
    mark constraints and staleness, and rank them within each target."""
    rows = sorted(closed_loop_rows, key=lambda r: r.get("id") or 0)
    ctx = ctx.for_rows(rows)
    groups: dict[tuple, dict[tuple, dict[str, Any]]] = {}
    robust: dict[tuple, dict[tuple, dict[str, Any]]] = {}
    for r in rows:
        ekey = (r["pilot"], r.get("checkpoint_sha256"), r.get("car") or None, _latency_label(r))
        rkey = (
            r.get("track"),
            r.get("track_hash"),
            r.get("direction"),
            r.get("speed"),
            r.get("laps_target"),
            r.get("seed"),
        )
        into = robust if r.get("domain_randomization") else groups
        into.setdefault(ekey, {})[rkey] = dict(r)  # newer rows replace older ones
    for ekey in robust:  # randomised runs only: an entry without clean runs
        groups.setdefault(ekey, {})
    offline = latest_offline(offline_rows)
    entries = []
    for (pilot, sha, car, label), runs_by_key in groups.items():
        runs = list(runs_by_key.values())
        robust_runs = list(robust.get((pilot, sha, car, label), {}).values())
        judged = runs or robust_runs  # latency and constraints: the clean runs if any
        own = [r for r in judged if (r.get("latency_mode") or "measured") in OWN_LATENCY]
        latency = _median(r.get("latency_ms") for r in own)
        p95 = _median(r.get("latency_p95_ms") for r in own)
        p99 = _median(r.get("latency_p99_ms") for r in own)
        if latency is None:  # fixed/zero runs: judge the pilot's real (offline) latency
            bench = [
                o for o in offline if o.get("pilot") == pilot and o.get("checkpoint_sha256") == sha
            ]
            latency = _median(o.get("latency_median_ms") for o in bench)
            p95 = _median(o.get("latency_p95_ms") for o in bench)
            p99 = None
        period = _median(r.get("control_period_ms") for r in judged) or ctx.control_period_ms
        violations = []
        if latency is None:
            violations.append("latency not measured")
        elif latency > period:
            violations.append(f"latency {latency:.0f} ms > {period:g} ms")
        flips = sum(int(r.get("flips") or 0) for r in judged)
        if flips:
            violations.append(f"flipped {flips}×")
        stale = sorted({s for r in runs + robust_runs for s in stale_reasons(r, ctx)})
        params = _median(r.get("num_parameters") for r in judged)
        size = _median(r.get("model_bytes") for r in judged)
        entries.append(
            Entry(
                pilot=pilot,
                pilot_kind=judged[-1].get("pilot_kind"),
                checkpoint_sha256=sha,
                latency_label=label,
                runs=runs,
                score=_score(runs),
                latency_ms=latency,
                latency_p95_ms=p95,
                violations=violations,
                stale=stale,
                car=car,
                latency_p99_ms=p99,
                latency_source=str(judged[-1].get("latency_source") or ""),
                mflop=_median(r.get("mflop") for r in judged),
                robust_runs=robust_runs,
                num_parameters=None if params is None else int(params),
                model_bytes=None if size is None else int(size),
            )
        )

    # Partial: an entry that lacks a track, direction, speed or lap count the others were
    # run on (more seeds elsewhere do not make an entry partial).
    def conditions(e: Entry) -> set[tuple]:
        return {_condition(r) for r in e.runs}

    every = set().union(*(conditions(e) for e in entries)) if entries else set()
    for e in entries:
        mine = conditions(e)
        if len(mine) < len(every):
            e.partial = f"{len(mine)}/{len(every)} track-directions"
    entries.sort(key=_sort_key)
    ranked: dict[str | None, int] = {}  # entries ranked so far per target
    for e in entries:
        ranked[e.car] = ranked.get(e.car, 0) + 1
        e.rank = ranked[e.car]
    return entries


def _clean_run(row: Mapping[str, Any]) -> bool:
    """All target laps completed with no intervention (the runner's ``ok``)."""
    return completion(row) >= 1.0 and not int(row.get("interventions") or 0)


def sweep_summary(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per pilot (checkpoint), target (``car``) and environment (``randomized``: domain
    randomisation): the fraction of clean runs (all laps, no intervention) at each swept
    latency, and the largest latency up to which every run was
    clean (``max_ok_ms``, None if even the smallest failed) --
    ``evaluation.runner.max_ok_latency``'s rule."""
    groups: dict[tuple, dict[float, list[Mapping[str, Any]]]] = {}
    for r in rows:
        lat = _num(r.get("latency_ms"))
        if lat is None:
            continue
        key = (
            r["pilot"], r.get("checkpoint_sha256"), r.get("car") or None,
            bool(r.get("domain_randomization")),
        )  # fmt: skip
        groups.setdefault(key, {}).setdefault(lat, []).append(r)
    out = []
    for (pilot, sha, car, randomized), by_lat in groups.items():
        points = []
        max_ok = None
        broken = False
        for lat in sorted(by_lat):
            rs = by_lat[lat]
            frac = sum(_clean_run(r) for r in rs) / len(rs)
            points.append(
                {
                    "latency_ms": lat,
                    "completed_fraction": frac,
                    "laps_fraction": sum(completion(r) for r in rs) / len(rs),
                    "off_track": sum(int(r.get("off_track") or 0) for r in rs),
                    "interventions": sum(int(r.get("interventions") or 0) for r in rs),
                    "score": 100.0 * sum(run_score(r) for r in rs) / len(rs),
                    "runs": len(rs),
                }
            )
            if frac >= 1.0 and not broken:
                max_ok = lat
            elif frac < 1.0:
                broken = True
        first_fail = next((p["latency_ms"] for p in points if p["completed_fraction"] < 1.0), None)
        out.append(
            {
                "pilot": pilot,
                "checkpoint_sha256": sha,
                "car": car,
                "randomized": randomized,
                "points": points,
                "max_ok_ms": max_ok,
                "first_fail_ms": first_fail,
            }
        )
    return out
