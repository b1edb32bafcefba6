"""SB3 camera policies to ONNX (``agents.export`` -> ``agents.export_sb3``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from agents import registry  # noqa: E402
from agents.export import TOLERANCE, export_onnx, main  # noqa: E402
from agents.onnx_pilot import OnnxPilot  # noqa: E402
from agents.sb3_pilot import load_sb3_pilot  # noqa: E402
from training.rl import build_model, build_vec_env  # noqa: E402
from training.rl_config import RLConfig  # noqa: E402
from training.rl_model import export_policy  # noqa: E402

CAMERA = (36, 40)


def _policy(tmp_path: Path, **overrides) -> Path:
    """An untrained (random-weight) SB3 policy written as training.rl writes it."""
    cfg = RLConfig(
        tracks=("oval",), n_envs=1, seed=3, max_episode_steps=40, buffer_size=200, **overrides
    )
    venv, norm = build_vec_env(cfg)
    try:
        model = build_model(cfg, venv, tensorboard=False)
        return export_policy(cfg, model, norm, tmp_path, "policy")
    finally:
        venv.close()


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    from agents.export import rendered_frames

    return rendered_frames(CAMERA, 24)


@pytest.mark.parametrize(
    "overrides",
    [
        {"algo": "ppo", "frame_stack": 3},
        {"algo": "sac", "frame_stack": 2, "fixed_speed": None},
    ],
    ids=["ppo-stack3-steer", "sac-stack2-steer-throttle"],
)
def test_sb3_camera_policy_exports_and_drives_like_sb3(overrides, frames, tmp_path) -> None:
    src = _policy(tmp_path, obs="image", image_size=CAMERA, **overrides)
    result = export_onnx(src, tmp_path / "p.onnx", frames=frames)
    assert result.agreement.action_max_abs <= TOLERANCE
    meta = result.metadata
    assert meta["frame_stack"] == overrides["frame_stack"]
    assert meta["algo"] == overrides["algo"] and meta["mflop"] > 0
    pilot = registry.load_pilot(str(result.path))
    assert isinstance(pilot, OnnxPilot) and pilot.frame_stack == overrides["frame_stack"]
    assert pilot.needs.throttle == (overrides.get("fixed_speed", 2.0) is None)
    # Step by step through a frame sequence, resets included: the same actions as SB3's
    # own predict (the stack is the pilot's, not the caller's).
    sb3 = load_sb3_pilot(src)
    gaps = []
    for i, frame in enumerate(frames):
        if i in (7, 15):
            sb3.reset()
            pilot.reset()
        gaps.append(np.abs(sb3.act(frame, {}) - pilot.act(frame, {})).max())
    assert max(gaps) <= TOLERANCE
    # The stack matters: the same frame after different histories gives different actions
    # (were it ignored, the check above could not fail on stacking).
    pilot.reset()
    first = pilot.act(frames[-1], {})
    for f in frames[:5]:
        pilot.act(f, {})
    assert not np.allclose(first, pilot.act(frames[-1], {}), atol=1e-7)


def test_state_policies_are_refused_with_the_reason(tmp_path, capsys) -> None:
    src = _policy(tmp_path, obs="state")
    out = tmp_path / "p.onnx"
    assert main([str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "only camera policies" in err[0] and "state" in err[0]
    assert not out.exists()
