"""ONNX export (``agents.export``) and ONNX pilots (``agents.onnx_pilot``)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from agents import registry  # noqa: E402
from agents.cnn import write_checkpoint  # noqa: E402
from agents.export import TOLERANCE, export_onnx, main  # noqa: E402
from agents.models import build_model  # noqa: E402
from agents.onnx_pilot import METADATA_KEY, OnnxPilot  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CAMERA = (32, 40)
#: Heavy packages a car does not have; tracks stands for the rest of trackpilot.
BLOCKED = ("torch", "pybullet", "gymnasium", "safetensors", "matplotlib", "tracks", "sim")


def make_checkpoint(directory: Path, arch: str, input_size: tuple[int, int], **args) -> Path:
    """A tiny checkpoint with non-trivial batch-norm statistics, recorded at CAMERA."""
    torch.manual_seed(0)
    model = build_model(arch, input_size=list(input_size), **args).eval()
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    directory.mkdir(parents=True, exist_ok=True)
    write_checkpoint(directory, "best", model, {"dataset": {"image_size": list(CAMERA)}})
    return directory


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, tuple[Path, object]]:
    """compact (shrinks 32x40 to 24x32), compact_cls (enlarges to 48x64), resnet_cls."""
    root = tmp_path_factory.mktemp("export")
    specs = {
        "compact": ("compact", (24, 32), {}),
        "compact_cls": ("compact_cls", (48, 64), {"num_classes": 7}),
        "resnet_cls": ("resnet_cls", (24, 30), {"width": 0.125, "depth": 1}),
    }
    out = {}
    for name, (arch, size, args) in specs.items():
        ckpt = make_checkpoint(root / name, arch, size, **args)
        out[name] = (ckpt, export_onnx(ckpt, root / f"{name}.onnx"))
    return out


@pytest.mark.parametrize("name", ["compact", "compact_cls", "resnet_cls"])
def test_export_agrees_with_torch_on_rendered_frames(exported, name) -> None:
    ckpt, result = exported[name]
    a = result.agreement
    assert a.source == "rendered" and a.frames >= 24
    assert a.raw_max_abs <= TOLERANCE
    assert a.action_max_abs <= (0.0 if name != "compact" else TOLERANCE)
    meta = result.metadata
    assert meta["format"] == "trackpilot-onnx" and meta["version"] == 1
    assert meta["camera_size"] == list(CAMERA) and meta["obs_mode"] == "image"
    assert meta["throttle"] is False and meta["opset"] == 18
    record = json.loads((ckpt / "best.json").read_text())
    assert meta["source_sha256"] == record["weights_sha256"]
    assert meta["mflop"] > 0
    model = registry.load_pilot(str(ckpt)).model
    assert meta["num_parameters"] == sum(p.numel() for p in model.parameters())
    assert (
        result.path.read_bytes()
        and result.sha256 == hashlib.sha256(result.path.read_bytes()).hexdigest()
    )
    stored = json.loads(
        {p.key: p.value for p in onnx.load(result.path).metadata_props}[METADATA_KEY]
    )
    assert stored == meta


def test_onnx_pilot_drives_through_the_registry(exported, tiny_track) -> None:
    from evaluation.runner import run_closed_loop

    _, result = exported["compact_cls"]
    pilot = registry.load_pilot(str(result.path))
    assert isinstance(pilot, OnnxPilot)
    assert pilot.needs.image_size == CAMERA and not pilot.needs.throttle
    meta = pilot.metadata()
    assert meta["kind"] == "onnx" and meta["runtime"] == "onnxruntime"
    assert meta["checkpoint_sha256"] == result.sha256
    assert meta["source_sha256"] == result.metadata["source_sha256"]
    assert meta["threads"] == 1 and meta["device"] == "cpu"
    # The chooser's figures: parameters (from the export) and the model file's size.
    assert meta["num_parameters"] == result.metadata["num_parameters"] > 0
    assert meta["model_bytes"] == result.path.stat().st_size
    cnn = registry.load_pilot(str(exported["compact_cls"][0])).metadata()
    assert cnn["model_bytes"] == (exported["compact_cls"][0] / "best.safetensors").stat().st_size
    r = run_closed_loop(pilot, tiny_track, laps=1, max_time_s=0.5, record_trajectory=False)
    assert r.image_size == list(CAMERA)
    a = pilot.act(np.zeros((*CAMERA, 3), np.uint8), {})
    assert a.dtype == np.float32 and a.shape == (2,) and a[1] == 0.0
    with pytest.raises(ValueError, match="camera image"):
        pilot.act(np.zeros((10, 10, 3), np.uint8), {})


def _with_metadata(src: Path, dst: Path, change) -> Path:
    model = onnx.load(src)
    props = {p.key: p.value for p in model.metadata_props}
    del model.metadata_props[:]
    meta = change(json.loads(props[METADATA_KEY]))
    if meta is not None:
        onnx.helper.set_model_props(model, {METADATA_KEY: json.dumps(meta)})
    dst.write_bytes(model.SerializeToString())
    return dst


def test_bad_onnx_files_are_one_clear_error(exported, tmp_path) -> None:
    _, result = exported["compact"]
    data = result.path.read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 3])
    (tmp_path / "junk.onnx").write_bytes(b"not a model at all")
    cases = {
        "cut.onnx": "not a loadable ONNX model",
        "junk.onnx": "not a loadable ONNX model",
    }
    _with_metadata(result.path, tmp_path / "bare.onnx", lambda m: None)
    cases["bare.onnx"] = "no 'trackpilot' metadata"
    _with_metadata(result.path, tmp_path / "v2.onnx", lambda m: {**m, "version": 2})
    cases["v2.onnx"] = "version 2; this trackpilot reads version 1"
    _with_metadata(result.path, tmp_path / "cam.onnx", lambda m: {**m, "camera_size": [0, 40]})
    cases["cam.onnx"] = "camera_size sides must be in"
    _with_metadata(result.path, tmp_path / "size.onnx", lambda m: {**m, "camera_size": [30, 40]})
    cases["size.onnx"] = "the metadata's camera_size and frame_stack say"
    _with_metadata(result.path, tmp_path / "stack.onnx", lambda m: {**m, "frame_stack": 2})
    cases["stack.onnx"] = r"frame_stack say \[N, 32, 40, 6\]"
    _with_metadata(result.path, tmp_path / "stack0.onnx", lambda m: {**m, "frame_stack": 0})
    cases["stack0.onnx"] = "frame_stack must be a whole number"
    _with_metadata(result.path, tmp_path / "fmt.onnx", lambda m: {**m, "format": "other"})
    cases["fmt.onnx"] = "not a trackpilot ONNX model"
    for name, message in cases.items():
        with pytest.raises(ValueError, match=message) as e:
            registry.load_pilot(str(tmp_path / name))
        assert str(tmp_path / name) in str(e.value) and "\n" not in str(e.value)


def test_export_cli_errors_leave_no_file(exported, tmp_path, capsys, monkeypatch) -> None:
    ckpt, _ = exported["compact"]
    assert main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "a.onnx")]) == 2
    assert main([str(ckpt), "--out", str(tmp_path / "a.txt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)
    monkeypatch.setattr("agents.export.TOLERANCE", -1.0)
    assert main([str(ckpt), "--out", str(tmp_path / "a.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert "export check failed" in err and "differ by" in err and "\n" not in err
    assert not any(tmp_path.iterdir())


def _blocked_python(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run ``code`` with the heavy packages (and the rest of trackpilot) unimportable."""
    launcher = tmp_path / "launch.py"
    launcher.write_text(
        f"import sys\nfor name in {BLOCKED!r}:\n    sys.modules[name] = None\n"
        + textwrap.dedent(code)
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(launcher)], capture_output=True, text=True, env=env, timeout=120
    )


def test_onnx_pilot_imports_only_numpy_and_onnxruntime(exported, tmp_path) -> None:
    _, result = exported["compact"]
    proc = _blocked_python(
        f"""
        import numpy as np
        import agents.onnx_pilot as op
        pilot = op.OnnxPilot({str(result.path)!r})
        a = pilot.act(np.full(({CAMERA[0]}, {CAMERA[1]}, 3), 128, np.uint8), {{}})
        assert a.shape == (2,), a
        for name in {BLOCKED!r}:
            assert sys.modules[name] is None, name
        print("ok", pilot.name)
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok ")


def test_needs_image_size_follows_tracks_parse_size() -> None:
    from agents.needs import image_size
    from tracks.common import parse_size

    for value in ("120x160", (96, 96), [1, 1024]):
        assert image_size(value) == parse_size(value)
    for value in ("120", (0, 5), (True, 3), (1.5, 2), (1025, 1), "axb", None):
        with pytest.raises(ValueError):
            parse_size(value)
        with pytest.raises(ValueError):
            image_size(value)
