"""ONNX pilots: a model exported by ``python -m agents.export``, run with onnxruntime.

An exported ``.onnx`` file carries everything the car needs to drive with it: the graph
takes the camera frame as the env returns it (``image``: ``uint8`` ``[N, H, W, 3]``) and
does the preprocessing itself (``/255``, ``NHWC -> NCHW``, the bilinear resize to the
model's input, the normalisation), and gives ``action`` (``float32 [N, 2]``, ``[steering,
throttle]``, decoded as :class:`agents.cnn.CNNPilot` decodes) and ``raw`` (the model's own
outputs). Its ``metadata_props`` hold one entry, ``trackpilot``: a JSON object describing
the model (:data:`ONNX_FORMAT`, :data:`ONNX_VERSION`, the camera and input sizes, the
output kind, the sha256 of the checkpoint it came from, ...; :func:`check_metadata`).

A policy that reads the last ``k`` frames (a stable-baselines3 camera policy trained
with frame stacking) says so in the metadata's ``frame_stack`` (absent: 1); its graph
takes ``uint8 [N, H, W, 3k]``, the frames stacked on the channel axis, oldest first, and
:class:`OnnxPilot` keeps that stack itself (zeros before the first frame after a reset),
so ``act`` still takes one camera frame.

This module imports only the standard library, numpy, onnxruntime and
:mod:`agents.needs`, so that it runs on a Raspberry Pi that has ``pip install numpy
onnxruntime`` and none of torch, PyBullet or the rest of trackpilot's dependencies
(``tests/test_export.py`` checks it with those imports blocked).

Files are bounded before they are trusted: at most :data:`MAX_ONNX_BYTES`, a metadata
entry of at most :data:`MAX_METADATA_BYTES`, every field checked. Any problem is one
``ValueError`` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from agents.needs import PilotNeeds, as_action, image_size

__all__ = [
    "MAX_METADATA_BYTES",
    "MAX_ONNX_BYTES",
    "METADATA_KEY",
    "ONNX_FORMAT",
    "ONNX_VERSION",
    "OnnxPilot",
    "check_metadata",
    "load_spec",
]

ONNX_FORMAT = "trackpilot-onnx"
ONNX_VERSION = 1
METADATA_KEY = "trackpilot"
#: A 512 MiB graph is ~130M float32 parameters, far past anything a car runs.
MAX_ONNX_BYTES = 512 << 20
MAX_METADATA_BYTES = 1 << 20
MAX_THREADS = 256
MAX_FRAME_STACK = 16
OUTPUT_KINDS = ("regression", "classes")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _bad(path: str, field: str, why: str) -> ValueError:
    return ValueError(f"{path}: trackpilot ONNX metadata field {field} {why}")


def _finite(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def check_metadata(meta: Any, path: str = "<onnx>") -> dict[str, Any]:
    """The ``trackpilot`` metadata of an exported model, checked field by field; returns
    it. Any problem is one ``ValueError`` naming ``path`` and the field."""
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: trackpilot ONNX metadata is not a JSON object")
    if meta.get("format") != ONNX_FORMAT:
        raise ValueError(f"{path}: not a trackpilot ONNX model (format != {ONNX_FORMAT!r})")
    if meta.get("version") != ONNX_VERSION:
        raise ValueError(
            f"{path}: trackpilot ONNX version {meta.get('version')!r}; this trackpilot reads "
            f"version {ONNX_VERSION} (export the checkpoint again with python -m agents.export)"
        )
    name = meta.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= 200:
        raise _bad(path, "name", f"must be 1 to 200 characters, got {name!r}")
    for field in ("input_size", "camera_size"):
        value = meta.get(field)
        if not isinstance(value, list):
            raise _bad(path, field, f"must be [H, W], got {value!r}")
        image_size(value, what=f"{path}: trackpilot ONNX metadata field {field}")
    if meta.get("obs_mode") != "image":
        raise _bad(path, "obs_mode", f"must be 'image', got {meta.get('obs_mode')!r}")
    if not isinstance(meta.get("throttle"), bool):
        raise _bad(path, "throttle", f"must be true or false, got {meta.get('throttle')!r}")
    kind = meta.get("output_kind")
    if kind not in OUTPUT_KINDS:
        raise _bad(path, "output_kind", f"must be one of {OUTPUT_KINDS}, got {kind!r}")
    targets = meta.get("targets")
    if targets not in (["steering"], ["steering", "throttle"]):
        raise _bad(
            path, "targets", f"must be ['steering'] or ['steering', 'throttle'], got {targets!r}"
        )
    values = meta.get("class_values")
    decode = meta.get("decode")
    if kind == "classes":
        if not (
            isinstance(values, list) and 2 <= len(values) <= 1024 and all(map(_finite, values))
        ):
            raise _bad(path, "class_values", f"must be 2 to 1024 finite numbers, got {values!r}")
        if decode not in ("argmax", "expected"):
            raise _bad(path, "decode", f"must be 'argmax' or 'expected', got {decode!r}")
    elif values is not None or decode is not None:
        raise _bad(path, "class_values", "and decode must be null for regression")
    for field in ("source_sha256", "dataset_fingerprint"):
        value = meta.get(field)
        if value is not None and not (isinstance(value, str) and len(value) <= 128):
            raise _bad(path, field, f"must be text or null, got {value!r}")
    if meta.get("source_sha256") is not None and not _SHA256.fullmatch(meta["source_sha256"]):
        raise _bad(path, "source_sha256", f"must be 64 hex digits, got {meta['source_sha256']!r}")
    mflop = meta.get("mflop")
    if mflop is not None and not (_finite(mflop) and mflop >= 0):
        raise _bad(path, "mflop", f"must be a finite number >= 0 or null, got {mflop!r}")
    params = meta.get("num_parameters")  # exports before it was recorded lack it
    if params is not None and not (
        isinstance(params, int) and not isinstance(params, bool) and params >= 0
    ):
        raise _bad(path, "num_parameters", f"must be a whole number >= 0 or null, got {params!r}")
    stack = meta.get("frame_stack", 1)
    if not (isinstance(stack, int) and not isinstance(stack, bool)) or not (
        1 <= stack <= MAX_FRAME_STACK
    ):
        raise _bad(
            path, "frame_stack", f"must be a whole number in [1, {MAX_FRAME_STACK}], got {stack!r}"
        )
    return meta


def _read_model(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_ONNX_BYTES:
            raise ValueError(
                f"{path}: {size} bytes, more than the {MAX_ONNX_BYTES >> 20} MiB an ONNX "
                "pilot may have"
            )
        with path.open("rb") as f:
            data = f.read(MAX_ONNX_BYTES + 1)
    except OSError as e:
        raise ValueError(f"{path}: cannot read the ONNX model ({e.strerror or e})") from None
    if len(data) > MAX_ONNX_BYTES:
        raise ValueError(f"{path}: more than the {MAX_ONNX_BYTES >> 20} MiB an ONNX pilot may have")
    return data


def _session(data: bytes, path: str, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3  # errors only: no warnings on the car's console
    try:
        return ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for a bad model
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: not a loadable ONNX model ({first[:300]})") from None


def _metadata(session: ort.InferenceSession, path: str) -> dict[str, Any]:
    props = session.get_modelmeta().custom_metadata_map
    text = props.get(METADATA_KEY)
    if text is None:
        raise ValueError(
            f"{path}: not a trackpilot ONNX model (no {METADATA_KEY!r} metadata; export "
            "checkpoints with python -m agents.export)"
        )
    if len(text.encode("utf-8")) > MAX_METADATA_BYTES:
        raise ValueError(
            f"{path}: trackpilot ONNX metadata larger than {MAX_METADATA_BYTES >> 20} MiB"
        )
    try:
        meta = json.loads(text, parse_constant=lambda c: _refuse(c))
    except RecursionError:
        raise ValueError(f"{path}: trackpilot ONNX metadata nested too deeply") from None
    except ValueError as e:
        raise ValueError(f"{path}: trackpilot ONNX metadata is not JSON ({e})") from None
    return check_metadata(meta, path)


def _refuse(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON number")


def _check_graph(session: ort.InferenceSession, meta: Mapping[str, Any], path: str) -> None:
    """The graph's input and outputs are what the metadata says (``image`` at the camera
    size with ``3 * frame_stack`` channels, ``action`` ``[N, 2]``)."""
    inputs = session.get_inputs()
    h, w = meta["camera_size"]
    c = 3 * meta.get("frame_stack", 1)
    if len(inputs) != 1 or inputs[0].name != "image" or inputs[0].type != "tensor(uint8)":
        got = [(i.name, i.type) for i in inputs]
        raise ValueError(f"{path}: the graph must take one uint8 input 'image', it takes {got}")
    shape = list(inputs[0].shape)
    if len(shape) != 4 or shape[1:] != [h, w, c]:
        raise ValueError(
            f"{path}: input 'image' has shape {shape}, the metadata's camera_size and "
            f"frame_stack say [N, {h}, {w}, {c}]"
        )
    outputs = {o.name: o for o in session.get_outputs()}
    action = outputs.get("action")
    if action is None or action.type != "tensor(float)" or list(action.shape)[1:] != [2]:
        raise ValueError(f"{path}: the graph must give a float32 output 'action' of shape [N, 2]")


class OnnxPilot:
    """An exported model behind the ``agents.base.Pilot`` protocol, on onnxruntime's CPU
    provider with ``threads`` intra-op threads (default 1, as torch pilots are judged).

    ``act`` runs the graph on one frame (preprocessing included, in the graph; with a
    ``frame_stack`` above 1, on the last frames stacked) and returns its ``action``,
    clipped and checked finite like every pilot's.
    """

    def __init__(self, path: str | Path, *, threads: int = 1, data: bytes | None = None) -> None:
        if not (isinstance(threads, int) and 1 <= threads <= MAX_THREADS):
            raise ValueError(
                f"threads must be a whole number in [1, {MAX_THREADS}], got {threads!r}"
            )
        self.path = Path(path)
        where = str(self.path)
        data = _read_model(self.path) if data is None else bytes(data)
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.model_bytes = len(data)  # the model file's size
        self.threads = threads
        self.session = _session(data, where, threads)
        self.meta = _metadata(self.session, where)
        _check_graph(self.session, self.meta, where)
        self.camera = tuple(self.meta["camera_size"])
        self.frame_stack = int(self.meta.get("frame_stack", 1))
        self._stack: np.ndarray | None = None
        self.name = f"{self.meta['name']}-onnx"
        self.needs = PilotNeeds(
            obs_mode="image", image_size=self.camera, throttle=self.meta["throttle"]
        )

    def reset(self) -> None:
        """Forget the stacked frames (a single-frame model keeps nothing)."""
        self._stack = None

    def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(action [N, 2], raw [N, K])`` for a batch of ``uint8`` camera frames (each
        ``3 * frame_stack`` channels deep: already stacked)."""
        x = np.ascontiguousarray(images)
        if x.ndim == 3:
            x = x[None]
        c = 3 * self.frame_stack
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (*self.camera, c):
            raise ValueError(
                f"{self.name} needs uint8 [N, {self.camera[0]}, {self.camera[1]}, {c}] frames, "
                f"got {x.dtype} {x.shape}"
            )
        action, raw = self.session.run(["action", "raw"], {"image": x})
        return action, raw

    def act(self, observation: Any, info: dict[str, Any]) -> np.ndarray:
        img = observation["image"] if isinstance(observation, Mapping) else observation
        img = np.asarray(img)
        if img.dtype != np.uint8 or img.shape != (*self.camera, 3):
            raise ValueError(
                f"{self.name} needs a uint8 {self.camera[0]}x{self.camera[1]}x3 camera image, "
                f"got {img.dtype} {img.shape}"
            )
        if self.frame_stack > 1:
            if self._stack is None:
                self._stack = np.zeros((*self.camera, 3 * self.frame_stack), dtype=np.uint8)
            self._stack[..., :-3] = self._stack[..., 3:].copy()
            self._stack[..., -3:] = img
            img = self._stack
        a = self.session.run(["action"], {"image": np.ascontiguousarray(img)[None]})[0][0]
        return as_action(float(a[0]), float(a[1]))

    def metadata(self) -> dict[str, Any]:
        m = self.meta
        return {
            "kind": "onnx",
            "name": self.name,
            "arch": m.get("arch"),
            "checkpoint": str(self.path),
            "checkpoint_sha256": self.sha256,
            "source_sha256": m.get("source_sha256"),
            "mflop": m.get("mflop"),
            "num_parameters": m.get("num_parameters"),
            "model_bytes": self.model_bytes,
            "device": "cpu",
            "runtime": "onnxruntime",
            "onnxruntime_version": ort.__version__,
            "threads": self.threads,
            "input_size": list(m["input_size"]),
            "camera_size": list(m["camera_size"]),
            "output_kind": m["output_kind"],
            "decode": m.get("decode"),
            "dataset_fingerprint": m.get("dataset_fingerprint"),
            "class_values": m.get("class_values"),
            "frame_stack": self.frame_stack,
        }


def load_spec(
    target: str | Path, *, device: str = "cpu", speed: float = 2.0, threads: int = 1
) -> OnnxPilot:
    """The registry's loader (``agents.registry``): an ``.onnx`` file, on the CPU."""
    if str(device).strip().lower() not in ("cpu", "auto"):
        raise ValueError(f"{target}: ONNX pilots run on the CPU (onnxruntime), not {device!r}")
    return OnnxPilot(target, threads=threads)
