"""Shared test fixtures (factories)."""

from __future__ import annotations

from collections.abc import Callable

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
