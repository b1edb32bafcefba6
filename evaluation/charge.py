"""The latency a pilot's runs are charged: one :class:`LatencyCharge` per pilot.

:func:`resolve_charge` picks it, most specific first:

1. ``--latency PROFILE`` (a profile JSON from ``python -m evaluation.profile``, or a
   directory of them): the profile recorded for this pilot's model (its sha256 is the
   checkpoint's, or the ONNX file's, or the checkpoint an ONNX file was exported from).
   A user's measured profile from their own car always wins over an estimate.
2. ``--car NAME``: the reference car computer's estimate from the pilot's counted FLOPs
   (:mod:`evaluation.cars`), labelled "estimated for NAME".
3. ``measured``: this pilot on this machine (:func:`evaluation.latency.measure_latency`).
4. ``fixed`` / ``zero``.

Profiles, estimates and measurements are distributions: the closed loop draws each
inference's latency from :attr:`LatencyCharge.samples_s` (``agents.loop``), seeded by
the run's seed. Tables show the median (``median_s``) with p95/p99/max beside it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluation.cars import CarComputer, get_car, mflop_of
from evaluation.latency import (
    MAX_PROFILES,
    LatencySetting,
    LatencyStats,
    describe_device,
    hardware_fingerprint,
)
from evaluation.profile import LatencyProfile, profile_matches, read_profile

__all__ = [
    "ESTIMATE_SAMPLES",
    "LatencyCharge",
    "car_model_hash",
    "load_profiles",
    "pilot_shas",
    "resolve_charge",
]

logger = logging.getLogger(__name__)

#: Samples drawn from a car computer's estimated distribution (seeded: reproducible).
ESTIMATE_SAMPLES = 1000


@dataclass(frozen=True)
class LatencyCharge:
    """What one pilot's runs are charged, and where the figure comes from."""

    mode: str  # measured | fixed | zero | profile | estimated
    median_s: float  # the latency tables show (a distribution's median)
    samples_s: tuple[float, ...] = ()  # each inference draws from these; () = constant
    p95_s: float | None = None
    p99_s: float | None = None
    max_s: float | None = None
    source: str = ""  # one line: "measured on cpu (...)", "profile p.json (Raspberry Pi 4)"
    car: str | None = None  # the target: None = this machine; a car computer or a profiled device
    device: str = "cpu"  # where the figure was taken (description)
    hardware: str | None = None  # fingerprint of that hardware
    profile_sha256: str | None = None  # the profile file's sha256
    profile_model_sha256: str | None = None  # the model the profile timed
    car_model: str | None = None  # hash of the car computer's constants (estimates)

    @property
    def label(self) -> str:
        """``measured``, ``70ms``, ``profile`` or ``estimated for NAME`` (every table)."""
        if self.mode == "estimated":
            return f"estimated for {self.car}"
        if self.mode == "fixed":
            return f"{self.median_s * 1000:g}ms"
        if self.mode == "zero":
            return "0"
        return self.mode

    @property
    def samples(self) -> tuple[float, ...] | None:
        """The samples for the closed loop, or None for a constant."""
        return self.samples_s or None


def pilot_shas(meta: dict[str, Any]) -> set[str]:
    """The sha256s that name a pilot's model: its checkpoint's and, for an exported
    model, the checkpoint it came from."""
    out = set()
    for key in ("checkpoint_sha256", "sha256", "source_sha256"):
        v = meta.get(key)
        if isinstance(v, str) and v:
            out.add(v)
    return out


def load_profiles(path: str | Path) -> list[LatencyProfile]:
    """The profile at ``path``, or every ``*.json`` profile in the directory ``path``.

    A file that is not a valid profile is a ``ValueError`` naming it (one line): a
    directory given as ``--latency`` holds profiles only.
    """
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.json"))
        if not files:
            raise ValueError(f"{p}: no latency profiles (*.json) in this directory")
        if len(files) > MAX_PROFILES:
            raise ValueError(f"{p}: {len(files)} files, more than {MAX_PROFILES} profiles")
        return [read_profile(f) for f in files]
    return [read_profile(p)]


def _profile_for(
    profiles: list[LatencyProfile], meta: dict[str, Any], camera: tuple[int, int] | None
) -> LatencyProfile | None:
    shas = pilot_shas(meta)
    found = [pr for pr in profiles if any(profile_matches(pr, s) for s in shas)]
    if camera is not None:
        for pr in found:
            if pr.camera_size is not None and tuple(pr.camera_size) != tuple(camera):
                raise ValueError(
                    f"{pr.path}: profiled at camera {pr.camera_size[0]}x{pr.camera_size[1]}, "
                    f"but {meta.get('name')} is driven at {camera[0]}x{camera[1]}"
                )
    return found[-1] if found else None


def car_model_hash(car: CarComputer) -> str:
    """A short hash of a car computer's constants: estimates made with other constants
    are stale."""
    text = json.dumps(
        {
            "name": car.name,
            "overhead_ms": car.overhead_ms,
            "ms_per_mflop": car.ms_per_mflop,
            "tail": [car.p95_ratio, car.p99_ratio, car.max_ratio],
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _from_profile(pr: LatencyProfile, car: str | None) -> LatencyCharge:
    return LatencyCharge(
        mode="profile",
        median_s=float(pr.median_s),
        samples_s=tuple(float(v) for v in pr.samples_s),
        p95_s=float(pr.p95_s),
        p99_s=float(pr.p99_s),
        max_s=float(pr.max_s),
        source=f"profile {Path(pr.path).name} ({pr.device}, {pr.runtime})",
        car=car or pr.device,
        device=str(pr.device),
        hardware=pr.fingerprint,
        profile_sha256=pr.sha256,
        profile_model_sha256=pr.model_sha256,
    )


def _estimate(car: CarComputer, meta: dict[str, Any], pilot: Any, seed: int) -> LatencyCharge:
    mflop = mflop_of(pilot)
    if mflop is None:
        raise ValueError(
            f"{meta.get('name', 'pilot')}: no counted FLOPs, so no estimate for {car.name}; "
            "profile it on the car (python -m evaluation.profile) and pass --latency PROFILE"
        )
    est = car.estimate(float(mflop))
    samples = est.samples_s(n=ESTIMATE_SAMPLES, seed=seed)
    return LatencyCharge(
        mode="estimated",
        median_s=est.median_ms / 1000.0,
        samples_s=tuple(float(v) for v in samples),
        p95_s=est.p95_ms / 1000.0,
        p99_s=est.p99_ms / 1000.0,
        max_s=est.max_ms / 1000.0,
        source=f"estimated for {car.name} from {mflop:.1f} MFLOP ({car.board}, {car.runtime})",
        car=car.name,
        device=f"{car.board} ({car.runtime})",
        hardware=f"car:{car.name}",
        car_model=car_model_hash(car),
    )


def resolve_charge(
    setting: LatencySetting,
    pilot: Any,
    meta: dict[str, Any],
    *,
    car: str | None = None,
    stats: LatencyStats | None = None,
    device: str = "cpu",
    camera: tuple[int, int] | None = None,
    profiles: list[LatencyProfile] | None = None,
    seed: int = 0,
) -> LatencyCharge:
    """The charge for one loaded pilot (see the module docstring for the order).

    ``stats`` is this machine's measurement (needed for ``measured``); ``profiles`` the
    profiles read from ``setting.path`` (read here when None); ``camera`` the camera the
    pilot is driven with (a profile taken at another camera size is refused).
    """
    name = meta.get("name", "pilot")
    reference = get_car(car) if car else None
    if setting.mode == "profile":
        profiles = load_profiles(setting.path or "") if profiles is None else profiles
        found = _profile_for(profiles, meta, camera)
        if found is not None:
            return _from_profile(found, car)
        if reference is None:
            shas = ", ".join(sorted(s[:12] for s in pilot_shas(meta))) or "none"
            recorded = ", ".join(sorted({p.model_sha256[:12] for p in profiles}))
            raise ValueError(
                f"{setting.path}: no profile for {name} (model sha256 {shas}); the profiles "
                f"are for {recorded}: profile this model (python -m evaluation.profile)"
            )
        logger.info("%s: no profile in %s, estimated for %s", name, setting.path, car)
    if reference is not None:
        return _estimate(reference, meta, pilot, seed)
    if setting.mode == "measured":
        if stats is None:
            raise ValueError("a measured latency needs the measurement (stats)")
        return LatencyCharge(
            mode="measured",
            median_s=stats.median_s,
            samples_s=tuple(stats.samples_s),
            p95_s=stats.p95_s,
            p99_s=stats.p99_s,
            max_s=stats.max_s,
            source=f"measured on {describe_device(stats.device)}",
            device=describe_device(stats.device),
            hardware=hardware_fingerprint(stats.device),
        )
    value = float(setting.value_s or 0.0)
    return LatencyCharge(
        mode=setting.mode,
        median_s=value,
        source=setting.label,
        device=describe_device(device),
        hardware=hardware_fingerprint(device),
    )
