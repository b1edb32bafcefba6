"""Rough edges a new user hit: what training.search leaves for training.train, the README's
F1TENTH example as written, and sim.drive without a display."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from training.config import TrainConfig
from training.search import TRIAL_SETTINGS, best_config
from training.search import main as search_main
from training.synthetic import make_synthetic_dataset
from training.train import main as train_main
from training.train_cli import build_parser, config_from_args

REPO = Path(__file__).resolve().parents[1]
SEARCHED = {"lr", "weight_decay", "dropout", "batch_size", "width"}


# --------------------------------------------------------------------------- best_config.json
def test_best_config_keeps_what_is_trained_not_how_trials_ran() -> None:
    base = TrainConfig(data="d", out="o", model="compact_cls", input_size=(32, 40),
                       epochs=2, max_frames=50, seed=7, tensorboard=False, progress=False)  # fmt: skip
    params = {"lr": 0.002, "weight_decay": 1e-4, "dropout": 0.1, "log2_batch": 5, "width": 0.75}
    doc = best_config(base, params)
    assert doc == {"model": "compact_cls", "input_size": [32, 40], "lr": 0.002,
                   "weight_decay": 1e-4, "dropout": 0.1, "batch_size": 32, "width": 0.75}  # fmt: skip
    assert not set(doc) & set(TRIAL_SETTINGS)


def test_search_then_train_with_best_config(tmp_path, capsys) -> None:
    """The README's two commands: the search's trials were short (1 epoch, 40 frames, no
    TensorBoard); training from best_config.json is the real thing."""
    data = tmp_path / "data"
    make_synthetic_dataset(data, episodes=6, frames=24, size=(32, 40), seed=0)
    out = tmp_path / "search"
    rc = search_main(["--data", str(data), "--out", str(out), "--trials", "1", "--epochs", "1",
                      "--max-frames", "40", "--input-size", "32x40", "--no-progress"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    doc = json.loads((out / "best_config.json").read_text())
    assert set(doc) == SEARCHED | {"input_size"}  # the typed --input-size is kept
    trial = json.loads(next((out / "trials").glob("0*/config.json")).read_text())
    assert trial["epochs"] == 1 and trial["max_frames"] == 40 and trial["tensorboard"] is False

    run = tmp_path / "best"
    argv = ["--config", str(out / "best_config.json"), "--data", str(data), "--out", str(run)]
    cfg = config_from_args(build_parser().parse_args(argv))
    defaults = TrainConfig()
    assert (cfg.epochs, cfg.max_frames, cfg.tensorboard) == (30, None, True)
    assert cfg.seed == defaults.seed and cfg.lr == doc["lr"] and cfg.input_size == (32, 40)
    # Trained for one epoch here (the test's budget), from that file, with TensorBoard.
    assert train_main([*argv, "--epochs", "1", "--no-progress"]) == 0
    used = json.loads((run / "config.json").read_text())
    assert used["max_frames"] is None and used["tensorboard"] is True
    assert used["batch_size"] == doc["batch_size"] and used["width"] == doc["width"]
    assert list((run / "tb").rglob("events.out.tfevents.*"))


# --------------------------------------------------------------------------- README: F1TENTH
def readme_f1tenth_block() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Tracks") :]
    section = section[: section.index("\n## ", 3)]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return block


def test_readme_f1tenth_example_prints_what_it_says_and_the_car_laps_it(tmp_path) -> None:
    """Run as written, in a fresh interpreter from the repository root: the printed track
    is the one the comment shows, and the expert drives a clean lap of it."""
    block = readme_f1tenth_block()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", block], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    comment = re.search(r"print\(track\)\s*#\s*(.*)", block).group(1)
    shown = comment.removesuffix("...)").rstrip(", ")
    assert proc.stdout.strip().startswith(shown), (proc.stdout, shown)

    from agents.expert import check_laps

    scope: dict = {}
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        exec(compile(block.replace("print(track)", "pass"), "README.md", "exec"), scope)
    finally:
        os.chdir(cwd)
    r = check_laps(scope["track"], "ccw", 2.0, 1)
    assert r["laps"] == 1 and not r["off_track"], r


# --------------------------------------------------------------------------- sim.drive
HEADLESS = ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER", "SDL_AUDIODRIVER")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X11/Wayland displays")
def test_drive_without_a_display_says_so_and_exits(tmp_path, run_module) -> None:
    """No DISPLAY, no WAYLAND_DISPLAY, SDL left to pick its driver: one error line, exit 2,
    nothing recorded (it used to print SDL's XDG_RUNTIME_DIR error and drive unseen)."""
    out = tmp_path / "manual"
    proc = run_module("sim.drive", "--out", out, "--record", cwd=tmp_path, unset=HEADLESS)
    lines = [s for s in proc.stderr.splitlines() if s and not s.startswith("pybullet build time")]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: no display"), proc.stderr
    assert "DISPLAY" in lines[0] and "SDL_VIDEODRIVER=dummy" in lines[0]
    assert "XDG_RUNTIME_DIR" not in proc.stderr and not out.exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X11 displays")
def test_drive_refuses_a_display_sdl_cannot_open(tmp_path, run_module) -> None:
    """DISPLAY names an X server that is not there: SDL falls back to its offscreen
    driver, which draws nowhere; sim.drive says so instead of driving unseen."""
    env = {"DISPLAY": ":4187"}  # no X server listens there
    proc = run_module("sim.drive", "--out", tmp_path / "m", cwd=tmp_path, env=env, unset=HEADLESS)
    errors = [s for s in proc.stderr.splitlines() if s.startswith("error: no display")]
    assert proc.returncode == 2, proc.stderr
    assert len(errors) == 1 and "could not open :4187 and fell back to" in errors[0]
    assert not (tmp_path / "m").exists()
