"""``python -m evaluation.evaluate``: closed-loop evaluation of pilots, latency charged.

    python -m evaluation.evaluate expert runs/compact --tracks chicane,triangle \\
        --directions ccw,cw --laps 3 --speed 2.0 --latency measured --seeds 0 --json

A pilot is ``expert``, ``classical``, a CNN checkpoint or a stable-baselines3 agent
(:mod:`evaluation.pilots`). Each pilot is loaded once here and, with ``--latency
measured``, its batch-1 inference time is measured once on ``--device`` before the
runs are dispatched to ``--workers`` processes, so every run of a pilot charges the
same latency (:mod:`evaluation.runner` explains the latency model). ``--backend ray
[--address auto|HOST:PORT|ray://HOST:PORT]`` runs them as tasks on a Ray cluster instead
(:mod:`evaluation.backends`), the pilots shipped by content. ``--sweep`` also
runs each pilot, track and direction at increasing fixed latencies and reports the
largest one at which it still laps cleanly.

One result row per pilot x track x direction x seed (:class:`evaluation.results.
ResultRow`) is printed as a table (``--json``: JSON lines, without trajectories) and
stored in the leaderboard (``--db``, by default the main job's
``trackpilot_out/leaderboard.sqlite``) in one transaction once every run has ended, with
the sweep points and trajectories, so ``python -m evaluation.report`` ranks RL agents,
user checkpoints and ONNX pilots beside the zoo. The evaluation's context in the store
says where it came from (``source``: ``evaluation.evaluate``), its settings, the hardware
and the code; it names no dataset, so the main job's stays the one the report judges
staleness against. ``--db none`` stores nothing. ``--sweep`` also writes
``OUT/sweep.png``. :func:`evaluate` does the same in-process (storing nothing unless
``db`` is given) for the leaderboard's main job, which stores its rows itself. Bad input
is one ``error:`` line and exit status 2; a leaderboard file that cannot be written is
one, before any run starts. A pilot that cannot be loaded where its runs execute is one
``error:`` line (which pilot, where, why) and exit status 1, after the other runs have
finished and their rows are stored.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agents.base import PilotNeeds, pilot_metadata, pilot_needs
from agents.loop import ClosedLoop
from agents.registry import load_pilot
from evaluation import runner
from evaluation.backends import (
    BACKENDS,
    Backend,
    RunsIncomplete,
    check_backend,
    validate_backend_options,
)
from evaluation.cars import get_car
from evaluation.charge import LatencyCharge, load_profiles, resolve_charge
from evaluation.latency import (
    LatencySetting,
    LatencyStats,
    describe_device,
    hardware_fingerprint,
    measure_latency,
    parse_latency,
    resolve_device,
)
from evaluation.results import ResultRow, code_version, now_iso
from evaluation.runner import (
    DEFAULT_SWEEP_MS,
    RunJob,
    RunResult,
    group_sweeps,
    max_ok_latency,
    plot_sweep,
    run_many,
)
from evaluation.store import DEFAULT_DB, Store, StoreError
from sim.env import TrackEnv
from tracks import HELDOUT_TRACKS, load_track
from tracks.cli import run_main
from tracks.cliargs import add_config_args, config_from_args
from tracks.common import DIRECTIONS

__all__ = [
    "DEFAULT_OUT",
    "EvalConfig",
    "IncompleteEvaluation",
    "PilotInfo",
    "evaluate",
    "format_sweep",
    "format_table",
    "main",
    "make_row",
    "prepare_pilot",
    "run_evaluation",
]

logger = logging.getLogger(__name__)

DEFAULT_OUT = Path("trackpilot_out") / "eval"


def _default_tracks() -> tuple[str, ...]:
    return tuple(HELDOUT_TRACKS)


def _ms_list(text: str) -> tuple[float, ...]:
    return tuple(float(x.strip().removesuffix("ms")) for x in text.split(",") if x.strip())


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation: which pilots, where, how, and with which latency."""

    pilots: tuple[str, ...]  # pilot specs (agents.registry.load_pilot)
    tracks: tuple[str, ...] = field(
        default_factory=_default_tracks,
        metadata={"help": "comma-separated track names, gen:<seed> or files (held-out tracks)"},
    )
    directions: tuple[str, ...] = DIRECTIONS  # ccw, cw or ccw,cw
    laps: int = 3  # laps per run
    speed: float = 2.0  # m/s, held by cruise control
    latency: str = "measured"  # "measured", "0", a fixed value ("70ms", "0.07s") or a profile (.json or a directory of them)
    car: str | None = field(
        default=None,
        metadata={
            "help": "a reference car computer (python -m evaluation.cars list): charge each "
            "pilot the latency estimated for it there; a matching --latency profile wins"
        },
    )
    seeds: tuple[int, ...] = (0,)  # comma-separated seeds: one run per seed
    workers: int = 1  # processes for the runs (1: in this process); ray: CPUs of a local instance
    backend: str = field(
        default="pool",
        metadata={
            "choices": BACKENDS,
            "help": "where the runs execute: pool (this machine's processes) or ray (a Ray "
            "cluster, each run a task; pip install -e '.[ray]')",
        },
    )
    address: str | None = field(
        default=None,
        metadata={
            "help": "the Ray cluster for --backend ray: auto (this machine's), HOST:PORT or "
            "ray://HOST:PORT; none: a Ray instance started here with --workers CPUs"
        },
    )
    device: str = "cpu"  # where pilots run: cpu, cuda, cuda:N or auto
    sweep: bool = False  # also sweep fixed latencies (first seed only)
    sweep_latencies_ms: tuple[float, ...] = field(
        default=DEFAULT_SWEEP_MS,
        metadata={"help": "comma-separated ms for --sweep", "parse": _ms_list},
    )
    max_time_s: float | None = None  # per run, simulated seconds; none: 3x the laps' time + 20 s
    video_dir: str | None = None  # write an MP4 of every (non-sweep) run into this directory
    domain_randomization: bool = field(
        default=False,
        metadata={
            "help": "robustness runs: seeded road, line and ground colours, light direction and "
            "camera height and pitch per run (the rows say so; the report shows them as the "
            "robustness column)"
        },
    )
    out_dir: str | None = None  # write sweep.png here (with sweep); None: no files
    db: str | None = (
        None  # leaderboard SQLite file the rows go to, one transaction; None: not stored
    )
    latency_warmup: int = 10  # untimed calls before measuring a pilot's latency
    latency_calls: int = 200  # timed calls: their samples are replayed, the median shown

    def __post_init__(self) -> None:
        if not self.pilots:
            raise ValueError("name at least one pilot")
        if not self.tracks:
            raise ValueError("name at least one track")
        bad = [d for d in self.directions if d not in DIRECTIONS]
        if bad or not self.directions:
            raise ValueError(f"directions must be among {DIRECTIONS}, got {list(self.directions)}")
        if self.laps < 1:
            raise ValueError(f"laps must be >= 1, got {self.laps}")
        if not (math.isfinite(self.speed) and 0 < self.speed <= 5.0):
            raise ValueError(f"speed must be in (0, 5] m/s, got {self.speed}")
        if not self.seeds or any(s < 0 for s in self.seeds):
            raise ValueError(f"seeds must be integers >= 0, got {list(self.seeds)}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        validate_backend_options(self.backend, self.address, video=bool(self.video_dir))
        if self.max_time_s is not None and not self.max_time_s > 0:
            raise ValueError(f"max_time_s must be > 0, got {self.max_time_s}")
        if any(not math.isfinite(v) or v < 0 for v in self.sweep_latencies_ms):
            raise ValueError("sweep latencies must be finite and >= 0 ms")
        if self.sweep and not self.sweep_latencies_ms:
            raise ValueError("a sweep needs at least one latency")
        if self.latency_warmup < 0 or self.latency_calls < 1:
            raise ValueError("latency_warmup must be >= 0 and latency_calls >= 1")
        self.latency_setting  # noqa: B018 - validates the latency text
        if self.car is not None:
            get_car(self.car)  # an unknown name lists the known ones
        resolve_device(self.device)

    @property
    def latency_setting(self) -> LatencySetting:
        return parse_latency(self.latency)


class IncompleteEvaluation(ValueError):
    """Some runs were not made (their pilot could not be loaded where they ran); ``rows``
    are the other runs' rows, stored all the same when the evaluation stores rows."""

    def __init__(self, message: str, rows: list[ResultRow]) -> None:
        super().__init__(message)
        self.rows = rows


@dataclass
class PilotInfo:
    """A pilot loaded in the parent process: its metadata and the latency it is charged."""

    spec: str
    name: str
    kind: str
    meta: dict[str, Any]
    needs: PilotNeeds  # what it needs from the env
    charge: LatencyCharge  # the latency its runs are charged
    stats: LatencyStats | None  # when measured
    device: str

    @property
    def latency_mode(self) -> str:
        return self.charge.mode

    @property
    def latency_s(self) -> float:
        return self.charge.median_s


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "pilot"


def prepare_pilot(
    spec: str,
    setting: LatencySetting,
    *,
    device: str = "cpu",
    speed: float = 2.0,
    track: Any = "oval",
    warmup: int = 10,
    n: int = 200,
    car: str | None = None,
    profiles: list[Any] | None = None,
) -> PilotInfo:
    """Load the pilot named by ``spec`` and fix its latency (:func:`evaluation.charge.
    resolve_charge`: a matching profile, else ``car``'s estimate, else measured here once,
    else the fixed value).

    The measurement feeds the pilot a real observation of ``track`` in the obs mode and
    camera size it will be evaluated with. The loaded pilot is kept in this process's
    cache, so runs in this process reuse it.
    """
    pilot = load_pilot(spec, device=device, speed=speed)
    runner._PILOT_CACHE[(spec, device, speed)] = pilot
    needs = pilot_needs(pilot)
    stats = None
    if setting.mode == "measured" and car is None:
        env = TrackEnv(
            track=track,
            obs_mode=needs.obs_mode,
            image_size=needs.camera,
            fixed_speed=None if needs.throttle else speed,
        )
        try:
            # The observation the pilot will see, reset as the closed loop resets it.
            loop = ClosedLoop(env, pilot, speed=speed)
            obs, info = loop.reset(seed=0)
            stats = measure_latency(pilot, obs, info, warmup=warmup, n=n)
        finally:
            env.close()
        logger.info(
            "%s: measured latency median %.2f ms, p95 %.2f ms on %s",
            spec,
            stats.median_ms,
            stats.p95_ms,
            stats.device,
        )
    meta = pilot_metadata(pilot)
    charge = resolve_charge(
        setting,
        pilot,
        meta,
        car=car,
        stats=stats,
        device=device,
        camera=tuple(needs.camera) if needs.obs_mode == "image" else None,
        profiles=profiles,
    )
    if charge.mode in ("profile", "estimated"):
        logger.info("%s: latency median %.1f ms, %s", spec, charge.median_s * 1e3, charge.source)
    return PilotInfo(
        spec=spec,
        name=str(meta.get("name", getattr(pilot, "name", spec))),
        kind=str(meta.get("kind", "unknown")),
        meta=meta,
        needs=needs,
        charge=charge,
        stats=stats,
        device=stats.device if stats else str(meta.get("device", device)),
    )


#: The fields a row takes over from the run unchanged (one set of metric names).
_RUN_FIELDS = tuple(
    f.name
    for f in dataclasses.fields(ResultRow)
    if f.name in RunResult.__dataclass_fields__ and f.name not in ("pilot", "pilot_kind")
)


def make_row(
    result: RunResult,
    pilot: PilotInfo,
    *,
    sweep: bool = False,
    date: str | None = None,
) -> ResultRow:
    """The leaderboard row of one run: the run's own fields plus who was judged, on
    which hardware, with which code, when."""
    meta = pilot.meta
    sha = meta.get("checkpoint_sha256") or meta.get("sha256")
    # A sweep point charges a fixed latency here; every other run, the pilot's charge.
    charge = pilot.charge if not sweep else None

    def ms(v: float | None) -> float | None:
        return None if v is None else v * 1000.0

    here = describe_device(pilot.device)
    return ResultRow(
        **{name: getattr(result, name) for name in _RUN_FIELDS},
        pilot=pilot.name,
        pilot_kind=pilot.kind,
        pilot_spec=pilot.spec,
        checkpoint_sha256=str(sha) if sha else None,
        dataset_fingerprint=meta.get("dataset_fingerprint"),
        latency_p95_ms=ms(charge.p95_s) if charge else None,
        latency_p99_ms=ms(charge.p99_s) if charge else None,
        latency_max_ms=ms(charge.max_s) if charge else None,
        latency_source=charge.source if charge else f"fixed {result.latency_ms:g} ms",
        car=charge.car if charge else None,
        profile_sha256=charge.profile_sha256 if charge else None,
        profile_model_sha256=charge.profile_model_sha256 if charge else None,
        profile_hardware=charge.hardware if charge and charge.mode == "profile" else None,
        car_model=charge.car_model if charge else None,
        mflop=meta.get("mflop"),
        num_parameters=meta.get("num_parameters"),
        model_bytes=meta.get("model_bytes"),
        device=charge.device if charge and charge.mode in ("profile", "estimated") else here,
        hardware=hardware_fingerprint(pilot.device),
        code_version=code_version(),
        date=date or now_iso(),
        sweep=sweep,
    )


def _video_path(cfg: EvalConfig, pilot: PilotInfo, track: str, direction: str, seed: int) -> str:
    # Runs of one pilot at other latencies or with randomisation keep their own files.
    charged = pilot.charge.car or f"{pilot.latency_s * 1e3:g}ms"
    lat = "" if pilot.latency_mode == "measured" else f"_{_slug(charged)}"
    dr = "_dr" if cfg.domain_randomization else ""
    name = f"{_slug(pilot.name)}_{_slug(Path(track).stem)}_{direction}_s{seed}{lat}{dr}.mp4"
    return str(Path(cfg.video_dir or ".") / name)


def eval_context(cfg: EvalConfig, device: str) -> dict[str, Any]:
    """What an evaluation records in the store beside its rows: where it came from, its
    settings, the hardware and the code. No ``dataset_fingerprint``: the pilots of one
    evaluation may come from any dataset, and the main job's stays the report's current one."""
    settings = {
        k: v for k, v in asdict(cfg).items() if k not in ("db", "out_dir", "video_dir", "workers")
    }
    return {
        "source": "evaluation.evaluate",
        **settings,
        "eval_device": device,
        "hardware": hardware_fingerprint(device),
        "code_version": code_version(),
    }


def run_evaluation(
    cfg: EvalConfig, *, progress: bool = True, backend: Backend | None = None
) -> list[ResultRow]:
    """Run ``cfg``: load and time each pilot, run every job, return the rows, and store
    them in ``cfg.db`` (one transaction) when it is set.

    The runs execute on ``backend`` when given (an open one, left open: the leaderboard
    evaluates several times on one cluster), else on ``cfg.backend``. When some runs'
    pilot cannot be loaded where they execute, the others' rows are still stored and
    :class:`IncompleteEvaluation` is raised.
    """
    device = resolve_device(cfg.device)
    setting = cfg.latency_setting
    for t in cfg.tracks:  # fail before any work on a bad track
        load_track(t)
    if backend is None:  # ... or on a cluster that is not there
        check_backend(cfg.backend, cfg.address)
    if cfg.video_dir:  # ... or an ffmpeg that cannot write the videos
        from sim.mp4 import check_ffmpeg

        check_ffmpeg()
    profiles = load_profiles(setting.path) if setting.mode == "profile" and setting.path else None
    pilots = [
        prepare_pilot(
            spec,
            setting,
            device=device,
            speed=cfg.speed,
            track=cfg.tracks[0],
            warmup=cfg.latency_warmup,
            n=cfg.latency_calls,
            car=cfg.car,
            profiles=profiles,
        )
        for spec in cfg.pilots
    ]
    # Opened and checked (integrity, schema, a write rolled back) once the pilots load and
    # before any run: a bad --db is one error line now, not after minutes of driving, and a
    # bad pilot leaves no new file behind.
    store = Store(cfg.db) if cfg.db else None
    try:
        try:
            rows = _run(cfg, device, pilots, progress, backend)
        except IncompleteEvaluation as e:  # the runs that were made are stored all the same
            if store is not None and e.rows:
                store.add(closed_loop=e.rows, context=eval_context(cfg, device))
            raise
        if store is not None:
            store.add(closed_loop=rows, context=eval_context(cfg, device))
    finally:
        if store is not None:
            store.close()
    return rows


def _run(
    cfg: EvalConfig,
    device: str,
    pilots: list[PilotInfo],
    progress: bool,
    backend: Backend | None = None,
) -> list[ResultRow]:
    """Every run of ``pilots`` (and the sweep points), as rows; :class:`IncompleteEvaluation`
    (with the rows of the runs that were made) when some pilot could not be loaded."""

    def job(p: PilotInfo, track: str, direction: str, seed: int, **kw: Any) -> RunJob:
        return RunJob(
            pilot_spec=p.spec,
            track=track,
            direction=direction,
            laps=cfg.laps,
            speed=cfg.speed,
            seed=seed,
            device=device,
            max_time_s=cfg.max_time_s,
            domain_randomization=cfg.domain_randomization,
            **kw,
        )

    jobs: list[tuple[RunJob, PilotInfo, bool]] = []
    for p in pilots:
        for track in cfg.tracks:
            for direction in cfg.directions:
                for seed in cfg.seeds:
                    video = _video_path(cfg, p, track, direction, seed) if cfg.video_dir else None
                    j = job(
                        p,
                        track,
                        direction,
                        seed,
                        latency_s=p.latency_s,
                        latency_mode=p.latency_mode,
                        latency_samples=p.charge.samples,
                        video_path=video,
                    )
                    jobs.append((j, p, False))
                if cfg.sweep:
                    for ms in sorted(set(cfg.sweep_latencies_ms)):
                        j = job(
                            p,
                            track,
                            direction,
                            cfg.seeds[0],
                            latency_s=ms / 1000.0,
                            latency_mode="zero" if ms == 0 else "fixed",
                            record_trajectory=False,
                        )
                        jobs.append((j, p, True))

    try:
        results: list[RunResult | None] = list(
            run_many(
                [j for j, _, _ in jobs],
                cfg.workers,
                progress=progress,
                backend=backend or cfg.backend,
                address=cfg.address,
            )
        )
        incomplete = None
    except RunsIncomplete as e:
        results, incomplete = e.results, e
    date = now_iso()
    done = [(r, p, s) for r, (_, p, s) in zip(results, jobs, strict=True) if r is not None]
    rows = [make_row(r, p, sweep=s, date=date) for r, p, s in done]
    swept = [r for r, _, s in done if s]
    if cfg.out_dir and swept:
        out = Path(cfg.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        plot_sweep(swept, out / "sweep.png")
    if incomplete is not None:
        raise IncompleteEvaluation(str(incomplete), rows)
    return rows


def evaluate(
    pilot_specs: Sequence[str],
    *,
    progress: bool = True,
    backend: str | Backend | None = None,
    **settings: Any,
) -> list[ResultRow]:
    """Evaluate pilots in-process; ``settings`` are :class:`EvalConfig` fields. The runs
    execute on ``backend``: a name (:data:`evaluation.backends.BACKENDS`, opened for
    this call) or an open :class:`~evaluation.backends.Backend` (left open).

    Returns one row per pilot x track x direction x seed (``sweep=False``) and, with
    ``sweep=True``, one per sweep point (``sweep=True``). Nothing is stored unless ``db``
    is given, nor plotted unless ``out_dir`` is.
    """
    for key in ("tracks", "directions", "seeds", "sweep_latencies_ms"):
        if key in settings and isinstance(settings[key], (list, str)):
            value = settings[key]
            settings[key] = tuple([value] if isinstance(value, str) else value)
    if isinstance(pilot_specs, str):
        pilot_specs = [pilot_specs]
    if isinstance(backend, str):
        settings["backend"], backend = backend, None
    cfg = EvalConfig(pilots=tuple(pilot_specs), **settings)
    return run_evaluation(cfg, progress=progress, backend=backend)


# --------------------------------------------------------------------------- output
def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def format_table(rows: Sequence[ResultRow]) -> str:
    """The runs as a fixed-width text table."""
    head = (
        f"{'pilot':<22} {'track':<12} {'dir':<3} {'seed':>4} {'latency':>12} {'Hz':>5} "
        f"{'laps':>5} {'int':>4} {'auton%':>7} {'|cte|':>6} {'max':>6} {'lap s':>6} "
        f"{'m/s':>5} {'ok':>3}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        mark = {"measured": "*", "profile": "p", "estimated": "e"}.get(r.latency_mode, "")
        lat = f"{r.latency_ms:.1f}ms" + mark
        lines.append(
            f"{r.pilot[:22]:<22} {r.track[:12]:<12} {r.direction:<3} {r.seed:>4} {lat:>12} "
            f"{r.effective_control_hz:>5.1f} {r.laps_completed:>2}/{r.laps_target:<2} "
            f"{r.interventions:>4} {r.autonomy:>7.1f} {r.mean_abs_cte:>6.3f} "
            f"{r.max_abs_cte:>6.3f} {_fmt(r.mean_lap_time, '6.2f'):>6} {r.mean_speed:>5.2f} "
            f"{'yes' if r.ok else 'NO':>3}"
        )
    if any(r.latency_mode == "measured" for r in rows):
        lines.append(
            "* measured: median batch-1 inference time on this machine (each "
            "inference draws from the measured samples)"
        )
    for car in sorted({r.car for r in rows if r.latency_mode == "estimated" and r.car}):
        lines.append(f"e estimated for {car} (median; each inference draws from the estimate)")
    for r in {r.latency_source: r for r in rows if r.latency_mode == "profile"}.values():
        lines.append(f"p {r.latency_source} (median; each inference draws from its samples)")
    return "\n".join(lines)


def format_sweep(rows: Sequence[ResultRow]) -> str:
    """Per pilot, track and direction: laps/interventions at each latency, and the
    largest latency that still laps cleanly."""
    lines = []
    for (pilot, track, direction, seed, _, _), rs in group_sweeps(rows).items():
        ok = max_ok_latency(rs)
        points = " ".join(f"{r.latency_ms:g}:{r.laps_completed}/{r.interventions}" for r in rs)
        best = "none" if ok is None else f"{ok:g} ms"
        lines.append(
            f"{pilot} {track} {direction} seed {seed}: max OK latency {best}  "
            f"[ms:laps/interventions {points}]"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- CLI
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one clear line, exit status 2
        self.exit(2, f"error: {message}\n")


#: EvalConfig fields under other flag names.
_FLAGS = {
    "sweep_latencies_ms": "--sweep-latencies",
    "max_time_s": "--max-time",
    "video_dir": "--video",
}


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m evaluation.evaluate",
        description="Closed-loop, latency-aware evaluation of driving pilots.",
    )
    p.add_argument(
        "pilots",
        nargs="+",
        metavar="PILOT",
        help="expert, classical, a CNN checkpoint, a stable-baselines3 agent or an .onnx file",
    )
    add_config_args(p, EvalConfig, exclude=("pilots", "workers", "out_dir", "db"), flags=_FLAGS)
    p.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="processes for the runs (default: all cores, %(default)s here); with --backend "
        "ray and no --address, the CPUs of the Ray instance started here",
    )
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    p.add_argument(
        "--db",
        default=str(DEFAULT_DB),
        help="leaderboard SQLite file the rows are stored in, in one transaction once every "
        "run has ended (the main job's; none: not stored) (default: %(default)s)",
    )
    p.add_argument(
        "--out",
        default=str(DEFAULT_OUT),
        help="directory for sweep.png (with --sweep) (default: %(default)s)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for inference and its latency measurement (default 1: the runs "
        "share the cores, and the figure should not depend on how busy the machine is)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.threads < 1:
        print("error: --threads must be >= 1", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(args.threads)
    db = None if args.db.strip().lower() == "none" else args.db
    try:
        cfg = config_from_args(
            EvalConfig,
            args,
            pilots=tuple(args.pilots),
            workers=args.workers,
            out_dir=args.out,
            db=db,
        )
        rows = run_evaluation(cfg, progress=not args.no_progress)
    except IncompleteEvaluation as e:
        print(f"error: {e}", file=sys.stderr)
        where = "not stored (--db none)" if db is None else f"stored in {db}"
        print(f"the other {len(e.rows)} rows {where}", file=sys.stderr)
        return 1
    except (ValueError, OSError, StoreError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # the cluster failed a run (a worker died past its retries)
        print(f"error: {e}", file=sys.stderr)
        return 1
    main_rows = [r for r in rows if not r.sweep]
    sweep_rows = [r for r in rows if r.sweep]
    if args.json:
        for r in rows:
            print(json.dumps(r.to_dict(trajectory=False), allow_nan=False))
    else:
        print(format_table(main_rows))
        if sweep_rows:
            print()
            print(format_sweep(sweep_rows))
    if db is None:
        print(f"{len(rows)} rows not stored (--db none)", file=sys.stderr)
    else:
        hint = "" if Path(db) == DEFAULT_DB else f" --db {db}"
        print(
            f"stored {len(rows)} rows in {db}; python -m evaluation.report{hint} ranks them",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(
        run_main(main, note="nothing stored: the rows go to the leaderboard once all runs end")
    )
