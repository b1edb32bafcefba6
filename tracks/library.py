"""Built-in tracks, sized for a 1:10 car (minimum turning radius about 0.8 m).

All are counter-clockwise as defined, start on a straight, have a road 0.8-1.5 m
wide and a centreline radius of at least 1.2 m. ``TRAIN_TRACKS`` and
``HELDOUT_TRACKS`` suggest a split: train on the first, evaluate on the second.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from tracks.segments import Segment, Straight, Turn, build_centreline
from tracks.track import Track

S = Straight
T = Turn


def _make(name: str, segments: list[Segment], width: float) -> Track:
    return Track(build_centreline(segments, spacing=0.1), width / 2, width / 2, name=name)


def oval() -> Track:
    """Plain oval: two 8 m straights joined by 180-degree turns of radius 2.5 m (~33 m)."""
    return _make(
        "oval",
        [S(4.0), T(180, 2.5, 1.0), S(8.0, free=True), T(180, 2.5, 1.0), S(4.0, free=True)],
        width=1.0,
    )


def kidney() -> Track:
    """Bean shape: an oval whose top side is pushed in by a concave right-hand bend
    (left 55, right 110, left 55 degrees), so it has both left and right bends."""
    return _make(
        "kidney",
        [
            S(4.0, free=True),
            T(180, 2.4, 1.0),
            S(1.5),
            T(55, 2.0, 0.8),
            T(-110, 2.0, 0.8),
            T(55, 2.0, 0.8),
            S(1.5),
            T(180, 2.4, 1.0),
            S(4.0, free=True),
        ],
        width=1.0,
    )


def hairpin() -> Track:
    """Technical: three 180-degree hairpins of radius 1.4 m (left, right, left) on a
    zig-zag, and a return leg down the side."""
    return _make(
        "hairpin",
        [
            S(6.0),
            T(180, 1.4, 0.6),
            S(4.0),
            T(-180, 1.4, 0.6),
            S(4.0),
            T(180, 1.4, 0.6),
            S(7.0, free=True),
            T(90, 1.8, 0.6),
            S(4.0, free=True),
            T(90, 1.8, 0.6),
        ],
        width=0.9,
    )


def speedway() -> Track:
    """Long and fast (~80 m): a 20 m front straight, wide 90-degree corners of radius
    4.5 m and a gentle right-left-right kink on the back straight."""
    return _make(
        "speedway",
        [
            S(10.0),
            T(90, 4.5, 2.0),
            S(3.0),
            T(90, 4.5, 2.0),
            S(3.0, free=True),
            T(-20, 7.0, 1.5),
            T(40, 7.0, 1.5),
            T(-20, 7.0, 1.5),
            S(3.0),
            T(90, 4.5, 2.0),
            S(3.0, free=True),
            T(90, 4.5, 2.0),
            S(10.0),
        ],
        width=1.4,
    )


def esses() -> Track:
    """S-bends: five alternating bends (left 50, right 100, left 100, right 100,
    left 50 degrees) on the front side, a plain return straight."""
    return _make(
        "esses",
        [
            S(3.0),
            T(50, 2.0, 0.8),
            T(-100, 2.0, 0.8),
            T(100, 2.0, 0.8),
            T(-100, 2.0, 0.8),
            T(50, 2.0, 0.8),
            S(3.0),
            T(180, 2.8, 1.0),
            S(10.0, free=True),
            T(180, 2.8, 1.0),
            S(2.0),
        ],
        width=1.0,
    )


def chicane() -> Track:
    """Held-out: an oval whose straights each carry a quick left-right-left chicane."""
    return _make(
        "chicane",
        [
            S(3.0),
            T(-35, 1.8, 0.6),
            T(70, 1.8, 0.6),
            T(-35, 1.8, 0.6),
            S(3.0),
            T(180, 2.4, 1.0),
            S(3.0, free=True),
            T(35, 1.8, 0.6),
            T(-70, 1.8, 0.6),
            T(35, 1.8, 0.6),
            S(3.0),
            T(180, 2.4, 1.0),
            S(1.0, free=True),
        ],
        width=0.9,
    )


def triangle() -> Track:
    """Held-out: a rounded triangle, three 120-degree corners of radius 2 m."""
    return _make(
        "triangle",
        [
            S(5.0),
            T(120, 2.0, 0.8),
            S(10.0, free=True),
            T(120, 2.0, 0.8),
            S(10.0, free=True),
            T(120, 2.0, 0.8),
            S(5.0),
        ],
        width=1.2,
    )


def sample_circuit() -> Track:
    """The club-circuit-like layout shipped as ``tracks/data/sample_circuit.csv``
    (F1TENTH format, ~48 m, road 0.97-1.23 m wide). Not in ``BUILTIN_TRACKS``: it
    exists to exercise the CSV importer. Regenerate the file with
    ``save_f1tenth_csv(sample_circuit(), "tracks/data/sample_circuit.csv", decimals=4)``.
    """
    xy = build_centreline(
        [
            S(7.0, free=True),
            T(100, 2.0, 0.8),
            S(2.5),
            T(-50, 3.0, 0.8),
            T(150, 1.5, 0.6),
            S(4.0),
            T(-40, 2.5, 0.8),
            T(70, 2.5, 0.8),
            S(3.0, free=True),
            T(130, 2.2, 0.8),
            S(2.0),
        ],
        spacing=0.5,
    )
    u = np.arange(len(xy)) / len(xy)
    w_left = 0.55 + 0.07 * np.sin(2 * np.pi * 3 * u)
    w_right = 0.55 + 0.07 * np.cos(2 * np.pi * 2 * u + 0.5)
    return Track(xy, w_left, w_right, name="sample_circuit")


def _cached(fn: Callable[[], Track]) -> Callable[[], Track]:
    # Tracks are immutable, so every caller may share one instance.
    return functools.cache(fn)


BUILTIN_TRACKS: dict[str, Callable[[], Track]] = {
    fn.__name__: _cached(fn) for fn in (oval, kidney, hairpin, speedway, esses, chicane, triangle)
}
TRAIN_TRACKS: tuple[str, ...] = ("oval", "kidney", "hairpin", "speedway", "esses")
HELDOUT_TRACKS: tuple[str, ...] = ("chicane", "triangle")


def builtin_names() -> list[str]:
    """Names of the built-in tracks."""
    return list(BUILTIN_TRACKS)


def get_track(name: str) -> Track:
    """The built-in track called ``name``; ValueError listing the names otherwise."""
    try:
        factory = BUILTIN_TRACKS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown track {name!r}; built-in tracks are: {', '.join(builtin_names())}"
        ) from None
    return factory()
