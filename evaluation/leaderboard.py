"""``python -m evaluation.leaderboard``: the whole story, from expert laps to a ranked board.

    python -m evaluation.leaderboard                      # quick preset, CPU, < 10 min
    python -m evaluation.leaderboard --preset full        # GPU machines
    python -m evaluation.leaderboard --out DIR --db FILE --seed 0 --device auto --force

Steps (each a function here, testable with tiny settings):

1. :func:`record_dataset`: expert laps, counter-clockwise and clockwise, on the training
   tracks; reused when the dataset validates and already holds every expected episode.
2. :func:`train_zoo`: the model zoo, each in a run directory named by the hash of its
   resolved training config and the dataset fingerprint; reused when ``best.json`` and
   ``test_metrics.json`` are there and match. Trainings run in parallel processes.
3. :func:`evaluate_zoo`: the zoo plus ``expert`` and ``classical``, offline on the test
   split (the runs' ``test_metrics.json`` plus the measured latency) and in closed loop,
   latency measured, on the held-out tracks (never used in training) in both directions;
   a latency sweep for the pilots the story needs. One store transaction.
4. :func:`story_checks` and :func:`write_leaderboard`: the expected outcome checked
   honestly, the reports written (terminal, Markdown, CSV, HTML) and their paths printed.

Latency is measured on ``--eval-device`` (default ``cpu``: the car's own computer), with
``--threads`` torch threads (default 1), so the number does not depend on how many runs
share the machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluation.store import DEFAULT_OUT, Store

__all__ = [
    "FULL",
    "PRESETS",
    "QUICK",
    "TINY",
    "Check",
    "DatasetInfo",
    "ModelSpec",
    "Preset",
    "TrainedModel",
    "evaluate_zoo",
    "main",
    "record_dataset",
    "run_config",
    "story_checks",
    "train_zoo",
    "write_leaderboard",
]

logger = logging.getLogger(__name__)

# Roles the story refers to (a preset names which model plays each).
ROLES = ("compact", "pilotnet", "classifier", "slow_classifier", "ccw_only")


@dataclass(frozen=True)
class ModelSpec:
    """One zoo member: a name on the board, its story role and its training settings."""

    name: str  # pilot name on the leaderboard
    role: str  # one of ROLES
    model: str  # training.config ARCHS: compact | pilotnet | compact_cls | resnet_cls
    epochs: int
    input_size: tuple[int, int] | None = None  # None: the architecture's default
    width: float = 1.0
    depth: int | None = None
    flip: bool = True  # horizontal-flip augmentation
    directions: tuple[str, ...] = ("ccw", "cw")  # episodes trained on
    max_frames: int | None = None  # cap on frames used (every k-th frame)
    batch_size: int = 64
    lr: float = 1e-3  # AdamW learning rate
    patience: int = 3

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {self.role!r}")


@dataclass(frozen=True)
class Preset:
    """Everything the main job does, sized for one kind of machine."""

    name: str
    train_tracks: tuple[str, ...]
    record_laps: int  # laps per episode
    record_episodes: int  # episodes per track and direction
    image_size: tuple[int, int]  # camera H x W
    cruise_speed: float  # expert speed when recording, and closed-loop speed
    zoo: tuple[ModelSpec, ...]
    eval_tracks: tuple[str, ...]
    eval_laps: int
    sweep_roles: tuple[str, ...] = ("compact", "slow_classifier")
    sweep_track: str | None = None  # None: the first eval track
    sweep_direction: str = "ccw"
    sweep_latencies_ms: tuple[float, ...] = (0, 50, 100, 150, 200, 300, 500)
    train_device: str = "auto"
    eval_device: str = "cpu"
    # Expert perturbations while recording (the labels stay clean): executed-steering
    # noise and drift-and-recover phases teach recoveries and, with random starts, make
    # every episode of a (track, direction) different, so train, dev and test are no copies.
    steer_noise: float = 0.05
    drift_prob: float = 0.02
    start: str = "random"

    def __post_init__(self) -> None:
        overlap = set(self.train_tracks) & set(self.eval_tracks)
        if overlap:
            raise ValueError(f"held-out tracks must not be trained on: {sorted(overlap)}")
        names = [m.name for m in self.zoo]
        if len(set(names)) != len(names):
            raise ValueError(f"zoo names must be unique, got {names}")

    def role(self, role: str) -> ModelSpec | None:
        return next((m for m in self.zoo if m.role == role), None)


def _train_and_heldout() -> tuple[tuple[str, ...], tuple[str, ...]]:
    from tracks import HELDOUT_TRACKS, TRAIN_TRACKS

    return tuple(TRAIN_TRACKS), tuple(HELDOUT_TRACKS)


def _quick() -> Preset:
    _, heldout = _train_and_heldout()
    return Preset(
        name="quick",
        # A subset of the training tracks that turn only left when driven counter-
        # clockwise (the recipe's setting for the left bias: with kidney's right bend
        # in the data the ccw-only model lapped clockwise as well); five one-lap
        # episodes per track and direction: three to train on, one each for dev and
        # test, so every split has every track in both directions. (With three, one
        # to train on, the story's outcome hung on which episode that was.)
        train_tracks=("oval", "speedway"),
        record_laps=1,
        record_episodes=5,
        image_size=(60, 80),
        cruise_speed=2.0,
        zoo=(
            # Up to 30 epochs, stopped early on the dev set: 10 left the compact
            # models underfitting on some seeds (train MAE still falling).
            ModelSpec("compact", "compact", "compact", epochs=30, max_frames=4000),
            ModelSpec(
                "pilotnet",
                "pilotnet",
                "pilotnet",
                epochs=10,
                input_size=(60, 80),
                depth=1,
                max_frames=4000,
            ),
            ModelSpec("compact_cls", "classifier", "compact_cls", epochs=30, max_frames=4000),
            # ResNet-style at 1.6x the camera resolution, sized to train in the CPU budget:
            # the slowest of the zoo, yet within the control period on this CPU, so the
            # sweep shows where it would crash (--preset full: ResNet-18 at 240x320).
            ModelSpec(
                "resnet_cls_hires",
                "slow_classifier",
                "resnet_cls",
                epochs=16,
                input_size=(96, 128),
                width=0.5,
                depth=1,
                max_frames=4000,
                batch_size=32,
                lr=2e-3,
            ),
            ModelSpec(
                "compact_ccw_noflip",
                "ccw_only",
                "compact",
                epochs=30,
                flip=False,
                directions=("ccw",),
                max_frames=4000,
            ),
        ),
        eval_tracks=heldout,
        eval_laps=1,
        sweep_latencies_ms=(50, 100, 150, 200, 300),
        train_device="cpu",
    )


def _full() -> Preset:
    train, heldout = _train_and_heldout()
    return Preset(
        name="full",
        train_tracks=train,
        record_laps=3,
        record_episodes=3,
        image_size=(120, 160),
        cruise_speed=2.0,
        zoo=(
            ModelSpec("compact", "compact", "compact", epochs=30, batch_size=128, patience=5),
            ModelSpec("pilotnet", "pilotnet", "pilotnet", epochs=30, batch_size=128, patience=5),
            ModelSpec(
                "compact_cls", "classifier", "compact_cls", epochs=30, batch_size=128, patience=5
            ),
            ModelSpec(
                "resnet18_cls_240x320",
                "slow_classifier",
                "resnet_cls",
                epochs=20,
                input_size=(240, 320),
                batch_size=64,
                patience=5,
            ),
            ModelSpec(
                "compact_ccw_noflip",
                "ccw_only",
                "compact",
                epochs=30,
                flip=False,
                directions=("ccw",),
                batch_size=128,
                patience=5,
            ),
        ),
        eval_tracks=heldout,
        eval_laps=3,
        train_device="auto",
        eval_device="cpu",
    )


def _tiny() -> Preset:
    """Seconds, not minutes: the pipeline test and smoke runs (nothing to conclude from)."""
    return Preset(
        name="tiny",
        train_tracks=("oval",),
        record_laps=1,
        record_episodes=3,
        image_size=(32, 40),
        cruise_speed=2.0,
        zoo=(
            ModelSpec(
                "compact",
                "compact",
                "compact",
                epochs=1,
                input_size=(32, 40),
                depth=3,
                max_frames=600,
            ),
            ModelSpec(
                "compact_ccw_noflip",
                "ccw_only",
                "compact",
                epochs=1,
                input_size=(32, 40),
                depth=3,
                flip=False,
                directions=("ccw",),
                max_frames=600,
            ),
        ),
        eval_tracks=("triangle",),
        eval_laps=1,
        sweep_roles=("compact",),
        sweep_latencies_ms=(0, 300),
        train_device="cpu",
    )


QUICK = _quick()
FULL = _full()
TINY = _tiny()
PRESETS: dict[str, Preset] = {"quick": QUICK, "full": FULL, "tiny": TINY}


# ---------------------------------------------------------------------------- step 1: data
@dataclass(frozen=True)
class DatasetInfo:
    path: Path
    fingerprint: str
    episodes: int
    frames: int
    recorded: int  # episodes recorded by this call (0: fully reused)


def record_config(preset: Preset, seed: int) -> Any:
    from agents.expert import ExpertConfig
    from sim.record import RecordConfig

    return RecordConfig(
        tracks=preset.train_tracks,
        directions=("ccw", "cw"),
        laps=preset.record_laps,
        episodes=preset.record_episodes,
        image_size=preset.image_size,
        expert=ExpertConfig(
            cruise_speed=preset.cruise_speed,
            steer_noise=preset.steer_noise,
            drift_prob=preset.drift_prob,
        ),
        start=preset.start,
        seed=seed,
    )


def _hash(obj: Any, n: int = 12) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def record_dataset(
    preset: Preset, out: Path, *, seed: int = 0, workers: int = 1, force: bool = False
) -> DatasetInfo:
    """Record (or reuse) the expert dataset of ``preset`` under ``out/data``."""
    from sim.dataset import dataset_fingerprint, is_warning, open_dataset, validate_dataset
    from sim.record import dataset_info_cached, record

    cfg = record_config(preset, seed)
    # The renderer is part of the key: frames drawn by another one (an output
    # directory from an older trackpilot) are recorded again, not trained on.
    key = {**dataclasses.asdict(cfg), "renderer": dataset_info_cached(cfg)["renderer"]}
    path = Path(out) / "data" / f"{preset.name}-{_hash(key)}"
    expected = {j["key"] for j in cfg.jobs()}
    if force and path.exists():
        shutil.rmtree(path)
    if path.exists():
        problems = [p for p in validate_dataset(path) if not is_warning(p)]
        if problems:
            logger.warning("%s: invalid (%s); recording it again", path, problems[0])
            shutil.rmtree(path)
    summary = record(cfg, path, workers=workers, progress=False)
    if summary["errors"]:
        raise RuntimeError("recording failed: " + "; ".join(summary["errors"]))
    ds = open_dataset(path)
    missing = expected - set(ds.keys)
    if missing:
        raise RuntimeError(f"{path}: episodes missing after recording: {sorted(missing)}")
    return DatasetInfo(
        path=path,
        fingerprint=dataset_fingerprint(ds),
        episodes=ds.num_episodes,
        frames=len(ds),
        recorded=summary["episodes_recorded"],
    )


# ---------------------------------------------------------------------------- step 2: zoo
@dataclass(frozen=True)
class TrainedModel:
    spec: ModelSpec
    run_dir: Path
    reused: bool
    seconds: float
    record: dict[str, Any]  # best.json
    test_metrics: dict[str, Any]


# Config fields that do not change the weights (left out of the cache key).
_NOT_IN_KEY = ("data", "out", "device", "threads", "progress", "tensorboard", "eval_batch_size")


def run_config(
    spec: ModelSpec, data: Path, out: Path, *, seed: int, device: str, threads: int | None
) -> Any:
    """The training config of ``spec`` (``out`` is filled in by :func:`train_zoo`)."""
    from training.config import TrainConfig

    return TrainConfig(
        data=str(data),
        out=str(out),
        model=spec.model,
        input_size=spec.input_size,
        width=spec.width,
        depth=spec.depth,
        flip=spec.flip,
        directions=spec.directions,
        max_frames=spec.max_frames,
        epochs=spec.epochs,
        batch_size=spec.batch_size,
        lr=spec.lr,
        patience=spec.patience,
        seed=seed,
        device=device,
        threads=threads,
        progress=False,
        tensorboard=False,
    )


def config_key(cfg: Any, fingerprint: str) -> str:
    """Hash of the resolved training config (paths and runtime knobs left out) and data."""
    d = {k: v for k, v in cfg.to_dict().items() if k not in _NOT_IN_KEY}
    return _hash({"config": d, "dataset": fingerprint})


def _reusable(run_dir: Path, cfg: Any, fingerprint: str) -> dict[str, Any] | None:
    """``best.json`` of a finished run matching ``cfg`` and the data, else None."""
    try:
        best = json.loads((run_dir / "best.json").read_text(encoding="utf-8"))
        saved = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
        # best.json gets "stopped" last, after the test metrics: the run finished.
        if not (run_dir / "test_metrics.json").is_file() or "stopped" not in best:
            return None
    except (OSError, ValueError):
        return None
    want = {k: v for k, v in cfg.to_dict().items() if k not in _NOT_IN_KEY}
    have = {k: v for k, v in saved.items() if k not in _NOT_IN_KEY}
    if want != have or (best.get("dataset") or {}).get("fingerprint") != fingerprint:
        return None
    return best


def _train_one(cfg_dict: dict[str, Any]) -> tuple[float, str | None]:
    """Worker: train one config; ``(seconds, error or None)``."""
    logging.basicConfig(level=logging.WARNING)
    from training.config import TrainConfig
    from training.train import run

    t0 = time.perf_counter()
    try:
        run(TrainConfig.from_dict(cfg_dict))
    except Exception as e:  # noqa: BLE001 - reported to the parent with the model name
        return time.perf_counter() - t0, f"{type(e).__name__}: {e}"
    return time.perf_counter() - t0, None


def train_zoo(
    preset: Preset,
    data: DatasetInfo,
    out: Path,
    *,
    seed: int = 0,
    device: str | None = None,
    workers: int = 1,
    force: bool = False,
    say: Callable[[str], None] = print,
) -> dict[str, TrainedModel]:
    """Train (or reuse) every model of ``preset`` on ``data``; keyed by role."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from evaluation.latency import resolve_device

    device = device or preset.train_device
    # CPU trainings in parallel share the cores; more threads than cores slows all down.
    on_cpu = resolve_device(device) == "cpu"
    threads = max(1, (os.cpu_count() or 1) // max(1, workers)) if on_cpu else None
    todo: list[tuple[ModelSpec, Any, Path]] = []
    done: dict[str, TrainedModel] = {}
    for spec in preset.zoo:
        cfg0 = run_config(spec, data.path, Path(), seed=seed, device=device, threads=threads)
        run_dir = Path(out) / "runs" / f"{spec.name}-{config_key(cfg0, data.fingerprint)}"
        cfg = dataclasses.replace(cfg0, out=str(run_dir))
        best = None if force else _reusable(run_dir, cfg, data.fingerprint)
        if best is not None:
            done[spec.role] = _trained(spec, run_dir, True, 0.0, best)
            say(f"  {spec.name}: reusing {run_dir}")
            continue
        if run_dir.exists():
            shutil.rmtree(run_dir)
        todo.append((spec, cfg, run_dir))
    # Most expensive first, so the pool is not left waiting on one long run at the end.
    todo.sort(key=lambda t: -_cost(t[0]))
    errors = []
    if todo:
        n = max(1, min(workers, len(todo)))
        results: dict[str, tuple[float, str | None]] = {}
        if n == 1:
            for spec, cfg, _ in todo:
                results[spec.name] = _train_one(cfg.to_dict())
                _report_trained(say, spec, results[spec.name])
        else:
            with ProcessPoolExecutor(n, mp_context=mp.get_context("spawn")) as pool:
                futs = {pool.submit(_train_one, cfg.to_dict()): spec for spec, cfg, _ in todo}
                from concurrent.futures import as_completed

                for fut in as_completed(futs):
                    spec = futs[fut]
                    results[spec.name] = fut.result()
                    _report_trained(say, spec, results[spec.name])
        for spec, _, run_dir in todo:
            seconds, err = results[spec.name]
            if err:
                errors.append(f"{spec.name}: {err}")
                continue
            best = json.loads((run_dir / "best.json").read_text(encoding="utf-8"))
            done[spec.role] = _trained(spec, run_dir, False, seconds, best)
    if errors:
        raise RuntimeError("training failed: " + "; ".join(errors))
    return {m.role: done[m.role] for m in preset.zoo}  # in the preset's order


def _cost(spec: ModelSpec) -> float:
    """A rough relative training cost, to start the longest runs first."""
    default = {"pilotnet": (66, 200), "resnet_cls": (240, 320)}.get(spec.model, (60, 80))
    h, w = spec.input_size or default
    per = {"resnet_cls": 10.0, "pilotnet": 2.0}.get(spec.model, 1.0) * spec.width**2
    return per * h * w * spec.epochs * (spec.max_frames or 10_000)


def _report_trained(
    say: Callable[[str], None], spec: ModelSpec, res: tuple[float, str | None]
) -> None:
    seconds, err = res
    say(f"  {spec.name}: " + (f"FAILED ({err})" if err else f"trained in {seconds:.0f} s"))


def _trained(
    spec: ModelSpec, run_dir: Path, reused: bool, seconds: float, best: dict
) -> TrainedModel:
    tm = json.loads((run_dir / "test_metrics.json").read_text(encoding="utf-8"))
    return TrainedModel(spec, run_dir, reused, seconds, best, tm)


# ---------------------------------------------------------------------------- step 3: evaluate
@dataclass
class Evaluation:
    """What step 3 produced (also written to the store as one evaluation)."""

    closed_loop: list[Any]  # ResultRow
    sweep: list[Any]  # ResultRow (sweep=True)
    offline: list[dict[str, Any]]
    evaluation_id: int
    names: dict[str, str]  # pilot spec -> board name


def _rename(rows: Sequence[Any], names: dict[str, str]) -> None:
    for r in rows:
        r.pilot = names.get(r.pilot_spec, r.pilot)


def _offline_row(
    name: str,
    kind: str,
    rows: Sequence[Any],
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
        )
    if metrics and metrics.get("note"):
        extra["note"] = metrics["note"]
    row["extra"] = extra
    return row


def classical_offline(dataset: Path, test_keys: Sequence[str]) -> dict[str, Any]:
    """Steering MAE/MSE of the edge-filter pilot on the test episodes (frames in order)."""
    import numpy as np

    from agents.classical import EdgePilot
    from sim.dataset import open_dataset

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
) -> Evaluation:
    """Step 3: offline table and closed-loop runs (measured latency) of the zoo, the
    expert and the classical pilot; latency sweep of ``preset.sweep_roles``; one store
    transaction."""
    from evaluation.evaluate import evaluate

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
    )
    t0 = time.perf_counter()
    rows = evaluate(
        specs,
        tracks=preset.eval_tracks,
        directions=("ccw", "cw"),
        latency="measured",
        progress=progress,
        **common,
    )
    _rename(rows, names)
    say(f"  closed loop: {len(rows)} runs in {time.perf_counter() - t0:.0f} s")
    sweep_specs = [str(zoo[r].run_dir) for r in preset.sweep_roles if r in zoo]
    sweep_rows: list[Any] = []
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
    eid = store.add(
        closed_loop=rows,
        sweep=sweep_rows,
        offline=offline,
        context={
            "dataset_fingerprint": data.fingerprint,
            "dataset": str(data.path),
            "preset": preset.name,
            "seed": seed,
            "eval_device": device,
        },
    )
    return Evaluation(rows, sweep_rows, offline, eid, names)


# ---------------------------------------------------------------------------- step 4: story
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


def _score(rows: Sequence[Any]) -> float:
    from evaluation.report import run_score

    return 100.0 * sum(run_score(dataclasses.asdict(r)) for r in rows) / len(rows) if rows else 0.0


def lateral_offset(row: Any) -> float | None:
    """Mean signed distance (m) of a run's trajectory from the centreline, + = left of it
    in the driving direction; None when the track cannot be loaded."""
    import numpy as np

    from tracks import load_track

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
    from evaluation.report import sweep_summary

    checks = []
    rows = ev.closed_loop
    compact = preset.role("compact")
    if compact:
        runs = _runs(rows, compact.name)
        clean = [r for r in runs if r.completed and r.interventions == 0]
        where = ", ".join(
            f"{r.track} {r.direction} {r.laps_completed}/{r.laps_target} laps, "
            f"{r.interventions} interventions"
            for r in runs
        )
        checks.append(
            Check(
                f"{compact.name} completes its laps in both directions on the held-out tracks",
                bool(runs)
                and len(clean) == len(runs)
                and {r.direction for r in runs} == {"ccw", "cw"},
                f"{len(clean)}/{len(runs)} runs clean ({where})",
            )
        )
    slow = preset.role("slow_classifier")
    if slow:
        checks.append(_slow_check(slow, ev, sweep_summary))
    ccw = preset.role("ccw_only")
    if ccw:
        checks.append(_left_bias_check(ccw, compact, rows))
    return checks


def _slow_check(slow: ModelSpec, ev: Evaluation, sweep_summary: Callable) -> Check:
    f1 = {o["pilot"]: o["macro_f1"] for o in ev.offline if o.get("macro_f1") is not None}
    best = max(f1.values(), default=None)
    mine = f1.get(slow.name)
    near = mine is not None and best is not None and mine >= best - 0.05
    f1_text = (
        f"test macro F1 {mine:.3f} (best of the zoo {best:.3f})"
        if mine is not None and best is not None
        else "no test F1"
    )
    runs = _runs(ev.closed_loop, slow.name)
    if not runs:
        return Check(f"{slow.name}: near-best F1 yet crashes at its latency", False, "no runs")
    lat, period = runs[0].latency_ms, runs[0].control_period_ms
    crashed = [r for r in runs if r.interventions > 0 or not r.completed]
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


def write_leaderboard(
    store: Store,
    out: Path,
    *,
    dataset_fingerprint: str | None,
    notes: Sequence[str] = (),
    formats: Sequence[str] = ("terminal", "md", "csv", "html"),
) -> tuple[Any, dict[str, list[Path]]]:
    """Build the report from the store and write it under ``out/report``."""
    from evaluation.report import build_report, current_context, write_reports

    ctx = current_context(store, dataset_fingerprint)
    report = build_report(store, ctx, notes=notes)
    return report, write_reports(report, Path(out) / "report", formats)


# ---------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m evaluation.leaderboard",
        description="Record, train the zoo, evaluate in closed loop with measured latency, rank.",
    )
    ap.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="quick",
        help="quick (CPU, default) or full (GPU)",
    )
    ap.add_argument(
        "--out", default=str(DEFAULT_OUT), help=f"output directory (default {DEFAULT_OUT})"
    )
    ap.add_argument(
        "--db", default=None, help="leaderboard SQLite file (default OUT/leaderboard.sqlite)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--device", default=None, help="training device: cpu, cuda, auto (default: the preset's)"
    )
    ap.add_argument(
        "--eval-device",
        default=None,
        help="where pilots run in closed loop (default cpu: the car's computer)",
    )
    ap.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="parallel processes (default: all cores)",
    )
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads for latency measurement (default 1)"
    )
    ap.add_argument("--force", action="store_true", help="ignore caches: record and train again")
    ap.add_argument(
        "--progress", action="store_true", help="progress bars for the closed-loop runs"
    )
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.workers < 1 or args.threads < 1:
        print("error: --workers and --threads must be >= 1", file=sys.stderr)
        return 2
    preset = PRESETS[args.preset]
    out = Path(args.out)
    db = Path(args.db) if args.db else out / "leaderboard.sqlite"
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    def say(text: str) -> None:
        print(text, flush=True)

    try:
        import torch

        torch.set_num_threads(args.threads)
        store = Store(db)
    except (ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        say(f"[1/4] expert laps on {', '.join(preset.train_tracks)} (ccw, cw)")
        t0 = time.perf_counter()
        data = record_dataset(preset, out, seed=args.seed, workers=args.workers, force=args.force)
        timings["record"] = time.perf_counter() - t0
        say(
            f"  {data.path}: {data.episodes} episodes, {data.frames} frames "
            f"({'recorded ' + str(data.recorded) if data.recorded else 'reused'}) in {timings['record']:.0f} s"
        )
        say(f"[2/4] training the zoo ({len(preset.zoo)} models)")
        t0 = time.perf_counter()
        zoo = train_zoo(
            preset,
            data,
            out,
            seed=args.seed,
            device=args.device,
            workers=args.workers,
            force=args.force,
            say=say,
        )
        timings["train"] = time.perf_counter() - t0
        say(
            f"[3/4] offline + closed loop on held-out {', '.join(preset.eval_tracks)} "
            "(ccw, cw), latency measured"
        )
        t0 = time.perf_counter()
        ev = evaluate_zoo(
            preset,
            zoo,
            data,
            store,
            seed=args.seed,
            workers=args.workers,
            device=args.eval_device,
            progress=args.progress,
            say=say,
        )
        timings["evaluate"] = time.perf_counter() - t0
        say("[4/4] reports")
        t0 = time.perf_counter()
        checks = story_checks(preset, ev)
        notes = ["Story (expected outcome, checked):", *(c.line() for c in checks)]
        report, written = write_leaderboard(
            store, out, dataset_fingerprint=data.fingerprint, notes=notes
        )
        timings["report"] = time.perf_counter() - t0
    except (ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        store.close()
    from evaluation.report import render_terminal

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
    raise SystemExit(main())
