"""The run directory of behaviour cloning, apart from its checkpoints and curves.

A new run needs a new or empty ``--out``, or the directory of a run that stopped before
its first epoch ended (its files but no saved training state: it is started again); a
run with saved state is refused (``--resume`` continues it). ``--out`` is checked to be
writable before the data is loaded (:func:`tracks.outputs.check_output_dir`). A run receives ``config.json`` (the resolved config:
``--config RUN_DIR/config.json`` reproduces the run), ``split.json`` (episodes per split,
distribution check), and at the end ``test_metrics.json`` and ``diagnosis.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sim.io_utils import atomic_write_json, is_temp_file
from training.config import TrainConfig
from training.data import SPLITS
from training.diagnose import estimate_base_error
from training.errors import RunError
from training.prepare import PreparedData
from training.reporting import clean

__all__ = [
    "RUN_FILES",
    "STATE_FILE",
    "base_error",
    "check_new_run_directory",
    "checkpoint_record",
    "has_saved_state",
    "run_directory",
    "write_diagnosis",
    "write_run_files",
    "write_test_metrics",
]


#: The resumable training state (:mod:`training.state`): a run with it can be resumed.
STATE_FILE = "last-state.safetensors"
#: Every name a run writes into its directory.
RUN_FILES = frozenset(
    {
        "config.json", "split.json", "metrics.csv", "curves.png", "tb",
        "best.safetensors", "best.json", "last.safetensors", "last.json",
        "best_closed_loop.safetensors", "best_closed_loop.json",
        STATE_FILE, "last-state.json", "test_metrics.json", "diagnosis.json",
    }
)  # fmt: skip


def run_directory(cfg: TrainConfig) -> Path:
    """``cfg.out`` (:class:`RunError` unless both ``--data`` and ``--out`` are given)."""
    if not cfg.data:
        raise RunError("--data is required")
    if not cfg.out:
        raise RunError("--out is required")
    return Path(cfg.out)


def has_saved_state(run_dir: Path) -> bool:
    """True when ``run_dir`` holds a run's training state (``--resume`` continues it)."""
    return (run_dir / STATE_FILE).exists()


def check_new_run_directory(run_dir: Path) -> bool:
    """Where a new run may start (:class:`RunError` otherwise): a new or empty directory,
    or one holding only the files of a run that stopped before its first epoch ended (no
    saved state; they are overwritten: returns True). A run with saved state is refused,
    and so is a directory with files that are not a run's."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"--out {run_dir}: exists and is not a directory")
    if not run_dir.is_dir():
        return False
    if has_saved_state(run_dir):
        raise RunError(
            f"--out {run_dir}: holds a run with saved training state "
            "(use --resume to continue it, or another --out)"
        )
    names = [p.name for p in run_dir.iterdir() if not is_temp_file(p)]
    others = sorted(n for n in names if n not in RUN_FILES)
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise RunError(
            f"--out {run_dir}: not empty and not a training run ({shown}); use another --out"
        )
    return bool(names)


def base_error(cfg: TrainConfig, data: PreparedData) -> tuple[float, str]:
    """The irreducible steering MAE for the diagnosis, and where it comes from."""
    if cfg.base_error is not None:
        return cfg.base_error, "given by the user"
    return estimate_base_error([data.records[i] for i in data.split["train"]])


def write_run_files(run_dir: Path, cfg: TrainConfig, data: PreparedData) -> None:
    """Create ``run_dir`` with ``config.json`` and ``split.json``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "config.json", cfg.to_dict())
    split_doc = {
        "dataset": data.root,
        "dataset_fingerprint": data.fingerprint,
        "ratios": list(data.ratios),
        "ratios_from": "--split"
        if cfg.split_ratios
        else "data size (training.data.default_ratios)",
        "frame_stride": data.stride,
        "episodes": {s: data.keys(s) for s in SPLITS},
        "frames": {s: data.check[s]["frames"] for s in SPLITS},
        "distribution": data.check,
        "warnings": data.warnings,
    }
    atomic_write_json(run_dir / "split.json", clean(split_doc))


def checkpoint_record(
    cfg: TrainConfig, data: PreparedData, base: tuple[float, str]
) -> dict[str, Any]:
    """What every checkpoint JSON of the run carries besides the model and its epoch."""
    return {
        "config": cfg.to_dict(),
        "dataset": {
            "root": data.root,
            "fingerprint": data.fingerprint,
            "image_size": list(data.image_size),
            "frame_stride": data.stride,
            "info": data.info,
        },
        "split": {s: data.keys(s) for s in SPLITS},
        "labels": {
            # --compensate-latency: the expert's command for the state at t + latency_ms
            "compensate_latency": cfg.compensate_latency,
            "latency_ms": 0.0 if data.label_latency_s is None else data.label_latency_s * 1e3,
            "dropped_frames": data.relabel_dropped,
        },
        "base_error": {"value": base[0], "note": base[1]},
        "stop_metric": cfg.resolved_stop_metric,
    }


def write_test_metrics(
    run_dir: Path, metrics: dict[str, Any], episodes: int, epoch: int
) -> dict[str, Any]:
    """``test_metrics.json``: the best epoch's test metrics (returned as written)."""
    doc = clean({"split": "test", "episodes": episodes, "epoch": epoch, **metrics})
    atomic_write_json(run_dir / "test_metrics.json", doc)
    return doc


def write_diagnosis(run_dir: Path, diagnosis: dict[str, Any]) -> None:
    atomic_write_json(run_dir / "diagnosis.json", clean(diagnosis))
