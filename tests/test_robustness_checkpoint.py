"""Saved pilots are checked before a network is built from them.

Real checkpoints (``agents.cnn.write_checkpoint``, ``agents.sb3_pilot.write_sb3_policy``)
edited on disk: a missing ``input_size`` or ``preprocessing``, a bogus ``output.kind``, a
4000x4000 input, JSON too big, too deep or with NaN, weights too large. Each is one
``ValueError`` naming the file and the field, raised in well under a second.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from gymnasium import spaces

from agents import base
from agents.cnn import load_pilot, write_checkpoint
from agents.models import build_model

torch.set_num_threads(1)


def _deep(n: int) -> Any:
    out: Any = 0
    for _ in range(n):
        out = [out]
    return out


def _set(path: str, value: Any) -> Callable[[dict], None]:
    """An edit of ``record`` at the dotted ``path`` (``value`` ``...`` deletes it)."""

    def edit(record: dict) -> None:
        *parents, last = path.split(".")
        d = record
        for p in parents:
            d = d[p]
        if value is ...:
            del d[last]
        else:
            d[last] = value

    return edit


def _both_sizes(size: list) -> Callable[[dict], None]:
    def edit(record: dict) -> None:
        record["input_size"] = size
        record["args"]["input_size"] = size

    return edit


@pytest.fixture(scope="module")
def cnn_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("cnn")
    write_checkpoint(d, "best", build_model("compact_cls", input_size=[32, 40], num_classes=7))
    return d


@pytest.fixture
def cnn(tmp_path: Path, cnn_dir: Path) -> Path:
    """A fresh copy of the good checkpoint, to edit."""
    for f in ("best.json", "best.safetensors"):
        (tmp_path / f).write_bytes((cnn_dir / f).read_bytes())
    return tmp_path / "best.json"


CNN_CASES: dict[str, tuple[Callable[[dict], None], str]] = {
    "no-input_size": (_set("input_size", ...), "lacks 'input_size'"),
    "no-preprocessing": (_set("preprocessing", ...), "lacks 'preprocessing'"),
    "bogus-output-kind": (_set("output.kind", "bogus"), "output.kind must be one of"),
    "regression-with-class-values": (
        _set("output.kind", "regression"),
        "output.class_values must be null for regression",
    ),
    "wrong-output-kind": (
        lambda r: r["output"].update(kind="regression", class_values=None),
        "output.kind says 'regression', the model has 'classes'",
    ),
    "no-output-targets": (_set("output.targets", ...), "output.targets"),
    "throttle-classifier": (_set("output.targets", ["steering", "throttle"]), "output.targets"),
    "bad-class-values": (_set("output.class_values", [0.0, "x"]), "output.class_values"),
    "other-class-values": (
        _set("output.class_values", [-0.9, -0.5, -0.2, 0.0, 0.2, 0.5, 0.9]),
        "output.class_values says",
    ),
    "4000x4000": (_both_sizes([4000, 4000]), "input_size sides must be in [1, 1024]"),
    "4000x4000-top-only": (_set("input_size", [4000, 4000]), "input_size sides must be in"),
    "4000x4000-args-only": (_set("args.input_size", [4000, 4000]), "args.input_size sides"),
    "fractional-size": (_both_sizes([32.5, 40]), "input_size must be two whole numbers"),
    "string-size": (_both_sizes("32x40"), "input_size must be [H, W], got '32x40'"),
    "sizes-disagree": (_set("input_size", [40, 32]), "args.input_size [32, 40] disagrees"),
    "preprocessing-not-object": (_set("preprocessing", "imagenet"), "preprocessing must be"),
    "short-mean": (_set("preprocessing.normalize.mean", [0.5, 0.5]), "normalize.mean"),
    "zero-std": (
        _set("preprocessing.normalize.std", [0.0, 1.0, 1.0]),
        "std must be 3 finite numbers > 0",
    ),
    "other-mean": (_set("preprocessing.normalize.mean", [0.1, 0.2, 0.3]), "normalize.mean says"),
    "args-not-object": (_set("args", [1, 2]), "args must be an object"),
    "nested-100": (_set("extra_note", _deep(100)), "nested more than 64 levels"),
    # bounded on the bytes, before parsing: the parser's recursion is never reached
    "nested-100000": (None, "nested more than 64 levels"),
    "nan": (None, "NaN is not JSON"),
    "too-big": (None, "more than the 16 MiB"),
}


@pytest.mark.parametrize("case", sorted(CNN_CASES))
def test_cnn_checkpoint_field_problems_are_one_value_error(case: str, cnn: Path) -> None:
    edit, words = CNN_CASES[case]
    record = json.loads(cnn.read_text())
    if edit is not None:
        edit(record)
        cnn.write_text(json.dumps(record))
    elif case == "nested-100000":
        text = json.dumps(record)
        cnn.write_text(text[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    elif case == "nan":
        record["output"]["class_values"][0] = float("nan")
        cnn.write_text(json.dumps(record))  # Python writes NaN; strict JSON has none
    elif case == "too-big":
        record["padding"] = "x" * (17 << 20)
        cnn.write_text(json.dumps(record))
    t0 = time.perf_counter()
    with pytest.raises(ValueError) as exc:
        load_pilot(cnn)
    took = time.perf_counter() - t0
    msg = str(exc.value)
    assert msg.startswith(str(cnn)) and words in msg, msg
    assert "\n" not in msg and took < 2.0, took


def test_a_good_checkpoint_still_loads(cnn: Path) -> None:
    pilot = load_pilot(cnn)
    assert pilot.model.input_size == (32, 40)
    assert pilot.metadata()["output_kind"] == "classes"
    a = pilot.act(np.zeros((120, 160, 3), np.uint8), {})
    assert a.shape == (2,)


def test_weights_larger_than_the_bound_are_refused_unread(cnn: Path) -> None:
    weights = cnn.with_suffix(".safetensors")
    os.truncate(weights, base.MAX_WEIGHTS_BYTES + 1)  # sparse: nothing is written
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"best\.safetensors: \d+ bytes, more than the 2 GiB"):
        load_pilot(cnn)
    assert time.perf_counter() - t0 < 1.0


# ----------------------------------------------------------------------------- SB3
@pytest.fixture(scope="module")
def sb3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from stable_baselines3.common.policies import ActorCriticCnnPolicy, ActorCriticPolicy

    from agents.sb3_pilot import describe_policy, write_sb3_policy

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("sb3")
    act = spaces.Box(-1.0, 1.0, (1,), np.float32)
    state = spaces.Box(-5.0, 5.0, (7,), np.float32)
    mlp = ActorCriticPolicy(state, act, lambda _: 0.0, net_arch=[8])
    rec = describe_policy(
        mlp, algo="ppo", obs_mode="state", observation_space=state, fixed_speed=2.0
    )
    write_sb3_policy(d, "state", rec, mlp)
    image = spaces.Box(0, 255, (36, 36, 3), np.uint8)
    chw = spaces.Box(0, 255, (3, 36, 36), np.uint8)
    cnn = ActorCriticCnnPolicy(chw, act, lambda _: 0.0, net_arch=[8], features_extractor_kwargs={"features_dim": 16})  # fmt: skip
    rec = describe_policy(
        cnn, algo="ppo", obs_mode="image", observation_space=image, fixed_speed=2.0
    )
    write_sb3_policy(d, "image", rec, cnn)
    return d


@pytest.fixture
def sb3(tmp_path: Path, sb3_dir: Path) -> Path:
    for f in sb3_dir.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    return tmp_path


SB3_CASES: dict[str, tuple[str, Callable[[dict], None], str]] = {
    "image-4000x4000": (
        "image",
        lambda r: (
            r["observation_space"].update(shape=[4000, 4000, 3]),
            r["policy_observation_space"].update(shape=[3, 4000, 4000]),
        ),
        "observation_space is not a valid space (Box shape must be",
    ),
    "policy-space-4000": (
        "image",
        lambda r: r["policy_observation_space"].update(shape=[3, 4000, 4000]),
        "policy_observation_space is not a valid space",
    ),
    "fractional-shape": (
        "state",
        lambda r: r["observation_space"].update(shape=[7.5]),
        "observation_space is not a valid space",
    ),
    "frame-stack-0": ("state", _set("frame_stack", 0), "frame_stack must be"),
    "frame-stack-huge": ("state", _set("frame_stack", 10**6), "frame_stack must be"),
    "bogus-algo": ("state", _set("algo", "dqn"), "algo must be one of"),
    "bogus-obs-mode": ("state", _set("obs_mode", "lidar"), "obs_mode must be one of"),
    "action-shape": (
        "state",
        lambda r: r["action_space"].update(shape=[3]),
        "action_space must be a Box of shape",
    ),
    "fixed-speed-nan-ish": ("state", _set("fixed_speed", 1e9), "fixed_speed must be"),
    "obs-norm-bad": ("state", _set("obs_norm", {"clip": -1}), "obs_norm must be"),
    "no-policy-kwargs": ("state", _set("policy_kwargs", ...), "lacks 'policy_kwargs'"),
    "nested-100": ("state", _set("config", _deep(100)), "nested more than 64 levels"),
    "deep-dict-spaces": (
        "state",
        lambda r: r.update(observation_space={"type": "Dict", "spaces": {}}),
        "observation_space is not a valid space (Dict spaces must be",
    ),
}


@pytest.mark.parametrize("case", sorted(SB3_CASES))
def test_sb3_policy_field_problems_are_one_value_error(case: str, sb3: Path) -> None:
    from agents.sb3_pilot import load_sb3_pilot

    which, edit, words = SB3_CASES[case]
    path = sb3 / f"{which}.json"
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))
    t0 = time.perf_counter()
    with pytest.raises(ValueError) as exc:
        load_sb3_pilot(path)
    msg = str(exc.value)
    assert msg.startswith(str(path)) and words in msg, msg
    assert "\n" not in msg and time.perf_counter() - t0 < 2.0


def test_sb3_json_bounds_are_shared(sb3: Path) -> None:
    from agents.sb3_pilot import load_sb3_pilot

    path = sb3 / "state.json"
    text = path.read_text()
    path.write_text(text[:-2] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ValueError, match="nested more than 64 levels"):
        load_sb3_pilot(path)
    path.write_text(text[:-2] + ', "x": "' + "y" * (17 << 20) + '"}')
    with pytest.raises(ValueError, match="more than the 16 MiB"):
        load_sb3_pilot(path)
    path.write_text(text)
    os.truncate(sb3 / "state.safetensors", base.MAX_WEIGHTS_BYTES + 1)
    with pytest.raises(ValueError, match="more than the 2 GiB"):
        load_sb3_pilot(path)


def test_good_sb3_policies_still_load(sb3: Path) -> None:
    from agents.sb3_pilot import load_sb3_pilot

    state = load_sb3_pilot(sb3 / "state.json")
    assert state.act(np.zeros(7, np.float32), {}).shape == (2,)
    image = load_sb3_pilot(sb3 / "image.json")
    assert image.needs.image_size == (36, 36)
    assert image.act(np.zeros((36, 36, 3), np.uint8), {}).shape == (2,)
