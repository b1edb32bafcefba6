"""The RL training environments: ``trackpilot/TrackDrive-v0`` with an episode sampler, in
a (subprocess) vector env under ``VecMonitor``, optionally ``VecNormalize`` and
``VecFrameStack``.

The ``SubprocVecEnv`` workers are spawned (never forked, and not from a fork server, so
that this process is their parent) and prepared like the pool's (:func:`sim.pool.
prepare_worker`): they ignore SIGINT and die with this process. :func:`close_vec_env`
closes a vector env with every wait bounded (``SubprocVecEnv.close`` waits for ever on a
worker that does not answer)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym

import sim
from sim.pool import prepare_worker, spawning, stop_processes
from tracks import load_track
from training.rl_config import RLConfig

__all__ = [
    "EpisodeSampler",
    "build_vec_env",
    "check_tracks",
    "close_vec_env",
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
    if n > 1:
        with spawning():
            venv = SubprocVecEnv([_WorkerEnv(fn) for fn in fns], start_method="spawn")
    else:
        venv = DummyVecEnv(fns)
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


class _WorkerEnv:
    """An env factory for a ``SubprocVecEnv`` worker: first :func:`prepare_worker`."""

    def __init__(self, make: Callable[[], gym.Env]) -> None:
        self.make = make
        self.parent_pid = os.getpid()

    def __call__(self) -> gym.Env:
        if os.getpid() != self.parent_pid:
            prepare_worker(self.parent_pid)
        return self.make()


def _subproc(venv: Any) -> Any:
    """The ``SubprocVecEnv`` under ``venv``'s wrappers, or None."""
    # Instance attributes only: a wrapper's getattr forwards to the env it wraps.
    while venv is not None and "processes" not in vars(venv):
        venv = vars(venv).get("venv")
    return venv


def close_vec_env(venv: Any, *, graceful: bool = True, timeout_s: float = 10.0) -> None:
    """Close ``venv`` (and its wrappers) without waiting for ever on a worker.

    ``graceful``: collect a step in flight and ask the workers to close their envs,
    within ``timeout_s``; either way the workers still alive then are stopped (SIGTERM,
    then SIGKILL). Not graceful (after Ctrl-C: a pipe may hold half a message): the
    workers are stopped at once.
    """
    sub = _subproc(venv)
    if sub is not None and not sub.closed:
        if graceful:
            deadline = time.monotonic() + timeout_s
            try:
                if sub.waiting:
                    for remote in sub.remotes:
                        if not remote.poll(max(0.0, deadline - time.monotonic())):
                            raise TimeoutError
                        remote.recv()
                    sub.waiting = False
                for remote in sub.remotes:
                    remote.send(("close", None))
                for p in sub.processes:
                    p.join(max(0.0, deadline - time.monotonic()))
            except (OSError, EOFError, TimeoutError):
                pass
        stop_processes(sub.processes)
        for remote in sub.remotes:
            with contextlib.suppress(OSError):
                remote.close()
        sub.closed = True
        sub.waiting = False
    venv.close()  # the wrappers' own close; the closed SubprocVecEnv returns at once


def check_tracks(names: Sequence[str]) -> None:
    """Load every track once here: a bad name fails with its message, not in a worker."""
    for name in dict.fromkeys(names):
        load_track(name)
