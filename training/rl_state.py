"""What ``python -m training.rl --resume`` needs, saved without pickle.

``train_state.safetensors`` holds the policy and optimiser tensors (Adam moments, SAC's
entropy coefficient) and ``VecNormalize`` statistics; ``train_state.json`` the step
counter, optimiser hyperparameters, progress and the safetensors file's sha256. No
stable-baselines3 ``.zip`` is written or read. SAC's replay buffer is not kept.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from sim.io_utils import atomic_write_bytes, atomic_write_json, sha256_bytes

__all__ = [
    "TRAIN_STATE_FORMAT",
    "TRAIN_STATE_VERSION",
    "load_train_state",
    "read_train_state",
    "save_train_state",
]

TRAIN_STATE_FORMAT = "trackpilot-rl-train-state"
TRAIN_STATE_VERSION = 1


def _optimizers(model) -> dict[str, torch.optim.Optimizer]:
    # stable-baselines3 takes seconds to import (it is loaded anyway once a model exists).
    from stable_baselines3 import PPO

    if isinstance(model, PPO):
        return {"policy": model.policy.optimizer}
    out = {"actor": model.actor.optimizer, "critic": model.critic.optimizer}
    if getattr(model, "ent_coef_optimizer", None) is not None:
        out["ent_coef"] = model.ent_coef_optimizer
    return out


def _rms_items(norm) -> dict[str, Any]:
    if norm is None:
        return {}
    items = {"ret": norm.ret_rms}
    if norm.norm_obs:
        if isinstance(norm.obs_rms, dict):
            items.update({f"obs.{k}": v for k, v in norm.obs_rms.items()})
        else:
            items["obs"] = norm.obs_rms
    return items


def save_train_state(model, norm, directory: str | Path, progress: dict[str, Any]) -> Path:
    """Everything ``--resume`` needs, as ``train_state.safetensors`` + ``train_state.json``."""
    directory = Path(directory)
    tensors: dict[str, torch.Tensor] = {
        f"policy.{k}": v.detach().cpu().clone().contiguous()
        for k, v in model.policy.state_dict().items()
    }
    optim_meta: dict[str, Any] = {}
    for name, opt in _optimizers(model).items():
        sd = opt.state_dict()
        scalars = {}
        for idx, st in sd["state"].items():
            for k, v in st.items():
                if torch.is_tensor(v):
                    tensors[f"optim.{name}.{idx}.{k}"] = v.detach().cpu().clone().contiguous()
                else:
                    scalars[f"{idx}.{k}"] = v
        optim_meta[name] = {"param_groups": sd["param_groups"], "scalars": scalars}
    if getattr(model, "log_ent_coef", None) is not None:
        tensors["sac.log_ent_coef"] = model.log_ent_coef.detach().cpu().clone()
    rms_meta = {}
    for key, rms in _rms_items(norm).items():
        tensors[f"vecnorm.{key}.mean"] = torch.as_tensor(np.asarray(rms.mean, dtype=np.float64))
        tensors[f"vecnorm.{key}.var"] = torch.as_tensor(np.asarray(rms.var, dtype=np.float64))
        rms_meta[key] = float(rms.count)
    # One metadata entry: several are written in a hash map's order, which differs between
    # processes, and the same state would get other bytes (another weights_sha256).
    data = save(tensors, metadata={"format": TRAIN_STATE_FORMAT})
    atomic_write_bytes(directory / "train_state.safetensors", data)
    record = {
        "format": TRAIN_STATE_FORMAT,
        "version": TRAIN_STATE_VERSION,
        "algo": type(model).__name__.lower(),
        "num_timesteps": int(model.num_timesteps),
        "n_updates": int(getattr(model, "_n_updates", 0)),
        "optimizers": optim_meta,
        "vecnorm_counts": rms_meta,
        "weights_sha256": sha256_bytes(data),
        **progress,
    }
    return atomic_write_json(directory / "train_state.json", record)


def read_train_state(directory: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    jpath = Path(directory) / "train_state.json"
    try:
        record = json.loads(jpath.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{jpath}: cannot read the training state ({e})") from None
    if record.get("format") != TRAIN_STATE_FORMAT or record.get("version") != TRAIN_STATE_VERSION:
        raise ValueError(f"{jpath}: not a trackpilot RL training state (version 1)")
    wpath = jpath.with_suffix(".safetensors")
    try:
        data = wpath.read_bytes()
    except OSError as e:
        raise ValueError(f"{wpath}: cannot read the training state ({e})") from None
    if sha256_bytes(data) != record.get("weights_sha256"):
        raise ValueError(f"{wpath}: sha256 does not match {jpath.name}")
    try:
        return record, load(data)
    except (SafetensorError, ValueError) as e:
        raise ValueError(f"{wpath}: not a valid safetensors file ({e})") from None


def load_train_state(model, norm, directory: str | Path) -> dict[str, Any]:
    """Restore a model (and ``VecNormalize``) from :func:`save_train_state`; returns the JSON."""
    record, tensors = read_train_state(directory)
    where = Path(directory) / "train_state.json"
    if record["algo"] != type(model).__name__.lower():
        raise ValueError(f"{where}: saved by {record['algo']}, not {type(model).__name__}")
    dev = model.device
    state = {k[len("policy.") :]: v for k, v in tensors.items() if k.startswith("policy.")}
    try:
        model.policy.load_state_dict(state, strict=True)
        for name, opt in _optimizers(model).items():
            meta = record["optimizers"][name]
            st: dict[int, dict[str, Any]] = {}
            prefix = f"optim.{name}."
            for key, v in tensors.items():
                if key.startswith(prefix):
                    idx, k = key[len(prefix) :].split(".", 1)
                    st.setdefault(int(idx), {})[k] = v.to(dev)
            for key, v in meta["scalars"].items():
                idx, k = key.split(".", 1)
                st.setdefault(int(idx), {})[k] = v
            opt.load_state_dict({"state": st, "param_groups": meta["param_groups"]})
    except (KeyError, RuntimeError, ValueError) as e:
        raise ValueError(f"{where}: does not fit this model ({e})") from None
    if "sac.log_ent_coef" in tensors and getattr(model, "log_ent_coef", None) is not None:
        with torch.no_grad():
            model.log_ent_coef.copy_(tensors["sac.log_ent_coef"].to(dev))
    for key, rms in _rms_items(norm).items():
        if f"vecnorm.{key}.mean" not in tensors:
            raise ValueError(f"{where}: no VecNormalize statistics for {key!r}")
        rms.mean = tensors[f"vecnorm.{key}.mean"].numpy().copy()
        rms.var = tensors[f"vecnorm.{key}.var"].numpy().copy()
        rms.count = float(record["vecnorm_counts"][key])
    model.num_timesteps = int(record["num_timesteps"])
    model._n_updates = int(record.get("n_updates", 0))
    return record
