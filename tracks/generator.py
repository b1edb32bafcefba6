"""Seeded procedural tracks that always pass ``validate_track``, the one drivability
check, at design targets (1.2 m radius, 1 m road) stricter than the car needs."""

from __future__ import annotations

import logging

import numpy as np

from tracks.limits import MIN_HALF_WIDTH, MIN_TURNING_RADIUS
from tracks.track import Track
from tracks.validate import validate_track

logger = logging.getLogger(__name__)


def generate_track(
    seed: int,
    *,
    n_control: int = 12,
    mean_radius: float = 5.5,
    roughness: float = 0.35,
    width: float = 1.0,
    min_radius: float = 1.2,
    margin: float = 0.1,
    max_attempts: int = 60,
) -> Track:
    """A random closed, counter-clockwise track named ``gen-<seed>``.

    Control points sit on a circle of ``mean_radius`` metres whose radius is modulated
    by random low harmonics (2 to 4 lobes, giving concave sections and S-bends) plus a
    little per-point noise and angular jitter; a periodic spline goes through them.
    A candidate that fails ``validate_track(track, min_radius, margin)`` is replaced by
    a new draw from a sub-seed ``(seed, attempt)`` with the shape amplitude shrunk a
    little each time, so the result is deterministic and always drivable.

    Args:
        seed: non-negative integer; the same seed gives the same geometry (hash).
        n_control: control points on the loop (>= 6).
        mean_radius: radius of the base circle, metres (length is about 2 pi times it).
        roughness: amplitude of the radial modulation, as a fraction of mean_radius.
        width: full road width, metres (at least twice ``tracks.limits.MIN_HALF_WIDTH``).
        min_radius: smallest allowed centreline radius, metres (at least the car's
            turning radius, ``tracks.limits.MIN_TURNING_RADIUS``).
        margin: clearance used by the validation, metres.
        max_attempts: draws before giving up with a ValueError.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(n_control, int | np.integer) or n_control < 6:
        raise ValueError(f"n_control must be an integer >= 6, got {n_control!r}")
    if not (width > 0 and min_radius > 0 and margin >= 0):
        raise ValueError("width and min_radius must be positive and margin non-negative")
    if width / 2 < MIN_HALF_WIDTH:
        raise ValueError(
            f"width {width:g} m is below the {2 * MIN_HALF_WIDTH:g} m the car needs "
            f"(half width {MIN_HALF_WIDTH:g} m each side)"
        )
    if min_radius < MIN_TURNING_RADIUS:
        raise ValueError(
            f"min_radius {min_radius:g} m is below the car's turning radius "
            f"{MIN_TURNING_RADIUS:.2f} m"
        )
    if width / 2 + margin >= min_radius:
        raise ValueError(
            f"half width {width / 2:g} m + margin {margin:g} m must be below min_radius {min_radius:g} m"
        )
    if mean_radius < 2 * (min_radius + width / 2 + margin):
        raise ValueError(
            f"mean_radius {mean_radius:g} m is too small for min_radius {min_radius:g} m and "
            f"width {width:g} m (need >= {2 * (min_radius + width / 2 + margin):g} m)"
        )
    if not 0 <= roughness < 1:
        raise ValueError(f"roughness must be in [0, 1), got {roughness!r}")

    seed = int(seed)
    problems: list[str] = []
    for attempt in range(max_attempts):
        rng = np.random.default_rng([seed, attempt])
        amp = roughness * 0.95**attempt
        n = int(n_control)
        theta = 2 * np.pi * np.arange(n) / n
        theta = theta + rng.uniform(-0.25, 0.25, n) * (2 * np.pi / n)
        theta[0] = 0.0  # start on the +x axis, heading roughly +y
        r = np.ones(n)
        for k in (2, 3, 4):
            r += rng.uniform(0.0, amp / (k - 1)) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
        r += rng.uniform(-0.15, 0.15, n) * amp
        r *= mean_radius * rng.uniform(0.85, 1.15)
        pts = np.column_stack([r * np.cos(theta), r * np.sin(theta)])
        track = Track(pts, width / 2, width / 2, name=f"gen-{seed}")
        problems = validate_track(track, min_radius=min_radius, margin=margin)
        if not problems:
            logger.debug("gen-%d: valid after %d attempt(s)", seed, attempt + 1)
            return track
    raise ValueError(
        f"no valid track for seed {seed} after {max_attempts} attempts (last: {problems[0]})"
    )
