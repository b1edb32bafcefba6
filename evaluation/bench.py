"""``python -m evaluation.bench``: what evaluation at scale costs, measured here.

    python -m evaluation.bench runs PILOT [--tracks oval,chicane,...] [--laps 1,3]
    python -m evaluation.bench store [--rows 1,10,100,1000,10000]
    python -m evaluation.bench backends PILOT [--runs 24] [--workers 2]
    python -m evaluation.bench driver [--tasks 2000]

- ``runs``: seconds per closed-loop run of ``PILOT``, per track (its length) and laps,
  in this process with one torch thread (as an evaluation worker runs them): wall time,
  and the CPU time of this process (core-seconds, less sensitive to a busy machine);
  also CPU per simulated second and per lap, the figures ``docs/scaling.md`` sizes
  clusters with.
- ``store``: rows per second the leaderboard store (SQLite, WAL) takes in one
  transaction, at several batch sizes, and the fixed cost per transaction (a least
  squares line ``t = a + b * rows``); rows are real run rows (trajectory included).
- ``backends``: the same jobs on the process pool and on a local Ray instance with the
  same CPUs, alternating: runs per minute of each (the pool's start included, Ray on
  its running instance, as a cluster that is up), Ray's first pass (instance and
  workers starting) apart, and whether every backend gave the same results (every field
  of every run's result but its wall time and the path its pilot was loaded from).
- ``driver``: what the driver spends per finished run, whatever the cluster's size: the
  result row (``make_row``), and the Ray round trip of a task that only hands a real
  run's result back (on a local instance: the most results per second one driver takes
  in before the runs themselves cost anything).

Timings depend on how busy the machine is: run them on a quiet machine and state it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evaluation.backends import RunFailure, comparable, open_backend
from evaluation.evaluate import evaluate, make_row, prepare_pilot
from evaluation.latency import parse_latency
from evaluation.runner import RunJob, RunResult, one_thread, run_job, run_many
from evaluation.store import Store
from tracks import load_track
from tracks.cli import run_main

__all__ = ["bench_backends", "bench_driver", "bench_runs", "bench_store", "main"]

logger = logging.getLogger(__name__)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def bench_runs(
    pilot: str, tracks: Sequence[str], laps: Sequence[int], *, repeats: int = 1
) -> list[dict[str, Any]]:
    """Wall seconds per run of ``pilot`` on each track and lap count (median of
    ``repeats``), zero latency, no trajectory, one thread, in this process."""
    one_thread()  # as in an evaluation worker
    warm = run_job(RunJob(pilot, tracks[0], laps=1, max_time_s=2.0, record_trajectory=False))
    if isinstance(warm, RunFailure):
        raise ValueError(warm.line())
    out = []
    for track in tracks:
        length = load_track(track).length
        for n in laps:
            walls, cpus, last = [], [], None
            for r in range(repeats):
                job = RunJob(pilot, track, laps=n, seed=r, record_trajectory=False)
                t0, c0 = time.perf_counter(), time.process_time()
                last = run_job(job)
                walls.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
            if isinstance(last, RunFailure):
                raise ValueError(last.line())
            wall, cpu = statistics.median(walls), statistics.median(cpus)
            out.append(
                {
                    "track": track,
                    "length_m": round(float(length), 1),
                    "laps": n,
                    "laps_completed": last.laps_completed,
                    "interventions": last.interventions,
                    "sim_s": round(last.elapsed_s, 2),
                    "wall_s": round(wall, 3),
                    "cpu_s": round(cpu, 3),
                    "cpu_per_sim_s": round(cpu / last.elapsed_s, 4),
                    "cpu_per_lap_s": round(cpu / max(last.laps_completed, 1), 3),
                }
            )
            logger.info("%s", out[-1])
    return out


def _sample_rows(n: int, laps: int, pilot: str = "expert") -> list[Any]:
    (row,) = evaluate([pilot], tracks=("chicane",), directions=("ccw",), laps=laps, latency="0",
                      progress=False)  # fmt: skip
    return [dataclasses.replace(row, seed=i) for i in range(n)]


def bench_store(sizes: Sequence[int], *, repeats: int = 3, laps: int = 3) -> dict[str, Any]:
    """Seconds per ``Store.add`` of N closed-loop rows (one transaction each), per N; the
    rows are copies of a real ``laps``-lap run on chicane (its trajectory included)."""
    rows = _sample_rows(max(sizes), laps)
    points = []
    with tempfile.TemporaryDirectory(prefix="trackpilot-store-bench-") as tmp:
        with Store(Path(tmp) / "bench.sqlite") as store:
            store.add(closed_loop=rows[:1], context={"bench": "warm-up"})
            for n in sizes:
                walls, cpus = [], []
                for _ in range(repeats):
                    t0, c0 = time.perf_counter(), time.process_time()
                    store.add(closed_loop=rows[:n], context={"bench": n})
                    walls.append(time.perf_counter() - t0)
                    cpus.append(time.process_time() - c0)
                t, c = statistics.median(walls), statistics.median(cpus)
                points.append(
                    {
                        "rows": n,
                        "wall_s": round(t, 5),
                        "cpu_s": round(c, 5),
                        "rows_per_s": round(n / t, 1),
                    }  # fmt: skip
                )
            db_bytes = sum(p.stat().st_size for p in Path(tmp).iterdir())
            total_rows = store.counts().get("closed_loop", 0)
    out: dict[str, Any] = {"points": points}
    for key in ("wall_s", "cpu_s"):  # least squares: t = a + b * rows
        xs, ys = [p["rows"] for p in points], [p[key] for p in points]
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        sxx = sum((x - mx) ** 2 for x in xs)
        b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
        what = key.removesuffix("_s")
        out[f"per_transaction_{what}_s"] = round(my - b * mx, 5)
        out[f"per_row_{what}_ms"] = round(1e3 * b, 4)
        out[f"rows_per_s_{what}"] = round(1 / b, 1) if b > 0 else math.inf
    out["bytes_per_row"] = round(db_bytes / max(total_rows, 1))
    out["trajectory_points_per_row"] = len(rows[0].trajectory)
    return out


def _jobs(pilot: str, runs: int, tracks: Sequence[str], laps: int) -> list[RunJob]:
    combos = [(t, d) for t in tracks for d in ("ccw", "cw")]
    return [
        RunJob(
            pilot,
            combos[i % len(combos)][0],
            combos[i % len(combos)][1],
            laps=laps,
            seed=i // len(combos),
            record_trajectory=True,
        )  # fmt: skip
        for i in range(runs)
    ]


def bench_backends(
    pilot: str, runs: int, workers: int, tracks: Sequence[str], laps: int, rounds: int = 2
) -> dict[str, Any]:
    """Runs per minute of the same jobs on the process pool and on a local Ray instance
    with ``workers`` CPUs. The pool (its start included, as every evaluation pays it)
    and Ray on its running instance alternate for ``rounds`` rounds, so that a change in
    the machine's load hits both; Ray's first pass (instance and workers starting) is
    reported apart. Medians over the rounds; ``*_workers_busy_pct`` is the share of the
    workers' time spent inside runs (the rest: starting, loading pilots, dispatch)."""
    jobs = _jobs(pilot, runs, tracks, laps)
    out: dict[str, Any] = {"runs": runs, "workers": workers, "pilot": pilot, "laps": laps,
                           "load_before": round(os.getloadavg()[0], 1)}  # fmt: skip

    def timed(backend: Any) -> tuple[float, list[RunResult]]:
        t0 = time.perf_counter()
        res = run_many(jobs, workers, progress=False, backend=backend)
        return time.perf_counter() - t0, res

    pool_s, warm_s, same = [], [], True
    busy: dict[str, list[float]] = {"pool": [], "ray": []}

    def busy_pct(t: float, res: list[RunResult]) -> float:
        # share of the workers' time spent inside runs (RunResult.wall_s, timed there)
        return 100 * sum(r.wall_s for r in res) / (t * workers)

    t0 = time.perf_counter()
    with open_backend("ray", workers=workers) as ray_backend:
        out["ray_start_s"] = round(time.perf_counter() - t0, 2)
        t_cold, ref = timed(ray_backend)
        out["ray_first_pass_s"] = round(t_cold, 2)
        expected = [comparable(r) for r in ref]
        for _ in range(rounds):
            for name, backend, times in (("pool", "pool", pool_s), ("ray", ray_backend, warm_s)):
                t, res = timed(backend)
                times.append(t)
                busy[name].append(busy_pct(t, res))
                same &= [comparable(r) for r in res] == expected
    pool, warm = statistics.median(pool_s), statistics.median(warm_s)
    out["pool_s"] = [round(t, 2) for t in pool_s]
    out["ray_s"] = [round(t, 2) for t in warm_s]
    out["pool_runs_per_min"] = round(60 * runs / pool, 1)
    out["ray_runs_per_min"] = round(60 * runs / warm, 1)
    out["ray_first_pass_runs_per_min"] = round(60 * runs / (out["ray_start_s"] + t_cold), 1)
    out["ray_overhead_pct"] = round(100 * (warm / pool - 1), 1)
    out["ray_first_pass_overhead_pct"] = round(100 * ((out["ray_start_s"] + t_cold) / pool - 1), 1)
    for name, values in busy.items():
        out[f"{name}_workers_busy_pct"] = round(statistics.median(values), 1)
    out["same_results"] = same
    out["sim_s_per_run"] = round(statistics.fmean(r.elapsed_s for r in ref), 2)
    out["load_after"] = round(os.getloadavg()[0], 1)
    return out


@dataclasses.dataclass(frozen=True)
class _Echo:
    """A task that hands back a finished run's result (no simulation)."""

    pilot_spec: str  # "expert": nothing to ship
    result: RunResult


def _echo(job: _Echo) -> RunResult:
    return job.result


def bench_driver(tasks: int, workers: int) -> dict[str, Any]:
    """Driver-side seconds per finished run: its result row, and Ray's round trip."""
    result = run_job(RunJob("expert", "chicane", laps=3))
    if isinstance(result, RunFailure):
        raise ValueError(result.line())
    info = prepare_pilot("expert", parse_latency("0"))
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        make_row(result, info)
    out: dict[str, Any] = {
        "make_row_ms": round(1e3 * (time.perf_counter() - t0) / n, 3),
        "trajectory_points": len(result.trajectory),
        "tasks": tasks,
        "workers": workers,
    }
    jobs = [_Echo("expert", dataclasses.replace(result, seed=i)) for i in range(tasks)]
    with open_backend("ray", workers=workers) as backend:
        list(backend.imap_unordered(_echo, jobs[: 4 * workers]))  # workers up
        t0 = time.perf_counter()
        got = sum(1 for _ in backend.imap_unordered(_echo, jobs))
        dt = time.perf_counter() - t0
    out["ray_results_per_s"] = round(got / dt, 1)
    out["ray_ms_per_result"] = round(1e3 * dt / got, 3)
    return out


def _table(rows: list[dict[str, Any]]) -> str:
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in keys}
    lines = ["  ".join(k.rjust(widths[k]) for k in keys)]
    lines += ["  ".join(str(r[k]).rjust(widths[k]) for k in keys) for r in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m evaluation.bench", description=__doc__.split("\n")[0]
    )
    sub = ap.add_subparsers(dest="what", required=True)
    r = sub.add_parser("runs", help="seconds per closed-loop run, per track and laps")
    r.add_argument("pilot", help="a pilot spec (a CNN run directory, an .onnx, expert, ...)")
    r.add_argument(
        "--tracks",
        default="oval,chicane,triangle,speedway",
        help="comma list (default: %(default)s)",
    )
    r.add_argument(
        "--laps", type=_ints, default=[1, 3], help="comma list of lap counts (default: 1,3)"
    )
    r.add_argument("--repeats", type=int, default=1, help="runs per point, median (default: 1)")
    s = sub.add_parser("store", help="rows per second into the leaderboard store")
    s.add_argument(
        "--rows",
        type=_ints,
        default=[1, 10, 100, 1000, 5000],
        help="batch sizes (default: 1,10,100,1000,5000)",
    )
    s.add_argument(
        "--repeats", type=int, default=3, help="transactions per size, median (default: 3)"
    )
    s.add_argument("--laps", type=int, default=3, help="laps of the run the rows copy (default: 3)")
    b = sub.add_parser("backends", help="runs per minute: process pool against local Ray")
    b.add_argument("pilot", help="a pilot spec")
    b.add_argument(
        "--runs", type=int, default=24, help="closed-loop runs per backend (default: 24)"
    )
    b.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="CPUs for both (default: all cores, %(default)s here)",
    )
    b.add_argument("--tracks", default="chicane,triangle", help="comma list (default: %(default)s)")
    b.add_argument("--laps", type=int, default=1, help="laps per run (default: 1)")
    b.add_argument(
        "--rounds", type=int, default=2, help="alternating pool / Ray rounds (default: 2)"
    )
    d = sub.add_parser("driver", help="driver-side cost per finished run (row, Ray round trip)")
    d.add_argument(
        "--tasks", type=int, default=2000, help="Ray tasks that echo a result (default: 2000)"
    )
    d.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="Ray CPUs (default: all cores, %(default)s here)",
    )
    for p in (r, s, b, d):
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.what == "runs":
            tracks = [t for t in args.tracks.split(",") if t]
            result: Any = bench_runs(args.pilot, tracks, args.laps, repeats=args.repeats)
            text = _table(result)
        elif args.what == "store":
            result = bench_store(args.rows, repeats=args.repeats, laps=args.laps)
            text = (
                _table(result["points"])
                + "\n"
                + "\n".join(f"{k}: {v}" for k, v in result.items() if k != "points")
            )
        elif args.what == "driver":
            result = bench_driver(args.tasks, args.workers)
            text = "\n".join(f"{k}: {v}" for k, v in result.items())
        else:
            tracks = [t for t in args.tracks.split(",") if t]
            result = bench_backends(
                args.pilot, args.runs, args.workers, tracks, args.laps, args.rounds
            )
            text = "\n".join(f"{k}: {v}" for k, v in result.items())
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else text)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main, note="nothing kept"))
