"""Leaderboard ranking, constraint and staleness marks, and the report renderings."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path

import pytest

from evaluation import report as rp
from evaluation.cars import CARS
from evaluation.report import context as rp_context
from evaluation.store import Store

HERE_HW = "here-hw"
FP = "f" * 64
CAR = "rpi4-tflite"
PI4 = "Raspberry Pi 4 Model B Rev 1.4"


def _sha(pilot: str) -> str:
    return (pilot.encode().hex() * 8)[:64]


def _estimated(pilot: str, track: str, direction: str, ms: float, **kw: object) -> dict:
    """A run whose latency was estimated for the car computer ``CAR`` (schema 2)."""
    est = {
        "latency_mode": "estimated", "car": CAR, "latency_ms": ms, "latency_p95_ms": 1.3 * ms,
        "latency_p99_ms": 1.5 * ms, "latency_max_ms": 2.0 * ms,
        "latency_source": f"estimated for {CAR} from 10.2 MFLOP (Raspberry Pi 4 Model B, TFLite)",
        "car_model": rp.car_model_hash(CARS[CAR]), "mflop": 10.2, "hardware": "whatever",
    }  # fmt: skip
    return _run(pilot, track, direction, **{**est, **kw})


def _profiled(pilot: str, track: str, direction: str, ms: float, **kw: object) -> dict:
    """A run whose latency was replayed from a profile recorded on a Pi 4 (no --car)."""
    prof = {
        "latency_mode": "profile", "car": PI4, "latency_ms": ms, "latency_p95_ms": 1.2 * ms,
        "latency_p99_ms": 1.25 * ms, "latency_max_ms": 1.5 * ms,
        "latency_source": f"profile p.json ({PI4}, onnxruntime)", "profile_sha256": "a" * 64,
        "profile_model_sha256": _sha(pilot), "profile_hardware": "pi4-hw",
        "hardware": "whatever",
    }  # fmt: skip
    return _run(pilot, track, direction, **{**prof, **kw})


def _run(pilot: str, track: str, direction: str, **kw: object) -> dict:
    from tracks import load_track

    t = load_track(track)
    t = t.reversed() if direction == "cw" else t
    xy = t.resample(0.5).xy
    row = {
        "pilot": pilot,
        "pilot_kind": "cnn",
        "checkpoint_sha256": _sha(pilot),
        "dataset_fingerprint": FP,
        "track": track,
        "track_hash": t.geometry_hash,
        "direction": direction,
        "speed": 2.0,
        "laps_target": 2,
        "seed": 0,
        "latency_mode": "measured",
        "latency_ms": 2.0,
        "latency_p95_ms": 3.0,
        "control_period_ms": 50.0,
        "device": "cpu (test cpu, 2 cores)",
        "hardware": HERE_HW,
        "code_version": "v1",
        "laps_completed": 2,
        "off_track": 0,
        "flips": 0,
        "interventions": 0,
        "autonomy": 100.0,
        "mean_abs_cte": 0.05,
        "max_abs_cte": 0.2,
        "lap_times": [12.0, 11.5],
        "mean_speed": 1.9,
        "mean_steering": 0.0,
        "elapsed_s": 23.5,
        "completed": True,
        "trajectory": (xy + 0.05).tolist(),
    }
    row.update(kw)
    return row


COMPACT_SIZE = {"num_parameters": 45218, "model_bytes": 181234}
SLOW_SIZE = {"num_parameters": 11_200_000, "model_bytes": 44_800_000}


def write_video(path: Path, frames: int = 12) -> Path:
    """A real (small) MP4, as ``evaluate --video`` writes them."""
    import numpy as np

    from sim.mp4 import Mp4Writer

    path.parent.mkdir(parents=True, exist_ok=True)
    with Mp4Writer(path, 20) as w:
        for i in range(frames):
            frame = np.full((48, 128, 3), 80, np.uint8)
            frame[:, : 8 * i + 8] = (200, 60, 60)
            w.append(frame)
    return path


def synthetic_store(tmp_path: Path) -> Path:
    """A leaderboard with every kind of row: good, slow, flipped and stale pilots on this
    machine, two pilots estimated for the car computer ``CAR`` and one replayed from a Pi 4
    profile, classifier and regressor offline rows with a run directory, and a sweep. For
    the chooser: ``flipper`` run with two seeds (75 and 55 autonomy: 65.0 ± 14.1),
    randomised (robustness) runs of ``compact`` (10.0: only drives on the training palette)
    and ``expert`` (100.0), parameter counts and sizes of ``compact`` and ``slow_cls``,
    offline rows over different test frame counts (100, 100, 80), one run with a real
    video and one whose video is gone."""
    video = write_video(tmp_path / "videos" / "compact_triangle_ccw_s0.mp4")
    runs = []
    for track in ("triangle", "chicane"):
        for d in ("ccw", "cw"):
            extra = {"video": str(video)} if (track, d) == ("triangle", "ccw") else {}
            runs.append(_run("compact", track, d, **COMPACT_SIZE, **extra))
            gone = {"video": str(tmp_path / "gone.mp4")} if (track, d) == ("chicane", "cw") else {}
            runs.append(_run("expert", track, d, pilot_kind="expert", checkpoint_sha256=None, dataset_fingerprint=None, mean_abs_cte=0.02, **gone))  # fmt: skip
            runs.append(_run("slow_cls", track, d, latency_ms=180.0, laps_completed=1, off_track=3, interventions=3, autonomy=40.0, **SLOW_SIZE))  # fmt: skip
            runs.append(_run("flipper", track, d, flips=1, interventions=1, autonomy=75.0))
            runs.append(_run("flipper", track, d, seed=1, flips=1, interventions=3, autonomy=55.0))  # fmt: skip
            runs.append(_run("compact", track, d, domain_randomization=True, laps_completed=1, off_track=8, interventions=8, autonomy=20.0, **COMPACT_SIZE))  # fmt: skip
            runs.append(_run("expert", track, d, domain_randomization=True, pilot_kind="expert", checkpoint_sha256=None, dataset_fingerprint=None, mean_abs_cte=0.02))  # fmt: skip
            runs.append(_run("old_data", track, d, dataset_fingerprint="0" * 64, mean_abs_cte=0.03))
            runs.append(_run("other_hw", track, d, hardware="elsewhere", code_version="v0"))
            runs.append(_estimated("compact", track, d, 17.7, **COMPACT_SIZE))
            runs.append(_estimated("slow_cls", track, d, 400.0, laps_completed=1, off_track=3, interventions=3, autonomy=40.0, **SLOW_SIZE))  # fmt: skip
            runs.append(_profiled("compact", track, d, 12.0))
    run_dir = tmp_path / "runs" / "compact_cls"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.csv").write_text(
        "epoch,train_loss,train_mae,dev_loss,dev_mae,dev_macro_f1\n"
        "1,0.5,0.20,0.6,0.22,0.40\n2,0.3,0.10,0.4,0.12,0.60\n3,0.2,0.05,0.35,0.09,0.70\n"
    )
    per_class = [
        {"class": k, "value": v, "precision": 0.9, "recall": 0.8, "f1": 0.85, "support": 10, "predicted": 9, "averaged": k < 2}
        for k, v in enumerate((-0.5, 0.0, 0.5))
    ]  # fmt: skip
    offline = [
        {"pilot": "compact", "pilot_kind": "cnn", "split": "test", "output_kind": "regression", "n": 100, "mae": 0.05, "mse": 0.004, "latency_median_ms": 2.0, "latency_p95_ms": 3.0, "device": "cpu", "hardware": HERE_HW, "code_version": "v1", "mflop": 10.2, **COMPACT_SIZE},
        {"pilot": "compact_cls", "pilot_kind": "cnn", "split": "test", "output_kind": "classes", "n": 100, "mae": 0.07, "mse": 0.01, "macro_f1": 0.85, "accuracy": 0.8, "per_class": per_class, "latency_median_ms": 2.5, "run_dir": str(run_dir), "device": "cpu", "hardware": HERE_HW, "code_version": "v1", "mflop": 12.0},
        {"pilot": "slow_cls", "pilot_kind": "cnn", "split": "test", "output_kind": "classes", "n": 80, "mae": 0.04, "macro_f1": 0.9, "per_class": per_class, "latency_median_ms": 180.0, "device": "cpu", "hardware": HERE_HW, "code_version": "v1", "mflop": 50.0, **SLOW_SIZE},
    ]  # fmt: skip
    sweep = [
        _run("compact", "triangle", "ccw", latency_mode="fixed", latency_ms=ms, completed=ok, laps_completed=2 if ok else 1, interventions=0 if ok else 2, sweep=True)
        for ms, ok in ((0.0, True), (100.0, True), (200.0, False), (300.0, False))
    ]  # fmt: skip
    db = tmp_path / "lb.sqlite"
    with Store(db) as store:
        store.add(closed_loop=runs + sweep, offline=offline, context={"dataset_fingerprint": FP})
    return db


@pytest.fixture
def ctx(monkeypatch: pytest.MonkeyPatch) -> rp.Context:
    monkeypatch.setattr(rp_context, "_hardware", lambda device: HERE_HW)
    return rp.Context(code_version="v1", dataset_fingerprint=FP)


@pytest.fixture
def report(tmp_path: Path, ctx: rp.Context) -> rp.Report:
    with Store(synthetic_store(tmp_path)) as store:
        return rp.build_report(store, ctx, notes=["✓ a story line"])


def test_run_score_arithmetic() -> None:
    assert rp.run_score({"autonomy": 100.0, "laps_completed": 3, "laps_target": 3}) == 1.0
    assert rp.run_score({"autonomy": 50.0, "laps_completed": 1, "laps_target": 2}) == 0.25
    assert rp.run_score({"autonomy": -20.0, "laps_completed": 2, "laps_target": 2}) == 0.0
    assert rp.run_score({"autonomy": 100.0, "laps_completed": 5, "laps_target": 2}) == 1.0
    assert rp.run_score({"autonomy": None, "laps_completed": 2, "laps_target": 2}) == 0.0


def test_ranking_constraints_and_staleness(report: rp.Report) -> None:
    by = {e.pilot: e for e in report.entries if e.car is None}
    assert by["slow_cls"].violations == ["latency 180 ms > 50 ms"]
    assert by["slow_cls"].marks == "✗ latency 180 ms > 50 ms"
    assert by["flipper"].violations == ["flipped 8×"]
    assert by["compact"].feasible and by["compact"].score == 100.0
    assert by["slow_cls"].score == pytest.approx(20.0)  # 0.4 autonomy x 1/2 laps
    assert by["old_data"].stale == ["dataset"]
    assert by["other_hw"].stale == ["code", "hardware"]
    assert by["expert"].stale == [] and by["compact"].stale == []
    here = [e for e in report.entries if e.car is None]
    order = [e.pilot for e in here]
    # Feasible entries first, by score, ties on |CTE|; constraint breakers after, not hidden.
    assert order == ["expert", "old_data", "compact", "other_hw", "flipper", "slow_cls"]
    assert [e.rank for e in here] == [1, 2, 3, 4, 5, 6]
    assert all(len(e.runs) == 4 for e in report.entries if e.pilot != "flipper")
    assert len(by["flipper"].runs) == 8 and by["flipper"].seeds == [0, 1]
    assert not any(e.partial for e in report.entries)  # more seeds make no one partial


def test_newest_row_replaces_older_run(tmp_path: Path, ctx: rp.Context) -> None:
    db = tmp_path / "lb.sqlite"
    with Store(db) as store:
        store.add(closed_loop=[_run("a", "triangle", "ccw", autonomy=10.0)])
        store.add(closed_loop=[_run("a", "triangle", "ccw", autonomy=90.0)])
        entries = rp.rank_entries(store.closed_loop_rows(), ctx)
    assert len(entries) == 1 and len(entries[0].runs) == 1
    assert entries[0].score == pytest.approx(90.0)


def test_fixed_latency_entry_is_judged_on_its_measured_latency(ctx: rp.Context) -> None:
    rows = [_run("p", "triangle", "ccw", latency_mode="fixed", latency_ms=70.0)]
    rows[0]["id"] = 1
    offline = [
        {
            "pilot": "p",
            "checkpoint_sha256": rows[0]["checkpoint_sha256"],
            "latency_median_ms": 120.0,
        }
    ]
    (entry,) = rp.rank_entries(rows, ctx, offline)
    assert entry.label == "p @70ms"
    assert entry.violations == ["latency 120 ms > 50 ms"]
    (entry,) = rp.rank_entries(rows, ctx)
    assert entry.violations == ["latency not measured"]


def test_sweep_summary(report: rp.Report) -> None:
    (s,) = report.sweeps
    assert s["pilot"] == "compact"
    assert s["max_ok_ms"] == 100.0 and s["first_fail_ms"] == 200.0
    assert [p["completed_fraction"] for p in s["points"]] == [1.0, 1.0, 0.0, 0.0]


def test_terminal_markdown_and_csv(report: rp.Report, tmp_path: Path) -> None:
    text = rp.render_terminal(report)
    assert "Closed-loop leaderboard" in text and "✗ latency 180 ms > 50 ms" in text
    assert "stale: dataset" in text and "✓ a story line" in text
    md = rp.render_markdown(report)
    assert "| this machine | 1 | expert |" in md and "Per-class precision / recall / F1" in md
    assert "0.900/0.800/0.850" in md  # precision/recall/F1 of a class
    # A bin under the macro average's minimum share of frames is marked, in text and HTML.
    assert md.count("0.900/0.800/0.850*") == 2 and "marked '*'" in md
    cells = report.class_table(html_cells=True).rows
    assert ["(not in average)" in c for c in cells[0][1:4]] == [False, False, True]
    paths = rp.write_csv(report, tmp_path / "csv")
    assert {p.name for p in paths} == {
        "leaderboard.csv", "runs.csv", "offline.csv", "recipe.csv", "sweep.csv", "seeds.csv",
    }  # fmt: skip
    with open(tmp_path / "csv" / "leaderboard.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["pilot"] for r in rows][0] == "expert"
    here = [r for r in rows if r["target"] == "this machine"]
    assert here[-1]["violations"] == "latency 180 ms > 50 ms" and here[-1]["feasible"] == "0"
    with open(tmp_path / "csv" / "runs.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 48  # 36 + flipper's second seed + 8 randomised


def test_html_is_self_contained(rendered: tuple) -> None:
    page = rendered[3]
    imgs = re.findall(r"<img [^>]*>", page)
    # 2 tracks x 2 directions of trajectories, F1 vs latency, learning curves, latency sweep.
    assert len(imgs) == 7
    assert all('src="data:image/png;base64,' in i for i in imgs)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert page.count("<table") == 7  # board, seeds, recipe, offline, per class, sweep, runs
    assert 'class="infeasible"' in page and "stale: code, hardware" in page
    # Only the run videos are files: linked MP4s (beside the page once written).
    sources = re.findall(r'<(\w+) [^>]*src="([^"]+)"', page)
    assert {tag for tag, src in sources if not src.startswith("data:")} == {"video"}


def test_cli(tmp_path: Path, ctx: rp.Context, capsys: pytest.CaptureFixture[str]) -> None:
    db = synthetic_store(tmp_path)
    out = tmp_path / "rep"
    assert rp.main(["--db", str(db), "--out", str(out), "--format", "terminal,md,csv"]) == 0
    printed = capsys.readouterr().out
    assert "Closed-loop leaderboard" in printed and f"wrote {out / 'leaderboard.md'}" in printed
    assert (out / "leaderboard.txt").is_file() and not (out / "leaderboard.html").exists()
    assert rp.main(["--db", str(db), "--out", str(out), "--format", "pdf"]) == 2
    assert "unknown report format" in capsys.readouterr().err
    assert rp.main(["--db", str(tmp_path / "none.sqlite"), "--out", str(out)]) == 2
    assert "no leaderboard database" in capsys.readouterr().err


# --------------------------------------------------------------------------- targets
def test_entries_per_pilot_and_target(report: rp.Report) -> None:
    by = {(e.pilot, e.target): e for e in report.entries}
    # The same pilot here, replayed from a Pi 4 profile and estimated for CAR: three entries.
    assert {t for p, t in by if p == "compact"} == {"this machine", PI4, CAR}
    est = by[("slow_cls", CAR)]
    assert est.car == CAR and est.latency_label == "estimated"
    assert est.target_label == f"estimated for {CAR}"
    assert by[("compact", PI4)].target_label == f"profile: {PI4}"
    # Feasibility on the entry's own latency: the estimate's median, not this machine's.
    assert est.latency_ms == 400.0 and est.latency_p99_ms == 600.0
    assert est.violations == ["latency 400 ms > 50 ms"]
    assert by[("compact", CAR)].feasible and by[("compact", CAR)].latency_ms == 17.7
    assert by[("compact", PI4)].latency_ms == 12.0 and by[("compact", PI4)].feasible
    # Sorted by target (this machine first, then by name) and ranked within each target.
    assert [(e.target, e.rank) for e in report.entries][6:] == [
        (PI4, 1), (CAR, 1), (CAR, 2),
    ]  # fmt: skip
    assert [e.pilot for e in report.entries if e.car == CAR] == ["compact", "slow_cls"]
    assert by[("compact", CAR)].label == f"compact @{CAR}"
    assert by[("compact", CAR)].stale == []  # its hardware is not this machine's: not compared


def test_old_rows_are_this_machine_measured(ctx: rp.Context) -> None:
    row = _run("p", "triangle", "ccw")
    for key in ("latency_mode", "latency_p95_ms"):
        row.pop(key)
    (e,) = rp.rank_entries([row], ctx)
    assert e.car is None and e.target == "this machine" and e.latency_label == "measured"
    assert e.latency_ms == 2.0 and e.latency_p99_ms is None
    assert rp.stale_reasons({**row, "hardware": "elsewhere"}, ctx) == ["hardware"]


def test_target_labels_in_every_rendering(
    report: rp.Report, tmp_path: Path, rendered: tuple
) -> None:
    label = f"estimated for {CAR}"
    text = rp.render_terminal(report)
    assert label in text and f"profile: {PI4}" in text and "this machine" in text
    md = rp.render_markdown(report)
    assert f"| {CAR} | 2 | slow_cls |" in md
    assert f"400.0 (p99 600.0) {label}" in md and f"12.0 (p99 15.0) profile: {PI4}" in md
    rp.write_csv(report, tmp_path / "csv")
    with open(tmp_path / "csv" / "leaderboard.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    est = [r for r in rows if r["car"] == CAR]
    assert [r["target_label"] for r in est] == [label, label]
    assert est[0]["latency_source"].startswith(label)
    with open(tmp_path / "csv" / "runs.csv", newline="") as f:
        runs = list(csv.DictReader(f))
    assert sum(r["car"] == CAR for r in runs) == 8
    page = rendered[3]
    assert label in page and f'<tr class="group"><th colspan="15">{CAR}</th></tr>' in page
    assert '"target": "rpi4-tflite"' in rp.report_json(report)


# --------------------------------------------------------------------------- stale rules
def test_stale_hardware_only_for_measured_rows(ctx: rp.Context) -> None:
    row = _run("p", "triangle", "ccw", hardware="elsewhere")
    assert rp.stale_reasons(row, ctx) == ["hardware"]
    assert rp.stale_reasons({**row, "hardware": HERE_HW}, ctx) == []
    for mode in ("fixed", "zero"):
        assert rp.stale_reasons({**row, "latency_mode": mode}, ctx) == []
    assert rp.stale_reasons(_estimated("p", "triangle", "ccw", 20.0), ctx) == []
    assert rp.stale_reasons(_profiled("p", "triangle", "ccw", 20.0), ctx) == []


def test_stale_car_model(ctx: rp.Context) -> None:
    row = _estimated("p", "triangle", "ccw", 20.0)
    assert rp.stale_reasons(row, ctx) == []
    assert rp.stale_reasons({**row, "car_model": "0123456789ab"}, ctx) == ["car model"]
    assert rp.stale_reasons({**row, "car": "retired-car"}, ctx) == ["car model"]
    assert rp.stale_reasons({**row, "car_model": None}, ctx) == []  # nothing to compare
    car = CARS[CAR]
    text = json.dumps(
        {
            "name": car.name,
            "overhead_ms": car.overhead_ms,
            "ms_per_mflop": car.ms_per_mflop,
            "tail": [car.p95_ratio, car.p99_ratio, car.max_ratio],
        },
        sort_keys=True,
        default=str,
    )
    assert rp.car_model_hash(car) == hashlib.sha256(text.encode()).hexdigest()[:12]


def test_stale_profile_hardware(ctx: rp.Context) -> None:
    old = {**_profiled("p", "triangle", "ccw", 20.0, profile_hardware="pi4-a"), "id": 1}
    new = {**_profiled("p", "triangle", "cw", 20.0, profile_hardware="pi4-b"), "id": 2}
    other = {**_profiled("q", "triangle", "ccw", 20.0, car="pi5", profile_hardware="pi4-a")}
    other["id"] = 3
    rows = [new, old, other]  # the most recent is the highest id, not the last given
    assert rp.latest_profile_hardware(rows) == {PI4: "pi4-b", "pi5": "pi4-a"}
    ctx = ctx.for_rows(rows)
    assert rp.stale_reasons(old, ctx) == ["profile hardware"]
    assert rp.stale_reasons(new, ctx) == [] and rp.stale_reasons(other, ctx) == []
    entries = rp.rank_entries(rows, rp.Context(code_version="v1", dataset_fingerprint=FP))
    assert [e.stale for e in entries if e.pilot == "p"] == [["profile hardware"]]


def test_stale_profile_model(ctx: rp.Context) -> None:
    row = _profiled("p", "triangle", "ccw", 20.0)
    assert rp.stale_reasons(row, ctx) == []  # the profile timed this checkpoint
    other = {**row, "profile_model_sha256": "e" * 64}
    assert rp.stale_reasons(other, ctx) == ["profile model"]
    assert rp.stale_reasons({**other, "source_sha256": "e" * 64}, ctx) == []  # exported model
    assert rp.stale_reasons({**other, "extra": {"source_sha256": "e" * 64}}, ctx) == []
    assert rp.stale_reasons({**row, "profile_model_sha256": None}, ctx) == []


def test_stale_reasons_together(ctx: rp.Context) -> None:
    row = _profiled(
        "p", "triangle", "ccw", 20.0, profile_model_sha256="e" * 64, dataset_fingerprint="0" * 64,
        code_version="v0",
    )  # fmt: skip
    assert rp.stale_reasons(row, ctx) == ["profile model", "dataset", "code"]


# --------------------------------------------------------------------------- the recipe
def test_recipe_table(report: rp.Report) -> None:
    assert [c.label for c in report.targets] == [
        "this machine", f"profile: {PI4}", f"estimated for {CAR}",
    ]  # fmt: skip
    table = report.recipe_table()
    assert table is not None and table.title == "The recipe's table"
    assert table.headers[:7] == [
        "pilot", "output", "macro F1", "MAE", "test frames", "MFLOP", "params / size",
    ]  # fmt: skip
    assert table.headers[11:] == [
        f"estimated for {CAR}: runtime ms", f"estimated for {CAR}: closed loop",
    ]  # fmt: skip
    rows = {r[0]: r for r in table.rows}
    assert rows["slow_cls"] == [
        "slow_cls", "classes", "0.900", "0.0400", "80", "50.0", "11.2M / 44.8 MB",
        "180.0 (p95 3.0)", "✗ 20.0, 4/8 laps, 12 interv.",
        "–", "–",
        "400.0 (p99 600.0)", "✗ 20.0, 4/8 laps, 12 interv.",
    ]  # fmt: skip
    assert rows["compact"][2] == "-"  # a regressor has no macro F1
    assert rows["compact"][9:11] == ["12.0 (p99 15.0)", "✓ 100.0, 8/8 laps, 0 interv."]
    assert rows["compact_cls"][7:9] == ["2.5 offline", "–"]  # never driven: offline runtime
    assert f"Estimated, not measured: {CAR}" in table.note
    md = rp.render_markdown(report)
    assert "## The recipe's table" in md and "| slow_cls | classes | 0.900 |" in md
    assert "## The recipe's table" not in rp.render_terminal(report)  # kept compact


def test_f1_latency_points(report: rp.Report) -> None:
    pts = {
        (p.pilot, p.target.label): (p.latency_ms, p.macro_f1, p.crashed) for p in report.f1_points()
    }
    assert pts == {
        ("compact_cls", "this machine"): (2.5, 0.85, None),
        ("slow_cls", "this machine"): (180.0, 0.9, True),
        ("slow_cls", f"estimated for {CAR}"): (400.0, 0.9, True),
    }
    cap, b64 = rp.f1_latency_figure(report)
    assert CAR in cap and "estimates" in cap and len(b64) > 1000


def test_pareto_front() -> None:
    assert rp.pareto_front([]) == []
    pts = [(10.0, 0.7), (2.0, 0.5), (5.0, 0.4), (20.0, 0.9), (30.0, 0.8), (10.0, 0.6), (1.0, 0.5)]
    # (5, 0.4) and (30, 0.8) are beaten by faster points; (2, 0.5) ties the faster (1, 0.5).
    assert rp.pareto_front(pts) == [(1.0, 0.5), (10.0, 0.7), (20.0, 0.9)]
    assert rp.pareto_front([(3.0, 0.5), (3.0, 0.5)]) == [(3.0, 0.5)]
    assert rp.pareto_front([(3.0, 0.2), (3.0, 0.6)]) == [(3.0, 0.6)]


# --------------------------------------------------------------------------- the chooser
def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[rp.Report, str, str, str, Path]:
    """The synthetic store's report and its four renderings (made once: the HTML page's
    figures take a few seconds): terminal text, Markdown, HTML, the CSV directory."""
    tmp = tmp_path_factory.mktemp("chooser")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rp_context, "_hardware", lambda device: HERE_HW)
        ctx = rp.Context(code_version="v1", dataset_fingerprint=FP)
        with Store(synthetic_store(tmp)) as store:
            report = rp.build_report(store, ctx, notes=["✓ a story line"])
        rp.write_csv(report, tmp / "csv")
        text, md, page = (
            rp.render_terminal(report), rp.render_markdown(report), rp.render_html(report),
        )  # fmt: skip
    return report, text, md, page, tmp / "csv"


def _board_line(text: str, target: str, pilot: str) -> str:
    """The terminal board's line of ``pilot`` on ``target``."""
    return next(ln for ln in text.splitlines() if ln.startswith(target) and f"  {pilot}  " in ln)


def test_model_size_in_every_rendering(rendered: tuple) -> None:
    report, text, md, page, out = rendered
    assert rp.model_cell(45218, 181234) == "45.2k / 181 kB"
    assert rp.model_cell(None, None) == "–" and rp.format_bytes(812) == "812 B"
    assert "45.2k / 181 kB" in _board_line(text, "this machine", "compact")
    assert "11.2M / 44.8 MB" in _board_line(text, "this machine", "slow_cls")
    assert "params / size" in text and "| compact | cnn | regression |" in md
    assert "45.2k / 181 kB" in md and "11.2M / 44.8 MB" in page
    by = {(r["pilot"], r["target"]): r for r in _csv(out / "leaderboard.csv")}
    assert by[("compact", "this machine")]["num_parameters"] == "45218"
    assert by[("compact", "this machine")]["model_bytes"] == "181234"
    assert by[("expert", "this machine")]["num_parameters"] == ""  # no learned weights
    off = {r["pilot"]: r for r in _csv(out / "offline.csv")}
    assert off["slow_cls"]["model_bytes"] == "44800000"
    recipe = {(r["pilot"], r["target"]): r for r in _csv(out / "recipe.csv")}
    assert recipe[("compact", "this machine")]["num_parameters"] == "45218"


def test_offline_frame_counts_are_stated_when_they_differ(rendered: tuple, ctx: rp.Context) -> None:
    report, text, md, page, out = rendered
    note = "Test frame counts differ between pilots (compact 100, compact_cls 100, slow_cls 80)"
    assert note in text and note in md and note in page
    assert "| slow_cls | classes | 0.900 | 0.0400 | 80 |" in md  # the recipe's test frames
    assert "<th>test frames</th>" in page
    assert {r["pilot"]: r["n"] for r in _csv(out / "recipe.csv")}["slow_cls"] == "80"
    # The same counts: no note, no extra column.
    same = [{**o, "n": 100} for o in report.offline]
    equal = rp.Report(report.entries, same, [], [], ctx, "db")
    assert equal.frames_note() is None
    assert "test frames" not in equal.recipe_table().headers
    assert "differ" not in rp.render_terminal(equal)


def test_laps_are_never_shown_beside_crashes_without_the_interventions(rendered: tuple) -> None:
    report, text, md, page, out = rendered
    assert rp.laps_cell(4, 4, 0) == "4/4" and rp.laps_cell(4, 4, 14) == "4/4 (14 interv.)"
    slow = _board_line(text, "this machine", "slow_cls")
    assert re.search(r"  4/8 \(12 interv\.\) +12  ", slow)  # laps with rescues, then crashes
    assert "16/16 (16 interv.)" in _board_line(text, "this machine", "flipper")
    assert "| 4/8 (12 interv.) | 12 |" in md and "4/8 (12 interv.)" in page
    assert "laps that needed rescues read '4/4 (14 interv.)'" in text
    # Every laps cell of the board and of the runs says its interventions when there were.
    board, runs_table = report.leaderboard_table(), report.runs_table()
    for table in (board, runs_table):
        laps = table.headers.index("laps")
        for row in table.rows:
            assert re.fullmatch(r"\d+/\d+( \(\d+ interv\.\))?|–", row[laps])
    laps = board.headers.index("laps")
    for e, row in zip(report.entries, board.rows, strict=True):
        assert row[laps].endswith(f"({e.interventions} interv.)") == bool(e.interventions)
    runs = _csv(out / "runs.csv")
    assert {"laps_completed", "laps_target", "off_track", "interventions"} <= set(runs[0])


def test_f1_has_one_format_everywhere(rendered: tuple) -> None:
    report, text, md, page, out = rendered
    assert rp.format_f1(0.85) == "0.850" and rp.format_f1(None) == "–"
    for rendering in (text, md, page):
        assert "0.900" in rendering and "0.850" in rendering
        assert not re.search(r"\b(85|90)(\.0)?%", rendering)  # no percent F1 anywhere
    assert "0.900/0.800/0.850" in md and "<b>F1 0.850</b>" in page
    assert {r["pilot"]: r["macro_f1"] for r in _csv(out / "offline.csv")} == {
        "compact": "", "compact_cls": "0.850", "slow_cls": "0.900",
    }  # fmt: skip
    assert {r["macro_f1"] for r in _csv(out / "recipe.csv") if r["pilot"] == "slow_cls"} == {
        "0.900"
    }


def test_mean_and_spread_over_seeds_in_every_rendering(rendered: tuple) -> None:
    report, text, md, page, out = rendered
    (flipper,) = [e for e in report.entries if e.pilot == "flipper"]
    assert flipper.seed_scores() == pytest.approx({0: 75.0, 1: 55.0})
    assert flipper.score == pytest.approx(65.0) and flipper.score_sd == pytest.approx(14.142, 1e-3)
    assert rp.score_cell(flipper) == "65.0 ± 14.1"
    assert "65.0 ± 14.1" in _board_line(text, "this machine", "flipper")
    assert "Spread over seeds" in text and "## Spread over seeds" in md
    assert "| flipper | this machine | chicane | ccw | clean | 2 | 65.0 ± 14.1 | 2.0 ± 1.4 |" in md
    assert "<h2>Spread over seeds</h2>" in page and "65.0 ± 14.1" in page
    seeds = _csv(out / "seeds.csv")
    assert len(seeds) == 4 and {r["pilot"] for r in seeds} == {"flipper"}
    assert float(seeds[0]["score_mean"]) == pytest.approx(65.0)
    assert float(seeds[0]["score_sd"]) == pytest.approx(14.142, 1e-3)
    board = {(r["pilot"], r["target"]): r for r in _csv(out / "leaderboard.csv")}
    assert board[("flipper", "this machine")]["seeds"] == "2"
    assert float(board[("flipper", "this machine")]["score_sd"]) == pytest.approx(14.142, 1e-3)
    assert board[("compact", "this machine")]["score_sd"] == ""  # one seed: no spread
    assert rp.mean_sd_cell([1.0]) == "1.0" and rp.mean_sd_cell([]) == "–"


def test_robustness_column_in_every_rendering(rendered: tuple) -> None:
    report, text, md, page, out = rendered
    by = {(e.pilot, e.target): e for e in report.entries}
    compact, expert = by[("compact", "this machine")], by[("expert", "this machine")]
    # Randomised runs are not part of the score: compact keeps 100 and shows its drop.
    assert compact.score == 100.0 and compact.robust_score == pytest.approx(10.0)
    assert len(compact.runs) == 4 and len(compact.robust_runs) == 4
    assert rp.robustness_cell(compact) == "10.0 (-90.0)"
    assert rp.robustness_cell(expert) == "100.0 (+0.0)"
    assert rp.robustness_cell(by[("slow_cls", "this machine")]) == "–"
    assert "10.0 (-90.0)" in _board_line(text, "this machine", "compact")
    assert "100.0 (+0.0)" in _board_line(text, "this machine", "expert")
    assert "| this machine | 3 | compact | cnn | 100.0 | 10.0 (-90.0) |" in md
    assert "10.0 (-90.0)" in page and "<th>robustness</th>" in page
    board = {(r["pilot"], r["target"]): r for r in _csv(out / "leaderboard.csv")}
    assert float(board[("compact", "this machine")]["robust_score"]) == pytest.approx(10.0)
    assert board[("compact", "this machine")]["robust_runs"] == "4"
    assert board[("slow_cls", "this machine")]["robust_score"] == ""
    runs = _csv(out / "runs.csv")
    assert sum(r["domain_randomization"] == "1" for r in runs) == 8
    assert "| compact | this machine | chicane | ccw | 0 | randomized |" in md


def test_randomized_only_pilot_is_an_entry_without_a_score(ctx: rp.Context) -> None:
    rows = [
        {**_run("a", "triangle", "ccw"), "id": 1},
        {**_run("b", "triangle", "ccw", domain_randomization=True, autonomy=50.0), "id": 2},
    ]
    a, b = rp.rank_entries(rows, ctx)
    assert (a.pilot, b.pilot) == ("a", "b")  # without clean runs: last
    assert b.runs == [] and b.robust_score == pytest.approx(50.0) and b.latency_ms == 2.0
    assert rp.score_cell(b) == "–" and rp.robustness_cell(b) == "50.0"
    assert b.partial == "0/1 track-directions" and a.partial is None


def test_trajectories_are_small_multiples(rendered: tuple) -> None:
    import base64
    import io

    from PIL import Image

    report, _, _, page, _ = rendered
    figs = re.findall(r'<figure><img alt="([^"]*)" src="data:image/png;base64,([^"]+)">', page)
    figs = [(cap, b64) for cap, b64 in figs if "one map each" in cap]
    assert [cap for cap, _ in figs] == [
        "chicane, ccw: 9 pilots, one map each", "chicane, cw: 9 pilots, one map each",
        "triangle, ccw: 9 pilots, one map each", "triangle, cw: 9 pilots, one map each",
    ]  # fmt: skip
    sizes = []
    for _, b64 in figs:
        with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
            sizes.append(im.size)
    (cw, ch), (tw, th) = sizes[0], sizes[2]
    assert tw > 700 and th > 600  # triangle: 4 columns x 3 rows of small maps
    assert cw == tw and ch < 0.8 * th  # the flat chicane's maps are as tall as it is


def test_run_videos_are_copied_beside_the_page_and_linked(rendered: tuple, tmp_path: Path) -> None:
    report, _, _, page, csv_dir = rendered
    out = tmp_path / "rep"
    rp.write_reports(report, out, ["html"])
    copies = sorted((out / rp.VIDEO_DIRNAME).iterdir())
    assert len(copies) == 1 and copies[0].name.endswith("-compact_triangle_ccw_s0.mp4")
    (original,) = {v for *_, v in report.run_videos() if v.endswith("_s0.mp4")}
    assert copies[0].read_bytes() == Path(original).read_bytes()
    written = (out / "leaderboard.html").read_text()
    assert f'src="videos/{copies[0].name}"' in written and written.count("<video ") == 1
    assert "video missing" in written and "gone.mp4" in written  # named, not hidden
    # Copied again: nothing twice; a copy no run refers to any more is removed, nothing else.
    stale = out / rp.VIDEO_DIRNAME / ("0" * 12 + "-old.mp4")
    stale.write_bytes(b"x")
    (out / rp.VIDEO_DIRNAME / "mine.txt").write_text("not ours")
    assert rp.copy_videos(report, out) == {original: f"videos/{copies[0].name}"}
    assert sorted(p.name for p in (out / rp.VIDEO_DIRNAME).iterdir()) == sorted(
        [copies[0].name, "mine.txt"]
    )
    # Rendered without writing: the files where they are.
    assert f'src="{Path(original).resolve().as_uri()}"' in page
    assert sum(bool(r["video"]) for r in _csv(csv_dir / "runs.csv")) == 2
