"""Nothing half-done in the commands that write runs and datasets: an output that cannot
be written is one ``error:`` line before any work starts (``training.train``,
``training.rl``, ``sim.record``, ``tracks.plot``); an ``OSError`` while writing is one line
too, with no file half-written; a training killed before its first epoch (or evaluation)
is no dead end; the same training state saved twice has the same bytes.

The command lines run for real, as subprocesses. A read-only directory and a full disk
are made with a private mount namespace (``unshare``: a read-only bind mount, a tiny
tmpfs) where the machine allows it; chmod alone does not stop root, so the chmod case
runs only for other users.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tracks.fileio import sha256_file
from tracks.outputs import OutputError, check_output_dir, check_output_file, os_error_line
from training.synthetic import make_synthetic_dataset

REPO = Path(__file__).resolve().parents[1]
PROC = "/proc/trackpilot-test"  # /proc refuses mkdir with a real OSError, even for root

TRAIN_TINY = ["--input-size", "32x40", "--batch-size", "32", "--no-progress", "--threads", "1"]
RL_TINY = ["--n-envs", "1", "--tracks", "oval", "--n-steps", "128", "--batch-size", "64",
           "--eval-laps", "1"]  # fmt: skip
RECORD_TINY = ["--tracks", "oval", "--laps", "1", "--image-size", "32x40", "--directions", "ccw",
               "--episodes", "1", "--workers", "1", "--no-progress"]  # fmt: skip


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_cli(args: list[str], cwd: Path, *, shell: str | None = None, timeout: float = 240):
    """``python ARGS`` in ``cwd``; with ``shell`` (a script that mounts, then runs the
    command as ``"$@"``) in a private mount namespace, so its mounts vanish with it."""
    cmd = [sys.executable, *args]
    if shell is not None:
        cmd = ["unshare", "-rm", "sh", "-c", shell, "sh", *cmd]
    return subprocess.run(
        cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout, check=False
    )


def assert_one_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Non-zero exit, no traceback, exactly one ``error:`` line on stderr (PyBullet's
    build-time banner and log lines aside) that contains every needle; returns it."""
    err = proc.stderr
    assert proc.returncode != 0, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def tree(root: Path) -> dict[str, int]:
    """Every file and directory under ``root`` with its size (directories -1)."""
    return {
        str(p.relative_to(root)): (-1 if p.is_dir() else p.stat().st_size)
        for p in sorted(root.rglob("*"))
    }


def no_temp_files(root: Path) -> bool:
    return not [p for p in root.rglob(".*.tmp-*")]


_NAMESPACE: bool | None = None


def namespaces_work(tmp_path: Path) -> bool:
    """True if ``unshare -rm`` can mount here (a tmpfs in a private mount namespace)."""
    global _NAMESPACE
    if _NAMESPACE is None:
        d = tmp_path / "ns-probe"
        d.mkdir()
        try:
            _NAMESPACE = shutil.which("unshare") is not None and (
                subprocess.run(
                    ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {d}"],
                    capture_output=True,
                    timeout=30,
                    check=False,
                ).returncode
                == 0
            )
        except (OSError, subprocess.SubprocessError):
            _NAMESPACE = False
        d.rmdir()
    return _NAMESPACE


@pytest.fixture(scope="module")
def syn_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "syn"
    make_synthetic_dataset(root, episodes=6, frames=40, size=(32, 40), seed=0)
    return root


# One command line per command, given its output (a directory; the PNG's directory for
# tracks.plot).
COMMANDS: dict[str, Callable[[Path, str], list[str]]] = {
    "training.train": lambda data, out: [
        "-m", "training.train", "--data", str(data), "--out", out, "--epochs", "1", *TRAIN_TINY
    ],
    "training.rl": lambda data, out: [
        "-m", "training.rl", "--out", out, "--timesteps", "128", *RL_TINY
    ],
    "sim.record": lambda data, out: ["-m", "sim.record", *RECORD_TINY, "--out", out],
    "tracks.plot": lambda data, out: ["-m", "tracks.plot", "oval", "--out", f"{out}/track.png"],
}  # fmt: skip


def _out_name(command: str, out: str) -> str:
    return f"{out}/track.png" if command == "tracks.plot" else out


# --------------------------------------------------------------------------- up front
@pytest.mark.parametrize("command", COMMANDS)
def test_output_inside_a_file_is_one_error_line(command, tmp_path, syn_data) -> None:
    (tmp_path / "file.txt").write_text("not a directory\n")
    before = tree(tmp_path)
    proc = run_cli(COMMANDS[command](syn_data, "file.txt/run"), tmp_path)
    assert_one_error(proc, _out_name(command, "file.txt/run"), "file.txt is not a directory")
    assert tree(tmp_path) == before


@pytest.mark.parametrize("command", COMMANDS)
def test_output_under_proc_is_one_error_line(command, tmp_path, syn_data) -> None:
    before = tree(tmp_path)
    proc = run_cli(COMMANDS[command](syn_data, PROC), tmp_path)
    assert_one_error(proc, _out_name(command, PROC), "cannot write here")
    assert tree(tmp_path) == before


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="root writes into a chmod 0o500 directory anyway (see the read-only mount test)",
)
@pytest.mark.parametrize("command", COMMANDS)
def test_output_in_a_chmod_read_only_directory_is_one_error_line(
    command, tmp_path, syn_data
) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        proc = run_cli(COMMANDS[command](syn_data, "ro/run"), tmp_path)
        assert_one_error(proc, _out_name(command, "ro/run"), "Permission denied")
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o700)


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS)
def test_output_on_a_read_only_mount_is_one_error_line(command, tmp_path, syn_data) -> None:
    if not namespaces_work(tmp_path):
        pytest.skip("no private mount namespace here (unshare -rm)")
    ro = tmp_path / "ro"
    ro.mkdir()
    before = tree(tmp_path)
    shell = 'mount --bind ro ro && mount -o remount,bind,ro ro && exec "$@"'
    for out in ("ro", "ro/run"):  # the directory itself, and a new one inside it
        proc = run_cli(COMMANDS[command](syn_data, out), tmp_path, shell=shell)
        assert_one_error(proc, _out_name(command, out), "Read-only file system")
    assert tree(tmp_path) == before


@pytest.mark.slow
@pytest.mark.parametrize("command", ["training.train", "training.rl", "sim.record"])
def test_output_that_is_a_file_is_one_error_line(command, tmp_path, syn_data) -> None:
    (tmp_path / "out").write_text("a file\n")
    before = tree(tmp_path)
    proc = run_cli(COMMANDS[command](syn_data, "out"), tmp_path)
    assert_one_error(proc, "out", "not a directory")
    assert tree(tmp_path) == before


@pytest.mark.slow
def test_plot_onto_a_directory_is_one_error_line(tmp_path) -> None:
    (tmp_path / "track.png").mkdir()
    proc = run_cli(["-m", "tracks.plot", "oval", "--out", "track.png"], tmp_path)
    assert_one_error(proc, "track.png: is a directory")


def test_output_checks_leave_nothing_behind(tmp_path) -> None:
    out = tmp_path / "a" / "b" / "run"
    assert check_output_dir(out) == out
    assert check_output_file(tmp_path / "c" / "plot.png") == tmp_path / "c" / "plot.png"
    assert list(tmp_path.iterdir()) == []  # created to be probed, then removed
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match=r"f: exists and is not a directory$"):
        check_output_dir(tmp_path / "f")
    with pytest.raises(OutputError, match=r"run: cannot write here \(.*f is not a directory\)"):
        check_output_dir(tmp_path / "f" / "deeper" / "run")
    with pytest.raises(OutputError, match="is a directory"):
        check_output_file(tmp_path)
    with pytest.raises(OutputError, match="cannot write here"):
        check_output_dir(PROC)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_os_error_line_names_the_file_not_its_temp_file(tmp_path) -> None:
    e = OSError(28, "No space left on device", str(tmp_path / ".best.json.tmp-12-0a1b"))
    assert os_error_line(e) == f"{tmp_path / 'best.json'}: No space left on device"
    assert os_error_line(OSError(28, "No space left on device"), "runs/x") == (
        "runs/x: No space left on device"
    )


# --------------------------------------------------------------------------- while writing
def _full_disk(tmp_path: Path, size: str) -> str:
    """A script running the command on a tmpfs ``small`` of ``size``; what the tmpfs holds
    when the command ends is copied to ``seen``."""
    if not namespaces_work(tmp_path):
        pytest.skip("no private mount namespace here (unshare -rm) for a tiny tmpfs")
    (tmp_path / "small").mkdir()
    (tmp_path / "seen").mkdir()
    return (
        f"mount -t tmpfs -o size={size} tmpfs small && "
        '{ "$@"; rc=$?; cp -a small/. seen; exit $rc; }'
    )


def test_train_on_a_full_disk_is_one_error_line_nothing_half_written(tmp_path, syn_data) -> None:
    # config.json and split.json fit; the first checkpoint (~450 kB) does not.
    cmd = COMMANDS["training.train"](syn_data, "small/run")
    proc = run_cli(cmd, tmp_path, shell=_full_disk(tmp_path, "64k"))
    assert_one_error(proc, "small/run", "No space left on device")
    seen = tmp_path / "seen"  # what the tmpfs held when the command exited
    assert (seen / "run" / "config.json").is_file()
    assert no_temp_files(seen)
    for name in ("best.safetensors", "best.json", "last-state.safetensors"):
        assert not (seen / "run" / name).exists()  # never half a checkpoint


@pytest.mark.slow
@pytest.mark.parametrize("command", ["sim.record", "tracks.plot"])
def test_record_and_plot_on_a_full_disk_are_one_error_line(command, tmp_path) -> None:
    cmd = COMMANDS[command](None, "small/out")
    proc = run_cli(cmd, tmp_path, shell=_full_disk(tmp_path, "8k"))
    assert_one_error(proc, "small/out", "No space left on device")
    assert no_temp_files(tmp_path / "seen")
    assert not (tmp_path / "seen" / "out" / "track.png").exists()


@pytest.mark.slow
def test_rl_on_a_full_disk_is_one_error_line(tmp_path) -> None:
    # config.json, TensorBoard's first events and one evaluation line fit; the policy not.
    cmd = ["-m", "training.rl", "--out", "small/run", "--timesteps", "256", "--eval-freq", "128",
           *RL_TINY]  # fmt: skip
    proc = run_cli(cmd, tmp_path, shell=_full_disk(tmp_path, "16k"))
    assert_one_error(proc, "small/run", "No space left on device")
    seen = tmp_path / "seen" / "run"
    assert no_temp_files(seen) and not (seen / "best.safetensors").exists()
    for line in (seen / "evaluations.jsonl").read_text().splitlines():
        json.loads(line)


# --------------------------------------------------------------------------- killed early
def _kill_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "the run never got there"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()


def test_train_killed_before_its_first_epoch_resumes_fresh(tmp_path) -> None:
    data = tmp_path / "data"
    # Epochs long enough (~2,400 frames) to be killed inside the first.
    make_synthetic_dataset(data, episodes=6, frames=400, size=(32, 40), seed=0)
    run = tmp_path / "run"
    args = ["-m", "training.train", "--data", str(data), "--out", str(run), *TRAIN_TINY]
    proc = subprocess.Popen(
        [sys.executable, *args, "--epochs", "1"],
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _kill_when(proc, (run / "config.json").exists)
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "last-state.safetensors").exists(), "the first epoch ended before the kill"

    # Resuming checks the config as always ...
    changed = run_cli(["-m", "training.train", "--out", str(run), "--resume", "--lr", "0.1"],
                      tmp_path)  # fmt: skip
    assert_one_error(changed, "cannot change lr")
    # ... then, with no saved state, starts the run fresh, says so, and completes it.
    resumed = run_cli(["-m", "training.train", "--out", str(run), "--resume", "--no-progress"],
                      tmp_path)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    notes = [line for line in resumed.stderr.splitlines() if "starting it fresh" in line]
    assert len(notes) == 1 and "no saved training state" in notes[0]
    assert (run / "last-state.safetensors").is_file() and (run / "test_metrics.json").is_file()
    assert json.loads((run / "best.json").read_text())["stopped"]

    # Now a real run is there: a fresh run refuses it and says what to do.
    again = run_cli([*args, "--epochs", "1"], tmp_path)
    assert_one_error(again, str(run), "--resume", "another --out")


def test_fresh_train_into_a_stopped_run_or_a_foreign_directory(tmp_path, syn_data) -> None:
    stopped = tmp_path / "stopped"  # what a run killed before its first epoch leaves
    stopped.mkdir()
    (stopped / "config.json").write_text("{}")
    (stopped / "tb").mkdir()
    proc = run_cli(COMMANDS["training.train"](syn_data, "stopped"), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "starting it fresh" in proc.stderr
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    proc = run_cli(COMMANDS["training.train"](syn_data, "foreign"), tmp_path)
    assert_one_error(proc, "not a training run", "notes.txt")
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


@pytest.mark.slow
def test_rl_killed_before_its_first_evaluation_resumes_fresh(tmp_path) -> None:
    out = tmp_path / "rl"
    args = ["-m", "training.rl", "--out", str(out), *RL_TINY]
    proc = subprocess.Popen(
        [sys.executable, *args, "--timesteps", "1000000", "--eval-freq", "500000"],
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _kill_when(proc, lambda: any((out / "tb").glob("*/events.out.tfevents.*")))
    assert not (out / "train_state.json").exists()
    resumed = run_cli(
        ["-m", "training.rl", "--out", str(out), "--resume", "--timesteps", "256",
         "--eval-freq", "128"], tmp_path,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert "starting it fresh" in resumed.stderr
    assert json.loads((out / "train_state.json").read_text())["num_timesteps"] == 256
    again = run_cli([*args, "--timesteps", "256"], tmp_path)
    assert_one_error(again, "--resume", "another --out")


# --------------------------------------------------------------------------- stable bytes
_SAVE_BC_STATE = """
import random, sys
import numpy as np, torch
from training.state import load_train_state, save_train_state
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
model(torch.randn(4, 6)).square().mean().backward()
opt.step()
best = {k: v.clone() for k, v in model.state_dict().items()}
for k in range(4):  # one process's hash maps differ from call to call, too
    random.seed(1); np.random.seed(1); torch.manual_seed(1)
    d = f"{sys.argv[1]}/{k}"
    save_train_state(d, model=model, best_state=best, optimizer=opt, scaler=None,
                     info={"epoch": 1, "history": [{"epoch": 1, "dev_mae": 0.25}]})
    load_train_state(d)
"""


def _shas(tmp_path: Path, script: str, name: str) -> set[str]:
    shas = set()
    for seed in ("1", "2"):
        out = tmp_path / f"p{seed}"
        out.mkdir()
        for k in range(4):
            (out / str(k)).mkdir()
        env = {**_env(), "PYTHONHASHSEED": seed}
        proc = subprocess.run([sys.executable, "-c", script, str(out)], env=env,
                              capture_output=True, text=True, timeout=240, check=False)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        shas |= {sha256_file(p) for p in out.glob(f"*/{name}")}
    return shas


def test_bc_training_state_bytes_are_stable_across_processes(tmp_path) -> None:
    assert len(_shas(tmp_path, _SAVE_BC_STATE, "last-state.safetensors")) == 1


_SAVE_RL_STATE = """
import sys
import torch
from stable_baselines3 import PPO
from training.rl_state import read_train_state, save_train_state
torch.set_num_threads(1)
model = PPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=32, n_epochs=1, seed=0,
            device="cpu")
model.learn(64)
for k in range(4):
    save_train_state(model, None, f"{sys.argv[1]}/{k}", {"elapsed_s": 0.0})
    read_train_state(f"{sys.argv[1]}/{k}")
"""


@pytest.mark.slow
def test_rl_training_state_bytes_are_stable_across_processes(tmp_path) -> None:
    assert len(_shas(tmp_path, _SAVE_RL_STATE, "train_state.safetensors")) == 1
