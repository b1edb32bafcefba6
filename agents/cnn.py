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
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.base import (
    PilotNeeds,
    WeightsFormat,
    as_action,
    weights_bytes,
)
from agents.flops import count_mflop
from agents.models import OUTPUT_KINDS, SteeringNet, build_model, decode_steering
from tracks.common import parse_size

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CNNPilot",
    "check_record",
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
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    ("arch", "args", "input_size", "output", "preprocessing"),
    "checkpoint",
)
#: The checkpoint JSON for a run directory, a ``.json`` or a ``.safetensors`` path.
resolve_checkpoint = CHECKPOINT.resolve
#: ``(record, state_dict, json_path)``, checked against the format and the sha256.
read_checkpoint = CHECKPOINT.read


def _numbers(value: Any, n: int | None = None) -> list[float] | None:
    """``value`` as a list of finite numbers (``n`` of them when given), else None."""
    if not isinstance(value, list) or (n is not None and len(value) != n):
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return None
    out = [float(v) for v in value]
    return out if all(math.isfinite(v) for v in out) else None


def check_record(record: Mapping[str, Any], jpath: str | Path) -> tuple[int, int]:
    """Check what a checkpoint JSON says before a model is built from it: ``input_size``
    (and ``args.input_size``) are image sizes per :func:`tracks.common.parse_size` (at most
    1024 a side), ``output`` names a known kind with its targets and class values, and
    ``preprocessing`` states the normalisation. Returns the input size; any problem is one
    ``ValueError`` naming the file and the field."""

    def bad(field: str, why: str) -> ValueError:
        return ValueError(f"{jpath}: checkpoint field {field} {why}")

    def image_size(field: str, value: Any) -> tuple[int, int]:
        if not isinstance(value, list):
            raise bad(field, f"must be [H, W], got {value!r}")
        return parse_size(value, what=f"{jpath}: checkpoint field {field}")

    size = image_size("input_size", record.get("input_size"))
    args = record.get("args")
    if not isinstance(args, dict):
        raise bad("args", f"must be an object, got {args!r}")
    if "input_size" in args:
        arg_size = image_size("args.input_size", args["input_size"])
        if arg_size != size:
            raise bad("args.input_size", f"{list(arg_size)} disagrees with input_size {list(size)}")
    output = record.get("output")
    if not isinstance(output, dict):
        raise bad("output", f"must be an object, got {output!r}")
    kind = output.get("kind")
    if kind not in OUTPUT_KINDS:
        raise bad("output.kind", f"must be one of {OUTPUT_KINDS}, got {kind!r}")
    targets = output.get("targets")
    allowed = (["steering"],) if kind == "classes" else (["steering"], ["steering", "throttle"])
    if targets not in allowed:
        raise bad("output.targets", f"must be one of {list(allowed)} for {kind}, got {targets!r}")
    values = output.get("class_values")
    if kind == "classes":
        cv = _numbers(values)
        if cv is None or not (2 <= len(cv) <= 1024):
            raise bad("output.class_values", f"must be 2 to 1024 finite numbers, got {values!r}")
    elif values is not None:
        raise bad("output.class_values", f"must be null for regression, got {values!r}")
    pre = record.get("preprocessing")
    norm = pre.get("normalize") if isinstance(pre, dict) else None
    if not isinstance(norm, dict):
        raise bad("preprocessing", f"must be an object with normalize, got {pre!r}")
    for key in ("mean", "std"):
        v = _numbers(norm.get(key), 3)
        if v is None or (key == "std" and min(v) <= 0):
            what = "3 finite numbers" + (" > 0" if key == "std" else "")
            raise bad(f"preprocessing.normalize.{key}", f"must be {what}, got {norm.get(key)!r}")
    return size


def _check_model(model: SteeringNet, record: Mapping[str, Any], jpath: Path) -> None:
    """The rebuilt model (its weights and buffers loaded) does what the JSON says."""

    def bad(field: str, said: Any, has: Any) -> ValueError:
        return ValueError(f"{jpath}: checkpoint field {field} says {said}, the model has {has}")

    size = tuple(record["input_size"])
    if model.input_size != size:
        raise bad("input_size", list(size), list(model.input_size))
    output = record["output"]
    if model.output_kind != output["kind"]:
        raise bad("output.kind", repr(output["kind"]), repr(model.output_kind))
    if list(model.targets) != output["targets"]:
        raise bad("output.targets", output["targets"], list(model.targets))
    if model.output_kind == "classes":
        has = [float(v) for v in model.class_values]
        said = [float(v) for v in output["class_values"]]
        if len(has) != len(said) or not np.allclose(has, said, rtol=0, atol=1e-6):
            raise bad("output.class_values", said, has)
    norm = record["preprocessing"]["normalize"]
    for key, buf in (("mean", model.mean), ("std", model.std)):
        has = [float(v) for v in buf.flatten()]
        if not np.allclose(has, [float(v) for v in norm[key]], rtol=0, atol=1e-6):
            raise bad(f"preprocessing.normalize.{key}", norm[key], has)


def load_model(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[SteeringNet, dict[str, Any]]:
    """Rebuild the model of a checkpoint in eval mode on ``device``; ``(model, record)``.

    The JSON is checked (:func:`check_record`) before the model is built, and the built
    model against it afterwards; any problem is a ``ValueError`` naming the file."""
    record, state, jpath = read_checkpoint(path)
    check_record(record, jpath)
    try:
        model = build_model(str(record["arch"]), **dict(record["args"]))
        model.load_state_dict(state, strict=True)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{jpath}: cannot rebuild the model ({e})") from None
    _check_model(model, record, jpath)
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
        self._mflop: float | None = None  # counted on first use (one forward pass)

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

    @property
    def mflop(self) -> float:
        """Counted MFLOP per frame (:func:`agents.flops.count_mflop`), computed once."""
        if self._mflop is None:
            self._mflop = count_mflop(self.model)
        return self._mflop

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
            "model_bytes": weights_bytes(self.checkpoint, self.record),
            "mflop": self.mflop,
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
