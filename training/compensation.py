"""What ``--compensate-latency`` asks for: a fixed latency, or a car computer's estimate.

Kept apart from :mod:`training.relabel` (which needs the expert, the env's car and the
tracks) so that the training config can check the flag's syntax without importing them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from agents.cars import get_car

__all__ = ["Compensation", "parse_compensation"]


@dataclass(frozen=True)
class Compensation:
    """What ``--compensate-latency`` asks for: a fixed latency or a car computer's estimate."""

    ms: float | None = None  # a fixed latency, ms
    car: str | None = None  # a reference car computer (agents.cars): its estimate for the model

    def check(self) -> None:
        """``ValueError`` (listing the known cars) for an unknown car computer."""
        if self.car is not None:
            get_car(self.car)

    def latency_s(self, mflop: float | None = None) -> float:
        """The latency to relabel with (s): the fixed value, or the median latency the
        car computer is estimated to have for a model of ``mflop`` MFLOP."""
        if self.car is None:
            return float(self.ms or 0.0) / 1000.0
        if mflop is None:
            raise ValueError(f"car:{self.car} needs the model's counted MFLOP")
        return get_car(self.car).estimate(float(mflop)).median_ms / 1000.0


_MS_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|s)?\s*$")


def parse_compensation(text: str, what: str = "--compensate-latency") -> Compensation:
    """``"70ms"``, ``"70"`` (ms), ``"0.07s"`` or ``"car:NAME"``; ``ValueError`` (naming
    ``what``) otherwise."""
    t = str(text).strip()
    if t.startswith("car:"):
        name = t[4:].strip()
        if not name:
            raise ValueError(f"{what} car:NAME needs a car name")
        return Compensation(car=name)
    m = _MS_RE.match(t)
    if not m:
        raise ValueError(f"{what} must be milliseconds (70, 70ms, 0.07s) or car:NAME, got {text!r}")
    ms = float(m.group(1)) * (1000.0 if m.group(2) == "s" else 1.0)
    if not (math.isfinite(ms) and 0 <= ms <= 2000):
        raise ValueError(f"{what} must be within 0..2000 ms, got {text!r}")
    return Compensation(ms=ms)
