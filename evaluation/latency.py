"""Latency settings and profiling: how long a pilot takes to turn a frame into a command.

The closed-loop runner (:mod:`evaluation.runner`) charges this latency in simulated
time. It comes from one of these modes:

- ``measured``: the batch-1 inference time of this pilot on this machine,
  preprocessing included (:func:`measure_latency`: warm-up calls, then many timed
  calls of ``pilot.act``). The samples are kept: each inference in closed loop draws
  its latency from them, so this machine's jitter is charged too; tables show the
  median;
- ``profile``: samples recorded on the car by ``python -m evaluation.profile``
  (``--latency profile.json``, or a directory of profiles: each pilot takes the one
  recorded for its model's sha256), replayed the same way;
- ``estimated``: a reference car computer's estimate from the pilot's counted FLOPs
  (``--car NAME``, :mod:`evaluation.cars`); a matching profile always wins over it;
- ``fixed``: a given value (``"70ms"``, ``"0.07s"``, or a bare number of milliseconds);
- ``zero``: an instantaneous pilot (the command applies at the frame's own time).

:func:`parse_latency` turns the command-line text into a :class:`LatencySetting`;
:func:`resolve_charge` turns a setting, a loaded pilot and an optional car into the
:class:`LatencyCharge` its runs are charged.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import platform
import re
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from agents.base import resolve_device
from agents.loop import latency_substeps

__all__ = [
    "LATENCY_MODES",
    "MAX_LATENCY_S",
    "LatencySetting",
    "LatencyStats",
    "cpu_model",
    "describe_device",
    "hardware_fingerprint",
    "latency_substeps",
    "measure_latency",
    "parse_latency",
    "pilot_device",
    "resolve_device",
]

LATENCY_MODES = ("measured", "fixed", "zero", "profile", "estimated")
#: What ``--latency`` may say (``estimated`` comes from ``--car``).
SETTING_MODES = ("measured", "fixed", "zero", "profile")
#: A directory of profiles is read up to this many files.
MAX_PROFILES = 1000
#: Larger latencies are certainly typos (a pilot 10 s late never leaves the start line).
MAX_LATENCY_S = 10.0

_LATENCY_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|s)?\s*$")


@dataclass(frozen=True)
class LatencySetting:
    """Which latency a run charges: ``mode`` and, unless measured, the value."""

    mode: str  # "measured", "fixed", "zero" or "profile"
    value_s: float | None = None  # seconds; None for "measured"/"profile" (known later)
    path: str | None = None  # "profile": a profile JSON or a directory of them

    def __post_init__(self) -> None:
        if self.mode not in SETTING_MODES:
            raise ValueError(f"latency mode must be one of {SETTING_MODES}, got {self.mode!r}")
        if self.mode == "profile":
            if not self.path:
                raise ValueError("a profile latency needs the profile's path")
            return
        if self.mode == "measured":
            if self.value_s is not None:
                raise ValueError("a measured latency has no value until it is measured")
            return
        if self.value_s is None or not math.isfinite(self.value_s):
            raise ValueError(f"latency mode {self.mode!r} needs a finite value_s")
        if not 0.0 <= self.value_s <= MAX_LATENCY_S:
            raise ValueError(f"latency must be in [0, {MAX_LATENCY_S}] s, got {self.value_s} s")
        if self.mode == "zero" and self.value_s != 0.0:
            raise ValueError(f"latency mode 'zero' needs value_s=0, got {self.value_s}")

    @property
    def label(self) -> str:
        """Short text for tables: ``measured``, ``0``, ``70ms`` or ``profile``."""
        if self.mode in ("measured", "profile"):
            return self.mode
        if self.mode == "zero":
            return "0"
        return f"{self.value_s * 1000:g}ms"


def parse_latency(text: str | float | int) -> LatencySetting:
    """``"measured"``, ``"0"``/``"zero"``, ``"70ms"``, ``"0.07s"``, ``"70"`` (ms), or the
    path of a latency profile (``.json``) or of a directory of profiles.

    A bare number means milliseconds. Anything else, a negative value or one above
    ``MAX_LATENCY_S`` is a ``ValueError`` saying what is accepted.
    """
    if isinstance(text, bool):
        raise ValueError(f"latency must be text or a number of milliseconds, got {text!r}")
    if isinstance(text, (int, float)):
        value_ms = float(text)
        if not math.isfinite(value_ms) or value_ms < 0:
            raise ValueError(f"latency must be a finite number of milliseconds >= 0, got {text!r}")
        return _fixed(value_ms / 1000.0, str(text))
    if not isinstance(text, str):
        raise ValueError(f"latency must be text or a number, got {type(text).__name__}")
    t = text.strip().lower()
    if t == "measured":
        return LatencySetting("measured")
    if t in ("zero", "none", "0"):
        return LatencySetting("zero", 0.0)
    if t.endswith(".json") or os.path.isdir(text.strip()):
        path = text.strip()
        if not os.path.exists(path):
            raise ValueError(f"latency profile {path}: no such file or directory")
        return LatencySetting("profile", path=path)
    if t.startswith("-"):
        raise ValueError(f"latency must not be negative, got {text!r}")
    m = _LATENCY_RE.match(t)
    if not m:
        raise ValueError(
            f"bad latency {text!r}: expected 'measured', '0', a value in milliseconds "
            "('70ms' or '70'), in seconds ('0.07s'), or a profile (.json) from "
            "python -m evaluation.profile"
        )
    value = float(m.group(1))
    seconds = value if m.group(2) == "s" else value / 1000.0
    return _fixed(seconds, text)


def _fixed(seconds: float, text: str) -> LatencySetting:
    if not math.isfinite(seconds):
        raise ValueError(f"latency must be finite, got {text!r}")
    if seconds > MAX_LATENCY_S:
        raise ValueError(f"latency {text!r} is above the {MAX_LATENCY_S:g} s limit")
    if seconds == 0.0:
        return LatencySetting("zero", 0.0)
    return LatencySetting("fixed", seconds)


@dataclass(frozen=True)
class LatencyStats:
    """Batch-1 inference time of one pilot, from :func:`measure_latency`."""

    median_s: float
    p95_s: float
    n: int  # timed calls (after warm-up)
    device: str  # where the pilot ran, e.g. "cpu" or "cuda:0"
    samples_s: tuple[float, ...] = ()  # every timed call, in order

    @property
    def p99_s(self) -> float:
        return float(np.percentile(self.samples_s, 99)) if self.samples_s else self.p95_s

    @property
    def max_s(self) -> float:
        return max(self.samples_s) if self.samples_s else self.p95_s

    @property
    def median_ms(self) -> float:
        return self.median_s * 1000.0

    @property
    def p95_ms(self) -> float:
        return self.p95_s * 1000.0


def measure_latency(
    pilot: Any,
    observation: Any,
    info: dict[str, Any],
    warmup: int = 10,
    n: int = 50,
) -> LatencyStats:
    """Time ``pilot.act(observation, info)``: ``warmup`` untimed calls, then ``n`` timed.

    ``act`` takes a raw env observation and returns a NumPy action, so each call
    includes preprocessing and the copy back from an accelerator (which waits for the
    device), i.e. the time a car would wait for its command.
    """
    if warmup < 0 or n < 1:
        raise ValueError(f"need warmup >= 0 and n >= 1, got warmup={warmup}, n={n}")
    for _ in range(warmup):
        pilot.act(observation, info)
    times = np.empty(n, dtype=np.float64)
    for i in range(n):
        t0 = time.perf_counter()
        pilot.act(observation, info)
        times[i] = time.perf_counter() - t0
    return LatencyStats(
        median_s=float(np.median(times)),
        p95_s=float(np.percentile(times, 95)),
        n=n,
        device=pilot_device(pilot),
        samples_s=tuple(float(t) for t in times),
    )


def pilot_device(pilot: Any) -> str:
    """The device a pilot computes on: its metadata's ``device``, else ``"cpu"``."""
    try:
        meta = pilot.metadata()
    except Exception:  # noqa: BLE001 - a pilot without usable metadata runs on the CPU
        meta = {}
    device = meta.get("device") if isinstance(meta, dict) else None
    if device is None:
        device = getattr(pilot, "device", None)
    return str(device) if device is not None else "cpu"


@functools.cache
def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (or ``platform``), e.g. ``AMD EPYC``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def _gpu_name(device: str) -> str | None:
    if not device.startswith("cuda"):
        return None
    try:
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    except Exception:  # noqa: BLE001 - no name is not an error
        return None


def describe_device(device: str) -> str:
    """``"cpu (AMD EPYC, 2 cores)"`` or ``"cuda:0 (NVIDIA H100 80GB HBM3)"``."""
    gpu = _gpu_name(device)
    if gpu:
        return f"{device} ({gpu})"
    return f"{device} ({cpu_model()}, {os.cpu_count()} cores)"


def hardware_fingerprint(device: str) -> str:
    """A short stable hash of what the timings depend on: CPU, core count, GPU, torch.

    Rows with a different fingerprint were measured on other hardware (their measured
    latencies do not apply here).
    """
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:  # pragma: no cover - torch is a dependency
        torch_version = "none"
    parts = [
        platform.machine(),
        cpu_model(),
        str(os.cpu_count()),
        _gpu_name(device) or "no-gpu",
        torch_version,
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
