"""DAgger at the pilot's latency (training.dagger): rounds append labelled episodes, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sim.dataset import open_dataset
from training import dagger
from training.config import TrainConfig
from training.relabel import relabel_episode


@pytest.fixture(scope="module")
def tiny_pilot(ring_dataset: Path, tmp_path_factory) -> Path:
    """A compact CNN trained one epoch on the ring laps, and a held-out ring track."""
    from tracks import Track
    from tracks.io import save_track_json
    from training.train import run

    root = tmp_path_factory.mktemp("dagger")
    th = 2 * np.pi * np.arange(40) / 40
    ring = Track(np.column_stack([2.0 * np.cos(th), 2.0 * np.sin(th)]), 0.5, 0.5, name="ring2")
    save_track_json(ring, root / "ring2.json")
    cfg = TrainConfig(
        data=str(ring_dataset), out=str(root / "run"), epochs=1, input_size=(24, 32), depth=3,
        split_ratios=(0.5, 0.5, 0.0), progress=False, tensorboard=False, threads=1,
    )  # fmt: skip
    run(cfg)
    return root


def _cfg(ring_dataset: Path, tiny_pilot: Path, out: Path, rounds: int) -> dagger.DaggerConfig:
    return dagger.DaggerConfig(
        pilot=str(tiny_pilot / "run"), data=str(ring_dataset), out=str(out), rounds=rounds,
        latency="100ms", eval_tracks=(str(tiny_pilot / "ring2.json"),), epochs=1, workers=1,
        threads=1,
    )  # fmt: skip


def test_rounds_append_marked_episodes_and_resume(
    ring_dataset: Path, tiny_pilot: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = (ring_dataset / "manifest.json").read_bytes()
    out = tmp_path / "dg"
    state = dagger.run_dagger(_cfg(ring_dataset, tiny_pilot, out, 1), say=lambda s: None)
    assert [r["round"] for r in state["rounds"]] == [0, 1]
    assert (ring_dataset / "manifest.json").read_bytes() == before  # --data is never written
    ds = open_dataset(out / "data")
    assert sum(r["source"] == "expert" for r in ds.episodes) == 2
    mine = [r for r in ds.episodes if r["source"] == "dagger"]
    assert sorted(r["direction"] for r in mine) == ["ccw", "cw"]
    for rec in mine:
        extra = rec["extra"]
        assert extra["round"] == 1 and extra["label_latency_ms"] == pytest.approx(100)
        assert extra["track_spec"] == str(ring_dataset.parent / "ring.json")
        assert sum(n for _, _, n in extra["segments"]) == rec["frames"]
        a = ds.load_episode(rec["key"])
        assert set(np.unique(a["takeover"])) <= {0, 1}
        drivers = np.concatenate([[d == "takeover"] * n for d, _, n in extra["segments"]])
        assert np.array_equal(a["takeover"] == 1, drivers)
        # Each frame is labelled with the expert's command for the state 100 ms later.
        lab = relabel_episode(a, rec, ds.info, 0.1)
        np.testing.assert_allclose(a["steering"][lab.valid], lab.steering[lab.valid], atol=1e-6)
        # (not valid: the last 100 ms, and frames whose t + L lay in frames left out at an
        # intervention's jump, which the stored episode no longer holds)
        assert not lab.valid[-2:].any() and lab.valid.mean() > 0.8
    r1 = state["rounds"][1]
    assert r1["episodes"] == 2 and r1["latency_ms"] == pytest.approx(100)
    assert Path(r1["pilot"]).is_file() and r1["driven_by"] == state["rounds"][0]["pilot"]
    best = json.loads(Path(r1["pilot"]).read_text())
    assert best["config"]["init_from"] == state["rounds"][0]["pilot"]  # warm start
    assert best["config"]["compensate_latency"] == "100ms"
    for name in ("dagger.json", "summary.md", "dagger.png"):
        assert (out / name).stat().st_size > 0
    assert "| 1 |" in (out / "summary.md").read_text()

    # A crash in round 2's training: its drives are kept, the round is not.
    def crash(tcfg):  # noqa: ANN001
        raise RuntimeError("killed")

    monkeypatch.setattr(dagger, "_train", crash)
    with pytest.raises(RuntimeError, match="killed"):
        dagger.run_dagger(_cfg(ring_dataset, tiny_pilot, out, 2), say=lambda s: None)
    saved = json.loads((out / "dagger.json").read_text())
    assert [r["round"] for r in saved["rounds"]] == [0, 1]
    keys = {r["key"]: r["sha256"] for r in open_dataset(out / "data").episodes}
    monkeypatch.undo()
    said: list[str] = []
    state = dagger.run_dagger(_cfg(ring_dataset, tiny_pilot, out, 2), say=said.append)
    assert [r["round"] for r in state["rounds"]] == [0, 1, 2]
    assert state["rounds"][1] == saved["rounds"][1]  # round 1 kept as it was
    assert not state["rounds"][1]["resumed"] and state["rounds"][2]["resumed"]
    assert any("round 2: 0 drives" in s for s in said)  # its drives were already appended
    after = {r["key"]: r["sha256"] for r in open_dataset(out / "data").episodes}
    assert after == keys
    assert sum(1 for k in after if k.startswith("dagger-r02")) == 2


def test_bad_input_is_one_line(
    ring_dataset: Path, tiny_pilot: Path, tmp_path: Path, capsys
) -> None:
    base = ["--pilot", str(tiny_pilot / "run"), "--data", str(ring_dataset)]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert dagger.main([*base, "--out", str(tmp_path / "other")]) == 2
    assert "not a DAgger run" in capsys.readouterr().err
    assert dagger.main([*base, "--out", str(tmp_path / "x"), "--car", "nope"]) == 2
    assert "rpi4-tflite" in capsys.readouterr().err  # the known cars are listed
    assert dagger.main([*base, "--out", str(tmp_path / "y"), "--tracks", "chicane"]) == 2
    assert "evaluation tracks" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_a_corrupt_pilot_is_named_before_anything_is_copied(
    ring_dataset: Path, tiny_pilot: Path, tmp_path: Path, capsys
) -> None:
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_pilot / "run", bad)
    weights = bad / "best.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    out = tmp_path / "d"
    rc = dagger.main(["--pilot", str(bad), "--data", str(ring_dataset), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "sha256 does not match" in err[0], err
    assert not (out / "data").exists()  # the dataset was not copied for a pilot that fails
