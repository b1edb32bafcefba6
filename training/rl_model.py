"""The RL model: a stable-baselines3 PPO or SAC with the config's hyperparameters, and its
export as a safe policy checkpoint (``NAME.safetensors`` + ``NAME.json``) that
:func:`agents.sb3_pilot.load_sb3_pilot` reads without unpickling."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import sim
from agents.sb3_pilot import describe_policy, write_sb3_policy
from training.rl_config import RLConfig
from training.rl_env import env_kwargs

__all__ = ["build_model", "export_policy", "policy_alias", "policy_record"]

_ACTIVATIONS = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}


def policy_alias(cfg: RLConfig) -> str:
    return {"state": "MlpPolicy", "image": "CnnPolicy", "both": "MultiInputPolicy"}[cfg.obs]


def build_model(cfg: RLConfig, venv, *, seed: int | None = None, tensorboard: bool = True):
    """A fresh PPO or SAC model on ``venv`` with the config's resolved hyperparameters."""
    # stable-baselines3 takes seconds to import: only code that builds a model pays for it.
    from stable_baselines3 import PPO, SAC

    hp = cfg.hyperparams
    policy_kwargs = {
        "net_arch": list(hp["net_arch"]),
        "activation_fn": _ACTIVATIONS[hp["activation"]],
        "log_std_init": float(hp["log_std_init"]),
    }
    common = {
        "learning_rate": hp["learning_rate"],
        "gamma": hp["gamma"],
        "batch_size": hp["batch_size"],
        "policy_kwargs": policy_kwargs,
        "tensorboard_log": str(Path(cfg.out) / "tb") if tensorboard and cfg.out else None,
        "seed": cfg.seed if seed is None else seed,
        "device": cfg.resolved_device,
        "verbose": 0,
    }
    if cfg.algo == "ppo":
        return PPO(
            policy_alias(cfg),
            venv,
            n_steps=hp["n_steps"],
            n_epochs=hp["n_epochs"],
            gae_lambda=hp["gae_lambda"],
            clip_range=hp["clip_range"],
            ent_coef=hp["ent_coef"],
            **common,
        )
    return SAC(
        policy_alias(cfg),
        venv,
        buffer_size=hp["buffer_size"],
        learning_starts=hp["learning_starts"],
        tau=0.005,
        train_freq=1,
        gradient_steps=-1,  # one gradient step per collected transition, whatever n_envs
        ent_coef="auto",
        **common,
    )


def _obs_norm(cfg: RLConfig, norm) -> tuple[dict | None, tuple[np.ndarray, np.ndarray] | None]:
    if norm is None or not norm.norm_obs:
        return None, None
    rms = norm.obs_rms["state"] if isinstance(norm.obs_rms, dict) else norm.obs_rms
    desc = {
        "keys": ["state"] if cfg.obs == "both" else None,
        "clip": float(norm.clip_obs),
        "epsilon": float(norm.epsilon),
    }
    return desc, (rms.mean.copy(), rms.var.copy())


def _env_observation_space(cfg: RLConfig) -> gym.Space:
    # sim.env loads PyBullet (seconds): imported where an env is made, not with this module.
    from sim.env import TrackEnv

    env = TrackEnv(**{**env_kwargs(cfg), "domain_randomization": False})
    try:
        return env.observation_space
    finally:
        env.close()


def policy_record(cfg: RLConfig, model, norm) -> tuple[dict, tuple | None]:
    """The safe JSON record of the live policy and its normalisation stats."""
    desc, stats = _obs_norm(cfg, norm)
    record = describe_policy(
        model.policy,
        algo=cfg.algo,
        obs_mode=cfg.env_obs_mode,
        observation_space=_env_observation_space(cfg),
        frame_stack=cfg.resolved_frame_stack,
        fixed_speed=cfg.fixed_speed,
        obs_norm=desc,
    )
    return record, stats


def export_policy(
    cfg: RLConfig, model, norm, directory: str | Path, name: str, extra: dict | None = None
) -> Path:
    """Write the policy as ``NAME.safetensors`` + ``NAME.json`` (the safe, loadable format)."""
    from sim.env import ENV_VERSION  # PyBullet: see _env_observation_space

    record, stats = policy_record(cfg, model, norm)
    info = {
        "env_id": sim.ENV_ID,
        "env_version": ENV_VERSION,
        "image_size": list(cfg.image_size) if cfg.obs != "state" else None,
        "num_timesteps": int(model.num_timesteps),
        "config": cfg.resolved(),
        **dict(extra or {}),
    }
    return write_sb3_policy(directory, name, record, model.policy, obs_norm_stats=stats, extra=info)
