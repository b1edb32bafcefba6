"""The run directory of behaviour cloning, apart from its checkpoints and curves.

A new run needs a new or empty ``--out``; it receives ``config.json`` (the resolved config:
``--config RUN_DIR/config.json`` reproduces the run), ``split.json`` (episodes per split,
distribution check), and at the end ``test_metrics.json`` and ``diagnosis.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sim.io_utils import atomic_write_json
from training.config import TrainConfig
from training.data import SPLITS
from training.diagnose import estimate_base_error
from training.errors import RunError
from training.prepare import PreparedData
from training.reporting import clean

__all__ = [
    "base_error",
    "check_new_run_directory",
    "checkpoint_record",
    "run_directory",
    "write_diagnosis",
    "write_run_files",
    "write_test_metrics",
]


def run_directory(cfg: TrainConfig) -> Path:
    """``cfg.out`` (:class:`RunError` unless both ``--data`` and ``--out`` are given)."""
    if not cfg.data:
        raise RunError("--data is required")
    if not cfg.out:
        raise RunError("--out is required")
    return Path(cfg.out)


def check_new_run_directory(run_dir: Path) -> None:
    """A new run's directory must be new or empty (:class:`RunError` otherwise)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"--out {run_dir}: exists and is not a directory")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        raise RunError(
            f"--out {run_dir}: not empty (use --resume to continue that run, or a new directory)"
        )


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
