"""``python -m evaluation.evaluate``, ``evaluate()``, pilot specs and result rows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evaluation.evaluate import evaluate, main
from evaluation.pilots import checkpoint_kind, load_pilot_spec, pilot_env_settings
from evaluation.results import ResultRow
from evaluation.runner import max_ok_latency
from evaluation.store import Store

SHORT = ["--tracks", "oval", "--directions", "ccw", "--laps", "1", "--workers", "1"]


def test_cli_expert_json(tmp_path, capsys) -> None:
    db = tmp_path / "lb.sqlite"
    rc = main(["expert", *SHORT, "--latency", "measured", "--json", "--no-progress",
               "--out", str(tmp_path), "--db", str(db)])  # fmt: skip
    out = capsys.readouterr()
    assert rc == 0, out.err
    rows = [json.loads(line) for line in out.out.splitlines()]
    assert len(rows) == 1
    row = rows[0]
    assert row["pilot"] == "expert" and row["pilot_kind"] == "expert"
    assert row["track"] == "oval" and row["direction"] == "ccw" and row["seed"] == 0
    assert row["latency_mode"] == "measured"
    assert 0 < row["latency_ms"] <= row["latency_p95_ms"] < 50
    assert row["completed"] and row["laps_completed"] == 1 and row["interventions"] == 0
    assert row["autonomy"] == 100.0 and len(row["lap_times"]) == 1
    assert "trajectory" not in row  # printed rows stay short; the store keeps it
    assert row["code_version"] and row["hardware"] and row["device"].startswith("cpu")
    assert f"stored 1 rows in {db}" in out.err
    with Store(db, readonly=True) as store:
        (stored,) = store.closed_loop_rows(with_trajectories=True)
        (ev,) = store.evaluations()
    assert stored["pilot"] == "expert" and stored["completed"] and stored["trajectory"]
    assert stored["latency_ms"] == pytest.approx(row["latency_ms"])
    assert ev["context"]["source"] == "evaluation.evaluate"
    assert ev["context"]["pilots"] == ["expert"] and ev["context"]["hardware"] == row["hardware"]
    assert "dataset_fingerprint" not in ev["context"]  # the main job's stays current
    assert not list(tmp_path.glob("*.jsonl")) and not (tmp_path / "sweep.png").exists()


def test_cli_table(tmp_path, capsys) -> None:
    rc = main(["expert", *SHORT, "--latency", "20ms", "--no-progress", "--out", str(tmp_path),
               "--db", "none"])  # fmt: skip
    out = capsys.readouterr()
    assert rc == 0
    assert "expert" in out.out and "20.0ms" in out.out and "yes" in out.out
    assert "1 rows not stored (--db none)" in out.err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["no-such-pilot"], "no-such-pilot"),
        (["expert", "--latency", "fast"], "latency"),
        (["expert", "--tracks", "atlantis"], "atlantis"),
        (["expert", "--directions", "up"], "directions"),
        (["expert", "--laps", "0"], "laps"),
        (["expert", "--seeds", "a,b"], "integers"),
        (["expert", "--device", "tpu"], "device"),
    ],
)
def test_cli_bad_input_is_one_error_line(tmp_path, capsys, argv, message) -> None:
    rc = main([*argv, "--no-progress", "--out", str(tmp_path), "--db", str(tmp_path / "lb")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not (tmp_path / "lb").exists()  # refused before the store was opened


def test_cli_malformed_track_file(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("this,is\nnot a track\n")
    rc = main(["expert", "--tracks", str(bad), "--no-progress", "--out", str(tmp_path),
               "--db", str(tmp_path / "lb")])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: ")


def test_evaluate_in_process_with_sweep(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # where the default store (trackpilot_out/) would go
    rows = evaluate(
        ["expert"],
        tracks=["oval"],
        directions=["ccw"],
        laps=1,
        latency="0",
        sweep=True,
        sweep_latencies_ms=(0, 300),
        out_dir=str(tmp_path),
        progress=False,
    )
    main_rows = [r for r in rows if not r.sweep]
    sweep_rows = [r for r in rows if r.sweep]
    assert len(main_rows) == 1 and main_rows[0].latency_mode == "zero" and main_rows[0].ok
    assert [r.latency_ms for r in sweep_rows] == [0.0, 300.0]
    assert sweep_rows[1].crashed
    assert max_ok_latency(sweep_rows) == 0.0
    assert (tmp_path / "sweep.png").is_file()
    assert not (tmp_path / "trackpilot_out").exists()  # in-process: nothing stored unless db


def test_evaluate_cnn_checkpoint_with_measured_latency(tmp_path) -> None:
    from agents.cnn import write_checkpoint
    from agents.models import build_model

    model = build_model("compact", input_size=(30, 40), width=0.5, depth=3)
    write_checkpoint(tmp_path, "best", model)
    (row,) = evaluate(
        [str(tmp_path)],
        tracks=["oval"],
        directions=["cw"],
        laps=1,
        latency="measured",
        latency_calls=10,
        max_time_s=0.5,
        progress=False,
    )
    record = json.loads((tmp_path / "best.json").read_text())
    assert row.pilot_kind == "cnn" and row.checkpoint_sha256 == record["weights_sha256"]
    # the camera it was trained on: no dataset in the checkpoint, so its input size
    assert row.obs_mode == "image" and row.image_size == [30, 40]
    assert row.latency_mode == "measured" and 0 < row.latency_ms <= row.latency_p95_ms
    assert row.track == "oval" and row.direction == "cw"
    assert row.elapsed_s == pytest.approx(0.5) and not row.completed
    # What a chooser compares besides the score: the model's size.
    assert row.num_parameters == sum(p.numel() for p in model.parameters())
    assert row.model_bytes == (tmp_path / record["weights"]).stat().st_size
    assert not row.domain_randomization


def test_domain_randomization_runs_say_so_and_see_other_colours(tmp_path) -> None:
    import imageio.v2 as iio

    common = dict(
        tracks=["oval"], directions=["ccw"], laps=1, latency="0", max_time_s=0.3,
        progress=False, video_dir=str(tmp_path),
    )  # fmt: skip
    (clean,) = evaluate(["classical"], **common)
    (robust,) = evaluate(["classical"], domain_randomization=True, **common)
    assert not clean.domain_randomization and robust.domain_randomization
    assert clean.video.endswith("edge_oval_ccw_s0_0ms.mp4")
    assert robust.video.endswith("edge_oval_ccw_s0_0ms_dr.mp4")
    with iio.get_reader(clean.video) as a, iio.get_reader(robust.video) as b:
        first_clean, first_robust = (np.asarray(r.get_data(0)).astype(int) for r in (a, b))
    # The camera half (left) shows other colours, light or pose; the map half is the same.
    half = first_clean.shape[1] // 2
    assert np.abs(first_clean[:, :half] - first_robust[:, :half]).mean() > 5
    assert ResultRow.from_dict(robust.to_dict()).domain_randomization


def test_cli_unusable_ffmpeg_fails_before_any_run(tmp_path, capsys, monkeypatch) -> None:
    from sim import mp4

    broken = tmp_path / "ffmpeg"
    broken.write_text("#!/bin/sh\nexit 3\n")
    broken.chmod(0o755)
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(broken))
    mp4._probe.cache_clear()
    db = tmp_path / "lb.sqlite"
    try:
        rc = main(["expert", *SHORT, "--video", str(tmp_path / "v"), "--no-progress",
                   "--out", str(tmp_path / "out"), "--db", str(db)])  # fmt: skip
    finally:
        mp4._probe.cache_clear()
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith(f"error: {broken}: this ffmpeg cannot write MP4 video (exit status 3")
    assert not db.exists()  # refused before the store was opened


def test_classical_pilot_runs() -> None:
    (row,) = evaluate(
        ["classical"], tracks=["oval"], directions=["ccw"], laps=1, latency="20ms",
        max_time_s=0.5, progress=False,
    )  # fmt: skip
    assert row.pilot_kind == "classical" and row.obs_mode == "image"
    assert row.latency_ms == pytest.approx(20.0)


# --------------------------------------------------------------------------- pilots
def test_load_pilot_spec_expert_and_errors(tmp_path) -> None:
    pilot = load_pilot_spec("expert", speed=1.5)
    assert pilot.metadata()["kind"] == "expert" and pilot.config.cruise_speed == 1.5
    assert pilot_env_settings(pilot)["obs_mode"] == "state"  # privileged: no camera needed
    with pytest.raises(ValueError, match="no such file"):
        load_pilot_spec(str(tmp_path / "missing.json"))
    with pytest.raises(ValueError):
        load_pilot_spec("")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="neither a CNN checkpoint"):
        load_pilot_spec(str(other))
    (tmp_path / "weird.txt").write_text("x")
    with pytest.raises(ValueError, match="unknown pilot file type"):
        load_pilot_spec(str(tmp_path / "weird.txt"))
    with pytest.raises(ValueError, match="no pilot found"):
        load_pilot_spec(str(tmp_path))


def test_checkpoint_kind_detection(tmp_path) -> None:
    cnn = tmp_path / "run"
    cnn.mkdir()
    (cnn / "best.json").write_text(json.dumps({"format": "trackpilot-checkpoint", "version": 1}))
    assert checkpoint_kind(cnn) == ("cnn", cnn)
    assert checkpoint_kind(cnn / "best.json")[0] == "cnn"
    (cnn / "best.safetensors").write_bytes(b"")
    assert checkpoint_kind(cnn / "best.safetensors")[0] == "cnn"
    sb3 = tmp_path / "ppo"
    sb3.mkdir()
    (sb3 / "agent.json").write_text(json.dumps({"algo": "PPO", "obs_mode": "state"}))
    assert checkpoint_kind(sb3) == ("sb3", sb3)
    assert checkpoint_kind(sb3 / "agent.json")[0] == "sb3"


# --------------------------------------------------------------------------- rows
def _row(**kw) -> ResultRow:
    base = dict(
        pilot="p", pilot_kind="cnn", pilot_spec="runs/p", checkpoint_sha256="ab" * 32,
        dataset_fingerprint="fp", track="chicane", track_hash="h", direction="cw", speed=2.0,
        laps_target=3, seed=1, latency_mode="measured", latency_ms=12.5, latency_p95_ms=14.0,
        control_period_ms=50.0, effective_control_hz=20.0, device="cpu (x)", hardware="hw",
        code_version="abc-dirty", date="2026-01-01T00:00:00+00:00", laps_completed=2,
        off_track=1, flips=0, interventions=1, autonomy=80.0, mean_abs_cte=0.1,
        max_abs_cte=0.7, lap_times=[15.0, 15.5], mean_lap_time=15.25, mean_speed=2.0,
        mean_steering=0.01, elapsed_s=40.0, completed=False, trajectory=[[0.0, 1.0]],
    )  # fmt: skip
    base.update(kw)
    return ResultRow(**base)


def test_result_row_round_trip() -> None:
    row = _row()
    d = json.loads(json.dumps(row.to_dict()))
    assert ResultRow.from_dict(d) == row
    assert "trajectory" not in row.flat() and "lap_times" not in row.flat()
    assert row.crashed and not row.ok
    assert "trajectory" not in row.to_dict(trajectory=False)


def test_result_row_rejects_bad_dicts() -> None:
    d = _row().to_dict()
    with pytest.raises(ValueError, match="version"):
        ResultRow.from_dict({**d, "version": 99})
    missing = dict(d)
    del missing["track"]
    with pytest.raises(ValueError, match="track"):
        ResultRow.from_dict(missing)
    with pytest.raises(ValueError, match="unknown"):
        ResultRow.from_dict({**d, "colour": "red"})
