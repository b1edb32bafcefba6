"""The data of one behaviour-cloning run: open, filter, split, check and load the frames.

:func:`prepare_data` does it once per run (a hyperparameter search prepares once and reuses
the result across trials); every problem with the dataset is a :class:`RunError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sim.dataset import Dataset, DatasetError, dataset_fingerprint, open_dataset
from training.config import TrainConfig
from training.data import (
    SPLITS,
    FrameSet,
    default_ratios,
    distribution_check,
    load_frames,
    split_episodes,
)
from training.errors import RunError

__all__ = ["PreparedData", "channel_stats", "load_test_frames", "open_run_dataset", "prepare_data"]


@dataclass
class PreparedData:
    """Everything loaded from the dataset for one run (reusable across search trials)."""

    root: str
    info: dict[str, Any]
    records: list[dict[str, Any]]  # all manifest records (indices below point here)
    fingerprint: str
    split: dict[str, list[int]]  # episode indices per split
    ratios: tuple[float, float, float]  # the frame ratios the split aimed at
    stride: int
    train: FrameSet
    dev: FrameSet
    check: dict[str, Any]
    warnings: list[str]
    # --compensate-latency: the latency (s) the labels are for, and the frames left out
    # per split for want of a state at t + L (training.relabel); None: recorded labels
    label_latency_s: float | None = None
    relabel_dropped: dict[str, int] | None = None

    def keys(self, split: str) -> list[str]:
        return [self.records[i]["key"] for i in self.split[split]]

    @property
    def image_size(self) -> tuple[int, int]:
        return (int(self.train.images.shape[1]), int(self.train.images.shape[2]))


def open_run_dataset(cfg: TrainConfig) -> Dataset:
    """The dataset of ``cfg.data`` (:class:`RunError` if it is missing or unreadable)."""
    root = Path(cfg.data)
    if not root.is_dir():
        raise RunError(f"--data {root}: no such directory")
    try:
        return open_dataset(root)
    except DatasetError as e:
        raise RunError(str(e)) from None


def _split(
    ds: Dataset, cfg: TrainConfig, keep: list[int], split_keys: dict[str, list[str]] | None
) -> dict[str, list[int]]:
    """Episode indices per split: a new split of the ``keep`` episodes, or the saved one."""
    if split_keys is not None:
        index = {rec["key"]: i for i, rec in enumerate(ds.episodes)}
        missing = [k for s in SPLITS for k in split_keys.get(s, []) if k not in index]
        if missing:
            raise RunError(f"{ds.root}: lacks episode {missing[0]!r} of the saved split")
        return {s: _by_key(ds, [index[k] for k in split_keys.get(s, [])]) for s in SPLITS}
    sub = split_episodes([ds.episodes[i] for i in keep], cfg.split_ratios, cfg.split_seed)
    return {s: _by_key(ds, [keep[j] for j in sub[s]]) for s in SPLITS}


def _by_key(ds: Dataset, episodes: list[int]) -> list[int]:
    """Episode indices in key order: frames are then loaded (and batches drawn) in the
    same order however the manifest lists them (parallel recorders finish in any order)."""
    return sorted(episodes, key=lambda i: str(ds.episodes[i]["key"]))


def _check_distribution(
    ds: Dataset, split: dict[str, list[int]], stride: int, verify: tuple[str, ...] = ()
) -> tuple[dict[str, Any], list[str]]:
    """The split's distribution check, on labels only (cheap: images are not read, except to
    check the sha256 of the files of the splits in ``verify``)."""
    steer, dirs, tracks = {}, {}, {}
    for s in SPLITS:
        if split[s]:
            a = ds.load_arrays(fields=["steering"], episodes=split[s], verify=s in verify)
        else:
            a = {"steering": np.empty(0, np.float32), "episode": np.empty(0, np.int32)}
        steer[s] = a["steering"][::stride] if stride > 1 else a["steering"]
        ep = a["episode"][::stride] if stride > 1 else a["episode"]
        dirs[s] = np.array([ds.episodes[i]["direction"] for i in ep], dtype=object)
        tracks[s] = np.array([ds.episodes[i]["track_id"] for i in ep], dtype=object)
    return distribution_check(steer, dirs, tracks)


def prepare_data(cfg: TrainConfig, split_keys: dict[str, list[str]] | None = None) -> PreparedData:
    """Open, filter, split (or re-use ``split_keys``), check and load train/dev frames."""
    ds = open_run_dataset(cfg)
    if len(ds.episodes) == 0 or len(ds) == 0:
        raise RunError(f"{ds.root}: the dataset has no frames")
    keep = [
        i
        for i, rec in enumerate(ds.episodes)
        if rec["direction"] in cfg.directions and rec["frames"] > 0
    ]
    if not keep:
        raise RunError(
            f"{ds.root}: no episodes driven {'/'.join(cfg.directions)} "
            f"({len(ds.episodes)} episodes in other directions)"
        )
    split = _split(ds, cfg, keep, split_keys)
    if not split["train"] or not split["dev"]:
        raise RunError(
            f"{ds.root}: {len(keep)} usable episodes cannot give both a train and a dev split "
            "(need at least 2 episodes; early stopping needs dev data)"
        )
    total = sum(ds.episodes[i]["frames"] for s in SPLITS for i in split[s])
    stride = 1 if cfg.max_frames is None else max(1, math.ceil(total / cfg.max_frames))
    # Every file is read and its sha256 checked (unless --no-verify) before the run directory
    # is written: the frames of train and dev now, and the test files, whose frames are loaded
    # only at the end of the run, now too, by the distribution check.
    load = {"stride": stride, "progress": cfg.progress, "verify": cfg.verify}
    latency = _label_latency(cfg)
    dropped: dict[str, int] = {}
    try:
        train = load_frames(ds, split["train"], desc="load train", **load)
        dev = load_frames(ds, split["dev"], desc="load dev", **load)
        if latency is not None:
            train, dropped["train"] = _compensate(ds, train, split["train"], stride, latency)
            dev, dropped["dev"] = _compensate(ds, dev, split["dev"], stride, latency)
        check, warnings = _check_distribution(
            ds, split, stride, verify=("test",) if cfg.verify else ()
        )
        if not split["test"]:
            warnings.append("no test episodes: the final test evaluation is skipped")
    except DatasetError as e:
        raise RunError(str(e)) from None
    if len(train) < 2:
        raise RunError(f"{ds.root}: only {len(train)} training frames")
    for name, fs in (("train", train), ("dev", dev)):
        if not (torch.isfinite(fs.steering).all() and torch.isfinite(fs.throttle).all()):
            raise RunError(f"{ds.root}: non-finite labels in the {name} split")
    return PreparedData(
        root=str(ds.root),
        info=dict(ds.info),
        records=[dict(r) for r in ds.episodes],
        fingerprint=dataset_fingerprint(ds),
        split=split,
        ratios=cfg.split_ratios or default_ratios(sum(ds.episodes[i]["frames"] for i in keep)),
        stride=stride,
        train=train,
        dev=dev,
        check=check,
        warnings=warnings,
        label_latency_s=latency,
        relabel_dropped=dropped or None,
    )


def _label_latency(cfg: TrainConfig) -> float | None:
    """The latency (s) of ``--compensate-latency``, None without it (:class:`RunError`
    for an unknown car)."""
    if cfg.compensate_latency is None:
        return None
    # The expert and the env's car (pybullet) are imported only by runs that relabel.
    from training.relabel import label_latency_s

    try:
        return label_latency_s(cfg.compensate_latency, cfg.model, cfg.model_args)
    except ValueError as e:
        raise RunError(str(e)) from None


def _compensate(
    ds: Dataset, frames: FrameSet, episodes: list[int], stride: int, latency_s: float
) -> tuple[FrameSet, int]:
    """``frames`` (of ``episodes``, every ``stride``-th frame) with the expert's command
    for the state at t + ``latency_s`` as labels, without the frames that have none;
    returns the frames and how many were left out."""
    from training.relabel import RelabelError, compensated_labels  # see _label_latency

    try:
        lab = compensated_labels(ds, episodes, stride, latency_s)
    except RelabelError as e:
        raise RunError(f"--compensate-latency: {e}") from None
    if len(lab.valid) != len(frames):  # pragma: no cover - the same episodes and stride
        raise RunError(f"relabelled {len(lab.valid)} frames, loaded {len(frames)}")
    keep = torch.from_numpy(np.flatnonzero(lab.valid))
    out = FrameSet(
        images=frames.images.index_select(0, keep.to(frames.images.device)),
        steering=torch.from_numpy(lab.steering[lab.valid]).to(frames.steering.device),
        throttle=torch.from_numpy(lab.throttle[lab.valid]).to(frames.throttle.device),
        episode=frames.episode[lab.valid],
    )
    return out, int(len(lab.valid) - len(keep))


def channel_stats(frames: FrameSet, seed: int, n: int = 2000) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of up to ``n`` random frames (the model's normalisation)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(frames), generator=g)[:n]
    x = frames.images.index_select(0, idx.to(frames.images.device)).to("cpu").double() / 255.0
    mean = x.mean(dim=(0, 1, 2))
    std = x.std(dim=(0, 1, 2)).clamp_min(1e-3)
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


def load_test_frames(cfg: TrainConfig, data: PreparedData) -> FrameSet:
    """The test split's frames, every one of them (loaded only at the end of a run).

    ``max_frames`` strides the frames a run trains and early-stops on, to bound its cost;
    testing costs one forward pass per frame, and a strided test split leaves the rare
    outer steering bins a handful of frames, so macro F1 moved from seed to seed with
    which few frames those were."""
    ds = open_run_dataset(cfg)
    try:
        frames = load_frames(
            ds,
            data.split["test"],
            stride=1,
            progress=cfg.progress,
            desc="load test",
            verify=cfg.verify,
        )
    except DatasetError as e:
        raise RunError(str(e)) from None
    if data.label_latency_s is None:
        return frames
    frames, dropped = _compensate(ds, frames, data.split["test"], 1, data.label_latency_s)
    if data.relabel_dropped is not None:
        data.relabel_dropped["test"] = dropped
    return frames
