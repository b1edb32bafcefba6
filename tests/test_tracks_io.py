"""Track files: F1TENTH CSV import/export, JSON round trips, ``load_track`` dispatch."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tracks import (
    Track,
    generate_track,
    get_track,
    load_f1tenth_csv,
    load_track,
    load_track_json,
    save_f1tenth_csv,
    save_track_json,
    validate_track,
)
from tracks.io import data_dir, packaged_track_files
from tracks.library import sample_circuit


def write_csv(path: Path, radius: float = 20.0, n: int = 24, header: str | None = None) -> Path:
    """A circle in F1TENTH format with right half width 0.3*k and left 0.6*k (k=radius/20)."""
    k = radius / 20.0
    th = 2 * np.pi * np.arange(n) / n
    lines = [header] if header is not None else []
    for t in th:
        lines.append(f"{radius * math.cos(t):.6f},{radius * math.sin(t):.6f},{0.3 * k},{0.6 * k}")
    path.write_text("\n".join(lines) + "\n")
    return path


# --------------------------------------------------------------------------- CSV


@pytest.mark.parametrize(
    "header",
    [None, "# x_m, y_m, w_tr_right_m, w_tr_left_m", "x_m,y_m,w_tr_right_m,w_tr_left_m"],
)
def test_csv_import_columns_and_scale(tmp_path, header):
    path = write_csv(tmp_path / "ring.csv", header=header)
    t = load_f1tenth_csv(path)
    assert t.name == "ring"
    assert t.length == pytest.approx(2 * math.pi * 20, rel=1e-4)
    # Column order is right, then left.
    assert t.half_widths(1.0) == pytest.approx((0.6, 0.3))
    # Scaled to a 2 m circle with 3-6 cm half widths: undrivable, loaded on purpose.
    small = load_f1tenth_csv(path, scale=0.1, name="small", allow_undrivable=True)
    assert small.name == "small"
    assert small.length == pytest.approx(t.length * 0.1, rel=1e-9)
    assert small.half_widths(1.0) == pytest.approx((0.06, 0.03))
    np.testing.assert_allclose(small.control_points, t.control_points * 0.1)


def test_csv_closing_repeat_and_blank_lines_are_accepted(tmp_path):
    path = write_csv(tmp_path / "ring.csv")
    rows = path.read_text().splitlines()
    path.write_text("\n".join(["# comment", "", *rows, rows[0], ""]))
    t = load_f1tenth_csv(path)
    assert len(t.control_points) == len(rows)
    assert t.geometry_hash == load_f1tenth_csv(write_csv(tmp_path / "b.csv")).geometry_hash


@pytest.mark.parametrize(
    "body, match",
    [
        ("1,2,3\n" * 5, "line 1: expected 4"),
        ("0,0,1,1\n1,0,1,1\n1,1,1,abc\n0,1,1,1\n", "line 3: non-numeric value 'abc'"),
        ("0,0,1,1\n1,0,1,1\n1,nan,1,1\n0,1,1,1\n", "line 3: non-finite"),
        ("0,0,1,1\n1,0,1,1\n1,1,0,1\n0,1,1,1\n", "line 3: widths must be positive"),
        ("0,0,1,1\n1,0,1,1\n1,1,1,-0.5\n0,1,1,1\n", "line 3: widths must be positive"),
        ("# x_m, y_m, w_tr_right_m, w_tr_left_m\n0,0,1,1\n1,0,1,1\n1,1,1,1\n", "3 data row"),
        ("", "0 data row"),
        ("0,0,1,1\n0,0,1,1\n0,0,1,1\n0,0,1,1\n0,0,1,1\n", "zero-length"),
        ("0;0;1;1\n1;0;1;1\n1;1;1;1\n0;1;1;1\n", "line 1: expected 4"),
    ],
)
def test_malformed_csv_names_the_file(tmp_path, body, match):
    path = tmp_path / "bad_track.csv"
    path.write_text(body)
    with pytest.raises(ValueError, match=match) as info:
        load_f1tenth_csv(path)
    msg = str(info.value)
    assert msg.startswith(str(path))
    assert "\n" not in msg


def test_missing_csv_and_bad_scale(tmp_path):
    with pytest.raises(ValueError, match=r"nowhere\.csv: file not found"):
        load_f1tenth_csv(tmp_path / "nowhere.csv")
    path = write_csv(tmp_path / "ring.csv")
    for scale in (0.0, -1.0, float("nan"), "x"):
        with pytest.raises(ValueError, match=r"ring\.csv: scale"):
            load_f1tenth_csv(path, scale=scale)


def test_csv_save_round_trip(tmp_path):
    t = get_track("kidney")
    path = tmp_path / "kidney.csv"
    save_f1tenth_csv(t, path)
    assert path.read_text().startswith("# x_m, y_m, w_tr_right_m, w_tr_left_m\n")
    back = load_f1tenth_csv(path)
    assert back.geometry_hash == t.geometry_hash
    assert back.name == "kidney"
    asym = Track(t.control_points, 0.6, 0.4)
    save_f1tenth_csv(asym, path, decimals=4)
    assert load_f1tenth_csv(path).half_widths(3.0) == pytest.approx((0.6, 0.4))


def test_shipped_sample_csv():
    assert "sample_circuit.csv" in packaged_track_files()
    packaged = data_dir() / "sample_circuit.csv"
    t = load_track(packaged)
    assert 40 <= t.length <= 60
    assert t.orientation == "ccw"
    assert validate_track(t, min_radius=1.2) == []
    # Also found by name and by the repository-relative path, from any directory.
    assert load_track("sample_circuit").geometry_hash == t.geometry_hash
    assert load_track("tracks/data/sample_circuit.csv").geometry_hash == t.geometry_hash
    # The file is this project's own layout: it matches library.sample_circuit().
    ref = sample_circuit()
    np.testing.assert_allclose(t.control_points, ref.control_points, atol=1e-4)
    np.testing.assert_allclose(t.control_half_widths[0], ref.control_half_widths[0], atol=1e-4)
    np.testing.assert_allclose(t.control_half_widths[1], ref.control_half_widths[1], atol=1e-4)


# --------------------------------------------------------------------------- JSON


def test_json_round_trip(tmp_path):
    t = generate_track(3).reversed(name="my-track")
    path = tmp_path / "t.json"
    save_track_json(t, path)
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]  # no temp file left behind
    doc = json.loads(path.read_text())
    assert doc["format"] == "trackpilot-track" and doc["schema_version"] == 1
    assert doc["name"] == "my-track"
    assert len(doc["centreline"]) == len(doc["half_width_left"]) == len(t.control_points)
    back = load_track_json(path)
    assert back.geometry_hash == t.geometry_hash
    assert back.name == "my-track"
    assert back.length == t.length
    assert Track.from_dict(t.to_dict()).geometry_hash == t.geometry_hash
    save_track_json(get_track("oval"), path)  # overwrite in place
    assert load_track_json(path).name == "oval"


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d.update(schema_version=2), "unsupported schema_version 2"),
        (lambda d: d.pop("schema_version"), "unsupported schema_version None"),
        (lambda d: d.update(format="something-else"), "format"),
        (lambda d: d.pop("format"), "format"),
        (lambda d: d.pop("half_width_left"), "missing field"),
        (lambda d: d.update(half_width_left=[0.5, 0.5]), "half_width_left"),
        (lambda d: d.update(centreline="nope"), "centreline|non-numeric"),
    ],
)
def test_bad_json_names_the_file(tmp_path, mutate, match):
    doc = get_track("oval").to_dict()
    mutate(doc)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=match) as info:
        load_track_json(path)
    assert str(info.value).startswith(str(path))


def test_invalid_json_text(tmp_path):
    path = tmp_path / "garbage.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"garbage\.json: invalid JSON"):
        load_track_json(path)
    with pytest.raises(ValueError, match=r"absent\.json: file not found"):
        load_track_json(tmp_path / "absent.json")


# --------------------------------------------------------------------------- load_track


def test_load_track_dispatch(tmp_path):
    oval = get_track("oval")
    assert load_track("oval") is oval
    assert load_track(oval) is oval
    assert load_track("gen:7").geometry_hash == generate_track(7).geometry_hash
    assert load_track("gen-7").geometry_hash == generate_track(7).geometry_hash
    rev = load_track("oval-rev")
    assert rev.name == "oval-rev" and rev.orientation == "cw"
    save_track_json(oval, tmp_path / "o.json")
    assert load_track(str(tmp_path / "o.json")).geometry_hash == oval.geometry_hash
    assert load_track(tmp_path / "o.json").geometry_hash == oval.geometry_hash
    csv = write_csv(tmp_path / "ring.csv")
    small = load_track(csv, scale=0.1, allow_undrivable=True)  # 3-6 cm half widths
    assert small.length == pytest.approx(2 * math.pi * 2.0, rel=1e-4)


@pytest.mark.parametrize(
    "spec, kwargs, match",
    [
        ("no-such-track", {}, "unknown track 'no-such-track'.*oval"),
        ("gen:abc", {}, "unknown track"),
        ("oval", {"scale": 0.5}, "scale applies to CSV"),
        ("missing/thing.csv", {}, r"thing\.csv: file not found"),
        ("track.txt", {}, "unknown track"),
        (42, {}, "name, a path or a Track"),
    ],
)
def test_load_track_rejects_bad_specs(spec, kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_track(spec, **kwargs)
