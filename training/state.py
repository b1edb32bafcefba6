"""Early stopping and the resumable training state, saved without pickle.

The training state (``RUN_DIR/last-state.safetensors``, readable copy in
``last-state.json``) holds what a killed run needs to continue exactly where it stopped:
current and best weights, optimizer state (its tensors flattened into safetensors, the
rest as JSON in the file's metadata), the mixed-precision grad scaler, epoch,
early-stopping state, the metric history, and the torch / CUDA / numpy / Python RNG
states. ``torch.load`` is never used.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load, save

from sim.io_utils import atomic_write_bytes, atomic_write_json
from tracks.common import now_iso

__all__ = [
    "EarlyStopping",
    "load_train_state",
    "restore_optimizer",
    "rng_state",
    "save_train_state",
    "set_rng_state",
    "state_part",
]

STATE_FORMAT = "trackpilot-train-state"
STATE_VERSION = 1


@dataclass
class EarlyStopping:
    """Stop when the dev metric has not improved by ``min_delta`` for ``patience`` epochs.

    ``mode="min"`` for errors (MAE, loss), ``"max"`` for scores (macro F1). The caller keeps
    the weights of :attr:`best_epoch` and restores them at the end.
    """

    mode: str = "min"
    patience: int = 5
    min_delta: float = 0.0
    best: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {self.mode!r}")
        if self.patience < 1 or self.min_delta < 0:
            raise ValueError("patience must be >= 1 and min_delta >= 0")

    def improves(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def update(self, value: float, epoch: int) -> bool:
        """Record the metric of ``epoch``; True if it is the new best."""
        if self.improves(value):
            self.best, self.best_epoch, self.bad_epochs = float(value), int(epoch), 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, d: dict[str, Any]) -> None:
        for k, v in d.items():
            setattr(self, k, v)


# --------------------------------------------------------------------------- RNG
def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Current torch/CUDA/numpy/Python RNG states as ``(tensors, json)``."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    # The legacy global numpy RNG is saved because third-party code may draw from it.
    name, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    tensors["rng.numpy.keys"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, pstate, gauss = random.getstate()
    meta = {
        "numpy": {
            "name": name,
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": {"version": version, "state": list(pstate), "gauss": gauss},
    }
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted(
        (k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1])
    )
    if cuda and torch.cuda.is_available():
        states = [tensors[k] for k in cuda][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(states)
    n = meta["numpy"]
    keys = tensors["rng.numpy.keys"].numpy().astype(np.uint32)
    np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["cached"]))  # noqa: NPY002
    p = meta["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


# --------------------------------------------------------------------------- optimizer
def _flatten_optimizer(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for name, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optimizer.state.{pid}.{name}"] = v.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(pid), {})[name] = v
    groups = []
    for g in sd["param_groups"]:
        groups.append({k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()})
    return tensors, {"param_groups": groups, "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if not key.startswith("optimizer.state."):
            continue
        pid, name = key[len("optimizer.state.") :].split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    for pid, d in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(d)
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


# --------------------------------------------------------------------------- save / load
def save_train_state(
    run_dir: str | Path,
    *,
    model: torch.nn.Module,
    best_state: dict[str, torch.Tensor] | None,
    optimizer: torch.optim.Optimizer,
    scaler: Any | None,
    info: dict[str, Any],
    name: str = "last-state",
) -> dict[str, Any]:
    """Write the whole resumable state as ONE atomic ``NAME.safetensors``; returns its record.

    Tensors: ``model.*`` (current weights and buffers), ``best.*`` (the best weights so far),
    ``optimizer.state.*`` and ``rng.*``; everything else (optimizer hyperparameters, scaler,
    RNG scalars, ``info``) is JSON in the file's metadata (its one entry, ``record``). One
    file means a kill can never leave weights and optimizer from different epochs. Its
    bytes depend only on the state: the same state saved twice, in any process, has the
    same sha256 (so ``info`` should hold no timestamp). ``NAME.json`` is a readable copy of
    the record with the time it was written (``created``), written afterwards; resuming
    reads only the safetensors file.
    """
    run_dir = Path(run_dir)
    tensors = {
        f"model.{k}": v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()
    }
    if best_state is not None:
        tensors.update(
            {f"best.{k}": v.detach().to("cpu").contiguous() for k, v in best_state.items()}
        )
    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
    tensors.update(opt_tensors)
    rng_tensors, rng_meta = rng_state()
    tensors.update(rng_tensors)
    record = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "optimizer": opt_meta,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "rng": rng_meta,
        **info,
    }
    text = json.dumps(record, allow_nan=False)
    # ONE metadata entry: safetensors writes several in a hash map's order, which differs
    # between processes, and the same state would get other bytes (another sha256). The
    # format is checked inside the record.
    data = save(tensors, metadata={"record": text})
    atomic_write_bytes(run_dir / f"{name}.safetensors", data)
    readable = {k: v for k, v in record.items() if k != "rng"}
    atomic_write_json(run_dir / f"{name}.json", {**readable, "created": now_iso()})
    return record


def load_train_state(
    run_dir: str | Path, name: str = "last-state"
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(record, tensors)`` of a saved state; ``ValueError`` naming the file on any problem."""
    path = Path(run_dir) / f"{name}.safetensors"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"{path}: no training state to resume from") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot read training state ({e})") from None
    try:
        tensors = load(data)
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
        record = json.loads(meta.get("record", "null"))
    except (SafetensorError, ValueError, OSError) as e:
        raise ValueError(f"{path}: not a valid training state ({e})") from None
    problem = _record_problem(record)
    if problem:
        raise ValueError(f"{path}: {problem}")
    return record, tensors


def _record_problem(record: Any) -> str | None:
    """Why ``record`` is no training state this version reads (None if it is one)."""
    if not isinstance(record, dict) or record.get("format") != STATE_FORMAT:
        return "not a trackpilot training state"
    version = record.get("version")
    return (
        None if version == STATE_VERSION else f"state version {version!r}, expected {STATE_VERSION}"
    )


def state_part(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor] | None:
    """The ``prefix.*`` tensors with the prefix removed (None if there are none)."""
    p = prefix + "."
    part = {k[len(p) :]: v for k, v in tensors.items() if k.startswith(p)}
    return part or None


def restore_optimizer(
    optimizer: torch.optim.Optimizer, record: dict[str, Any], tensors: dict[str, torch.Tensor]
) -> None:
    optimizer.load_state_dict(_unflatten_optimizer(tensors, record["optimizer"]))
