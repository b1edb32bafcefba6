"""``python -m sim.dataset {info,validate,bench,view,migrate,filter,merge,import-tub,
export-tub}``: inspect, check, benchmark, view, compress, clean and join datasets; import
DonkeyCar tubs and export datasets as tubs.

Exit status: 0 on success, 1 when ``validate`` finds errors (warnings alone pass), 2 for
a usage error or a directory that is not a readable dataset.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sim.dataset.bench import BENCH_SOURCES, run_bench
from sim.dataset.derive import FilterConfig, filter_dataset, merge_datasets
from sim.dataset.format import MANIFEST_NAME, DatasetError, is_warning
from sim.dataset.migrate import migrate_dataset, print_summary
from sim.dataset.reader import open_dataset
from sim.dataset.summary import dataset_summary, format_summary
from sim.dataset.tub import TubExportConfig, TubImportConfig, TubMapping, format_tub_summary
from sim.dataset.tub_export import export_tub
from sim.dataset.tub_format import is_donkeycar_tub, tub_hint
from sim.dataset.tub_import import import_tub
from sim.dataset.validate import validate_dataset
from sim.dataset.view import ViewConfig, write_view
from tracks.cliargs import add_config_args, config_from_args
from tracks.common import format_size, parse_size
from tracks.outputs import os_error_line

__all__ = ["build_parser", "main"]


_BENCH_SIZE = (120, 160)  # bench --size default


def _size(text: str) -> tuple[int, int]:
    """``--size``: :func:`tracks.common.parse_size`, its ValueError as argparse's error."""
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _threads(text: str) -> tuple[int, ...]:
    """``--threads``: a comma list of counts >= 1."""
    try:
        out = tuple(int(x) for x in text.split(","))
    except ValueError:
        out = ()
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"expected a comma list of counts >= 1, got {text!r}")
    return out


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m sim.dataset``; every flag's help shows its default."""
    parser = argparse.ArgumentParser(
        prog="python -m sim.dataset",
        description="Inspect, check and benchmark trackpilot datasets.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="summary of a dataset")
    p.add_argument("dir", type=Path, help="dataset directory")
    p.add_argument("--json", action="store_true", help="machine-readable output (default: off)")
    p.add_argument(
        "--bins", type=int, default=21, help="steering histogram bins (default: %(default)s)"
    )
    p = sub.add_parser("validate", help="check a dataset; exit 1 on errors")
    p.add_argument("dir", type=Path, help="dataset directory")
    p.add_argument(
        "--no-checksums",
        action="store_true",
        help="skip sha256 verification (default: off, every file's sha256 is checked)",
    )
    p = sub.add_parser(
        "bench",
        help="bytes/frame and load rate of the same frames as version-1 and version-2 files",
        description="Write the same frames as raw (version 1) and compressed (version 2) "
        "datasets and time load_arrays on each. Frames: rendered by TrackEnv (default), "
        "random noise (incompressible, the worst case), or a dataset's (--data).",
    )
    p.add_argument(
        "--source",
        choices=BENCH_SOURCES,
        default="render",
        help="where the frames come from (default: %(default)s)",
    )
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="take every episode of this dataset instead (default: none)",
    )
    p.add_argument(
        "--frames",
        type=int,
        default=10_000,
        help="frames to render or draw (default: %(default)s)",
    )
    p.add_argument(
        "--size",
        type=_size,
        default=_BENCH_SIZE,
        help=f"image size HxW (default: {format_size(_BENCH_SIZE)})",
    )
    p.add_argument(
        "--episode-frames",
        type=int,
        default=500,
        help="frames per episode (default: %(default)s)",
    )
    p.add_argument(
        "--runs",
        type=int,
        default=5,
        help="timed load_arrays runs; the median is shown (default: %(default)s)",
    )
    p.add_argument(
        "--threads",
        type=_threads,
        default=(1, 2),
        help="comma list of reader thread counts to time (default: 1,2)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the frames (default: %(default)s)")
    p.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="write (and keep) the datasets here, as v1/ and v2/ (default: a temporary "
        "directory, removed after)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output (default: off)")
    _add_tub_commands(sub)
    _add_view_parser(sub)
    _add_edit_parsers(sub)
    return parser


def _add_tub_commands(sub: argparse._SubParsersAction) -> None:
    """``import-tub`` and ``export-tub`` (:mod:`sim.dataset.tub`)."""
    p = sub.add_parser(
        "import-tub",
        help="import DonkeyCar tubs as a new dataset",
        description="Import DonkeyCar tubs (datastore v2: manifest.json, catalog_N.catalog, "
        "images/) into a new trackpilot dataset. Deleted records are left out; each drive "
        "(session) becomes episodes. Fields a tub does not measure (speed, pose, lateral, "
        "heading_error, progress, lap) are 0 and listed as unmeasured.",
    )
    p.add_argument("tubs", nargs="+", type=Path, metavar="TUB", help="tub directories")
    p.add_argument("--out", type=Path, required=True, help="the new dataset directory")
    add_config_args(p, TubImportConfig)
    add_config_args(p, TubMapping)
    p = sub.add_parser(
        "export-tub",
        help="write a dataset as a DonkeyCar tub",
        description="Write a dataset as a new DonkeyCar tub (datastore v2, as DonkeyCar's own "
        "reader and trainer read it): one session per episode, one record per frame with "
        "cam/image_array (JPEG), user/angle, user/throttle and user/mode 'user'.",
    )
    p.add_argument("dir", type=Path, help="dataset directory")
    p.add_argument("--out", type=Path, required=True, help="the new tub directory")
    add_config_args(p, TubExportConfig)
    add_config_args(p, TubMapping)


def _tub(args: argparse.Namespace) -> int:
    """``import-tub`` or ``export-tub``: their summary, or one ``error:`` line."""
    progress = True  # tracks.progress: a bar on a terminal, one summary line otherwise
    try:
        mapping = config_from_args(TubMapping, args)
        if args.command == "import-tub":
            cfg = config_from_args(TubImportConfig, args)
            summary = import_tub(args.tubs, args.out, cfg, mapping, progress=progress)
        else:
            cfg = config_from_args(TubExportConfig, args)
            summary = export_tub(args.dir, args.out, cfg, mapping, progress=progress)
    except ValueError as e:  # DatasetError, OutputError, a bad setting
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {os_error_line(e, args.out)}", file=sys.stderr)
        return 2
    print(format_tub_summary(summary))
    return 0


def _add_view_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "view",
        help="an MP4 of episodes with steering and throttle drawn over the frames",
        description="Write the episodes' camera frames, enlarged, as an H.264 MP4 with the "
        "steering and throttle labels drawn over them and the episode key, track, direction "
        "and source (and takeover frames) in a corner.",
    )
    p.add_argument("dir", type=Path, help="dataset directory")
    add_config_args(p, ViewConfig)


def _view(args: argparse.Namespace) -> int:
    try:
        cfg = config_from_args(ViewConfig, args)
        result = write_view(args.dir, cfg)
    except ValueError as e:  # DatasetError, VideoError, OutputError: one line each
        print(f"error: {e}", file=sys.stderr)
        return 2
    h, w = result.size
    print(
        f"wrote {result.path}: {result.frames} frames of {result.episodes} episodes, {w}x{h} "
        f"at {result.fps:g} fps ({result.frames_per_s:.0f} frames/s)"
    )
    return 0


def _add_edit_parsers(sub: argparse._SubParsersAction) -> None:
    """``migrate``, ``filter`` and ``merge``: commands that write datasets."""
    p = sub.add_parser(
        "migrate",
        help="compress a dataset's version-1 episode files (in place, or into --out)",
        description="Rewrite raw (version 1) episode files as compressed version-2 ones, one "
        "episode at a time, each verified before it replaces the old one; rerun to resume.",
    )
    p.add_argument("dir", type=Path, help="dataset directory")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write the migrated dataset here instead (default: none, migrate in place)",
    )
    p = sub.add_parser(
        "filter",
        help="write a new dataset without off-track endings, takeovers or chosen episodes",
    )
    p.add_argument("dir", type=Path, help="source dataset directory (left unchanged)")
    p.add_argument("--out", type=Path, required=True, help="new dataset directory (must not exist)")
    add_config_args(p, FilterConfig)
    p = sub.add_parser("merge", help="join compatible datasets into a new one")
    p.add_argument("dirs", type=Path, nargs="+", help="source dataset directories (two or more)")
    p.add_argument("--out", type=Path, required=True, help="new dataset directory (must not exist)")


def _edit(args: argparse.Namespace) -> int:
    """Run ``migrate``, ``filter`` or ``merge``; problems are one ``error:`` line, exit 2."""
    progress = True  # tracks.progress: a bar on a terminal, one summary line otherwise
    try:
        sources = args.dirs if args.command == "merge" else [args.dir]
        for root in sources:
            problem = _dataset_dir_problem(root)
            if problem:
                raise DatasetError(problem)
        if args.command == "migrate":
            print_summary(migrate_dataset(args.dir, args.out, progress=progress))
        elif args.command == "filter":
            cfg = config_from_args(FilterConfig, args)
            s = filter_dataset(args.dir, args.out, cfg, progress=progress)
            print(
                f"wrote {s['episodes']} episodes ({s['frames']:,} frames) to {s['out']} from "
                f"{s['source_episodes']} ({s['source_frames']:,} frames): dropped "
                f"{len(s['dropped_episodes'])} episodes by key, trimmed {s['trimmed_frames']:,} "
                f"frames off {s['trimmed_episodes']} off-track endings, dropped "
                f"{s['takeover_frames_dropped']:,} takeover frames"
                + (
                    f"; left empty: {', '.join(s['emptied_episodes'])}"
                    if s["emptied_episodes"]
                    else ""
                )
            )
        else:
            s = merge_datasets(args.dirs, args.out, progress=progress)
            renamed = "".join(f"; {k} -> {v}" for k, v in s["renamed"].items())
            print(
                f"wrote {s['episodes']} episodes ({s['frames']:,} frames) from "
                f"{len(s['sources'])} datasets to {s['out']} ({s['duplicates']} identical "
                f"duplicates kept once){renamed}"
            )
    except (DatasetError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {os_error_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        if str(e):  # it says what it left already
            raise
        raise type(e)(_INTERRUPTED[args.command]) from None
    return 0


#: What an interrupted command leaves (run_main's "interrupted: ..." line).
_INTERRUPTED = {
    "migrate": "episodes migrated so far are kept, the rest as they were; rerun to go on",
    "filter": "nothing written to --out",
    "merge": "nothing written to --out",
}


def _bench(args: argparse.Namespace) -> int:
    if args.frames < 1 or args.episode_frames < 1 or args.runs < 1:
        print("error: --frames, --episode-frames and --runs must be >= 1", file=sys.stderr)
        return 2
    if args.data is not None and _dataset_dir_problem(args.data):
        print(f"error: {_dataset_dir_problem(args.data)}", file=sys.stderr)
        return 2
    return run_bench(
        frames=args.frames,
        size=args.size,
        episode_frames=args.episode_frames,
        runs=args.runs,
        seed=args.seed,
        out_dir=args.dir,
        source=args.source,
        data=args.data,
        workers=args.threads,
        as_json=args.json,
    )


def _dataset_dir_problem(root: Path) -> str | None:
    """Why ``root`` cannot be a dataset (no directory, a DonkeyCar tub, no manifest), or None."""
    if not root.is_dir():
        return f"{root}: no such dataset directory"
    if is_donkeycar_tub(root):
        return tub_hint(root)
    if not (root / MANIFEST_NAME).is_file():
        return tub_hint(root) or f"{root / MANIFEST_NAME}: missing (not a trackpilot dataset?)"
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
    if args.command in ("import-tub", "export-tub"):
        return _tub(args)
    if args.command in ("migrate", "filter", "merge"):
        return _edit(args)
    problem = _dataset_dir_problem(args.dir)
    if problem is None:
        if args.command == "view":
            return _view(args)
        if args.command == "validate":
            return _validate(args)
        try:
            return _info(args)
        except DatasetError as e:  # a manifest or episode file that cannot be read
            problem = str(e)
    print(f"error: {problem}", file=sys.stderr)
    return 2
