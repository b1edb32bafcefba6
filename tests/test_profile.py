"""Latency profiles on the car (``evaluation.profile``): timing, the file, its reader."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from evaluation.profile import (  # noqa: E402
    PROFILE_FORMAT,
    main,
    profile_matches,
    read_profile,
    time_calls,
)

ROOT = Path(__file__).resolve().parents[1]
CAMERA = (32, 40)
BLOCKED = ("torch", "pybullet", "gymnasium", "safetensors", "matplotlib", "tracks", "sim")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> tuple[Path, Path]:
    """(checkpoint directory, its .onnx export): compact, 32x40 camera, 24x32 input."""
    import torch

    from agents.cnn import write_checkpoint
    from agents.export import export_onnx
    from agents.models import build_model

    root = tmp_path_factory.mktemp("profile")
    torch.manual_seed(0)
    ckpt = root / "run"
    ckpt.mkdir()
    net = build_model("compact", input_size=[24, 32]).eval()
    write_checkpoint(ckpt, "best", net, {"dataset": {"image_size": list(CAMERA)}})
    frames = np.random.default_rng(0).integers(0, 256, (4, *CAMERA, 3), dtype=np.uint8)
    export_onnx(ckpt, root / "model.onnx", frames=frames)
    return ckpt, root / "model.onnx"


def test_onnx_profile_round_trips(model, tmp_path, capsys) -> None:
    ckpt, onnx_path = model
    out = tmp_path / "profile.json"
    assert main([str(onnx_path), "--out", str(out), "--frames", "200", "--warmup", "3"]) == 0
    line = capsys.readouterr().out.strip()
    assert "median" in line and "p99" in line and "overhead" in line
    doc = json.loads(out.read_text())
    assert doc["format"] == PROFILE_FORMAT and doc["schema_version"] == 1
    assert doc["runtime"] == "onnxruntime" and doc["pilot_kind"] == "onnx"
    assert doc["frames"] == 200 == len(doc["samples_ms"]) and doc["warmup"] == 3
    assert doc["camera_size"] == list(CAMERA) and doc["threads"] == 1
    assert set(doc["libraries"]) == {"python", "numpy", "onnxruntime"}
    assert len(doc["device"]["fingerprint"]) == 16 and doc["device"]["cores"] == os.cpu_count()
    assert 0 < doc["profiler_overhead_ms"] < doc["median_ms"]
    weights = json.loads((ckpt / "best.json").read_text())["weights_sha256"]
    onnx_sha = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    p = read_profile(out)
    assert p.model_sha256 == onnx_sha and p.source_sha256 == weights
    assert p.samples_s.dtype == np.float64 and len(p.samples_s) == 200
    assert p.median_s == pytest.approx(doc["median_ms"] / 1e3)
    assert p.max_s == pytest.approx(doc["max_ms"] / 1e3)
    assert p.sha256 == hashlib.sha256(out.read_bytes()).hexdigest()
    assert p.camera_size == CAMERA and p.runtime == "onnxruntime"
    assert profile_matches(p, onnx_sha) and profile_matches(p, weights)
    assert not profile_matches(p, "0" * 64) and not profile_matches(p, None)


def test_torch_profile_names_the_checkpoint(model, tmp_path) -> None:
    ckpt, _ = model
    out = tmp_path / "torch.json"
    frames = np.random.default_rng(1).integers(0, 256, (5, *CAMERA, 3), dtype=np.uint8)
    np.save(tmp_path / "frames.npy", frames)
    argv = [str(ckpt), "--out", str(out), "--runtime", "torch", "--frames", "200"]
    assert main([*argv, "--frames-file", str(tmp_path / "frames.npy"), "--warmup", "0"]) == 0
    p = read_profile(out)
    weights = json.loads((ckpt / "best.json").read_text())["weights_sha256"]
    assert p.runtime == "torch" and p.model_sha256 == p.source_sha256 == weights
    assert set(json.loads(out.read_text())["libraries"]) == {"python", "numpy", "torch"}


def test_profile_command_line_errors(model, tmp_path, capsys) -> None:
    ckpt, onnx_path = model
    out = tmp_path / "p.json"
    np.save(tmp_path / "small.npy", np.zeros((3, 8, 8, 3), np.uint8))
    np.save(tmp_path / "float.npy", np.zeros((3, *CAMERA, 3), np.float32))
    cases = [
        ([str(onnx_path), "--frames", "100"], "frames must be in [200"),
        ([str(ckpt), "--runtime", "onnxruntime"], "python -m agents.export"),
        ([str(onnx_path), "--runtime", "torch"], "runs on onnxruntime"),
        ([str(onnx_path), "--frames-file", str(tmp_path / "small.npy")], "frames must be uint8"),
        ([str(onnx_path), "--frames-file", str(tmp_path / "float.npy")], "frames must be uint8"),
        ([str(tmp_path / "none.onnx")], "cannot read the ONNX model"),
    ]
    for argv, message in cases:
        assert main([*argv, "--out", str(out)]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, (argv, err)
    assert not out.exists()


def _valid(samples: list[float]) -> dict:
    ms = np.asarray(samples)
    return {
        "format": PROFILE_FORMAT,
        "schema_version": 1,
        "pilot": "p",
        "pilot_kind": "onnx",
        "model_sha256": "a" * 64,
        "source_sha256": "b" * 64,
        "runtime": "onnxruntime",
        "device": {"description": "a machine", "fingerprint": "0" * 16},
        "camera_size": [32, 40],
        "samples_ms": samples,
        "median_ms": float(np.median(ms)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
    }


def test_malformed_profiles_are_refused(tmp_path) -> None:
    good = _valid([1.0, 2.0, 3.0, 4.0])
    (tmp_path / "good.json").write_text(json.dumps(good))
    assert read_profile(tmp_path / "good.json").median_s == pytest.approx(2.5e-3)
    texts = {
        "junk": ("{not json", "unreadable latency profile"),
        "nan": (json.dumps(good).replace("[1.0, 2.0", "[NaN, 2.0"), "numbers must be finite"),
        "deep": ("[" * 100_000, "latency profile"),
    }
    docs = {
        "version": (
            {**good, "schema_version": 2},
            "schema_version 2; this trackpilot reads version 1",
        ),
        "format": ({**good, "format": "x"}, "is not one"),
        "negative": ({**_valid([1.0, -2.0]), "median_ms": 1.0}, "sample of -2.0 ms"),
        "zero": (_valid([0.0, 1.0]), "sample of 0.0 ms"),
        "slow": (_valid([1.0, 20_000.0]), "sample of 20000.0 ms"),
        "empty": ({**good, "samples_ms": []}, "1 to 1000000 numbers"),
        "many": (_valid([1.0] * 1_000_001), "1 to 1000000 numbers"),
        "text": ({**good, "samples_ms": ["1"]}, "numbers only"),
        "summary": ({**good, "median_ms": 9.0}, "median_ms = 9.0 does not match"),
        "sha": ({**good, "model_sha256": "xyz"}, "model_sha256 must be 64 hex"),
        "camera": ({**good, "camera_size": [0, 40]}, "camera_size"),
    }
    for name, (doc, message) in docs.items():
        texts[name] = (json.dumps(doc), message)
    for name, (text, message) in texts.items():
        path = tmp_path / f"{name}.json"
        path.write_text(text)
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")) as e:
            read_profile(path)
        assert str(path) in str(e.value) and "\n" not in str(e.value), name


def test_time_calls_gives_each_call_another_frame() -> None:
    seen: list[int] = []
    obs = [np.full(1, i) for i in range(7)]
    samples = time_calls(lambda o, info: seen.append(int(o[0])), obs, frames=10, warmup=2)
    assert samples.shape == (10,) and np.all(samples >= 0)
    assert all(a != b for a, b in zip(seen, seen[1:], strict=False))


def test_profiler_runs_on_the_car_without_torch_or_trackpilot(model, tmp_path) -> None:
    """``python -m evaluation.profile model.onnx`` with only numpy and onnxruntime."""
    _, onnx_path = model
    out = tmp_path / "car.json"
    launcher = tmp_path / "launch.py"
    launcher.write_text(
        "import runpy, sys\n"
        f"for name in {BLOCKED!r}:\n    sys.modules[name] = None\n"
        f"sys.argv = ['profile', {str(onnx_path)!r}, '--out', {str(out)!r}, '--frames', '200']\n"
        "runpy.run_module('evaluation.profile', run_name='__main__')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(launcher)], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "median" in proc.stdout
    assert read_profile(out).runtime == "onnxruntime"
