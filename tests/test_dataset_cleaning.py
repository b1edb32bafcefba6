"""Seeing and cleaning data: how episodes ended (in the metadata and in ``info``), ``filter``
(off-track endings, takeovers, chosen episodes) and ``merge`` (compatible datasets only)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from sim.dataset import (
    ENDINGS,
    FRAME_FIELDS,
    DatasetError,
    DatasetWriter,
    EpisodeMeta,
    FilterConfig,
    episode_ending,
    filter_dataset,
    main,
    merge_datasets,
    open_dataset,
    synthetic_episode,
    validate_dataset,
)

HW = (6, 8)
INFO = {
    "env_id": "trackpilot/TrackDrive-v0",
    "env_version": 3,
    "renderer": "plane",
    "camera": {"image_size": list(HW)},
    "control_hz": 20,
    "physics_hz": 240,
    "pybullet_version": "3.2.7",
}


def episode(n: int, seed: int, takeover: tuple[tuple[int, int], ...] = ()) -> dict:
    """``n`` frames 0.05 s apart, one lap every 20 frames, takeover over the given runs."""
    f = synthetic_episode(np.random.default_rng(seed), n, HW)
    f["t"] = (np.arange(n) * 0.05).astype(np.float32)
    f["lap"] = (np.arange(n) // 20).astype(np.int32)
    f["takeover"][:] = 0
    for lo, hi in takeover:
        f["takeover"][lo:hi] = 1
    return f


def meta(i: int, ended: str, **kw) -> EpisodeMeta:
    return EpisodeMeta("oval", "h", ("ccw", "cw")[i % 2], i, "takeover", laps=2, ended=ended, **kw)


@pytest.fixture
def session(tmp_path) -> tuple[Path, dict[str, dict]]:
    """A manual session: off the road, stopped with two takeovers, laps done, flipped."""
    root = tmp_path / "manual"
    w = DatasetWriter(root, INFO)
    eps = {
        "off": (episode(40, 0), "off_track"),
        "stop": (episode(40, 1, takeover=((10, 15), (30, 32))), "user_stop"),
        "laps": (episode(40, 2), "laps_done"),
        "flip": (episode(30, 3, takeover=((0, 4),)), "flipped"),
    }
    for i, (key, (f, ended)) in enumerate(eps.items()):
        w.write_episode(key, f, meta(i, ended))
    return root, {k: f for k, (f, _) in eps.items()}


def test_episode_endings_are_a_fixed_vocabulary_with_old_files_unknown():
    with pytest.raises(ValueError, match="ended must be one of"):
        meta(0, "crashed")
    assert episode_ending({"ended": "flipped"}) == "flipped"
    assert episode_ending({}) == "unknown"
    # sim.drive kept why it ended an episode in extra["ended"] before `ended` existed
    assert episode_ending({"extra": {"ended": "direction_change"}}) == "user_stop"
    assert episode_ending({"extra": {"ended": "off_track"}}) == "off_track"
    assert episode_ending({"extra": {"ended": "something else"}}) == "unknown"
    assert "unknown" in ENDINGS and "laps_done" in ENDINGS


def test_a_manifest_with_an_unknown_ending_is_refused(session):
    root, _ = session
    m = json.loads((root / "manifest.json").read_text())
    m["episodes"][0]["ended"] = "exploded"
    (root / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DatasetError, match="ended is 'exploded'"):
        open_dataset(root)


def test_info_shows_endings_per_episode_and_in_total_and_takeover_frames(session, capsys):
    root, _ = session
    assert main(["info", str(root)]) == 0
    out = capsys.readouterr().out
    totals = out.split("by ending:")[1].split("episodes:")[0]
    for ending, n, frames in [("off_track", 1, 40), ("user_stop", 1, 40), ("laps_done", 1, 40)]:
        assert f"{ending:<24} {n:>6,} episodes {frames:>10,} frames" in totals
    rows = {line.split()[0]: line.split() for line in out.split("episodes:\n")[1].splitlines()[1:5]}
    assert rows["stop"][-2:] == ["user_stop", "7"] and rows["flip"][-2:] == ["flipped", "4"]
    assert rows["off"][-2:] == ["off_track", "0"]
    assert "takeover     11 frames" in out
    assert main(["info", str(root), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["by_ending"]["flipped"] == {"episodes": 1, "frames": 30}
    assert [e["takeover_frames"] for e in s["per_episode"]] == [0, 7, 0, 4]
    assert s["file_versions"] == {"2": 4}


# --------------------------------------------------------------------------- filter


def test_filter_trims_off_track_endings_drops_takeovers_and_chosen_episodes(session, tmp_path):
    root, frames = session
    before = sorted(p.read_bytes() for p in (root / "episodes").iterdir())
    out = tmp_path / "clean"
    argv = ["filter", str(root), "--out", str(out), "--trim-offtrack-s", "0.5"]
    assert main([*argv, "--drop-takeovers", "--drop-episodes", "laps"]) == 0
    assert sorted(p.read_bytes() for p in (root / "episodes").iterdir()) == before  # untouched
    assert validate_dataset(out) == []
    ds = open_dataset(out)
    assert ds.keys == ["off", "stop-p0", "stop-p1", "stop-p2", "flip"]
    got = {k: ds.load_episode(k) for k in ds.keys}
    # off the road: the last 0.5 s (frames with t > 1.95 - 0.5) are gone, the rest kept as is
    assert len(got["off"]["t"]) == 30 and got["off"]["t"][-1] == pytest.approx(1.45)
    for name in FRAME_FIELDS:
        np.testing.assert_array_equal(got["off"][name], frames["off"][name][:30], err_msg=name)
    # takeovers: the episode splits around them; the parts keep their frames and count laps
    parts = [(0, 10), (15, 30), (32, 40)]
    for j, (lo, hi) in enumerate(parts):
        a = got[f"stop-p{j}"]
        np.testing.assert_array_equal(a["image"], frames["stop"]["image"][lo:hi])
        assert not a["takeover"].any()
    recs = {r["key"]: r for r in ds.episodes}
    assert [recs[f"stop-p{j}"]["ended"] for j in range(3)] == ["split", "split", "user_stop"]
    assert [recs[f"stop-p{j}"]["laps"] for j in range(3)] == [0, 1, 0]
    assert recs["stop-p1"]["extra"]["derived"] == [
        {"command": "filter", "key": "stop", "takeover_frames_dropped": 7, "frames": [15, 30]}
    ]
    # flipped: trimmed (0.5 s) and its takeover start dropped; still one run
    np.testing.assert_array_equal(got["flip"]["t"], frames["flip"]["t"][4:20])
    assert recs["flip"]["ended"] == "flipped"
    # provenance: where it came from, with which options, what was dropped
    prov = ds.info["provenance"][-1]
    assert prov["command"] == "filter" and prov["sources"][0]["path"] == str(root)
    assert prov["sources"][0]["episodes"] == 4
    assert prov["options"] == {
        "trim_offtrack_s": 0.5, "drop_takeovers": True, "drop_episodes": ["laps"]}  # fmt: skip
    assert prov["result"]["trimmed_episodes"] == 2 and prov["result"]["trimmed_frames"] == 20
    assert prov["result"]["takeover_frames_dropped"] == 7 + 4
    assert {k: v for k, v in ds.info.items() if k != "provenance"} == INFO


def test_filter_trims_only_once(session, tmp_path):
    root, _ = session
    once, twice = tmp_path / "once", tmp_path / "twice"
    filter_dataset(root, once, FilterConfig(trim_offtrack_s=0.5))
    s = filter_dataset(once, twice, FilterConfig(trim_offtrack_s=0.5))
    assert s["trimmed_episodes"] == 0 and s["frames"] == open_dataset(once).__len__()
    assert len(open_dataset(twice).info["provenance"]) == 2


def test_filter_refuses_bad_requests_with_one_line_and_writes_nothing(session, tmp_path, capsys):
    root, _ = session
    out = tmp_path / "x"
    for argv, said in [
        (["--drop-episodes", "nope"], "no episodes ['nope']"),
        (["--trim-offtrack-s", "-1"], "trim_offtrack_s must be >= 0"),
        (["--drop-episodes", "off,stop,laps,flip"], "nothing would be left"),
    ]:
        assert main(["filter", str(root), "--out", str(out), *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("error:") == 1 and said in err, err
        assert not out.exists()
    (out / "keep").mkdir(parents=True)
    assert main(["filter", str(root), "--out", str(out)]) == 2
    assert "exists and is not an empty directory" in capsys.readouterr().err
    assert main(["filter", str(tmp_path / "none"), "--out", str(tmp_path / "y")]) == 2
    assert "no such dataset directory" in capsys.readouterr().err


def test_an_interrupted_filter_leaves_nothing(session, tmp_path, monkeypatch):
    root, _ = session
    real = DatasetWriter.write_episode
    calls = []

    def interrupt_third(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(DatasetWriter, "write_episode", interrupt_third)
    with pytest.raises(KeyboardInterrupt):
        filter_dataset(root, tmp_path / "out", FilterConfig(drop_takeovers=True))
    assert sorted(os.listdir(tmp_path)) == ["manual"]  # no dataset, no staging directory


# --------------------------------------------------------------------------- merge


def _dataset(root: Path, info: dict, eps: dict[str, int]) -> Path:
    w = DatasetWriter(root, info)
    for i, (key, seed) in enumerate(eps.items()):
        w.write_episode(key, episode(10 + i, seed), meta(i, "laps_done"))
    return root


def test_merge_joins_compatible_datasets(tmp_path, capsys):
    a = _dataset(tmp_path / "a", INFO, {"e0": 0, "e1": 1})
    b = Path(shutil.copytree(a, tmp_path / "b"))  # e0, e1: the very same files
    DatasetWriter(b, INFO).write_episode("e5", episode(12, 5), meta(5, "off_track"))
    c = _dataset(tmp_path / "c", INFO | {"pybullet_version": "3.2.6"}, {"e0": 9})  # another e0
    out = tmp_path / "all"
    assert main(["merge", str(a), str(b), str(c), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "wrote 4 episodes" in said and "2 identical duplicates kept once" in said
    assert "2:e0 -> e0-m2" in said
    ds = open_dataset(out)
    assert ds.keys == ["e0", "e1", "e5", "e0-m2"] and validate_dataset(out) == []
    np.testing.assert_array_equal(ds.load_episode("e0-m2")["image"], episode(10, 9)["image"])
    np.testing.assert_array_equal(
        ds.load_episode("e5")["image"], open_dataset(b).load_episode("e5")["image"]
    )
    assert [r["ended"] for r in ds.episodes] == ["laps_done", "laps_done", "off_track", "laps_done"]
    prov = ds.info["provenance"][0]
    assert [s["path"] for s in prov["sources"]] == [str(a), str(b), str(c)]
    assert prov["info_differences"] == {"pybullet_version": ["3.2.7", "3.2.7", "3.2.6"]}
    assert ds.episodes[3]["extra"]["derived"] == [{"command": "merge", "source": 2, "key": "e0"}]


@pytest.mark.parametrize(
    "change, field, theirs, ours",
    [
        ({"camera": {"image_size": [12, 16]}}, "image_size", "[12, 16]", "[6, 8]"),
        ({"renderer": "tiny"}, "renderer", "'tiny'", "'plane'"),
        ({"control_hz": 10}, "control_hz", "10", "20"),
        ({"env_version": 2}, "env_version", "2", "3"),
    ],
)
def test_merge_refuses_incompatible_datasets_naming_the_field_and_both_values(
    tmp_path, capsys, change, field, theirs, ours
):
    a = _dataset(tmp_path / "a", INFO, {"e0": 0})
    hw = change.get("camera", {}).get("image_size", HW)
    d = tmp_path / "d"
    w = DatasetWriter(d, INFO | change)
    w.write_episode(
        "x", synthetic_episode(np.random.default_rng(0), 3, tuple(hw)), meta(0, "unknown")
    )
    out = tmp_path / "out"
    assert main(["merge", str(a), str(d), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1, err
    assert f"{field} is {theirs} in {d} but {ours} in {a}" in err, err
    assert not out.exists()
    with pytest.raises(ValueError, match="at least two"):
        merge_datasets([a], out)
