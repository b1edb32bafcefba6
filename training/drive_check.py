"""Checkpoint choice by driving: the current weights drive the dev tracks in closed loop.

Dev loss says how well a model imitates the expert's labels on recorded frames; it does
not say how the model drives, where its own errors take it to frames the expert never
recorded. With ``--closed-loop-every K`` the run drives the current weights every K
epochs (and after the last one) through the one closed loop (``agents.loop.ClosedLoop``:
the same latency model and interventions as evaluation), one run per dev track and
trained direction, and keeps ``best_closed_loop.*`` beside ``best.*``.

Dev tracks are the dataset's own tracks (or ``--closed-loop-tracks``), never the
held-out evaluation tracks: choosing a checkpoint on the tracks it is judged on would
leak the test into training. The drives start at the start line with the run's seed,
at the latency of ``--closed-loop-latency`` (default: ``--compensate-latency``'s, else 0).

The score of a check is the leaderboard's: 100 x the mean over runs of autonomy
fraction x completed-lap fraction; a tie (several checkpoints that all lap cleanly) goes
to the smaller mean |cross-track error|.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from agents.cnn import CNNPilot, write_checkpoint
from agents.loop import ClosedLoop, RunResult
from sim.env import TrackEnv
from tracks.common import now_iso
from training.compensation import parse_compensation

__all__ = ["CLOSED_LOOP_COLUMNS", "DriveCheck", "best_closed_loop"]

logger = logging.getLogger(__name__)

#: Per-epoch metrics a check adds (None in epochs without one).
CLOSED_LOOP_COLUMNS = (
    "closed_loop_score",
    "closed_loop_abs_cte",
    "closed_loop_interventions",
    "is_best_closed_loop",
)
#: The checkpoint name of the best closed-loop epoch.
CHECKPOINT_NAME = "best_closed_loop"


def best_closed_loop(history: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The history row of the best closed-loop check so far (highest score, then the
    smallest mean |CTE|, then the earliest), or None before the first check."""
    rows = [r for r in history if r.get("closed_loop_score") is not None]
    if not rows:
        return None
    return min(rows, key=lambda r: (-r["closed_loop_score"], r["closed_loop_abs_cte"], r["epoch"]))


@dataclass(frozen=True)
class DriveCheck:
    """Drive a model on the dev tracks; one per run (:meth:`from_config`)."""

    tracks: tuple[str, ...]  # dev tracks (specs TrackEnv accepts)
    directions: tuple[str, ...]
    every: int  # epochs between checks
    laps: int
    latency_s: float
    camera: tuple[int, int]  # the camera the training frames were recorded with
    speed: float  # m/s, cruise control
    seed: int

    @classmethod
    def from_config(cls, cfg: Any, data: Any, label_latency_s: float | None) -> DriveCheck | None:
        """The check of a run (``cfg``: its ``TrainConfig``, ``data``: its ``PreparedData``);
        None without ``--closed-loop-every``."""
        if not cfg.closed_loop_every:
            return None
        if cfg.closed_loop_latency is not None:
            comp = parse_compensation(cfg.closed_loop_latency, "--closed-loop-latency")
            if comp.car is not None:
                from training.relabel import label_latency_s as resolve  # the model's MFLOP

                latency = resolve(cfg.closed_loop_latency, cfg.model, cfg.model_args)
            else:
                latency = comp.latency_s()
        else:
            latency = label_latency_s or 0.0
        records = [data.records[i] for i in data.split["train"]]
        tracks = cfg.closed_loop_tracks or tuple(
            sorted({(r.get("extra") or {}).get("track_spec") or r["track_id"] for r in records})
        )
        speeds = [float((r.get("expert") or {}).get("cruise_speed", 2.0)) for r in records]
        return cls(
            tracks=tuple(tracks),
            directions=tuple(cfg.directions),
            every=int(cfg.closed_loop_every),
            laps=int(cfg.closed_loop_laps),
            latency_s=float(latency),
            camera=tuple(data.image_size),
            speed=max(speeds) if speeds else 2.0,
            seed=int(cfg.seed),
        )

    def due(self, epoch: int, last: bool) -> bool:
        """A check after this epoch: every ``every`` epochs and after the run's last."""
        return epoch % self.every == 0 or last

    def drive(self, model: torch.nn.Module, device: torch.device) -> dict[str, Any]:
        """The model's closed-loop metrics on the dev tracks (its mode is restored)."""
        was_training = model.training
        t0 = time.perf_counter()
        record = {"dataset": {"image_size": list(self.camera)}}
        pilot = CNNPilot(model, record=record, device=device, name="closed-loop-check")
        runs: list[RunResult] = []
        try:
            for track in self.tracks:
                for direction in self.directions:
                    runs.append(self._run(pilot, track, direction))
        finally:
            model.train(was_training)
        n = len(runs)
        return {
            "closed_loop_score": 100.0 * sum(r.score for r in runs) / n,
            "closed_loop_abs_cte": sum(r.mean_abs_cte for r in runs) / n,
            "closed_loop_interventions": sum(r.interventions for r in runs),
            "closed_loop_seconds": time.perf_counter() - t0,
        }

    def _run(self, pilot: CNNPilot, track: str, direction: str) -> RunResult:
        env = TrackEnv(
            track=track, direction=direction, image_size=self.camera, fixed_speed=self.speed
        )
        try:
            loop = ClosedLoop(env, pilot, latency_s=self.latency_s, trajectory_hz=None)
            loop.reset(seed=self.seed)
            return loop.run(self.laps)
        finally:
            env.close()

    def after_epoch(self, trainer: Any, run_dir: Path, record: dict[str, Any]) -> bool:
        """Drive after the epoch just trained if due; its metrics go into the epoch's
        history row, and ``best_closed_loop.*`` is written when it is the best so far.
        Returns whether it was."""
        row = trainer.history[-1]
        epoch = int(row["epoch"])
        if not self.due(epoch, trainer.done):  # called after run_epoch: epoch is trainer.epoch
            return False
        row.update(self.drive(trainer.model, trainer.device))
        best = best_closed_loop(trainer.history)
        improved = best is row
        row["is_best_closed_loop"] = int(improved)
        logger.info(
            "epoch %3d  closed loop on %s: score %.1f, mean |CTE| %.3f m, %d interventions%s",
            epoch, ",".join(self.tracks), row["closed_loop_score"], row["closed_loop_abs_cte"],
            row["closed_loop_interventions"], "  *best closed loop*" if improved else "",
        )  # fmt: skip
        if improved:
            write_checkpoint(
                run_dir,
                CHECKPOINT_NAME,
                trainer.model,
                {
                    **record,
                    "epoch": epoch,
                    "metrics": dict(row),
                    "chosen_by": "closed loop",
                    "closed_loop": self.describe(),
                    "created": now_iso(),
                },
            )
        return improved

    def describe(self) -> dict[str, Any]:
        """The check's settings, for the checkpoint and the run summary."""
        return {
            "tracks": list(self.tracks),
            "directions": list(self.directions),
            "every": self.every,
            "laps": self.laps,
            "latency_ms": self.latency_s * 1000.0,
            "speed": self.speed,
            "seed": self.seed,
        }
