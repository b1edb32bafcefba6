"""``python -m training.search``: coarse-to-fine random search of hyperparameters (Optuna).

    python -m training.search --data DATA --out SEARCH_DIR --trials 20 [--epochs 10]
                              [--storage sqlite:///... | postgresql://...] [--study NAME]

The recipe: sample at random (not on a grid: every trial then tries a new value of the
parameter that matters most), on log scales for scale-like parameters, then zoom into the
region of the best trials and sample again, finer.

- **Stage 1 (coarse)**, the first ``--coarse-fraction`` of the trials: Optuna's
  ``RandomSampler`` over learning rate (log, 1e-4..3e-2), weight decay (log, 1e-6..1e-1),
  dropout (0..0.6), batch size (powers of two, 32..256, sampled as log2) and width (log,
  0.5..2).
- **Stage 2 (fine)**: the same sampler over the box spanned by the best quarter of the
  completed coarse trials (at least 3), widened by a quarter of its size on each side (in
  log space for log parameters) and clipped to the coarse bounds.

Each trial is a normal training run (``SEARCH_DIR/trials/NNNN``) judged by its best dev
metric (early stopping inside; a median pruner stops hopeless trials early). The study lives
in SQLite under ``SEARCH_DIR`` by default; pass a database URL (e.g. PostgreSQL,
:mod:`training.study_storage`) with the same ``--study`` on several machines to share one
study: each process runs trials until the study holds ``--trials`` (processes that start a
trial at the same moment may each add one: at most ``--trials`` + processes - 1). Trial
numbers come from the database and each trial samples from its own stream, seeded by
``--seed`` and its number, so processes never run the same trial. Outputs: ``search.png``
(dev metric against every parameter, by stage), ``trials.csv``, and ``best_config.json``
(``python -m training.train --config SEARCH_DIR/best_config.json --data DATA --out RUN``
retrains the winner). That file holds the searched hyperparameters and the settings the
search was given that define what is trained (the model, its input size, the recipe:
:func:`best_config`), never what only shaped the trials (their epochs, ``--max-frames``,
seed, device, no TensorBoard: :data:`TRIAL_SETTINGS`), so the retraining runs with its own
settings: every frame, the full epoch budget, TensorBoard.

Hyperparameters go stale when the data, the network or the hardware change: search again.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sim.io_utils import atomic_write_bytes, atomic_write_json, atomic_write_text
from tracks.cli import run_main
from tracks.cliargs import add_config_args
from training.cli import Parser, fail, setup_logging
from training.config import TrainConfig
from training.errors import RunError, TrainingDiverged
from training.prepare import prepare_data
from training.study_storage import open_storage, shown_url
from training.train import run
from training.train_cli import typed_fields

__all__ = [
    "COARSE_SPACE",
    "TRIAL_SETTINGS",
    "Param",
    "base_config",
    "best_config",
    "build_parser",
    "fine_space",
    "main",
    "trial_seed",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Param:
    name: str  # TrainConfig field (batch size is searched as log2_batch)
    low: float
    high: float
    log: bool
    integer: bool = False


COARSE_SPACE: tuple[Param, ...] = (
    Param("lr", 1e-4, 3e-2, log=True),
    Param("weight_decay", 1e-6, 1e-1, log=True),
    Param("dropout", 0.0, 0.6, log=False),
    Param("log2_batch", 5, 8, log=False, integer=True),
    Param("width", 0.5, 2.0, log=True),
)


def fine_space(
    best: Sequence[dict[str, float]], space: Sequence[Param] = COARSE_SPACE, margin: float = 0.25
) -> tuple[Param, ...]:
    """The box around the ``best`` trials' parameters, widened by ``margin`` of its size."""
    out = []
    for p in space:
        vals = [float(b[p.name]) for b in best if p.name in b]
        if not vals:
            out.append(p)
            continue
        f = (lambda v: math.log(v)) if p.log else (lambda v: v)
        inv = (lambda v: math.exp(v)) if p.log else (lambda v: v)
        lo, hi = min(map(f, vals)), max(map(f, vals))
        pad = margin * max(hi - lo, 0.1 * (f(p.high) - f(p.low)))
        lo = max(f(p.low), lo - pad)
        hi = min(f(p.high), hi + pad)
        low, high = inv(lo), inv(hi)
        if p.integer:
            low, high = math.floor(low + 1e-9), math.ceil(high - 1e-9)
        out.append(Param(p.name, low, max(high, low), p.log, p.integer))
    return tuple(out)


def trial_seed(seed: int, number: int) -> int:
    """The sampler seed of trial ``number`` in a search seeded with ``seed``."""
    digest = hashlib.sha256(f"trackpilot-search/{seed}/{number}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _suggest(trial: Any, space: Sequence[Param]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for p in space:
        if p.integer:
            params[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high))
        else:
            params[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.log)
    return params


def _to_config_fields(params: dict[str, Any]) -> dict[str, Any]:
    out = dict(params)
    if "log2_batch" in out:
        out["batch_size"] = 2 ** int(out.pop("log2_batch"))
    return out


def plot_trials(path: Path, trials: list[Any], metric: str, best_number: int | None) -> None:
    """Dev metric against each parameter (log axes where searched on a log scale)."""
    # matplotlib takes a second or two to import: only code that plots pays for it.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    done = [t for t in trials if t.value is not None]
    fig = Figure(figsize=(15, 6), dpi=90)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 3).ravel()
    colours = {1: "tab:blue", 2: "tab:orange"}
    for ax, p in zip(axes, COARSE_SPACE, strict=False):
        for stage in (1, 2):
            ts = [t for t in done if t.user_attrs.get("stage") == stage and p.name in t.params]
            ax.scatter([t.params[p.name] for t in ts], [t.value for t in ts], c=colours[stage], s=25,
                       label="coarse" if stage == 1 else "fine")  # fmt: skip
        best = [t for t in done if t.number == best_number and p.name in t.params]
        if best:
            ax.scatter(
                [best[0].params[p.name]],
                [best[0].value],
                marker="*",
                s=250,
                c="tab:red",
                label="best",
            )
        if p.log:
            ax.set_xscale("log")
        ax.set_xlabel(p.name if p.name != "log2_batch" else "log2(batch size)")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    ax = axes[len(COARSE_SPACE)]
    ax.scatter([t.number for t in done], [t.value for t in done],
               c=[colours.get(t.user_attrs.get("stage"), "grey") for t in done], s=25)  # fmt: skip
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"random search, coarse (blue) to fine (orange): {metric}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


def _write_trials_csv(path: Path, trials: list[Any]) -> None:
    names = [p.name for p in COARSE_SPACE]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["number", "stage", "state", "value", *names, "best_epoch"])
    for t in trials:
        w.writerow([t.number, t.user_attrs.get("stage"), t.state.name, t.value, *[t.params.get(n) for n in names],
                    t.user_attrs.get("best_epoch")])  # fmt: skip
    atomic_write_text(path, buf.getvalue())


#: TrainConfig fields the search sets itself: the searched ones, and those with flags of
#: their own here (``--out`` is the search directory; ``--epochs`` and ``--seed`` apply to
#: every trial) or fixed for trials (no TensorBoard).
_NOT_FLAGS = ("lr", "weight_decay", "dropout", "batch_size", "width", "data", "out", "epochs",
              "seed", "tensorboard")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The search's own flags, then one per :class:`TrainConfig` field it does not set."""
    ap = Parser(
        prog="python -m training.search", description="Coarse-to-fine random hyperparameter search."
    )
    ap.add_argument("--data", required=True, help="dataset directory")
    ap.add_argument("--out", required=True, help="search directory")
    ap.add_argument(
        "--trials",
        type=int,
        default=20,
        help="trials in the study, total over all processes (default: %(default)s)",
    )
    ap.add_argument(
        "--storage", default=None, help="Optuna storage URL (default sqlite:///OUT/search.db)"
    )
    ap.add_argument(
        "--study", default="trackpilot-search", help="study name (default: %(default)s)"
    )
    ap.add_argument(
        "--epochs", type=int, default=10, help="max epochs per trial (default: %(default)s)"
    )
    ap.add_argument(
        "--coarse-fraction",
        type=float,
        default=0.6,
        help="share of trials in the coarse stage (default: %(default)s)",
    )
    ap.add_argument(
        "--seed",
        type=int,
        default=0,
        help="sampler seed, and training seed of every trial (default: %(default)s)",
    )
    ap.add_argument(
        "--config",
        default=None,
        help="base TrainConfig JSON for everything not searched (default: none: the defaults "
        "below)",
    )
    group = ap.add_argument_group(
        "training settings of every trial (default: the --config file's, else these)"
    )
    add_config_args(group, TrainConfig, exclude=_NOT_FLAGS)
    return ap


#: TrainConfig fields that set a trial's budget, or where and how it runs, not what is
#: trained: best_config.json leaves them out.
TRIAL_SETTINGS = ("data", "out", "epochs", "max_frames", "seed", "tensorboard", "progress",
                  "device", "amp", "deterministic", "threads", "eval_batch_size",
                  "train_eval_frames", "flip_eval_frames", "verify", "version")  # fmt: skip


def best_config(base: TrainConfig, params: dict[str, Any]) -> dict[str, Any]:
    """What ``best_config.json`` holds: the best trial's searched hyperparameters, plus the
    base config's settings (``--config`` file, typed flags) that differ from the defaults
    and define what is trained (model, input size, loss, augmentation, ...), without the
    :data:`TRIAL_SETTINGS`."""
    defaults = TrainConfig().to_dict()
    doc = {k: v for k, v in base.to_dict().items() if k not in TRIAL_SETTINGS and v != defaults[k]}
    doc.update(_to_config_fields(params))
    TrainConfig.from_dict(doc)  # what training.train --config reads back
    return doc


def base_config(args: argparse.Namespace) -> TrainConfig:
    """The trials' common config: the typed flags over ``--config`` (or the defaults)."""
    given = {
        **typed_fields(args),
        "data": args.data,
        "out": str(Path(args.out) / "trials" / "base"),
        "epochs": args.epochs,
        "seed": args.seed,
        "tensorboard": False,
    }
    if args.config:
        return TrainConfig.from_json(args.config, **given)
    return TrainConfig(**given)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        # Optional at run time, and slow to import: only a search that runs needs it.
        import optuna
    except ImportError:  # pragma: no cover
        return fail("optuna is not installed (pip install optuna)")
    if args.trials < 1 or args.epochs < 1 or not (0 < args.coarse_fraction <= 1):
        return fail("--trials and --epochs must be >= 1, --coarse-fraction in (0, 1]")
    out = Path(args.out)
    progress = getattr(args, "progress", True)
    storage = args.storage or f"sqlite:///{(out / 'search.db').resolve()}"
    try:
        base = base_config(args)
        if args.storage is None:
            out.mkdir(parents=True, exist_ok=True)
        rdb = open_storage(storage)  # an unreachable database: one line, before any work
        data = prepare_data(base)
    except (RunError, ValueError) as e:  # StorageError is a ValueError
        return fail(e)
    out.mkdir(parents=True, exist_ok=True)
    direction = "maximize" if base.stop_mode == "max" else "minimize"
    metric = base.resolved_stop_metric
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # No sampler here: each trial gets its own (below), before it suggests anything.
    study = optuna.create_study(
        study_name=args.study,
        storage=rdb,
        direction=direction,
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2),
        load_if_exists=True,
    )
    n_coarse = max(1, math.ceil(args.trials * args.coarse_fraction))
    while True:
        trials = study.get_trials(deepcopy=False)
        if len(trials) >= args.trials:
            break
        coarse = [t for t in trials if t.user_attrs.get("stage") == 1]
        stage = 1 if len(coarse) < n_coarse else 2
        space = COARSE_SPACE
        if stage == 2:
            done = sorted(
                (t for t in coarse if t.value is not None),
                key=lambda t: t.value,
                reverse=direction == "maximize",
            )
            top = done[: max(3, len(done) // 4)]
            space = fine_space([t.params for t in top])
        trial = study.ask()
        # Its own random stream, from --seed and its number: processes sharing a study
        # (all with the same --seed) never sample the same parameters.
        study.sampler = optuna.samplers.RandomSampler(seed=trial_seed(args.seed, trial.number))
        trial.set_user_attr("stage", stage)
        params = _to_config_fields(_suggest(trial, space))
        cfg = replace(
            base,
            out=str(out / "trials" / f"{trial.number:04d}"),
            progress=progress,
            **params,
        )
        logger.info("trial %d (stage %d): %s", trial.number, stage, json.dumps(params))

        def report(epoch: int, row: dict[str, Any], trial: Any = trial) -> None:
            trial.report(row[metric], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

        try:
            summary = run(cfg, data=data, on_epoch_end=report)
        except optuna.TrialPruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            logger.info("trial %d pruned", trial.number)
            continue
        except TrainingDiverged as e:
            logger.warning("trial %d diverged: %s", trial.number, e)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        trial.set_user_attr("best_epoch", summary["best_epoch"])
        trial.set_user_attr("run_dir", cfg.out)
        study.tell(trial, summary["best_metric"])
        logger.info(
            "trial %d: %s %.5f (best epoch %d)",
            trial.number,
            metric,
            summary["best_metric"],
            summary["best_epoch"],
        )

    trials = study.get_trials(deepcopy=False)
    completed = [t for t in trials if t.value is not None]
    if not completed:
        print("error: no trial completed", file=sys.stderr)
        return 1
    best = study.best_trial
    atomic_write_json(out / "best_config.json", best_config(base, best.params))
    _write_trials_csv(out / "trials.csv", trials)
    plot_trials(out / "search.png", trials, metric, best.number)
    print(
        f"best trial {best.number} (stage {best.user_attrs.get('stage')}): {metric} {best.value:.5f}"
    )
    for k, v in _to_config_fields(best.params).items():
        print(f"  {k:<13} {v:.6g}" if isinstance(v, float) else f"  {k:<13} {v}")
    print(
        f"wrote {out / 'best_config.json'}, {out / 'search.png'}, {out / 'trials.csv'} (study {args.study!r} in {shown_url(storage)})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main, note="finished trials kept in the study; rerun to continue"))
