"""What report rows are judged against: this machine, this code, the current dataset.

A row is *stale* when it was measured on other hardware (its latency does not apply
here), comes from a checkpoint trained on another dataset than the current one, or was
written by another code version (:func:`evaluation.results.code_version`, the one rows
are written with).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from evaluation.latency import hardware_fingerprint
from evaluation.results import code_version
from evaluation.store import Store

__all__ = ["CONTROL_PERIOD_MS", "Context", "current_context", "stale_reasons"]

#: The camera and control loop run at 20 Hz: a pilot slower than this misses frames.
CONTROL_PERIOD_MS = 50.0


@functools.cache
def _hardware(device: str) -> str | None:
    try:
        return hardware_fingerprint(device)
    except Exception:  # noqa: BLE001 - e.g. a CUDA row read on a machine without CUDA
        return None


@dataclass(frozen=True)
class Context:
    """What rows are judged against: this machine, this code, the current dataset."""

    code_version: str | None = None  # None: never flag rows as stale for their code version
    dataset_fingerprint: str | None = None  # None: never flag for the dataset
    check_hardware: bool = True  # compare each row's hardware with this machine's
    control_period_ms: float = CONTROL_PERIOD_MS  # the latency constraint

    def __post_init__(self) -> None:
        if not (self.control_period_ms > 0 and math.isfinite(self.control_period_ms)):
            raise ValueError(f"control_period_ms must be > 0, got {self.control_period_ms}")

    def hardware_for(self, device: str | None) -> str | None:
        """This machine's hardware fingerprint for rows measured on ``device``."""
        # Rows name the device as described ("cpu (AMD EPYC, 2 cores)"): its first word.
        name = str(device or "cpu").split(" ", 1)[0] or "cpu"
        return _hardware(name) if self.check_hardware else None


def current_context(
    store: Store | None = None,
    dataset_fingerprint: str | None = None,
    control_period_ms: float = CONTROL_PERIOD_MS,
) -> Context:
    """This machine and code; the dataset is ``dataset_fingerprint``, else the one the most
    recent evaluation in ``store`` recorded as current."""
    if dataset_fingerprint is None and store is not None:
        dataset_fingerprint = store.latest_context("dataset_fingerprint")
    return Context(
        code_version=code_version(),
        dataset_fingerprint=dataset_fingerprint,
        control_period_ms=control_period_ms,
    )


def stale_reasons(row: Mapping[str, Any], ctx: Context) -> list[str]:
    """Why ``row`` may no longer describe this setup: ``hardware``, ``dataset``, ``code``."""
    out = []
    here = ctx.hardware_for(row.get("device"))
    if here is not None and row.get("hardware") and row["hardware"] != here:
        out.append("hardware")
    fp = row.get("dataset_fingerprint")
    if ctx.dataset_fingerprint and fp and fp != ctx.dataset_fingerprint:
        out.append("dataset")
    if ctx.code_version and row.get("code_version") and row["code_version"] != ctx.code_version:
        out.append("code")
    return out
