"""Nothing silently wrong with tracks: file limits, strict types, and one drivability
check for tracks from every source (files, library, generator, ``Track`` objects given
to ``TrackEnv``), with the command lines giving one ``error:`` line."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import tracks.validate as validate_mod
from sim.car import CarParams
from sim.env import TrackEnv
from sim.record import RecordConfig, build_parser
from tracks import (
    Track,
    builtin_names,
    generate_track,
    get_track,
    limits,
    load_f1tenth_csv,
    load_track,
    load_track_json,
    require_drivable,
    save_track_json,
    validate_track,
)
from tracks.io import data_dir
from tracks.plot import main as plot_main
from tracks.segments import Straight, Turn, build_centreline

REPO = Path(__file__).resolve().parents[1]
SAMPLE = data_dir() / "sample_circuit.csv"


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    """Each test sees the once-per-geometry warning of ``require_drivable`` afresh."""
    monkeypatch.setattr(validate_mod, "_warned", set())


def circle(radius: float = 4.0, n: int = 48, w: float = 0.5) -> np.ndarray:
    th = 2 * np.pi * np.arange(n) / n
    return np.column_stack([radius * np.cos(th), radius * np.sin(th), np.full(n, w), np.full(n, w)])


def write_csv(path: Path, rows: np.ndarray) -> Path:
    path.write_text("".join(f"{x!r},{y!r},{r!r},{left!r}\n" for x, y, r, left in rows.tolist()))
    return path


def figure_eight(n: int = 60) -> np.ndarray:
    th = 2 * np.pi * np.arange(n) / n
    return np.column_stack([10 * np.sin(th), 5 * np.sin(2 * th), np.full(n, 0.5), np.full(n, 0.5)])


def collinear() -> np.ndarray:
    x = np.array([0.0, 2.0, 4.0, 6.0, 8.0])
    return np.column_stack([x, np.zeros(5), np.full(5, 0.5), np.full(5, 0.5)])


def refused(call, match: str) -> str:
    """The one-line message of the ValueError ``call()`` raises, which must match."""
    with pytest.raises(ValueError, match=match) as info:
        call()
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )


# --------------------------------------------------------------------------- the car


def test_thresholds_come_from_the_car():
    car = CarParams()
    assert (limits.CAR_WHEELBASE, limits.CAR_MAX_STEER, limits.CAR_TRACK_WIDTH) == (
        car.wheelbase,
        car.max_steer,
        car.track_width,
    )
    assert limits.MIN_TURNING_RADIUS == pytest.approx(car.min_turning_radius)
    assert limits.MIN_TURNING_RADIUS == pytest.approx(0.77, abs=0.005)
    assert limits.MIN_HALF_WIDTH == pytest.approx(0.25)


# --------------------------------------------------------------------------- file limits


@pytest.mark.parametrize("coord", [1e5, 1e7])
def test_huge_coordinates_are_refused_at_the_line(tmp_path, coord):
    path = write_csv(tmp_path / "huge.csv", circle(radius=coord, n=60))
    msg = refused(lambda: load_track(path), "MAX_COORDINATE")
    assert msg.startswith(f"{path}: line 1: coordinate")
    assert "10000 m" in msg
    # The limit applies after scale: scaled down to a 50 m circle (with a road too
    # narrow to drive, hence allowed) the same file loads.
    small = load_track(path, scale=50 / coord, allow_undrivable=True)
    assert small.length == pytest.approx(2 * math.pi * 50, rel=1e-3)


def test_huge_json_coordinates_and_widths_are_refused(tmp_path):
    doc = Track(circle()[:, :2] * 2e4, 0.5, 0.5).to_dict()
    path = tmp_path / "far.json"
    path.write_text(json.dumps(doc))
    refused(
        lambda: load_track_json(path),
        rf"^{re.escape(str(path))}: coordinate 80000 m at point 0 of 48 .* \(MAX_COORDINATE\)$",
    )
    doc = get_track("oval").to_dict()
    doc["half_width_left"] = [1e3] * len(doc["centreline"])
    path.write_text(json.dumps(doc))
    refused(lambda: load_track_json(path), "half width 1000 m exceeds the limit 100 m")
    rows = circle()
    rows[5, 3] = 500.0
    refused(lambda: load_track(write_csv(tmp_path / "w.csv", rows)), r"line 6: half width 500 m")


def test_a_2m_point_json_is_refused_unread(tmp_path):
    path = tmp_path / "two_million.json"
    with path.open("w") as f:  # ~45 MB, like the file
        f.write('{"format": "trackpilot-track", "schema_version": 1, "centreline": [')
        f.write(",".join(["[1234.56789, 2345.67891]"] * 2_000_000))
        f.write('], "half_width_left": 0.5, "half_width_right": 0.5}')
    assert path.stat().st_size > limits.MAX_FILE_BYTES
    tracemalloc.start()
    try:
        msg = refused(lambda: load_track(path), "MAX_FILE_BYTES")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert msg.startswith(f"{path}: file size ")
    assert msg.endswith("MiB exceeds the limit 16 MiB (MAX_FILE_BYTES)")
    assert peak < 1_000_000  # refused from its size on disk, never read


def test_point_limit_in_csv_and_json(tmp_path):
    # 2M short rows fit in 16 MiB: the reader stops at the first row over the limit.
    path = tmp_path / "many.csv"
    path.write_text("0,0,1,1\n" * 2_000_000)
    assert path.stat().st_size <= limits.MAX_FILE_BYTES
    tracemalloc.start()
    try:
        msg = refused(lambda: load_track(path), "MAX_POINTS")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert f"line {limits.MAX_POINTS + 1}: more than {limits.MAX_POINTS} points" in msg
    assert peak < 100 * 2**20  # the text itself (16 MB), not 2M parsed rows
    # 2M points in compact JSON fit in 16 MiB too: refused by counting brackets, unparsed.
    compact = tmp_path / "compact.json"
    compact.write_text(
        '{"format": "trackpilot-track", "schema_version": 1, "centreline": ['
        + ",".join(["[0,0]"] * 2_000_000)
        + '], "half_width_left": 0.5, "half_width_right": 0.5}'
    )
    assert compact.stat().st_size <= limits.MAX_FILE_BYTES
    tracemalloc.start()
    try:
        msg = refused(lambda: load_track(compact), "MAX_POINTS")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "2000001 JSON arrays: more than the limit of 20000 points" in msg
    assert peak < 100 * 2**20  # the text and a scan of it, not 2M parsed lists
    n = limits.MAX_POINTS + 1
    doc = Track(circle(radius=3000, n=n)[:, :2], 5.0, 5.0).to_dict()
    json_path = tmp_path / "many.json"
    json_path.write_text(json.dumps(doc))
    refused(lambda: load_track_json(json_path), f"{n + 3} JSON arrays: more than the limit")
    doc["half_width_left"] = doc["half_width_right"] = 5.0  # two arrays fewer
    json_path.write_text(json.dumps(doc))
    refused(lambda: load_track_json(json_path), f"{n} points exceed the limit {limits.MAX_POINTS}")


def test_oversized_csv_is_refused(tmp_path):
    path = tmp_path / "padded.csv"
    path.write_text("#" * (limits.MAX_FILE_BYTES + 10) + "\n")
    refused(lambda: load_f1tenth_csv(path), rf"{re.escape(str(path))}: file size 16.0 MiB exceeds")


def test_deep_nesting_is_refused_without_recursion_error(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    msg = refused(lambda: load_track(path), "MAX_JSON_DEPTH")
    assert "depth 100000 exceeds the limit 8" in msg
    doc = get_track("oval").to_dict()
    doc["centreline"][0] = [[[[[[[[1.0, 2.0]]]]]]]]
    path.write_text(json.dumps(doc))
    refused(lambda: load_track(path), "depth 10 exceeds")
    # Brackets inside strings are text, not nesting.
    doc = get_track("oval").to_dict()
    doc["name"] = "[[[[[[[[[[{{{{{{{{"
    path.write_text(json.dumps(doc))
    assert load_track(path).name == doc["name"]


@pytest.mark.parametrize(
    "change, match",
    [
        ({"smooth": "no"}, "smooth must be true or false, got 'no'"),
        ({"smooth": 0}, "smooth must be true or false, got 0"),
        ({"smooth": None}, "smooth must be true or false, got None"),
        ({"name": 5}, "name must be a string"),
        ({"schema_version": True}, "unsupported schema_version True"),
        ({"smoth": False}, r"unknown field\(s\): smoth"),
        ({"half_width_left": "0.5"}, "half_width_left must be a number or a list"),
        ({"half_width_right": True}, "half_width_right must be a number or a list"),
    ],
)
def test_json_types_are_strict(tmp_path, change, match):
    doc = {**get_track("oval").to_dict(), **change}
    path = tmp_path / "typed.json"
    path.write_text(json.dumps(doc))
    msg = refused(lambda: load_track(path), match)
    assert msg.startswith(str(path))


@pytest.mark.parametrize(
    "text, match",
    [
        ('"1.5"', r"centreline\[3\] must be a pair of numbers"),
        ("true", r"centreline\[3\] must be a pair of numbers"),
        ("NaN", "non-finite number NaN"),
        ("Infinity", "non-finite number Infinity"),
        ("1e999", "non-finite"),
    ],
)
def test_json_numbers_must_be_finite_numbers(tmp_path, text, match):
    doc = get_track("oval").to_dict()
    doc["centreline"][3] = ["@X@", 0.0]
    path = tmp_path / "numbers.json"
    path.write_text(json.dumps(doc).replace('"@X@"', text))
    refused(lambda: load_track_json(path), match)


def test_saved_tracks_still_round_trip(tmp_path):
    for name in builtin_names():
        t = get_track(name)
        save_track_json(t, tmp_path / "t.json")
        assert load_track(tmp_path / "t.json").geometry_hash == t.geometry_hash
    assert Track.from_dict({**get_track("oval").to_dict(), "smooth": False}).smooth is False


# --------------------------------------------------------------------------- drivability


@pytest.mark.parametrize(
    "rows, match",
    [
        (figure_eight(), r"centreline crosses itself near s=\d+\.\d\d m \(point \d+ of 60\)"),
        (
            collinear(),
            r"min radius 0\.000 m at s=.* \(a cusp: the centreline turns back on itself\)",
        ),
        (
            circle(w=1e-9),
            r"road too narrow: left half width 1e-09 m at s=0\.00 m \(point 0 of 48\)",
        ),
        (
            circle(radius=0.5, w=0.3),
            r"min radius 0\.(49|50)\d m at .* below the required 0\.769 m \(a bend too tight\)",
        ),
        (circle(radius=1.0, w=0.95), r"inner edge radius 0\.0[45]\d m .* folds over itself"),
    ],
    ids=["figure-8", "collinear", "1e-9 m wide", "tight bend", "inner edge folds"],
)
def test_undrivable_csv_is_refused_naming_where(tmp_path, rows, match):
    path = write_csv(tmp_path / "bad.csv", rows)
    msg = refused(lambda: load_track(path), match)
    assert msg.startswith(f"{path}: undrivable track: ")
    assert msg.endswith(
        "(allow_undrivable=True loads it anyway; --allow-undrivable in sim.record and tracks.plot)"
    )


def test_edges_of_distant_parts_overlapping(tmp_path):
    # Antiparallel straights 1 m apart, joined by round bulbs: no bend is tight, but
    # 1.5 m wide roads on the straights overlap.
    bulb = [Turn(-45, 2.0, 0.5), Turn(270, 2.0, 0.5), Turn(-45, 2.0, 0.5)]
    pinch = build_centreline([Straight(6.0), *bulb, Straight(6.0, free=True), *bulb])
    path = tmp_path / "pinch.json"
    save_track_json(Track(pinch, 0.75, 0.75), path)
    refused(lambda: load_track(path), r"road overlaps itself: s=.* m \(point \d+ of \d+\) and s=")
    save_track_json(Track(pinch, 0.3, 0.3), path)
    assert load_track(path).name == "track"


def test_allow_undrivable_loads_with_a_warning(tmp_path, caplog):
    path = write_csv(tmp_path / "eight.csv", figure_eight())
    with caplog.at_level(logging.WARNING, logger="tracks.validate"):
        t = load_track(path, allow_undrivable=True)
    assert t.length > 40
    assert any("crosses itself" in r.getMessage() for r in caplog.records)
    # The limits are not lifted by it.
    big = write_csv(tmp_path / "big.csv", circle(radius=1e5))
    refused(lambda: load_track(big, allow_undrivable=True), "MAX_COORDINATE")


def test_polyline_tracks_use_the_discrete_curvature():
    # A dense polyline circle of radius 3 m is drivable (its dense finite-difference
    # curvature spikes at every vertex, its discrete curvature is 1/3).
    xy = circle(radius=3.0, n=200)[:, :2]
    assert validate_track(Track(xy, 0.5, 0.5, smooth=False)) == []
    square = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=float) * 0.8
    assert any("min radius" in p for p in validate_track(Track(square, 0.3, 0.3, smooth=False)))


def test_every_builtin_and_generated_track_passes():
    for name in builtin_names():
        for t in (get_track(name), get_track(name).reversed()):
            assert validate_track(t) == [], name
            assert require_drivable(t) is t
    for seed in range(10):
        assert validate_track(generate_track(seed)) == []
    assert load_track("sample_circuit").name == "sample_circuit"


def test_generator_refuses_parameters_below_the_car():
    with pytest.raises(ValueError, match="width 0.4 m is below the 0.5 m"):
        generate_track(1, width=0.4)
    with pytest.raises(ValueError, match="min_radius 0.5 m is below the car's turning radius"):
        generate_track(1, min_radius=0.5)


# --------------------------------------------------------------------------- README


def readme_f1tenth_snippet() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Tracks") :]
    section = section[: section.index("\n## ", 3)]
    assert "load_f1tenth_csv" in section
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1
    return blocks[0]


def test_readme_f1tenth_example_runs_as_written(monkeypatch, capsys):
    snippet = readme_f1tenth_snippet()
    monkeypatch.chdir(REPO)
    scope: dict = {}
    exec(compile(snippet, "README.md", "exec"), scope)
    track = scope["track"]
    assert validate_track(track) == []
    assert track.length == pytest.approx(47.76, abs=0.01)
    assert "sample_circuit" in capsys.readouterr().out
    # What the README said before: 0.10-0.12 m wide, 0.14 m radius, refused now.
    msg = refused(lambda: load_f1tenth_csv(SAMPLE, scale=0.1), "undrivable track")
    assert "road too narrow" in msg and "min radius 0.139 m" in msg
    # The README's claim about the smallest drivable scale holds.
    assert validate_track(load_f1tenth_csv(SAMPLE, scale=0.56)) == []
    refused(lambda: load_f1tenth_csv(SAMPLE, scale=0.55), "min radius")


# --------------------------------------------------------------------------- TrackEnv


@pytest.fixture
def tight_track() -> Track:
    """A 0.6 m circle: tighter than the car's 0.77 m turning radius."""
    return Track(circle(radius=0.6, n=32)[:, :2], 0.3, 0.3, name="tight")


def test_env_refuses_an_undrivable_track_object(tight_track, tiny_track):
    msg = refused(lambda: TrackEnv(track=tight_track, obs_mode="state"), "undrivable")
    assert re.match(r"track 'tight': undrivable track: min radius 0\.(59|60)\d m at s=", msg)
    env = TrackEnv(track=tiny_track, obs_mode="state", fixed_speed=2.0)
    try:
        env.reset(seed=0)
        refused(lambda: env.reset(options={"track": tight_track}), r"min radius 0\.(59|60)")
        env.reset(options={"track": "oval"})  # the env is still usable
    finally:
        env.close()


def test_env_allow_undrivable_drives_with_a_warning(tight_track, caplog):
    with caplog.at_level(logging.WARNING, logger="tracks.validate"):
        env = TrackEnv(track=tight_track, obs_mode="state", fixed_speed=1.0, allow_undrivable=True)
    try:
        _, info = env.reset(seed=0)
        assert info["track"] == "tight"
    finally:
        env.close()
    assert any("undrivable" in r.getMessage() for r in caplog.records)


def test_env_refuses_oversized_track_objects_even_when_allowed():
    huge = Track(circle(radius=9000.0, n=64)[:, :2], 3.0, 3.0, name="huge")
    refused(
        lambda: TrackEnv(track=huge, obs_mode="state", allow_undrivable=True), "MAX_TRACK_LENGTH"
    )


def test_env_thresholds_follow_its_car(tiny_track):
    # tiny_track is a 2 m circle: too tight for a car that steers only 0.15 rad.
    stiff = CarParams(max_steer=0.15)
    refused(lambda: TrackEnv(track=tiny_track, obs_mode="state", car=stiff), "required 2.15 m")


def test_env_checks_each_geometry_once(monkeypatch, tiny_track):
    calls = []
    real = validate_mod.validate_track
    monkeypatch.setattr(
        validate_mod, "validate_track", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    monkeypatch.setattr(validate_mod, "_checked", {})
    env = TrackEnv(track=tiny_track, obs_mode="state", fixed_speed=2.0)
    try:
        env.reset(seed=0)
        assert len(calls) == 1
        for _ in range(20):
            env.reset()
        env.reset(options={"track": Track(tiny_track.control_points, 0.5, 0.5)})  # same geometry
        env.reset(options={"track": "oval"})
        env.reset(options={"track": "oval"})
        assert len(calls) == 2
    finally:
        env.close()


# --------------------------------------------------------------------------- the CLIs


def test_record_cli_refuses_an_undrivable_track(tmp_path):
    bad = write_csv(tmp_path / "eight.csv", figure_eight())
    proc = run_cli(
        "sim.record", "--tracks", str(bad), "--out", str(tmp_path / "ds"), "--workers", "1",
        "--no-progress", cwd=tmp_path,
    )  # fmt: skip
    line = one_error_line(proc)
    assert line.startswith(f"error: {bad}: undrivable track: centreline crosses itself")
    assert not (tmp_path / "ds").exists()


def test_record_flag_reaches_the_config():
    args = build_parser().parse_args(["--tracks", "x.csv", "--out", "o", "--allow-undrivable"])
    assert args.allow_undrivable is True
    assert RecordConfig().allow_undrivable is False


@pytest.mark.parametrize(
    "rows, match",
    [
        (circle(radius=1e5, n=60), "line 1: coordinate 100000 m (after scale) exceeds the limit"),
        (collinear(), "undrivable track: min radius 0.000 m"),
    ],
    ids=["1e5 m coordinates", "collinear"],
)
def test_plot_cli_gives_one_error_line(tmp_path, rows, match):
    bad = write_csv(tmp_path / "bad.csv", rows)
    proc = run_cli("tracks.plot", str(bad), "--out", str(tmp_path / "bad.png"), cwd=tmp_path)
    assert match in one_error_line(proc)
    assert not (tmp_path / "bad.png").exists()


def test_plot_allow_undrivable_draws_it_with_a_warning(tmp_path, caplog):
    bad = write_csv(tmp_path / "eight.csv", figure_eight())
    out = tmp_path / "eight.png"
    with caplog.at_level(logging.WARNING, logger="tracks.validate"):
        assert plot_main([str(bad), "--out", str(out), "--allow-undrivable"]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert any("crosses itself" in r.getMessage() for r in caplog.records)


def test_evaluation_python_path_raises_a_clear_error(tmp_path):
    from evaluation.evaluate import EvalConfig, run_evaluation

    bad = write_csv(tmp_path / "thin.csv", circle(w=1e-9))
    cfg = EvalConfig(pilots=("expert",), tracks=(str(bad),), workers=1, out_dir=str(tmp_path))
    refused(lambda: run_evaluation(cfg, progress=False), rf"^{re.escape(str(bad))}: undrivable")
