"""``python -m training.gpu_report``: measure the GPU path in a bounded time, one report.

    python -m training.gpu_report --out DIR [--budget-s 540] [--stages bench,leaderboard,ddp]
    python -m training.gpu_report --out DIR --dry-run      # no GPU: tiny CPU settings

A prepared script for whoever gets a GPU machine for a few minutes. Stages, each run as
child processes with a deadline taken from ``--budget-s`` (a stage gets its share of what
is left, so time one stage does not use passes to the next; a child still running at its
deadline is stopped with its whole process group and the stage reports what it finished):

1. **environment**: torch and CUDA versions, every GPU (name, memory, bf16), CPU count.
2. **bench**: ``python -m training.bench --json`` at each ``--batch-sizes`` value, in the
   run's default precision (``auto``: bf16, or fp16 with a scaler) with ``channels_last``,
   then in fp32, then once with the frames in pinned host memory instead of GPU memory.
3. **leaderboard**: ``python -m evaluation.leaderboard --preset full --device cuda`` with
   the time of each step ([1/4] record ... [4/4] reports, from the time its progress lines
   appear), each model's training time and the closed-loop run counts. The leaderboard
   keeps finished steps in ``DIR/leaderboard``: a second call continues where a cut one
   stopped.
4. **ddp**: a synthetic dataset, then ``torchrun --nproc-per-node N -m training.train``
   for N = 1 and every visible GPU: training images/s (from ``metrics.csv``, the global
   batch) and the speed-up.

``DIR/gpu_report.json`` and ``DIR/gpu_report.md`` are rewritten after every stage, so a
run stopped from outside still leaves the stages it finished; ``DIR/logs/`` keeps each
child's output. Without a CUDA GPU the report says so on its first line and the command
exits 1, unless ``--dry-run``, which runs every stage on the CPU with tiny settings (the
figures then only prove that the script works end to end).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracks.cli import run_main
from tracks.cliargs import add_config_args, config_from_args
from tracks.common import now_iso
from tracks.fileio import atomic_write_json, atomic_write_text
from tracks.outputs import check_output_dir, os_error_line
from training.cli import Parser, fail

__all__ = ["STAGES", "GpuReportConfig", "main", "run_report"]

STAGES = ("bench", "leaderboard", "ddp")
#: Each stage's share of the budget left when it starts (relative to the stages after it).
WEIGHTS = {"bench": 0.3, "leaderboard": 0.45, "ddp": 0.25}
#: Seconds a stopped child's process group has after SIGTERM before SIGKILL.
STOP_GRACE_S = 5.0
#: No child is started with less than this many seconds left in its stage.
MIN_CHILD_S = 10.0
REPORT_VERSION = 1


@dataclass(frozen=True)
class GpuReportConfig:
    """What ``python -m training.gpu_report`` measures, and in how long."""

    out: str = ""  # report directory (gpu_report.json, gpu_report.md, logs/, runs); required
    budget_s: float = 540.0  # wall-clock limit for all stages together, seconds
    dry_run: bool = field(
        default=False,
        metadata={
            "help": "no GPU needed: every stage on the CPU with tiny settings (the compact "
            "model at batch 16 and 32, the tiny preset, DDP with 1 and 2 CPU processes for "
            "2 epochs, unless given)"
        },
    )
    stages: tuple[str, ...] = field(
        default=STAGES, metadata={"help": f"stages to run, in order: {','.join(STAGES)}"}
    )
    batch_sizes: tuple[int, ...] = (64, 128, 256, 512)  # training.bench batch sizes
    models: tuple[str, ...] = ("compact", "pilotnet", "resnet_cls")  # training.bench models
    ddp_model: str = "compact"  # the model DDP trains
    ddp_batch_size: int = 256  # DDP's global batch (divisible by every process count)
    ddp_epochs: int = 3  # DDP epochs; images/s is the median of the epochs after the first
    ddp_episodes: int = 16  # synthetic episodes for DDP
    ddp_frames: int = 1000  # frames per synthetic episode (120x160)
    workers: int | None = None  # leaderboard processes; none: all cores
    seed: int = 0  # seed of the synthetic dataset, the leaderboard and the DDP runs

    def __post_init__(self) -> None:
        if not (0 < self.budget_s <= 7 * 86_400):
            raise ValueError(f"budget_s must be in (0, 604800], got {self.budget_s}")
        stages = tuple(self.stages)
        bad = [s for s in stages if s not in STAGES]
        if bad or not stages or len(set(stages)) != len(stages):
            raise ValueError(
                f"stages must be distinct names from {list(STAGES)}, got {list(stages)}"
            )
        object.__setattr__(self, "stages", stages)
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ValueError(f"batch_sizes must be >= 1, got {list(self.batch_sizes)}")
        from agents.models import ARCHITECTURES

        unknown = [m for m in (*self.models, self.ddp_model) if m not in ARCHITECTURES]
        if unknown or not self.models:
            raise ValueError(f"unknown models {unknown}; choose from {list(ARCHITECTURES)}")
        if self.ddp_batch_size < 1 or self.ddp_epochs < 1:
            raise ValueError("ddp_batch_size and ddp_epochs must be >= 1")
        if self.ddp_episodes < 2 or self.ddp_frames < 4:
            raise ValueError("ddp_episodes must be >= 2 and ddp_frames >= 4")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")


# --------------------------------------------------------------------------- children
@dataclass
class ChildRun:
    """One child process: its command, outcome and timestamped output lines."""

    name: str
    cmd: list[str]
    status: int | None = None  # exit status; None: stopped at its deadline
    seconds: float = 0.0
    lines: list[tuple[float, str]] = field(default_factory=list)  # (seconds from start, line)

    @property
    def ok(self) -> bool:
        return self.status == 0

    @property
    def stdout(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def summary(self) -> dict[str, Any]:
        tail = [line for _, line in self.lines if line.strip()][-3:]
        out: dict[str, Any] = {"command": " ".join(self.cmd), "seconds": round(self.seconds, 1)}
        out["status"] = "timed out" if self.status is None else self.status
        if not self.ok:
            out["last_lines"] = tail
        return out


def run_child(name: str, cmd: list[str], timeout_s: float, log_dir: Path) -> ChildRun:
    """Run ``cmd`` for at most ``timeout_s`` seconds, stdout and stderr merged, each line
    timestamped and logged to ``log_dir/NAME.log``.

    The child leads a new process group (so a stop reaches torchrun's or a pool's workers)
    and gets SIGKILL if this process dies; at the deadline, or on Ctrl-C here, the group
    gets SIGTERM, then SIGKILL after :data:`STOP_GRACE_S`.
    """
    from sim.pool import pdeathsig_preexec

    run = ChildRun(name, cmd)
    log_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with open(log_dir / f"{name}.log", "w", encoding="utf-8") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, errors="replace", start_new_session=True,
            preexec_fn=pdeathsig_preexec(signal.SIGKILL),
        )  # fmt: skip

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                run.lines.append((time.monotonic() - t0, line.rstrip("\n")))
                log.write(line)
                log.flush()

        reader = threading.Thread(target=read, name=f"read-{name}", daemon=True)
        reader.start()
        try:
            run.status = proc.wait(timeout=max(timeout_s, 0.1))
        except subprocess.TimeoutExpired:
            run.status = None
            log.write(f"\n[gpu_report: stopped after {timeout_s:.0f} s, its stage's deadline]\n")
        finally:
            _stop_group(proc)
            reader.join(timeout=STOP_GRACE_S)
    run.seconds = time.monotonic() - t0
    return run


def _stop_group(proc: subprocess.Popen) -> None:
    """Whatever is left of the child's process group: SIGTERM, then SIGKILL once the child
    has exited or :data:`STOP_GRACE_S` have passed."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=STOP_GRACE_S)


def _python(*args: str) -> list[str]:
    return [sys.executable, *args]


# --------------------------------------------------------------------------- stages
def environment() -> dict[str, Any]:
    """torch, CUDA and every visible GPU."""
    import torch

    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append(
                {
                    "index": i,
                    "name": p.name,
                    "memory_gib": round(p.total_memory / 2**30, 1),
                    "capability": f"{p.major}.{p.minor}",
                    "bf16": bool(torch.cuda.is_bf16_supported()),
                }
            )
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "gpus": gpus,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "host": platform.node(),
    }


class Deadline:
    """The stage's remaining seconds (and the whole budget's)."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    @property
    def left(self) -> float:
        return self.end - time.monotonic()


def stage_bench(cfg: GpuReportConfig, out: Path, deadline: Deadline) -> dict[str, Any]:
    """training.bench at every batch size: default precision, fp32, frames in host memory."""
    device = "cpu" if cfg.dry_run else "cuda"
    common = ["--device", device, "--models", ",".join(cfg.models), "--no-edge", "--json"]
    if cfg.dry_run:
        common += ["--size", "60x80", "--repeats", "1", "--min-seconds", "0.2", "--latency-runs", "3"]  # fmt: skip
    else:
        common += ["--repeats", "3", "--min-seconds", "0.5", "--latency-runs", "10"]
    # The run's default precision; a dry run tries bf16 autocast, which the CPU has too.
    default = "bf16" if cfg.dry_run else "auto"
    plan = [(b, default, "auto", "auto") for b in cfg.batch_sizes]
    plan += [(b, "fp32", "off", "auto") for b in cfg.batch_sizes]
    mid = sorted(cfg.batch_sizes)[len(cfg.batch_sizes) // 2]
    plan.append((mid, default, "auto", "off"))  # frames in pinned host memory
    rows, runs, skipped = [], [], []
    for b, precision, layout, on_device in plan:
        name = f"bench-b{b}-{precision}-{'host' if on_device == 'off' else 'device'}"
        if deadline.left < MIN_CHILD_S:
            skipped.append(name)
            continue
        cmd = _python("-m", "training.bench", *common, "--batch-size", str(b),
                      "--precision", precision, "--channels-last", layout,
                      "--frames-on-device", on_device)  # fmt: skip
        run = run_child(name, cmd, deadline.left, out / "logs")
        runs.append(run.summary())
        if not run.ok:
            continue
        doc = json.loads(run.stdout[run.stdout.index("{") :])
        for r in doc["results"]:
            rows.append(
                {
                    "model": r["model"],
                    "batch_size": r["batch_size"],
                    "input": "x".join(map(str, r["input_size"])),
                    "precision": r["precision"],
                    "channels_last": r["channels_last"],
                    "frames_on": r["frames_on"],
                    "train_images_per_s": round(r["train_images_per_s"], 1),
                    "augment_share": round(r["augment_share"], 4),
                    "latency_ms_median": round(r["latency_ms_median"], 3),
                }
            )
    status = "done" if not skipped and all(r["status"] == 0 for r in runs) else "partial"
    return {"status": status, "results": rows, "runs": runs, "skipped": skipped}


_STEP = re.compile(r"^\[(\d)/4\] (.*)")
_TRAINED = re.compile(r"^\s+(\S+): trained in (\d+) s")
_TOTAL = re.compile(r"^preset (\w+): (\d+) s in all \((.*)\)")
_RUNS = re.compile(r"^\s+(closed loop.*|latency sweep): (\d+) runs in (\d+) s")


def leaderboard_times(run: ChildRun) -> dict[str, Any]:
    """Step times of a leaderboard run from its output: between its ``[k/4]`` lines (so a
    run stopped midway still times the steps it finished), the per-model training times,
    the closed-loop run counts and its own final summary when it got there."""
    steps: list[tuple[str, float]] = []
    trained: dict[str, int] = {}
    runs: dict[str, dict[str, int]] = {}
    total = None
    names = {"1": "record", "2": "train", "3": "evaluate", "4": "report"}
    for t, line in run.lines:
        if m := _STEP.match(line):
            steps.append((names[m.group(1)], t))
        elif m := _TRAINED.match(line):
            trained[m.group(1)] = int(m.group(2))
        elif m := _RUNS.match(line):
            runs[m.group(1)] = {"runs": int(m.group(2)), "seconds": int(m.group(3))}
        elif m := _TOTAL.match(line):
            parts = dict(re.findall(r"(\w+) (\d+) s", m.group(3)))
            total = {"seconds": int(m.group(2)), **{k: int(v) for k, v in parts.items()}}
    times: dict[str, float | None] = {}
    for i, (name, t) in enumerate(steps):
        end = steps[i + 1][1] if i + 1 < len(steps) else (run.seconds if run.ok else None)
        times[name] = None if end is None else round(end - t, 1)
    return {
        "steps_s": times,
        "finished_steps": [n for n, v in times.items() if v is not None],
        "trained_s": trained,
        "closed_loop": runs,
        "own_summary": total,
    }


def stage_leaderboard(cfg: GpuReportConfig, out: Path, deadline: Deadline) -> dict[str, Any]:
    """The main job end to end with step times (``--preset full`` on CUDA)."""
    preset, device = ("tiny", "cpu") if cfg.dry_run else ("full", "cuda")
    workers = cfg.workers or (2 if cfg.dry_run else (os.cpu_count() or 1))
    cmd = _python("-m", "evaluation.leaderboard", "--preset", preset, "--device", device,
                  "--out", str(out / "leaderboard"), "--workers", str(workers),
                  "--seed", str(cfg.seed))  # fmt: skip
    if deadline.left < MIN_CHILD_S:
        return {"status": "skipped", "reason": "no budget left"}
    run = run_child("leaderboard", cmd, deadline.left, out / "logs")
    status = "done" if run.ok else ("cut by the budget" if run.status is None else "failed")
    doc = {"status": status, "preset": preset, "device": device, "workers": workers}
    doc.update(seconds=round(run.seconds, 1), run=run.summary(), **leaderboard_times(run))
    return doc


def stage_ddp(cfg: GpuReportConfig, out: Path, deadline: Deadline) -> dict[str, Any]:
    """torchrun training on 1 and on every GPU (dry run: 1 and 2 CPU processes, gloo)."""
    import torch

    from training.synthetic import make_synthetic_dataset

    if cfg.dry_run:
        counts, size, episodes, frames = [1, 2], (32, 40), 6, 60
        batch, model_args = 32, ["--input-size", "32x40", "--threads", "1"]
        device = "cpu"
    else:
        n = torch.cuda.device_count()
        counts = sorted({1, 2, n} if n > 2 else {1, n})
        size, episodes, frames = (120, 160), cfg.ddp_episodes, cfg.ddp_frames
        batch, model_args, device = cfg.ddp_batch_size, [], "cuda"
    data = out / "ddp-data"
    t0 = time.monotonic()
    if not (data / "manifest.json").is_file():
        make_synthetic_dataset(data, episodes=episodes, frames=frames, size=size, seed=cfg.seed)
    made_s = time.monotonic() - t0
    results, runs, skipped = [], [], []
    for n in counts:
        name = f"ddp-{n}"
        if batch % n:
            skipped.append(f"{name} (batch {batch} not divisible by {n})")
            continue
        if deadline.left < MIN_CHILD_S:
            skipped.append(name)
            continue
        run_dir = out / "ddp-runs" / name
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        cmd = _python("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n),
                      "-m", "training.train", "--data", str(data), "--out", str(run_dir),
                      "--model", cfg.ddp_model, "--batch-size", str(batch), "--device", device,
                      "--epochs", str(cfg.ddp_epochs), "--patience", str(cfg.ddp_epochs),
                      "--no-progress", "--no-tensorboard", "--seed", str(cfg.seed),
                      *model_args)  # fmt: skip
        run = run_child(name, cmd, deadline.left, out / "logs")
        runs.append(run.summary())
        if not run.ok:
            continue
        with open(run_dir / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        rates = [float(r["images_per_second"]) for r in rows if r["images_per_second"]]
        steady = rates[1:] or rates
        results.append(
            {
                "processes": n,
                "images_per_s": round(sorted(steady)[len(steady) // 2], 1),
                "images_per_s_epochs": [round(r, 1) for r in rates],
                "train_loss_last": float(rows[-1]["train_loss"]),
                "wall_s": round(run.seconds, 1),
            }
        )
    if results:
        one = next((r["images_per_s"] for r in results if r["processes"] == 1), None)
        for r in results:
            r["speedup"] = round(r["images_per_s"] / one, 2) if one else None
    status = "done" if not skipped and all(r["status"] == 0 for r in runs) else "partial"
    return {
        "status": status,
        "note": "one GPU: torchrun with 1 process only, no data parallelism to measure"
        if counts == [1]
        else None,
        "device": device,
        "model": cfg.ddp_model,
        "global_batch": batch,
        "dataset": {
            "episodes": episodes,
            "frames": frames,
            "size": list(size),
            "made_s": round(made_s, 1),
        },
        "results": results,
        "runs": runs,
        "skipped": skipped,
    }


STAGE_FUNCS = {"bench": stage_bench, "leaderboard": stage_leaderboard, "ddp": stage_ddp}


# --------------------------------------------------------------------------- report
def headline(doc: dict[str, Any]) -> str:
    gpus = doc["environment"]["gpus"]
    if doc["dry_run"]:
        return (
            "DRY RUN on the CPU (tiny settings): proves the script runs end to end; "
            "no figure here says anything about a GPU."
        )
    if not gpus:
        env = doc["environment"]
        return (
            f"NO GPU PRESENT: torch {env['torch']} sees no CUDA device, so the GPU path was "
            "not measured (--dry-run runs the stages on the CPU)."
        )
    names = ", ".join(f"{g['name']} ({g['memory_gib']} GiB)" for g in gpus)
    return f"{len(gpus)} GPU(s): {names}."


def render_markdown(doc: dict[str, Any]) -> str:
    env = doc["environment"]
    lines = [
        "# trackpilot GPU report",
        "",
        f"**{headline(doc)}**",
        "",
        f"Written {doc['created']} on `{env['host']}`: torch {env['torch']}, CUDA {env['cuda']}, "
        f"{env['cpu_count']} CPUs; budget {doc['budget_s']:.0f} s, used {doc['elapsed_s']:.0f} s.",
        f"Command: `{doc['command']}`",
    ]
    st = doc["stages"]
    if "bench" in st:
        b = st["bench"]
        lines += ["", f"## training.bench ({b['status']})", ""]
        if b.get("results"):
            lines += [
                "| model | input | batch | precision | channels_last | frames on | train img/s | augment share | batch-1 latency ms |",
                "|---|---|---:|---|---|---|---:|---:|---:|",
            ]
            for r in b["results"]:
                lines.append(
                    f"| {r['model']} | {r['input']} | {r['batch_size']} | {r['precision']} | "
                    f"{'on' if r['channels_last'] else 'off'} | {r['frames_on']} | "
                    f"{r['train_images_per_s']:,.0f} | {100 * r['augment_share']:.1f} % | "
                    f"{r['latency_ms_median']:.2f} |"
                )
        lines += _problems(b)
    if "leaderboard" in st:
        lb = st["leaderboard"]
        lines += ["", f"## evaluation.leaderboard ({lb['status']})", ""]
        if "steps_s" in lb:
            lines.append(
                f"`--preset {lb['preset']} --device {lb['device']} --workers {lb['workers']}`, "
                f"{lb['seconds']:.0f} s in all."
            )
            lines += ["", "| step | seconds |", "|---|---:|"]
            for k, v in lb["steps_s"].items():
                lines.append(f"| {k} | {'(unfinished)' if v is None else f'{v:.0f}'} |")
            if lb["trained_s"]:
                lines += ["", "Training time per model: " + ", ".join(
                    f"{k} {v} s" for k, v in lb["trained_s"].items())]  # fmt: skip
            for k, v in lb["closed_loop"].items():
                lines.append(f"{k}: {v['runs']} runs in {v['seconds']} s.")
        else:
            lines.append(lb.get("reason", ""))
        lines += _problems(lb)
    if "ddp" in st:
        d = st["ddp"]
        lines += ["", f"## DDP under torchrun ({d['status']})", ""]
        if d.get("results"):
            ds = d["dataset"]
            lines += [
                f"{d['model']}, global batch {d['global_batch']}, on {d['device']}; synthetic "
                f"{ds['episodes']} x {ds['frames']} frames at {ds['size'][0]}x{ds['size'][1]}.",
                "",
                "| processes | train img/s (global) | speed-up | wall s |",
                "|---:|---:|---:|---:|",
            ]
            for r in d["results"]:
                lines.append(
                    f"| {r['processes']} | {r['images_per_s']:,.0f} | {r['speedup']} | {r['wall_s']:.0f} |"
                )
        if d.get("note"):
            lines += ["", d["note"] + "."]
        lines += _problems(d)
    return "\n".join(lines) + "\n"


def _problems(stage: dict[str, Any]) -> list[str]:
    out = []
    for r in stage.get("runs", []) + ([stage["run"]] if "run" in stage else []):
        if r["status"] != 0:
            out.append(f"- `{r['command']}`: {r['status']} ({' / '.join(r.get('last_lines', []))})")
    for s in stage.get("skipped", []):
        out.append(f"- skipped: {s} (budget)" if "divisible" not in s else f"- skipped: {s}")
    return [""] + out if out else []


def write_report(out: Path, doc: dict[str, Any]) -> None:
    atomic_write_json(out / "gpu_report.json", doc)
    atomic_write_text(out / "gpu_report.md", render_markdown(doc))


#: What ``--dry-run`` starts from (flags typed still apply): one small model, two batches.
DRY_RUN = GpuReportConfig(dry_run=True, models=("compact",), batch_sizes=(16, 32), ddp_epochs=2)


def run_report(cfg: GpuReportConfig, command: str = "") -> dict[str, Any]:
    """Run the stages of ``cfg`` within its budget; returns the report (also written)."""
    if not cfg.out:
        raise ValueError("--out is required")
    out = check_output_dir(Path(cfg.out))
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    budget = Deadline(cfg.budget_s)
    doc: dict[str, Any] = {
        "format": "trackpilot-gpu-report",
        "version": REPORT_VERSION,
        "created": now_iso(),
        "command": command,
        "dry_run": cfg.dry_run,
        "budget_s": cfg.budget_s,
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(cfg).items()},
        "environment": environment(),
        "stages": {},
        "elapsed_s": 0.0,
    }
    doc["headline"] = headline(doc)
    gpu = bool(doc["environment"]["gpus"])
    for i, name in enumerate(cfg.stages):
        if not (gpu or cfg.dry_run):
            doc["stages"][name] = {"status": "skipped", "reason": "no GPU present"}
            continue
        later = sum(WEIGHTS[s] for s in cfg.stages[i:])
        deadline = Deadline(max(0.0, budget.left) * WEIGHTS[name] / later)
        t = time.monotonic()
        doc["stages"][name] = STAGE_FUNCS[name](cfg, out, deadline)
        doc["stages"][name]["stage_s"] = round(time.monotonic() - t, 1)
        doc["elapsed_s"] = round(time.monotonic() - t0, 1)
        write_report(out, doc)
    doc["elapsed_s"] = round(time.monotonic() - t0, 1)
    write_report(out, doc)
    return doc


def build_parser() -> argparse.ArgumentParser:
    ap = Parser(
        prog="python -m training.gpu_report",
        description="Measure the GPU path (bench, --preset full, DDP) in a bounded time.",
    )
    add_config_args(ap, GpuReportConfig)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        base = DRY_RUN if getattr(args, "dry_run", False) else None
        cfg = config_from_args(GpuReportConfig, args, base=base)
        doc = run_report(cfg, "python -m training.gpu_report " + " ".join(argv))
    except ValueError as e:
        return fail(e)
    except OSError as e:  # writing the report or a run's files (--out was checked first)
        return fail(os_error_line(e, cfg.out))
    print(doc["headline"])
    for name, st in doc["stages"].items():
        print(
            f"  {name}: {st['status']}" + (f" in {st['stage_s']:.0f} s" if "stage_s" in st else "")
        )
    print(f"wrote {Path(cfg.out) / 'gpu_report.md'} and gpu_report.json ({doc['elapsed_s']:.0f} s)")
    return 0 if (doc["environment"]["gpus"] or cfg.dry_run) else 1


if __name__ == "__main__":
    raise SystemExit(run_main(main, note="stages finished so far are in --out/gpu_report.md"))
