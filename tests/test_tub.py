"""DonkeyCar tubs: import, export, round trips and recognition (sim/dataset/tub*.py).

Tubs are built by tests/_donkeycar_tub.py, which replays DonkeyCar's datastore v2 writes at
the file level (catalogs split at max_len, deletes, sessions, crashes), and exported tubs are
compared with it byte for byte and read back with DonkeyCar's reader logic.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sim.dataset import (
    DatasetError,
    DatasetWriter,
    EpisodeMeta,
    TubExportConfig,
    TubImportConfig,
    TubMapping,
    dataset_fingerprint,
    export_tub,
    import_tub,
    main,
    open_dataset,
    synthetic_episode,
    tub_hint,
    validate_dataset,
)
from tests._donkeycar_tub import DonkeyTub, donkey_image, donkey_read
from tracks.cliargs import field_help
from training.synthetic import render_road

HW = (24, 32)
INPUTS = ["cam/image_array", "user/angle", "user/throttle", "user/mode"]
TYPES = ["image_array", "float", "float", "str"]
PILOT_INPUTS = [*INPUTS, "pilot/angle", "pilot/throttle"]
PILOT_TYPES = [*TYPES, "float", "float"]
T0 = 1_718_000_000.0  # a fixed clock: 2024-06-10


def road(i: int, hw: tuple[int, int] = HW, noise: float = 3.0) -> np.ndarray:
    rng = np.random.default_rng(i)
    return render_road(
        hw, offset=0.2 * np.sin(i / 5), curve=0.3 * np.cos(i / 7), noise=noise, rng=rng
    )


def rec(i: int, mode: str = "user", **kw) -> dict:
    """A record as a DonkeyCar vehicle hands it to the tub writer."""
    return {
        "cam/image_array": road(i),
        "user/angle": round(0.9 * np.sin(i / 3), 4),
        "user/throttle": round(0.3 + 0.01 * i, 4),
        "user/mode": mode,
        **kw,
    }


def build_tub(root: Path) -> DonkeyTub:
    """Two drives: catalogs of 5, a pilot stretch, deleted records, a crash at the end.

    Drive 1 (session _0): indexes 0-11 user, 12-14 local (pilot), 15-16 user; 3 and 7
    deleted. Drive 2 (session _1): indexes 17-22 user, then power lost mid-write.
    """
    tub = DonkeyTub(root, PILOT_INPUTS, PILOT_TYPES, [("location", "garage")], max_len=5, now=T0)
    t = T0
    for i in range(17):
        t += 0.05
        mode = "local" if 12 <= i <= 14 else "user"
        pilot = {"pilot/angle": -0.5, "pilot/throttle": 0.25} if mode == "local" else {}
        tub.write_record(rec(i, mode, **pilot), now=t)
    tub.delete_records({3, 7})
    tub.close()
    t += 60.0
    tub.reopen(now=t)
    for i in range(17, 23):
        t += 0.05
        tub.write_record(rec(i), now=t)
    tub.crash_mid_record(rec(23), now=t + 0.05)
    return tub


def drive(root: Path, records: list[dict], inputs=INPUTS, types=TYPES, close=True) -> DonkeyTub:
    """A new tub holding one drive of ``records``, written at 20 Hz."""
    tub = DonkeyTub(root, inputs, types, now=T0)
    for i, r in enumerate(records):
        tub.write_record(r, now=T0 + 0.05 * (i + 1))
    if close:
        tub.close()
    return tub


def edit_line(path: Path, i: int, edit) -> None:
    """Replace line ``i`` (0-based) of a catalog by ``edit(line)``."""
    lines = path.read_text().split("\n")
    lines[i] = edit(lines[i])
    path.write_text("\n".join(lines))


def spans(ds) -> list[tuple[int, int, str]]:
    """(first record, last record, why it ended) of each imported episode."""
    return [
        (e["extra"]["records"]["first"], e["extra"]["records"]["last"], e["extra"]["ended"])
        for e in ds.episodes
    ]


# ----------------------------------------------------------------------------- import


def test_import_honours_deletes_modes_sessions_and_a_partial_last_line(tmp_path, caplog):
    tub = build_tub(tmp_path / "tub_1")
    ignored: list[int] = []
    expected = [
        r
        for r in donkey_read(tub.root, on_ignored=ignored.append)
        if r.get("user/mode", "user") == "user"
    ]
    assert ignored == [23]  # DonkeyCar's reader drops the partial record too
    assert [r["_index"] for r in expected] == [
        0,
        1,
        2,
        4,
        5,
        6,
        8,
        9,
        10,
        11,
        15,
        16,
        *range(17, 23),
    ]
    with caplog.at_level(logging.WARNING, logger="sim.dataset"):
        summary = import_tub([tub.root], tmp_path / "ds")
    assert "partial last record" in caplog.text and "catalog_4.catalog: line 4" in caplog.text
    ds = open_dataset(tmp_path / "ds")
    assert validate_dataset(ds.root) == []
    assert summary["frames"] == len(ds) == len(expected) == 18
    assert summary["counts"] == {
        "records": 24, "imported": 18, "deleted": 2, "partial": 1, "mode local": 3,
    }  # fmt: skip
    # episodes end at each deleted record, at the pilot stretch and at the new session
    extras = [rec["extra"] for rec in ds.episodes]
    assert spans(ds) == [
        (0, 2, "deleted"), (4, 6, "deleted"), (8, 11, "mode"), (15, 16, "session_end"),
        (17, 22, "partial"),
    ]  # fmt: skip
    assert [e["session_id"] for e in extras] == [
        tub.manifest_metadata["sessions"]["all_full_ids"][s] for s in (0, 0, 0, 0, 1)
    ]
    assert extras[2]["catalogs"] == ["catalog_1.catalog", "catalog_2.catalog"]
    assert extras[0]["tub"] == str(tub.root.resolve())
    assert extras[0]["images"] == {
        "first": "0_cam_image_array_.jpg",
        "last": "2_cam_image_array_.jpg",
    }
    a = ds.load_arrays()
    images = np.stack([donkey_image(tub.root, r) for r in expected])
    assert np.array_equal(a["image"], images)  # the very pixels DonkeyCar's trainer sees
    # DonkeyCar's angle is + = right, trackpilot's steering + = left
    np.testing.assert_array_equal(a["steering"], [-np.float32(r["user/angle"]) for r in expected])
    np.testing.assert_array_equal(a["throttle"], [np.float32(r["user/throttle"]) for r in expected])
    first = ds.load_episode(4)
    ts = [r["_timestamp_ms"] for r in expected[-6:]]
    np.testing.assert_allclose(first["t"], (np.array(ts) - ts[0]) / 1000.0, atol=1e-6)
    # nothing pretends to know what a tub does not measure
    for name in ("speed", "pose", "lateral", "heading_error", "progress", "lap", "takeover"):
        assert not a[name].any(), name
    assert ds.info["unmeasured"] == ["speed", "pose", "lateral", "heading_error", "progress", "lap"]
    assert extras[0]["unmeasured"] == ds.info["unmeasured"]
    meta = ds.episode_meta(0)
    assert (meta.source, meta.track_id, meta.track_hash, meta.laps) == (
        "donkeycar-tub",
        "tub_1",
        "",
        0,
    )
    assert meta.extra["direction_known"] is False
    assert ds.info["env_id"] is None and ds.info["control_hz"] == 20  # 50 ms between records
    assert ds.info["tubs"][0]["metadata"] == {"location": "garage"}
    assert ds.info["tubs"][0]["deleted"] == 2 and ds.info["tubs"][0]["records"] == 24


def test_import_pilot_modes_label_what_the_car_executed(tmp_path):
    tub = build_tub(tmp_path / "tub")
    import_tub([tub.root], tmp_path / "ds", TubImportConfig(modes=("user", "local")))
    ds = open_dataset(tmp_path / "ds")
    assert len(ds) == 21
    ep = next(i for i, r in enumerate(ds.episodes) if r["extra"]["records"]["first"] == 8)
    extra = ds.episodes[ep]["extra"]
    assert extra["records"] == {"first": 8, "last": 16}
    assert extra["modes"] == [
        {"start": 0, "end": 4, "mode": "user"},
        {"start": 4, "end": 7, "mode": "local"},
        {"start": 7, "end": 9, "mode": "user"},
    ]
    a = ds.load_episode(ep)
    np.testing.assert_array_equal(a["steering"][4:7], 0.5)  # -pilot/angle
    np.testing.assert_array_equal(a["throttle"][4:7], 0.25)  # pilot/throttle
    # local_angle records name pilot/angle, which a tub without RECORD_DURING_AI lacks
    plain = drive(tmp_path / "plain", [rec(0, "local_angle")])
    with pytest.raises(DatasetError, match=r"user/mode 'local_angle' but no 'pilot/angle'"):
        import_tub([plain.root], tmp_path / "ds2", TubImportConfig(modes=("local_angle",)))
    assert not (tmp_path / "ds2").exists()


def test_import_splits_long_drives_and_pauses(tmp_path):
    tub = DonkeyTub(tmp_path / "t", INPUTS, TYPES, now=T0)
    t = T0
    for i in range(40):
        t += 0.05 if i != 25 else 2.0  # a 2 s pause before record 25
        tub.write_record(rec(i), now=t)
    tub.close()
    import_tub([tub.root], tmp_path / "ds", TubImportConfig(episode_seconds=0.5))
    ds = open_dataset(tmp_path / "ds")
    assert spans(ds) == [
        (0, 9, "split"), (10, 19, "split"), (20, 24, "gap"), (25, 34, "split"), (35, 39, "tub_end"),
    ]  # fmt: skip
    assert [r["key"] for r in ds.episodes] == [f"t-{k:04d}" for k in range(5)]


def test_import_after_a_crash_between_catalog_and_manifest(tmp_path, caplog):
    tub = drive(tmp_path / "t", [rec(i) for i in range(3)], close=False)
    tub.crash_after_catalog(rec(3), now=T0 + 0.2)
    assert len(donkey_read(tub.root)) == 4  # DonkeyCar reads the line the manifest missed
    with caplog.at_level(logging.WARNING, logger="sim.dataset"):
        import_tub([tub.root], tmp_path / "ds")
    assert len(open_dataset(tmp_path / "ds")) == 4
    assert "catalogs hold 4 records, manifest.json says the next index is 3" in caplog.text


def test_import_reads_the_older_crlf_datastore_and_empty_markers(tmp_path):
    # DonkeyCar's converter from its older tubs marks a gap in the indexes so
    records = [{"__empty__": True} if i == 2 else rec(i) for i in range(6)]
    tub = drive(tmp_path / "t", records, [*INPUTS, "__empty__"], [*TYPES, "boolean"])
    for p in [tub.root / "manifest.json", tub.root / "catalog_0.catalog"]:
        p.write_bytes(p.read_bytes().replace(b"\n", b"\r\n"))  # datastore_v2 before 2021
    import_tub([tub.root], tmp_path / "ds")
    ds = open_dataset(tmp_path / "ds")
    assert [(e["extra"]["records"]["first"], e["extra"]["ended"]) for e in ds.episodes] == [
        (0, "empty"), (3, "tub_end"),
    ]  # fmt: skip


def test_a_bad_record_stops_the_import_unless_skipped(tmp_path, caplog, capsys):
    tub = drive(tmp_path / "t", [rec(i) for i in range(6)])
    edit_line(tub.root / "catalog_0.catalog", 2, lambda line: line[:30] + "garbage")
    (tub.root / "images" / "4_cam_image_array_.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    out = tmp_path / "ds"
    assert main(["import-tub", str(tub.root), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "catalog_0.catalog: line 3: invalid JSON" in err
    assert "--skip-bad-records" in err and len(err.splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".ds.tmp-*"))
    with caplog.at_level(logging.WARNING, logger="sim.dataset"):
        rc = main(["import-tub", str(tub.root), "--out", str(out), "--skip-bad-records"])
    assert rc == 0
    assert "skipping an unreadable record (index 2)" in caplog.text
    assert "4_cam_image_array_.jpg: unreadable image" in caplog.text
    assert spans(open_dataset(out)) == [
        (0, 1, "unreadable"), (3, 3, "unreadable"), (5, 5, "tub_end"),
    ]  # fmt: skip
    assert "4 imported, 2 unreadable" in capsys.readouterr().out


def test_image_size_is_required_or_resized(tmp_path, capsys):
    records = [rec(i) for i in range(4)]
    records[2]["cam/image_array"] = road(2, (30, 40))
    tub = drive(tmp_path / "t", records)
    assert main(["import-tub", str(tub.root), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "2_cam_image_array_.jpg: 30x40, the dataset's frames are 24x32" in err
    assert "--image-size 24x32 --resize" in err
    args = ["--image-size", "12x16", "--resize"]
    assert main(["import-tub", str(tub.root), "--out", str(tmp_path / "b"), *args]) == 0
    ds = open_dataset(tmp_path / "b")
    assert ds.image_size == (12, 16) and len(ds) == 4
    want = np.asarray(
        Image.fromarray(donkey_image(tub.root, donkey_read(tub.root)[2])).resize(
            (16, 12), Image.Resampling.BILINEAR
        )
    )
    np.testing.assert_array_equal(ds.load_arrays()["image"][2], want)
    assert main(["import-tub", str(tub.root), "--out", str(tmp_path / "c"), "--resize"]) == 2
    assert "resize needs image_size" in capsys.readouterr().err


def test_cli_mapping_flags(tmp_path, capsys):
    tub = build_tub(tmp_path / "tub")
    out = tmp_path / "ds"
    rc = main(["import-tub", str(tub.root), "--out", str(out), "--steering-sign", "1",
               "--steering-scale", "0.5", "--throttle-scale", "2", "--direction", "cw",
               "--track-id", "home-oval"])  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    assert f"into {out}: 18 frames (24x32, 20 Hz) in 5 episodes" in printed
    ds = open_dataset(out)
    r0 = donkey_read(tub.root)[0]
    a = ds.load_episode(0)
    assert a["steering"][0] == np.float32(0.5 * r0["user/angle"])
    assert a["throttle"][0] == np.float32(2 * r0["user/throttle"])
    assert ds.episodes[0]["direction"] == "cw" and ds.episodes[0]["track_id"] == "home-oval"
    assert ds.episodes[0]["extra"]["direction_known"] is True
    with pytest.raises(SystemExit):  # argparse: "invalid choice: 2 (choose from -1, 1)"
        main(["import-tub", str(tub.root), "--out", str(tmp_path / "x"), "--steering-sign", "2"])
    assert "invalid choice: 2 (choose from -1, 1)" in capsys.readouterr().err
    assert main(["import-tub", str(tub.root), "--out", str(tmp_path / "y"), "--modes", "auto"]) == 2
    assert "modes must be some of user, local_angle, local" in capsys.readouterr().err


def test_import_refuses_an_existing_output_and_leaves_nothing(tmp_path):
    tub = build_tub(tmp_path / "tub")
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "x").write_text("mine")
    with pytest.raises(DatasetError, match="exists and is not empty"):
        import_tub([tub.root], tmp_path / "ds")
    assert (tmp_path / "ds" / "x").read_text() == "mine"
    # a killed import leaves only its hidden temp directory; the next one removes it
    stale = tmp_path / ".ds2.tmp-999999999-abcd"
    stale.mkdir()
    (stale / "manifest.json").write_text("{}")
    live = tmp_path / f".ds2.tmp-{os.getpid()}-abcd"  # a running import's: kept
    other = tmp_path / ".other.tmp-999999999-abcd"  # another output's: not this import's
    live.mkdir()
    other.mkdir()
    import_tub([tub.root], tmp_path / "ds2")
    assert not stale.exists() and len(open_dataset(tmp_path / "ds2")) == 18
    assert live.is_dir() and other.is_dir()
    # parents of --out are created
    import_tub([tub.root], tmp_path / "new" / "dir" / "ds")
    assert len(open_dataset(tmp_path / "new" / "dir" / "ds")) == 18


def test_two_tubs_of_one_name(tmp_path):
    a = build_tub(tmp_path / "a" / "tub")
    b = build_tub(tmp_path / "b" / "tub")
    summary = import_tub([a.root, b.root], tmp_path / "ds")
    ds = open_dataset(tmp_path / "ds")
    assert summary["frames"] == len(ds) == 36
    assert ds.keys[:2] == ["tub-0000", "tub-0001"] and ds.keys[5] == "tub-2-0000"
    assert [t["path"] for t in ds.info["tubs"]] == [str(a.root.resolve()), str(b.root.resolve())]


# -------------------------------------------------------------------------------- limits


def write_manifest(root: Path, lines: list) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    (root / "manifest.json").write_text("".join(json.dumps(x) + "\n" for x in lines))


def line5(paths, current=1, deleted=()) -> dict:
    return {
        "paths": paths,
        "current_index": current,
        "max_len": 1000,
        "deleted_indexes": list(deleted),
    }


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        ([INPUTS, TYPES, {}, {}], "has five JSON lines"),
        ([INPUTS, TYPES[:2], {}, {}, line5(["catalog_0.catalog"])], "4 inputs but 2 types"),
        ([INPUTS, TYPES, {}, {}, line5(["../../etc/passwd"])], "not a plain file name"),
        ([INPUTS, TYPES, {}, {}, line5(["catalog_0.catalog"], current=-1)], "current_index is -1"),
        ([INPUTS, TYPES, {}, {}, line5(["catalog_0.catalog"], deleted=["x"])], "deleted_indexes"),
        (
            [INPUTS, TYPES, {"a": [[[[[[[[[[[[[[[[[0]]]]]]]]]]]]]]]]]}, {}, line5([])],
            "nesting deeper",
        ),
        (
            [INPUTS, TYPES, {}, {}, line5(["catalog_0.catalog"])],
            "catalog_0.catalog: listed in manifest.json but missing",
        ),
        ([["user/angle"], ["float"], {}, {}, line5([])], "records no 'cam/image_array'"),
    ],
)
def test_bad_tub_manifests_are_one_line_errors(tmp_path, lines, problem):
    write_manifest(tmp_path / "t", lines)
    with pytest.raises(DatasetError, match=problem.replace("(", r"\(").replace(".", r"\.")) as e:
        import_tub([tmp_path / "t"], tmp_path / "ds")
    assert "\n" not in str(e.value) and not (tmp_path / "ds").exists()


def test_oversized_lines_and_images_are_refused(tmp_path, monkeypatch):
    import sim.dataset.tub_format as fmt
    import sim.dataset.tub_import as tub_mod

    tub = drive(tmp_path / "t", [rec(0)])
    monkeypatch.setattr(fmt, "MAX_TUB_RECORD_BYTES", 50)
    with pytest.raises(
        DatasetError, match=r"line 1: longer than the limit 50 bytes \(MAX_TUB_RECORD_BYTES\)"
    ):
        import_tub([tub.root], tmp_path / "a")
    monkeypatch.undo()
    big = tub.root / "images" / "0_cam_image_array_.jpg"
    Image.new("RGB", (4100, 2)).save(big)  # decoding would be cheap; the header is refused
    with pytest.raises(DatasetError, match=r"2x4100 pixels; sides must be in \[1, 4096\]"):
        import_tub([tub.root], tmp_path / "b", TubImportConfig(image_size=(2, 2), resize=True))
    monkeypatch.setattr(tub_mod, "MAX_TUB_IMAGE_BYTES", 10)
    with pytest.raises(DatasetError, match="more than the limit 10 .MAX_TUB_IMAGE_BYTES"):
        import_tub([tub.root], tmp_path / "c")
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


# -------------------------------------------------------------------------------- export


def make_dataset(root: Path, lengths=(7, 5), hw=HW) -> None:
    writer = DatasetWriter(
        root, {"env_id": "test", "camera": {"image_size": list(hw)}, "control_hz": 20}
    )
    for e, n in enumerate(lengths):
        arrays = synthetic_episode(np.random.default_rng(e), n, hw)
        arrays["image"] = np.stack([road(100 * e + k, hw, noise=0) for k in range(n)])
        arrays["t"] = (np.arange(n) * 0.05).astype(np.float32)
        meta = EpisodeMeta(
            track_id="oval", track_hash="h", direction="ccw", seed=e, source="expert"
        )
        writer.write_episode(f"ep{e}", arrays, meta)


def test_export_is_byte_for_byte_what_donkeycar_writes(tmp_path):
    make_dataset(tmp_path / "ds")
    ds = open_dataset(tmp_path / "ds")
    summary = export_tub(ds.root, tmp_path / "tub", TubExportConfig(max_len=4), created_at=T0)
    assert summary["catalogs"] == 3 and summary["frames"] == 12
    metadata = {
        "trackpilot_dataset": str(ds.root.resolve()),
        "trackpilot_fingerprint": dataset_fingerprint(ds),
        "exported_by": "python -m sim.dataset export-tub",
        "steering_sign": -1, "steering_scale": 1.0, "throttle_scale": 1.0,
    }  # fmt: skip
    ref = None
    start_ms = int(T0 * 1000)
    for e in range(2):
        a = ds.load_episode(e)
        if ref is None:
            ref = DonkeyTub(
                tmp_path / "ref", INPUTS, TYPES, list(metadata.items()), max_len=4, now=T0
            )
        else:
            ref.reopen(now=start_ms / 1000)
        for k in range(len(a["t"])):
            ms = start_ms + round(float(a["t"][k]) * 1000)
            r = {"cam/image_array": a["image"][k], "user/angle": -float(a["steering"][k]),
                 "user/throttle": float(a["throttle"][k]), "user/mode": "user"}  # fmt: skip
            ref.write_record(r, now=ms / 1000)
        ref.close()
        start_ms = ms + 1000
    files = sorted(
        p.relative_to(tmp_path / "tub") for p in (tmp_path / "tub").rglob("*") if p.is_file()
    )
    assert files == sorted(p.relative_to(ref.root) for p in ref.root.rglob("*") if p.is_file())
    assert len(files) == 12 + 3 * 2 + 1
    for f in files:
        assert (tmp_path / "tub" / f).read_bytes() == (ref.root / f).read_bytes(), f


def test_exported_tub_reads_in_donkeycar(tmp_path):
    make_dataset(tmp_path / "ds", lengths=(9, 4, 6))
    assert (
        main(["export-tub", str(tmp_path / "ds"), "--out", str(tmp_path / "tub"), "--max-len", "5"])
        == 0
    )
    records = donkey_read(tmp_path / "tub")
    ds = open_dataset(tmp_path / "ds")
    a = ds.load_arrays(fields=["image", "steering", "throttle"])
    assert [r["_index"] for r in records] == list(range(19))
    assert [r["user/mode"] for r in records] == ["user"] * 19
    np.testing.assert_array_equal([np.float32(-r["user/angle"]) for r in records], a["steering"])
    np.testing.assert_array_equal([np.float32(r["user/throttle"]) for r in records], a["throttle"])
    sessions = [r["_session_id"] for r in records]
    assert len(set(sessions[:9])) == len(set(sessions[9:13])) == 1 and len(set(sessions)) == 3
    lines = (tmp_path / "tub" / "manifest.json").read_text().split("\n")
    assert json.loads(lines[4])["paths"] == [f"catalog_{i}.catalog" for i in range(4)]
    assert json.loads(lines[3])["sessions"]["last_id"] == 2
    for r, img in zip(records, a["image"], strict=True):
        got = donkey_image(tmp_path / "tub", r)
        assert got.shape == img.shape
        # JPEG's 8x8 blocks are coarse against 24x32 frames: measured mean error 9
        assert np.abs(got.astype(int) - img).mean() < 12


def test_round_trip_export_then_import(tmp_path):
    """Labels come back exactly, times to the millisecond, images within JPEG's loss."""
    make_dataset(tmp_path / "ds", lengths=(30, 20, 25), hw=(120, 160))
    export_tub(tmp_path / "ds", tmp_path / "tub")
    import_tub([tmp_path / "tub"], tmp_path / "back")
    a, b = open_dataset(tmp_path / "ds"), open_dataset(tmp_path / "back")
    assert [r["frames"] for r in b.episodes] == [r["frames"] for r in a.episodes]
    x, y = a.load_arrays(), b.load_arrays()
    np.testing.assert_array_equal(y["steering"], x["steering"])
    np.testing.assert_array_equal(y["throttle"], x["throttle"])
    np.testing.assert_allclose(y["t"], x["t"], atol=0.5e-3 + 1e-6)
    err = np.abs(y["image"].astype(np.int16) - x["image"])
    # JPEG quality 75 with 4:2:0 chroma, measured on these flat-coloured road frames: mean
    # error 2.6, p99 27, PSNR 31.4 dB (on frames of sim.record: 2.45, 27, 31.5 dB); the
    # largest errors sit on the thin coloured lines, where the chroma is halved
    assert err.mean() < 3.0
    assert np.percentile(err, 99) <= 30
    psnr = 10 * np.log10(255**2 / np.mean(err.astype(np.float64) ** 2))
    assert psnr > 30.5
    # exporting the imported dataset again keeps the original timestamps
    export_tub(tmp_path / "back", tmp_path / "tub2")
    ts = [r["_timestamp_ms"] for r in donkey_read(tmp_path / "tub")]
    assert [r["_timestamp_ms"] for r in donkey_read(tmp_path / "tub2")] == ts


def test_export_refuses_an_existing_tub_and_bad_settings(tmp_path, capsys):
    make_dataset(tmp_path / "ds")
    export_tub(tmp_path / "ds", tmp_path / "tub")
    before = {p: p.read_bytes() for p in (tmp_path / "tub").rglob("*") if p.is_file()}
    assert main(["export-tub", str(tmp_path / "ds"), "--out", str(tmp_path / "tub")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert before == {p: p.read_bytes() for p in (tmp_path / "tub").rglob("*") if p.is_file()}
    assert (
        main(["export-tub", str(tmp_path / "ds"), "--out", str(tmp_path / "t2"), "--max-len", "0"])
        == 2
    )
    assert "max_len must be" in capsys.readouterr().err
    assert main(["export-tub", str(tmp_path / "nope"), "--out", str(tmp_path / "t3")]) == 2
    assert not (tmp_path / "t2").exists() and not (tmp_path / "t3").exists()


def test_every_setting_has_help():
    for cls in (TubMapping, TubImportConfig, TubExportConfig):
        for f in dataclasses.fields(cls):
            assert field_help(cls, f), f"{cls.__name__}.{f.name}"


def test_mapping_inverts():
    m = TubMapping(steering_sign=-1, steering_scale=0.8, throttle_scale=2.0)
    s, t = m.to_trackpilot(*m.to_donkeycar(0.4, 0.6))
    assert (s, t) == pytest.approx((0.4, 0.6))
    with pytest.raises(ValueError, match="steering_scale"):
        TubMapping(steering_scale=0.0)


# --------------------------------------------------------------- a tub where a dataset is


def test_a_tub_is_named_where_a_dataset_is_expected(tmp_path, capsys):
    tub = build_tub(tmp_path / "data" / "tub_1")
    want = (
        f"{tub.root} is a DonkeyCar tub, not a trackpilot dataset; import it with: "
        f"python -m sim.dataset import-tub {tub.root} --out DATASET"
    )
    with pytest.raises(DatasetError) as e:
        open_dataset(tub.root)
    assert str(e.value) == want
    assert validate_dataset(tub.root) == [want]
    for cmd in ("info", "validate"):
        assert main([cmd, str(tub.root)]) == 2
        assert capsys.readouterr().err == f"error: {want}\n"
    build_tub(tmp_path / "data" / "tub_2")
    assert main(["info", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'data'} holds 2 DonkeyCar tubs, not a trackpilot dataset" in err
    assert f"import-tub {tmp_path / 'data' / 'tub_1'} {tmp_path / 'data' / 'tub_2'} --out" in err
    assert tub_hint(tmp_path) is None


def test_training_on_a_tub_names_it_and_on_the_import_works(tmp_path, capsys):
    from training.train import main as train_main

    tub = DonkeyTub(tmp_path / "tub", INPUTS, TYPES, now=T0)
    t = T0
    for i in range(120):
        t += 0.05 if i % 30 else 5.0  # four drives apart
        tub.write_record(rec(i), now=t)
    tub.close()
    run = ["--out", str(tmp_path / "run"), "--epochs", "1", "--input-size", "24x32",
           "--batch-size", "16", "--no-progress", "--threads", "1", "--no-tensorboard"]  # fmt: skip
    assert train_main(["--data", str(tub.root), *run]) == 2
    assert "is a DonkeyCar tub, not a trackpilot dataset; import it with" in capsys.readouterr().err
    import_tub([tub.root], tmp_path / "ds")
    assert train_main(["--data", str(tmp_path / "ds"), *run]) == 0
    assert (tmp_path / "run" / "best.safetensors").is_file()


def test_timestamps_use_the_local_date_for_sessions(tmp_path):
    make_dataset(tmp_path / "ds", lengths=(3,))
    export_tub(tmp_path / "ds", tmp_path / "tub", created_at=T0)
    sid = donkey_read(tmp_path / "tub")[0]["_session_id"]
    assert sid == time.strftime("%y-%m-%d", time.localtime(T0)) + "_0"
    names = sorted(os.listdir(tmp_path / "tub" / "images"))
    assert names == sorted(f"{i}_cam_image_array_.jpg" for i in range(3))


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"cam/image_array": "../x.jpg"}, "cam/image_array: '../x.jpg' is not a plain file name"),
        ({"user/angle": "left"}, "user/angle is 'left', expected a number"),
        ({"_timestamp_ms": 1e30}, "_timestamp_ms is 1e+30, expected ms since 1970"),
        ({"_session_id": 7}, "_session_id is 7, expected a string"),
    ],
)
def test_bad_record_fields_are_one_line_errors(tmp_path, change, problem):
    tub = drive(tmp_path / "t", [rec(i) for i in range(3)])
    edit_line(
        tub.root / "catalog_0.catalog",
        1,
        lambda line: json.dumps(json.loads(line) | change, sort_keys=True),
    )
    with pytest.raises(DatasetError) as e:
        import_tub([tub.root], tmp_path / "ds")
    assert f"catalog_0.catalog: line 2 (record 1): {problem}" in str(e.value)
    assert "\n" not in str(e.value) and not (tmp_path / "ds").exists()
