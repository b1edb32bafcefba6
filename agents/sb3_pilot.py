"""stable-baselines3 policies behind the pilot protocol, saved and loaded without pickle.

A stable-baselines3 ``.zip`` holds cloudpickled objects, and unpickling runs code from
the file. A trained agent is therefore exported as two files side by side:

- ``NAME.safetensors``: the policy's ``state_dict`` (keys prefixed ``policy.``) and, when
  observations were normalised (``VecNormalize``), the running mean and variance
  (``obs_norm.mean``, ``obs_norm.var``).
- ``NAME.json``: everything needed to rebuild the network and feed it: ``format`` /
  ``version``, ``algo`` (``ppo`` or ``sac``), ``policy`` (``MlpPolicy`` / ``CnnPolicy`` /
  ``MultiInputPolicy``) and its constructor arguments (``net_arch``, ``activation_fn``
  and ``features_extractor_class`` by *name*, from a fixed whitelist), the env's
  ``obs_mode``, its raw per-frame ``observation_space``, the ``policy_observation_space``
  (after frame stacking and the HWC -> CHW transpose), ``frame_stack``, ``action_space``,
  ``fixed_speed``, ``action_meaning``, ``obs_norm`` (keys, clip, epsilon), the weights'
  file name and ``weights_sha256``, plus whatever the trainer adds (config, metrics).

:func:`load_sb3_pilot` rebuilds the policy class from the JSON, loads the tensors with
``safetensors`` (strict key match) and never unpickles anything. Any problem is a
``ValueError`` naming the file.

:class:`SB3Pilot` takes raw env observations one at a time and reproduces what the
training wrappers did (``VecNormalize`` -> ``VecFrameStack`` -> ``VecTransposeImage``,
including the zero-filled stack after a reset), then calls the policy's own
``predict(deterministic=True)``, so its actions equal ``model.predict`` bit for bit.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from agents.base import (
    OBS_MODES,
    PilotNeeds,
    WeightsFormat,
    as_action,
    weights_bytes,
)
from tracks.common import MAX_IMAGE_SIDE, parse_size

__all__ = [
    "SB3_FORMAT",
    "SB3_VERSION",
    "SB3Pilot",
    "build_policy",
    "check_record",
    "describe_policy",
    "load_sb3_pilot",
    "read_sb3_policy",
    "resolve_sb3_checkpoint",
    "space_from_json",
    "space_to_json",
    "write_sb3_policy",
]

logger = logging.getLogger(__name__)

SB3_FORMAT = "trackpilot-sb3-policy"
SB3_VERSION = 1
ALGOS = ("ppo", "sac")
POLICIES = ("MlpPolicy", "CnnPolicy", "MultiInputPolicy")


# ----------------------------------------------------------------- whitelists
def _activations() -> dict[str, type[torch.nn.Module]]:
    nn = torch.nn
    return {c.__name__: c for c in (nn.Tanh, nn.ReLU, nn.ELU, nn.LeakyReLU, nn.GELU, nn.SiLU)}


def _extractors() -> dict[str, type]:
    from stable_baselines3.common import torch_layers as tl

    return {c.__name__: c for c in (tl.FlattenExtractor, tl.NatureCNN, tl.CombinedExtractor)}


def _policy_class(algo: str, policy: str) -> type:
    if algo == "ppo":
        from stable_baselines3.common import policies as p

        table = {
            "MlpPolicy": p.ActorCriticPolicy,
            "CnnPolicy": p.ActorCriticCnnPolicy,
            "MultiInputPolicy": p.MultiInputActorCriticPolicy,
        }
    elif algo == "sac":
        from stable_baselines3.sac import policies as p

        table = {
            "MlpPolicy": p.SACPolicy,
            "CnnPolicy": p.CnnPolicy,
            "MultiInputPolicy": p.MultiInputPolicy,
        }
    else:
        raise ValueError(f"algo must be one of {ALGOS}, got {algo!r}")
    if policy not in table:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    return table[policy]


def _policy_alias(algo: str, policy: Any) -> str:
    for alias in POLICIES:
        if type(policy) is _policy_class(algo, alias):
            return alias
    raise ValueError(f"unsupported {algo} policy class {type(policy).__name__}")


# ----------------------------------------------------------------- spaces
def space_to_json(space: spaces.Space) -> dict[str, Any]:
    """A JSON description of a ``Box`` or a ``Dict`` of ``Box`` (bounds kept exactly)."""
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": {k: space_to_json(s) for k, s in space.spaces.items()}}
    if isinstance(space, spaces.Box):
        low, high = space.low, space.high
        uniform = bool(np.all(low == low.flat[0]) and np.all(high == high.flat[0]))
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": np.dtype(space.dtype).name,
            # Uniform bounds (images, actions) as scalars; per-element bounds as lists.
            "low": low.flat[0].item() if uniform else low.tolist(),
            "high": high.flat[0].item() if uniform else high.tolist(),
        }
    raise ValueError(f"only Box and Dict spaces can be described, got {space}")


def space_from_json(d: Mapping[str, Any]) -> spaces.Space:
    """Inverse of :func:`space_to_json`; raises ``ValueError`` on anything else."""
    kind = d.get("type") if isinstance(d, Mapping) else None
    if kind == "Dict":
        subspaces = d.get("spaces")
        if not isinstance(subspaces, Mapping) or not 1 <= len(subspaces) <= 16:
            raise ValueError(f"Dict spaces must be an object of 1 to 16 spaces, got {subspaces!r}")
        return spaces.Dict({str(k): space_from_json(v) for k, v in subspaces.items()})
    if kind == "Box":
        dtype = np.dtype(str(d["dtype"]))
        if dtype.name not in ("uint8", "float32", "float64"):
            raise ValueError(f"unsupported Box dtype {dtype.name}")
        raw = d["shape"]
        # Whole numbers, 1 to 3 axes, none longer than an image side may be (a stacked
        # CHW image has channels x frames on its first axis): 4000x4000 is refused here.
        if (
            not isinstance(raw, list)
            or not 1 <= len(raw) <= 3
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in raw)
            or not all(1 <= v <= MAX_IMAGE_SIDE for v in raw)
        ):
            raise ValueError(
                f"Box shape must be 1 to 3 whole numbers in [1, {MAX_IMAGE_SIDE}], got {raw!r}"
            )
        shape = tuple(raw)
        low = np.broadcast_to(np.asarray(d["low"], dtype=dtype), shape)
        high = np.broadcast_to(np.asarray(d["high"], dtype=dtype), shape)
        return spaces.Box(low.copy(), high.copy(), shape, dtype)
    raise ValueError(f"not a space description: {d!r}")


# ----------------------------------------------------------------- describe / build
def describe_policy(
    policy: Any,
    *,
    algo: str,
    obs_mode: str,
    observation_space: spaces.Space,
    frame_stack: int = 1,
    fixed_speed: float | None = None,
    obs_norm: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON record of a live stable-baselines3 policy (without weights).

    ``observation_space`` is the env's raw per-frame space; ``obs_norm`` (``keys``,
    ``clip``, ``epsilon``) describes ``VecNormalize`` when observations were normalised.
    """
    alias = _policy_alias(algo, policy)
    params = dict(policy._get_constructor_parameters())
    for key in ("observation_space", "action_space", "lr_schedule"):
        params.pop(key, None)
    # Optimiser settings do not change what the policy computes.
    params.pop("optimizer_class", None)
    params.pop("optimizer_kwargs", None)
    # SB3 leaves this out of its constructor parameters; it changes the module layout.
    params["share_features_extractor"] = bool(policy.share_features_extractor)
    act = params.get("activation_fn")
    if act is not None:
        if act.__name__ not in _activations():
            raise ValueError(f"activation {act.__name__} is not in the loadable whitelist")
        params["activation_fn"] = act.__name__
    ext = params.get("features_extractor_class")
    if ext is not None:
        if ext.__name__ not in _extractors():
            raise ValueError(f"features extractor {ext.__name__} is not in the loadable whitelist")
        params["features_extractor_class"] = ext.__name__
    try:
        params = json.loads(json.dumps(params, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise ValueError(f"policy arguments are not JSON-serialisable: {e}") from None
    act_shape = policy.action_space.shape
    return {
        "format": SB3_FORMAT,
        "version": SB3_VERSION,
        "algo": algo,
        "policy": alias,
        "policy_kwargs": params,
        "obs_mode": obs_mode,
        "observation_space": space_to_json(observation_space),
        "policy_observation_space": space_to_json(policy.observation_space),
        "frame_stack": int(frame_stack),
        "action_space": space_to_json(policy.action_space),
        "fixed_speed": fixed_speed,
        "action_meaning": ["steering"] if act_shape == (1,) else ["steering", "throttle"],
        "obs_norm": dict(obs_norm) if obs_norm else None,
        "deterministic": True,
        "torch_version": torch.__version__,
    }


def build_policy(record: Mapping[str, Any], device: str | torch.device = "cpu") -> Any:
    """Rebuild an (untrained) policy module from its JSON record."""
    cls = _policy_class(str(record["algo"]), str(record["policy"]))
    kwargs = dict(record["policy_kwargs"])
    if kwargs.get("activation_fn") is not None:
        name = kwargs["activation_fn"]
        if name not in _activations():
            raise ValueError(f"activation {name!r} is not in the loadable whitelist")
        kwargs["activation_fn"] = _activations()[name]
    if kwargs.get("features_extractor_class") is not None:
        name = kwargs["features_extractor_class"]
        if name not in _extractors():
            raise ValueError(f"features extractor {name!r} is not in the loadable whitelist")
        kwargs["features_extractor_class"] = _extractors()[name]
    obs_space = space_from_json(record["policy_observation_space"])
    act_space = space_from_json(record["action_space"])
    policy = cls(obs_space, act_space, lambda _: 0.0, **kwargs)
    return policy.to(device).eval()


# ----------------------------------------------------------------- files
def write_sb3_policy(
    directory: str | Path,
    name: str,
    record: Mapping[str, Any],
    policy: Any,
    *,
    obs_norm_stats: tuple[np.ndarray, np.ndarray] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``NAME.safetensors`` then ``NAME.json`` atomically; returns the JSON path.

    ``record`` comes from :func:`describe_policy`; ``obs_norm_stats`` is ``(mean, var)``
    of the normalised observation part. The JSON is written last and names the
    weights' sha256, so a reader never pairs a description with other weights.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # Clone each tensor: shared feature extractors appear under several keys and
    # safetensors refuses tensors that share memory.
    tensors = {
        f"policy.{k}": v.detach().to("cpu").clone().contiguous()
        for k, v in policy.state_dict().items()
    }
    if (obs_norm_stats is None) != (record.get("obs_norm") is None):
        raise ValueError("obs_norm in the record and obs_norm_stats must be given together")
    if obs_norm_stats is not None:
        mean, var = obs_norm_stats
        tensors["obs_norm.mean"] = torch.as_tensor(np.asarray(mean, dtype=np.float64))
        tensors["obs_norm.var"] = torch.as_tensor(np.asarray(var, dtype=np.float64))
    out = {**dict(record), **dict(extra or {})}
    return SB3_POLICY.write(directory, name, tensors, out)


SB3_POLICY = WeightsFormat(
    SB3_FORMAT,
    SB3_VERSION,
    (
        "algo",
        "policy",
        "policy_kwargs",
        "obs_mode",
        "observation_space",
        "policy_observation_space",
        "action_space",
        "frame_stack",
    ),
    "SB3 policy",
)
#: The policy JSON for a run directory (``best.json``), a ``.json`` or a ``.safetensors``.
resolve_sb3_checkpoint = SB3_POLICY.resolve
#: ``(record, tensors, json_path)``, checked against the format and the sha256.
read_sb3_policy = SB3_POLICY.read


# ----------------------------------------------------------------- the pilot
def _space_image_size(space: spaces.Space) -> tuple[int, int] | None:
    """(H, W) of the image in a policy's raw observation space, if it has one."""
    if isinstance(space, spaces.Dict):
        space = space.spaces.get("image")
    if isinstance(space, spaces.Box) and len(space.shape) == 3:
        return int(space.shape[0]), int(space.shape[1])
    return None


class SB3Pilot:
    """A stable-baselines3 policy behind the ``agents.base.Pilot`` protocol.

    ``act`` takes the env's raw observation (state vector, uint8 HxWx3 image, or the
    ``{"image", "state"}`` dict, as the JSON says), normalises the state part with the
    stored ``VecNormalize`` statistics, stacks the last ``frame_stack`` frames (zeros
    before the first frame after :meth:`reset`, like ``VecFrameStack``), transposes
    images to CHW and returns the deterministic action as ``[steering, throttle]``
    (throttle 0.0 when the policy only steers at a fixed speed).
    """

    def __init__(
        self,
        policy: Any,
        record: Mapping[str, Any],
        *,
        obs_norm_stats: tuple[np.ndarray, np.ndarray] | None = None,
        device: str | torch.device = "cpu",
        checkpoint: str | Path | None = None,
        name: str | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.policy = policy.to(self.device)
        self.policy.set_training_mode(False)
        self.record = dict(record)
        self.algo = str(record["algo"])
        self.obs_mode = str(record["obs_mode"])
        self.frame_stack = int(record["frame_stack"])
        if self.frame_stack < 1:
            raise ValueError(f"frame_stack must be >= 1, got {self.frame_stack}")
        self.fixed_speed = record.get("fixed_speed")
        self.observation_space = space_from_json(record["observation_space"])
        self.policy_observation_space = space_from_json(record["policy_observation_space"])
        self.checkpoint = str(checkpoint) if checkpoint is not None else None
        self.sha256 = record.get("weights_sha256")
        norm = record.get("obs_norm")
        self._norm = None
        if norm:
            if obs_norm_stats is None:
                raise ValueError("the record normalises observations but no statistics were given")
            mean, var = (np.asarray(a, dtype=np.float64) for a in obs_norm_stats)
            self._norm = {
                "keys": norm.get("keys"),
                "mean": mean,
                "std": np.sqrt(var + float(norm["epsilon"])),
                "clip": float(norm["clip"]),
            }
        tag = f"-{self.sha256[:8]}" if self.sha256 else ""
        self.name = name or f"sb3-{self.algo}-{self.obs_mode}{tag}"
        self.needs = PilotNeeds(
            obs_mode=self.obs_mode,
            # such a policy takes exactly the frames it was trained on
            image_size=_space_image_size(self.observation_space),
            throttle=list(record.get("action_meaning") or []) == ["steering", "throttle"],
        )
        self._stack: dict[str | None, np.ndarray] | None = None

    # -- protocol
    def reset(self) -> None:
        """Forget the stacked frames (the next observation starts a new stack)."""
        self._stack = None

    def act(self, observation: Any, info: dict[str, Any] | None = None) -> np.ndarray:
        obs = self.policy_observation(observation)
        action, _ = self.policy.predict(obs, deterministic=True)
        action = np.asarray(action, dtype=np.float32).reshape(-1)
        if action.shape == (1,):
            return as_action(float(action[0]), 0.0)
        return as_action(float(action[0]), float(action[1]))

    def metadata(self) -> dict[str, Any]:
        return {
            "kind": "sb3",
            "name": self.name,
            "algo": self.algo,
            "policy": self.record.get("policy"),
            "policy_kwargs": self.record.get("policy_kwargs"),
            "obs_mode": self.obs_mode,
            "input_space": self.record.get("observation_space"),
            "frame_stack": self.frame_stack,
            "fixed_speed": self.fixed_speed,
            "action_meaning": self.record.get("action_meaning"),
            "obs_norm": self.record.get("obs_norm"),
            "checkpoint": self.checkpoint,
            "checkpoint_sha256": self.sha256,
            "device": str(self.device),
            "num_parameters": int(sum(p.numel() for p in self.policy.parameters())),
            "model_bytes": weights_bytes(self.checkpoint, self.record),
        }

    # -- preprocessing (public so tests and tools can check it against SB3's wrappers)
    def policy_observation(self, observation: Any) -> np.ndarray | dict[str, np.ndarray]:
        """The observation exactly as the policy saw it in training, for one raw frame."""
        frames = self._split(observation)
        frames = self._normalise(frames)
        if self._stack is None:
            self._stack = {
                k: np.zeros((*v.shape[:-1], v.shape[-1] * self.frame_stack), dtype=v.dtype)
                for k, v in frames.items()
            }
        for k, v in frames.items():
            buf = self._stack[k]
            n = v.shape[-1]
            buf[..., :-n] = buf[..., n:].copy()
            buf[..., -n:] = v
        out = {k: self._to_policy_layout(k, v.copy()) for k, v in self._stack.items()}
        return out[None] if None in out else out

    def _split(self, observation: Any) -> dict[str | None, np.ndarray]:
        space = self.observation_space
        if isinstance(space, spaces.Dict):
            if not isinstance(observation, Mapping):
                raise ValueError(
                    f"SB3Pilot ({self.obs_mode}) needs a dict observation with keys "
                    f"{sorted(space.spaces)}, got {type(observation).__name__}"
                )
            items = {k: np.asarray(observation[k]) for k in space.spaces if k in observation}
            if set(items) != set(space.spaces):
                raise ValueError(
                    f"SB3Pilot needs observation keys {sorted(space.spaces)}, got "
                    f"{sorted(observation)}"
                )
            subspaces = space.spaces
        else:
            if isinstance(observation, Mapping):
                key = "image" if len(space.shape) == 3 else "state"
                if key not in observation:
                    raise ValueError(f"SB3Pilot ({self.obs_mode}) needs {key!r} in the dict")
                observation = observation[key]
            items = {None: np.asarray(observation)}
            subspaces = {None: space}
        for k, v in items.items():
            sub = subspaces[k]
            if v.shape != sub.shape:
                raise ValueError(
                    f"SB3Pilot expected observation{'' if k is None else f'[{k!r}]'} of shape "
                    f"{sub.shape}, got {v.shape}"
                )
            if sub.dtype == np.uint8 and v.dtype != np.uint8:
                raise ValueError(f"SB3Pilot expected a uint8 image, got {v.dtype}")
            items[k] = v.astype(sub.dtype, copy=False)
        return items

    def _normalise(self, frames: dict[str | None, np.ndarray]) -> dict[str | None, np.ndarray]:
        if self._norm is None:
            return frames
        keys = self._norm["keys"]
        target = None if keys is None else keys[0]
        out = dict(frames)
        v = out[target]
        n = (v.astype(np.float64) - self._norm["mean"]) / self._norm["std"]
        out[target] = np.clip(n, -self._norm["clip"], self._norm["clip"]).astype(v.dtype)
        return out

    def _to_policy_layout(self, key: str | None, v: np.ndarray) -> np.ndarray:
        space = self.policy_observation_space
        sub = space if key is None else space.spaces[key]
        if v.shape == sub.shape:
            return v
        if v.ndim == 3 and (v.shape[2], v.shape[0], v.shape[1]) == sub.shape:
            return np.ascontiguousarray(np.transpose(v, (2, 0, 1)))
        raise ValueError(
            f"stacked observation shape {v.shape} does not fit the policy's {sub.shape}"
        )


def check_record(record: Mapping[str, Any], jpath: str | Path) -> None:
    """Check what an SB3 policy JSON says before a network is built from it; any problem
    is one ``ValueError`` naming the file and the field. Image sizes follow
    :func:`tracks.common.parse_size` (at most 1024 a side)."""

    def bad(field: str, why: str) -> ValueError:
        return ValueError(f"{jpath}: SB3 policy field {field} {why}")

    if record.get("algo") not in ALGOS:
        raise bad("algo", f"must be one of {ALGOS}, got {record.get('algo')!r}")
    if record.get("policy") not in POLICIES:
        raise bad("policy", f"must be one of {POLICIES}, got {record.get('policy')!r}")
    if not isinstance(record.get("policy_kwargs"), dict):
        raise bad("policy_kwargs", f"must be an object, got {record.get('policy_kwargs')!r}")
    if record.get("obs_mode") not in OBS_MODES:
        raise bad("obs_mode", f"must be one of {OBS_MODES}, got {record.get('obs_mode')!r}")
    parsed = {}
    for field in ("observation_space", "policy_observation_space", "action_space"):
        try:
            parsed[field] = space_from_json(record.get(field))
        except (KeyError, TypeError, ValueError) as e:
            raise bad(field, f"is not a valid space ({e})") from None
    image = _space_image_size(parsed["observation_space"])
    if image is not None:
        parse_size(image, what=f"{jpath}: SB3 policy field observation_space image size")
    act = parsed["action_space"]
    if not isinstance(act, spaces.Box) or act.shape not in ((1,), (2,)):
        raise bad("action_space", f"must be a Box of shape (1,) or (2,), got {act}")
    stack = record.get("frame_stack")
    if not (isinstance(stack, int) and not isinstance(stack, bool) and 1 <= stack <= 64):
        raise bad("frame_stack", f"must be a whole number in [1, 64], got {stack!r}")
    speed = record.get("fixed_speed")
    if speed is not None and not (
        isinstance(speed, (int, float)) and not isinstance(speed, bool) and 0 < speed <= 5
    ):
        raise bad("fixed_speed", f"must be null or in (0, 5] m/s, got {speed!r}")
    meaning = record.get("action_meaning")
    if meaning is not None and meaning not in (["steering"], ["steering", "throttle"]):
        raise bad("action_meaning", f"must be [steering] or [steering, throttle], got {meaning!r}")
    norm = record.get("obs_norm")
    if norm is not None:
        ok = isinstance(norm, dict) and all(
            isinstance(norm.get(k), (int, float))
            and not isinstance(norm.get(k), bool)
            and 0 < norm[k] < float("inf")
            for k in ("clip", "epsilon")
        )
        keys = norm.get("keys") if isinstance(norm, dict) else None
        if not ok or not (keys is None or (isinstance(keys, list) and len(keys) == 1)):
            raise bad("obs_norm", f"must be null or {{keys, clip > 0, epsilon > 0}}, got {norm!r}")


def load_sb3_pilot(path: str | Path, device: str | torch.device = "cpu") -> SB3Pilot:
    """An :class:`SB3Pilot` from a run directory (``best.json``), a JSON or a safetensors file.

    Nothing is unpickled: the network is rebuilt from the JSON (checked first by
    :func:`check_record`) and its weights are read with ``safetensors``. A missing,
    corrupt or mismatched file is a ``ValueError``.
    """
    record, tensors, jpath = read_sb3_policy(path)
    check_record(record, jpath)
    try:
        policy = build_policy(record, device="cpu")
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{jpath}: cannot rebuild the policy ({e})") from None
    state = {k[len("policy.") :]: v for k, v in tensors.items() if k.startswith("policy.")}
    try:
        policy.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{jpath}: weights do not fit the described policy ({e})") from None
    stats = None
    if record.get("obs_norm"):
        if "obs_norm.mean" not in tensors or "obs_norm.var" not in tensors:
            raise ValueError(f"{jpath}: normalisation statistics missing from the weights file")
        stats = (tensors["obs_norm.mean"].numpy(), tensors["obs_norm.var"].numpy())
    try:
        return SB3Pilot(policy, record, obs_norm_stats=stats, device=device, checkpoint=jpath)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{jpath}: invalid SB3 policy description ({e})") from None


def load_spec(target: str | Path, *, device: str = "cpu", speed: float = 2.0) -> SB3Pilot:
    """The registry's loader (``agents.registry``): a stable-baselines3 policy."""
    return load_sb3_pilot(target, device=device)
