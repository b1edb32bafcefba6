"""``python -m sim.dataset {info,validate,bench}``: inspect, check and benchmark datasets.

Exit status: 0 on success, 1 when ``validate`` finds errors (warnings alone pass), 2 for
a usage error or a directory that is not a readable dataset.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from sim.dataset.bench import run_bench
from sim.dataset.format import MANIFEST_NAME, DatasetError, is_warning
from sim.dataset.reader import open_dataset
from sim.dataset.summary import dataset_summary, format_summary
from sim.dataset.validate import validate_dataset

__all__ = ["build_parser", "main"]


def _parse_size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)x(\d+)", text)
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise argparse.ArgumentTypeError(f"size must be HxW, e.g. 120x160, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m sim.dataset``."""
    parser = argparse.ArgumentParser(
        prog="python -m sim.dataset",
        description="Inspect, check and benchmark trackpilot datasets.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="summary of a dataset")
    p.add_argument("dir", type=Path)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--bins", type=int, default=21, help="steering histogram bins")
    p = sub.add_parser("validate", help="check a dataset; exit 1 on errors")
    p.add_argument("dir", type=Path)
    p.add_argument("--no-checksums", action="store_true", help="skip sha256 verification")
    p = sub.add_parser("bench", help="time load_arrays on a synthetic dataset")
    p.add_argument("--frames", type=int, default=10_000)
    p.add_argument("--size", type=_parse_size, default=(120, 160), help="HxW (default 120x160)")
    p.add_argument("--episode-frames", type=int, default=500)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dir", type=Path, default=None, help="write (and keep) the dataset here")
    return parser


def _bench(args: argparse.Namespace) -> int:
    if args.frames < 1 or args.episode_frames < 1 or args.runs < 1:
        print("error: --frames, --episode-frames and --runs must be >= 1", file=sys.stderr)
        return 2
    return run_bench(
        frames=args.frames,
        size=args.size,
        episode_frames=args.episode_frames,
        runs=args.runs,
        seed=args.seed,
        out_dir=args.dir,
    )


def _dataset_dir_problem(root: Path) -> str | None:
    """Why ``root`` cannot be a dataset (no directory, no manifest), or None."""
    if not root.is_dir():
        return f"{root}: no such dataset directory"
    if not (root / MANIFEST_NAME).is_file():
        return f"{root / MANIFEST_NAME}: missing (not a trackpilot dataset?)"
    return None


def _validate(args: argparse.Namespace) -> int:
    root: Path = args.dir
    problems = validate_dataset(
        root, check_checksums=not args.no_checksums, progress=sys.stderr.isatty()
    )
    for line in problems:
        print(line)
    errors = [p for p in problems if not is_warning(p)]
    if errors:
        print(f"FAILED: {len(errors)} problems")
        return 1
    ds = open_dataset(root)
    warn = len(problems) - len(errors)
    print(
        f"OK: {len(ds.episodes)} episodes, {len(ds)} frames"
        + (f" ({warn} warnings)" if warn else "")
    )
    return 0


def _info(args: argparse.Namespace) -> int:
    summary = dataset_summary(open_dataset(args.dir), bins=args.bins)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m sim.dataset`` with ``argv`` (default ``sys.argv[1:]``); the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "bench":
        return _bench(args)
    problem = _dataset_dir_problem(args.dir)
    if problem is None:
        if args.command == "validate":
            return _validate(args)
        try:
            return _info(args)
        except DatasetError as e:  # a manifest or episode file that cannot be read
            problem = str(e)
    print(f"error: {problem}", file=sys.stderr)
    return 2
