"""The classical Scharr-edge lane follower on synthetic road images."""

from __future__ import annotations

import numpy as np
import pytest

from agents.base import Pilot
from agents.classical import EdgePilot, find_lines, scharr_x
from training.synthetic import render_road

SIZES = [(120, 160), (64, 64), (96, 96)]


def steer(image: np.ndarray) -> float:
    return float(EdgePilot().act(image, {})[0])


def test_scharr_and_line_finder() -> None:
    row = np.zeros((3, 40), dtype=np.float32)
    row[:, 18:21] = 1.0  # a 3-pixel bright line
    gx = scharr_x(row)[1]
    assert gx[17] > 0 and gx[21] < 0
    lines = find_lines(gx, 0.1, 6)
    assert len(lines) == 1 and lines[0][2] == pytest.approx(19.0)


@pytest.mark.parametrize("size", SIZES)
def test_steers_towards_the_road(size) -> None:
    assert abs(steer(render_road(size))) < 0.05
    # Road displaced to the right in the image: the car is left of it, steer right (-).
    assert steer(render_road(size, offset=0.2)) < -0.02
    assert steer(render_road(size, offset=-0.2)) > 0.02
    # A bend to the right ahead: steer right.
    assert steer(render_road(size, curve=0.4)) < -0.02
    assert steer(render_road(size, curve=-0.4)) > 0.02


@pytest.mark.parametrize("size", SIZES)
def test_one_edge_missing(size) -> None:
    for kw in ({"left_edge": False}, {"right_edge": False}):
        assert steer(render_road(size, offset=0.2, **kw)) < -0.02
        assert steer(render_road(size, offset=-0.2, **kw)) > 0.02
        assert steer(render_road(size, curve=0.4, **kw)) < -0.02
    # No centre line and one edge: the road width learnt on an earlier frame is used.
    p = EdgePilot()
    p.act(render_road(size), {})
    assert p.act(render_road(size, offset=0.2, centre_line=False, left_edge=False), {})[0] < -0.02
    p.reset()
    p.act(render_road(size), {})
    assert p.act(render_road(size, offset=-0.2, centre_line=False, right_edge=False), {})[0] > 0.02


def test_protocol_and_lost_lines() -> None:
    p = EdgePilot()
    assert isinstance(p, Pilot)
    a = p.act({"image": render_road((64, 64), offset=0.2)}, {})
    assert a.shape == (2,) and a[1] == 0.0
    before = float(a[0])
    grass = np.zeros((64, 64, 3), dtype=np.uint8)
    grass[:] = (82, 133, 71)
    b = p.act(grass, {})
    assert p.last_debug["lost"] and abs(b[0]) < abs(before)
    assert p.metadata()["kind"] == "classical"
    with pytest.raises(ValueError):
        p.act(np.zeros((4, 4)), {})
