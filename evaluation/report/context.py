"""What report rows are judged against: this machine, this code, the current dataset, the
current car computers and the profiles in use.

A row's *target* is the machine its latency is for (``car``): ``None`` is this machine
(``measured``, ``fixed`` and ``zero`` rows, and rows written before schema 2, which lack
the key); a reference car computer's name for ``estimated`` rows (and ``profile`` rows
given with ``--car``); the profiled device's description for other ``profile`` rows.

A row is *stale* (:func:`stale_reasons`) for any of:

- ``hardware``: a ``measured`` row (or an offline row, or a row without ``latency_mode``)
  whose hardware fingerprint is not this machine's: its latency does not apply here.
  Profile, estimated, fixed and zero rows are not compared with this machine.
- ``profile hardware``: a ``profile`` row whose ``profile_hardware`` is not the most recent
  profile fingerprint used for the same target among the rows being reported
  (:attr:`Context.profile_hardware`, from :func:`latest_profile_hardware`): the car was
  profiled again on another device, and this row's latency is from the old one.
- ``profile model``: a row whose ``profile_model_sha256`` is set and is neither its
  ``checkpoint_sha256`` nor its ``source_sha256`` (a column or in ``extra``, when an
  exported model names its source): the profile timed another model.
- ``car model``: an ``estimated`` row whose car is no longer in
  :data:`evaluation.cars.CARS`, or whose ``car_model`` (set) is not the hash of that car's
  current constants (:func:`car_model_hash`): the estimate was made with other figures.
- ``dataset``: the checkpoint was trained on an earlier dataset of the board, not the
  current one. The board's datasets (:attr:`Context.board_datasets`) are those the main
  job's evaluations named as current in the store; the current one is the newest of them
  (or the report's ``--dataset``). A pilot trained on data the board never used (a user's
  own recording, evaluated with ``python -m evaluation.evaluate``) is not compared: its
  dataset is not an older version of the board's, only another one.
- ``code``: written by another code version (:func:`evaluation.results.code_version`, the
  one rows are written with).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from evaluation.cars import CARS
from evaluation.charge import car_model_hash
from evaluation.latency import describe_device, hardware_fingerprint
from evaluation.results import code_version
from evaluation.store import Store

__all__ = [
    "CONTROL_PERIOD_MS",
    "THIS_MACHINE",
    "Context",
    "board_datasets",
    "car_model_hash",
    "current_context",
    "latest_profile_hardware",
    "stale_reasons",
    "target_label",
    "target_name",
]

#: The camera and control loop run at 20 Hz: a pilot slower than this misses frames.
CONTROL_PERIOD_MS = 50.0


#: How a row whose latency is for this machine (``car`` is None) names its target.
THIS_MACHINE = "this machine"


def target_name(row: Mapping[str, Any]) -> str:
    """The row's target: ``this machine`` or the car (computer or profiled device)."""
    car = row.get("car")
    return str(car) if car else THIS_MACHINE


def target_label(mode: str | None, car: str | None) -> str:
    """How a latency is labelled: ``this machine``, ``estimated for NAME``, ``profile: DEVICE``."""
    if not car:
        return "profile: " + THIS_MACHINE if mode == "profile" else THIS_MACHINE
    if mode == "estimated":
        return f"estimated for {car}"
    if mode == "profile":
        return f"profile: {car}"
    return str(car)


def latest_profile_hardware(rows: Iterable[Mapping[str, Any]]) -> dict[str | None, str]:
    """Per target (``car``), the ``profile_hardware`` of its most recent profile row (the
    highest id, rows without one in the order given)."""
    latest: dict[str | None, tuple[float, int, str]] = {}
    for i, r in enumerate(rows):
        hw = r.get("profile_hardware")
        if (r.get("latency_mode") or "measured") != "profile" or not hw:
            continue
        key = (float(r.get("id") or 0), i)
        car = r.get("car") or None
        if car not in latest or key >= latest[car][:2]:
            latest[car] = (*key, str(hw))
    return {car: hw for car, (_, _, hw) in latest.items()}


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
    # the board's datasets: rows trained on one of them (not the current) are stale;
    # rows trained on other data are not compared. None: compare every row
    board_datasets: frozenset[str] | None = None
    check_hardware: bool = True  # compare each row's hardware with this machine's
    control_period_ms: float = CONTROL_PERIOD_MS  # the latency constraint
    # per target (car), the most recent profile's device fingerprint among the rows being
    # reported (None: not known yet; rank_entries and build_report fill it from the rows)
    profile_hardware: Mapping[str | None, str] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not (self.control_period_ms > 0 and math.isfinite(self.control_period_ms)):
            raise ValueError(f"control_period_ms must be > 0, got {self.control_period_ms}")

    def hardware_for(self, device: str | None) -> str | None:
        """This machine's hardware fingerprint for rows measured on ``device``."""
        # Rows name the device as described ("cpu (AMD EPYC, 2 cores)"): its first word.
        name = str(device or "cpu").split(" ", 1)[0] or "cpu"
        return _hardware(name) if self.check_hardware else None

    def describe(self) -> str:
        """One line: what the rows are judged against (hardware, code, dataset)."""
        hw = self.hardware_for("cpu") if self.check_hardware else None
        parts = [
            f"this machine ({describe_device('cpu')}, hardware {hw})" if hw else "this machine"
        ]
        if self.code_version:
            parts.append(f"code {self.code_version}")
        if self.dataset_fingerprint:
            text = f"dataset {self.dataset_fingerprint[:12]}"
            if self.board_datasets is not None:
                text += " (the main job's; pilots trained on other data are not compared)"
            parts.append(text)
        else:
            parts.append("no current dataset (no main-job evaluation in this store)")
        return "Judged against: " + ", ".join(parts) + "."

    def for_rows(self, rows: Iterable[Mapping[str, Any]]) -> Context:
        """This context with :attr:`profile_hardware` taken from ``rows`` (kept when set)."""
        if self.profile_hardware is not None:
            return self
        return dataclasses.replace(self, profile_hardware=latest_profile_hardware(rows))


def current_context(
    store: Store | None = None,
    dataset_fingerprint: str | None = None,
    control_period_ms: float = CONTROL_PERIOD_MS,
) -> Context:
    """This machine and code; the dataset is ``dataset_fingerprint``, else the one the most
    recent evaluation in ``store`` recorded as current; the board's datasets are every one
    an evaluation in ``store`` recorded as current (and the current one)."""
    board = None
    if store is not None:
        if dataset_fingerprint is None:
            dataset_fingerprint = store.latest_context("dataset_fingerprint")
        board = board_datasets(store) | {dataset_fingerprint} - {None}
    return Context(
        code_version=code_version(),
        dataset_fingerprint=dataset_fingerprint,
        control_period_ms=control_period_ms,
        board_datasets=board,
    )


def board_datasets(store: Store) -> frozenset[str]:
    """Every dataset fingerprint an evaluation in ``store`` named as its current dataset
    (the main job's: ``evaluation.evaluate`` names none)."""
    found = (ev["context"].get("dataset_fingerprint") for ev in store.evaluations())
    return frozenset(str(fp) for fp in found if fp)


def _profile_model_ok(row: Mapping[str, Any]) -> bool:
    timed = row.get("profile_model_sha256")
    if not timed:
        return True
    extra = row.get("extra") if isinstance(row.get("extra"), Mapping) else {}
    ours = {row.get("checkpoint_sha256"), row.get("source_sha256"), extra.get("source_sha256")}
    return timed in ours - {None}


def stale_reasons(row: Mapping[str, Any], ctx: Context) -> list[str]:
    """Why ``row`` may no longer describe this setup, in this order: ``hardware``,
    ``profile hardware``, ``profile model``, ``car model``, ``dataset``, ``code`` (the
    module docstring says when each applies)."""
    out = []
    mode = row.get("latency_mode") or "measured"
    if mode == "measured":
        here = ctx.hardware_for(row.get("device"))
        if here is not None and row.get("hardware") and row["hardware"] != here:
            out.append("hardware")
    if mode == "profile" and ctx.profile_hardware:
        latest = ctx.profile_hardware.get(row.get("car") or None)
        if latest and row.get("profile_hardware") and row["profile_hardware"] != latest:
            out.append("profile hardware")
    if not _profile_model_ok(row):
        out.append("profile model")
    if mode == "estimated":
        car = CARS.get(str(row.get("car") or ""))
        if car is None or (row.get("car_model") and row["car_model"] != car_model_hash(car)):
            out.append("car model")
    fp = row.get("dataset_fingerprint")
    if ctx.dataset_fingerprint and fp and fp != ctx.dataset_fingerprint:
        if ctx.board_datasets is None or fp in ctx.board_datasets:
            out.append("dataset")
    if ctx.code_version and row.get("code_version") and row["code_version"] != ctx.code_version:
        out.append("code")
    return out
