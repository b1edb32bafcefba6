"""``python -m tracks list``: the built-in tracks with their key numbers."""

from __future__ import annotations

import argparse

import numpy as np

from tracks.cli import run_main
from tracks.library import HELDOUT_TRACKS, builtin_names, get_track


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    ap = argparse.ArgumentParser(prog="python -m tracks", description="Track utilities.")
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the built-in tracks")
    args = ap.parse_args(argv)
    if args.command == "list":
        print(
            f"{'name':<10} {'length_m':>9} {'width_m':>8} {'min_radius_m':>13} {'orient':>6}  split"
        )
        for name in builtin_names():
            t = get_track(name)
            w = t.dense.w_left + t.dense.w_right
            width = f"{w.min():.2f}" if np.ptp(w) < 1e-9 else f"{w.min():.2f}-{w.max():.2f}"
            split = "held-out" if name in HELDOUT_TRACKS else "train"
            print(
                f"{name:<10} {t.length:>9.2f} {width:>8} {t.min_radius:>13.2f} {t.orientation:>6}  {split}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
