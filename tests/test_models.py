"""CNN architectures, preprocessing, steering classes and the checkpoint round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from agents.base import Pilot
from agents.cnn import CNNPilot, load_pilot, write_checkpoint
from agents.models import (
    ARCHITECTURES,
    build_model,
    decode_steering,
    make_class_values,
    mirror_class,
    preprocess,
    steering_to_class,
)

torch.set_num_threads(1)

SMALL = {
    "pilotnet": {"input_size": [66, 100]},
    "compact": {"input_size": [32, 40]},
    "compact_cls": {"input_size": [32, 40], "num_classes": 7},
    "resnet_cls": {"input_size": [32, 32], "width": 0.125, "depth": 1},
}


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_build_forward_and_rebuild_from_args(arch: str) -> None:
    torch.manual_seed(0)
    m = build_model(arch, **SMALL[arch]).eval()
    x = torch.randint(0, 256, (2, 24, 30, 3), dtype=torch.uint8)  # any camera size
    out = m(x)
    assert out.shape == (2, m.num_outputs)
    assert m.arch == arch
    json.dumps(m.args)  # JSON-able
    m2 = build_model(arch, **m.args)
    m2.load_state_dict(m.state_dict())
    m2.eval()
    assert torch.equal(m2(x), out)


def test_model_options() -> None:
    m = build_model("compact", input_size=[32, 40], batch_norm=False, dropout=0.0, width=0.5)
    assert not any(isinstance(mod, torch.nn.BatchNorm2d) for mod in m.modules())
    assert not any(isinstance(mod, torch.nn.Dropout) for mod in m.modules())
    m = build_model("pilotnet", input_size=[66, 100], predict_throttle=True)
    assert m.targets == ("steering", "throttle") and m.num_outputs == 2
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("vgg")
    with pytest.raises(ValueError, match="bad arguments"):
        build_model("compact", colour=True)
    with pytest.raises(ValueError, match="dropout"):
        build_model("compact", dropout=1.5)


def test_preprocess_layouts_agree() -> None:
    x = torch.randint(0, 256, (3, 20, 30, 3), dtype=torch.uint8)
    nhwc = preprocess(x, (20, 30))
    nchw = preprocess(x.permute(0, 3, 1, 2), (20, 30))
    single = preprocess(x[0], (20, 30))
    assert nhwc.shape == (3, 3, 20, 30) and nhwc.dtype == torch.float32
    assert torch.equal(nhwc, nchw) and torch.equal(single[0], nhwc[0])
    assert float(nhwc.max()) <= 1.0 and float(nhwc.min()) >= 0.0
    # Resizing from uint8 (fast CPU path) and from float agree up to rounding.
    small = preprocess(x, (10, 15))
    ref = preprocess(x.float() / 255, (10, 15))
    assert small.shape == (3, 3, 10, 15)
    assert float((small - ref).abs().max()) <= 1.5 / 255
    with pytest.raises(ValueError, match="RGB"):
        preprocess(torch.zeros(1, 5, 5, 4, dtype=torch.uint8), (5, 5))


def test_steering_classes_are_mirror_symmetric() -> None:
    cv = torch.tensor(make_class_values(15))
    assert cv[7] == 0 and cv[0] == -1 and cv[-1] == 1
    s = torch.linspace(-1, 1, 1001)
    idx = steering_to_class(s, cv)
    assert torch.equal(steering_to_class(-s, cv), mirror_class(idx, 15))
    # Ties (exact midpoints between bins) go towards zero on both sides.
    mid = float(cv[8] + cv[9]) / 2
    assert int(steering_to_class(torch.tensor([mid]), cv)) == 8
    assert int(steering_to_class(torch.tensor([-mid]), cv)) == 6


def test_decode_argmax_and_expected() -> None:
    m = build_model("compact_cls", input_size=[32, 40], num_classes=5)
    logits = torch.tensor([[0.0, 0.0, 0.0, 10.0, 0.0]])
    assert float(decode_steering(m, logits, "argmax")) == pytest.approx(0.5)
    e = float(decode_steering(m, logits, "expected"))
    assert 0.4 < e < 0.5


def test_checkpoint_round_trip_identical_predictions(tmp_path) -> None:
    torch.manual_seed(1)
    for arch in ("compact", "compact_cls"):
        m = build_model(arch, **SMALL[arch])
        # Non-trivial batch-norm statistics.
        m.train()
        m(torch.randint(0, 256, (8, 32, 40, 3), dtype=torch.uint8))
        m.eval()
        d = tmp_path / arch
        d.mkdir()
        write_checkpoint(d, "best", m, {"note": "test"})
        pilot = load_pilot(d)
        assert isinstance(pilot, Pilot)
        imgs = torch.randint(0, 256, (5, 32, 40, 3), dtype=torch.uint8)
        ref = CNNPilot(m).predict(imgs)
        assert np.array_equal(pilot.predict(imgs), ref)
        obs = imgs[0].numpy()
        a = pilot.act(obs, {})
        assert a.shape == (2,) and a.dtype == np.float32 and a[1] == 0.0
        assert a[0] == pytest.approx(ref[0, 0])
        meta = pilot.metadata()
        json.dumps(meta)
        assert meta["arch"] == arch and len(meta["checkpoint_sha256"]) == 64
        assert meta["output_kind"] == m.output_kind
        # Loading via the JSON or the safetensors path gives the same pilot.
        assert load_pilot(d / "best.safetensors").sha256 == pilot.sha256


def test_corrupt_or_missing_checkpoint_names_the_file(tmp_path) -> None:
    m = build_model("compact", **SMALL["compact"])
    write_checkpoint(tmp_path, "best", m)
    weights = tmp_path / "best.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="best.safetensors"):
        load_pilot(tmp_path)
    with pytest.raises(ValueError, match="nothing.json"):
        load_pilot(tmp_path / "nothing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        load_pilot(tmp_path / "bad.json")
