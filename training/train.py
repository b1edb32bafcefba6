"""``python -m training.train``: behaviour cloning with the basic recipe, on CPU or GPU.

    python -m training.train --data DATA --out RUN_DIR [--model compact] [--epochs 30]
                             [--device auto|cpu|cuda] [--seed 0] [--resume] ...

One loop you can read top to bottom (:func:`run`): seed; load the data (split by episode,
stratified; distribution check); build model and AdamW; then per epoch: train on augmented
batches, evaluate train (a fixed subset) and dev in eval mode, write metrics, keep the best
checkpoint (early stopping on the dev metric) and the last one with the full training state;
finally restore the best weights, evaluate on test, diagnose bias/variance.

RUN_DIR receives: ``config.json`` (resolved config: ``--config RUN_DIR/config.json``
reproduces the run), ``split.json``, ``metrics.csv``, ``curves.png``, ``tb/``
(TensorBoard), ``best.safetensors`` + ``best.json``, ``last.safetensors`` + ``last.json``,
``last-state.safetensors`` (+ readable ``last-state.json``), ``test_metrics.json``,
``diagnosis.json``.

Each step is one call into the module that does that job: :mod:`training.prepare` (data),
:mod:`training.trainer` (device, seeds, model, optimiser, the epoch), :mod:`training.checkpoints`
(checkpoints, ``--resume``), :mod:`training.rundir` (the other run files),
:mod:`training.reporting` (metrics, curves, TensorBoard, log lines) and
:mod:`training.train_cli` (flags from :class:`~training.config.TrainConfig`).

``--resume`` on a run that stopped before its first epoch ended (its config but no saved
state) starts it fresh, and says so; a new run into such a directory does the same.

Exit status: 0 done; 1 training diverged (NaN/inf loss: the best checkpoint is left as it
was); 2 bad input, or an ``--out`` that cannot be written (one ``error:`` line; checked
before the data is loaded, nothing written; an ``OSError`` later, while writing, is one
line too, and every file is written atomically, so none is left half-written).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from tracks.cli import run_main
from tracks.outputs import check_output_dir, os_error_line
from training import distributed
from training.checkpoints import (
    ResumePoint,
    finish_best_record,
    load_resume_point,
    save_epoch,
    warm_start,
)
from training.cli import Parser as _Parser
from training.cli import fail
from training.cli import setup_logging as _setup_logging
from training.config import TrainConfig
from training.diagnose import diagnose
from training.errors import RunError, TrainingDiverged
from training.hardware import channels_last_for, precision_name
from training.metrics import format_metric
from training.prepare import PreparedData, load_test_frames, prepare_data
from training.reporting import (
    METRIC_COLUMNS,
    Board,
    format_summary,
    log_epoch,
    plot_curves,
    write_metrics_csv,
)
from training.rundir import (
    base_error,
    check_new_run_directory,
    checkpoint_record,
    has_saved_state,
    run_directory,
    write_diagnosis,
    write_run_files,
    write_test_metrics,
)
from training.train_cli import build_parser, config_from_args
from training.trainer import (
    Trainer,
    amp_dtype_for,
    model_args_for,
    resolve_device,
    runtime,
    seed_everything,
    train_one_epoch,
)

# The trainer's pieces live in the modules above; these names stay importable from here.
__all__ = [
    "METRIC_COLUMNS",
    "PreparedData",
    "RunError",
    "TrainingDiverged",
    "_Parser",
    "_setup_logging",
    "build_parser",
    "config_from_args",
    "main",
    "plot_curves",
    "prepare_data",
    "resolve_device",
    "run",
    "seed_everything",
    "train_one_epoch",
]

logger = logging.getLogger(__name__)


def run(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    data: PreparedData | None = None,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train according to ``cfg``; returns a summary (best/test metrics, diagnosis, paths).

    ``data``: already prepared data (hyperparameter search reuses it across trials).
    ``on_epoch_end(epoch, row)`` is called after each epoch's checkpoints are written (the
    search reports to Optuna there and may raise ``optuna.TrialPruned``); under torchrun,
    on rank 0 only.
    Raises :class:`RunError` for bad input and :class:`TrainingDiverged` on NaN/inf.

    Under torchrun every process runs this function (:mod:`training.distributed`): each
    trains on its shard of every global batch; rank 0 alone writes the run directory.
    """
    run_dir = run_directory(cfg)
    ctx = distributed.environment()
    device = distributed.run_device(cfg.device, ctx)
    if not ctx.is_main:
        cfg = replace(cfg, progress=False, tensorboard=False)  # rank 0 shows and logs
    amp_dtype = amp_dtype_for(cfg, device)
    channels_last = channels_last_for(cfg.channels_last, device)
    if cfg.batch_size % ctx.world_size:
        raise distributed.shared(
            RunError(
                f"batch_size {cfg.batch_size} is not divisible by the {ctx.world_size} "
                "processes (each trains on an equal share of the global batch)"
            )
        )

    with (
        runtime(cfg, device),
        distributed.process_group(ctx, device, cfg.dist_timeout_s) as ctx,
        distributed.quiet_unless_main(ctx),
        contextlib.ExitStack() as cleanup,  # unwound first: before the process group goes
    ):
        saved = ctx.from_main(lambda: _resume_point(run_dir, resume))
        seed_everything(cfg.seed)
        if data is None:
            data = prepare_data(cfg, saved.split if saved else None)
        ctx.same_everywhere(data.fingerprint, f"the dataset fingerprint of {cfg.data}")
        if saved is not None:
            saved.check_dataset(cfg.data, data)
        for w in data.warnings:
            logger.warning("distribution check: %s", w)

        init = warm_start(cfg) if saved is None and cfg.init_from else None
        model_args = saved.model_args if saved else init[0] if init else model_args_for(cfg, data)
        trainer = Trainer.build(
            cfg, data, model_args, device, amp_dtype, dist=ctx, channels_last=channels_last
        )
        cleanup.callback(trainer.close)
        if saved is not None:
            saved.restore(trainer)
            logger.info("resuming %s after epoch %d", run_dir, trainer.epoch)
        elif init is not None:  # every process loads the same weights
            trainer.model.load_state_dict(init[1])
            logger.info("%s: warm start from %s", run_dir, cfg.init_from)
        base = base_error(cfg, data)
        ctx.from_main(lambda: write_run_files(run_dir, cfg, data))
        record = checkpoint_record(cfg, data, base)
        logger.info(
            "%s: %s on %s (%s%s), %d train / %d dev frames (stride %d), %d parameters",
            run_dir, cfg.model, device, precision_name(amp_dtype),
            f", {ctx.world_size} processes of {cfg.batch_size // ctx.world_size} frames per batch"
            if ctx.enabled else "",
            len(data.train), len(data.dev), data.stride,
            sum(p.numel() for p in trainer.model.parameters()),
        )  # fmt: skip
        board = Board(run_dir, cfg.tensorboard, trainer.epoch + 1 if saved is not None else None)
        cleanup.callback(board.close)
        placement = {"on_device": cfg.frames_on_device, "pin": cfg.pin_memory}
        data.train.to(device, **placement)
        data.dev.to(device, **placement)
        drives = _drive_check(cfg, data)
        while not trainer.done:
            row, improved = trainer.run_epoch()

            def after_epoch(row: dict[str, Any] = row, improved: bool = improved) -> None:
                if drives is not None:  # --closed-loop-every: drive, keep best_closed_loop
                    drives.after_epoch(trainer, run_dir, record)
                save_epoch(run_dir, trainer, record, improved)
                _report_epoch(run_dir, trainer, board, row, improved)
                if on_epoch_end is not None:
                    on_epoch_end(trainer.epoch, trainer.history[-1])

            ctx.from_main(after_epoch)
        board.close()
        return _finish(run_dir, trainer, base, drives)


def _resume_point(run_dir: Path, resume: bool) -> ResumePoint | None:
    """The saved state to continue from (``--resume``), or None for a fresh run; checks
    that ``run_dir`` may take the run and can be written."""
    # --resume on a run stopped before its first epoch ended (no saved state) starts it
    # fresh, as a new run into its directory does.
    saved = load_resume_point(run_dir) if resume and has_saved_state(run_dir) else None
    if saved is None and (check_new_run_directory(run_dir) or resume):
        logger.warning(
            "%s: no saved training state (the run stopped before its first epoch ended): "
            "starting it fresh",
            run_dir,
        )
    check_output_dir(run_dir)
    return saved


def _drive_check(cfg: TrainConfig, data: PreparedData) -> Any:
    """The run's :class:`training.drive_check.DriveCheck`, None without
    ``--closed-loop-every`` (the env, and pybullet, are imported only by runs that drive)."""
    if not cfg.closed_loop_every:
        return None
    from training.drive_check import DriveCheck

    try:
        return DriveCheck.from_config(cfg, data, data.label_latency_s)
    except ValueError as e:
        raise RunError(str(e)) from None


def _report_epoch(
    run_dir: Path, trainer: Trainer, board: Board, row: dict[str, Any], improved: bool
) -> None:
    """``metrics.csv``, ``curves.png``, TensorBoard and the log line after an epoch."""
    history = trainer.history
    write_metrics_csv(run_dir / "metrics.csv", history)
    plot_curves(
        run_dir / "curves.png", history, trainer.stopper.best_epoch,
        trainer.cfg.resolved_stop_metric,
    )  # fmt: skip
    board.log(history[-1])
    log_epoch(row, improved)


def _finish(
    run_dir: Path, trainer: Trainer, base: tuple[float, str], drives: Any = None
) -> dict[str, Any]:
    """Restore the best weights, evaluate on test, diagnose; returns the run's summary."""
    cfg, data, stopper, history = trainer.cfg, trainer.data, trainer.stopper, trainer.history
    reason = trainer.stop_reason()
    logger.info(
        "%s; best epoch %d (%s %s)",
        reason,
        stopper.best_epoch,
        cfg.resolved_stop_metric,
        format_metric(stopper.best, ".4f"),
    )
    best_row = trainer.restore_best()

    def write_end() -> tuple[dict[str, Any] | None, dict[str, Any], dict[str, Any] | None]:
        test_metrics: dict[str, Any] | None = None
        if data.split["test"]:
            metrics = trainer.test_metrics(load_test_frames(cfg, data))
            test_metrics = write_test_metrics(
                run_dir, metrics, len(data.split["test"]), stopper.best_epoch
            )
        diag = diagnose(best_row["train_mae"], best_row["dev_mae"], base[0], base_note=base[1])
        write_diagnosis(run_dir, diag)
        by_driving = None
        if drives is not None:  # the drives ran on rank 0: their scores are in its history
            from training.drive_check import best_closed_loop  # see _drive_check

            row = best_closed_loop(history)
            by_driving = None if row is None else {
                "epoch": row["epoch"],
                "closed_loop_score": row["closed_loop_score"],
                "closed_loop_abs_cte": row["closed_loop_abs_cte"],
                "closed_loop": drives.describe(),
            }  # fmt: skip
        finish_best_record(run_dir, test_metrics, diag, reason, epochs_run, by_driving)
        plot_curves(run_dir / "curves.png", history, stopper.best_epoch, cfg.resolved_stop_metric)
        return test_metrics, diag, by_driving

    epochs_run = history[-1]["epoch"] if history else 0
    # Under torchrun rank 0 tests and writes; every process returns the same summary.
    test_metrics, diag, by_driving = trainer.dist.from_main(write_end)
    return {
        "run_dir": str(run_dir),
        "best_epoch": stopper.best_epoch,
        "epochs_run": epochs_run,
        "stopped_early": stopper.should_stop,
        "reason": reason,
        "stop_metric": cfg.resolved_stop_metric,
        "best_metric": stopper.best,
        "best": best_row,
        "best_closed_loop": by_driving,
        "test": test_metrics,
        "diagnosis": diag,
        "history": history,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging()
    try:
        cfg = config_from_args(args)
    except (RunError, ValueError) as e:
        # The same flags on every process under torchrun: rank 0 says it.
        return fail(e) if distributed.is_main_process() else distributed.stand_down(2)
    try:
        summary = run(cfg, resume=args.resume)
    except (RunError, ValueError) as e:
        return _fail(e)
    except OSError as e:  # while writing (--out was checked up front): no traceback
        return _fail(e, os_error_line(e, getattr(args, "out", None)))
    except TrainingDiverged as e:
        if not distributed.is_main_process():  # every process stops at the same step
            return distributed.stand_down(1)
        print(f"error: training diverged: {e}", file=sys.stderr)
        return 1
    if distributed.is_main_process():
        print(format_summary(summary))
    return 0


def _fail(error: BaseException, line: object = None) -> int:
    """Report ``error`` (as ``line``) once: rank 0 reports what every process shares, other
    ranks only what they alone found (named ``rank N:``); returns 2."""
    text = error if line is None else line
    if distributed.is_main_process():
        return fail(text)
    if not getattr(error, "shared", False):
        return fail(f"rank {os.environ.get('RANK')}: {text}")
    return distributed.stand_down(2)


if __name__ == "__main__":
    raise SystemExit(run_main(main, note="checkpoints of finished epochs kept; --resume continues"))
