"""Behaviour cloning (splits, augmentation, trainer, early stopping, diagnosis), hyperparameter
search and benchmarks.

``training.evaluate_offline(checkpoint, dataset, split="test")`` is re-exported lazily so that
``import training`` stays cheap (no torch import until it is used).
"""

from __future__ import annotations

from typing import Any

__all__ = ["evaluate_offline"]


def __getattr__(name: str) -> Any:
    if name == "evaluate_offline":
        from training.evaluate import evaluate_offline

        return evaluate_offline
    raise AttributeError(f"module 'training' has no attribute {name!r}")
