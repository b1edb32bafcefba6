"""Data-parallel training under torchrun (gloo, CPU): batch sharding, synchronised batch
norm, the loss curve against one process, rank-0-only outputs, resume, bad input; and the
GPU-path settings that run on the CPU (bf16 autocast, channels_last)."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sim.pool import pdeathsig_preexec
from training.augment import AugmentParams, apply_augment, augment_batch, draw_augment
from training.config import TrainConfig
from training.distributed import DistContext, environment
from training.errors import RunError
from training.hardware import autocast_dtype, channels_last_for
from training.synthetic import make_synthetic_dataset
from training.train import main as train_main

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
BN_WORKER = Path(__file__).with_name("_ddp_batchnorm_worker.py")
# Tiny runs: dropout 0, so the only randomness is the seeded batch order and augmentation,
# which every process reproduces; batch 32 = 2 x 16.
TINY = ["--input-size", "32x40", "--batch-size", "32", "--no-progress", "--threads", "1",
        "--dropout", "0"]  # fmt: skip
CURVE = ("train_loss", "train_mae", "dev_loss", "dev_mae", "dev_mse", "flip_consistency")
#: Relative tolerance of a DDP loss curve against one process's. Both compute the same
#: numbers in float32 in another order: the gradient is summed by an all-reduce of two
#: half-batch gradients instead of over one batch, and batch-norm statistics are combined
#: from two halves; each step's difference is float32 rounding (~1e-7 relative), which
#: Adam carries into the next steps. Over 3 epochs here it stays below 1e-6 (measured
#: 2.6e-7); 1e-4 leaves room for other CPUs while a real mismatch (a wrong shard, one
#: augmentation draw off, unsynchronised batch norm: up to 19% in train loss) cannot pass.
RTOL = 1e-4


@pytest.fixture(scope="module")
def syn_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "syn"
    make_synthetic_dataset(root, episodes=6, frames=60, size=(32, 40), seed=0)
    return root


def torchrun(
    *args: str | Path, nproc: int = 2, timeout: float = 240
) -> subprocess.CompletedProcess:
    """A real torchrun job on this machine (gloo on the CPU); it dies with the test."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc-per-node", str(nproc), *map(str, args)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT,
        preexec_fn=pdeathsig_preexec(signal.SIGKILL),
    )  # fmt: skip


def curve(run_dir: Path) -> list[dict[str, float]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: float(r[k]) for k in ("epoch", *CURVE)} for r in csv.DictReader(f)]


def assert_same_curve(a: list[dict], b: list[dict], rtol: float = RTOL) -> float:
    """Same epochs, every curve value within ``rtol``; returns the largest relative gap."""
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b]
    worst = 0.0
    for ra, rb in zip(a, b, strict=True):
        for k in CURVE:
            gap = abs(ra[k] - rb[k]) / max(abs(ra[k]), 1e-12)
            worst = max(worst, gap)
            assert gap <= rtol, f"epoch {ra['epoch']} {k}: {ra[k]} vs {rb[k]} (gap {gap:.2e})"
    return worst


# --------------------------------------------------------------------------- units
def test_shard_assigns_frames_as_distributed_sampler_does() -> None:
    from torch.utils.data.distributed import DistributedSampler

    batch = torch.randperm(100, generator=torch.Generator().manual_seed(0))[:12]
    parts = []
    for rank in range(3):
        local, pos = DistContext(rank=rank, world_size=3).shard(batch)
        sampler = DistributedSampler(range(12), num_replicas=3, rank=rank, shuffle=False)
        assert pos.tolist() == list(sampler)
        assert torch.equal(local, batch[pos])
        parts.append(pos)
    assert sorted(torch.cat(parts).tolist()) == list(range(12))
    alone, pos = DistContext().shard(batch)
    assert pos is None and torch.equal(alone, batch)


def test_chunks_cover_every_frame_once() -> None:
    for n in (0, 1, 7, 10):
        spans = [DistContext(rank=r, world_size=3).chunk(n) for r in range(3)]
        assert spans[0][0] == 0 and spans[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
        assert max(b - a for a, b in spans) - min(b - a for a, b in spans) <= 1


def test_a_shard_is_augmented_as_in_the_whole_batch() -> None:
    params = AugmentParams(flip=True, jitter=0.3, colour=0.1, shadow=0.7, shift=0.2)
    x = torch.rand(10, 3, 12, 16)
    steering = torch.linspace(-0.8, 0.8, 10)
    whole = augment_batch(x, steering, params, torch.Generator().manual_seed(5))
    draws = draw_augment(10, 16, params, torch.Generator().manual_seed(5))
    for rank in range(3):
        _, pos = DistContext(rank=rank, world_size=3).shard(torch.arange(10))
        part = apply_augment(x[pos], steering[pos], params, draws.select(pos))
        for got, want in zip(part, whole, strict=True):
            torch.testing.assert_close(got, want[pos], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="4 augmentation draws for a batch of 10"):
        apply_augment(x, steering, params, draws.select(torch.arange(4)))


def test_torchrun_environment_is_read_and_checked(monkeypatch) -> None:
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert environment() == DistContext()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    ctx = environment()
    assert (ctx.rank, ctx.world_size, ctx.enabled, ctx.is_main) == (1, 4, True, False)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(RunError, match="RANK must be in 0..3"):
        environment()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(RunError, match="WORLD_SIZE='two' is not an integer"):
        environment()


def test_gpu_path_settings_resolve_for_the_device() -> None:
    cpu = torch.device("cpu")
    assert autocast_dtype("auto", True, cpu) is None  # fp32 on the CPU
    assert autocast_dtype("bf16", True, cpu) is torch.bfloat16
    assert autocast_dtype("fp32", True, cpu) is None
    with pytest.raises(RunError, match="fp16 needs a CUDA device"):
        autocast_dtype("fp16", True, cpu)
    assert channels_last_for("auto", cpu) is False
    assert channels_last_for("on", cpu) is True
    assert channels_last_for("auto", torch.device("cuda")) is True
    with pytest.raises(ValueError, match="--no-amp contradicts precision bf16"):
        TrainConfig(amp=False, precision="bf16")
    with pytest.raises(ValueError, match="frames_on_device must be one of"):
        TrainConfig(frames_on_device="yes")
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(precision="fp8")


# --------------------------------------------------------------------------- processes
def test_sync_batch_norm_over_two_processes_is_batch_norm_of_the_whole_batch(tmp_path) -> None:
    proc = torchrun(BN_WORKER, tmp_path, nproc=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sys.path.insert(0, str(BN_WORKER.parent))
    try:
        import _ddp_batchnorm_worker as w
    finally:
        sys.path.pop(0)
    net = w.layers().train()
    x2, x1, w2, w1 = w.inputs()
    x2.requires_grad_(True)
    x1.requires_grad_(True)
    y2, y1, loss = w.loss_of(net, x2, x1, w2, w1)
    loss.backward()
    ranks = [load_file(tmp_path / f"rank{r}.safetensors") for r in range(2)]
    assert all(r["kinds"].all() for r in ranks)  # both layers were converted
    tol = {"rtol": 1e-5, "atol": 1e-6}
    for r in ranks:
        i = r["index"]
        torch.testing.assert_close(r["y2"], y2.detach()[i], **tol)
        torch.testing.assert_close(r["y1"], y1.detach()[i], **tol)
        torch.testing.assert_close(r["gx2"], x2.grad[i], **tol)
        torch.testing.assert_close(r["gx1"], x1.grad[i], **tol)
        for name, m in net.items():  # identical running statistics on every process
            torch.testing.assert_close(r[f"{name}.running_mean"], m.running_mean, **tol)
            torch.testing.assert_close(r[f"{name}.running_var"], m.running_var, **tol)
    for name, m in net.items():
        torch.testing.assert_close(
            ranks[0][f"{name}.gw"] + ranks[1][f"{name}.gw"], m.weight.grad, **tol
        )
        torch.testing.assert_close(
            ranks[0][f"{name}.gb"] + ranks[1][f"{name}.gb"], m.bias.grad, **tol
        )


def test_ddp_loss_curve_matches_one_process_and_rank_0_alone_writes(tmp_path, syn_data) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    assert train_main(["--data", str(syn_data), "--out", str(one), "--epochs", "2", *TINY]) == 0
    t0 = time.monotonic()
    proc = torchrun(
        "-m", "training.train", "--data", syn_data, "--out", two, "--epochs", "2", *TINY
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert time.monotonic() - t0 < 200
    worst = assert_same_curve(curve(one), curve(two))
    assert worst < RTOL
    # The weights agree too (the same tolerance argument).
    a, b = load_file(one / "best.safetensors"), load_file(two / "best.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-3, atol=1e-5)
    # Rank 0 alone wrote and printed: one TensorBoard file, one summary, one log.
    assert len(list((two / "tb").iterdir())) == 1
    assert proc.stdout.count(f"wrote {two}") == 1
    assert proc.stderr.count("epoch   1  train loss") == 1
    assert "2 processes of 16 frames per batch" in proc.stderr
    # images/s in metrics.csv counts the global batch (both processes' frames).
    with open(two / "metrics.csv", newline="") as f:
        assert all(float(r["images_per_second"]) > 0 for r in csv.DictReader(f))


@pytest.mark.slow
def test_ddp_resume_continues_a_run_and_unsynchronised_batch_norm_departs(
    tmp_path, syn_data
) -> None:
    # One process, 3 epochs, against: 2 epochs in one process, then --resume under torchrun
    # with 2 processes for the 3rd (the global batch does not depend on the process count).
    full, resumed, nosync = tmp_path / "full", tmp_path / "resumed", tmp_path / "nosync"
    assert train_main(["--data", str(syn_data), "--out", str(full), "--epochs", "3", *TINY]) == 0
    assert train_main(["--data", str(syn_data), "--out", str(resumed), "--epochs", "2", *TINY]) == 0
    proc = torchrun("-m", "training.train", "--out", resumed, "--data", syn_data,
                    "--resume", "--epochs", "3", "--no-progress")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming" in proc.stderr
    assert_same_curve(curve(full), curve(resumed))
    # Without synchronised batch norm each process normalises with its half batch: the
    # curve departs by far more than the tolerance (what sync_batch_norm is for).
    proc = torchrun("-m", "training.train", "--data", syn_data, "--out", nosync, "--epochs", "3",
                    "--no-sync-batch-norm", *TINY)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    with pytest.raises(AssertionError):
        assert_same_curve(curve(full), curve(nosync), rtol=1e-3)


def assert_rank_0_failed_alone(proc: subprocess.CompletedProcess, line: str) -> None:
    """One error line, from rank 0, which torchrun names as the root cause; no traceback of
    ours (torchrun prints its own ChildFailedError report)."""
    assert proc.returncode != 0
    assert proc.stderr.count(line) == 1, proc.stderr[-3000:]
    cause = proc.stderr.split("Root Cause")[1]
    assert "rank      : 0" in cause and "exitcode  : 2" in cause, proc.stderr[-3000:]
    ours = [ln for ln in proc.stderr.splitlines() if "/training/" in ln or "/tracks/" in ln]
    assert not ours, ours


@pytest.mark.slow
def test_ddp_bad_input_is_one_error_line_from_rank_0(tmp_path, syn_data) -> None:
    proc = torchrun("-m", "training.train", "--data", syn_data, "--out", tmp_path / "r",
                    "--epochs", "1", *TINY[:2], "--batch-size", "33", "--no-progress")  # fmt: skip
    assert_rank_0_failed_alone(proc, "error: batch_size 33 is not divisible by the 2 processes")
    assert not (tmp_path / "r").exists()
    # A run directory that refuses the run: rank 0 finds it, every process stops.
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    proc = torchrun(
        "-m", "training.train", "--data", syn_data, "--out", busy, "--epochs", "1", *TINY
    )
    assert_rank_0_failed_alone(proc, "not empty and not a training run (notes.txt)")
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]


# --------------------------------------------------------------------------- GPU path on CPU
def test_bf16_autocast_on_cpu_trains_close_to_fp32(tmp_path, syn_data) -> None:
    runs = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        args = ["--data", str(syn_data), "--out", str(out), "--epochs", "3", *TINY]
        assert train_main([*args, "--precision", precision]) == 0
        runs[precision] = curve(out)
    fp32, bf16 = runs["fp32"], runs["bf16"]
    assert bf16[-1]["train_loss"] < 0.5 * bf16[0]["train_loss"]  # it trains
    assert bf16 != fp32  # and really ran in bf16
    # bf16 keeps 8 bits of mantissa (~0.4% per rounding): the curves drift apart a little,
    # epoch by epoch (measured after 3 epochs: 2.6% train loss, 5.8% dev loss, 3.3% dev
    # MAE); 15% is far inside what training moves them (epoch 1's train loss is ~10x the
    # last's), so a run that did not learn in bf16 cannot pass.
    for k in ("train_loss", "dev_loss", "dev_mae"):
        assert bf16[-1][k] == pytest.approx(fp32[-1][k], rel=0.15), k


def test_channels_last_on_cpu_matches_the_default_layout(tmp_path, syn_data) -> None:
    base, nhwc = tmp_path / "nchw", tmp_path / "nhwc"
    args = ["--data", str(syn_data), "--epochs", "2", *TINY]
    assert train_main([*args, "--out", str(base)]) == 0
    assert train_main([*args, "--out", str(nhwc), "--channels-last", "on"]) == 0
    # The same model in another memory layout: oneDNN then picks other convolution kernels,
    # which sum in another order (measured: up to 1.7e-4 relative over 2 epochs, and not
    # the same from run to run). 1e-2 still fails a layout mistake (a transposed or
    # mis-strided batch trains another model: tens of percent).
    assert_same_curve(curve(base), curve(nhwc), rtol=1e-2)
    # The checkpoint is saved in the usual layout and loads into a plain model.
    from agents.cnn import load_pilot

    pilot = load_pilot(nhwc)
    frame = np.zeros((32, 40, 3), dtype=np.uint8)
    assert np.isfinite(pilot.act(frame, {})).all()
