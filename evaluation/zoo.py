"""Steps 1 and 2 of the main job: the expert dataset and the trained model zoo, both cached.

- :func:`record_dataset`: expert laps, counter-clockwise and clockwise, on the preset's
  training tracks, under ``out/data`` in a directory named by the hash of the recording
  config (and renderer); reused when it validates and holds every expected episode.
- :func:`train_zoo`: every :class:`~evaluation.presets.ModelSpec` of the preset, each in
  ``out/runs`` under a name holding the hash of its resolved training config and the
  dataset fingerprint; reused when ``best.json`` and ``test_metrics.json`` are there and
  match. Trainings run in parallel spawn processes (:func:`sim.pool.imap_unordered`):
  first the models trained from scratch, then those warm-started from one of them
  (``init_role``: the compensated slow classifier), then the DAgger models
  (:func:`dagger_model`, ``python -m training.dagger`` from their ``init_role``'s model,
  resumed or reused as DAgger itself resumes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.expert import ExpertConfig
from evaluation.latency import resolve_device
from evaluation.presets import ModelSpec, Preset
from sim.dataset import dataset_fingerprint, is_warning, open_dataset, validate_dataset
from sim.pool import imap_unordered
from sim.record import RecordConfig, dataset_info_cached, record
from tracks.common import DIRECTIONS
from training.config import TrainConfig
from training.train import run as train_run

__all__ = [
    "DatasetInfo",
    "TrainedModel",
    "config_key",
    "dagger_model",
    "record_config",
    "record_dataset",
    "run_config",
    "train_zoo",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetInfo:
    path: Path
    fingerprint: str
    episodes: int
    frames: int
    recorded: int  # episodes recorded by this call (0: fully reused)


#: ``RecordConfig`` field <- the ``Preset`` field that sets it.
_RECORD_FIELDS = {
    "tracks": "train_tracks",
    "laps": "record_laps",
    "episodes": "record_episodes",
    "image_size": "image_size",
    "start": "start",
}
#: ``ExpertConfig`` fields a preset sets (same names in both).
_EXPERT_FIELDS = ("cruise_speed", "steer_noise", "drift_prob")


def record_config(preset: Preset, seed: int) -> RecordConfig:
    """The recording of ``preset``: expert laps in both directions on its training tracks."""
    expert = ExpertConfig(**{name: getattr(preset, name) for name in _EXPERT_FIELDS})
    own = {name: getattr(preset, field) for name, field in _RECORD_FIELDS.items()}
    return RecordConfig(directions=DIRECTIONS, expert=expert, seed=seed, **own)


def _hash(obj: Any, n: int = 12) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def record_dataset(
    preset: Preset, out: Path, *, seed: int = 0, workers: int = 1, force: bool = False
) -> DatasetInfo:
    """Record (or reuse) the expert dataset of ``preset`` under ``out/data``."""
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


@dataclass(frozen=True)
class TrainedModel:
    spec: ModelSpec
    run_dir: Path
    reused: bool
    seconds: float
    record: dict[str, Any]  # best.json
    test_metrics: dict[str, Any]


# Config fields that do not change the weights (left out of the cache key).
# Settings that change where and how fast a model trains, never what it learns (frames in
# device or pinned host memory give the same batches).
_NOT_IN_KEY = (
    "data",
    "out",
    "device",
    "threads",
    "progress",
    "tensorboard",
    "eval_batch_size",
    "frames_on_device",
    "pin_memory",
    "dist_timeout_s",
)


def run_config(
    spec: ModelSpec,
    data: Path,
    out: Path,
    *,
    seed: int,
    device: str,
    threads: int | None,
    init_from: str | None = None,
) -> TrainConfig:
    """The training config of ``spec`` (``out`` is filled in by :func:`train_zoo`;
    ``init_from``: the checkpoint of its ``init_role``, for a warm start)."""
    runtime = {"seed": seed, "device": device, "threads": threads}
    quiet = {"progress": False, "tensorboard": False}
    return TrainConfig(
        data=str(data), out=str(out), init_from=init_from, **spec.train_settings(), **runtime,
        **quiet,
    )  # fmt: skip


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
    t0 = time.perf_counter()
    try:
        train_run(TrainConfig.from_dict(cfg_dict))
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
    """Train (or reuse) every model of ``preset`` on ``data``; keyed by role.

    In three phases: the models trained from scratch (in parallel); then those
    warm-started from one of them (``init_role``); then the DAgger models
    (``dagger_rounds``, :func:`dagger_model`)."""
    device = device or preset.train_device
    done: dict[str, TrainedModel] = {}
    errors: list[str] = []
    scratch = [m for m in preset.zoo if m.init_role is None]
    warm = [m for m in preset.zoo if m.init_role is not None and not m.dagger_rounds]
    for phase in (scratch, warm):
        if phase:
            errors += _train_phase(phase, done, data, out, seed, device, workers, force, say)
        if errors:
            break
    for spec in [m for m in preset.zoo if m.dagger_rounds] if not errors else []:
        done[spec.role] = dagger_model(
            spec, done[spec.init_role], preset, data, out, seed=seed, workers=workers,
            force=force, say=say,
        )  # fmt: skip
    if errors:
        raise RuntimeError("training failed: " + "; ".join(errors))
    return {m.role: done[m.role] for m in preset.zoo}  # in the preset's order


def _train_phase(
    specs: list[ModelSpec],
    done: dict[str, TrainedModel],
    data: DatasetInfo,
    out: Path,
    seed: int,
    device: str,
    workers: int,
    force: bool,
    say: Callable[[str], None],
) -> list[str]:
    """Train (or reuse) ``specs`` in parallel into ``done``; returns the errors."""
    # CPU trainings in parallel share the cores; more threads than cores slows all down.
    on_cpu = resolve_device(device) == "cpu"
    share = max(1, min(workers, len(specs)))
    threads = max(1, (os.cpu_count() or 1) // share) if on_cpu else None
    todo: list[tuple[ModelSpec, TrainConfig, Path]] = []
    for spec in specs:
        init = str(done[spec.init_role].run_dir / "best.json") if spec.init_role else None
        cfg0 = run_config(
            spec, data.path, Path(), seed=seed, device=device, threads=threads, init_from=init
        )
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
        results: dict[str, tuple[float, str | None]] = {}
        jobs = [cfg.to_dict() for _, cfg, _ in todo]
        for i, res in imap_unordered(_train_one, jobs, workers):
            spec = todo[i][0]
            results[spec.name] = res
            _report_trained(say, spec, res)
        for spec, _, run_dir in todo:
            seconds, err = results[spec.name]
            if err:
                errors.append(f"{spec.name}: {err}")
                continue
            best = json.loads((run_dir / "best.json").read_text(encoding="utf-8"))
            done[spec.role] = _trained(spec, run_dir, False, seconds, best)
    return errors


def dagger_model(
    spec: ModelSpec,
    source: TrainedModel,
    preset: Preset,
    data: DatasetInfo,
    out: Path,
    *,
    seed: int = 0,
    workers: int = 1,
    force: bool = False,
    say: Callable[[str], None] = print,
) -> TrainedModel:
    """``spec``'s model: ``spec.dagger_rounds`` rounds of ``python -m training.dagger`` from
    ``source`` at ``spec.compensate_latency`` (a fixed latency, or a car computer's
    estimate), into ``out/runs/NAME-HASH`` (resumed or reused as DAgger resumes). The
    model is the last round's, whatever the rounds' held-out scores."""
    from training.dagger import DaggerConfig, run_dagger  # an app: only presets with DAgger

    comp = spec.compensate_latency or "0ms"
    key = _hash(
        {"source": str(source.run_dir), "rounds": spec.dagger_rounds, "latency": comp,
         "epochs": spec.epochs, "seed": seed, "eval": list(preset.eval_tracks)}
    )  # fmt: skip
    run_dir = Path(out) / "runs" / f"{spec.name}-{key}"
    if force and run_dir.exists():
        shutil.rmtree(run_dir)
    car = comp[4:] if comp.startswith("car:") else None
    cfg = DaggerConfig(
        pilot=str(source.run_dir),
        data=str(data.path),
        out=str(run_dir),
        rounds=spec.dagger_rounds,
        latency="measured" if car else comp,
        car=car,
        epochs=spec.epochs,
        eval_tracks=tuple(preset.eval_tracks),
        eval_laps=preset.eval_laps,
        seed=seed,
        workers=workers,
    )
    t0 = time.perf_counter()
    before = _dagger_rounds_done(run_dir)
    state = run_dagger(cfg, say=lambda text: say(f"  {spec.name}: {text}"))
    seconds = time.perf_counter() - t0
    final = Path(state["rounds"][-1]["pilot"])
    best = json.loads(final.read_text(encoding="utf-8"))
    reused = before > spec.dagger_rounds
    say(
        f"  {spec.name}: {'reusing' if reused else f'{spec.dagger_rounds} DAgger rounds in {seconds:.0f} s:'} {run_dir}"
    )
    return _trained(spec, final.parent, reused, 0.0 if reused else seconds, best)


def _dagger_rounds_done(run_dir: Path) -> int:
    try:
        return len(json.loads((run_dir / "dagger.json").read_text(encoding="utf-8"))["rounds"])
    except (OSError, ValueError, KeyError):
        return 0


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
