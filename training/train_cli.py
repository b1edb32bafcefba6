"""The command line of ``python -m training.train``: one flag per :class:`TrainConfig` field.

The flags come from the dataclass (:func:`tracks.cliargs.add_config_args`), so ``--help``
shows the true defaults; only ``--config`` and ``--resume`` are not config fields, and
``--split`` stays the short name of ``--split-ratios``. A flag counts only when typed: it
overrides the ``--config`` file (or, with ``--resume``, the run's saved config, where only
the :data:`RESUME_FIELDS` may change).
"""

from __future__ import annotations

import argparse
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from tracks.cliargs import add_config_args
from training.cli import Parser, add_alias
from training.config import TrainConfig
from training.errors import RunError

__all__ = ["RESUME_FIELDS", "build_parser", "config_from_args"]

#: Fields that may change when resuming (they do not affect the weights, or only by float
#: rounding: the memory layout; the number of torchrun processes may change too).
RESUME_FIELDS = {
    "epochs", "device", "threads", "progress", "tensorboard", "data", "verify",
    "frames_on_device", "pin_memory", "channels_last", "dist_timeout_s",
}  # fmt: skip
_FIELDS = frozenset(f.name for f in fields(TrainConfig))


def build_parser() -> argparse.ArgumentParser:
    ap = Parser(
        prog="python -m training.train",
        description="Behaviour cloning: turn a recorded dataset into a driving pilot.",
    )
    add_config_args(ap, TrainConfig, only=("data", "out"), needed=("data", "out"))
    ap.add_argument(
        "--config",
        default=None,
        help="config JSON (e.g. RUN_DIR/config.json or a search's best_config.json); flags "
        "override it (default: none: the defaults shown here)",
    )
    ap.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint (a run stopped before its "
        "first epoch ended starts fresh)",
    )
    add_config_args(ap, TrainConfig, exclude=("data", "out"))
    add_alias(ap, "--split", "--split-ratios")
    return ap


def typed_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields given on the command line, with their values."""
    return {k: v for k, v in vars(args).items() if k in _FIELDS}


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run's config: the typed flags over ``--config``, the saved run (``--resume``) or
    the defaults. ``ValueError`` (:class:`RunError`) for a bad value or a refused change."""
    given = typed_fields(args)
    if args.resume:
        if not given.get("out"):
            raise RunError("--resume needs --out RUN_DIR")
        path = Path(given["out"]) / "config.json"
        if not path.is_file():
            raise RunError(f"cannot resume: {path} not found")
        base = TrainConfig.from_json(path)
        changed = sorted(
            k
            for k, v in given.items()
            if k not in RESUME_FIELDS | {"out"} and getattr(base, k) != v
        )
        if changed:
            raise RunError(
                f"cannot change {', '.join(changed)} when resuming (only {', '.join(sorted(RESUME_FIELDS))})"
            )
        return replace(base, **given)
    if args.config:
        return TrainConfig.from_json(args.config, **given)
    return TrainConfig(**given)
