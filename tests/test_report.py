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


def synthetic_store(tmp_path: Path) -> Path:
    """A leaderboard with every kind of row: good, slow, flipped and stale pilots on this
    machine, two pilots estimated for the car computer ``CAR`` and one replayed from a Pi 4
    profile, classifier and regressor offline rows with a run directory, and a sweep."""
    runs = []
    for track in ("triangle", "chicane"):
        for d in ("ccw", "cw"):
            runs.append(_run("compact", track, d))
            runs.append(_run("expert", track, d, pilot_kind="expert", checkpoint_sha256=None, dataset_fingerprint=None, mean_abs_cte=0.02))  # fmt: skip
            runs.append(_run("slow_cls", track, d, latency_ms=180.0, laps_completed=1, off_track=3, interventions=3, autonomy=40.0))  # fmt: skip
            runs.append(_run("flipper", track, d, flips=1, interventions=1, autonomy=75.0))
            runs.append(_run("old_data", track, d, dataset_fingerprint="0" * 64, mean_abs_cte=0.03))
            runs.append(_run("other_hw", track, d, hardware="elsewhere", code_version="v0"))
            runs.append(_estimated("compact", track, d, 17.7))
            runs.append(_estimated("slow_cls", track, d, 400.0, laps_completed=1, off_track=3, interventions=3, autonomy=40.0))  # fmt: skip
            runs.append(_profiled("compact", track, d, 12.0))
    run_dir = tmp_path / "runs" / "compact_cls"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.csv").write_text(
        "epoch,train_loss,train_mae,dev_loss,dev_mae,dev_macro_f1\n"
        "1,0.5,0.20,0.6,0.22,0.40\n2,0.3,0.10,0.4,0.12,0.60\n3,0.2,0.05,0.35,0.09,0.70\n"
    )
    per_class = [
        {"class": k, "value": v, "precision": 0.9, "recall": 0.8, "f1": 0.85, "support": 10, "predicted": 9}
        for k, v in enumerate((-0.5, 0.0, 0.5))
    ]  # fmt: skip
    offline = [
        {"pilot": "compact", "pilot_kind": "cnn", "split": "test", "output_kind": "regression", "n": 100, "mae": 0.05, "mse": 0.004, "latency_median_ms": 2.0, "latency_p95_ms": 3.0, "device": "cpu", "hardware": HERE_HW, "code_version": "v1", "mflop": 10.2},
        {"pilot": "compact_cls", "pilot_kind": "cnn", "split": "test", "output_kind": "classes", "n": 100, "mae": 0.07, "mse": 0.01, "macro_f1": 0.85, "accuracy": 0.8, "per_class": per_class, "latency_median_ms": 2.5, "run_dir": str(run_dir), "device": "cpu", "hardware": HERE_HW, "code_version": "v1", "mflop": 12.0},
        {"pilot": "slow_cls", "pilot_kind": "cnn", "split": "test", "output_kind": "classes", "n": 100, "mae": 0.04, "macro_f1": 0.9, "per_class": per_class, "latency_median_ms": 180.0, "device": "cpu", "hardware": HERE_HW, "code_version": "v1", "mflop": 50.0},
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
    assert by["flipper"].violations == ["flipped 4×"]
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
    assert all(len(e.runs) == 4 for e in report.entries)


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
    assert "90/80/85" in md  # precision/recall/F1 of a class, in %
    paths = rp.write_csv(report, tmp_path / "csv")
    assert {p.name for p in paths} == {
        "leaderboard.csv", "runs.csv", "offline.csv", "recipe.csv", "sweep.csv",
    }  # fmt: skip
    with open(tmp_path / "csv" / "leaderboard.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["pilot"] for r in rows][0] == "expert"
    here = [r for r in rows if r["target"] == "this machine"]
    assert here[-1]["violations"] == "latency 180 ms > 50 ms" and here[-1]["feasible"] == "0"
    with open(tmp_path / "csv" / "runs.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 36


def test_html_is_self_contained(report: rp.Report) -> None:
    page = rp.render_html(report)
    imgs = re.findall(r"<img [^>]*>", page)
    # 2 tracks x 2 directions of trajectories, F1 vs latency, learning curves, latency sweep.
    assert len(imgs) == 7
    assert all('src="data:image/png;base64,' in i for i in imgs)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert page.count("<table") == 6  # board, recipe, offline, per class, sweep, runs
    assert 'class="infeasible"' in page and "stale: code, hardware" in page


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


def test_target_labels_in_every_rendering(report: rp.Report, tmp_path: Path) -> None:
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
    page = rp.render_html(report)
    assert label in page and f'<tr class="group"><th colspan="14">{CAR}</th></tr>' in page
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
    assert table.headers[:5] == ["pilot", "output", "macro F1", "MAE", "MFLOP"]
    assert table.headers[9:] == [
        f"estimated for {CAR}: runtime ms", f"estimated for {CAR}: closed loop",
    ]  # fmt: skip
    rows = {r[0]: r for r in table.rows}
    assert rows["slow_cls"] == [
        "slow_cls", "classes", "0.900", "0.0400", "50.0",
        "180.0 (p95 3.0)", "✗ 20.0, 4/8 laps, 12 interv.",
        "–", "–",
        "400.0 (p99 600.0)", "✗ 20.0, 4/8 laps, 12 interv.",
    ]  # fmt: skip
    assert rows["compact"][2] == "-"  # a regressor has no macro F1
    assert rows["compact"][7:9] == ["12.0 (p99 15.0)", "✓ 100.0, 8/8 laps, 0 interv."]
    assert rows["compact_cls"][5:7] == ["2.5 offline", "–"]  # never driven: offline runtime
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
