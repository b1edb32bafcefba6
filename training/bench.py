"""``python -m training.bench``: training throughput and batch-1 latency of every model.

    python -m training.bench [--device auto] [--size 120x160] [--models compact,pilotnet]
                             [--repeats 5] [--batch-size N] [--precision fp32|auto|bf16|fp16]
                             [--channels-last off|auto|on] [--frames-on-device auto|on|off]
                             [--json]

Per model, on the chosen device:

- **training images/s**: full steps on camera-size ``uint8`` frames (synthetic road images):
  batch gather, preprocessing (resize to the model input), augmentation, forward, backward,
  AdamW step, in the precision and memory layout asked for (the defaults, fp32 and NCHW,
  are what earlier figures were measured with). Median over ``--repeats`` timed windows.
- **augmentation share**: time spent in ``augment_batch`` over the step time (median).
- **latency**: batch-1 ``CNNPilot.act`` on a camera frame (numpy in, action out,
  preprocessing included), median and p95. The classical ``EdgePilot`` is timed too.

Figures on a shared machine move with its load: compare models within one run.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from agents.classical import EdgePilot
from agents.cnn import CNNPilot
from agents.models import ARCHITECTURES, build_model, preprocess
from tracks.cli import run_main
from tracks.common import parse_size
from training.augment import AugmentParams, augment_batch
from training.cli import fail
from training.config import PRECISIONS, SWITCHES
from training.data import FrameSet
from training.evaluate import _autocast, compute_loss
from training.hardware import autocast_dtype, channels_last_for, precision_name
from training.synthetic import render_road
from training.trainer import resolve_device

__all__ = ["bench_latency", "bench_training", "main"]

DEFAULT_BATCH = {"pilotnet": 128, "compact": 128, "compact_cls": 128, "resnet_cls": 32}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _frames(n: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = [
        render_road(
            size,
            offset=float(rng.uniform(-0.2, 0.2)),
            curve=float(rng.uniform(-0.4, 0.4)),
            noise=3.0,
            rng=rng,
        )
        for _ in range(min(n, 32))
    ]
    return np.stack([base[i % len(base)] for i in range(n)])


def bench_training(
    arch: str,
    device: torch.device,
    size: tuple[int, int],
    *,
    batch_size: int | None = None,
    repeats: int = 5,
    min_seconds: float = 1.0,
    augment: AugmentParams | None = None,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    frames_on_device: str = "auto",
) -> dict[str, Any]:
    """Median training throughput and augmentation share of ``arch`` on ``device``.

    ``amp_dtype``, ``channels_last`` and ``frames_on_device`` are the training run's GPU-path
    settings (:mod:`training.hardware`, :meth:`training.data.FrameSet.to`).
    """
    torch.manual_seed(0)
    bs = batch_size or DEFAULT_BATCH.get(arch, 64)
    model = build_model(arch).to(device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    frames = FrameSet(
        images=torch.from_numpy(_frames(max(4 * bs, 256), size)),
        steering=torch.rand(max(4 * bs, 256)) * 2 - 1,
        throttle=torch.zeros(max(4 * bs, 256)),
        episode=np.zeros(max(4 * bs, 256), dtype=np.int32),
    ).to(device, on_device=frames_on_device)
    aug = augment or AugmentParams()
    g = torch.Generator().manual_seed(0)

    def step() -> tuple[float, float]:
        idx = torch.randint(0, len(frames), (bs,), generator=g)
        t0 = time.perf_counter()
        x8, s, _ = frames.batch(idx, device)
        x = preprocess(x8, model.input_size)
        _sync(device)
        ta = time.perf_counter()
        x, s, _ = augment_batch(x, s, aug, g)
        _sync(device)
        ta = time.perf_counter() - ta
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device, amp_dtype):
            out = model(x)
        loss = compute_loss(model, out, s, None)  # steering: MSE, or unsmoothed cross-entropy
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        _sync(device)
        return time.perf_counter() - t0, ta

    step()
    step()  # warm-up: allocator, kernels, oneDNN primitives
    rates, shares = [], []
    for _ in range(repeats):
        t_total = t_aug = 0.0
        n = 0
        while n < 2 or t_total < min_seconds:
            dt, da = step()
            t_total += dt
            t_aug += da
            n += 1
        rates.append(n * bs / t_total)
        shares.append(t_aug / t_total)
    return {
        "model": arch,
        "batch_size": bs,
        "input_size": list(model.input_size),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "train_images_per_s": float(np.median(rates)),
        "train_images_per_s_all": [round(r, 1) for r in rates],
        "augment_share": float(np.median(shares)),
        "precision": precision_name(amp_dtype),
        "channels_last": channels_last,
        "frames_on": str(frames.images.device),
    }


def bench_latency(
    pilot: Any, size: tuple[int, int], *, runs: int = 50, warmup: int = 5
) -> dict[str, float]:
    """Median and p95 of ``pilot.act`` on single camera frames (milliseconds)."""
    frames = _frames(16, size, seed=1)
    for i in range(warmup):
        pilot.act(frames[i % len(frames)], {})
    times = []
    for i in range(runs):
        t0 = time.perf_counter()
        pilot.act(frames[i % len(frames)], {})
        times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1e3
    return {
        "latency_ms_median": float(np.median(ms)),
        "latency_ms_p95": float(np.percentile(ms, 95)),
        "latency_runs": runs,
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m training.bench", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda (default: %(default)s)")
    ap.add_argument("--size", default="120x160", help="camera frame size HxW (default 120x160)")
    ap.add_argument(
        "--models",
        default=",".join(ARCHITECTURES),
        help="comma-separated architectures (default: %(default)s)",
    )
    ap.add_argument(
        "--batch-size", type=int, default=None, help="training batch (default per model)"
    )
    ap.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="timed windows per model, the median reported (default: %(default)s)",
    )
    ap.add_argument(
        "--min-seconds",
        type=float,
        default=1.0,
        help="length of a timed window, s (default: %(default)s)",
    )
    ap.add_argument(
        "--latency-runs",
        type=int,
        default=50,
        help="timed batch-1 calls per model, a third for resnet_cls (default: %(default)s)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: none: torch's own choice)",
    )
    ap.add_argument(
        "--precision",
        default="fp32",
        choices=PRECISIONS,
        help="training precision as in training.train (auto: bf16/fp16 on CUDA, fp32 on "
        "the CPU) (default: %(default)s)",
    )
    ap.add_argument(
        "--channels-last",
        default="off",
        choices=SWITCHES,
        help="NHWC model and batches as in training.train (auto: on for CUDA) (default: %(default)s)",
    )
    ap.add_argument(
        "--frames-on-device",
        default="auto",
        choices=SWITCHES,
        help="uint8 frames in GPU memory (off: pinned host memory) (default: %(default)s)",
    )
    ap.add_argument("--no-edge", action="store_true", help="skip the classical EdgePilot")
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args(argv)
    try:
        size = parse_size(args.size)
        models = [m.strip() for m in args.models.split(",") if m.strip()]
        unknown = [m for m in models if m not in ARCHITECTURES]
        if unknown:
            raise ValueError(f"unknown models {unknown}; choose from {list(ARCHITECTURES)}")
        if args.repeats < 1 or args.latency_runs < 1:
            raise ValueError("--repeats and --latency-runs must be >= 1")
        device = resolve_device(args.device)
        amp_dtype = autocast_dtype(args.precision, True, device)
    except ValueError as e:
        return fail(e)
    channels_last = channels_last_for(args.channels_last, device)
    if args.threads:
        torch.set_num_threads(args.threads)
    env = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "frame_size": list(size),
        "precision": precision_name(amp_dtype),
        "channels_last": channels_last,
    }
    results = []
    timing = {
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "min_seconds": args.min_seconds,
        "amp_dtype": amp_dtype,
        "channels_last": channels_last,
        "frames_on_device": args.frames_on_device,
    }
    for arch in models:
        r = bench_training(arch, device, size, **timing)
        model = build_model(arch)
        runs = args.latency_runs if arch != "resnet_cls" else max(5, args.latency_runs // 3)
        r.update(bench_latency(CNNPilot(model, device=device), size, runs=runs))
        results.append(r)
        if not args.json:
            print(
                f"{arch:<12} train {r['train_images_per_s']:8.0f} img/s (batch {r['batch_size']}, input "
                f"{r['input_size'][0]}x{r['input_size'][1]}, augmentation {100 * r['augment_share']:4.1f}% of step)  "
                f"latency median {r['latency_ms_median']:7.2f} ms  p95 {r['latency_ms_p95']:7.2f} ms",
                flush=True,
            )
    if not args.no_edge:
        r = {
            "model": "edge (classical)",
            **bench_latency(EdgePilot(), size, runs=args.latency_runs),
        }
        results.append(r)
        if not args.json:
            print(
                f"{'edge':<12} {'(no training)':<72}latency median {r['latency_ms_median']:7.2f} ms  p95 {r['latency_ms_p95']:7.2f} ms"
            )
    if args.json:
        print(json.dumps({"environment": env, "results": results}, indent=2))
    else:
        print(
            f"({env['device']} {env['device_name']}, {env['threads']} threads, torch {env['torch']}, "
            f"frames {size[0]}x{size[1]}, {env['precision']}"
            f"{', channels_last' if channels_last else ''})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
