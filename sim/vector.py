"""Parallel envs in subprocesses: a Gymnasium ``AsyncVectorEnv`` with each
worker pinned to its own CPU.

Pinning matters on small machines: with two workers and the main process on
two CPUs, the scheduler otherwise keeps moving the workers, and a lock-step
vector env waits for the slower one every step. Measured with
``python -m sim.bench`` on a 2-vCPU machine at 96x96: 2 unpinned workers gave
0.87-1.44x one env from run to run, pinned ones 1.42x, pinned ones with
two info keys 1.48x (README, "Measured figures").

    from sim.vector import make_vector_env
    venv = make_vector_env(2, image_size=(96, 96), fixed_speed=2.0)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import gymnasium as gym

from sim.pool import prepare_worker, spawning, stop_processes


def worker_cpus(n: int) -> list[int | None]:
    """CPU for worker ``i`` (round robin over the CPUs this process may use),
    or ``None`` each where the platform cannot pin."""
    if n < 1:
        raise ValueError(f"need at least one worker, got {n}")
    if not hasattr(os, "sched_getaffinity"):
        return [None] * n
    cpus = sorted(os.sched_getaffinity(0))
    return [cpus[i % len(cpus)] for i in range(n)]


def env_thunk(
    cpu: int | None = None, info_keys: tuple[str, ...] | None = None, **env_kwargs: Any
) -> Callable[[], gym.Env]:
    """A picklable factory of ``trackpilot/TrackDrive-v0`` for a worker process,
    which first pins the worker to ``cpu`` (when given); with ``info_keys``
    the env's infos keep only those keys (``InfoKeys``)."""
    return _Thunk(cpu, env_kwargs, None if info_keys is None else tuple(info_keys))


def pin_worker(cpu: int | None, parent_pid: int) -> None:
    """Pin the calling process to ``cpu``, unless it is ``parent_pid`` itself
    (``AsyncVectorEnv`` calls the first factory in the parent too, to read the
    spaces; pinning the parent would squeeze everything onto one CPU)."""
    if cpu is not None and os.getpid() != parent_pid:
        os.sched_setaffinity(0, {cpu})


class InfoKeys(gym.Wrapper):
    """Keep only ``keys`` of the ``info`` dicts (reset and step).

    A vector env merges every info key of every env into batched arrays in the
    main process while the workers wait; the full step info (19 keys, one
    nested) costs ~30 us a step for two envs there, plus pickling. Missing keys
    raise ``KeyError`` at reset, not silently."""

    def __init__(self, env: gym.Env, keys: tuple[str, ...]) -> None:
        super().__init__(env)
        self.keys = tuple(keys)

    def _filter(self, info: dict) -> dict:
        return {k: info[k] for k in self.keys}

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return obs, self._filter(info)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, self._filter(info)


class _Thunk:
    def __init__(
        self, cpu: int | None, env_kwargs: dict, info_keys: tuple[str, ...] | None = None
    ) -> None:
        self.cpu = cpu
        self.env_kwargs = env_kwargs
        self.info_keys = info_keys
        self.parent_pid = os.getpid()

    def __call__(self) -> gym.Env:
        import sim

        if os.getpid() != self.parent_pid:  # a worker: ignores Ctrl-C, dies with the parent
            prepare_worker(self.parent_pid)
        pin_worker(self.cpu, self.parent_pid)
        env = gym.make(sim.ENV_ID, **self.env_kwargs)
        return env if self.info_keys is None else InfoKeys(env, self.info_keys)


def make_vector_env(
    n: int,
    *,
    pin: bool = True,
    info_keys: tuple[str, ...] | None = None,
    vector_kwargs: dict | None = None,
    **env_kwargs: Any,
) -> gym.vector.AsyncVectorEnv:
    """``n`` envs (``env_kwargs`` as for ``TrackEnv``) in an ``AsyncVectorEnv``,
    worker ``i`` pinned to CPU ``i`` (round robin) unless ``pin=False``. With
    ``info_keys`` the infos carry only those keys (cheaper to batch).
    ``vector_kwargs`` go to ``AsyncVectorEnv`` (e.g. ``copy=False``)."""
    cpus = worker_cpus(n) if pin else [None] * n
    with spawning():  # workers born deaf to Ctrl-C until their factory prepares them
        return gym.vector.AsyncVectorEnv(
            [env_thunk(c, info_keys, **env_kwargs) for c in cpus], **(vector_kwargs or {})
        )


def close_vector_env(venv: gym.vector.AsyncVectorEnv, *, interrupted: bool = False) -> None:
    """Close ``venv``. ``interrupted`` (Ctrl-C, perhaps mid-step): stop the workers at once,
    every wait bounded, and never read the pipes (``close(terminate=True)`` would wait
    for the step in flight, from workers it has just killed)."""
    if not interrupted:
        venv.close()
        return
    stop_processes(venv.processes)
    for pipe in venv.parent_pipes:
        if pipe is not None:
            pipe.close()
    venv.closed = True
