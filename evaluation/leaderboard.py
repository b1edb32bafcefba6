"""``python -m evaluation.leaderboard``: the whole story, from expert laps to a ranked board.

    python -m evaluation.leaderboard                      # quick preset, CPU, < 10 min
    python -m evaluation.leaderboard --preset full        # GPU machines
    python -m evaluation.leaderboard --out DIR --db FILE --seed 0 --device auto --force

Steps (each a function, testable with tiny settings; every name is importable from here):

1. :func:`~evaluation.zoo.record_dataset`: expert laps, counter-clockwise and clockwise, on
   the training tracks; reused when the dataset validates and already holds every expected
   episode.
2. :func:`~evaluation.zoo.train_zoo`: the model zoo, each in a run directory named by the
   hash of its resolved training config and the dataset fingerprint; reused when
   ``best.json`` and ``test_metrics.json`` are there and match. Trainings run in parallel
   processes.
3. :func:`evaluate_zoo`: the zoo plus ``expert`` and ``classical``, offline on the test
   split (the runs' ``test_metrics.json`` plus the measured latency) and in closed loop,
   latency measured, on the held-out tracks (never used in training) in both directions,
   clean and again with domain randomisation (the board's robustness column);
   the zoo again in closed loop at the latency estimated for the preset's reference car
   computer (``--car``, :mod:`evaluation.cars`); a latency sweep for the pilots the
   story needs. One store transaction. ``--backend ray [--address ...]`` runs these
   closed-loop runs as tasks on a Ray cluster (:mod:`evaluation.backends`); recording and
   training stay on this machine.
4. :func:`~evaluation.story.story_checks` and :func:`write_leaderboard`: the expected
   outcome checked honestly, the reports written (terminal, Markdown, CSV, HTML) and their
   paths printed.

The presets (what each step does, sized per machine) are in :mod:`evaluation.presets`;
the flags are the fields of :class:`LeaderboardConfig`.

Latency is measured on ``--eval-device`` (default ``cpu``: the car's own computer), with
``--threads`` torch threads (default 1), so the number does not depend on how many runs
share the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.classical import EdgePilot
from evaluation.backends import (
    BACKENDS,
    Backend,
    check_backend,
    open_backend,
    validate_backend_options,
)
from evaluation.cars import get_car
from evaluation.evaluate import evaluate
from evaluation.presets import FULL, PRESETS, QUICK, ROLES, TINY, ModelSpec, Preset
from evaluation.report import (
    FORMATS,
    Report,
    build_report,
    current_context,
    render_terminal,
    write_reports,
)
from evaluation.results import ResultRow
from evaluation.store import DEFAULT_OUT, Store, StoreError
from evaluation.story import Check, Evaluation, lateral_offset, story_checks
from evaluation.zoo import (
    DatasetInfo,
    TrainedModel,
    config_key,
    record_config,
    record_dataset,
    run_config,
    train_zoo,
)
from sim.dataset import open_dataset
from tracks.cli import run_main
from tracks.cliargs import add_config_args, config_from_args
from tracks.common import DIRECTIONS

__all__ = [
    "FULL",
    "PRESETS",
    "QUICK",
    "ROLES",
    "TINY",
    "Check",
    "DatasetInfo",
    "Evaluation",
    "LeaderboardConfig",
    "ModelSpec",
    "Preset",
    "TrainedModel",
    "build_parser",
    "classical_offline",
    "config_key",
    "evaluate_zoo",
    "lateral_offset",
    "main",
    "record_config",
    "record_dataset",
    "run_config",
    "story_checks",
    "train_zoo",
    "write_leaderboard",
]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- step 3: evaluate
def _rename(rows: Sequence[ResultRow], names: dict[str, str]) -> None:
    for r in rows:
        r.pilot = names.get(r.pilot_spec, r.pilot)


def _offline_row(
    name: str,
    kind: str,
    rows: Sequence[ResultRow],
    trained: TrainedModel | None = None,
    metrics: dict[str, Any] | None = None,
    dataset_fingerprint: str | None = None,
) -> dict[str, Any]:
    """An offline leaderboard row: test metrics (training's, or ``metrics``) plus the
    latency measured for the closed loop."""
    measured = [r for r in rows if r.pilot == name and r.latency_mode == "measured"]
    first = measured[0] if measured else None
    tm = dict(trained.test_metrics if trained else (metrics or {}))
    classes = tm.get("classes") or {}
    row: dict[str, Any] = {
        "pilot": name,
        "pilot_kind": kind,
        "checkpoint_sha256": trained.record.get("weights_sha256") if trained else None,
        "dataset_fingerprint": (trained.record.get("dataset") or {}).get("fingerprint")
        if trained
        else dataset_fingerprint,
        "split": tm.get("split", "test"),
        "output_kind": (trained.record.get("output") or {}).get("kind")
        if trained
        else "regression",
        "n": tm.get("n"),
        "mae": tm.get("mae"),
        "mse": tm.get("mse"),
        "macro_f1": tm.get("macro_f1"),
        "accuracy": tm.get("accuracy"),
        "per_class": classes.get("per_class"),
        "mflop": first.mflop if first else None,
        "num_parameters": first.num_parameters
        if first
        else (trained.record.get("num_parameters") if trained else None),
        "model_bytes": first.model_bytes if first else None,
        "latency_median_ms": first.latency_ms if first else None,
        "latency_p95_ms": first.latency_p95_ms if first else None,
        "device": first.device if first else None,
        "hardware": first.hardware if first else None,
        "code_version": first.code_version if first else None,
        "run_dir": str(trained.run_dir) if trained else None,
    }
    extra = {
        k: tm.get(k) for k in ("flip_consistency", "mae_expected", "episodes", "epoch") if k in tm
    }
    if trained:
        extra.update(
            num_parameters=trained.record.get("num_parameters"),
            epochs_run=trained.record.get("epochs_run"),
            diagnosis=(trained.record.get("diagnosis") or {}).get("verdict"),
            input_size=trained.record.get("input_size"),
            # compensated labels: its F1 is against the expert's command for t + L
            labels_latency_ms=(trained.record.get("labels") or {}).get("latency_ms"),
        )
    if metrics and metrics.get("note"):
        extra["note"] = metrics["note"]
    row["extra"] = extra
    return row


def classical_offline(dataset: Path, test_keys: Sequence[str]) -> dict[str, Any]:
    """Steering MAE/MSE of the edge-filter pilot on the test episodes (frames in order)."""
    ds = open_dataset(dataset)
    pilot = EdgePilot()
    errs = []
    for key in test_keys:
        arrays = ds.load_episode(key, fields=["image", "steering"])
        pilot.reset()
        pred = np.array([pilot.act(img, {})[0] for img in arrays["image"]], dtype=np.float64)
        errs.append(pred - arrays["steering"].astype(np.float64))
    err = np.concatenate(errs) if errs else np.zeros(0)
    if not err.size:
        return {"split": "test", "n": 0}
    return {
        "split": "test",
        "n": int(err.size),
        "mae": float(np.abs(err).mean()),
        "mse": float((err**2).mean()),
        "note": "edge filters, no training; the test episodes of the compact run's split",
    }


def evaluate_zoo(
    preset: Preset,
    zoo: dict[str, TrainedModel],
    data: DatasetInfo,
    store: Store,
    *,
    seed: int = 0,
    workers: int = 1,
    device: str | None = None,
    progress: bool = False,
    say: Callable[[str], None] = print,
    video_dir: str | None = None,
    backend: Backend | None = None,
) -> Evaluation:
    """Step 3: offline table and closed-loop runs (measured latency) of the zoo, the
    expert and the classical pilot; with ``preset.robustness`` the same runs again with
    domain randomisation (the board's robustness column); latency sweep of
    ``preset.sweep_roles``; one store transaction. ``video_dir``: an MP4 of every run on
    this machine (clean and randomised) there, shown in the HTML report. The runs execute
    on ``backend`` (default: the process pool with ``workers``)."""
    device = device or preset.eval_device
    specs = ["expert", "classical", *(str(m.run_dir) for m in zoo.values())]
    names = {"expert": "expert", "classical": "classical"}
    names.update({str(m.run_dir): m.spec.name for m in zoo.values()})
    common = dict(
        laps=preset.eval_laps,
        speed=preset.cruise_speed,
        seeds=(seed,),
        workers=workers,
        device=device,
        backend=backend,
    )
    # This machine's board, clean and (with preset.robustness) randomised: the same runs.
    measured: dict[str, Any] = dict(
        tracks=preset.eval_tracks,
        directions=DIRECTIONS,
        latency="measured",
        progress=progress,
        video_dir=video_dir,
        **common,
    )
    t0 = time.perf_counter()
    rows = evaluate(specs, **measured)
    _rename(rows, names)
    say(f"  closed loop: {len(rows)} runs in {time.perf_counter() - t0:.0f} s")
    robust_rows: list[ResultRow] = []
    if preset.robustness:
        # The same pilots, tracks and seeds with seeded colours, light and camera pose: a
        # pilot that drives only on the training palette shows it in this column.
        t0 = time.perf_counter()
        robust_rows = evaluate(specs, domain_randomization=True, **measured)
        _rename(robust_rows, names)
        say(
            f"  closed loop with domain randomisation: {len(robust_rows)} runs in "
            f"{time.perf_counter() - t0:.0f} s"
        )
    car_rows: list[ResultRow] = []
    if preset.reference_car and zoo:
        # The zoo again, on the reference car: each model at the latency estimated for it
        # there (a distribution: each inference draws its own), in real closed-loop runs.
        t0 = time.perf_counter()
        car_rows = evaluate(
            [str(m.run_dir) for m in zoo.values()],
            tracks=preset.eval_tracks,
            directions=DIRECTIONS,
            car=preset.reference_car,
            progress=progress,
            **common,
        )
        _rename(car_rows, names)
        say(
            f"  closed loop estimated for {preset.reference_car}: {len(car_rows)} runs in "
            f"{time.perf_counter() - t0:.0f} s"
        )
    comp_rows, comp_label, comp_reused = _compensation_rows(
        preset, zoo, car_rows, names, progress, common
    )
    if comp_rows and not comp_reused:  # reused runs: already said with the car's
        say(f"  closed loop at {comp_label} (compensated for it): {len(comp_rows)} runs")
    sweep_specs = [str(zoo[r].run_dir) for r in preset.sweep_roles if r in zoo]
    sweep_rows: list[ResultRow] = []
    if sweep_specs and preset.sweep_latencies_ms:
        t0 = time.perf_counter()
        out = evaluate(
            sweep_specs,
            tracks=(preset.sweep_track or preset.eval_tracks[0],),
            directions=(preset.sweep_direction,),
            latency="0",
            sweep=True,
            sweep_latencies_ms=preset.sweep_latencies_ms,
            progress=progress,
            **common,
        )
        sweep_rows = [r for r in out if r.sweep]
        _rename(sweep_rows, names)
        say(f"  latency sweep: {len(sweep_rows)} runs in {time.perf_counter() - t0:.0f} s")
    offline = [
        _offline_row(
            "expert",
            "expert",
            rows,
            metrics={"split": "test", "note": "privileged: its commands are the labels"},
        )
    ]
    # Classical pilot: the test episodes of a run trained on both directions.
    first = zoo.get("compact") or next(
        (m for m in zoo.values() if set(m.spec.directions) == {"ccw", "cw"}), None
    )
    try:
        test_keys = (first.record.get("split") or {}).get("test") if first else None
        if test_keys is None and first is not None:
            split = json.loads((first.run_dir / "split.json").read_text(encoding="utf-8"))
            test_keys = split["episodes"]["test"]
        cm = classical_offline(data.path, test_keys or [])
    except (OSError, ValueError, KeyError, ImportError) as e:
        logger.warning("classical pilot offline metrics skipped: %s", e)
        cm = {"split": "test", "note": f"not computed ({e})"}
    offline.append(_offline_row("classical", "classical", rows, metrics=cm))
    offline += [_offline_row(m.spec.name, "cnn", rows, trained=m) for m in zoo.values()]
    fresh = [] if comp_reused else comp_rows  # reused runs are stored with car_rows
    eid = store.add(
        closed_loop=[*rows, *robust_rows, *car_rows, *fresh],
        sweep=sweep_rows,
        offline=offline,
        context={
            "source": "evaluation.leaderboard",
            "dataset_fingerprint": data.fingerprint,
            "dataset": str(data.path),
            "preset": preset.name,
            "seed": seed,
            "eval_device": device,
            "reference_car": preset.reference_car,
        },
    )
    return Evaluation(
        rows, sweep_rows, offline, eid, names, car_rows, preset.reference_car, robust_rows,
        comp_rows, comp_label,
    )  # fmt: skip


#: The roles driven at the compensated model's latency for the story's compensation check.
_COMPENSATION_ROLES = ("slow_classifier", "compensated", "dagger")


def _compensation_rows(
    preset: Preset,
    zoo: dict[str, TrainedModel],
    car_rows: list[ResultRow],
    names: dict[str, str],
    progress: bool,
    common: dict[str, Any],
) -> tuple[list[ResultRow], str | None, bool]:
    """The slow classifier and its compensated versions at the latency the compensated
    one was trained for (``compensate_latency``: a fixed value, or a car computer's
    estimate: the reference car's runs are reused), that latency's label, and whether
    the rows are the reference car's (reused, not new runs)."""
    comp = preset.role("compensated")
    if comp is None or not comp.compensate_latency or "compensated" not in zoo:
        return [], None, False
    pilots = {names[str(zoo[r].run_dir)] for r in _COMPENSATION_ROLES if r in zoo}
    specs = [str(zoo[r].run_dir) for r in _COMPENSATION_ROLES if r in zoo]
    text = comp.compensate_latency
    if text.startswith("car:"):
        car = text[4:]
        if car == preset.reference_car:
            return [r for r in car_rows if r.pilot in pilots], f"estimated for {car}", True
        setting: dict[str, Any] = {"car": car}
        label = f"estimated for {car}"
    else:
        setting = {"latency": text}
        label = text
    rows = evaluate(
        specs, tracks=preset.eval_tracks, directions=DIRECTIONS, progress=progress,
        **setting, **common,
    )  # fmt: skip
    _rename(rows, names)
    return rows, label, False


# ---------------------------------------------------------------------------- step 4: reports
def write_leaderboard(
    store: Store,
    out: Path,
    *,
    dataset_fingerprint: str | None,
    notes: Sequence[str] = (),
    formats: Sequence[str] = FORMATS,
) -> tuple[Report, dict[str, list[Path]]]:
    """Build the report from the store and write it under ``out/report``."""
    ctx = current_context(store, dataset_fingerprint)
    report = build_report(store, ctx, notes=notes)
    return report, write_reports(report, Path(out) / "report", formats)


# ---------------------------------------------------------------------------- CLI
@dataclass(frozen=True)
class LeaderboardConfig:
    """The main job's settings, one flag each (``python -m evaluation.leaderboard --help``)."""

    preset: str = field(
        default="quick",
        metadata={
            "choices": sorted(PRESETS),
            "help": "quick (CPU, minutes), full (GPU) or tiny (seconds: a smoke test); each is "
            "described below",
        },
    )
    out: str = str(DEFAULT_OUT)  # output directory
    db: str | None = None  # leaderboard SQLite file; none: OUT/leaderboard.sqlite
    seed: int = 0  # seed of the recording, the trainings and the closed-loop runs
    device: str | None = None  # training device: cpu, cuda, auto; none: the preset's
    eval_device: str | None = field(
        default=None,
        metadata={
            "help": "where pilots run in closed loop; none: the preset's (cpu: the car's computer)"
        },
    )
    workers: int = field(
        default_factory=lambda: os.cpu_count() or 1,
        metadata={"help": "parallel processes (all cores)"},
    )
    threads: int = 1  # torch threads for latency measurement
    car: str | None = field(
        default=None,
        metadata={
            "help": "reference car computer the zoo is also judged on (python -m "
            "evaluation.cars list); none: the preset's"
        },
    )
    force: bool = False  # ignore caches: record and train again
    backend: str = field(
        default="pool",
        metadata={
            "choices": BACKENDS,
            "help": "where the closed-loop runs execute: pool (this machine's processes) or "
            "ray (a Ray cluster; pip install -e '.[ray]')",
        },
    )
    address: str | None = field(
        default=None,
        metadata={
            "help": "the Ray cluster for --backend ray: auto, HOST:PORT or ray://HOST:PORT; "
            "none: a Ray instance started here with --workers CPUs"
        },
    )
    progress: bool = False  # progress bars for the closed-loop runs
    video: bool = False  # an MP4 of every closed-loop run on this machine (OUT/videos), shown in the HTML report

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        if self.workers < 1 or self.threads < 1:
            raise ValueError("--workers and --threads must be >= 1")
        if self.car is not None:
            get_car(self.car)
        validate_backend_options(self.backend, self.address, video=bool(self.video))


def presets_help(width: int = 78) -> str:
    """The presets, one paragraph each (``--help``'s epilog)."""
    parts = ["presets:"]
    for name in sorted(PRESETS):
        text = f"{name}: {PRESETS[name].describe()}"
        parts.append(
            textwrap.fill(
                text, width, initial_indent="  ", subsequent_indent="    ", break_on_hyphens=False
            )
        )
    return "\n".join(parts)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m evaluation.leaderboard",
        description="Record, train the zoo, evaluate in closed loop with measured latency, rank.",
        epilog=presets_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_args(ap, LeaderboardConfig)
    return ap


@contextlib.contextmanager
def _timed(timings: dict[str, float], step: str) -> Iterator[None]:
    """Time the ``with`` block as ``timings[step]`` (seconds; left out if it raises)."""
    t0 = time.perf_counter()
    yield
    timings[step] = time.perf_counter() - t0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = config_from_args(LeaderboardConfig, args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    preset = PRESETS[cfg.preset]
    if cfg.car is not None:
        preset = dataclasses.replace(preset, reference_car=cfg.car)
    out = Path(cfg.out)
    db = Path(cfg.db) if cfg.db else out / "leaderboard.sqlite"
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    def say(text: str) -> None:
        print(text, flush=True)

    try:
        torch.set_num_threads(cfg.threads)
        # Opened and checked (integrity, schema, a write rolled back) before a minute is
        # spent recording and training: a bad --db is one error line now, not at [3/4].
        # Likewise the cluster: an unreachable --address is an error before any work.
        check_backend(cfg.backend, cfg.address)
        store = Store(db)
    except (StoreError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # What every step is given: the seed and the worker count (and, when it reports, say).
    run: dict[str, Any] = {"seed": cfg.seed, "workers": cfg.workers}
    kw = {**run, "say": say}
    try:
        say(f"[1/4] expert laps on {', '.join(preset.train_tracks)} (ccw, cw)")
        with _timed(timings, "record"):
            data = record_dataset(preset, out, force=cfg.force, **run)
        say(
            f"  {data.path}: {data.episodes} episodes, {data.frames} frames "
            f"({'recorded ' + str(data.recorded) if data.recorded else 'reused'}) in {timings['record']:.0f} s"
        )
        say(f"[2/4] training the zoo ({len(preset.zoo)} models)")
        with _timed(timings, "train"):
            zoo = train_zoo(preset, data, out, device=cfg.device, force=cfg.force, **kw)
        say(
            f"[3/4] offline + closed loop on held-out {', '.join(preset.eval_tracks)} "
            "(ccw, cw), latency measured here"
            + (f" and estimated for {preset.reference_car}" if preset.reference_car else "")
        )
        with (
            _timed(timings, "evaluate"),
            open_backend(cfg.backend, workers=cfg.workers, address=cfg.address) as backend,
        ):
            ev = evaluate_zoo(
                preset,
                zoo,
                data,
                store,
                device=cfg.eval_device,
                progress=cfg.progress,
                backend=backend,
                video_dir=str(out / "videos") if cfg.video else None,
                **kw,
            )
        say("[4/4] reports")
        with _timed(timings, "report"):
            checks = story_checks(preset, ev)
            notes = ["Story (expected outcome, checked):", *(c.line() for c in checks)]
            report, written = write_leaderboard(
                store, out, dataset_fingerprint=data.fingerprint, notes=notes
            )
    except (ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        store.close()
    total = time.perf_counter() - t_start
    say("")
    say(render_terminal(report))
    say(
        f"preset {preset.name}: {total:.0f} s in all ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
        + ")"
    )
    say(f"database: {db}")
    for paths in written.values():
        for p in paths:
            say(f"wrote {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main, note="finished steps kept in --out, reused by the next run"))
