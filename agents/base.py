"""The one protocol every pilot implements.

A pilot turns what the car sees (an observation from ``sim.TrackEnv``) into a
command. The recorder, ``python -m sim.drive`` and the closed-loop evaluator
talk to pilots only through this protocol, so an expert, a person at the
keyboard, a CNN and a stable-baselines3 policy are interchangeable.

Conventions (shared with ``sim.TrackEnv``):

- ``act`` returns ``np.ndarray`` of shape ``(2,)``, float32, ``[steering,
  throttle]``, each in ``[-1, 1]``. Steering ``+1`` is full left (counter-
  clockwise yaw), ``-1`` full right. Throttle ``+1`` is full forward. A pilot
  that only steers (the env runs with a fixed cruise speed) returns ``0.0``
  as throttle; callers driving a fixed-speed env pass ``action[:1]``.
- ``observation`` is whatever the env returns: a uint8 ``HxWx3`` image, a
  ``dict`` with ``"image"`` and ``"state"``, or a state vector.
- ``info`` is the env's info dict. Only privileged pilots (the expert) may read
  the true pose from it; learned pilots must not.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from safetensors import SafetensorError

# PilotNeeds and as_action live in the dependency-free agents.needs (a pilot on the car
# imports them without safetensors or tracks); they are re-exported from here.
from agents.needs import DEFAULT_IMAGE_SIZE, OBS_MODES, PilotNeeds, as_action
from tracks.fileio import atomic_write_bytes, atomic_write_json, read_json, sha256_bytes

__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "MAX_DESCRIPTION_BYTES",
    "MAX_DESCRIPTION_DEPTH",
    "MAX_WEIGHTS_BYTES",
    "OBS_MODES",
    "Pilot",
    "PilotNeeds",
    "WeightsFormat",
    "as_action",
    "pilot_metadata",
    "pilot_needs",
    "read_described_weights",
    "read_description",
    "resolve_checkpoint_json",
    "resolve_device",
    "weights_bytes",
    "write_described_weights",
]

#: Bounds on what a saved pilot's files may be, checked before they are parsed: a JSON
#: description (the registry reads the same files with the same size cap), its nesting
#: depth, and the safetensors weights (a 2 GiB model is ~500M float32 parameters).
MAX_DESCRIPTION_BYTES = 16 << 20
MAX_DESCRIPTION_DEPTH = 64
MAX_WEIGHTS_BYTES = 2 << 30


@runtime_checkable
class Pilot(Protocol):
    """Anything that can drive the car."""

    #: Short unique name, used in datasets and on the leaderboard.
    name: str
    #: What it needs from the env (observation, camera, throttle, privileged state).
    needs: PilotNeeds

    def reset(self) -> None:
        """Forget any state carried between frames (called at every env reset)."""

    def act(self, observation: Any, info: dict[str, Any]) -> np.ndarray:
        """Return ``[steering, throttle]`` in ``[-1, 1]`` for this frame."""

    def metadata(self) -> dict[str, Any]:
        """JSON-serialisable description (kind, settings, checkpoint hash ...)."""


def pilot_needs(pilot: Any) -> PilotNeeds:
    """The pilot's declared :class:`PilotNeeds`; a pilot that declares none (a user's
    duck-typed object) gets the default: 120x160 camera image, cruise control."""
    needs = getattr(pilot, "needs", None)
    if needs is None:
        return PilotNeeds(privileged=callable(getattr(pilot, "set_track", None)))
    if not isinstance(needs, PilotNeeds):
        raise ValueError(f"pilot {getattr(pilot, 'name', pilot)!r}: needs must be a PilotNeeds")
    return needs


def pilot_metadata(pilot: Any) -> dict[str, Any]:
    """``pilot.metadata()`` as a dict (empty when the pilot has none)."""
    meta = getattr(pilot, "metadata", None)
    out = meta() if callable(meta) else {}
    return dict(out) if isinstance(out, dict) else {}


def resolve_checkpoint_json(path: str | Path, what: str = "checkpoint") -> Path:
    """The JSON description of a saved pilot: a run directory's ``best.json``, a
    ``.json`` file, or the ``.json`` beside a ``.safetensors`` file."""
    p = Path(path)
    if p.is_dir():
        p = p / "best.json"
    elif p.suffix == ".safetensors":
        p = p.with_suffix(".json")
    if not p.is_file():
        raise ValueError(f"{p}: {what} not found")
    return p


def weights_bytes(checkpoint: str | Path | None, record: Mapping[str, Any]) -> int | None:
    """Bytes on disk of the weights file ``record`` names beside the description of
    ``checkpoint`` (a run directory, ``.json`` or ``.safetensors``); None when unknown."""
    if checkpoint is None or not record.get("weights"):
        return None
    try:
        jpath = resolve_checkpoint_json(checkpoint)
        return int((jpath.parent / str(record["weights"])).stat().st_size)
    except (OSError, ValueError):
        return None


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when available else ``"cpu"``; ``cpu``, ``cuda`` and
    ``cuda:N`` are checked (CUDA must be available). ValueError otherwise."""
    d = str(device).strip().lower()
    if d == "cpu":
        return "cpu"
    if d == "auto" or d == "cuda" or re.fullmatch(r"cuda:\d+", d):
        import torch

        if d == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {device!r} requested but CUDA is not available (torch {torch.__version__})"
            )
        return d
    raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}")


def write_described_weights(
    directory: str | Path,
    name: str,
    tensors: dict[str, Any],
    record: dict[str, Any],
    *,
    fmt: str,
) -> Path:
    """Write ``NAME.safetensors`` then ``NAME.json`` (``record`` plus ``weights`` and
    ``weights_sha256``) atomically; returns the JSON path. The counterpart of
    :func:`read_described_weights`.

    The JSON is written last and names the weights' sha256, so a reader never pairs a
    description with other weights (a process killed between the two writes leaves a
    mismatch that the reader reports, not a silently wrong model). The safetensors
    header holds one metadata entry (``format``): with several, their order follows a
    hash map's and the same weights could give other bytes and another sha256.
    """
    from safetensors.torch import save  # torch: only for pilots that have weights

    directory = Path(directory)
    data = save(
        {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()},
        metadata={"format": fmt},
    )
    weights = f"{name}.safetensors"
    atomic_write_bytes(directory / weights, data)
    path = directory / f"{name}.json"
    atomic_write_json(path, {**record, "weights": weights, "weights_sha256": sha256_bytes(data)})
    return path


def read_description(path: str | Path, what: str = "checkpoint") -> dict[str, Any]:
    """The JSON object at ``path``, bounded: at most :data:`MAX_DESCRIPTION_BYTES`, nested
    at most :data:`MAX_DESCRIPTION_DEPTH` deep, strict (no NaN/Infinity); the one bounded
    reader, ``tracks.fileio.read_json``. Any problem is one ``ValueError`` naming the file."""
    p = Path(path)
    record = read_json(
        p,
        what=f"{what} description",
        max_bytes=MAX_DESCRIPTION_BYTES,
        max_depth=MAX_DESCRIPTION_DEPTH,
    )
    if not isinstance(record, dict):
        raise ValueError(f"{p}: not a trackpilot {what} (not a JSON object)")
    return record


def read_described_weights(
    path: str | Path,
    *,
    fmt: str,
    version: int,
    required: tuple[str, ...],
    what: str,
) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """Load safetensors weights described by a JSON file, checked before use.

    The JSON (found by :func:`resolve_checkpoint_json`, read by the bounded
    :func:`read_description`) must carry ``format == fmt``, ``version``, the
    ``required`` keys, ``weights`` (a file name beside it, at most
    :data:`MAX_WEIGHTS_BYTES`) and ``weights_sha256``; the weights must match that
    hash. Returns
    ``(record, tensors, json_path)``. Any problem is one ``ValueError`` naming
    the file. Nothing is unpickled.
    """
    from safetensors.torch import load  # torch: only for pilots that have weights

    jpath = resolve_checkpoint_json(path, what)
    record = read_description(jpath, what)
    if record.get("format") != fmt:
        raise ValueError(f"{jpath}: not a trackpilot {what} (format != {fmt!r})")
    if record.get("version") != version:
        raise ValueError(
            f"{jpath}: {what} version {record.get('version')!r}, this trackpilot reads {version}"
        )
    for key in (*required, "weights", "weights_sha256"):
        if key not in record:
            raise ValueError(f"{jpath}: {what} description lacks {key!r}")
    if Path(str(record["weights"])).name != record["weights"]:
        raise ValueError(
            f"{jpath}: weights must be a file name next to it, got {record['weights']!r}"
        )
    weights = jpath.parent / str(record["weights"])
    try:
        size = weights.stat().st_size
        if size > MAX_WEIGHTS_BYTES:
            raise ValueError(
                f"{weights}: {size} bytes, more than the {MAX_WEIGHTS_BYTES >> 30} GiB "
                f"{what} weights may have"
            )
        data = weights.read_bytes()
    except OSError as e:
        raise ValueError(f"{weights}: cannot read {what} weights ({e})") from None
    if sha256_bytes(data) != record["weights_sha256"]:
        raise ValueError(
            f"{weights}: sha256 does not match {jpath.name} (corrupt, or overwritten by "
            "another run)"
        )
    try:
        tensors = load(data)
    except (SafetensorError, ValueError) as e:
        raise ValueError(f"{weights}: not a valid safetensors file ({e})") from None
    return record, tensors, jpath


@dataclass(frozen=True)
class WeightsFormat:
    """One kind of saved pilot (a CNN checkpoint, an SB3 policy): safetensors weights
    described by a JSON file with ``format``, ``version`` and the ``required`` keys."""

    fmt: str
    version: int
    required: tuple[str, ...]
    what: str  # for messages: "checkpoint", "SB3 policy"

    def resolve(self, path: str | Path) -> Path:
        """The JSON for a run directory (``best.json``), a ``.json`` or a ``.safetensors``."""
        return resolve_checkpoint_json(path, self.what)

    def read(self, path: str | Path) -> tuple[dict[str, Any], dict[str, Any], Path]:
        """``(record, tensors, json_path)``, checked against the format and the sha256."""
        return read_described_weights(
            path, fmt=self.fmt, version=self.version, required=self.required, what=self.what
        )

    def write(
        self, directory: str | Path, name: str, tensors: dict[str, Any], record: dict[str, Any]
    ) -> Path:
        """``NAME.safetensors`` then ``NAME.json`` (:func:`write_described_weights`)."""
        return write_described_weights(directory, name, tensors, record, fmt=self.fmt)
