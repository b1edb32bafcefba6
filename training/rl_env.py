"""The RL training environments: ``trackpilot/TrackDrive-v0`` with an episode sampler, in
a (subprocess) vector env under ``VecMonitor``, optionally ``VecNormalize`` and
``VecFrameStack``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym

import sim
from tracks import load_track
from training.rl_config import RLConfig

__all__ = [
    "EpisodeSampler",
    "build_vec_env",
    "check_tracks",
    "env_kwargs",
    "make_env",
    "reward_weights",
]


class EpisodeSampler(gym.Wrapper):
    """Draws every episode's track, direction and start pose through the env's reset options.

    The draws use the env's own ``np_random`` (``track="random"`` picks from the env's
    ``tracks`` pool), so a seeded vector env is reproducible. Options passed to
    ``reset`` explicitly win over the sampled ones.
    """

    def __init__(
        self,
        env: gym.Env,
        *,
        directions: Sequence[str] = ("ccw", "cw"),
        random_start: bool = True,
        lateral_noise: float = 0.0,
        heading_noise: float = 0.0,
    ) -> None:
        super().__init__(env)
        self.directions = tuple(directions)
        self.options = {
            "track": "random",
            "direction": self.directions[0] if len(self.directions) == 1 else "random",
            "start": "random" if random_start else "line",
            "lateral_noise": float(lateral_noise),
            "heading_noise": float(heading_noise),
        }

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        return self.env.reset(seed=seed, options={**self.options, **dict(options or {})})


def reward_weights(cfg: RLConfig):
    """The env's reward weights with the config's lateral penalty."""
    # sim.env loads PyBullet (seconds): imported where an env is made, not with this module.
    from sim.env import RewardWeights

    return RewardWeights(lateral=cfg.lateral_penalty)


def env_kwargs(cfg: RLConfig) -> dict[str, Any]:
    """``TrackEnv`` keyword arguments of a config (shared by training and evaluation envs)."""
    pool = cfg.track_pool
    return {
        "reward_weights": reward_weights(cfg),
        "track": pool[0],
        "tracks": pool,
        "obs_mode": cfg.env_obs_mode,
        "image_size": tuple(cfg.image_size),
        "fixed_speed": cfg.fixed_speed,
        "domain_randomization": cfg.domain_randomization,
    }


def make_env(cfg: RLConfig) -> Callable[[], gym.Env]:
    """A picklable factory of one training env (registered id, time limit, sampler)."""

    def _make() -> gym.Env:
        env = gym.make(sim.ENV_ID, max_episode_steps=cfg.max_episode_steps, **env_kwargs(cfg))
        return EpisodeSampler(
            env,
            directions=cfg.directions,
            random_start=cfg.random_start,
            lateral_noise=cfg.lateral_noise,
            heading_noise=cfg.heading_noise,
        )

    return _make


def build_vec_env(cfg: RLConfig, n_envs: int | None = None):
    """``(vec_env, vec_normalize_or_None)``: Subproc/Dummy -> Monitor -> [Normalize] -> [Stack]."""
    # stable-baselines3 takes seconds to import: only code that builds envs pays for it.
    from stable_baselines3.common.vec_env import (
        DummyVecEnv,
        SubprocVecEnv,
        VecFrameStack,
        VecMonitor,
        VecNormalize,
    )

    n = n_envs or cfg.n_envs
    fns = [make_env(cfg) for _ in range(n)]
    venv = SubprocVecEnv(fns) if n > 1 else DummyVecEnv(fns)
    venv = VecMonitor(venv)
    norm = None
    hp = cfg.hyperparams
    if hp["normalize"]:
        # Only the state vector is normalised; images stay uint8 for the CNN.
        norm = VecNormalize(
            venv,
            norm_obs=cfg.obs != "image",
            norm_reward=True,
            gamma=hp["gamma"],
            norm_obs_keys=["state"] if cfg.obs == "both" else None,
        )
        venv = norm
    if cfg.resolved_frame_stack > 1:
        venv = VecFrameStack(venv, cfg.resolved_frame_stack)
    return venv, norm


def check_tracks(names: Sequence[str]) -> None:
    """Load every track once here: a bad name fails with its message, not in a worker."""
    for name in dict.fromkeys(names):
        load_track(name)
