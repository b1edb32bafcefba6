"""Track geometry, built-in library, generator, validation and plots (numpy only, fast)."""

from __future__ import annotations

import math
import pickle
import timeit

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracks import (
    HELDOUT_TRACKS,
    TRAIN_TRACKS,
    Track,
    builtin_names,
    generate_track,
    get_track,
    plot_track,
    validate_track,
)
from tracks.segments import Straight, Turn, build_centreline
from tracks.track import wrap_angle


def arc_diff(a: float | np.ndarray, b: float | np.ndarray, length: float) -> np.ndarray:
    """Signed difference of arc lengths on a loop, in [-length/2, length/2)."""
    return (np.asarray(a) - np.asarray(b) + length / 2) % length - length / 2


def offset_point(track: Track, s: float, d: float) -> np.ndarray:
    return track.point(s) + d * track.normal(s)


# --------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("radius", [1.5, 3.0, 10.0])
def test_circle_curvature_length_area(make_circle_track, radius):
    ccw = make_circle_track(radius=radius)
    assert ccw.length == pytest.approx(2 * math.pi * radius, rel=1e-4)
    assert ccw.signed_area == pytest.approx(math.pi * radius**2, rel=1e-3)
    assert ccw.orientation == "ccw"
    s = np.linspace(0, ccw.length, 50, endpoint=False)
    np.testing.assert_allclose(ccw.curvature(s), 1 / radius, rtol=0.01)
    assert ccw.min_radius == pytest.approx(radius, rel=0.01)
    cw = make_circle_track(radius=radius, ccw=False)
    assert cw.orientation == "cw"
    assert cw.signed_area < 0
    np.testing.assert_allclose(cw.curvature(s), -1 / radius, rtol=0.01)


def test_frame_on_circle(make_circle_track):
    t = make_circle_track(radius=3.0)
    # Start at (3, 0) driving counter-clockwise: heading +y, left normal towards the centre.
    x, y, yaw = t.start_pose()
    assert (x, y) == pytest.approx((3.0, 0.0), abs=1e-9)
    assert yaw == pytest.approx(math.pi / 2, abs=1e-6)
    np.testing.assert_allclose(t.normal(0.0), [-1.0, 0.0], atol=1e-6)
    s = np.linspace(0, 3 * t.length, 37)  # wraps around several times
    pts = t.point(s)
    assert pts.shape == (37, 2)
    np.testing.assert_allclose(np.hypot(pts[:, 0], pts[:, 1]), 3.0, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(t.tangent(s), axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.einsum("ij,ij->i", t.tangent(s), t.normal(s)), 0.0, atol=1e-12)
    assert isinstance(t.heading(1.0), float) and isinstance(t.curvature(1.0), float)
    assert t.point(1.0).shape == (2,)
    np.testing.assert_allclose(t.point(-1.0), t.point(t.length - 1.0), atol=1e-9)


def test_non_finite_queries_raise(make_circle_track):
    t = make_circle_track()
    with pytest.raises(ValueError, match="finite"):
        t.point(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="non-finite"):
        t.project(np.nan, 0.0)
    with pytest.raises(ValueError, match="non-finite"):
        t.project_many(np.array([[0.0, np.inf]]))
    # A lost hint only means a global search.
    assert t.project(3.2, 0.0, s_hint=float("nan")).lateral == pytest.approx(-0.2, abs=1e-6)


def test_track_pickles_for_subprocess_envs():
    t = get_track("hairpin")
    back = pickle.loads(pickle.dumps(t))
    assert back.geometry_hash == t.geometry_hash
    assert back.project(1.0, 0.1, s_hint=1.0) == t.project(1.0, 0.1, s_hint=1.0)


def test_half_widths_interpolate_per_point():
    n = 40
    th = 2 * np.pi * np.arange(n) / n
    pts = np.column_stack([4 * np.cos(th), 4 * np.sin(th)])
    wl = np.full(n, 0.6)
    wl[n // 2 :] = 0.4
    t = Track(pts, wl, 0.3)
    left, right = t.half_widths(0.0)
    assert (left, right) == pytest.approx((0.6, 0.3))
    assert t.half_widths(t.length * 0.75) == pytest.approx((0.4, 0.3))
    lw, rw = t.half_widths(np.array([0.0, t.length * 0.75]))
    np.testing.assert_allclose(lw, [0.6, 0.4])
    np.testing.assert_allclose(rw, [0.3, 0.3])


@pytest.mark.parametrize(
    "pts, wl, wr, match",
    [
        (np.zeros((3, 2)) + np.arange(3)[:, None], 0.5, 0.5, "at least 4"),
        ([[0, 0], [1, 0], [1, 1], [np.nan, 1]], 0.5, 0.5, "non-finite"),
        ([[0, 0], [1, 0], [1, 1], [0, 1]], 0.5, -0.1, "positive"),
        ([[0, 0], [1, 0], [1, 1], [0, 1]], [0.5, 0.5], 0.5, "shape"),
        ([[1, 1]] * 6, 0.5, 0.5, "zero-length"),
        (np.zeros((5, 3)), 0.5, 0.5, "shape"),
    ],
)
def test_constructor_rejects_bad_input(pts, wl, wr, match):
    with pytest.raises(ValueError, match=match):
        Track(np.asarray(pts, dtype=float), wl, wr)


def test_geometry_hash_ignores_name_but_not_geometry(make_circle_track):
    a = make_circle_track(name="a")
    assert make_circle_track(name="b").geometry_hash == a.geometry_hash
    assert make_circle_track(radius=3.001).geometry_hash != a.geometry_hash
    assert make_circle_track(half_width_left=0.51).geometry_hash != a.geometry_hash


def test_polyline_mode_goes_through_the_points():
    square = np.array([[0, 0], [4, 0], [4, 4], [0, 4]], dtype=float)
    t = Track(square, 0.5, 0.5, smooth=False)
    assert t.length == pytest.approx(16.0)
    np.testing.assert_allclose(t.point(2.0), [2.0, 0.0], atol=1e-9)
    assert Track(square, 0.5, 0.5).length > 16.0  # the spline bulges out
    assert t.geometry_hash != Track(square, 0.5, 0.5).geometry_hash


# --------------------------------------------------------------------------- projection


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    name=st.sampled_from(["hairpin", "kidney", "esses"]),
    frac=st.floats(0.0, 1.0, exclude_max=True),
    lat=st.floats(-0.95, 0.95),
)
def test_projection_round_trip(name, frac, lat):
    t = get_track(name)
    s = frac * t.length
    wl, wr = t.half_widths(s)
    d = lat * (wl if lat >= 0 else wr)
    x, y = offset_point(t, s, d)
    for hint in (None, s + 0.3, s - 0.3, s):
        p = t.project(x, y, s_hint=hint)
        assert 0.0 <= p.s < t.length
        assert abs(arc_diff(p.s, s, t.length)) < 1e-3
        assert p.lateral == pytest.approx(d, abs=1e-3)
        assert p.heading_error == 0.0
        assert (p.half_width_left, p.half_width_right) == pytest.approx((wl, wr), abs=1e-6)
        assert p.on_track


@pytest.mark.parametrize("s", [0.0, 1e-4, 0.004, -0.004, -1e-4])
def test_projection_wraps_at_start(s):
    t = get_track("oval")
    x, y = offset_point(t, s, 0.2)
    for hint in (None, 0.0, t.length - 0.05, 0.05, t.length + 0.01):
        p = t.project(x, y, s_hint=hint)
        assert 0.0 <= p.s < t.length
        assert abs(arc_diff(p.s, s, t.length)) < 1e-3
        assert p.lateral == pytest.approx(0.2, abs=1e-3)


def test_projection_bad_hint_falls_back_to_global_search():
    t = get_track("hairpin")
    s = 3.0  # on the first straight
    x, y = offset_point(t, s, -0.2)
    # A hint on the next straight up, 2.8 m away: its window has a clear (but wrong)
    # interior minimum, which is implausibly far from the road.
    s_other = float(t.project_many(offset_point(t, s, 2.8)[None, :]).s[0])
    assert abs(arc_diff(s_other, s, t.length)) > 5.0
    for hint in (s_other, s + t.length / 2):
        p = t.project(x, y, s_hint=hint)
        assert abs(arc_diff(p.s, s, t.length)) < 1e-3
        assert p.lateral == pytest.approx(-0.2, abs=1e-3)


def test_project_many_matches_project():
    t = Track(get_track("chicane").control_points, 0.5, 0.4)
    rng = np.random.default_rng(0)
    s = rng.uniform(0, t.length, 200)
    d = rng.uniform(-0.4, 0.4, 200)
    xy = t.point(s) + d[:, None] * t.normal(s)
    yaw = t.heading(s) + 0.25
    pm = t.project_many(xy, yaw=yaw)
    assert np.max(np.abs(arc_diff(pm.s, s, t.length))) < 1e-3
    np.testing.assert_allclose(pm.lateral, d, atol=1e-3)
    np.testing.assert_allclose(pm.heading_error, 0.25, atol=1e-3)
    np.testing.assert_allclose(pm.half_width_left, 0.5)
    np.testing.assert_allclose(pm.half_width_right, 0.4)
    single = t.project(*xy[7], yaw=yaw[7])
    assert single.s == pytest.approx(pm.s[7], abs=1e-9)
    assert single.lateral == pytest.approx(pm.lateral[7], abs=1e-9)


def test_heading_error_is_wrapped(make_circle_track):
    t = make_circle_track()
    s = 2.0
    x, y = t.point(s)
    h = t.heading(s)
    for yaw, expected in [
        (h + 0.3, 0.3),
        (h - 0.3, -0.3),
        (h + 2 * math.pi + 0.1, 0.1),
        (h + math.pi - 1e-3, math.pi - 1e-3),
        (h - math.pi + 1e-3, -math.pi + 1e-3),
        (h + 1.5 * math.pi, -0.5 * math.pi),
    ]:
        assert t.project(x, y, s_hint=s, yaw=yaw).heading_error == pytest.approx(expected, abs=1e-6)
    assert t.project(x, y).heading_error == 0.0
    # The interval is (-pi, pi]: -pi maps to +pi.
    assert float(wrap_angle(-math.pi)) == math.pi
    assert float(wrap_angle(math.pi)) == math.pi
    np.testing.assert_allclose(
        wrap_angle(np.array([3 * math.pi, -2.5 * math.pi])), [math.pi, -0.5 * math.pi]
    )


def test_project_with_hint_is_fast():
    t = get_track("speedway")
    s = 31.0
    x, y = offset_point(t, s + 0.05, 0.3)
    n = 2000
    per_call = (
        min(timeit.repeat(lambda: t.project(x, y, s_hint=s, yaw=0.1), number=n, repeat=3)) / n
    )
    # Measured ~15 us on a laptop core; the bound leaves room for a busy CI machine.
    assert per_call < 300e-6


# --------------------------------------------------------------------------- reversal


def test_reversed_track():
    base = get_track("kidney")
    asym = Track(base.control_points, 0.6, 0.35, name="asym")
    rev = asym.reversed()
    assert rev.name == "asym-rev"
    assert rev.reversed().name == "asym"
    assert rev.reversed().geometry_hash == asym.geometry_hash
    assert asym.reversed(name="other").name == "other"
    assert rev.length == pytest.approx(asym.length, rel=1e-9)
    assert (asym.orientation, rev.orientation) == ("ccw", "cw")
    assert rev.signed_area == pytest.approx(-asym.signed_area)
    np.testing.assert_allclose(rev.start_pose()[:2], asym.start_pose()[:2], atol=1e-12)
    s = np.linspace(0, asym.length, 23, endpoint=False)
    np.testing.assert_allclose(rev.point(asym.length - s), asym.point(s), atol=1e-4)
    np.testing.assert_allclose(rev.curvature(asym.length - s), -asym.curvature(s), atol=2e-3)
    assert rev.half_widths(asym.length - 5.0) == pytest.approx((0.35, 0.6))
    x, y = offset_point(asym, 5.0, 0.25)
    p, q = asym.project(x, y), rev.project(x, y)
    assert p.lateral == pytest.approx(0.25, abs=1e-3)
    assert q.lateral == pytest.approx(-0.25, abs=1e-3)
    assert abs(arc_diff(q.s, asym.length - 5.0, asym.length)) < 1e-3
    h = asym.heading(5.0)
    assert rev.project(x, y, yaw=h + math.pi).heading_error == pytest.approx(0.0, abs=1e-3)


# --------------------------------------------------------------------------- library


def test_builtin_names_and_split():
    names = builtin_names()
    for required in ("oval", "kidney", "hairpin", "speedway", "esses"):
        assert required in names
    assert len(names) >= 7
    assert set(TRAIN_TRACKS) | set(HELDOUT_TRACKS) == set(names)
    assert not set(TRAIN_TRACKS) & set(HELDOUT_TRACKS)
    with pytest.raises(ValueError, match="oval"):
        get_track("nope")


@pytest.mark.parametrize("name", builtin_names())
def test_builtin_track_is_valid(name):
    t = get_track(name)
    assert t.name == name
    assert t.orientation == "ccw"
    assert t.reversed().orientation == "cw"
    assert t.min_radius >= 1.2
    w = t.dense.w_left + t.dense.w_right
    assert 0.8 <= w.min() and w.max() <= 1.5
    inner = np.where(t.dense.curvature >= 0, t.dense.w_left, t.dense.w_right)
    assert np.min(1 / np.maximum(np.abs(t.dense.curvature), 1e-9) - inner) > 0.3
    assert validate_track(t, min_radius=1.2) == []
    assert t.start_pose()[:2] == pytest.approx((0.0, 0.0), abs=1e-9)
    assert abs(t.curvature(0.0)) < 0.01  # every track starts on a straight


def test_builtin_track_characters():
    assert 25 <= get_track("oval").length <= 35
    assert 60 <= get_track("speedway").length <= 90
    assert 1.3 <= get_track("hairpin").min_radius <= 1.6
    for name in ("kidney", "esses", "chicane"):  # these have right-hand bends too
        k = get_track(name).dense.curvature
        assert k.min() < -0.3 and k.max() > 0.3, name
    assert get_track("oval").dense.curvature.min() > -1e-3


def test_build_centreline_closes_and_rejects_bad_turns():
    pts = build_centreline([Straight(2.0), Turn(180, 2.0), Straight(2.0), Turn(180, 2.0)])
    t = Track(pts, 0.5, 0.5)
    # Each turn is a plain arc lengthened by its ramp (0.8 m by default).
    assert t.length == pytest.approx(4.0 + 4 * math.pi + 2 * 0.8, rel=1e-3)
    assert t.min_radius == pytest.approx(2.0, rel=0.02)
    with pytest.raises(ValueError, match="360"):
        build_centreline([Straight(2.0), Turn(90, 2.0)])
    with pytest.raises(ValueError, match="close"):
        build_centreline([Straight(2.0), Turn(180, 2.0), Straight(3.0), Turn(180, 2.0)])


# --------------------------------------------------------------------------- sampling


def test_adaptive_samples_respect_angle_and_spacing():
    t = get_track("speedway")
    s = t.adaptive_samples(max_angle_deg=4.0, max_spacing=0.5)
    assert s[0] == 0.0 and np.all(np.diff(s) > 0) and s[-1] < t.length
    closed = np.append(s, t.length)
    assert np.max(np.diff(closed)) <= 0.5 + 1e-9
    h = np.unwrap(t.heading(closed))
    assert np.max(np.abs(np.diff(h))) <= math.radians(4.0) + 1e-6
    coarse = t.adaptive_samples(max_angle_deg=6.0, max_spacing=2.0)
    assert len(coarse) < len(s)
    # Fewer samples on straights than in bends.
    k = np.abs(t.curvature(s))
    gaps = np.diff(closed)
    assert gaps[k < 1e-3].mean() > gaps[k > 0.15].mean()


def test_resample_and_edges():
    t = get_track("triangle")
    smp = t.resample(0.5)
    assert smp.s[0] == 0.0 and smp.xy.shape == (len(smp.s), 2)
    assert np.diff(smp.s).max() == pytest.approx(0.5, rel=0.02)
    left, right = t.edges(0.5)
    np.testing.assert_allclose(np.linalg.norm(left - smp.xy, axis=1), smp.w_left, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(right - smp.xy, axis=1), smp.w_right, atol=1e-9)
    # The left edge is on the left: it projects to a positive lateral offset.
    assert t.project(*left[10]).lateral == pytest.approx(smp.w_left[10], abs=1e-3)
    assert t.edges()[0].shape == t.dense.xy.shape


# --------------------------------------------------------------------------- validation


def test_validate_rejects_undrivable_tracks(make_circle_track):
    tight = make_circle_track(radius=1.0)
    assert any("min radius" in p for p in validate_track(tight, min_radius=1.2))
    wide = make_circle_track(radius=1.5, half_width_left=1.45)
    assert any("inner edge" in p for p in validate_track(wide, min_radius=1.2))
    # Two antiparallel straights joined by round "bulbs": every bend is gentle, but the
    # straights run about 1 m apart, so 1.5 m wide roads on them overlap.
    bulb = [Turn(-45, 2.0, 0.5), Turn(270, 2.0, 0.5), Turn(-45, 2.0, 0.5)]
    pinch = build_centreline([Straight(6.0), *bulb, Straight(6.0, free=True), *bulb])
    problems = validate_track(Track(pinch, 0.75, 0.75), min_radius=1.2)
    assert len(problems) == 1 and "overlaps" in problems[0], problems
    assert validate_track(Track(pinch, 0.3, 0.3), min_radius=1.2) == []
    # A figure of eight crosses itself.
    th = 2 * np.pi * np.arange(64) / 64
    eight = np.column_stack([6 * np.sin(th), 3 * np.sin(2 * th)])
    assert any("crosses" in p for p in validate_track(Track(eight, 0.4, 0.4), min_radius=0.5))


# --------------------------------------------------------------------------- generator


def test_generator_is_deterministic():
    a, b = generate_track(7), generate_track(7)
    assert a.geometry_hash == b.geometry_hash
    assert a.name == "gen-7"
    assert generate_track(8).geometry_hash != a.geometry_hash
    assert generate_track(7, width=1.2).geometry_hash != a.geometry_hash


@settings(max_examples=30, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**31 - 1))
def test_generated_tracks_are_drivable(seed):
    t = generate_track(seed)
    assert validate_track(t, min_radius=1.2) == []
    assert t.min_radius >= 1.2
    assert t.orientation == "ccw"
    assert 20 < t.length < 80


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"seed": 1, "width": 2.4}, "half width"),
        ({"seed": 1, "mean_radius": 2.0}, "mean_radius"),
        ({"seed": 1, "n_control": 3}, "n_control"),
    ],
)
def test_generator_rejects_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_track(**kwargs)


# --------------------------------------------------------------------------- plots and CLIs


def test_plot_writes_png(tmp_path):
    t = get_track("esses")
    traj = t.point(np.linspace(0, t.length, 100)) + 0.1
    out = tmp_path / "sub" / "esses.png"
    fig = plot_track(t, path=out, trajectories=[traj], title="esses")
    assert fig.axes[0].get_title() == "esses"
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_plot_cli_and_list_cli(tmp_path, capsys):
    from tracks.__main__ import main as tracks_main
    from tracks.plot import main as plot_main

    out = tmp_path / "oval.png"
    assert plot_main(["oval", "--out", str(out)]) == 0
    assert out.stat().st_size > 0
    assert plot_main(["no-such-track", "--out", str(tmp_path / "x.png")]) == 2
    assert "no-such-track" in capsys.readouterr().err
    assert tracks_main(["list"]) == 0
    listing = capsys.readouterr().out
    for name in builtin_names():
        assert name in listing
    assert "ccw" in listing
