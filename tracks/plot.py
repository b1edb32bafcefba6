"""Headless map plots of tracks (matplotlib ``Figure`` + Agg, no pyplot).

CLI: ``python -m tracks.plot NAME_OR_FILE --out track.png``.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from tracks.cli import run_main
from tracks.fileio import atomic_write_bytes
from tracks.outputs import check_output_file, os_error_line
from tracks.track import Track

logger = logging.getLogger(__name__)

#: Most samples along the track in a plot (a long track is drawn coarser).
_MAX_PLOT_SAMPLES = 20_000


def plot_track(
    track: Track,
    path: str | Path | None = None,
    ax: Any = None,
    show_start: bool = True,
    trajectories: list[np.ndarray] | None = None,
    title: str | None = None,
) -> Any:
    """Draw ``track``: road surface, edges, dashed centreline, start line and
    driving-direction arrows, plus optional (K, 2) ``trajectories``.

    Draws into ``ax`` when given, else into a new figure. Saves a PNG to ``path``
    when given. Returns the matplotlib ``Figure``.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path as MplPath

    if ax is None:
        fig = Figure(figsize=(7, 7), dpi=100)
        ax = fig.add_subplot(1, 1, 1)
    else:
        fig = ax.figure
    # 5 cm between samples (finer on tiny tracks), but never more than _MAX_PLOT_SAMPLES.
    spacing = max(min(0.05, track.length / 200), track.length / _MAX_PLOT_SAMPLES)
    left, right = track.edges(spacing=spacing)
    # Road surface: the two edge loops in opposite directions form an annulus.
    verts = np.concatenate([left, left[:1], right[::-1], right[-1:]])
    codes = np.full(len(verts), MplPath.LINETO)
    codes[0] = codes[len(left) + 1] = MplPath.MOVETO
    codes[len(left)] = codes[-1] = MplPath.CLOSEPOLY
    ax.add_patch(PathPatch(MplPath(verts, codes), facecolor="0.85", edgecolor="none", zorder=0))
    for edge in (left, right):
        closed = np.concatenate([edge, edge[:1]])
        ax.plot(closed[:, 0], closed[:, 1], color="0.2", lw=1.2, zorder=2)
    c = track.resample(spacing).xy
    c = np.concatenate([c, c[:1]])
    ax.plot(c[:, 0], c[:, 1], color="0.45", lw=0.8, ls="--", zorder=2, label="centreline")
    if show_start:
        wl, wr = track.half_widths(0.0)
        p, nrm = track.point(0.0), track.normal(0.0)
        a, b = p + nrm * wl, p - nrm * wr
        ax.plot([a[0], b[0]], [a[1], b[1]], color="tab:red", lw=3, zorder=4, label="start")
    # Driving direction: one arrow just after the start and three more along the loop.
    scale = max(0.3, min(1.5, track.length / 40))
    for s in track.length * np.array([0.02, 0.27, 0.52, 0.77]):
        p, t = track.point(s), track.tangent(s)
        ax.annotate(
            "",
            xy=tuple(p + t * scale),
            xytext=tuple(p),
            arrowprops={"arrowstyle": "->", "color": "tab:blue", "lw": 1.5},
            zorder=5,
        )
    for k, traj in enumerate(trajectories or []):
        arr = np.asarray(traj, dtype=float)
        if arr.ndim != 2 or arr.shape[1] < 2:
            raise ValueError(f"trajectory {k} must have shape (K, 2), got {arr.shape}")
        ax.plot(arr[:, 0], arr[:, 1], lw=1.2, zorder=3, label=f"trajectory {k}")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("x [m]")
    ax.set_ylabel("y [m]")
    wl_all, wr_all = track.dense.w_left, track.dense.w_right
    ax.set_title(
        title
        if title is not None
        else f"{track.name}\n{track.length:.1f} m, width {float(np.mean(wl_all + wr_all)):.2f} m, "
        f"min radius {track.min_radius:.2f} m, {track.orientation}"
    )
    ax.grid(True, lw=0.3, alpha=0.5)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        if not isinstance(fig.canvas, FigureCanvasAgg):
            FigureCanvasAgg(fig)
        buf = io.BytesIO()  # rendered first, then written atomically: never half a PNG
        fig.savefig(buf, format="png")
        atomic_write_bytes(path, buf.getvalue())
        logger.info("wrote %s", path)
    return fig


def main(argv: list[str] | None = None) -> int:
    """``python -m tracks.plot NAME_OR_FILE --out file.png``."""
    from tracks.io import load_track

    ap = argparse.ArgumentParser(prog="python -m tracks.plot", description="Plot a track to PNG.")
    ap.add_argument("track", help="built-in name, gen:<seed>, or a .csv / .json file")
    ap.add_argument("--out", required=True, help="PNG file to write")
    ap.add_argument(
        "--scale", type=float, default=1.0, help="scale for CSV files (default: %(default)s)"
    )
    ap.add_argument("--reverse", action="store_true", help="plot the reversed track")
    ap.add_argument("--title", default=None, help="plot title (default: the track's name)")
    ap.add_argument(
        "--allow-undrivable",
        action="store_true",
        help="plot a track that fails the drivability check (a warning names the problem)",
    )
    args = ap.parse_args(argv)
    try:
        check_output_file(args.out)  # before the track is loaded and drawn
        track = load_track(args.track, scale=args.scale, allow_undrivable=args.allow_undrivable)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.reverse:
        track = track.reversed()
    try:
        plot_track(track, path=args.out, title=args.title)
    except OSError as exc:  # while writing: one line, no traceback
        print(f"error: {os_error_line(exc, args.out)}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
