"""Ctrl-C, SIGTERM and SIGKILL of the long-running command lines, with real processes.

Each case starts a ``python -m`` command in its own session (as a terminal would start it
in its own process group), waits until it is working (worker processes exist, output
appears), sends the signal (SIGINT to the whole group, like Ctrl-C; SIGTERM and SIGKILL
to the parent only) and checks:

- the exit status (130 for SIGINT, 143 for SIGTERM);
- one non-empty line on stderr from the signal on (PyBullet's "pybullet build time"
  banner aside), no traceback at all;
- no process of the session left a few seconds later (found through ``/proc``: every
  descendant keeps the session id, even when its parent is gone);
- what was written is whole (a dataset validates; after SIGKILL no episode appears).

The slower cases (the leaderboard, more commands) are marked ``slow``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from evaluation.store import Store
from tests._sources import entry_points

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not Path("/proc/self/stat").exists(),
    reason="finds descendant processes through Linux's /proc",
)

ROOT = Path(__file__).resolve().parents[1]
BANNER = "pybullet build time"
#: Seconds the processes of a signalled command have to be gone.
GONE_S = 10.0


def session_processes(sid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the live (non-zombie) processes of session ``sid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        state, session = fields[0], int(fields[3])
        if session == sid and state not in ("Z", "X"):
            found.append((int(entry), cmd.strip()))
    return found


class Command:
    """``python ARGS`` in its own session, its output collected with timestamps."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env={
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "PYTHONUNBUFFERED": "1",
                "OMP_NUM_THREADS": "1",
                **(env or {}),
            },
        )
        self.sid = self.proc.pid
        self.out: list[tuple[float, str]] = []
        self.err: list[tuple[float, str]] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for t in self._readers:
            t.start()
        self.signalled_at: float | None = None

    @staticmethod
    def _read(stream, sink: list) -> None:
        for raw in iter(stream.readline, b""):
            sink.append((time.monotonic(), raw.decode(errors="replace")))

    def children(self) -> list[tuple[int, str]]:
        return [p for p in session_processes(self.sid) if p[0] != self.proc.pid]

    def wait_until(self, what: str, predicate, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if self.proc.poll() is not None:
                pytest.fail(f"{what}: it ended first (rc {self.proc.returncode})\n{self.text()}")
            time.sleep(0.05)
        self.kill()
        pytest.fail(f"{what}: not within {timeout} s\n{self.text()}")

    def wait_for_workers(self, n: int, timeout: float = 60.0) -> None:
        def workers() -> bool:
            return sum("multiprocessing" in cmd for _, cmd in self.children()) >= n

        self.wait_until(f"{n} worker processes", workers, timeout)

    def ctrl_c(self) -> None:
        """SIGINT to the process group, as a terminal's Ctrl-C."""
        self.signalled_at = time.monotonic()
        os.killpg(self.proc.pid, signal.SIGINT)

    def send(self, sig: int) -> None:
        """``sig`` to the parent only."""
        self.signalled_at = time.monotonic()
        os.kill(self.proc.pid, sig)

    def finish(self, timeout: float = 60.0) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"still running {timeout} s after the signal\n{self.text()}")
        for t in self._readers:
            t.join(5.0)
        return rc

    def seconds_until_gone(self, timeout: float = GONE_S) -> float:
        """Seconds from the signal until no process of the session is left."""
        assert self.signalled_at is not None
        deadline = time.monotonic() + timeout
        while True:
            left = session_processes(self.sid)
            if not left:
                gone = time.monotonic() - self.signalled_at
                print(f"{' '.join(self.args[:2])}: no process left {gone:.2f} s after the signal")
                return gone
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"{len(left)} processes left {timeout} s after the signal: {left}")
            time.sleep(0.05)

    def kill(self) -> None:
        for pid, _ in session_processes(self.sid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stderr_lines(self, since: float | None = None) -> list[str]:
        """Non-empty stderr lines (the PyBullet banner left out), from ``since`` on."""
        return [
            line.strip()
            for t, line in self.err
            if line.strip() and BANNER not in line and (since is None or t >= since)
        ]

    def text(self) -> str:
        return (
            "stdout:\n"
            + "".join(s for _, s in self.out)
            + "stderr:\n"
            + "".join(s for _, s in self.err)
        )

    def check_clean_exit(self, expected_rc: int, *, quiet_before: bool = True) -> str:
        """Exit status ``expected_rc``, one stderr line, no traceback; returns the line."""
        rc = self.finish()
        text = self.text()
        assert rc == expected_rc, text
        assert "Traceback" not in text and "Error" not in "".join(s for _, s in self.err), text
        lines = self.stderr_lines() if quiet_before else self.stderr_lines(self.signalled_at)
        assert len(lines) == 1, text
        return lines[0]


def _record_args(out: Path, *, laps: int = 1, episodes: int = 30) -> list[str]:
    return [
        "-m",
        "sim.record",
        "--tracks",
        "oval",
        "--directions",
        "ccw,cw",
        "--laps",
        str(laps),
        "--episodes",
        str(episodes),
        "--image-size",
        "24x32",
        "--workers",
        "2",
        "--no-progress",
        "--out",
        str(out),
    ]


def _episode_files(out: Path) -> set[str]:
    d = out / "episodes"
    return {p.name for p in d.iterdir() if not p.name.startswith(".")} if d.exists() else set()


def _listed(out: Path) -> int:
    try:
        return len(json.loads((out / "manifest.json").read_text())["episodes"])
    except (OSError, ValueError):
        return 0


def _check_dataset(out: Path) -> int:
    """The dataset validates and every listed episode loads (checksums); returns the count."""
    from sim.dataset import is_warning, open_dataset, validate_dataset

    errors = [p for p in validate_dataset(out) if not is_warning(p)]
    assert not errors, errors
    ds = open_dataset(out)
    for i in range(len(ds.episodes)):
        ds.load_episode(i)
    return len(ds.episodes)


# --------------------------------------------------------------------------- sim.pool
def _no_children_left(timeout: float = 5.0) -> None:
    import multiprocessing as mp

    deadline = time.monotonic() + timeout
    while mp.active_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not mp.active_children()


def test_pool_job_error_keeps_the_worker_traceback_and_stops_the_pool():
    from sim.pool import RemoteTraceback, imap_unordered

    with pytest.raises(ValueError) as info:
        list(imap_unordered(int, ["1", "x", "3", "4"], workers=2))
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert "invalid literal" in str(info.value.__cause__)
    _no_children_left()


def test_pool_worker_death_is_broken_pool():
    from sim.pool import BrokenPool, imap_unordered

    with pytest.raises(BrokenPool, match="exit code 3"):
        list(imap_unordered(os._exit, [3, 3], workers=2))
    _no_children_left()


def test_pool_workers_ignore_sigint_and_an_abandoned_pool_stops():
    from sim.pool import imap_unordered

    results = imap_unordered(signal.getsignal, [signal.SIGINT] * 4, workers=2)
    _, first = next(results)
    assert first == signal.SIG_IGN
    results.close()  # abandoned: the workers are stopped, not waited for
    _no_children_left()
    assert sorted(imap_unordered(abs, [-1, -2, -3], workers=2)) == [(0, 1), (1, 2), (2, 3)]
    _no_children_left()


# --------------------------------------------------------------------------- sim.record
def test_record_ctrl_c_keeps_finished_episodes_and_leaves_nothing_running(tmp_path):
    out = tmp_path / "ds"
    cmd = Command(_record_args(out), tmp_path)
    cmd.wait_for_workers(2)
    cmd.wait_until("an episode written", lambda: _listed(out) >= 1)
    cmd.ctrl_c()
    line = cmd.check_clean_exit(130)
    assert line.startswith("interrupted: finished episodes kept"), line
    cmd.seconds_until_gone()
    n = _check_dataset(out)
    assert 1 <= n < 60
    # The same command records the rest.
    assert _listed(out) == n


def test_record_sigterm_ends_cleanly(tmp_path):
    out = tmp_path / "ds"
    cmd = Command(_record_args(out), tmp_path)
    cmd.wait_for_workers(2)
    cmd.wait_until("an episode written", lambda: _listed(out) >= 1)
    cmd.send(signal.SIGTERM)
    line = cmd.check_clean_exit(143)
    assert line.startswith("terminated: "), line
    cmd.seconds_until_gone()
    _check_dataset(out)


def test_record_sigkill_workers_stop_writing(tmp_path):
    out = tmp_path / "ds"
    cmd = Command(_record_args(out), tmp_path)
    cmd.wait_for_workers(2)
    cmd.wait_until("an episode written", lambda: _listed(out) >= 1)
    cmd.send(signal.SIGKILL)
    assert cmd.finish() == -signal.SIGKILL
    cmd.seconds_until_gone()
    before = _episode_files(out)
    time.sleep(2.0)  # an orphaned worker would finish an episode (~1 s) in this time
    assert _episode_files(out) == before
    _check_dataset(out)


# --------------------------------------------------------------------------- evaluation
def _evaluate_args(out: Path) -> list[str]:
    return [
        "-m",
        "evaluation.evaluate",
        "expert",
        "--tracks",
        "oval",
        "--directions",
        "ccw,cw",
        "--seeds",
        "0,1",
        "--laps",
        "20",
        "--latency",
        "0",
        "--workers",
        "2",
        "--no-progress",
        "--out",
        str(out),
    ]


def test_evaluate_ctrl_c(tmp_path):
    out = tmp_path / "eval"
    cmd = Command(_evaluate_args(out), tmp_path)
    cmd.wait_for_workers(2)
    time.sleep(1.0)  # the workers import and start driving
    cmd.ctrl_c()
    line = cmd.check_clean_exit(130)
    assert line.startswith("interrupted: nothing stored"), line
    cmd.seconds_until_gone()
    db = tmp_path / "trackpilot_out" / "leaderboard.sqlite"  # the default --db, in its cwd
    with Store(db, readonly=True) as store:
        assert store.counts()["closed_loop"] == 0 and store.counts()["evaluations"] == 0


def test_evaluate_sigkill_leaves_no_worker(tmp_path):
    cmd = Command(_evaluate_args(tmp_path / "eval"), tmp_path)
    cmd.wait_for_workers(2)
    time.sleep(1.0)
    cmd.send(signal.SIGKILL)
    assert cmd.finish() == -signal.SIGKILL
    assert cmd.seconds_until_gone() < 3.0


# --------------------------------------------------------------------------- training.rl
def _rl_args(out: Path) -> list[str]:
    return [
        "-m",
        "training.rl",
        "--out",
        str(out),
        "--timesteps",
        "100000",
        "--n-envs",
        "2",
        "--tracks",
        "oval",
        "--n-steps",
        "64",
        "--batch-size",
        "64",
        "--eval-freq",
        "0",
        "--device",
        "cpu",
    ]


def _rl_learning(out: Path) -> bool:
    # SB3 opens its TensorBoard log when learn() starts.
    return any((out / "tb").glob("*/events.*"))


@pytest.mark.parametrize("how", ["ctrl_c", "sigterm"])
def test_rl_interrupt_saves_the_resumable_state(tmp_path, how):
    out = tmp_path / "run"
    cmd = Command(_rl_args(out), tmp_path)
    cmd.wait_for_workers(2)
    cmd.wait_until("PPO learning", lambda: _rl_learning(out))
    time.sleep(1.0)  # a few rollouts
    if how == "ctrl_c":
        cmd.ctrl_c()
    else:
        cmd.send(signal.SIGTERM)
    line = cmd.check_clean_exit(130 if how == "ctrl_c" else 143, quiet_before=False)
    word = "interrupted" if how == "ctrl_c" else "terminated"
    assert line.startswith(f"{word}: saved last.json/.safetensors and the training state"), line
    assert "--resume" in line
    cmd.seconds_until_gone()
    state = json.loads((out / "train_state.json").read_text())
    assert f"at step {state['num_timesteps']} " in line
    assert (out / "last.json").exists() and (out / "last.safetensors").exists()


# --------------------------------------------------------------------------- leaderboard
def _leaderboard(tmp_path: Path) -> Command:
    return Command(
        ["-m", "evaluation.leaderboard", "--preset", "tiny", "--workers", "2"]
        + ["--out", str(tmp_path / "lb")],
        tmp_path,
    )


def _said(cmd: Command, text: str) -> bool:
    return any(text in s for _, s in cmd.out)


def test_leaderboard_sigterm_while_recording(tmp_path):
    cmd = _leaderboard(tmp_path)
    cmd.wait_until("recording", lambda: _said(cmd, "[1/4]"))
    cmd.wait_for_workers(2)
    time.sleep(0.5)
    cmd.send(signal.SIGTERM)
    line = cmd.check_clean_exit(143)
    assert line.startswith("terminated: finished steps kept"), line
    cmd.seconds_until_gone()
    for data in (tmp_path / "lb" / "data").iterdir():
        _check_dataset(data)


@pytest.mark.slow
@pytest.mark.parametrize("stage, how", [("[2/4]", "sigterm"), ("[3/4]", "ctrl_c")])
def test_leaderboard_signal_while_training_or_evaluating(tmp_path, stage, how):
    cmd = _leaderboard(tmp_path)
    cmd.wait_until(stage, lambda: _said(cmd, stage), 240)
    cmd.wait_for_workers(2)
    time.sleep(1.0)
    if how == "ctrl_c":
        cmd.ctrl_c()
    else:
        cmd.send(signal.SIGTERM)
    # The training stage logs (warnings) on stderr before the signal.
    line = cmd.check_clean_exit(130 if how == "ctrl_c" else 143, quiet_before=False)
    assert "finished steps kept" in line, line
    cmd.seconds_until_gone()


# --------------------------------------------------------------------------- more commands
@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "ds"
    args = _record_args(out, episodes=2)
    subprocess.run(
        [sys.executable, *args], check=True, capture_output=True, env=_env(), timeout=120
    )
    return out


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _said_err(cmd: Command, text: str) -> bool:
    return any(text in s for _, s in cmd.err)


@pytest.mark.slow
def test_train_ctrl_c_keeps_finished_epochs(tmp_path, small_dataset):
    out = tmp_path / "run"
    cmd = Command(
        ["-m", "training.train", "--data", str(small_dataset), "--out", str(out)]
        + ["--epochs", "500", "--device", "cpu", "--no-progress"],
        tmp_path,
    )
    cmd.wait_until("an epoch", lambda: (out / "last.json").exists(), 120)
    cmd.ctrl_c()
    line = cmd.check_clean_exit(130, quiet_before=False)
    assert line == "interrupted: checkpoints of finished epochs kept; --resume continues"
    cmd.seconds_until_gone()
    json.loads((out / "last.json").read_text())  # whole


@pytest.mark.slow
def test_search_ctrl_c(tmp_path, small_dataset):
    cmd = Command(
        ["-m", "training.search", "--data", str(small_dataset), "--out", str(tmp_path / "s")]
        + ["--trials", "5", "--epochs", "50", "--device", "cpu"],
        tmp_path,
    )
    cmd.wait_until("a trial", lambda: _said_err(cmd, "trial 0"), 120)
    time.sleep(1.0)
    cmd.ctrl_c()
    # Its progress bars are on stderr: the line comes after them, on a line of its own.
    cmd.finish()
    assert cmd.proc.returncode == 130, cmd.text()
    assert "Traceback" not in cmd.text()
    last = cmd.stderr_lines()[-1]
    assert last == "interrupted: finished trials kept in the study; rerun to continue", last
    cmd.seconds_until_gone()


@pytest.mark.slow
def test_drive_ctrl_c_writes_the_recording(tmp_path):
    pytest.importorskip("pygame")
    out = tmp_path / "manual"
    cmd = Command(
        ["-m", "sim.drive", "--out", str(out), "--record", "--autopilot"]
        + ["--image-size", "24x32", "--fps", "0"],
        tmp_path,
        env={"SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy"},
    )
    cmd.wait_until("driving", lambda: _said_err(cmd, BANNER), 60)
    time.sleep(2.0)
    cmd.ctrl_c()
    assert cmd.check_clean_exit(130) == "interrupted: what was recorded is written to --out"
    cmd.seconds_until_gone()
    assert _check_dataset(out) == 1


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, ready",
    [
        (["agents.expert", "--laps", "100", "--tracks", "oval", "--directions", "ccw"], "speed"),
        (["sim.bench", "--envs", "2", "--steps", "30", "--repeats", "30"], "vector workers"),
        (["sim.dataset", "bench", "--frames", "100000"], None),
        (["training.bench", "--device", "cpu", "--min-seconds", "3"], None),
    ],
    ids=["agents.expert", "sim.bench", "sim.dataset", "training.bench"],
)
def test_long_running_command_ctrl_c(tmp_path, args, ready):
    cmd = Command(["-m", *args], tmp_path)
    if ready == "vector workers":  # fork-context AsyncVectorEnv workers
        cmd.wait_until("vector workers", lambda: len(cmd.children()) >= 3, 120)
    elif ready:
        cmd.wait_until(ready, lambda: _said(cmd, ready), 60)
    else:
        time.sleep(3.0)
    time.sleep(1.0)
    cmd.ctrl_c()
    assert cmd.check_clean_exit(130) == "interrupted"
    cmd.seconds_until_gone()


_AT_START = """
import os, runpy, signal, sys
import tracks.cli

run_main = tracks.cli.run_main

def ctrl_c_at_start(main, *args, **kwargs):
    def interrupted(*a):
        os.killpg(os.getpgrp(), signal.SIGINT)  # a real Ctrl-C, taken inside main
        return main(*a)
    return run_main(interrupted, *args, **kwargs)

tracks.cli.run_main = ctrl_c_at_start
sys.argv = [sys.argv[1], *sys.argv[2:]]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""

_ENTRY_POINTS = [
    "agents.expert",
    "agents.export",
    "evaluation.bench",
    "evaluation.cars",
    "evaluation.evaluate",
    "evaluation.leaderboard",
    "evaluation.profile",
    "evaluation.report",
    "sim.bench",
    "sim.dataset",
    "sim.drive",
    "sim.record",
    "tracks",
    "tracks.plot",
    "training.bench",
    "training.dagger",
    "training.diagnose",
    "training.evaluate",
    "training.gpu_report",
    "training.relabel",
    "training.rl",
    "training.search",
    "training.train",
]


@pytest.mark.slow
@pytest.mark.parametrize("module", _ENTRY_POINTS)
def test_every_entry_point_ctrl_c_in_main(tmp_path, module):
    """Every command under ``python -m``: a Ctrl-C once main runs gives 130 and one line."""
    (tmp_path / "at_start.py").write_text(_AT_START)
    cmd = Command(["at_start.py", module, "--help-not-parsed-yet"], tmp_path)
    cmd.signalled_at = time.monotonic()
    line = cmd.check_clean_exit(130)
    assert line.startswith("interrupted"), line
    cmd.seconds_until_gone()


# --------------------------------------------------------------------------- the helper
_PROG = """
import sys, threading, time
from tracks.cli import run_main

def main():
    if "hang-at-exit" in sys.argv:  # a non-daemon thread: the interpreter waits for it
        threading.Thread(target=time.sleep, args=(60,)).start()
    print("ready", flush=True)
    try:
        if "in-exec" in sys.argv:  # as dataclasses and namedtuple build their methods
            exec("import time; time.sleep(60)")
        time.sleep(60)
    finally:
        if "slow-cleanup" in sys.argv:
            print("cleaning up", flush=True)
            time.sleep(60)
    return 0

raise SystemExit(run_main(main, note="kept what was done", exit_grace_s=2.0))
"""


@pytest.mark.parametrize(
    "how, rc, line",
    [
        ("ctrl_c", 130, "interrupted: kept what was done"),
        ("sigterm", 143, "terminated: kept what was done"),
        ("slow-cleanup", 130, "interrupted: kept what was done"),
        ("hang-at-exit", 130, "interrupted: kept what was done"),
        ("in-exec", 130, "interrupted: kept what was done"),
    ],
)
def test_run_main_gives_one_line_and_the_exit_status(tmp_path, how, rc, line):
    (tmp_path / "prog.py").write_text(_PROG)
    cmd = Command(["-m", "prog", how], tmp_path)  # -m: the exit path of every CLI
    cmd.wait_until("ready", lambda: any("ready" in s for _, s in cmd.out), 20)
    if how == "sigterm":
        cmd.send(signal.SIGTERM)
    else:
        cmd.ctrl_c()
    if how == "slow-cleanup":  # a second Ctrl-C cuts the cleanup short
        cmd.wait_until("cleanup", lambda: any("cleaning" in s for _, s in cmd.out), 20)
        cmd.ctrl_c()
    assert cmd.check_clean_exit(rc) == line
    assert cmd.seconds_until_gone(5.0) < (4.0 if how == "hang-at-exit" else 2.0)


def test_every_command_line_ends_through_run_main():
    """Each ``python -m`` entry point's last statement is ``raise SystemExit(run_main(main...))``."""
    import ast

    mains = entry_points()
    for path in mains.values():
        rel = path.relative_to(ROOT)
        last = ast.parse(path.read_text()).body[-1]
        if isinstance(last, ast.If):
            last = last.body[-1]
        call = last.exc if isinstance(last, ast.Raise) else None
        assert (
            isinstance(call, ast.Call)
            and call.args
            and isinstance(call.args[0], ast.Call)
            and getattr(call.args[0].func, "id", None) == "run_main"
        ), f"{rel}: its last line should be raise SystemExit(run_main(main))"
    assert set(mains) == set(_ENTRY_POINTS)
