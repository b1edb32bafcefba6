"""Export a stable-baselines3 camera policy to ONNX: the SB3 half of ``agents.export``.

Only policies that drive from the camera alone (``obs_mode`` ``image``, ``CnnPolicy``)
are exported: a car has a camera, not the simulator's pose and cross-track error, so a
``state`` or ``image+state`` policy has nothing to read there. PPO (a diagonal Gaussian
without gSDE) and SAC (a squashed Gaussian without gSDE) are supported; anything else is
one ``ValueError`` saying why.

The graph takes ``image``: ``uint8 [N, H, W, 3 * frame_stack]``, the last
``frame_stack`` camera frames stacked on the channel axis, oldest first, as
``VecFrameStack`` stacks them (zeros in place of the frames before the first one after a
reset; :class:`agents.onnx_pilot.OnnxPilot` keeps that stack, and the metadata's
``frame_stack`` says how deep it is). In the graph: ``NHWC -> NCHW`` and ``/ 255`` (as
``VecTransposeImage`` and SB3's ``preprocess_obs``), the features extractor and the
actor, then SB3's deterministic action: PPO's Gaussian mean clipped to the action space,
SAC's ``tanh`` of its mean rescaled to the action space, exactly as
``BasePolicy.predict(deterministic=True)`` post-processes. Outputs: ``action``
(``float32 [N, 2]``, ``[steering, throttle]``, throttle 0 for a steering-only policy at a
fixed speed) and ``raw`` (the actor's mean before clipping or squashing).

Verified before anything is written, like the CNN export: the ONNX pilot and
:class:`agents.sb3_pilot.SB3Pilot` (SB3's own ``predict``) drive through the same
sequence of real rendered frames, frame stack and all, and must agree within
:data:`agents.export.TOLERANCE` on every action.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from agents.onnx_pilot import METADATA_KEY, ONNX_FORMAT, ONNX_VERSION, OnnxPilot
from agents.sb3_pilot import SB3Pilot
from tracks.common import now_iso

__all__ = ["check_exportable", "describe_sb3", "sb3_onnx", "sb3_agreement"]


def check_exportable(pilot: SB3Pilot) -> None:
    """``ValueError`` naming why ``pilot`` cannot be exported, or nothing."""
    where = pilot.checkpoint or pilot.name
    if pilot.obs_mode != "image":
        raise ValueError(
            f"{where}: only camera policies (obs_mode 'image') export to ONNX; this one reads "
            f"{pilot.obs_mode!r}, simulator state a car does not have"
        )
    if pilot._norm is not None:
        raise ValueError(f"{where}: a camera policy with VecNormalize statistics is not exported")
    space = pilot.policy.action_space
    if not isinstance(space, spaces.Box) or space.shape not in ((1,), (2,)):
        raise ValueError(f"{where}: the action space must be a Box of 1 or 2 values, got {space}")
    if getattr(pilot.policy, "use_sde", False):
        raise ValueError(f"{where}: policies with gSDE exploration are not exported")
    if pilot.algo == "ppo":
        from stable_baselines3.common.distributions import DiagGaussianDistribution

        if not isinstance(pilot.policy.action_dist, DiagGaussianDistribution):
            raise ValueError(
                f"{where}: PPO policies export with a diagonal Gaussian action distribution, "
                f"not {type(pilot.policy.action_dist).__name__}"
            )
    elif pilot.algo != "sac":
        raise ValueError(f"{where}: {pilot.algo!r} policies are not exported (ppo or sac)")


class _Actor(nn.Module):
    """SB3's deterministic action on a stacked uint8 NHWC batch: ``(action, raw)``."""

    def __init__(self, pilot: SB3Pilot) -> None:
        super().__init__()
        self.policy = pilot.policy
        self.algo = pilot.algo
        space = pilot.policy.action_space
        self.register_buffer("low", torch.as_tensor(space.low, dtype=torch.float32))
        self.register_buffer("high", torch.as_tensor(space.high, dtype=torch.float32))
        self.steer_only = space.shape == (1,)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        obs = image.float().permute(0, 3, 1, 2)  # VecTransposeImage; preprocess_obs / 255
        policy = self.policy
        if self.algo == "ppo":
            extractor = policy.pi_features_extractor
            features = super(type(policy), policy).extract_features(obs, extractor)
            raw = policy.action_net(policy.mlp_extractor.forward_actor(features))
            action = torch.maximum(torch.minimum(raw, self.high), self.low)
        else:
            actor = policy.actor
            features = actor.extract_features(obs, actor.features_extractor)
            raw = actor.mu(actor.latent_pi(features))
            action = self.low + 0.5 * (torch.tanh(raw) + 1.0) * (self.high - self.low)
        if self.steer_only:
            action = torch.cat([action, torch.zeros_like(action)], dim=1)
        return action, raw


def describe_sb3(pilot: SB3Pilot) -> dict[str, Any]:
    """The ``trackpilot`` metadata of the export of ``pilot``."""
    from agents.flops import count_mflop_fn

    h, w = pilot.needs.image_size
    stack = pilot.frame_stack
    actor = _Actor(pilot).eval()
    mflop = count_mflop_fn(actor, torch.zeros(1, h, w, 3 * stack, dtype=torch.uint8))
    meaning = list(pilot.record.get("action_meaning") or ["steering"])
    return {
        "format": ONNX_FORMAT,
        "version": ONNX_VERSION,
        "name": pilot.name,
        "arch": f"sb3-{pilot.algo}-{pilot.record.get('policy')}",
        "args": {"policy_kwargs": pilot.record.get("policy_kwargs")},
        "input_size": [h, w],
        "camera_size": [h, w],
        "obs_mode": "image",
        "frame_stack": stack,
        "throttle": bool(pilot.needs.throttle),
        "output_kind": "regression",
        "targets": meaning,
        "class_values": None,
        "decode": None,
        "source_sha256": pilot.sha256,
        "dataset_fingerprint": None,
        "mflop": round(mflop, 6),
        "num_parameters": int(sum(p.numel() for p in actor.parameters())),
        "fixed_speed": pilot.fixed_speed,
        "preprocessing": {
            "input": "image",
            "dtype": "uint8",
            "layout": "NHWC",
            "shape": ["N", h, w, 3 * stack],
            "frame_stack": {
                "frames": stack,
                "axis": "channels",
                "order": "oldest first",
                "after_reset": "zeros in place of the frames not yet seen",
            },
            "scale": "1/255",
            "in_graph": True,
        },
        "outputs": {
            "action": "float32 [N, 2] steering, throttle (0 when the policy only steers)",
            "raw": "the actor's mean before clipping (PPO) or tanh squashing (SAC)",
        },
        "algo": pilot.algo,
        "torch_version": torch.__version__,
        "created": now_iso(),
    }


def sb3_onnx(pilot: SB3Pilot, metadata: Mapping[str, Any], opset: int) -> bytes:
    """The serialised, checked ONNX model of ``pilot`` with ``metadata`` attached."""
    import json

    import onnx  # only for export
    from onnx import helper

    h, w = pilot.needs.image_size
    x = torch.zeros(1, h, w, 3 * pilot.frame_stack, dtype=torch.uint8)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            _Actor(pilot).eval(),
            (x,),
            buf,
            dynamo=False,
            opset_version=opset,
            input_names=["image"],
            output_names=["action", "raw"],
            dynamic_axes={"image": {0: "N"}, "action": {0: "N"}, "raw": {0: "N"}},
        )
    model = onnx.load_from_string(buf.getvalue())
    model.producer_name = "trackpilot"
    model.doc_string = f"trackpilot SB3 {pilot.algo} camera policy; metadata key {METADATA_KEY!r}"
    helper.set_model_props(
        model, {METADATA_KEY: json.dumps(dict(metadata), allow_nan=False, sort_keys=True)}
    )
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def sb3_agreement(pilot: SB3Pilot, onnx_pilot: OnnxPilot, frames: np.ndarray, tol: float) -> float:
    """Drive both through ``frames`` in order (stack and all); the largest action gap.
    ``ValueError`` when it is above ``tol``."""
    pilot.reset()
    onnx_pilot.reset()
    worst = 0.0
    for i, frame in enumerate(frames):
        if i == len(frames) // 2:  # a reset mid-way: both must refill the stack with zeros
            pilot.reset()
            onnx_pilot.reset()
        a, b = pilot.act(frame, {}), onnx_pilot.act(frame, {})
        worst = max(worst, float(np.abs(a - b).max()))
    pilot.reset()
    onnx_pilot.reset()
    if not (np.isfinite(worst) and worst <= tol):
        raise ValueError(
            f"export check failed: onnxruntime and SB3's predict differ by {worst:.3g} on "
            f"{len(frames)} rendered frames (tolerance {tol:g}); nothing written"
        )
    return worst
