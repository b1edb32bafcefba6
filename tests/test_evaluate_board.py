"""Every evaluation on the board: ``python -m evaluation.evaluate`` stores its rows in the
leaderboard (the main job's store by default), and ``python -m evaluation.report`` ranks
RL agents, user checkpoints and ONNX pilots beside the zoo.

The README's sentence, "``python -m evaluation.evaluate runs/ppo`` puts an agent on the
leaderboard like any pilot", is run as the command sequence a user types: in-process
``main()`` calls in an empty directory here, and the literal commands as subprocesses
after the tiny main job in the slow test.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from evaluation import leaderboard as lb
from evaluation.evaluate import main as evaluate_main
from evaluation.report import current_context, stale_reasons
from evaluation.report import main as report_main
from evaluation.store import DEFAULT_DB, Store
from training.rl import main as rl_main

REPO = Path(__file__).resolve().parents[1]
#: The smallest real PPO run: 256 steps on the oval, no evaluation during training.
PPO = ["--timesteps", "256", "--n-envs", "1", "--eval-freq", "0", "--tracks", "oval",
       "--n-steps", "128", "--batch-size", "64", "--eval-laps", "1"]  # fmt: skip
ONE_LAP = ["--tracks", "chicane", "--directions", "ccw", "--laps", "1", "--workers", "1",
           "--no-progress"]  # fmt: skip


@pytest.fixture
def one_thread():
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)  # evaluate's main sets --threads (1)


def board_lines(printed: str) -> list[str]:
    """The closed-loop board's rows as printed by the report."""
    block = printed.split("Closed-loop leaderboard", 1)[1].split("\n\n", 1)[0]
    return [line for line in block.splitlines()[4:] if line.strip()]


def test_evaluate_then_report_in_an_empty_directory(tmp_path, monkeypatch, capsys, one_thread):
    """The issue's sequence, then the README's: an RL agent joins the same board."""
    monkeypatch.chdir(tmp_path)
    # python -m evaluation.evaluate expert --tracks chicane --directions ccw --laps 1
    assert evaluate_main(["expert", *ONE_LAP]) == 0
    assert f"stored 1 rows in {DEFAULT_DB}" in capsys.readouterr().err
    # python -m evaluation.report
    assert report_main([]) == 0
    first = capsys.readouterr().out
    assert [line.split()[3] for line in board_lines(first)] == ["expert"]  # target is 2 words

    # python -m training.rl --out runs/ppo ...; python -m evaluation.evaluate runs/ppo
    assert rl_main(["--out", "runs/ppo", *PPO]) == 0
    capsys.readouterr()
    assert evaluate_main(["runs/ppo", *ONE_LAP]) == 0
    capsys.readouterr()
    assert report_main([]) == 0
    printed = capsys.readouterr().out
    rows = board_lines(printed)
    kinds = {line.split()[3]: line.split()[4] for line in rows}
    assert kinds["expert"] == "expert"
    (ppo,) = [name for name, kind in kinds.items() if kind == "sb3"]
    assert ppo.startswith("sb3-ppo-state-")
    assert "stale" not in " ".join(rows)  # same machine, same code, no dataset to compare
    assert "Judged against: this machine" in printed and "no current dataset" in printed
    assert (tmp_path / "trackpilot_out" / "report" / "leaderboard.html").is_file()

    with Store(DEFAULT_DB, readonly=True) as store:
        evals = store.evaluations()
        rows = store.closed_loop_rows(with_trajectories=True)
    assert [e["context"]["source"] for e in evals] == ["evaluation.evaluate"] * 2
    assert [r["evaluation_id"] for r in rows] == [evals[0]["id"], evals[1]["id"]]
    assert rows[1]["pilot_kind"] == "sb3" and rows[1]["checkpoint_sha256"]
    assert all(r["trajectory"] for r in rows)
    # the runs went to the store and nowhere else: no per-evaluation result files
    assert (tmp_path / DEFAULT_DB).is_file()
    assert sorted(p.name for p in (tmp_path / "trackpilot_out").iterdir()) == [
        DEFAULT_DB.name,
        "report",
    ]


def test_a_store_that_cannot_be_written_is_refused_before_any_run(tmp_path, capsys):
    not_a_db = tmp_path / "board.sqlite"
    not_a_db.write_bytes(b"this is not SQLite" * 100)
    rc = evaluate_main(["expert", *ONE_LAP, "--db", str(not_a_db)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith(f"error: {not_a_db}: not a trackpilot leaderboard database")
    assert not_a_db.read_bytes() == b"this is not SQLite" * 100


def _row(pilot: str, fingerprint: str | None, **kw) -> dict:
    return {
        "pilot": pilot,
        "pilot_kind": "cnn",
        "checkpoint_sha256": pilot * 8,
        "dataset_fingerprint": fingerprint,
        "track": "chicane",
        "direction": "ccw",
        "laps_target": 1,
        "laps_completed": 1,
        "autonomy": 100.0,
        "latency_mode": "fixed",
        "latency_ms": 10.0,
        **kw,
    }


def test_only_the_boards_own_earlier_datasets_are_stale(tmp_path):
    """The main job named dataset A, then B, as current; a user's model trained on C (a
    dataset the board never used, evaluated with evaluation.evaluate) is not flagged."""
    with Store(tmp_path / "lb.sqlite") as store:
        store.add([_row("old", "A")], context={"source": "evaluation.leaderboard",
                                               "dataset_fingerprint": "A"})  # fmt: skip
        store.add([_row("new", "B")], context={"source": "evaluation.leaderboard",
                                               "dataset_fingerprint": "B"})  # fmt: skip
        store.add([_row("mine", "C"), _row("rl", None)], context={"source": "evaluation.evaluate"})
        ctx = current_context(store)
        rows = {r["pilot"]: r for r in store.closed_loop_rows()}
    assert ctx.dataset_fingerprint == "B" and ctx.board_datasets == {"A", "B"}
    stale = {p: stale_reasons(r, ctx) for p, r in rows.items()}
    assert stale == {"old": ["dataset"], "new": [], "mine": [], "rl": []}
    assert "dataset B (the main job's; pilots trained on other data" in ctx.describe()
    # The report's --dataset names another current dataset: A's rows are current again.
    with Store(tmp_path / "lb.sqlite", readonly=True) as store:
        ctx_a = current_context(store, "A")
    assert [p for p, r in rows.items() if stale_reasons(r, ctx_a)] == ["new"]


@pytest.mark.slow
def test_rl_user_and_onnx_pilots_beside_the_zoo(
    tmp_path, monkeypatch, capsys, one_thread, run_module
):
    """The tiny main job, then the README's commands as typed (subprocesses): an RL agent
    (``evaluation.evaluate runs/ppo``, every default), a user's checkpoint trained on
    other data and the ONNX export of a zoo model; the report ranks them all on one board,
    and only what is really stale is flagged."""
    pytest.importorskip("onnx")
    monkeypatch.chdir(tmp_path)
    assert lb.main(["--preset", "tiny", "--workers", "1"]) == 0
    capsys.readouterr()
    zoo = {m.name for m in lb.PRESETS["tiny"].zoo}
    compact = next((tmp_path / "trackpilot_out" / "runs").glob("compact-*"))

    assert rl_main(["--out", "runs/ppo", *PPO]) == 0
    from training.synthetic import make_synthetic_dataset

    make_synthetic_dataset(tmp_path / "mydata", episodes=4, frames=30, size=(32, 40), seed=3)
    mine = run_module("training.train", "--data", "mydata", "--out", "runs/mine", "--epochs", "1",
               "--input-size", "32x40", "--device", "cpu", cwd=tmp_path)  # fmt: skip
    assert mine.returncode == 0, mine.stderr
    onnx = run_module("agents.export", str(compact), "--format", "onnx", "--out", "compact.onnx",
               cwd=tmp_path)  # fmt: skip
    assert onnx.returncode == 0, onnx.stderr

    ppo = run_module("evaluation.evaluate", "runs/ppo", cwd=tmp_path)  # the README's line, as is
    assert ppo.returncode == 0, ppo.stderr
    assert "stored 4 rows in trackpilot_out/leaderboard.sqlite" in ppo.stderr
    others = run_module("evaluation.evaluate", "runs/mine", "compact.onnx", "--laps", "1",
                 "--workers", "1", cwd=tmp_path)  # fmt: skip
    assert others.returncode == 0, others.stderr
    report = run_module("evaluation.report", cwd=tmp_path)
    assert report.returncode == 0, report.stderr

    rows = board_lines(report.stdout)
    here = [line.split() for line in rows if line.startswith("this machine")]
    kinds = {cells[3]: cells[4] for cells in here}
    assert zoo | {"expert", "classical"} <= set(kinds)
    assert sum(kind == "sb3" for kind in kinds.values()) == 1
    assert sum(kind == "onnx" for kind in kinds.values()) == 1
    assert sum(kind == "cnn" for kind in kinds.values()) == len(zoo) + 1  # the zoo + mine
    assert not [line for line in rows if "stale:" in line]
    assert re.search(r"Judged against: this machine .*dataset [0-9a-f]{12} \(the main job's",
                     report.stdout)  # fmt: skip
    with Store(tmp_path / "trackpilot_out" / "leaderboard.sqlite", readonly=True) as store:
        sources = [e["context"].get("source") for e in store.evaluations()]
    assert sources == ["evaluation.leaderboard", "evaluation.evaluate", "evaluation.evaluate"]
