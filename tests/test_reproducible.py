"""Reproducibility that does not depend on incidental order: the same episodes give the
same training data however the manifest lists them (parallel recorders finish in any
order)."""

from __future__ import annotations

import json
import shutil

import numpy as np

from training.config import TrainConfig
from training.prepare import prepare_data
from training.synthetic import make_synthetic_dataset


def test_training_frames_do_not_depend_on_manifest_order(tmp_path) -> None:
    a = tmp_path / "a"
    make_synthetic_dataset(a, episodes=8, frames=12, size=(16, 20), seed=5)
    b = tmp_path / "b"
    shutil.copytree(a, b)
    manifest = json.loads((b / "manifest.json").read_text())
    manifest["episodes"] = manifest["episodes"][::-1]  # as if the recorders finished reversed
    (b / "manifest.json").write_text(json.dumps(manifest))
    runs = [
        prepare_data(TrainConfig(data=str(root), out=str(tmp_path / "run"), progress=False))
        for root in (a, b)
    ]
    assert runs[0].keys("train") == runs[1].keys("train")
    assert runs[0].keys("train") == sorted(runs[0].keys("train"))
    for part in ("train", "dev"):
        x, y = getattr(runs[0], part), getattr(runs[1], part)
        np.testing.assert_array_equal(x.images.numpy(), y.images.numpy())
        np.testing.assert_array_equal(x.steering.numpy(), y.steering.numpy())
