"""Shared test fixtures (factories)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def make_circle_track() -> Callable[..., object]:
    """Factory: a circular ``tracks.Track`` (counter-clockwise unless ``ccw=False``)."""
    from tracks import Track

    def make(
        radius: float = 3.0,
        n: int = 48,
        half_width_left: float = 0.5,
        half_width_right: float = 0.5,
        ccw: bool = True,
        name: str = "circle",
    ) -> Track:
        th = 2 * np.pi * np.arange(n) / n
        if not ccw:
            th = -th
        pts = np.column_stack([radius * np.cos(th), radius * np.sin(th)])
        return Track(pts, half_width_left, half_width_right, name=name)

    return make


@pytest.fixture
def tiny_track() -> object:
    """A small, fast valid track (circle of radius 2 m, 1 m wide) for env/unit tests."""
    from tracks import Track

    th = 2 * np.pi * np.arange(32) / 32
    return Track(np.column_stack([2.0 * np.cos(th), 2.0 * np.sin(th)]), 0.5, 0.5, name="tiny")


@pytest.fixture
def run_module() -> Callable[..., subprocess.CompletedProcess]:
    """Factory: ``run_module("sim.record", "--out", d, cwd=tmp_path)`` runs ``python -m
    MODULE ARGS`` in a fresh interpreter (this checkout first on its path), output
    captured as text. ``unset`` names environment variables to leave out, ``env`` sets
    others."""

    def run(
        module: str,
        *args: str | Path,
        cwd: Path,
        env: dict[str, str] | None = None,
        unset: tuple[str, ...] = (),
        timeout: float = 600,
    ) -> subprocess.CompletedProcess:
        environ = {k: v for k, v in os.environ.items() if k not in unset}
        environ.update(env or {}, PYTHONPATH=str(REPO))
        return subprocess.run(
            [sys.executable, "-m", module, *map(str, args)],
            cwd=cwd,
            env=environ,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


@pytest.fixture
def make_cnn_checkpoint() -> Callable[..., object]:
    """Factory: a tiny untrained CNN checkpoint (``best.json`` + ``best.safetensors``)
    written into ``directory``; returns the directory (a pilot spec)."""

    def make(directory, arch: str = "compact", input_size=(24, 32), seed: int = 0):
        import torch

        from agents.cnn import write_checkpoint
        from agents.models import build_model

        torch.manual_seed(seed)
        model = build_model(arch, input_size=list(input_size), width=0.5, depth=3)
        directory.mkdir(parents=True, exist_ok=True)
        write_checkpoint(directory, "best", model.eval())
        return directory

    return make


@pytest.fixture(scope="session")
def ring_dataset(tmp_path_factory) -> Path:
    """Expert laps on a small ring track (a JSON track file, radius 2.5 m, 1 m wide): one
    lap counter-clockwise and one clockwise at 24x32, with executed-steering noise and
    drift (the labels stay clean), recorded by ``sim.record``. The track file is
    ``<dataset>/../ring.json``."""
    from agents.expert import ExpertConfig
    from sim.record import RecordConfig, record
    from tracks import Track
    from tracks.io import save_track_json

    root = tmp_path_factory.mktemp("ring")
    th = 2 * np.pi * np.arange(48) / 48
    ring = Track(np.column_stack([2.5 * np.cos(th), 2.5 * np.sin(th)]), 0.5, 0.5, name="ring")
    spec = str(root / "ring.json")
    save_track_json(ring, spec)
    cfg = RecordConfig(
        tracks=(spec,),
        laps=1,
        image_size=(24, 32),
        expert=ExpertConfig(steer_noise=0.05, drift_prob=0.05),
        start="line",
    )
    summary = record(cfg, root / "data", workers=1, progress=False)
    assert not summary["errors"], summary["errors"]
    return root / "data"
