"""``python -m training.dagger``: DAgger at the pilot's own latency.

    python -m training.dagger --pilot RUN --data DATASET --rounds N --out DIR
                              [--latency measured|70ms|profile.json] [--car NAME]

Round ``r`` (1..N):

1. **drive**: the round's pilot (round 1: ``--pilot``; then the last round's model)
   drives every training track in both directions in closed loop, charged the latency
   it has (``--latency``/``--car``: the evaluator's :func:`evaluation.charge.resolve_charge`,
   a distribution drawn per inference), with the expert as safety driver
   (:mod:`training.dagger_collect`);
2. **label and append**: every frame of those drives gets the expert's command for the
   state at ``t + L`` (L: the charge's median) and is appended to ``DIR/data`` as an
   episode with ``source="dagger"`` and ``extra["round"]`` (the dataset format as it
   is: takeover frames marked in the ``takeover`` field as ``sim.drive`` marks them);
3. **retrain**: ``training.train``'s recipe (the pilot's own config: split by episode,
   augmentation, early stopping) on all of ``DIR/data``, warm-started from the round's
   pilot (``init_from``), every label compensated for ``L`` (``compensate_latency``),
   into ``DIR/round-NN/run``;
4. **evaluate** the new model on the held-out tracks in both directions at its latency
   (:func:`evaluation.evaluate.evaluate`).

``DIR/data`` starts as a copy of ``--data`` (read and written through the dataset API:
``--data`` itself is never modified). Round 0 is ``--pilot`` evaluated the same way.
After every round ``DIR/dagger.json`` (the config and each round's results),
``DIR/summary.md`` and ``DIR/dagger.png`` (autonomy and mean |CTE| per round) are
written atomically. The command resumes: finished rounds are kept, and a round cut
short keeps its appended episodes and continues its training (``--resume``), so a
crash loses at most the round it interrupted.

An app (it wires training, the closed loop and the evaluator together), so it sits on
top of ``training`` and ``evaluation``, as ``evaluation.leaderboard`` does.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.cars import get_car
from agents.expert import ExpertConfig
from evaluation.evaluate import evaluate, prepare_pilot
from evaluation.latency import parse_latency
from evaluation.runner import cached_pilot, one_thread
from sim.dataset import DatasetWriter, EpisodeMeta, open_dataset
from sim.pool import imap_unordered
from sim.record import derive_seed
from tracks import HELDOUT_TRACKS
from tracks.cli import run_main
from tracks.cliargs import add_config_args, config_from_args
from tracks.common import DIRECTIONS, now_iso
from tracks.fileio import atomic_write_bytes, atomic_write_json, read_json
from tracks.outputs import check_output_dir, os_error_line
from training.cli import fail
from training.config import TrainConfig
from training.dagger_collect import DriveJob, DriveSettings, drive_episode
from training.errors import RunError, TrainingDiverged
from training.rundir import has_saved_state
from training.train import run as train_run

__all__ = ["STATE_NAME", "DaggerConfig", "build_parser", "main", "run_dagger"]

logger = logging.getLogger(__name__)

STATE_NAME = "dagger.json"
STATE_FORMAT = "trackpilot-dagger"
STATE_VERSION = 1
#: Settings that may change when a DAgger run is resumed (more rounds, other workers).
RESUMABLE = ("rounds", "workers", "threads", "progress")


@dataclass(frozen=True)
class DaggerConfig:
    """One DAgger run (``python -m training.dagger --help``)."""

    pilot: str = ""  # the pilot to start from: a run directory or checkpoint JSON; required
    data: str = ""  # the dataset it was trained on (copied, never modified); required
    out: str = ""  # output directory (new, or a DAgger run to resume); required
    rounds: int = 3  # DAgger rounds
    latency: str = "measured"  # the pilot's latency: measured, 0, 70ms or a profile JSON
    car: str | None = field(
        default=None,
        metadata={"help": "a reference car computer: its latency estimated for the pilot"},
    )
    laps: int = 1  # laps per drive (each training track, each direction)
    episodes: int = 1  # drives per track and direction per round
    tracks: tuple[str, ...] | None = field(
        default=None,
        metadata={"help": "tracks to drive; none: the dataset's (never the held-out ones)"},
    )
    directions: tuple[str, ...] = DIRECTIONS  # directions to drive and to evaluate
    takeover_lateral: float = 0.6  # the expert takes over past this fraction of the half width
    epochs: int | None = None  # training epochs per round; none: the pilot's own config's
    eval_tracks: tuple[str, ...] = tuple(HELDOUT_TRACKS)  # held-out evaluation tracks
    eval_laps: int = 1  # laps per evaluation run
    seed: int = 0  # seeds the drives' starts and the evaluation runs
    workers: int = field(
        default_factory=lambda: os.cpu_count() or 1,
        metadata={"help": "parallel drives and evaluation runs (all cores)"},
    )
    threads: int | None = None  # torch threads for training; none: torch's default
    progress: bool = False  # training progress bars

    def __post_init__(self) -> None:
        for name in ("pilot", "data", "out"):
            if not getattr(self, name):
                raise ValueError(f"--{name} is required")
        if self.rounds < 1 or self.laps < 1 or self.episodes < 1 or self.eval_laps < 1:
            raise ValueError("--rounds, --laps, --episodes and --eval-laps must be >= 1")
        if self.workers < 1 or (self.threads is not None and self.threads < 1):
            raise ValueError("--workers and --threads must be >= 1")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"--epochs must be >= 1, got {self.epochs}")
        bad = [d for d in self.directions if d not in DIRECTIONS]
        if bad or not self.directions:
            raise ValueError(
                f"--directions must be among {DIRECTIONS}, got {list(self.directions)}"
            )
        held = sorted(set(self.tracks or ()) & set(self.eval_tracks))
        if held:
            raise ValueError(f"--tracks must not include the evaluation tracks, got {held}")
        if not self.eval_tracks:
            raise ValueError("--eval-tracks must name at least one track")
        parse_latency(self.latency)
        DriveSettings(takeover_lateral=self.takeover_lateral)
        if self.car is not None:
            get_car(self.car)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


# --------------------------------------------------------------------------- the dataset
def aggregate_dataset(source: str | Path, target: Path) -> int:
    """Copy every episode of ``source`` not yet in ``target`` (created with the same info
    block); returns how many were copied. Resumable: listed episodes are skipped."""
    src = open_dataset(source)
    writer = DatasetWriter(target, src.info)
    have = {rec["key"] for rec in writer.episodes}
    copied = 0
    for rec in src.episodes:
        if rec["key"] in have:
            continue
        arrays = src.load_episode(rec["key"])
        writer.write_episode(rec["key"], arrays, EpisodeMeta.from_record(rec))
        copied += 1
    return copied


def _expert_config(ds: Any) -> ExpertConfig:
    """The expert that recorded the dataset (its first expert episode's parameters)."""
    names = {f.name for f in dataclasses.fields(ExpertConfig)}
    for rec in ds.episodes:
        meta = rec.get("expert")
        if isinstance(meta, dict) and meta.get("kind", "expert") == "expert":
            return ExpertConfig(**{k: v for k, v in meta.items() if k in names})
    raise RunError(f"{ds.root}: no episode recorded by the expert, so no expert to label with")


def _train_tracks(ds: Any) -> tuple[str, ...]:
    specs = {(r.get("extra") or {}).get("track_spec") or r["track_id"] for r in ds.episodes}
    return tuple(sorted(s for s in specs if s not in HELDOUT_TRACKS))


def _jobs(cfg: DaggerConfig, tracks: Sequence[str], rnd: int) -> list[DriveJob]:
    out = []
    for track in tracks:
        name = Path(track).stem if track.endswith((".csv", ".json")) else track
        for direction in cfg.directions:
            for k in range(cfg.episodes):
                out.append(
                    DriveJob(
                        key=f"dagger-r{rnd:02d}-{name.replace(':', '')}-{direction}-{k:03d}-s{cfg.seed}",
                        track=track,
                        direction=direction,
                        seed=derive_seed(cfg.seed, "dagger", rnd, track, direction, k),
                        round=rnd,
                    )
                )
    return out


def _drive_worker(
    job: DriveJob,
    spec: str,
    expert: ExpertConfig,
    settings: DriveSettings,
    dataset: str,
    info: dict[str, Any],
) -> dict[str, Any]:
    """One drive (in a worker process, or here with one worker); the pilot is loaded
    once per process."""
    pilot = cached_pilot(spec, "cpu", settings.speed)
    return drive_episode(job, pilot, expert, settings, dataset, info)


# --------------------------------------------------------------------------- the rounds
def _charge(cfg: DaggerConfig, spec: str, speed: float) -> Any:
    """The latency the pilot ``spec`` is charged (``evaluation.charge``): median, samples."""
    info = prepare_pilot(
        spec, parse_latency(cfg.latency), speed=speed, track=cfg.eval_tracks[0], car=cfg.car
    )
    return info.charge


def _evaluate(cfg: DaggerConfig, spec: str, speed: float) -> dict[str, Any]:
    """The pilot on the held-out tracks, both directions, at its latency."""
    t0 = time.perf_counter()
    rows = evaluate(
        [spec],
        tracks=cfg.eval_tracks,
        directions=cfg.directions,
        laps=cfg.eval_laps,
        speed=speed,
        latency=cfg.latency,
        car=cfg.car,
        seeds=(cfg.seed,),
        workers=cfg.workers,
        progress=False,
    )
    n = len(rows)
    return {
        "autonomy": sum(r.autonomy for r in rows) / n,
        "mean_abs_cte": sum(r.mean_abs_cte for r in rows) / n,
        "interventions": sum(r.interventions for r in rows),
        "laps": sum(r.laps_completed for r in rows),
        "laps_target": sum(r.laps_target for r in rows),
        "clean_runs": sum(1 for r in rows if r.ok),
        "runs": [
            {
                "track": r.track,
                "direction": r.direction,
                "laps": r.laps_completed,
                "interventions": r.interventions,
                "autonomy": r.autonomy,
                "mean_abs_cte": r.mean_abs_cte,
            }
            for r in rows
        ],
        "latency_ms": rows[0].latency_ms,
        "latency_source": rows[0].latency_source,
        "seconds": time.perf_counter() - t0,
    }


def _train_config(cfg: DaggerConfig, pilot_json: Path, rnd: int, latency_ms: float) -> TrainConfig:
    """The round's training: the pilot's own recipe on the aggregated data, warm-started
    from it, every label compensated for the latency the DAgger labels are for."""
    record = read_json(pilot_json, what="checkpoint")
    base = record.get("config") if isinstance(record, dict) else None
    if not isinstance(base, dict):
        raise RunError(f"{pilot_json}: no training config in the checkpoint")
    over: dict[str, Any] = {
        "data": str(Path(cfg.out) / "data"),
        "out": str(_round_dir(cfg, rnd) / "run"),
        "init_from": str(pilot_json),
        "compensate_latency": f"{latency_ms:.6g}ms",
        "progress": cfg.progress,
        "tensorboard": False,
        "threads": cfg.threads,
    }
    if cfg.epochs is not None:
        over["epochs"] = cfg.epochs
    try:
        return TrainConfig.from_dict(base, **over)
    except (TypeError, ValueError) as e:
        raise RunError(f"{pilot_json}: its training config: {e}") from None


def _round_dir(cfg: DaggerConfig, rnd: int) -> Path:
    return Path(cfg.out) / f"round-{rnd:02d}"


def _train(tcfg: TrainConfig) -> dict[str, Any]:
    """Train (or finish, or reuse) the round's model; returns best.json."""
    run_dir = Path(tcfg.out)
    best = run_dir / "best.json"
    if best.is_file():
        record = read_json(best, what="checkpoint")
        if isinstance(record, dict) and "stopped" in record:
            return record  # trained before a crash that came later in the round
    train_run(tcfg, resume=has_saved_state(run_dir))
    return read_json(best, what="checkpoint")


def _pilot_json(spec: str) -> Path:
    """The checkpoint JSON of a run directory or checkpoint path, checked to load (its
    sha256, its record, the model it rebuilds) before anything is copied or driven."""
    from agents.cnn import load_model, resolve_checkpoint  # torch: only here

    try:
        path = Path(resolve_checkpoint(spec))
        load_model(path)
    except ValueError as e:
        raise RunError(f"--pilot: {e}") from None
    return path


def _load_state(cfg: DaggerConfig) -> dict[str, Any]:
    path = Path(cfg.out) / STATE_NAME
    if not path.is_file():
        if Path(cfg.out).is_dir() and any(Path(cfg.out).iterdir()):
            raise RunError(f"--out {cfg.out}: not empty and not a DAgger run; use another --out")
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "created": now_iso(),
            "config": cfg.to_dict(),
            "rounds": [],
        }
    state = read_json(path, what="DAgger state")
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise RunError(f"{path}: not a {STATE_FORMAT} file")
    if state.get("version") != STATE_VERSION:
        raise RunError(
            f"{path}: version {state.get('version')}, this trackpilot reads {STATE_VERSION}"
        )
    old, new = state.get("config") or {}, cfg.to_dict()
    changed = sorted(k for k in new if k not in RESUMABLE and old.get(k) != new[k])
    if changed:
        raise RunError(
            f"{path}: a DAgger run with other settings ({', '.join(changed)}); "
            f"only {', '.join(RESUMABLE)} may change when resuming: use another --out"
        )
    state["config"] = new
    return state


def run_dagger(cfg: DaggerConfig, say: Any = print) -> dict[str, Any]:
    """Every round not yet done; returns the state (``dagger.json``'s content)."""
    out = Path(cfg.out)
    check_output_dir(out)
    state = _load_state(cfg)
    pilot = str(_pilot_json(cfg.pilot)) if not state["rounds"] else ""
    data = out / "data"
    t0 = time.perf_counter()
    copied = aggregate_dataset(cfg.data, data)
    if copied:
        say(f"copied {copied} episodes of {cfg.data} to {data} in {time.perf_counter() - t0:.0f} s")
    ds = open_dataset(data)
    expert = _expert_config(ds)
    tracks = cfg.tracks or _train_tracks(ds)
    if not tracks:
        raise RunError(f"{cfg.data}: no training tracks to drive (only held-out ones)")
    speed = expert.cruise_speed
    if not state["rounds"]:
        say(f"round 0: {cfg.pilot} on {', '.join(cfg.eval_tracks)}")
        ev = _evaluate(cfg, pilot, speed)
        state["rounds"].append({"round": 0, "pilot": pilot, "eval": ev})
        _write_outputs(out, state)
        say(_round_line(state["rounds"][-1]))
    while len(state["rounds"]) <= cfg.rounds:
        rnd = len(state["rounds"])
        state["rounds"].append(_run_round(cfg, state, rnd, tracks, expert, ds.info, say))
        _write_outputs(out, state)
        say(_round_line(state["rounds"][-1]))
    return state


def _run_round(
    cfg: DaggerConfig,
    state: dict[str, Any],
    rnd: int,
    tracks: Sequence[str],
    expert: ExpertConfig,
    info: dict[str, Any],
    say: Any,
) -> dict[str, Any]:
    pilot = state["rounds"][-1]["pilot"]
    speed = expert.cruise_speed
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    charge = _charge(cfg, pilot, speed)
    latency_ms = charge.median_s * 1000.0
    settings = DriveSettings(
        laps=cfg.laps,
        speed=speed,
        latency_s=charge.median_s,
        latency_samples=charge.samples,
        takeover_lateral=cfg.takeover_lateral,
    )
    data = str(Path(cfg.out) / "data")
    writer = DatasetWriter(data, info)
    listed = {rec["key"] for rec in writer.episodes}
    every = _jobs(cfg, tracks, rnd)
    jobs = [j for j in every if j.key not in listed]
    say(f"round {rnd}: {len(jobs)} drives of {pilot} at {latency_ms:.1f} ms ({charge.source})")
    drives = [
        res
        for _, res in imap_unordered(
            _drive_worker,
            jobs,
            cfg.workers,
            args=(pilot, expert, settings, data, info),
            initializer=one_thread,  # the latency is simulated, not measured
        )
    ]
    times["drive"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    tcfg = _train_config(cfg, Path(pilot), rnd, latency_ms)
    # Continued after a crash: its times cover this run of the command only.
    resumed = len(jobs) < len(every) or Path(tcfg.out).exists()
    best = _train(tcfg)
    times["train"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    new_pilot = str(Path(tcfg.out) / "best.json")
    ev = _evaluate(cfg, new_pilot, speed)
    times["evaluate"] = time.perf_counter() - t2
    times["round"] = time.perf_counter() - t0
    ds = open_dataset(data)
    mine = [r for r in ds.episodes if (r.get("extra") or {}).get("round") == rnd]
    return {
        "round": rnd,
        "pilot": new_pilot,
        "driven_by": pilot,
        "latency_ms": latency_ms,
        "latency_source": charge.source,
        "drives": sorted(drives, key=lambda d: d["key"]),
        "episodes": len(mine),
        "frames": sum(int(r["frames"]) for r in mine),
        "dataset_frames": len(ds),
        "train": {
            "best_epoch": best.get("epoch"),
            "epochs_run": best.get("epochs_run"),
            "stopped": best.get("stopped"),
            "test": best.get("test_metrics"),
        },
        "eval": ev,
        "seconds": times,
        "resumed": resumed,
        "finished": now_iso(),
    }


def _round_line(r: dict[str, Any]) -> str:
    ev = r["eval"]
    line = (
        f"round {r['round']}: autonomy {ev['autonomy']:.1f} %, mean |CTE| "
        f"{ev['mean_abs_cte']:.3f} m, {ev['interventions']} interventions, "
        f"{ev['clean_runs']}/{len(ev['runs'])} runs clean at {ev['latency_ms']:.1f} ms"
    )
    if "seconds" in r:
        s = r["seconds"]
        line += (
            f"; {r['episodes']} episodes, {r['frames']} frames; {s['round']:.0f} s "
            f"(drive {s['drive']:.0f}, train {s['train']:.0f}, evaluate {s['evaluate']:.0f})"
        )
    return line


# --------------------------------------------------------------------------- outputs
def _write_outputs(out: Path, state: dict[str, Any]) -> None:
    """``dagger.json``, ``summary.md`` and ``dagger.png`` (each written atomically)."""
    atomic_write_json(out / STATE_NAME, state)
    atomic_write_bytes(out / "summary.md", summary_markdown(state).encode("utf-8"))
    plot_rounds(state, out / "dagger.png")


def summary_markdown(state: dict[str, Any]) -> str:
    """The rounds as a Markdown table."""
    cfg = state["config"]
    lines = [
        "# DAgger at the pilot's latency",
        "",
        f"Started from `{cfg['pilot']}` on `{cfg['data']}`; latency {cfg['latency']}"
        + (f", estimated for {cfg['car']}" if cfg.get("car") else "")
        + f"; held-out evaluation on {', '.join(cfg['eval_tracks'])} "
        f"({', '.join(cfg['directions'])}), {cfg['eval_laps']} lap(s) per run.",
        "",
        "| round | autonomy % | mean abs CTE m | interventions | clean runs | latency ms "
        "| new episodes | new frames | takeovers | seconds (drive / train / eval) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in state["rounds"]:
        ev = r["eval"]
        s = r.get("seconds")
        takeovers = sum(d["takeovers"] for d in r.get("drives", []))
        lines.append(
            f"| {r['round']} | {ev['autonomy']:.1f} | {ev['mean_abs_cte']:.3f} | "
            f"{ev['interventions']} | {ev['clean_runs']}/{len(ev['runs'])} | "
            f"{ev['latency_ms']:.1f} | {r.get('episodes', '')} | {r.get('frames', '')} | "
            f"{takeovers if 'drives' in r else ''} | "
            + (
                f"{s['round']:.0f} ({s['drive']:.0f} / {s['train']:.0f} / {s['evaluate']:.0f})"
                + (" after a restart" if r.get("resumed") else "")
                if s
                else ""
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def plot_rounds(state: dict[str, Any], path: Path) -> Path:
    """PNG: autonomy (%) and mean |CTE| (m) on the held-out tracks per round."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # only when plotting
    from matplotlib.figure import Figure

    rounds = [r["round"] for r in state["rounds"]]
    fig = Figure(figsize=(9, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(rounds, [r["eval"]["autonomy"] for r in state["rounds"]], "o-")
    ax1.set_ylim(-5, 105)
    ax1.set_ylabel("autonomy %")
    ax2.plot(rounds, [r["eval"]["mean_abs_cte"] for r in state["rounds"]], "o-", color="tab:orange")
    ax2.set_ylabel("mean |CTE| (m)")
    ax2.set_ylim(bottom=0)
    cfg = state["config"]
    where = ", ".join(cfg["eval_tracks"])
    for ax in (ax1, ax2):
        ax.set_xlabel("DAgger round (0: the starting pilot)")
        ax.set_xticks(rounds)
        ax.grid(alpha=0.3)
    fig.suptitle(f"DAgger at the pilot's latency: held-out {where}", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
    return path


# --------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m training.dagger",
        description="DAgger at the pilot's latency: drive, label for t + L, append, retrain.",
    )
    add_config_args(ap, DaggerConfig)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = config_from_args(DaggerConfig, args)
        state = run_dagger(cfg)
    except (RunError, ValueError) as e:
        return fail(e)
    except OSError as e:
        return fail(os_error_line(e, getattr(args, "out", None)))
    except TrainingDiverged as e:
        print(f"error: training diverged: {e}", file=sys.stderr)
        return 1
    last = state["rounds"][-1]
    print(f"wrote {Path(cfg.out) / STATE_NAME}, summary.md, dagger.png; model: {last['pilot']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main, note="finished rounds kept; run again to continue"))
