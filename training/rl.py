"""Reinforcement learning on the driving env with stable-baselines3 (PPO, SAC).

``python -m training.rl --algo ppo --obs state --timesteps 300000 --out runs/rl-ppo`` trains;
``python -m training.rl eval runs/rl-ppo --tracks oval,kidney --directions ccw,cw --laps 3``
drives the saved pilot closed-loop and reports laps and off-track events.

Environment: ``trackpilot/TrackDrive-v0`` unchanged. Every episode draws its track from
the pool (``--tracks`` plus ``--generated K`` procedural tracks), its direction from
``--directions``, a random start arc length and a small random lateral / heading offset
(:class:`EpisodeSampler`, through the env's own reset options and RNG). ``n_envs`` copies
run in ``SubprocVecEnv`` workers (``DummyVecEnv`` for one), under ``VecMonitor``,
optionally ``VecNormalize``, and ``VecFrameStack`` for images; stable-baselines3 adds
``VecTransposeImage`` (HWC -> CHW) itself.

Run directory (``--out``)::

    config.json                  resolved config (fields + derived hyperparameters)
    tb/                          TensorBoard (SB3 rollout/train scalars + eval/*)
    evaluations.jsonl            one line per evaluation (per-track laps, off-track, return)
    best.json, best.safetensors  safe policy with the best mean eval return so far
    last.json, last.safetensors  safe policy at the latest evaluation / end of training
    train_state.json/.safetensors   what --resume needs (see below)

Loading a trained agent never unpickles: ``agents.sb3_pilot.load_sb3_pilot(DIR)``
rebuilds the policy from ``best.json`` and reads ``best.safetensors``. Resuming does not
unpickle either: ``train_state.*`` holds the policy and optimiser tensors (Adam moments,
SAC's entropy coefficient), ``VecNormalize`` statistics and the step counter as
safetensors + JSON; no stable-baselines3 ``.zip`` is written or read. SAC's replay
buffer is not kept (it would be gigabytes for images): a resumed SAC run refills it
with the current policy before learning again (``learning_starts`` steps).

Defaults and why (measured on the project's shared 2-core CPU machine):

- **Fixed speed 2.0 m/s, steering only.** The same cruise speed as the expert that
  records behaviour-cloning data, so RL and BC pilots are compared on the same task;
  one action dimension learns much faster than steering + throttle (``--full-control``).
- **Tracks oval + kidney, both directions, random start.** The kidney has left and
  right bends, the oval long straights; drawing both directions per episode avoids
  the left-turn bias of counter-clockwise-only driving (the recipe's augmentation
  point), and random start positions show every bend from the first episodes
  instead of only the first corner after the line. Small start offsets (0.1 m,
  0.15 rad) teach recovery.
- **Lateral penalty 1.0 (the env's default is 0.1).** The reward is progress along the
  centreline, and on a bend of radius R a car driving d metres on the inside advances
  the centreline ~d/R faster than its own speed. With the env's 0.1 weight PPO learns
  to cut every corner (after 200k steps its mean |offset| was 0.25-0.3 m and its
  worst 0.57 m on a 0.5 m half-width road, wheels on the grass, and it crashed on the
  unseen hairpin). At 1.0 the penalty's slope beats the corner-cutting gain beyond
  ~0.1 m, and the agent keeps to the centreline (worst offset ~0.1 m) and generalises.
- **PPO, 2 envs, 2048 transitions per update, batch 256, 10 epochs, lr 3e-4, gamma
  0.99, GAE 0.95, clip 0.2, no entropy bonus** (the stable-baselines3 / MuJoCo
  defaults, which work here unchanged). gamma 0.99 looks ~100 steps = 5 s = 10 m
  ahead at 2 m/s, longer than any bend. The 7-vector observation is already scaled to
  about [-1, 1], so no ``VecNormalize`` (``--normalize`` exists; its statistics travel
  with the safe checkpoint); rewards are metres per step (~0.1), returns stay small.
  Two envs use both cores (env stepping is ~80% of the time).
- **Policy MLP 64-64 tanh, initial log std -0.5** (std 0.6 on steering). With std 1
  (SB3's default) most early actions are near full lock and episodes end within a
  few metres; 0.6 still explores both ways.
- **100k steps, evaluation every 10k.** The state agent laps both tracks both ways
  after ~20k steps; the rest makes it smoother (mean offset 0.09 -> 0.05 m).
- **Images: NatureCNN on 64x64, 2 stacked frames**, rollout 1024 transitions, batch 64,
  4 epochs: the CNN update is what costs on a CPU, so fewer epochs per rollout.
- **SAC: MLP 256-256 relu, lr 3e-4, batch 256, buffer 300k (20k for images, ~1 GB), 2k
  random steps first, automatic entropy, one gradient step per transition.**
- **One torch thread in the learner** (``--torch-threads``): the env workers need the
  cores; with two threads on the shared machine a NatureCNN update was 4x slower.
- **Evaluation**: 3 laps from the start line on every (eval track, direction),
  deterministic actions, training reward weights; "best" is the highest mean return
  (episodes end at 3 laps, so among lapping policies the one closest to the centreline
  with the calmest steering wins).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from agents.sb3_pilot import (
    SB3Pilot,
    describe_policy,
    load_sb3_pilot,
    resolve_sb3_checkpoint,
    write_sb3_policy,
)
from training.rl_config import RLConfig, parse_size

__all__ = [
    "EpisodeSampler",
    "build_model",
    "build_vec_env",
    "evaluate_pilot",
    "export_policy",
    "load_train_state",
    "main",
    "make_env",
    "save_train_state",
    "train",
]

logger = logging.getLogger(__name__)

TRAIN_STATE_FORMAT = "trackpilot-rl-train-state"
TRAIN_STATE_VERSION = 1
_ACTIVATIONS = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}
# Runtime settings that may change when a run is resumed; everything else must match.
_RESUMABLE = ("timesteps", "n_envs", "device", "eval_freq", "torch_threads", "stop_when_solved")


# ============================================================================ environments
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
        import sim

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


def policy_alias(cfg: RLConfig) -> str:
    return {"state": "MlpPolicy", "image": "CnnPolicy", "both": "MultiInputPolicy"}[cfg.obs]


def build_model(cfg: RLConfig, venv, *, seed: int | None = None, tensorboard: bool = True):
    """A fresh PPO or SAC model on ``venv`` with the config's resolved hyperparameters."""
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
    import sim
    from sim.env import ENV_VERSION

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


# ============================================================================ train state
def _optimizers(model) -> dict[str, torch.optim.Optimizer]:
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
    from safetensors.torch import save

    from sim.io_utils import atomic_write_bytes, atomic_write_json, sha256_bytes

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
    from safetensors import SafetensorError
    from safetensors.torch import load

    from sim.io_utils import sha256_bytes

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


# ============================================================================ evaluation
def evaluate_pilot(
    pilot: Any,
    *,
    tracks: Sequence[str],
    directions: Sequence[str] = ("ccw", "cw"),
    laps: int = 3,
    obs_mode: str = "state",
    image_size: tuple[int, int] = (64, 64),
    fixed_speed: float | None = 2.0,
    seed: int = 0,
    max_steps: int | None = None,
    stall_s: int = 10,
    weights: Any = None,
) -> list[dict[str, Any]]:
    """Drive ``pilot`` closed-loop from the start line, ``laps`` laps per (track, direction).

    An episode ends when the laps are done, the car leaves the road (the env's
    off-track rule) or the step limit passes (default: 1.5x the time the laps take at
    the fixed speed, or at 1 m/s under full control, and at least 2400 steps), or when
    the car gained less than 0.5 m of progress in the last ``stall_s`` seconds.
    ``completed`` means all laps, consecutively, without leaving the road.
    """
    from sim.env import TrackEnv

    env = TrackEnv(
        track=tracks[0],
        obs_mode=obs_mode,
        image_size=tuple(image_size),
        fixed_speed=fixed_speed,
        max_laps=laps,
        reward_weights=weights,
    )
    results = []
    try:
        for track in tracks:
            for direction in directions:
                obs, info = env.reset(seed=seed, options={"track": track, "direction": direction})
                pilot.reset()
                speed = fixed_speed or 1.0
                limit = max_steps or max(
                    2400, math.ceil(1.5 * laps * env.track.length / speed * env.control_hz)
                )
                ret, steps, lat, progress = 0.0, 0, [], [0.0]
                terminated = stalled = False
                while steps < limit and not terminated and not stalled:
                    a = np.asarray(pilot.act(obs, info), dtype=np.float32)
                    obs, r, terminated, _, info = env.step(a[:1] if fixed_speed else a)
                    ret += float(r)
                    steps += 1
                    lat.append(abs(float(info["lateral"])))
                    progress.append(float(info["progress"]))
                    # A car that stands still or circles would only run out the clock.
                    window = stall_s * env.control_hz
                    stalled = steps >= window and progress[-1] - progress[-1 - window] < 0.5
                crashed = bool(info["off_track"] or info["flipped"])
                results.append(
                    {
                        "track": track,
                        "direction": direction,
                        "laps": int(info["lap"]),
                        "target_laps": laps,
                        "completed": bool(info["lap"] >= laps and not crashed),
                        "off_track": crashed,
                        "stalled": bool(stalled),
                        "steps": steps,
                        "time_s": round(float(info["t"]), 3),
                        "return": round(ret, 3),
                        "lap_times": [round(t, 3) for t in info["lap_times"]],
                        "mean_abs_lateral": round(float(np.mean(lat)), 4) if lat else 0.0,
                        "max_abs_lateral": round(float(np.max(lat)), 4) if lat else 0.0,
                    }
                )
    finally:
        env.close()
    return results


def _summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "mean_return": float(np.mean([r["return"] for r in results])),
        "completed": int(sum(r["completed"] for r in results)),
        "episodes": len(results),
        "solved": all(r["completed"] for r in results),
        "laps_fraction": float(
            np.mean([min(r["laps"], r["target_laps"]) / r["target_laps"] for r in results])
        ),
        "max_abs_lateral": float(max(r["max_abs_lateral"] for r in results)),
    }


def _format_results(results: list[dict[str, Any]]) -> str:
    lines = [f"{'track':<12} {'dir':<4} {'laps':>5} {'off':>4} {'time_s':>7} {'|lat| mean':>10}"]
    for r in results:
        lines.append(
            f"{r['track']:<12} {r['direction']:<4} {r['laps']:>2}/{r['target_laps']:<2} "
            f"{'yes' if r['off_track'] else 'no':>4} {r['time_s']:>7.1f} "
            f"{r['mean_abs_lateral']:>10.3f}  {'PASS' if r['completed'] else 'FAIL'}"
        )
    return "\n".join(lines)


# ============================================================================ training
def _callback(cfg: RLConfig, norm, progress: dict[str, Any], start: float):
    from stable_baselines3.common.callbacks import BaseCallback

    class EvalCheckpoint(BaseCallback):
        """Evaluate every ``eval_freq`` steps; keep best and last (safe) + the train state."""

        def __init__(self) -> None:
            super().__init__()
            self.out = Path(cfg.out)
            self.next_eval = 0
            self.last_eval = -1
            self.last_updates = -1
            self.stop = False
            self.bar = None

        def _on_training_start(self) -> None:
            from tqdm import tqdm

            n = self.model.num_timesteps
            self.next_eval = (n // cfg.eval_freq + 1) * cfg.eval_freq if cfg.eval_freq else 0
            self.bar = tqdm(total=cfg.timesteps, initial=n, unit="step", disable=None)

        def _on_rollout_start(self) -> None:
            # Between rollouts the weights are those of the latest update (evaluating in
            # _on_step would judge, and save, the weights from before it).
            n = self.model.num_timesteps
            if cfg.eval_freq and n >= self.next_eval:
                self.next_eval += cfg.eval_freq * ((n - self.next_eval) // cfg.eval_freq + 1)
                self.stop = not self.evaluate()

        def _on_step(self) -> bool:
            if self.bar is not None:
                self.bar.update(self.model.num_timesteps - self.bar.n)
            return not self.stop

        def _on_training_end(self) -> None:
            if self.bar is not None:
                self.bar.close()
            # Skip when nothing was learned since the last evaluation (e.g. a solved stop).
            if self.last_eval < 0 or self.last_updates != self.model._n_updates:
                self.evaluate()

        def evaluate(self) -> bool:
            model = self.model
            record, stats = policy_record(cfg, model, norm)
            pilot = SB3Pilot(model.policy, record, obs_norm_stats=stats, device=model.device)
            t0 = time.perf_counter()
            results = evaluate_pilot(
                pilot,
                tracks=cfg.resolved_eval_tracks,
                directions=cfg.directions,
                laps=cfg.eval_laps,
                obs_mode=cfg.env_obs_mode,
                image_size=cfg.image_size,
                fixed_speed=cfg.fixed_speed,
                seed=cfg.seed,
                weights=reward_weights(cfg),
            )
            model.policy.set_training_mode(True)
            progress["eval_s"] = progress.get("eval_s", 0.0) + time.perf_counter() - t0
            summ = _summary(results)
            n = int(model.num_timesteps)
            elapsed = progress["elapsed_s"] + time.perf_counter() - start
            line = {
                "timesteps": n,
                "elapsed_s": round(elapsed, 1),
                "eval_s": round(time.perf_counter() - t0, 2),
                **summ,
                "results": results,
            }
            with open(self.out / "evaluations.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(line) + "\n")
            for key in ("mean_return", "laps_fraction", "completed"):
                self.logger.record(f"eval/{key}", summ[key])
            self.logger.dump(n)
            extra = {"eval": {"timesteps": n, **summ}}
            best = progress.get("best_score")
            if best is None or summ["mean_return"] > best:
                progress["best_score"] = summ["mean_return"]
                progress["best_timesteps"] = n
                export_policy(cfg, model, norm, self.out, "best", extra)
            if summ["solved"] and progress.get("first_solved") is None:
                progress["first_solved"] = {"timesteps": n, "elapsed_s": round(elapsed, 1)}
            export_policy(cfg, model, norm, self.out, "last", extra)
            save_train_state(model, norm, self.out, {**progress, "elapsed_s": elapsed})
            self.last_eval = n
            self.last_updates = model._n_updates
            logger.info(
                "step %d (%.0f s): eval return %.1f, %d/%d episodes completed %d laps%s",
                n,
                elapsed,
                summ["mean_return"],
                summ["completed"],
                summ["episodes"],
                cfg.eval_laps,
                " -- solved" if summ["solved"] else "",
            )
            if summ["solved"] and cfg.stop_when_solved:
                logger.info("every eval episode completed its laps: stopping (--stop-when-solved)")
                return False
            return True

    return EvalCheckpoint()


def _check_tracks(names: Sequence[str]) -> None:
    """Load every track once here: a bad name fails with its message, not in a worker."""
    from tracks import load_track

    for name in dict.fromkeys(names):
        load_track(name)


def train(cfg: RLConfig, *, resume: bool = False) -> dict[str, Any]:
    """Train (or resume) a run; returns a summary. Writes into ``cfg.out``."""
    from sim.io_utils import atomic_write_json

    if not cfg.out:
        raise ValueError("an output directory (--out) is required")
    out = Path(cfg.out)
    state_path = out / "train_state.json"
    progress: dict[str, Any] = {"elapsed_s": 0.0, "best_score": None, "first_solved": None}
    prior = None
    if resume:
        prior, _ = read_train_state(out)
        progress.update({k: prior.get(k) for k in ("best_score", "best_timesteps", "first_solved")})
        progress["elapsed_s"] = float(prior.get("elapsed_s", 0.0))
    elif state_path.exists():
        raise ValueError(f"{out} already holds a run: pass --resume or choose another --out")
    _check_tracks((*cfg.track_pool, *cfg.resolved_eval_tracks))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", cfg.resolved())

    torch.set_num_threads(cfg.resolved_torch_threads)
    done = int(prior["num_timesteps"]) if prior else 0
    venv, norm = build_vec_env(cfg)
    try:
        # A resumed run reseeds with the step count so it does not replay its first episodes.
        model = build_model(cfg, venv, seed=cfg.seed + done)
        if resume:
            load_train_state(model, norm, out)
            logger.info("resuming %s at step %d", out, model.num_timesteps)
        remaining = cfg.timesteps - model.num_timesteps
        start = time.perf_counter()
        if remaining > 0:
            callback = _callback(cfg, norm, progress, start)
            try:
                model.learn(
                    remaining,
                    callback=callback,
                    reset_num_timesteps=not resume,
                    tb_log_name=cfg.algo,
                )
            except KeyboardInterrupt:
                logger.warning("interrupted: saving last and the training state for --resume")
                export_policy(cfg, model, norm, out, "last")
                save_train_state(
                    model,
                    norm,
                    out,
                    {**progress, "elapsed_s": progress["elapsed_s"] + time.perf_counter() - start},
                )
                raise
        else:
            logger.info("%s already has %d >= %d steps", out, model.num_timesteps, cfg.timesteps)
        wall = time.perf_counter() - start
        learn_s = wall - progress.get("eval_s", 0.0)
        return {
            "out": str(out),
            "timesteps": int(model.num_timesteps),
            "wall_s": round(wall, 1),
            "eval_s": round(progress.get("eval_s", 0.0), 1),
            # Training throughput: env steps per second of wall time outside evaluations.
            "steps_per_s": round((model.num_timesteps - done) / learn_s, 1)
            if learn_s > 0
            else None,
            "best_score": progress.get("best_score"),
            "best_timesteps": progress.get("best_timesteps"),
            "first_solved": progress.get("first_solved"),
        }
    finally:
        venv.close()


# ============================================================================ command line
def _csv(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in _csv(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def _size(text: str) -> tuple[int, int]:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _train_parser() -> argparse.ArgumentParser:
    S = argparse.SUPPRESS
    ap = argparse.ArgumentParser(
        prog="python -m training.rl",
        description="Train a PPO/SAC pilot on trackpilot/TrackDrive-v0 "
        "(`python -m training.rl eval DIR ...` evaluates one).",
        argument_default=S,
    )
    ap.add_argument("--out", help="run directory (required)")
    ap.add_argument("--config", dest="config_file", help="start from this config.json")
    ap.add_argument("--resume", action="store_true", help="continue the run in --out")
    ap.add_argument("--algo", choices=("ppo", "sac"))
    ap.add_argument("--obs", choices=("state", "image", "both"))
    ap.add_argument("--timesteps", type=int, help="total env steps (default 300000)")
    ap.add_argument("--tracks", type=_csv, help="training tracks, comma separated")
    ap.add_argument("--directions", type=_csv, help="ccw,cw (default both)")
    ap.add_argument("--generated", type=int, help="add K generated tracks to the pool")
    speed = ap.add_mutually_exclusive_group()
    speed.add_argument("--fixed-speed", type=float, help="cruise speed m/s (default 2.0)")
    speed.add_argument("--full-control", action="store_true", help="steering and throttle")
    ap.add_argument("--n-envs", type=int, help="parallel envs (default 2)")
    ap.add_argument("--frame-stack", type=int, help="stacked frames (default 1 state, 2 images)")
    ap.add_argument("--image-size", type=_size, help="HxW (default 64x64)")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--torch-threads", type=int)
    ap.add_argument("--eval-freq", type=int, help="steps between evaluations (default 20000)")
    ap.add_argument("--eval-laps", type=int, help="laps per evaluation episode (default 3)")
    ap.add_argument("--eval-tracks", type=_csv, help="default: the training tracks")
    ap.add_argument("--stop-when-solved", action="store_true")
    ap.add_argument("--lateral-penalty", type=float, help="per s x (lat/half width)^2 (1.0)")
    ap.add_argument("--max-episode-steps", type=int)
    ap.add_argument("--no-random-start", dest="random_start", action="store_false")
    ap.add_argument("--lateral-noise", type=float)
    ap.add_argument("--heading-noise", type=float)
    ap.add_argument("--domain-randomization", action="store_true")
    ap.add_argument("--lr", dest="learning_rate", type=float)
    ap.add_argument("--gamma", type=float)
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--n-steps", type=int, help="PPO rollout steps per env")
    ap.add_argument("--n-epochs", type=int)
    ap.add_argument("--gae-lambda", type=float)
    ap.add_argument("--clip-range", type=float)
    ap.add_argument("--ent-coef", type=float)
    ap.add_argument("--log-std-init", type=float)
    ap.add_argument("--net-arch", type=_ints, help="e.g. 64,64")
    ap.add_argument("--activation", choices=("tanh", "relu"))
    ap.add_argument("--buffer-size", type=int)
    ap.add_argument("--learning-starts", type=int)
    ap.add_argument("--normalize", action=argparse.BooleanOptionalAction)
    return ap


def _config_from_args(ns: argparse.Namespace) -> tuple[RLConfig, bool]:
    given = dict(vars(ns))
    resume = bool(given.pop("resume", False))
    config_file = given.pop("config_file", None)
    if given.pop("full_control", False):
        given["fixed_speed"] = None
    known = {f.name for f in fields(RLConfig)}
    unknown = set(given) - known
    if unknown:  # pragma: no cover - parser and dataclass out of sync
        raise ValueError(f"internal: flags without config fields {sorted(unknown)}")
    if resume:
        if "out" not in given:
            raise ValueError("--resume needs --out DIR (the run to continue)")
        saved = RLConfig.load(Path(given["out"]) / "config.json")
        changed = [
            k for k, v in given.items() if k not in (*_RESUMABLE, "out") and getattr(saved, k) != v
        ]
        if changed:
            raise ValueError(
                f"--resume continues the saved config; cannot change {sorted(changed)} "
                f"(only {', '.join(_RESUMABLE)})"
            )
        return replace(saved, **given), True
    base = RLConfig.load(config_file) if config_file else RLConfig()
    cfg = replace(base, **given)
    if not cfg.out:
        raise ValueError("--out DIR is required")
    return cfg, False


def _main_train(argv: list[str]) -> int:
    ns = _train_parser().parse_args(argv)
    try:
        cfg, resume = _config_from_args(ns)
        summary = train(cfg, resume=resume)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; continue with --resume", file=sys.stderr)
        return 130
    print(json.dumps(summary, indent=2))
    print(f"wrote {summary['out']} (best.json/.safetensors, last.*, tb/, evaluations.jsonl)")
    return 0


def _eval_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m training.rl eval",
        description="Drive a saved (safe-loaded) SB3 pilot closed-loop and report laps.",
    )
    ap.add_argument("checkpoint", help="run directory, policy .json or .safetensors")
    ap.add_argument("--which", default="best", choices=("best", "last"), help="in a run dir")
    ap.add_argument("--tracks", type=_csv, default=None, help="default: the run's eval tracks")
    ap.add_argument("--directions", type=_csv, default=("ccw", "cw"))
    ap.add_argument("--laps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None, help="write results here (default: next to it)")
    return ap


def run_eval(
    checkpoint: str | Path,
    *,
    tracks: Sequence[str] | None = None,
    directions: Sequence[str] = ("ccw", "cw"),
    laps: int = 3,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, Any]:
    """Load a pilot the safe way and evaluate it; returns ``{checkpoint, summary, results}``."""
    path = resolve_sb3_checkpoint(checkpoint)
    pilot = load_sb3_pilot(path, device=device)
    rec = pilot.record
    cfg = rec.get("config") or {}
    tracks = tuple(tracks or (cfg.get("resolved") or {}).get("eval_tracks") or ("oval",))
    for d in directions:
        if d not in ("ccw", "cw"):
            raise ValueError(f"directions must be ccw and/or cw, got {d!r}")
    if laps < 1:
        raise ValueError(f"laps must be >= 1, got {laps}")
    image = rec.get("image_size") or [64, 64]
    results = evaluate_pilot(
        pilot,
        tracks=tracks,
        directions=directions,
        laps=laps,
        obs_mode=pilot.obs_mode,
        image_size=tuple(image),
        fixed_speed=pilot.fixed_speed,
        seed=seed,
    )
    return {
        "checkpoint": str(path),
        "checkpoint_sha256": pilot.sha256,
        "pilot": pilot.metadata(),
        "summary": _summary(results),
        "results": results,
    }


def _main_eval(argv: list[str]) -> int:
    from sim.io_utils import atomic_write_json

    a = _eval_parser().parse_args(argv)
    try:
        target = Path(a.checkpoint)
        if target.is_dir():
            target = target / f"{a.which}.json"
        report = run_eval(
            target,
            tracks=a.tracks,
            directions=a.directions,
            laps=a.laps,
            seed=a.seed,
            device=a.device,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(_format_results(report["results"]))
    s = report["summary"]
    print(f"{s['completed']}/{s['episodes']} completed {a.laps} laps without leaving the road")
    ckpt = Path(report["checkpoint"])
    dest = Path(a.json) if a.json else ckpt.with_name(f"eval-{ckpt.stem}.json")
    atomic_write_json(dest, report)
    print(f"wrote {dest}")
    return 0 if s["solved"] else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m training.rl [train] ...`` or ``python -m training.rl eval DIR ...``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args and args[0] == "eval":
        return _main_eval(args[1:])
    if args and args[0] == "train":
        args = args[1:]
    return _main_train(args)


if __name__ == "__main__":
    raise SystemExit(main())
