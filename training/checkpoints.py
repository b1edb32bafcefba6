"""Checkpoints of a behaviour-cloning run and resuming from them.

Every epoch writes ``last.safetensors`` + ``last.json`` (and ``best.*`` when the epoch is the
best so far) through :func:`agents.cnn.write_checkpoint`, then the whole resumable state
(``last-state.*``, :mod:`training.state`). ``--resume`` reads that state back into a
:class:`~training.trainer.Trainer`; nothing is ever unpickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from agents.cnn import read_checkpoint, write_checkpoint
from sim.io_utils import atomic_write_json
from tracks.common import now_iso
from training.config import TrainConfig
from training.errors import RunError
from training.prepare import PreparedData
from training.reporting import clean
from training.state import (
    load_train_state,
    restore_optimizer,
    save_train_state,
    set_rng_state,
    state_part,
)
from training.trainer import Trainer

__all__ = ["ResumePoint", "finish_best_record", "load_resume_point", "save_epoch", "warm_start"]


@dataclass
class ResumePoint:
    """What a run directory holds for ``--resume``: the training state and the saved split."""

    record: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    split: dict[str, list[str]]  # episode keys per split (``split.json``)

    @property
    def model_args(self) -> dict[str, Any]:
        return dict(self.record["model_args"])

    def check_dataset(self, cfg_data: str, data: PreparedData) -> None:
        """:class:`RunError` unless ``data`` is the dataset the run was trained on."""
        if self.record.get("dataset_fingerprint") != data.fingerprint:
            raise RunError(
                f"cannot resume: {cfg_data} is not the dataset this run was trained on (fingerprint differs)"
            )

    def restore(self, trainer: Trainer) -> None:
        """Put weights, optimiser, scaler, RNGs, early stopping and history back."""
        record, tensors = self.record, self.tensors
        trainer.model.load_state_dict(state_part(tensors, "model"))
        trainer.best_state = state_part(tensors, "best")
        restore_optimizer(trainer.optimizer, record, tensors)
        if record.get("scaler") and trainer.scaler.is_enabled():
            trainer.scaler.load_state_dict(record["scaler"])
        set_rng_state(tensors, record["rng"])
        trainer.stopper.load_state_dict(record["early_stopping"])
        trainer.history = list(record["history"])
        trainer.epoch = int(record["epoch"])


def load_resume_point(run_dir: Path) -> ResumePoint:
    """The training state and split of ``run_dir`` (:class:`RunError` if unreadable)."""
    try:
        record, tensors = load_train_state(run_dir)
        split = json.loads((run_dir / "split.json").read_text(encoding="utf-8"))["episodes"]
    except (OSError, ValueError, KeyError) as e:
        raise RunError(f"cannot resume from {run_dir}: {e}") from None
    return ResumePoint(record, tensors, split)


def warm_start(cfg: TrainConfig) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(model_args, weights)`` of ``cfg.init_from``: a new run starts from them.

    The checkpoint must hold the model ``cfg`` describes (architecture and every model
    setting the config gives); its normalisation statistics come along, since its weights
    were trained on frames normalised by them. Any mismatch is a :class:`RunError`."""
    try:
        record, state, jpath = read_checkpoint(cfg.init_from)
    except (OSError, ValueError) as e:
        raise RunError(f"--init-from: {e}") from None
    if record.get("arch") != cfg.model:
        raise RunError(f"--init-from {jpath}: a {record.get('arch')} model, not {cfg.model}")
    args = dict(record["args"])
    differ = [
        f"{k} {args[k]!r} (config {v!r})"
        for k, v in cfg.model_args.items()
        if k in args and (list(v) if isinstance(v, tuple) else v) != args[k]
    ]
    if differ:
        raise RunError(f"--init-from {jpath}: the model differs: {', '.join(differ)}")
    return args, state


def save_epoch(run_dir: Path, trainer: Trainer, record: dict[str, Any], improved: bool) -> None:
    """``best.*`` (if ``improved``), ``last.*`` and the resumable state after an epoch.

    ``record`` is what every checkpoint's JSON carries (config, dataset, split, ...).
    """
    row = trainer.history[-1]
    for name in ("best", "last") if improved else ("last",):
        write_checkpoint(
            run_dir,
            name,
            trainer.model,
            {**record, "epoch": trainer.epoch, "metrics": row, "created": now_iso()},
        )
    save_train_state(
        run_dir,
        model=trainer.model,
        best_state=trainer.best_state,
        optimizer=trainer.optimizer,
        scaler=trainer.scaler,
        info={
            "epoch": trainer.epoch,
            "early_stopping": trainer.stopper.state_dict(),
            "history": trainer.history,
            "model_args": trainer.model.args,
            "dataset_fingerprint": trainer.data.fingerprint,
        },
    )


def finish_best_record(
    run_dir: Path,
    test_metrics: dict[str, Any] | None,
    diagnosis: dict[str, Any],
    reason: str,
    epochs_run: int,
    best_closed_loop: dict[str, Any] | None = None,
) -> None:
    """Add the end of the run to ``best.json``: test metrics, diagnosis, why it stopped,
    and (``--closed-loop-every``) which epoch driving chose (``best_closed_loop.*``).

    ``stopped`` comes after ``test_metrics.json`` was written: it marks a finished run.
    """
    best_json = run_dir / "best.json"
    record = json.loads(best_json.read_text(encoding="utf-8"))
    record.update(
        {
            "test_metrics": None
            if test_metrics is None
            else {k: v for k, v in test_metrics.items() if k != "classes"},
            "diagnosis": clean(diagnosis),
            "stopped": reason,
            "epochs_run": epochs_run,
        }
    )
    if best_closed_loop is not None:
        record["best_closed_loop"] = best_closed_loop
    atomic_write_json(best_json, clean(record))
