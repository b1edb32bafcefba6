"""The prepared GPU script (training.gpu_report): bounded children, the budget, the report,
saying when no GPU is present, and a whole dry run on the CPU; training.bench's GPU-path
settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from training.bench import bench_training
from training.gpu_report import ChildRun, leaderboard_times, run_child
from training.gpu_report import main as report_main

ROOT = Path(__file__).resolve().parents[1]


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper that is not its parent counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def test_a_child_past_its_deadline_is_stopped_with_its_whole_group(tmp_path) -> None:
    # The child starts a grandchild (as torchrun and the leaderboard's pool do), then hangs.
    code = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print('grandchild', p.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    t0 = time.monotonic()
    run = run_child("hang", [sys.executable, "-c", code], 3.0, tmp_path / "logs")
    assert time.monotonic() - t0 < 15
    assert run.status is None and not run.ok
    assert run.summary()["status"] == "timed out"
    grandchild = int(run.stdout.split()[1])
    time.sleep(0.5)
    assert not alive(grandchild)
    log = (tmp_path / "logs" / "hang.log").read_text()
    assert log.startswith("$ ") and "grandchild" in log and "stopped after 3 s" in log


def test_leaderboard_steps_are_timed_from_its_progress_lines() -> None:
    lines = [
        (0.0, "[1/4] expert laps on oval (ccw, cw)"),
        (30.0, "  out/data: 6 episodes, 900 frames (recorded 6) in 30 s"),
        (30.5, "[2/4] training the zoo (2 models)"),
        (60.0, "  compact: trained in 29 s"),
        (70.5, "[3/4] offline + closed loop on held-out triangle (ccw, cw), latency measured here"),
        (120.0, "  closed loop: 8 runs in 49 s"),
    ]
    cut = leaderboard_times(ChildRun("lb", ["x"], None, 130.0, lines))
    assert cut["steps_s"] == {"record": 30.5, "train": 40.0, "evaluate": None}
    assert cut["finished_steps"] == ["record", "train"]
    assert cut["trained_s"] == {"compact": 29}
    assert cut["closed_loop"] == {"closed loop": {"runs": 8, "seconds": 49}}
    assert cut["own_summary"] is None
    done = lines + [
        (121.0, "[4/4] reports"),
        (125.0, "preset tiny: 125 s in all (record 30 s, train 40 s, evaluate 50 s, report 4 s)"),
    ]
    full = leaderboard_times(ChildRun("lb", ["x"], 0, 126.0, done))
    assert full["steps_s"]["evaluate"] == 50.5 and full["steps_s"]["report"] == 5.0
    assert full["own_summary"] == {
        "seconds": 125,
        "record": 30,
        "train": 40,
        "evaluate": 50,
        "report": 4,
    }


def test_without_a_gpu_the_report_says_so_first_and_exits_1(tmp_path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "training.gpu_report", "--out", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=120, env=env, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.startswith("NO GPU PRESENT")
    md = (tmp_path / "r" / "gpu_report.md").read_text()
    assert md.splitlines()[2].startswith("**NO GPU PRESENT: torch")
    doc = json.loads((tmp_path / "r" / "gpu_report.json").read_text())
    assert doc["environment"]["gpus"] == []
    assert {s["status"] for s in doc["stages"].values()} == {"skipped"}


def test_bad_flags_are_one_error_line(tmp_path, capsys) -> None:
    assert report_main(["--out", str(tmp_path / "r"), "--stages", "bench,fly"]) == 2
    assert "error: stages must be distinct names from" in capsys.readouterr().err
    assert report_main(["--out", str(tmp_path / "r"), "--budget-s", "0"]) == 2
    assert report_main(["--dry-run"]) == 2
    assert "error: --out is required" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_the_budget_bounds_the_run_and_the_report_names_what_it_cut(tmp_path, capsys) -> None:
    # 12 s for bench and leaderboard: bench's share (~5 s) is below what a child gets, so
    # its runs are skipped; the leaderboard gets the rest and is stopped at the deadline.
    out = tmp_path / "r"
    t0 = time.monotonic()
    status = report_main(["--out", str(out), "--dry-run", "--budget-s", "12",
                          "--stages", "bench,leaderboard"])  # fmt: skip
    elapsed = time.monotonic() - t0
    assert status == 0
    assert elapsed < 12 + 15  # the budget, plus the stop's grace
    doc = json.loads((out / "gpu_report.json").read_text())
    assert doc["stages"]["bench"]["status"] == "partial"
    assert len(doc["stages"]["bench"]["skipped"]) == 5  # (bf16, fp32) x 2 batches, host frames
    lb = doc["stages"]["leaderboard"]
    assert lb["status"] == "cut by the budget" and lb["run"]["status"] == "timed out"
    md = (out / "gpu_report.md").read_text()
    assert "(cut by the budget)" in md and "skipped: bench-b16-bf16-device (budget)" in md


def test_bench_runs_the_gpu_path_settings_on_the_cpu() -> None:
    torch.set_num_threads(1)
    r = bench_training(
        "compact", torch.device("cpu"), (30, 40), batch_size=8, repeats=1, min_seconds=0.05,
        amp_dtype=torch.bfloat16, channels_last=True,
    )  # fmt: skip
    assert (r["precision"], r["channels_last"], r["frames_on"]) == ("bf16", True, "cpu")
    assert r["train_images_per_s"] > 0 and 0 < r["augment_share"] < 1


@pytest.mark.slow
def test_dry_run_runs_every_stage_end_to_end(tmp_path, capsys) -> None:
    out = tmp_path / "r"
    assert report_main(["--out", str(out), "--dry-run", "--budget-s", "900"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("DRY RUN on the CPU")
    doc = json.loads((out / "gpu_report.json").read_text())
    st = doc["stages"]
    assert [st[s]["status"] for s in ("bench", "leaderboard", "ddp")] == ["done"] * 3
    bench = st["bench"]["results"]
    assert {(r["batch_size"], r["precision"]) for r in bench} == {
        (16, "bf16"),
        (32, "bf16"),
        (16, "fp32"),
        (32, "fp32"),
    }
    assert all(r["train_images_per_s"] > 0 for r in bench)
    assert st["leaderboard"]["finished_steps"] == ["record", "train", "evaluate", "report"]
    assert st["leaderboard"]["own_summary"]["seconds"] > 0
    ddp = {r["processes"]: r for r in st["ddp"]["results"]}
    assert set(ddp) == {1, 2} and ddp[1]["speedup"] == 1.0
    assert all(0 < r["train_loss_last"] < 1 for r in ddp.values())
    assert doc["elapsed_s"] < 900
    md = (out / "gpu_report.md").read_text()
    assert "## DDP under torchrun (done)" in md and "| 2 |" in md
