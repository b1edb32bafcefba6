"""``python -m evaluation.cars``: the reference car computers on the command line, and the
check of their cost model's form on this machine.

The car computers and their two-term cost model are :mod:`agents.cars` (re-exported here):
``list`` prints them with their constants, tails and sources; ``estimate`` gives a pilot's
or a FLOP count's latency on each; ``validate`` fits the two constants on some models of
the zoo's architectures timed here and predicts the others.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from agents.cars import (
    CARS,
    KERAS_LINEAR_MFLOP,
    CarComputer,
    CarEstimate,
    check_mflop,
    get_car,
    mflop_of,
)

__all__ = [
    "CARS",
    "KERAS_LINEAR_MFLOP",
    "VALIDATION_MODELS",
    "CarComputer",
    "CarEstimate",
    "ValidationModel",
    "fit_cost_line",
    "get_car",
    "main",
    "mflop_of",
    "validate",
]


# --------------------------------------------------------------------------- validation
@dataclass(frozen=True)
class ValidationModel:
    """One network timed by :func:`validate`: ``build_model(arch, **args)``."""

    name: str
    arch: str
    args: dict[str, Any]
    fit: bool  # in the fit set (else held out: predicted, never fitted on)


def _vm(name: str, arch: str, fit: bool, **args: Any) -> ValidationModel:
    return ValidationModel(name, arch, args, fit)


#: The fit set and the held-out set: other widths, depths and input sizes of the zoo's
#: architectures. The held-out set holds the quick zoo's own four models.
VALIDATION_MODELS: tuple[ValidationModel, ...] = (
    _vm("compact w0.5", "compact", True, width=0.5),
    _vm("compact w2", "compact", True, width=2.0),
    _vm("compact_cls w1 d3", "compact_cls", True, depth=3),
    _vm("pilotnet w0.5 d1 60x80", "pilotnet", True, width=0.5, depth=1, input_size=(60, 80)),
    _vm("pilotnet w1 d2 66x200", "pilotnet", True),
    _vm(
        "resnet_cls w0.25 d1 96x128", "resnet_cls", True, width=0.25, depth=1, input_size=(96, 128)
    ),
    _vm(
        "resnet_cls w0.5 d2 120x160", "resnet_cls", True, width=0.5, depth=2, input_size=(120, 160)
    ),
    _vm("compact (zoo)", "compact", False),
    _vm("compact_cls (zoo)", "compact_cls", False),
    _vm("pilotnet d1 60x80 (zoo)", "pilotnet", False, depth=1, input_size=(60, 80)),
    _vm("resnet_cls_hires (zoo)", "resnet_cls", False, width=0.5, depth=1, input_size=(96, 128)),
    _vm("compact w1.5 d5 120x160", "compact", False, width=1.5, depth=5, input_size=(120, 160)),
    _vm("pilotnet w1.5 d2 66x200", "pilotnet", False, width=1.5),
    _vm(
        "resnet_cls w0.75 d1 120x160",
        "resnet_cls",
        False,
        width=0.75,
        depth=1,
        input_size=(120, 160),
    ),
)


def fit_cost_line(
    mflop: Sequence[float], ms: Sequence[float], *, relative: bool = True
) -> tuple[float, float]:
    """``(overhead_ms, ms_per_mflop)`` of ``ms ~ overhead + k * mflop`` by least squares.

    ``relative`` weights each point by ``1 / ms``, i.e. minimises the relative error,
    so a 1 ms net counts as much as a 100 ms one (the goal is an error in percent).
    """
    x = np.asarray(mflop, dtype=np.float64)
    y = np.asarray(ms, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
        raise ValueError("fit_cost_line needs two equal-length sequences of >= 2 points")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y)) and np.all(y > 0)):
        raise ValueError("fit_cost_line needs finite MFLOP and positive finite times")
    if np.ptp(x) == 0:
        raise ValueError("fit_cost_line needs at least two different MFLOP counts")
    w = 1.0 / y if relative else np.ones_like(y)
    a = np.stack([np.ones_like(x), x], axis=1) * w[:, None]
    (overhead, slope), *_ = np.linalg.lstsq(a, y * w, rcond=None)
    return float(overhead), float(slope)


def _time_models(
    models: Sequence[ValidationModel],
    *,
    threads: int,
    calls: int,
    warmup: int,
    camera: tuple[int, int],
    seed: int,
) -> list[dict[str, Any]]:
    # torch only here: the timing is the one part of this module that runs networks.
    import torch

    from agents.cnn import CNNPilot
    from agents.flops import count_mflop
    from agents.models import build_model
    from evaluation.latency import measure_latency

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    frame = np.random.default_rng(seed).integers(0, 256, (*camera, 3), dtype=np.uint8)
    rows = []
    for vm in models:
        model = build_model(vm.arch, **vm.args)
        pilot = CNNPilot(model)
        stats = measure_latency(pilot, frame, {}, warmup=warmup, n=calls)
        rows.append(
            {
                "model": vm.name,
                "arch": vm.arch,
                "args": {k: list(v) if isinstance(v, tuple) else v for k, v in vm.args.items()},
                "fit": vm.fit,
                "mflop": count_mflop(model),
                "measured_ms": stats.median_ms,
                "p95_ms": stats.p95_ms,
            }
        )
    return rows


def validate(
    *,
    threads: int = 1,
    calls: int = 30,
    warmup: int = 5,
    camera: tuple[int, int] = (60, 80),
    seed: int = 0,
    models: Sequence[ValidationModel] = VALIDATION_MODELS,
) -> dict[str, Any]:
    """Time ``models`` here, fit the cost line on the fit set, predict the held-out set.

    Returns ``{"overhead_ms", "ms_per_mflop", "rows": [...], "max_abs_error_pct", ...}``;
    each row has ``model``, ``mflop``, ``measured_ms``, ``predicted_ms``, ``error_pct``.
    """
    if threads < 1 or calls < 1 or warmup < 0:
        raise ValueError(
            f"need threads >= 1, calls >= 1, warmup >= 0; got {threads}, {calls}, {warmup}"
        )
    rows = _time_models(
        models, threads=threads, calls=calls, warmup=warmup, camera=camera, seed=seed
    )
    fit = [r for r in rows if r["fit"]]
    overhead, slope = fit_cost_line([r["mflop"] for r in fit], [r["measured_ms"] for r in fit])
    for r in rows:
        r["predicted_ms"] = overhead + slope * r["mflop"]
        r["error_pct"] = 100.0 * (r["predicted_ms"] - r["measured_ms"]) / r["measured_ms"]
    held = [abs(r["error_pct"]) for r in rows if not r["fit"]]
    return {
        "date": date.today().isoformat(),
        "threads": threads,
        "calls": calls,
        "camera": list(camera),
        "overhead_ms": overhead,
        "ms_per_mflop": slope,
        "max_abs_error_pct": max(held) if held else None,
        "rows": rows,
    }


# --------------------------------------------------------------------------- command line
def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in (header, *rows)
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_cars() -> str:
    rows = [
        (
            c.name,
            c.board,
            c.runtime,
            f"{c.overhead_ms:.2f} ms",
            f"{c.ms_per_mflop:.5f} ms",
            c.tail,
            " ".join(c.sources),
        )
        for c in CARS.values()
    ]
    header = ("car", "board", "runtime", "overhead", "per MFLOP", "tail", "sources")
    return _table(header, rows)


def format_estimates(mflop: float, what: str) -> str:
    rows = []
    for c in CARS.values():
        e = c.estimate(mflop)
        rows.append(
            (c.name, f"{e.median_ms:.1f}", f"{e.p95_ms:.1f}", f"{e.p99_ms:.1f}", f"{e.max_ms:.1f}")
        )
    head = f"{what}: {mflop:.1f} MFLOP per frame"
    return head + "\n" + _table(("car", "median ms", "p95 ms", "p99 ms", "max ms"), rows)


def format_validation(result: dict[str, Any]) -> str:
    rows = [
        (
            r["model"],
            "fit" if r["fit"] else "held out",
            f"{r['mflop']:.1f}",
            f"{r['measured_ms']:.2f}",
            f"{r['predicted_ms']:.2f}",
            f"{r['error_pct']:+.0f}%",
        )
        for r in result["rows"]
    ]
    header = ("model", "set", "MFLOP", "measured ms", "predicted ms", "error")
    fit = (
        f"fit: {result['overhead_ms']:.3f} ms + {result['ms_per_mflop']:.5f} ms/MFLOP "
        f"({result['threads']} thread(s), median of {result['calls']} calls, camera "
        f"{result['camera'][0]}x{result['camera'][1]}); held-out max |error| "
        f"{result['max_abs_error_pct']:.0f}%"
    )
    return _table(header, rows) + "\n" + fit


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m evaluation.cars",
        description="Reference car computers: list them, estimate a pilot's latency on "
        "each, or check the cost model's form on this machine.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the cars, their constants and sources")
    est = sub.add_parser("estimate", help="a pilot's (or a FLOP count's) latency on each car")
    est.add_argument("pilot", nargs="?", help="a pilot spec (checkpoint, run directory, ...)")
    est.add_argument(
        "--mflop",
        type=float,
        help="MFLOP per frame instead of a pilot (default: none: count the pilot's)",
    )
    val = sub.add_parser("validate", help="fit the cost line here, predict held-out models")
    val.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    val.add_argument("--calls", type=int, default=30, help="timed calls per model (default 30)")
    val.add_argument("--warmup", type=int, default=5, help="untimed calls first (default 5)")
    val.add_argument("--camera", default="60x80", help="camera frame HxW (default 60x80)")
    val.add_argument("--seed", type=int, default=0, help="weights and frame seed (default 0)")
    val.add_argument(
        "--json", type=Path, help="also write the result as JSON here (default: none: no file)"
    )
    return p


def _estimate(args: argparse.Namespace) -> str:
    if (args.pilot is None) == (args.mflop is None):
        raise ValueError("estimate needs a pilot spec or --mflop X (one of them)")
    if args.mflop is not None:
        return format_estimates(check_mflop(args.mflop), "--mflop")
    from agents.registry import load_pilot

    pilot = load_pilot(args.pilot)
    mflop = mflop_of(pilot)
    if mflop is None:
        raise ValueError(f"pilot {args.pilot!r} has no network: no FLOPs to estimate from")
    return format_estimates(mflop, str(getattr(pilot, "name", args.pilot)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    try:
        if args.command == "list":
            print(format_cars())
        elif args.command == "estimate":
            print(_estimate(args))
        else:
            from tracks.common import parse_size

            if args.json is not None:
                from tracks.outputs import check_output_file

                check_output_file(args.json)
            result = validate(
                threads=args.threads,
                calls=args.calls,
                warmup=args.warmup,
                camera=parse_size(args.camera, what="--camera"),
                seed=args.seed,
            )
            print(format_validation(result))
            if args.json is not None:
                from tracks.fileio import atomic_write_text

                atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
                print(f"wrote {args.json}", file=sys.stderr)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from tracks.cli import run_main

    raise SystemExit(run_main(main))
