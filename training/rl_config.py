"""The reinforcement-learning configuration (one frozen dataclass, JSON round trip).

Every run writes its resolved config to ``RUN_DIR/config.json`` (the fields plus the
``resolved`` hyperparameters); ``python -m training.rl --config RUN_DIR/config.json``
reproduces the run from that file alone.

Hyperparameter fields left at ``None`` take the tuned default for the algorithm and
observation mode (:attr:`RLConfig.hyperparams`); see ``training/rl.py`` for why each
default is what it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from tracks.common import DIRECTIONS, parse_size
from tracks.fileio import read_json
from training.config import json_dict

# parse_size (the ``HxW`` syntax) is defined in tracks.common and kept importable here.
__all__ = ["RL_CONFIG_VERSION", "RLConfig", "parse_size"]

RL_CONFIG_VERSION = 1
ALGOS = ("ppo", "sac")
OBS = ("state", "image", "both")
ENV_OBS_MODE = {"state": "state", "image": "image", "both": "image+state"}
DEVICES = ("auto", "cpu", "cuda")
ACTIVATIONS = ("tanh", "relu")


@dataclass(frozen=True)
class RLConfig:
    """Everything that defines an RL run."""

    # --- run
    out: str = ""  # run directory: config, checkpoints, TensorBoard logs, evaluations
    algo: str = field(default="ppo", metadata={"choices": ALGOS})  # ppo | sac
    obs: str = field(
        default="state",
        metadata={
            "choices": OBS,
            "help": "state (7-vector) | image (camera) | both (dict of the two)",
        },
    )
    timesteps: int = 100_000  # total env steps (summed over the parallel envs)
    seed: int = 0  # seeds the model, the envs and the generated tracks
    device: str = field(
        default="auto",
        metadata={
            "choices": DEVICES,
            "help": "auto: cuda for image policies when available, else cpu",
        },
    )
    n_envs: int = 2  # parallel envs (SubprocVecEnv when > 1)
    torch_threads: int | None = None  # torch intra-op threads in the learner; none: 1

    # --- environment and curriculum (sampled per episode)
    tracks: tuple[str, ...] = ("oval", "kidney")  # training pool
    directions: tuple[str, ...] = DIRECTIONS  # driving directions drawn per episode
    generated: int = 0  # add this many procedurally generated tracks to the pool
    fixed_speed: float | None = 2.0  # m/s cruise control, steering-only action; none: full
    image_size: tuple[int, int] = (64, 64)  # (H, W) camera frames for image / both
    frame_stack: int | None = None  # stacked frames; none: 1 for state, 2 for image / both
    random_start: bool = True  # start each episode at a random arc length
    lateral_noise: float = 0.1  # m, uniform start offset
    heading_noise: float = 0.15  # rad, uniform start heading error
    # See training/rl.py for why the weight is 1.0.
    lateral_penalty: float = field(
        default=1.0,
        metadata={
            "help": "weight of the env's lateral-offset penalty in training (per second, "
            "times (lateral / half width)^2); the env's own default is 0.1"
        },
    )
    max_episode_steps: int = 2400  # time limit (120 s at 20 Hz), a truncation
    domain_randomization: bool = False  # colours, light, camera pose per episode

    # --- evaluation and checkpoints
    eval_freq: int = 10_000  # env steps between evaluations (0: only at the end)
    eval_laps: int = 3  # laps asked in each evaluation episode
    eval_tracks: tuple[str, ...] = ()  # empty: the training tracks (not the generated ones)
    stop_when_solved: bool = False  # stop once every eval episode completes its laps

    # --- hyperparameters (None, "none" on the command line: the tuned default for algo and
    # obs, see ``hyperparams``; config.json records the values used)
    learning_rate: float | None = None  # optimiser step size; none: tuned
    gamma: float | None = None  # discount factor; none: tuned
    batch_size: int | None = None  # transitions per gradient step; none: tuned
    n_steps: int | None = None  # PPO: rollout steps per env between updates; none: tuned
    n_epochs: int | None = None  # PPO: epochs per update; none: tuned
    gae_lambda: float | None = None  # PPO: GAE lambda; none: tuned
    clip_range: float | None = None  # PPO: clip range; none: tuned
    ent_coef: float | None = None  # PPO: entropy bonus (SAC tunes its own); none: tuned
    log_std_init: float | None = None  # initial log std of the Gaussian policy; none: tuned
    net_arch: tuple[int, ...] | None = None  # hidden layers of policy and value heads; none: tuned
    activation: str | None = field(default=None, metadata={"choices": ACTIVATIONS})  # none: tuned
    buffer_size: int | None = None  # SAC replay buffer (transitions); none: tuned
    learning_starts: int | None = None  # SAC: random steps before learning; none: tuned
    normalize: bool | None = None  # VecNormalize obs (state part) and rewards; none: tuned

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            raise ValueError(f"algo must be one of {ALGOS}, got {self.algo!r}")
        if self.obs not in OBS:
            raise ValueError(f"obs must be one of {OBS}, got {self.obs!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {self.timesteps}")
        if not 1 <= self.n_envs <= 64:
            raise ValueError(f"n_envs must be in 1..64, got {self.n_envs}")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ValueError(f"torch_threads must be >= 1, got {self.torch_threads}")
        if not self.tracks and self.generated == 0:
            raise ValueError("give at least one training track or --generated K")
        if not self.directions or any(d not in DIRECTIONS for d in self.directions):
            raise ValueError(f"directions must be a non-empty subset of {DIRECTIONS}")
        if self.generated < 0:
            raise ValueError(f"generated must be >= 0, got {self.generated}")
        if self.fixed_speed is not None and not 0 < self.fixed_speed <= 5.0:
            raise ValueError(f"fixed_speed must be in (0, 5] m/s, got {self.fixed_speed}")
        h, w = self.image_size
        if self.obs != "state" and (h < 36 or w < 36 or h > 512 or w > 512):
            # NatureCNN's 8/4/3 convolutions need at least 36 pixels a side.
            raise ValueError(f"image_size must be 36..512 pixels a side, got {self.image_size}")
        if self.frame_stack is not None and not 1 <= self.frame_stack <= 16:
            raise ValueError(f"frame_stack must be in 1..16, got {self.frame_stack}")
        if not (math.isfinite(self.lateral_penalty) and self.lateral_penalty >= 0):
            raise ValueError(f"lateral_penalty must be >= 0, got {self.lateral_penalty}")
        if self.lateral_noise < 0 or self.heading_noise < 0:
            raise ValueError("lateral_noise and heading_noise must be >= 0")
        if self.max_episode_steps < 10:
            raise ValueError(f"max_episode_steps must be >= 10, got {self.max_episode_steps}")
        if self.eval_freq < 0 or self.eval_laps < 1:
            raise ValueError("eval_freq must be >= 0 and eval_laps >= 1")
        for name in ("learning_rate", "gamma", "gae_lambda", "clip_range"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and 0 < v <= 1):
                raise ValueError(f"{name} must be in (0, 1], got {v}")
        for name in ("batch_size", "n_steps", "n_epochs", "buffer_size"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        if self.learning_starts is not None and self.learning_starts < 0:
            raise ValueError(f"learning_starts must be >= 0, got {self.learning_starts}")
        if self.ent_coef is not None and not (math.isfinite(self.ent_coef) and self.ent_coef >= 0):
            raise ValueError(f"ent_coef must be >= 0, got {self.ent_coef}")
        if self.net_arch is not None and (
            not self.net_arch or any(int(n) < 1 for n in self.net_arch)
        ):
            raise ValueError(f"net_arch must be positive layer widths, got {self.net_arch}")
        if self.activation is not None and self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.algo == "ppo" and self.n_envs * self.resolved_n_steps < 2:
            raise ValueError("PPO needs n_envs * n_steps >= 2")

    # ------------------------------------------------------------- derived values
    @property
    def env_obs_mode(self) -> str:
        """The env's ``obs_mode`` for this config's ``obs``."""
        return ENV_OBS_MODE[self.obs]

    @property
    def resolved_frame_stack(self) -> int:
        # The state vector already carries speed and the current steering; a single
        # image does not show how the car is moving, two frames do.
        if self.frame_stack is not None:
            return self.frame_stack
        return 1 if self.obs == "state" else 2

    @property
    def resolved_n_steps(self) -> int:
        if self.n_steps is not None:
            return self.n_steps
        return self._defaults()["n_steps"] or 1

    @property
    def generated_tracks(self) -> tuple[str, ...]:
        """``gen:<seed>`` names of the generated tracks, fixed by ``seed`` (reproducible)."""
        base = 10_000 + 1_000 * self.seed
        return tuple(f"gen:{base + i}" for i in range(self.generated))

    @property
    def track_pool(self) -> tuple[str, ...]:
        return tuple(self.tracks) + self.generated_tracks

    @property
    def resolved_eval_tracks(self) -> tuple[str, ...]:
        if self.eval_tracks:
            return tuple(self.eval_tracks)
        return tuple(self.tracks) or self.generated_tracks[:2]

    @property
    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        # Small MLPs run faster on the CPU than through CUDA launches.
        return "cuda" if self.obs != "state" and torch.cuda.is_available() else "cpu"

    @property
    def resolved_torch_threads(self) -> int:
        # One thread: the env workers need the other cores. On the shared 2-core machine a
        # 2-thread NatureCNN update (batch 64) took 0.19 s against 0.05 s with one thread,
        # and a batch-2 forward pass 80 ms against 1.3 ms (oversubscription).
        return self.torch_threads if self.torch_threads is not None else 1

    def _defaults(self) -> dict[str, Any]:
        image = self.obs != "state"
        if self.algo == "ppo":
            return {
                "learning_rate": 3e-4,
                "gamma": 0.99,
                "batch_size": 64 if image else 256,
                # Steps per env between updates: a fixed rollout of 2048 (state) or 1024
                # (image) transitions in total, whatever the number of envs.
                "n_steps": max(32, (1024 if image else 2048) // self.n_envs),
                "n_epochs": 4 if image else 10,
                "gae_lambda": 0.95,
                "clip_range": 0.2,
                "ent_coef": 0.0,
                "log_std_init": -0.5,
                "net_arch": (64, 64),
                "activation": "tanh",
                "normalize": False,
            }
        return {
            "learning_rate": 3e-4,
            "gamma": 0.99,
            "batch_size": 256,
            "n_steps": None,
            # Image transitions hold two stacked 64x64x6 uint8 frames: 20k ~ 1 GB.
            "buffer_size": 20_000 if image else 300_000,
            "learning_starts": 2_000,
            "log_std_init": -1.0,
            "net_arch": (256, 256),
            "activation": "relu",
            "normalize": False,
        }

    @property
    def hyperparams(self) -> dict[str, Any]:
        """The algorithm's hyperparameters: explicit fields, else the tuned defaults."""
        out = self._defaults()
        for key in list(out):
            v = getattr(self, key, None)
            if v is not None:
                out[key] = v
        if self.algo == "ppo":
            out["n_steps"] = self.resolved_n_steps
        else:
            out.pop("n_steps", None)
        out["net_arch"] = [int(n) for n in out["net_arch"]]
        return out

    # ------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return json_dict(self)

    def resolved(self) -> dict[str, Any]:
        """What ``config.json`` holds: the fields plus every derived value used."""
        return {
            "config_version": RL_CONFIG_VERSION,
            **self.to_dict(),
            "resolved": {
                "env_obs_mode": self.env_obs_mode,
                "frame_stack": self.resolved_frame_stack,
                "track_pool": list(self.track_pool),
                "eval_tracks": list(self.resolved_eval_tracks),
                "hyperparams": self.hyperparams,
            },
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RLConfig:
        if not isinstance(d, dict):
            raise ValueError(f"an RL config is a JSON object, got {type(d).__name__}")
        d = dict(d)
        version = d.pop("config_version", RL_CONFIG_VERSION)
        if version != RL_CONFIG_VERSION:
            raise ValueError(
                f"RL config version {version}, this trackpilot reads {RL_CONFIG_VERSION}"
            )
        d.pop("resolved", None)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown RL config field(s): {unknown}")
        for key in ("tracks", "directions", "eval_tracks", "image_size", "net_arch"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)

    @classmethod
    def load(cls, path: str | Path) -> RLConfig:
        p = Path(path)
        try:
            return cls.from_dict(read_json(p, what="RL config"))
        except (OSError, ValueError, TypeError) as e:
            raise ValueError(f"{p}: cannot read the RL config ({e})") from None
