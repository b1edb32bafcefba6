"""Shared test fixtures (factories)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest


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
