"""Export a pilot to ONNX for the car: ``python -m agents.export CKPT --out M.onnx``.

A CNN checkpoint (below), or a stable-baselines3 camera policy written by
``training.rl`` (:mod:`agents.export_sb3`: PPO or SAC, frame stack and all; policies that
read simulator state are refused, a car has none).

The graph (opset :data:`OPSET`) takes camera frames as the env gives them, ``image``:
``uint8`` ``[N, H, W, 3]`` at the camera the pilot is driven with
(``CNNPilot.needs.image_size``), and does the preprocessing of
:func:`agents.models.preprocess` itself: ``uint8 -> float / 255``, ``NHWC -> NCHW``, a
bilinear resize (half-pixel centres, antialiased when shrinking: ONNX ``Resize`` with
``antialias=1``, ``exclude_outside=1``, as PyTorch's) to the model's input size, then the
model (its normalisation included). Outputs: ``action`` (``float32 [N, 2]``, ``[steering,
throttle]`` as :meth:`agents.cnn.CNNPilot.predict` decodes it) and ``raw`` (logits or
regression values). The ``trackpilot`` metadata entry describes it
(:mod:`agents.onnx_pilot`, which runs it with numpy and onnxruntime alone).

The resize is the floating-point one, PyTorch's on a GPU. On the CPU
:func:`agents.models.preprocess` resizes ``uint8`` frames before converting them, which
rounds each resized pixel to a whole level (up to 1/255 apart); the export prints how far
the CPU torch pilot is from the graph on the same frames, for information.

Every export is verified before anything is written: onnxruntime and torch (the same
float preprocessing) must agree on real camera frames, the checkpoint's training dataset
when it is recorded and readable, else frames rendered by ``sim.env.TrackEnv`` with the
expert driving: ``raw`` within :data:`TOLERANCE` and ``action`` identical for argmax
classifiers (within :data:`TOLERANCE` otherwise). A failed check leaves no file.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import logging
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from agents.cnn import CNNPilot, load_pilot
from agents.models import preprocess
from agents.onnx_pilot import METADATA_KEY, ONNX_FORMAT, ONNX_VERSION, OnnxPilot
from tracks.cli import run_main
from tracks.common import now_iso
from tracks.fileio import atomic_write_bytes
from tracks.outputs import check_output_file, os_error_line

__all__ = ["OPSET", "TOLERANCE", "ExportResult", "build_onnx", "export_onnx", "main"]

logger = logging.getLogger(__name__)

OPSET = 18  # Resize's antialias attribute is from opset 18
TOLERANCE = 1e-4
#: How many real frames the check runs on.
CHECK_FRAMES = 48


# --------------------------------------------------------------------------- the graph
class _FixedAdaptiveAvgPool(nn.Module):
    """``AdaptiveAvgPool2d`` from a fixed input size as two averaging matrices.

    The ONNX exporter has no adaptive pooling whose output size does not divide the input
    (``compact`` pools a 4x5 map to 3x4); at a fixed input size the pooling is linear,
    ``P_h @ x @ P_w^T`` with each row of ``P`` averaging PyTorch's window for that cell.
    """

    def __init__(self, size_in: tuple[int, int], size_out: tuple[int, int]) -> None:
        super().__init__()
        self.register_buffer("ph", self._matrix(size_in[0], size_out[0]))
        self.register_buffer("pw", self._matrix(size_in[1], size_out[1]).t().contiguous())

    @staticmethod
    def _matrix(n_in: int, n_out: int) -> torch.Tensor:
        m = torch.zeros(n_out, n_in, dtype=torch.float64)
        for i in range(n_out):
            start, end = (i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)
            m[i, start:end] = 1.0 / (end - start)
        return m.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ph @ x @ self.pw


class _Core(nn.Module):
    """The model on float ``NCHW`` at its input size: normalisation and network."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features((x - self.model.mean) / self.model.std)


def _exportable(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose adaptive pools the exporter can write."""
    model = copy.deepcopy(model).cpu().eval()
    sizes: dict[str, tuple[int, int]] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, nn.AdaptiveAvgPool2d):
            hooks.append(
                m.register_forward_hook(
                    lambda mod, inp, out, name=name: sizes.__setitem__(
                        name, tuple(inp[0].shape[-2:])
                    )
                )
            )
    with torch.inference_mode():
        model(torch.zeros(1, 3, *model.input_size))
    for h in hooks:
        h.remove()
    for name, size_in in sizes.items():
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        pool = getattr(parent, attr)
        out = pool.output_size
        size_out = (out, out) if isinstance(out, int) else tuple(out)
        size_out = tuple(size_in[i] if v is None else int(v) for i, v in enumerate(size_out))
        if size_in[0] % size_out[0] or size_in[1] % size_out[1]:
            setattr(parent, attr, _FixedAdaptiveAvgPool(size_in, size_out))
    return model


def _core_graph(model: nn.Module) -> Any:
    """The ONNX graph of :class:`_Core` (input ``x``, output ``raw``), dynamic batch."""
    import onnx  # only for export

    x = torch.zeros(1, 3, *model.input_size)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of the dynamo one, which needs
        # onnxscript; this graph (convolutions, matmuls, pooling) is in its supported core.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Core(_exportable(model)),
            (x,),
            buf,
            dynamo=False,
            opset_version=OPSET,
            input_names=["x"],
            output_names=["raw"],
            dynamic_axes={"x": {0: "N"}, "raw": {0: "N"}},
        )
    return onnx.load_from_string(buf.getvalue())


def build_onnx(pilot: CNNPilot, metadata: Mapping[str, Any]) -> bytes:
    """The serialised ONNX model of ``pilot`` (preprocessing, model, decoding) with
    ``metadata`` as its ``trackpilot`` entry."""
    import onnx  # only for export
    from onnx import TensorProto, helper

    model = pilot.model
    cam_h, cam_w = pilot.needs.camera
    in_h, in_w = model.input_size
    core = _core_graph(model)
    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    consts = [
        helper.make_tensor("tp_255", f32, [], [255.0]),
        helper.make_tensor("tp_chw", i64, [3], [3, in_h, in_w]),
        helper.make_tensor("tp_zero", i64, [1], [0]),
        helper.make_tensor("tp_one", i64, [1], [1]),
        helper.make_tensor("tp_two", i64, [1], [2]),
        helper.make_tensor("tp_axis1", i64, [1], [1]),
    ]
    nodes = [
        helper.make_node("Cast", ["image"], ["tp_f"], to=f32),
        helper.make_node("Transpose", ["tp_f"], ["tp_nchw"], perm=[0, 3, 1, 2]),
    ]
    scaled = "tp_nchw"
    if (cam_h, cam_w) != (in_h, in_w):
        shrink = cam_h > in_h or cam_w > in_w
        nodes += [
            helper.make_node("Shape", ["tp_nchw"], ["tp_n"], end=1),
            helper.make_node("Concat", ["tp_n", "tp_chw"], ["tp_sizes"], axis=0),
            helper.make_node(
                "Resize",
                ["tp_nchw", "", "", "tp_sizes"],
                ["tp_resized"],
                mode="linear",
                coordinate_transformation_mode="half_pixel",
                antialias=int(shrink),
                exclude_outside=int(shrink),  # PyTorch renormalises the weights at borders
            ),
        ]
        scaled = "tp_resized"
    nodes.append(helper.make_node("Div", [scaled, "tp_255"], ["x"]))
    nodes += list(core.graph.node)
    # Decoding, as CNNPilot.predict: steering [N, 1], throttle [N, 1], action [N, 2].
    if model.output_kind == "classes":
        cv = [float(v) for v in model.class_values]
        consts.append(helper.make_tensor("tp_cv", f32, [len(cv)], cv))
        if pilot.decode == "argmax":
            nodes += [
                helper.make_node("ArgMax", ["raw"], ["tp_idx"], axis=1, keepdims=1),
                helper.make_node("Gather", ["tp_cv", "tp_idx"], ["tp_steer"], axis=0),
            ]
        else:
            consts.append(helper.make_tensor("tp_cv_col", f32, [len(cv), 1], cv))
            nodes += [
                helper.make_node("Softmax", ["raw"], ["tp_p"], axis=1),
                helper.make_node("MatMul", ["tp_p", "tp_cv_col"], ["tp_steer"]),
            ]
    else:
        nodes.append(
            helper.make_node("Slice", ["raw", "tp_zero", "tp_one", "tp_axis1"], ["tp_steer"])
        )
    if model.output_kind == "regression" and "throttle" in model.targets:
        nodes.append(
            helper.make_node("Slice", ["raw", "tp_one", "tp_two", "tp_axis1"], ["tp_throttle"])
        )
    else:
        nodes += [
            helper.make_node("Shape", ["tp_steer"], ["tp_steer_shape"]),
            helper.make_node(
                "ConstantOfShape",
                ["tp_steer_shape"],
                ["tp_throttle"],
                value=helper.make_tensor("tp_zero_f", f32, [1], [0.0]),
            ),
        ]
    nodes.append(helper.make_node("Concat", ["tp_steer", "tp_throttle"], ["action"], axis=1))
    graph = helper.make_graph(
        nodes,
        f"trackpilot_{model.arch}",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", cam_h, cam_w, 3])],
        [
            helper.make_tensor_value_info("action", f32, ["N", 2]),
            helper.make_tensor_value_info("raw", f32, ["N", model.num_outputs]),
        ],
        [*core.graph.initializer, *consts],
    )
    out = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="trackpilot",
        doc_string=f"trackpilot {model.arch} steering pilot; metadata key {METADATA_KEY!r}",
    )
    out.ir_version = min(out.ir_version, core.ir_version)
    helper.set_model_props(
        out, {METADATA_KEY: json.dumps(dict(metadata), allow_nan=False, sort_keys=True)}
    )
    onnx.checker.check_model(out, full_check=True)
    return out.SerializeToString()


def describe(pilot: CNNPilot) -> dict[str, Any]:
    """The ``trackpilot`` metadata of the export of ``pilot``."""
    from agents.flops import count_mflop

    model, record = pilot.model, pilot.record
    in_h, in_w = model.input_size
    cam = list(pilot.needs.camera)
    classes = model.output_kind == "classes"
    return {
        "format": ONNX_FORMAT,
        "version": ONNX_VERSION,
        "name": pilot.name,
        "arch": model.arch,
        "args": dict(model.args),
        "input_size": [in_h, in_w],
        "camera_size": cam,
        "obs_mode": "image",
        "throttle": bool(pilot.needs.throttle),
        "output_kind": model.output_kind,
        "targets": list(model.targets),
        "class_values": [float(v) for v in model.class_values] if classes else None,
        "decode": pilot.decode if classes else None,
        "source_sha256": pilot.sha256,
        "dataset_fingerprint": (record.get("dataset") or {}).get("fingerprint"),
        "mflop": round(count_mflop(model), 6),
        "num_parameters": int(sum(p.numel() for p in model.parameters())),
        "preprocessing": {
            "input": "image",
            "dtype": "uint8",
            "layout": "NHWC",
            "shape": ["N", *cam, 3],
            "scale": "1/255",
            "resize": {
                "mode": "bilinear",
                "coordinates": "half_pixel",
                "antialias": bool(cam[0] > in_h or cam[1] > in_w),
                "from": cam,
                "to": [in_h, in_w],
                "done": cam != [in_h, in_w],
            },
            "input_size": [in_h, in_w],
            "normalize": (record.get("preprocessing") or {}).get("normalize"),
            "in_graph": True,
        },
        "outputs": {"action": "float32 [N, 2] steering, throttle", "raw": model.output_kind},
        "torch_version": torch.__version__,
        "opset": OPSET,
        "created": now_iso(),
    }


# --------------------------------------------------------------------------- the check
def dataset_frames(record: Mapping[str, Any], camera: tuple[int, int], n: int) -> np.ndarray | None:
    """Up to ``n`` frames of the checkpoint's training dataset, spread over its episodes;
    None when no dataset is recorded, it cannot be read or its camera is another size."""
    from sim.dataset import open_dataset

    root = (record.get("dataset") or {}).get("root")
    if not root:
        return None
    try:
        ds = open_dataset(root)
        if ds.image_size is None or tuple(ds.image_size) != tuple(camera) or len(ds) == 0:
            return None
        frames = []
        per = max(1, -(-n // ds.num_episodes))
        for i in range(ds.num_episodes):
            images = ds.load_episode(i, fields=["image"])["image"]
            step = max(1, len(images) // per)
            frames.extend(images[::step][:per])
            if len(frames) >= n:
                break
    except (OSError, ValueError) as e:
        logger.info("dataset %s not usable for the check (%s); rendering frames", root, e)
        return None
    return np.stack(frames[:n]) if frames else None


def rendered_frames(camera: tuple[int, int], n: int, seed: int = 0) -> np.ndarray:
    """``n`` camera frames from ``TrackEnv`` on the oval, the expert driving."""
    from agents.expert import ExpertPilot
    from sim.env import TrackEnv

    env = TrackEnv(track="oval", image_size=camera, obs_mode="image+state", fixed_speed=2.0)
    try:
        obs, info = env.reset(seed=seed)
        expert = ExpertPilot(None, car=env.car_params)
        expert.set_track(env.track)
        frames = []
        for _ in range(n):
            frames.append(obs["image"])
            obs, _, terminated, truncated, info = env.step(expert.act(obs, info)[:1])
            if terminated or truncated:
                obs, info = env.reset(seed=seed + len(frames))
    finally:
        env.close()
    return np.stack(frames)


@dataclass(frozen=True)
class Agreement:
    """How far onnxruntime is from torch on the check frames."""

    frames: int
    source: str  # "dataset" or "rendered"
    raw_max_abs: float  # onnxruntime vs torch, the same float preprocessing
    action_max_abs: float
    cpu_raw_max_abs: float  # vs the CPU torch pilot (uint8 resize), for information
    cpu_action_agree: float  # fraction of frames with the same action as the CPU pilot


def check_agreement(
    pilot: CNNPilot, onnx_pilot: OnnxPilot, frames: np.ndarray, source: str
) -> Agreement:
    """Compare the two on ``frames``; ``ValueError`` saying by how much when they disagree."""
    x = torch.from_numpy(np.ascontiguousarray(frames))
    with torch.inference_mode():
        nchw = preprocess(x.float().div(255.0), pilot.model.input_size)
        ref_raw = pilot.model(nchw).float().numpy()
    ref_action = pilot.predict(nchw)
    cpu_raw = pilot.model(x).float().detach().numpy()
    cpu_action = pilot.predict(frames)
    action, raw = onnx_pilot.predict(frames)
    one_action, one_raw = onnx_pilot.predict(frames[:1])  # batch 1, as on the car
    raw_diff = float(max(np.abs(raw - ref_raw).max(), np.abs(one_raw - ref_raw[:1]).max()))
    action_diff = float(
        max(np.abs(action - ref_action).max(), np.abs(one_action - ref_action[:1]).max())
    )
    exact = pilot.model.output_kind == "classes" and pilot.decode == "argmax"
    if not (np.isfinite(raw_diff) and raw_diff <= TOLERANCE):
        raise ValueError(
            f"export check failed: onnxruntime and torch differ by {raw_diff:.3g} on the raw "
            f"outputs of {len(frames)} {source} frames (tolerance {TOLERANCE:g}); nothing written"
        )
    if not (np.isfinite(action_diff) and action_diff <= (0.0 if exact else TOLERANCE)):
        raise ValueError(
            f"export check failed: onnxruntime and torch actions differ by {action_diff:.3g} on "
            f"{len(frames)} {source} frames (allowed {0 if exact else TOLERANCE:g}); nothing written"
        )
    return Agreement(
        frames=len(frames),
        source=source,
        raw_max_abs=raw_diff,
        action_max_abs=action_diff,
        cpu_raw_max_abs=float(np.abs(raw - cpu_raw).max()),
        cpu_action_agree=float(np.mean(np.all(np.abs(action - cpu_action) <= TOLERANCE, axis=1))),
    )


# --------------------------------------------------------------------------- export
@dataclass(frozen=True)
class ExportResult:
    path: Path
    sha256: str
    bytes: int
    metadata: dict[str, Any]
    agreement: Agreement


def _is_sb3_policy(checkpoint: str | Path) -> bool:
    from agents.registry import kind_of

    try:
        kind, _ = kind_of(checkpoint)
    except ValueError:
        return False  # load_pilot names the problem
    return kind.name == "sb3"


def _export_sb3(checkpoint: str | Path, out: Path, frames: np.ndarray | None) -> ExportResult:
    from agents.export_sb3 import check_exportable, describe_sb3, sb3_agreement, sb3_onnx
    from agents.registry import kind_of
    from agents.sb3_pilot import load_sb3_pilot

    pilot = load_sb3_pilot(kind_of(checkpoint)[1], device="cpu")
    check_exportable(pilot)
    meta = describe_sb3(pilot)
    data = sb3_onnx(pilot, meta, OPSET)
    onnx_pilot = OnnxPilot(out, data=data)
    source = "given"
    if frames is None:
        frames, source = rendered_frames(pilot.needs.image_size, CHECK_FRAMES), "rendered"
    worst = sb3_agreement(pilot, onnx_pilot, np.asarray(frames), TOLERANCE)
    try:
        atomic_write_bytes(out, data)
    except OSError as e:
        raise ValueError(os_error_line(e, out)) from None
    # SB3's predict is the reference: one number covers both the raw mean and the action.
    agreement = Agreement(len(frames), source, worst, worst, worst, 1.0)
    return ExportResult(out, onnx_pilot.sha256, len(data), meta, agreement)


def export_onnx(
    checkpoint: str | Path,
    out: str | Path,
    *,
    decode: str = "argmax",
    frames: np.ndarray | None = None,
) -> ExportResult:
    """Export ``checkpoint`` to ``out`` (written atomically, only once verified).

    ``frames`` (``uint8 [N, H, W, 3]`` at the pilot's camera) replaces the check frames
    (the training dataset's, else rendered)."""
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise ValueError(f"{out}: the output must be an .onnx file")
    check_output_file(out)
    if _is_sb3_policy(checkpoint):
        return _export_sb3(checkpoint, out, frames)
    pilot = load_pilot(checkpoint, device="cpu", decode=decode)
    camera = pilot.needs.camera
    meta = describe(pilot)
    data = build_onnx(pilot, meta)
    onnx_pilot = OnnxPilot(out, data=data)
    source = "given"
    if frames is None:
        frames = dataset_frames(pilot.record, camera, CHECK_FRAMES)
        source = "dataset"
    if frames is None:
        frames = rendered_frames(camera, CHECK_FRAMES)
        source = "rendered"
    agreement = check_agreement(pilot, onnx_pilot, np.asarray(frames), source)
    try:
        atomic_write_bytes(out, data)
    except OSError as e:
        raise ValueError(os_error_line(e, out)) from None
    return ExportResult(out, onnx_pilot.sha256, len(data), meta, agreement)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m agents.export",
        description="Export a CNN checkpoint to an ONNX model for the car (verified on export).",
    )
    p.add_argument("checkpoint", help="run directory (best.json), checkpoint .json or .safetensors")
    p.add_argument(
        "--format", choices=["onnx"], default="onnx", help="export format (default: %(default)s)"
    )
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument(
        "--decode",
        choices=["argmax", "expected"],
        default="argmax",
        help="classifiers: steer with the argmax bin or the expected value (default: %(default)s)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = export_onnx(args.checkpoint, args.out, decode=args.decode)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    a = result.agreement
    if "algo" in result.metadata:
        print(
            f"wrote {result.path} ({result.bytes / 1e6:.2f} MB, sha256 {result.sha256[:16]}); "
            f"onnxruntime vs SB3's predict on {a.frames} {a.source} frames (frame stack "
            f"{result.metadata['frame_stack']}, one reset mid-way): action max abs diff "
            f"{a.action_max_abs:.2e}"
        )
        return 0
    print(
        f"wrote {result.path} ({result.bytes / 1e6:.2f} MB, sha256 {result.sha256[:16]}); "
        f"onnxruntime vs torch on {a.frames} {a.source} frames: raw max abs diff "
        f"{a.raw_max_abs:.2e}, action {a.action_max_abs:.2e}; vs the CPU torch pilot "
        f"(uint8 resize) raw {a.cpu_raw_max_abs:.2e}, same action on "
        f"{100 * a.cpu_action_agree:.1f}% of frames"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main, note="nothing written"))
