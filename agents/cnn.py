"""CNN pilots: the checkpoint format and :class:`CNNPilot`, a trained model behind the protocol.

A checkpoint is two files side by side (never a pickle):

- ``NAME.safetensors``: the model's ``state_dict`` (weights and batch-norm buffers).
- ``NAME.json``: what is needed to rebuild and trust it: ``format``/``version``, ``arch``
  and its ``args`` (``agents.models.build_model(arch, **args)``), ``input_size``,
  ``preprocessing``, ``output`` (kind, targets, class steering values), ``weights`` (file
  name) and ``weights_sha256``, plus whatever the trainer adds (resolved config, dataset
  fingerprint, split, metrics).

:func:`load_pilot` takes the run directory (uses ``best.json``), the JSON file or the
safetensors file. Any problem is a ``ValueError`` naming the file.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.base import (
    PilotNeeds,
    WeightsFormat,
    as_action,
)
from agents.models import SteeringNet, build_model, decode_steering

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CNNPilot",
    "load_model",
    "load_pilot",
    "resolve_checkpoint",
    "write_checkpoint",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "trackpilot-checkpoint"
CHECKPOINT_VERSION = 1


def write_checkpoint(
    directory: str | Path, name: str, model: SteeringNet, extra: Mapping[str, Any] | None = None
) -> Path:
    """Write ``NAME.safetensors`` then ``NAME.json`` atomically; returns the JSON path.

    The JSON is written last and names the weights' sha256, so a reader never pairs a
    description with other weights (a process killed between the two writes leaves a
    mismatch that :func:`load_model` reports, not a silently wrong model).
    """
    record = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        **model.describe(),
        "torch_version": torch.__version__,
        **dict(extra or {}),
    }
    return CHECKPOINT.write(directory, name, dict(model.state_dict()), record)


CHECKPOINT = WeightsFormat(
    CHECKPOINT_FORMAT, CHECKPOINT_VERSION, ("arch", "args", "output"), "checkpoint"
)
#: The checkpoint JSON for a run directory, a ``.json`` or a ``.safetensors`` path.
resolve_checkpoint = CHECKPOINT.resolve
#: ``(record, state_dict, json_path)``, checked against the format and the sha256.
read_checkpoint = CHECKPOINT.read


def load_model(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[SteeringNet, dict[str, Any]]:
    """Rebuild the model of a checkpoint in eval mode on ``device``; ``(model, record)``."""
    record, state, jpath = read_checkpoint(path)
    try:
        model = build_model(str(record["arch"]), **dict(record["args"]))
        model.load_state_dict(state, strict=True)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{jpath}: cannot rebuild the model ({e})") from None
    model.to(device).eval()
    return model, record


class CNNPilot:
    """A trained steering CNN behind the ``agents.base.Pilot`` protocol.

    ``act`` runs batch-1 inference under ``torch.inference_mode`` on ``device``,
    preprocessing included (the same :func:`agents.models.preprocess` as training).
    Classifiers steer with the value of the most likely bin (``decode="argmax"``) or the
    softmax-weighted mean of the bin values (``"expected"``). Throttle is 0.0 unless the
    model predicts it.
    """

    def __init__(
        self,
        model: SteeringNet,
        *,
        record: Mapping[str, Any] | None = None,
        device: str | torch.device = "cpu",
        decode: str = "argmax",
        name: str | None = None,
        checkpoint: str | Path | None = None,
    ) -> None:
        if decode not in ("argmax", "expected"):
            raise ValueError(f"decode must be 'argmax' or 'expected', got {decode!r}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.record = dict(record or {})
        self.decode = decode
        self.checkpoint = str(checkpoint) if checkpoint is not None else None
        self.sha256 = self.record.get("weights_sha256")
        self.name = name or f"cnn-{model.arch}" + (f"-{self.sha256[:8]}" if self.sha256 else "")
        self._throttle = "throttle" in model.targets and model.output_kind == "regression"
        # Steering only: cruise control holds the speed. The camera is the one its
        # training frames were recorded with (the model resizes them to its input, as in
        # training); without a recorded dataset, its input size.
        recorded = (self.record.get("dataset") or {}).get("image_size")
        self.needs = PilotNeeds(obs_mode="image", image_size=tuple(recorded or model.input_size))

    def reset(self) -> None:
        """Stateless: nothing to forget."""

    @staticmethod
    def _image(observation: Any) -> np.ndarray:
        img = observation["image"] if isinstance(observation, Mapping) else observation
        img = np.asarray(img)
        if img.ndim != 3 or img.shape[-1] != 3 or img.dtype != np.uint8:
            raise ValueError(
                f"CNNPilot needs a uint8 HxWx3 camera image, got {img.dtype} {img.shape}"
            )
        return img

    def predict(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """``(N, 2)`` float32 ``[steering, throttle]`` for a batch of camera frames."""
        x = torch.as_tensor(
            np.ascontiguousarray(images) if isinstance(images, np.ndarray) else images
        )
        if x.dim() == 3:
            x = x.unsqueeze(0)
        with torch.inference_mode():
            out = self.model(x.to(self.device)).float()
            steer = decode_steering(self.model, out, self.decode)
            throttle = out[:, 1] if self._throttle else torch.zeros_like(steer)
            return torch.stack([steer, throttle], dim=1).cpu().numpy()

    def act(self, observation: Any, info: dict[str, Any]) -> np.ndarray:
        a = self.predict(torch.from_numpy(np.ascontiguousarray(self._image(observation))))[0]
        return as_action(float(a[0]), float(a[1]))

    def metadata(self) -> dict[str, Any]:
        out = self.record.get("output", {})
        return {
            "kind": "cnn",
            "name": self.name,
            "arch": self.model.arch,
            "args": dict(self.model.args),
            "input_size": list(self.model.input_size),
            "output_kind": self.model.output_kind,
            "targets": list(self.model.targets),
            "class_values": out.get("class_values"),
            "decode": self.decode if self.model.output_kind == "classes" else None,
            "checkpoint": self.checkpoint,
            "checkpoint_sha256": self.sha256,
            "device": str(self.device),
            "num_parameters": int(sum(p.numel() for p in self.model.parameters())),
            "dataset_fingerprint": (self.record.get("dataset") or {}).get("fingerprint"),
        }


def load_pilot(
    checkpoint: str | Path, device: str | torch.device = "cpu", decode: str = "argmax"
) -> CNNPilot:
    """A :class:`CNNPilot` from a run directory, checkpoint JSON or safetensors file."""
    model, record = load_model(checkpoint, device)
    return CNNPilot(
        model,
        record=record,
        device=device,
        decode=decode,
        checkpoint=resolve_checkpoint(checkpoint),
    )


def load_spec(target: str | Path, *, device: str = "cpu", speed: float = 2.0) -> CNNPilot:
    """The registry's loader (``agents.registry``): a CNN checkpoint."""
    return load_pilot(target, device=device)
