"""Progress bars: drawn on a terminal, quiet (one summary line at most) in logs and pipes."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests._sources import REPO, project_sources
from tracks.progress import QuietBar, progress_bar

PYBULLET_BANNER = re.compile(r"^pybullet build time: ")  # printed by pybullet's import


def own_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line and not PYBULLET_BANNER.match(line)]


def test_a_bar_that_stays_writes_one_summary_line_when_not_a_terminal() -> None:
    log = io.StringIO()  # not a terminal
    with progress_bar(total=3, desc="recording", unit="ep", file=log) as bar:
        assert isinstance(bar, QuietBar)
        for _ in range(3):
            bar.update(1)
            bar.set_postfix(frames=10 * bar.n)
    assert re.fullmatch(r"recording: 3/3 ep in \d+\.\d s, frames=30\n", log.getvalue())
    bar.close()  # closing twice writes nothing more
    assert log.getvalue().count("\n") == 1


def test_transient_and_disabled_bars_write_nothing() -> None:
    log = io.StringIO()
    items = list(progress_bar(range(5), desc="epoch 1/3", leave=False, file=log))
    assert items == [0, 1, 2, 3, 4]
    with progress_bar(total=2, desc="runs", enabled=False, file=log) as bar:
        bar.update(2)
    assert log.getvalue() == ""


def test_a_bar_closed_by_an_interrupt_or_error_writes_nothing() -> None:
    """Ctrl-C and errors end a command with one line of their own."""
    log = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        with progress_bar(total=5, desc="recording", file=log) as bar:
            bar.update(2)
            raise KeyboardInterrupt
    bar = progress_bar(total=5, desc="training", file=log)
    try:
        raise ValueError("diverged")
    except ValueError:
        bar.close()  # as training.rl closes its bar when interrupted
    assert log.getvalue() == ""


def test_a_wrapped_iterable_is_counted_for_the_summary() -> None:
    log = io.StringIO()
    bar = progress_bar(iter("abcd"), desc="validate", unit="ep", file=log)
    assert "".join(bar) == "abcd"
    bar.close()
    assert log.getvalue().startswith("validate: 4 ep in ")  # no total: a generator


def test_a_terminal_gets_a_real_bar() -> None:
    """stderr on a pseudo-terminal: tqdm draws (carriage returns, the count)."""
    pty = pytest.importorskip("pty")
    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    # A terminal has a size (a fresh pseudo-terminal's is 0x0, where tqdm draws nothing).
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    code = "from tracks.progress import progress_bar\nfor _ in progress_bar(range(40), desc='tty'): pass\n"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=60) == 0
    out = b"".join(chunks).decode(errors="replace")
    assert "\r" in out and "tty: " in out and "40/40" in out


def test_record_into_a_pipe_writes_no_bar(tmp_path, run_module) -> None:
    proc = run_module("sim.record", "--tracks", "oval", "--directions", "ccw", "--laps", "1",
                   "--episodes", "1", "--image-size", "32x40", "--workers", "1",
                   "--out", str(tmp_path / "ds"), cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr
    lines = own_lines(proc.stderr)
    assert len(lines) == 1 and re.match(r"recording: 1/1 ep in \d+\.\d s, frames=\d+$", lines[0])


def test_evaluate_into_a_pipe_writes_no_bar(tmp_path, run_module) -> None:
    proc = run_module("evaluation.evaluate", "expert", "--tracks", "oval", "--directions", "ccw",
                   "--laps", "1", "--workers", "1", "--latency", "0", "--db", "none",
                   cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr and "run/s" not in proc.stderr
    assert own_lines(proc.stderr) == ["1 rows not stored (--db none)"]


def test_every_bar_goes_through_the_helper() -> None:
    """Only tracks/progress.py imports tqdm: no bar can bypass the terminal check."""
    offenders = []
    for path in project_sources():
        rel = path.relative_to(REPO)
        if rel == Path("tracks/progress.py"):
            continue
        text = path.read_text(encoding="utf-8")
        if re.search(r"^\s*(from tqdm|import tqdm)", text, flags=re.M):
            offenders.append(str(rel))
    assert offenders == []
