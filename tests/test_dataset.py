"""Dataset format: round trips, validation, crash safety (sim/dataset.py, sim/io_utils.py)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save

from sim import io_utils
from sim.dataset import (
    EPISODE_METADATA_KEY,
    FRAME_FIELDS,
    SCHEMA_VERSION,
    DatasetError,
    DatasetWriter,
    EpisodeMeta,
    dataset_fingerprint,
    dataset_summary,
    is_warning,
    main,
    open_dataset,
    synthetic_episode,
    validate_dataset,
)

HW = (8, 12)
INFO = {
    "env_id": "TrackPilot-v0",
    "env_version": 0,
    "pybullet_version": "3.2.7",
    "renderer": "tiny",
    "camera": {"height": 0.2, "pitch": -15.0, "fov": 90.0, "image_size": list(HW)},
    "control_hz": 20,
    "physics_hz": 240,
}


def make_frames(seed: int, n: int, hw: tuple[int, int] = HW) -> dict[str, np.ndarray]:
    return synthetic_episode(np.random.default_rng(seed), n, hw)


def make_meta(seed: int = 0, **kw) -> EpisodeMeta:
    args = {"track_id": "oval", "track_hash": "h0", "direction": "ccw", "seed": seed}
    args |= {"source": "expert", "laps": 1, "expert": {"lookahead": 0.5}}
    return EpisodeMeta(**(args | kw))


def make_dataset(root: Path, lengths=(5, 7, 3)) -> tuple[DatasetWriter, list[dict]]:
    """A tiny dataset: episodes e0, e1, ... with the given frame counts."""
    writer = DatasetWriter(root, INFO)
    frames = []
    for i, n in enumerate(lengths):
        f = make_frames(i, n)
        meta = make_meta(i, direction=("ccw", "cw")[i % 2], track_id=("oval", "eight")[i == 2])
        writer.write_episode(f"e{i}", f, meta)
        frames.append(f)
    return writer, frames


def errors(problems: list[str]) -> list[str]:
    return [p for p in problems if not is_warning(p)]


def rewrite_episode(root: Path, key: str, arrays: dict[str, np.ndarray]) -> Path:
    """Replace an episode file behind the writer's back, keeping the manifest consistent."""
    meta = json.dumps({"key": key})
    data = save(arrays, metadata={EPISODE_METADATA_KEY: meta})
    path = root / "episodes" / f"ep-{key}.safetensors"
    path.write_bytes(data)
    manifest = json.loads((root / "manifest.json").read_text())
    rec = next(r for r in manifest["episodes"] if r["key"] == key)
    rec.update(sha256=io_utils.sha256_file(path), bytes=len(data), frames=len(arrays["steering"]))
    (root / "manifest.json").write_text(json.dumps(manifest))
    return path


# ---------------------------------------------------------------------------------------------


def test_round_trip(tmp_path):
    _, frames = make_dataset(tmp_path)
    ds = open_dataset(tmp_path)
    assert len(ds) == 15 and len(ds.episodes) == 3 and ds.info == INFO
    assert ds.image_size == HW
    for i, f in enumerate(frames):
        for key in (i, f"e{i}"):
            ep = ds.load_episode(key)
            assert set(ep) == set(FRAME_FIELDS)
            for name, a in f.items():
                assert ep[name].dtype == FRAME_FIELDS[name][0]
                np.testing.assert_array_equal(ep[name], a)
    for verify in (False, True):
        arr = ds.load_arrays(verify=verify)
        for name in FRAME_FIELDS:
            np.testing.assert_array_equal(arr[name], np.concatenate([f[name] for f in frames]))
        assert arr["episode"].dtype == np.int32 and arr["frame"].dtype == np.int32
        np.testing.assert_array_equal(arr["episode"], [0] * 5 + [1] * 7 + [2] * 3)
        np.testing.assert_array_equal(arr["frame"], [*range(5), *range(7), *range(3)])
    sub = ds.load_arrays(fields=["steering", "image"], episodes=[2, 0])
    assert set(sub) == {"steering", "image", "episode", "frame"}
    np.testing.assert_array_equal(
        sub["image"], np.concatenate([frames[2]["image"], frames[0]["image"]])
    )
    np.testing.assert_array_equal(sub["episode"], [2] * 3 + [0] * 5)
    np.testing.assert_array_equal(sub["frame"], [*range(3), *range(5)])
    assert sub["image"].flags.writeable and sub["image"].flags.c_contiguous
    assert ds.episode_meta("e2").track_id == "eight"
    with pytest.raises(ValueError, match="unknown frame field"):
        ds.load_arrays(fields=["nope"])


def test_manifest_records(tmp_path):
    writer, _ = make_dataset(tmp_path, lengths=(4,))
    rec = writer.write_episode("x", make_frames(9, 6), make_meta(9, extra={"note": "hi"}))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["format"] == "trackpilot-dataset"
    assert manifest["schema_version"] == SCHEMA_VERSION
    assert manifest["info"] == INFO and manifest["created"]
    assert manifest["episodes"][-1] == rec
    path = tmp_path / rec["file"]
    assert rec["file"] == "episodes/ep-x.safetensors"
    assert rec["sha256"] == io_utils.sha256_file(path)
    assert rec["bytes"] == path.stat().st_size and rec["frames"] == 6
    assert rec["extra"] == {"note": "hi"} and rec["expert"] == {"lookahead": 0.5}
    assert EpisodeMeta.from_record(rec) == make_meta(9, extra={"note": "hi"})
    assert not list((tmp_path / "episodes").glob(".*")), "no temp files left"


def test_validate_and_cli_ok(tmp_path, capsys):
    make_dataset(tmp_path)
    assert validate_dataset(tmp_path) == []
    assert main(["validate", str(tmp_path)]) == 0
    assert "OK: 3 episodes, 15 frames" in capsys.readouterr().out
    assert main(["info", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "#" in out and "oval" in out and "8x12" in out
    assert main(["info", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["frames"] == 15
    for argv in (["validate", str(tmp_path / "nope")], ["info", str(tmp_path / "episodes")]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err


def _flip_byte(root: Path) -> Path:
    path = root / "episodes/ep-e1.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def _truncate(root: Path) -> Path:
    path = root / "episodes/ep-e1.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    return path


def _nan_steering(root: Path) -> Path:
    f = make_frames(1, 7)
    f["steering"][3] = np.nan
    return rewrite_episode(root, "e1", f)


def _wrong_image_shape(root: Path) -> Path:
    return rewrite_episode(root, "e1", make_frames(1, 7, hw=(8, 10)))


def _missing_file(root: Path) -> Path:
    path = root / "episodes/ep-e1.safetensors"
    path.unlink()
    return path


def _bad_json(root: Path) -> Path:
    path = root / "manifest.json"
    path.write_text(path.read_text()[:-20])
    return path


def _wrong_schema(root: Path) -> Path:
    path = root / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["schema_version"] = 99
    path.write_text(json.dumps(manifest))
    return path


@pytest.mark.parametrize(
    "damage, expect",
    [
        (_flip_byte, "sha256 mismatch"),
        (_truncate, "truncated"),
        (_nan_steering, "NaN"),
        (_wrong_image_shape, "image size 8x10"),
        (_missing_file, "missing"),
        (_bad_json, "invalid JSON"),
        (_wrong_schema, "this trackpilot reads 1 and 2"),
    ],
)
def test_validate_catches(tmp_path, capsys, damage, expect):
    make_dataset(tmp_path)
    path = damage(tmp_path)
    problems = errors(validate_dataset(tmp_path))
    assert problems, "damage not detected"
    assert any(str(path) in p and expect in p for p in problems), problems
    assert all("\n" not in p for p in problems)
    assert main(["validate", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert str(path) in out and "FAILED:" in out


def test_loaders_refuse_damaged_files(tmp_path):
    make_dataset(tmp_path)
    _flip_byte(tmp_path)
    ds = open_dataset(tmp_path)
    with pytest.raises(DatasetError, match="sha256 mismatch"):
        ds.load_episode("e1")
    with pytest.raises(DatasetError, match="sha256 mismatch"):
        ds.load_arrays(verify=True)
    # unverified, the compressed data is still checked (zstd's own checksum and sizes)
    with pytest.raises(DatasetError, match=r"ep-e1.*the file is damaged") as e:
        ds.load_episode("e1", verify=False)
    assert "\n" not in str(e.value)
    path = tmp_path / "episodes/ep-e0.safetensors"
    path.write_bytes(b"\xff" * 8 + path.read_bytes()[8:])  # absurd header length
    with pytest.raises(DatasetError, match=r"ep-e0.*not a valid safetensors"):
        ds.load_arrays()
    _wrong_schema(tmp_path)
    with pytest.raises(DatasetError, match="schema_version is 99, this trackpilot reads 1 and 2"):
        open_dataset(tmp_path)
    with pytest.raises(DatasetError, match="missing"):
        open_dataset(tmp_path / "episodes")


def test_incompatible_info_raises(tmp_path):
    make_dataset(tmp_path, lengths=(2,))
    for change in (
        {"env_id": "Other-v0"},
        {"control_hz": 10},
        {"renderer": "plane"},
        {"camera": INFO["camera"] | {"image_size": [16, 24]}},
    ):
        with pytest.raises(
            ValueError, match=next(iter(change)) if "camera" not in change else "image_size"
        ):
            DatasetWriter(tmp_path, INFO | change)
    # other info fields may differ; the stored info block wins
    w = DatasetWriter(tmp_path, INFO | {"pybullet_version": "9.9"})
    assert w.info["pybullet_version"] == "3.2.7"


def test_has_episode_duplicate_and_overwrite(tmp_path):
    writer, _ = make_dataset(tmp_path, lengths=(3,))
    assert writer.has_episode("e0") and not writer.has_episode("e1")
    with pytest.raises(DatasetError, match="exists"):
        writer.write_episode("e0", make_frames(5, 4), make_meta())
    rec = writer.write_episode("e0", make_frames(5, 4), make_meta(), overwrite=True)
    ds = open_dataset(tmp_path)
    assert [r["key"] for r in ds.episodes] == ["e0"] and ds.episodes[0] == rec
    assert len(ds) == 4 and validate_dataset(tmp_path) == []


def test_writer_rejects_bad_input(tmp_path):
    writer, _ = make_dataset(tmp_path, lengths=(2,))
    bad = make_frames(0, 4)
    bad["steering"][0] = np.nan
    with pytest.raises(DatasetError, match="NaN"):
        writer.write_episode("a", bad, make_meta())
    bad = make_frames(0, 4)
    bad["steering"][0] = 1.5
    with pytest.raises(DatasetError, match=r"\[-1, 1\]"):
        writer.write_episode("a", bad, make_meta())
    with pytest.raises(DatasetError, match="image size"):
        writer.write_episode("a", make_frames(0, 4, hw=(16, 12)), make_meta())
    bad = make_frames(0, 4)
    bad["image"] = bad["image"].astype(np.float32)
    with pytest.raises(DatasetError, match="uint8"):
        writer.write_episode("a", bad, make_meta())
    bad = make_frames(0, 4)
    del bad["lap"]
    with pytest.raises(DatasetError, match="missing fields"):
        writer.write_episode("a", bad, make_meta())
    with pytest.raises(ValueError, match="key"):
        writer.write_episode("../evil", make_frames(0, 4), make_meta())
    with pytest.raises(ValueError, match="direction"):
        make_meta(direction="left")
    # compatible dtypes are converted
    ok = make_frames(0, 4)
    ok["steering"] = ok["steering"].astype(np.float64)
    ok["lap"] = ok["lap"].astype(np.int64)
    writer.write_episode("a", ok, make_meta())
    assert open_dataset(tmp_path).load_episode("a")["steering"].dtype == np.float32
    assert validate_dataset(tmp_path) == []


def test_summary_counts(tmp_path):
    make_dataset(tmp_path)
    s = dataset_summary(open_dataset(tmp_path))
    assert (s["episodes"], s["frames"], s["image_size"]) == (3, 15, [8, 12])
    assert s["by_track"] == {
        "eight": {"episodes": 1, "frames": 3},
        "oval": {"episodes": 2, "frames": 12},
    }
    assert s["by_direction"] == {
        "ccw": {"episodes": 2, "frames": 8},
        "cw": {"episodes": 1, "frames": 7},
    }
    assert s["by_source"] == {"expert": {"episodes": 3, "frames": 15}}
    hist = s["steering_histogram"]
    assert len(hist["counts"]) == 21 and len(hist["edges"]) == 22 and sum(hist["counts"]) == 15
    assert s["bytes_per_frame"] > 8 * 12 * 3
    json.dumps(s)


def test_fingerprint(tmp_path):
    writer, _ = make_dataset(tmp_path, lengths=(2, 3))
    fp = dataset_fingerprint(open_dataset(tmp_path))
    assert fp == dataset_fingerprint(open_dataset(tmp_path)) and len(fp) == 64
    writer.write_episode("new", make_frames(7, 2), make_meta())
    assert dataset_fingerprint(open_dataset(tmp_path)) != fp


def test_leftovers_are_warnings_and_cleaned(tmp_path, capsys):
    make_dataset(tmp_path, lengths=(2,))
    episodes = tmp_path / "episodes"
    orphan = episodes / "ep-orphan.safetensors"
    orphan.write_bytes((episodes / "ep-e0.safetensors").read_bytes())
    dead_pid = 2**30  # above any pid_max
    temps = [
        episodes / f".ep-x.safetensors.tmp-{dead_pid}-ab12",
        tmp_path / f".manifest.json.tmp-{dead_pid}-cd34",
    ]
    live = episodes / f".ep-y.safetensors.tmp-{os.getpid()}-ef56"  # a live writer's: kept
    for p in [*temps, live]:
        p.write_bytes(b"partial")
    problems = validate_dataset(tmp_path)
    assert len(problems) == 4 and all(is_warning(p) for p in problems)
    assert any(str(orphan) in p for p in problems)
    assert main(["validate", str(tmp_path)]) == 0
    assert "4 warnings" in capsys.readouterr().out
    DatasetWriter(tmp_path, INFO)
    assert not orphan.exists() and not any(p.exists() for p in temps) and live.exists()


def test_refuses_to_create_over_unlisted_data(tmp_path):
    make_dataset(tmp_path, lengths=(2,))
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(DatasetError, match="refusing"):
        DatasetWriter(tmp_path, INFO)
    assert (tmp_path / "episodes/ep-e0.safetensors").exists()


def test_concurrent_writers(tmp_path):
    DatasetWriter(tmp_path, INFO)

    def record(tid: int) -> None:
        w = DatasetWriter(tmp_path, INFO)
        for j in range(6):
            w.write_episode(f"t{tid}-{j}", make_frames(tid * 10 + j, 3), make_meta(j))

    threads = [threading.Thread(target=record, args=(t,)) for t in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ds = open_dataset(tmp_path)
    assert len(ds.episodes) == 18 and validate_dataset(tmp_path) == []


def test_io_utils(tmp_path):
    path = tmp_path / "x.json"
    io_utils.atomic_write_json(path, {"a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2]}
    io_utils.atomic_write_text(path, "two")
    assert path.read_text() == "two" and os.listdir(tmp_path) == ["x.json"]
    with pytest.raises(ValueError):
        io_utils.atomic_write_json(path, {"a": float("nan")})
    assert path.read_text() == "two" and os.listdir(tmp_path) == ["x.json"]
    assert io_utils.sha256_file(path) == io_utils.sha256_bytes(b"two")
    assert io_utils.is_temp_file(f".x.json.tmp-{os.getpid()}-00ff")
    assert not io_utils.is_temp_file("x.json")
    with io_utils.file_lock(tmp_path / "lock"), io_utils.file_lock(tmp_path / "other"):
        pass


# ---------------------------------------------------------------------------------------------
# Crash safety: SIGKILL a recorder at random moments; the dataset must always stay valid.

WRITER_PROC = Path(__file__).with_name("_dataset_writer_proc.py")
KILL_INFO = {"env_id": "KillTest-v0", "camera": {"image_size": [16, 24]}, "control_hz": 20}


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_kill_recorder_at_random_points(tmp_path):
    root = tmp_path / "ds"
    rnd = random.Random(1234)
    listed: dict[str, str] = {}
    for k in range(6):
        proc = subprocess.Popen(
            [sys.executable, str(WRITER_PROC), str(root), str(k)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
            time.sleep(rnd.uniform(0.05, 0.6))
        finally:
            proc.kill()  # SIGKILL
            proc.wait()
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
        ds = open_dataset(root)
        problems = validate_dataset(root)
        assert errors(problems) == [], problems
        now = {rec["key"]: rec["sha256"] for rec in ds.episodes}
        assert listed.items() <= now.items(), "a completed episode changed or vanished"
        for rec in ds.episodes:
            if rec["key"] not in listed:
                ds.load_episode(rec["key"])  # verifies the sha256
        listed = now
    assert len(listed) > 6
    # the next writer cleans up whatever the last kill left behind
    DatasetWriter(
        root, {"env_id": "KillTest-v0", "camera": {"image_size": [16, 24]}, "control_hz": 20}
    )
    assert validate_dataset(root) == []
    assert len(open_dataset(root).load_arrays(fields=["steering"])["steering"]) == len(
        open_dataset(root)
    )


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@pytest.mark.parametrize(
    "die_at, complete, leftovers",
    [
        # os.replace calls: 1 = new manifest, then per episode: episode file, manifest
        ("episode_temp:3", 2, True),  # half of episode 3's temp file written
        ("manifest_temp:3", 1, True),  # half of the manifest listing episode 2 written
        ("replace:4", 1, True),  # episode 2's temp file complete, not yet renamed
        ("after_replace:4", 1, True),  # episode 2 renamed into place, not yet listed
        ("replace:5", 1, True),  # new manifest listing episode 2 complete, not yet renamed
        ("after_replace:5", 2, False),  # episode 2 listed
    ],
)
def test_crash_at_each_write_step(tmp_path, die_at, complete, leftovers):
    root = tmp_path / "ds"
    proc = subprocess.run(
        [sys.executable, str(WRITER_PROC), str(root), "--die-at", die_at],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    ds = open_dataset(root)
    assert len(ds.episodes) == complete
    problems = validate_dataset(root)
    assert errors(problems) == [], problems
    assert bool(problems) == leftovers, problems  # temp/orphan files are warnings
    for rec in ds.episodes:
        ds.load_episode(rec["key"])
    DatasetWriter(root, KILL_INFO)
    assert validate_dataset(root) == []


def test_manifest_cannot_point_outside_the_dataset(tmp_path):
    make_dataset(tmp_path, lengths=(2,))
    path = tmp_path / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["episodes"][0]["file"] = "../../etc/passwd"
    path.write_text(json.dumps(manifest))
    with pytest.raises(
        DatasetError, match=r"manifest.json: episodes\[0\].*file is '../../etc/passwd'"
    ):
        open_dataset(tmp_path)
    assert any("etc/passwd" in p for p in errors(validate_dataset(tmp_path)))


def test_info_without_image_size(tmp_path):
    writer = DatasetWriter(tmp_path, {"env_id": "X-v0", "control_hz": 20})
    writer.write_episode("a", make_frames(0, 3), make_meta())
    writer.write_episode("b", make_frames(1, 2), make_meta())
    with pytest.raises(DatasetError, match="image size"):  # the first episode fixed it
        writer.write_episode("c", make_frames(2, 2, hw=(4, 4)), make_meta())
    arr = open_dataset(tmp_path).load_arrays()
    assert arr["image"].shape == (5, *HW, 3)
    assert dataset_summary(open_dataset(tmp_path))["image_size"] == list(HW)
