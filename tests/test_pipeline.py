"""The whole story on tiny settings: record -> train -> evaluate -> report.

``python -m evaluation.leaderboard --preset tiny`` in-process: one short training track,
one lap per direction at 32x40, one epoch per model, one closed-loop lap on a held-out
track; then the caches are checked to be reused. Nothing is concluded from the numbers.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from evaluation import leaderboard as lb
from evaluation.store import Store


@pytest.fixture
def one_thread():
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)  # main() sets 1 thread for the latency measurement


def test_tiny_pipeline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], one_thread: None
) -> None:
    out = tmp_path / "out"
    argv = ["--preset", "tiny", "--out", str(out), "--workers", "1", "--seed", "0", "--video"]
    rc = lb.main(argv)
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "[4/4] reports" in printed and "Closed-loop leaderboard" in printed
    assert "Story (expected outcome, checked):" in printed
    assert re.search(r"[✓✗] compact completes its laps", printed)

    tiny = lb.PRESETS["tiny"]
    pilots = {"expert", "classical", *(m.name for m in tiny.zoo)}
    with Store(out / "leaderboard.sqlite") as store:
        every = store.closed_loop_rows(with_trajectories=True)
        here = [r for r in every if r["car"] is None]  # this machine
        rows = [r for r in here if not r["domain_randomization"]]
        robust = [r for r in here if r["domain_randomization"]]
        car = [r for r in every if r["car"] is not None]
        assert {r["pilot"] for r in rows} == pilots
        assert len(rows) == len(pilots) * len(tiny.eval_tracks) * 2  # both directions
        # Every pilot again with domain randomisation: the board's robustness column.
        assert sorted((r["pilot"], r["track"], r["direction"]) for r in robust) == sorted(
            (r["pilot"], r["track"], r["direction"]) for r in rows
        )
        assert not any(r["domain_randomization"] for r in car)
        cnn_rows = [r for r in rows if r["pilot_kind"] == "cnn"]
        assert all(r["num_parameters"] > 0 and r["model_bytes"] > 0 for r in cnn_rows)
        assert {r["track"] for r in rows} == set(tiny.eval_tracks)
        assert all(r["latency_mode"] == "measured" and r["latency_ms"] > 0 for r in rows)
        # The zoo again on the reference car, at the latency estimated for each model.
        assert {r["pilot"] for r in car} == {m.name for m in tiny.zoo}
        assert len(car) == len(tiny.zoo) * len(tiny.eval_tracks) * 2
        assert all(r["car"] == tiny.reference_car and r["latency_mode"] == "estimated" for r in car)
        assert all(
            r["latency_source"].startswith(f"estimated for {tiny.reference_car}") for r in car
        )
        assert all(len(r["trajectory"]) > 10 for r in rows)
        cnn = [r for r in rows if r["pilot_kind"] == "cnn"]
        assert all(r["checkpoint_sha256"] and r["dataset_fingerprint"] for r in cnn)
        offline = {r["pilot"]: r for r in store.offline_rows()}
        assert set(offline) == pilots
        assert offline["compact"]["mae"] is not None and offline["compact"]["run_dir"]
        sweep = store.sweep_rows()
        assert sorted(r["latency_ms"] for r in sweep) == sorted(tiny.sweep_latencies_ms)
        fingerprint = store.latest_context("dataset_fingerprint")
    report = out / "report"
    for name in ("leaderboard.txt", "leaderboard.md", "leaderboard.csv", "runs.csv", "offline.csv"):
        assert (report / name).stat().st_size > 0, name
    page = (report / "leaderboard.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") >= 3  # 2 trajectory maps, learning curves
    # --video: an MP4 of every run on this machine, clean and randomised, beside the page.
    copies = sorted((report / "videos").glob("*.mp4"))
    assert len(copies) == len(rows) + len(robust) == page.count("<video ")
    assert sum(c.name.endswith("_dr.mp4") for c in copies) == len(robust)

    # A second run finds the dataset and the trained zoo and reuses them.
    data = lb.record_dataset(tiny, out, seed=0)
    assert data.recorded == 0 and data.fingerprint == fingerprint
    zoo = lb.train_zoo(tiny, data, out, seed=0, say=lambda s: None)
    assert all(m.reused for m in zoo.values())
    best = json.loads((zoo["compact"].run_dir / "best.json").read_text())
    assert best["dataset"]["fingerprint"] == fingerprint


def _row(pilot: str, direction: str, **kw: object):
    from evaluation.results import ResultRow

    d = dict(
        pilot=pilot, pilot_kind="cnn", pilot_spec=pilot, checkpoint_sha256="ab" * 32,
        dataset_fingerprint="cd" * 32, track="triangle", track_hash="x", direction=direction,
        speed=2.0, laps_target=1, seed=0, latency_mode="measured", latency_ms=1.0,
        latency_p95_ms=1.2, control_period_ms=50.0, effective_control_hz=20.0, device="cpu",
        hardware="hw", code_version="v", date="2024-01-01T00:00:00+00:00", laps_completed=1,
        off_track=0, flips=0, interventions=0, autonomy=100.0, mean_abs_cte=0.05,
        max_abs_cte=0.2, lap_times=[20.0], mean_lap_time=20.0, mean_speed=2.0,
        mean_steering=0.12 if direction == "ccw" else -0.12, elapsed_s=20.0, completed=True,
    )  # fmt: skip
    d.update(kw)
    return ResultRow(**d)


def test_story_checks_are_honest() -> None:
    q = lb.QUICK
    slow = q.role("slow_classifier").name
    ccw_only = q.role("ccw_only").name
    names = [m.name for m in q.zoo]
    comp = q.role("compensated").name
    rows = [_row(n, d) for n in names for d in ("ccw", "cw") if n not in (slow, ccw_only, comp)]
    rows += [
        _row(slow, d, latency_ms=180.0, interventions=4, off_track=4, autonomy=0.0)
        for d in ("ccw", "cw")
    ]
    rows += [
        _row(ccw_only, "ccw"),
        _row(ccw_only, "cw", interventions=3, autonomy=10.0, mean_steering=0.0),
    ]
    offline = [
        {"pilot": slow, "macro_f1": 0.90},
        {"pilot": q.role("classifier").name, "macro_f1": 0.92},
    ]
    ev = lb.Evaluation(rows, [], offline, 1, {})
    checks = lb.story_checks(q, ev)
    assert [c.held for c in checks] == [True, True, True, False], [c.line() for c in checks]
    assert "no runs at 150ms" in checks[3].detail  # the compensation check had no runs
    assert "180 ms (> 50 ms control period) 2/2 runs crash" in checks[1].detail
    assert "interventions 0 / 3" in checks[2].detail and "steering +0.060" in checks[2].detail

    # A slow classifier within the control period needs the sweep to show a failure.
    rows = [r for r in rows if r.pilot != slow] + [
        _row(slow, d, latency_ms=4.0) for d in ("ccw", "cw")
    ]
    sweep = [
        _row(
            slow,
            "ccw",
            latency_mode="fixed",
            latency_ms=ms,
            sweep=True,
            completed=ok,
            laps_completed=int(ok),
            interventions=0 if ok else 2,
        )
        for ms, ok in ((50.0, True), (150.0, False))
    ]
    assert lb.story_checks(q, lb.Evaluation(rows, sweep, offline, 1, {}))[1].held
    assert (
        "laps cleanly up to 50 ms and fails from 150 ms"
        in lb.story_checks(q, lb.Evaluation(rows, sweep, offline, 1, {}))[1].detail
    )
    assert not lb.story_checks(q, lb.Evaluation(rows, [], offline, 1, {}))[1].held
    # Far from the best F1: not held, whatever the latency does.
    offline[0]["macro_f1"] = 0.5
    assert not lb.story_checks(q, lb.Evaluation(rows, sweep, offline, 1, {}))[1].held
    # Compact with an intervention clockwise: not held.
    rows = [
        r
        if not (r.pilot == "compact" and r.direction == "cw")
        else _row("compact", "cw", interventions=1)
        for r in rows
    ]
    assert not lb.story_checks(q, lb.Evaluation(rows, sweep, offline, 1, {}))[0].held


def test_compensation_check_holds_only_when_the_plain_one_crashes_and_the_other_laps() -> None:
    from evaluation.story import compensation_check

    q = lb.QUICK
    slow, comp = q.role("slow_classifier"), q.role("compensated")
    fixed = {"latency_mode": "fixed", "latency_ms": 150.0}

    def rows(plain_interventions: tuple[int, int], comp_interventions: tuple[int, int]):
        out = []
        for name, counts in ((slow.name, plain_interventions), (comp.name, comp_interventions)):
            for d, n in zip(("ccw", "cw"), counts, strict=True):
                out.append(_row(name, d, interventions=n, off_track=n, **fixed))
        return out

    def check(r):
        ev = lb.Evaluation([], [], [], 1, {}, compensation_rows=r, compensation_latency="150ms")
        return compensation_check(slow, comp, None, ev)

    held = check(rows((1, 0), (0, 0)))
    assert held.held, held.line()
    assert f"{slow.name} at 150 ms: 1/2 runs clean (ccw/cw), 1 interventions" in held.detail
    assert f"{comp.name}: 2/2 runs clean (ccw/cw), 0 interventions" in held.detail
    assert not check(rows((0, 0), (0, 0))).held  # the plain one did not crash
    assert not check(rows((2, 3), (0, 1))).held  # the compensated one did too
    one_way = [
        r for r in rows((1, 1), (0, 0)) if not (r.pilot == comp.name and r.direction == "cw")
    ]
    assert not check(one_way).held  # clean, but only counter-clockwise
    unfinished = rows((1, 1), (0, 0))
    unfinished[2] = _row(comp.name, "ccw", completed=False, laps_completed=0, **fixed)
    assert not check(unfinished).held
    # With a DAgger version, either one lapping cleanly is enough.
    dag = dataclasses.replace(comp, name="dag", role="dagger")
    both = rows((1, 0), (0, 1)) + [_row("dag", d, **fixed) for d in ("ccw", "cw")]
    ev = lb.Evaluation([], [], [], 1, {}, compensation_rows=both, compensation_latency="150ms")
    assert compensation_check(slow, comp, dag, ev).held


@pytest.mark.slow
def test_zoo_trains_compensated_and_dagger_versions(tmp_path: Path, one_thread: None) -> None:
    """Warm-started and DAgger zoo members on tiny settings, and the compensation check's
    runs at the compensated model's latency (nothing is concluded from the numbers)."""
    tiny = lb.TINY
    base = tiny.zoo[0]
    preset = dataclasses.replace(
        tiny,
        zoo=(
            base,
            dataclasses.replace(base, name="slow", role="slow_classifier"),
            dataclasses.replace(
                base, name="slow_comp", role="compensated", compensate_latency="100ms",
                init_role="slow_classifier",
            ),
            dataclasses.replace(
                base, name="slow_dagger", role="dagger", compensate_latency="100ms",
                init_role="compensated", dagger_rounds=1,
            ),
        ),
        sweep_roles=(),
    )  # fmt: skip
    out = tmp_path / "out"
    said: list[str] = []
    data = lb.record_dataset(preset, out, seed=0)
    zoo = lb.train_zoo(preset, data, out, seed=0, say=said.append)
    comp, dag = zoo["compensated"], zoo["dagger"]
    assert comp.record["config"]["init_from"] == str(zoo["slow_classifier"].run_dir / "best.json")
    assert comp.record["labels"]["latency_ms"] == pytest.approx(100)
    assert dag.run_dir.name == "run" and dag.run_dir.parent.name == "round-01"
    assert dag.record["config"]["init_from"] == str(comp.run_dir / "best.json")
    state = json.loads((dag.run_dir.parent.parent / "dagger.json").read_text())
    assert [r["round"] for r in state["rounds"]] == [0, 1]
    with Store(out / "leaderboard.sqlite") as store:
        ev = lb.evaluate_zoo(preset, zoo, data, store, seed=0, say=said.append)
    assert ev.compensation_latency == "100ms"
    assert {r.pilot for r in ev.compensation_rows} == {"slow", "slow_comp", "slow_dagger"}
    assert all(r.latency_ms == 100 and r.latency_mode == "fixed" for r in ev.compensation_rows)
    assert len(ev.compensation_rows) == 3 * len(preset.eval_tracks) * 2
    names = [c.name for c in lb.story_checks(preset, ev)]
    assert "slow_comp laps at the latency where slow crashes (100ms)" in names
    # Everything is found again.
    again = lb.train_zoo(preset, data, out, seed=0, say=said.append)
    assert all(m.reused for m in again.values()) and again["dagger"].run_dir == dag.run_dir
