"""Checkpoint choice by driving (training.drive_check): the --closed-loop-every hook."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from training.config import TrainConfig
from training.drive_check import best_closed_loop


def test_best_closed_loop_prefers_score_then_cte_then_the_earliest() -> None:
    rows = [
        {"epoch": 1, "closed_loop_score": 80.0, "closed_loop_abs_cte": 0.05},
        {"epoch": 2},  # no drive this epoch
        {"epoch": 3, "closed_loop_score": 100.0, "closed_loop_abs_cte": 0.09},
        {"epoch": 4, "closed_loop_score": 100.0, "closed_loop_abs_cte": 0.06},
        {"epoch": 5, "closed_loop_score": 100.0, "closed_loop_abs_cte": 0.06},
    ]
    assert best_closed_loop(rows)["epoch"] == 4
    assert best_closed_loop(rows[:2])["epoch"] == 1
    assert best_closed_loop([{"epoch": 1}]) is None


def test_closed_loop_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="held-out"):
        TrainConfig(closed_loop_tracks=("oval", "chicane"))
    with pytest.raises(ValueError, match="closed_loop_every"):
        TrainConfig(closed_loop_every=-1)
    with pytest.raises(ValueError, match="--closed-loop-latency"):
        TrainConfig(closed_loop_latency="soon")


def test_the_hook_drives_and_keeps_best_closed_loop(ring_dataset: Path, tmp_path: Path) -> None:
    from agents.cnn import load_pilot
    from training.train import run

    out = tmp_path / "run"
    cfg = TrainConfig(
        data=str(ring_dataset), out=str(out), epochs=2, input_size=(24, 32), depth=3,
        split_ratios=(0.5, 0.5, 0.0), progress=False, tensorboard=False, threads=1,
        closed_loop_every=1, closed_loop_latency="50ms",
    )  # fmt: skip
    summary = run(cfg)
    history = summary["history"]
    driven = [r["epoch"] for r in history if r.get("closed_loop_score") is not None]
    assert driven == [1, 2]
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert all(r["closed_loop_score"] != "" for r in rows) and len(rows) == 2
    # Worked out from metrics.csv alone: the highest score, then the smallest mean |CTE|,
    # then the earliest epoch.
    top = max(float(r["closed_loop_score"]) for r in rows)
    tied = [r for r in rows if float(r["closed_loop_score"]) == top]
    least = min(float(r["closed_loop_abs_cte"]) for r in tied)
    expected = min(int(r["epoch"]) for r in tied if float(r["closed_loop_abs_cte"]) == least)
    flagged = [int(r["epoch"]) for r in rows if int(r["is_best_closed_loop"] or 0) == 1]
    # is_best_closed_loop marks each new best as it came: the last one is the best.
    assert flagged and flagged[-1] == expected
    chosen = summary["best_closed_loop"]
    assert chosen["epoch"] == expected
    assert chosen["closed_loop"]["tracks"] == [str(ring_dataset.parent / "ring.json")]
    assert chosen["closed_loop"]["latency_ms"] == pytest.approx(50)
    assert chosen["closed_loop"]["directions"] == ["ccw", "cw"]
    record = json.loads((out / "best_closed_loop.json").read_text())
    assert record["epoch"] == expected and record["chosen_by"] == "closed loop"
    assert record["metrics"]["closed_loop_score"] == chosen["closed_loop_score"]
    best = json.loads((out / "best.json").read_text())
    assert best["best_closed_loop"]["epoch"] == expected
    pilot = load_pilot(out / "best_closed_loop.json")  # a checkpoint like any other
    assert pilot.needs.camera == (24, 32)
    assert (out / "curves.png").stat().st_size > 0


def test_checks_are_due_every_k_epochs_and_after_the_last() -> None:
    from training.drive_check import DriveCheck

    check = DriveCheck(("oval",), ("ccw",), 3, 1, 0.0, (24, 32), 2.0, 0)
    assert [e for e in range(1, 8) if check.due(e, last=e == 7)] == [3, 6, 7]
