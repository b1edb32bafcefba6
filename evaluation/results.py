"""``ResultRow``: one closed-loop evaluation result, as stored on the leaderboard.

A row names everything needed to recognise a stale result (the checkpoint's sha256,
the dataset fingerprint, the track's geometry hash, the latency setting, the hardware
and the code version) next to the metrics. Field names are the leaderboard store's
column names (``evaluation.store.CLOSED_LOOP_COLUMNS``); ``trajectory`` and the other
list fields are kept out of the flat columns (:meth:`ResultRow.flat`).
"""

from __future__ import annotations

import dataclasses
import functools
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.loop import Outcome
from tracks.common import now_iso

__all__ = ["RESULT_ROW_VERSION", "ResultRow", "code_version", "now_iso"]

#: Bumped when fields change meaning or are removed (adding fields keeps the version).
RESULT_ROW_VERSION = 1


@functools.cache
def code_version() -> str:
    """The repository's git commit (``-dirty`` with uncommitted changes to tracked
    files), else ``trackpilot <package version>``."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        if commit.returncode == 0 and commit.stdout.strip():
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=10,
            )
            suffix = "-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else ""
            return commit.stdout.strip() + suffix
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        from importlib.metadata import PackageNotFoundError, version

        return f"trackpilot {version('trackpilot')}"
    except (ImportError, PackageNotFoundError):
        return "unknown"


@dataclass
class ResultRow(Outcome):
    """One closed-loop run on the leaderboard (one pilot x track x direction x seed x L)."""

    # who was judged
    pilot: str  # the pilot's name
    pilot_kind: str  # expert | classical | cnn | sb3 | ...
    pilot_spec: str  # how it was named on the command line (path or keyword)
    checkpoint_sha256: str | None  # the weights' sha256; None for expert / classical
    dataset_fingerprint: str | None  # the training data the checkpoint saw, if known
    # on what
    track: str
    track_hash: str  # geometry hash of the track as driven
    direction: str  # ccw | cw
    speed: float  # m/s cruise speed
    laps_target: int
    seed: int
    # latency charged in simulated time
    latency_mode: str  # measured | fixed | zero | profile | estimated
    latency_ms: float  # the value charged (a distribution's median)
    latency_p95_ms: float | None  # the distribution's p95 (None for a constant)
    control_period_ms: float  # camera period (50 ms at 20 Hz)
    effective_control_hz: float  # commands per simulated second actually achieved
    # where, with what code, when
    device: str  # e.g. "cpu (AMD EPYC, 2 cores)" or "cuda:0 (NVIDIA H100 ...)"
    hardware: str  # hardware fingerprint (evaluation.latency.hardware_fingerprint)
    code_version: str  # git commit (+ "-dirty") or package version
    date: str  # ISO 8601, UTC
    # metrics
    laps_completed: int
    off_track: int  # off-track events
    flips: int
    interventions: int  # re-centrings (off-track events + flips)
    autonomy: float  # percent, PilotNet: 100 * (1 - interventions * 6 s / elapsed)
    mean_abs_cte: float  # m, mean |cross-track error|
    max_abs_cte: float  # m
    lap_times: list[float]  # s, each completed lap
    mean_lap_time: float | None  # s, None when no lap was completed
    mean_speed: float  # m/s
    mean_steering: float  # signed mean steering (+ left): a steering bias shows here
    elapsed_s: float  # simulated seconds
    completed: bool  # laps_completed >= laps_target
    sweep: bool = False  # True for a latency-sweep point (not a leaderboard entry)
    # where the latency comes from, and for which car computer
    latency_p99_ms: float | None = None
    latency_max_ms: float | None = None
    latency_source: str = (
        ""  # "measured on cpu (...)", "profile p.json (...)", "estimated for X ..."
    )
    car: str | None = None  # the target: None = this machine; a car computer or profiled device
    profile_sha256: str | None = None  # the profile file the latency came from
    profile_model_sha256: str | None = None  # the model that profile timed
    profile_hardware: str | None = None  # that profile's device fingerprint
    car_model: str | None = None  # hash of the car computer's constants (estimates)
    mflop: float | None = None  # the pilot's counted MFLOP per frame
    num_parameters: int | None = None  # the pilot's parameter count (None: no learned weights)
    model_bytes: int | None = None  # its weights file on disk (safetensors, .onnx), bytes
    domain_randomization: bool = False  # run with randomised colours, light and camera pose
    latency_distribution: bool = False  # each inference drew its latency from samples
    latency_charged_mean_ms: float | None = None  # over the run's inferences
    latency_charged_max_ms: float | None = None
    obs_mode: str = "image"
    image_size: list[int] = field(default_factory=lambda: [120, 160])
    video: str | None = None  # path of the run's video, if one was written
    interventions_at: list[list[float]] = field(default_factory=list)  # [x, y, t]
    trajectory: list[list[float]] = field(default_factory=list)  # [x, y], ~10 Hz
    version: int = RESULT_ROW_VERSION

    #: Fields that are lists (kept out of flat tables: JSON or their own table).
    LIST_FIELDS = ("lap_times", "image_size", "interventions_at", "trajectory")

    def to_dict(self, trajectory: bool = True) -> dict[str, Any]:
        """JSON-ready dict of every field (``trajectory=False`` leaves the trajectory out)."""
        d = dataclasses.asdict(self)
        if not trajectory:
            d.pop("trajectory")
        return d

    def flat(self) -> dict[str, Any]:
        """Scalar fields only, for tables (lap times, trajectory and the like left out)."""
        return {k: v for k, v in self.to_dict().items() if k not in self.LIST_FIELDS}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ResultRow:
        """Inverse of :meth:`to_dict`; ValueError on another version or missing fields."""
        if not isinstance(d, dict):
            raise ValueError(f"a result row must be a dict, got {type(d).__name__}")
        version = d.get("version", RESULT_ROW_VERSION)
        if version != RESULT_ROW_VERSION:
            raise ValueError(
                f"result row version {version!r}; this trackpilot reads version "
                f"{RESULT_ROW_VERSION}"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        required = {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        missing = sorted(required - set(d))
        if missing:
            raise ValueError(f"result row lacks field(s): {', '.join(missing)}")
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"result row has unknown field(s): {', '.join(unknown)}")
        kw = dict(d)
        kw["lap_times"] = [float(t) for t in kw["lap_times"]]
        for key in ("trajectory", "interventions_at"):
            if key in kw:
                kw[key] = [[float(v) for v in p] for p in kw[key]]
        if "image_size" in kw:
            kw["image_size"] = [int(v) for v in kw["image_size"]]
        kw["completed"] = bool(kw["completed"])
        kw["sweep"] = bool(kw.get("sweep", False))
        kw["domain_randomization"] = bool(kw.get("domain_randomization", False))
        return cls(**kw)
