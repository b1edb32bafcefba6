"""The episode recorder of ``python -m sim.drive``: frames held in memory, written as episodes.

Frames (the image seen, the state, the command given for it: the label) are kept until
:meth:`EpisodeRecorder.flush`, which writes them as one episode through
``sim.dataset.DatasetWriter`` (temp file, fsync, rename, manifest). The frame fields
and the dataset info are those of ``python -m sim.record``. A failed write keeps the
frames, so the session's final flush can write them again.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sim.dataset import DRIVE_ENDINGS, DatasetWriter, EpisodeMeta
from sim.record import FRAME_KEYS, append_frame, frames_to_arrays

if TYPE_CHECKING:  # the session imports this module: no import cycle at run time
    from sim.drive_session import DriveConfig

__all__ = ["DRIVERS", "EpisodeRecorder"]

#: Who gave a frame's command: the person, the autopilot, or the person overriding it.
DRIVERS = ("human", "expert", "takeover")


def _key_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "", text) or "track"


class EpisodeRecorder:
    """Frames of the episode being recorded, kept in memory until :meth:`flush`."""

    def __init__(self, out: str | Path, info: dict, config: DriveConfig) -> None:
        self.out = Path(out)
        self.info = info
        self.config = config
        self.frame_keys = FRAME_KEYS
        self._writer: DatasetWriter | None = None
        self._stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
        self._count = 0
        self.episodes_written = 0
        self.frames_written = 0
        self.last_written: str | None = None
        self._clear()

    def _clear(self) -> None:
        self.frames: dict[str, list] = {k: [] for k in self.frame_keys}
        self.drivers: list[str] = []
        self.context: dict[str, Any] | None = None
        self.expert_meta: dict | None = None
        self.lap0 = 0

    def writer(self) -> DatasetWriter:
        """The dataset writer, created on first use (checks an existing dataset's info)."""
        if self._writer is None:
            self._writer = DatasetWriter(self.out, self.info)
        return self._writer

    def __len__(self) -> int:
        return len(self.drivers)

    def add(
        self,
        obs: np.ndarray,
        info: dict,
        label: np.ndarray,
        driver: str,
        context: Callable[[], dict[str, Any]],
        expert_meta: Callable[[], dict] | None = None,
    ) -> None:
        """One frame: what the camera saw, the state, and the command given for it.

        ``context()`` (track, direction, seed ...) is called on an episode's first frame;
        ``expert_meta()`` on its first frame driven by the autopilot.
        """
        if driver not in DRIVERS:
            raise ValueError(f"driver must be one of {DRIVERS}, got {driver!r}")
        if self.context is None:
            self.context = dict(context())
            self.lap0 = int(info["lap"])
        append_frame(
            self.frames, np.asarray(obs, dtype=np.uint8), label, info, driver == "takeover"
        )
        self.drivers.append(driver)
        if driver != "human" and expert_meta is not None and self.expert_meta is None:
            self.expert_meta = expert_meta()

    @staticmethod
    def segments(drivers: Sequence[str]) -> list[dict[str, Any]]:
        """Run-length ``[{"start", "end", "driver"}]`` (end exclusive) of per-frame drivers."""
        out: list[dict[str, Any]] = []
        for i, d in enumerate(drivers):
            if out and out[-1]["driver"] == d:
                out[-1]["end"] = i + 1
            else:
                out.append({"start": i, "end": i + 1, "driver": d})
        return out

    @staticmethod
    def source(drivers: Sequence[str]) -> str:
        kinds = set(drivers)
        if kinds == {"expert"}:
            return "expert"
        if kinds == {"human"}:
            return "human"
        return "takeover"

    def arrays(self) -> dict[str, np.ndarray]:
        return frames_to_arrays(self.frames)

    def _new_key(self, track_name: str, direction: str) -> str:
        writer = self.writer()
        while True:
            self._count += 1
            key = f"manual-{_key_part(track_name)}-{direction}-{self._stamp}-{self._count:03d}"
            if not writer.has_episode(key):
                return key

    def flush(self, ended: str, laps_now: int, lap_times: Sequence[float]) -> dict | None:
        """Write the frames held (if any) as one episode; returns its manifest record.

        ``ended`` is why the session ended it (a key of ``sim.dataset.DRIVE_ENDINGS``: kept
        in ``extra["ended"]``); the episode's ``ended`` is the ending that is.
        """
        if ended not in DRIVE_ENDINGS:
            raise ValueError(f"ended must be one of {sorted(DRIVE_ENDINGS)}, got {ended!r}")
        if not self.drivers:
            self._clear()
            return None
        ctx = self.context or {}
        drivers = list(self.drivers)
        meta = EpisodeMeta(
            track_id=ctx["track_id"],
            track_hash=ctx["track_hash"],
            direction=ctx["direction"],
            seed=ctx["seed"],
            source=self.source(drivers),
            laps=max(0, int(laps_now) - self.lap0),
            ended=DRIVE_ENDINGS[ended],
            expert=self.expert_meta,
            extra={
                "recorder": "sim.drive",
                "track_spec": ctx["track_spec"],
                "ended": ended,
                "segments": self.segments(drivers),
                "takeover_frames": drivers.count("takeover"),
                "lap_times": [float(x) for x in lap_times],  # env lap times since its reset
                "human": ctx.get("human"),
                "drive_config": _config_dict(self.config),
            },
        )
        key = self._new_key(ctx["track_id"], ctx["direction"])
        record = self.writer().write_episode(key, self.arrays(), meta)
        # cleared only once written: after a failed write the frames stay, for the final flush
        self._clear()
        self.episodes_written += 1
        self.frames_written += record["frames"]
        self.last_written = key
        print(
            f"wrote episode {key}: {record['frames']} frames, source {record['source']}, "
            f"ended {ended}"
        )
        return record


def _config_dict(cfg: DriveConfig) -> dict[str, Any]:
    d = asdict(cfg)
    d["image_size"] = list(cfg.image_size)
    return d
