"""Data for behaviour cloning: episode splits, the distribution check, frames as tensors.

- :func:`split_episodes` splits *by episode* (consecutive frames are near duplicates, so
  frames of one episode in two splits would leak the dev set into training), stratified by
  ``(track_id, direction)`` so every split sees the same mix of tracks and directions.
- :func:`default_ratios` follows the data size: 60/20/20 up to 100k frames; above that dev
  and test shrink to about 10k frames each (99/0.5/0.5 at 2M frames), which is plenty to
  compare models and leaves the rest for training.
- :func:`distribution_check` compares dev and test with train (direction mix, steering mean,
  steering histogram, track mix) and returns warnings with the numbers.
- :class:`FrameSet` keeps a split's frames as one ``uint8`` tensor (on the training device
  when it fits) and gathers batches with index tensors: no per-item ``Dataset`` /
  ``DataLoader`` in the hot path; conversion and augmentation happen on the device.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tracks.progress import progress_bar
from training.metrics import histogram_distance, total_variation

__all__ = [
    "SPLITS",
    "FrameSet",
    "default_ratios",
    "distribution_check",
    "index_batches",
    "load_frames",
    "split_episodes",
]

logger = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
#: Up to this many frames, the classic 60/20/20 split.
SMALL_DATA_FRAMES = 100_000
#: Dev and test size for large datasets.
LARGE_HOLDOUT_FRAMES = 10_000

# Distribution-check thresholds (dev or test against train).
MAX_DIRECTION_GAP = 0.10  # |fraction of ccw frames difference|
MAX_STEERING_MEAN_GAP = 0.05  # |steering mean difference|
MAX_HISTOGRAM_TV = 0.15  # total variation between steering histograms
MAX_TRACK_TV = 0.15  # total variation between track mixes (frame-weighted)


def default_ratios(n_frames: int) -> tuple[float, float, float]:
    """(train, dev, test) fractions for a dataset of ``n_frames`` frames.

    60/20/20 up to 100k frames. Above, dev and test each get
    ``max(10k, 20k * 100k / n)`` frames: continuous at 100k (20k each), 10k each from 200k
    frames on, i.e. 99/0.5/0.5 at 2M frames and finer beyond.
    """
    if n_frames <= SMALL_DATA_FRAMES:
        return (0.6, 0.2, 0.2)
    held = max(LARGE_HOLDOUT_FRAMES, 0.2 * SMALL_DATA_FRAMES * SMALL_DATA_FRAMES / n_frames)
    f = held / n_frames
    return (1.0 - 2 * f, f, f)


def check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    """Validate (train, dev, test) fractions: train > 0, all >= 0, sum 1 (normalised)."""
    if len(ratios) != 3:
        raise ValueError(f"split ratios need 3 values (train, dev, test), got {list(ratios)}")
    r = [float(v) for v in ratios]
    if not all(math.isfinite(v) and v >= 0 for v in r) or r[0] <= 0:
        raise ValueError(f"split ratios must be >= 0 with train > 0, got {r}")
    s = sum(r)
    if abs(s - 1.0) > 1e-6 and abs(s - 100.0) > 1e-4:
        raise ValueError(f"split ratios must sum to 1 (or 100), got {r} (sum {s})")
    return (r[0] / s, r[1] / s, r[2] / s)


def split_episodes(
    records: Sequence[Mapping[str, Any]],
    ratios: Sequence[float] | None = None,
    seed: int = 0,
) -> dict[str, list[int]]:
    """Assign every episode (index into ``records``) to train, dev or test.

    Episodes are grouped by ``(track_id, direction)``; within each group they are shuffled
    (seeded) and handed out one by one to the split furthest below its frame target. A group
    with at least 3 episodes gets at least one in each split whose ratio is > 0 (2 episodes:
    train and one of dev/test; 1 episode: wherever the totals need it). Rounding surpluses carry over from group
    to group, so the totals follow ``ratios`` even when groups are small. Frames of one
    episode never land in two splits. The split depends on the episodes (their keys) and
    ``seed``, not on the order of ``records``.
    """
    if not records:
        raise ValueError("no episodes to split")
    n_frames = sum(int(r["frames"]) for r in records)
    r = check_ratios(ratios) if ratios is not None else default_ratios(n_frames)
    rng = np.random.default_rng(seed)
    groups: dict[tuple[str, str], list[int]] = {}
    for i, rec in enumerate(records):
        groups.setdefault((str(rec["track_id"]), str(rec["direction"])), []).append(i)
    # Episodes in key order before the seeded shuffle: the manifest lists them in
    # the order parallel recording workers finished, which varies from run to
    # run, and the split of the same episodes must not.
    for members in groups.values():
        members.sort(key=lambda i: str(records[i].get("key", i)))
    carry = np.zeros(3)  # frames each split is owed from earlier groups
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    for gkey in sorted(groups):
        members = [groups[gkey][j] for j in rng.permutation(len(groups[gkey]))]
        frames = np.array([int(records[i]["frames"]) for i in members], dtype=np.float64)
        want = np.array(r) * frames.sum() + carry
        got = np.zeros(3)
        # Splits that must get one episode of this group, in order of priority.
        eligible = [0] + sorted((s for s in (1, 2) if r[s] > 0), key=lambda s: -want[s])
        # A lone episode goes wherever the totals need it (its group then misses from
        # the other splits, which the distribution check reports).
        needs = set(eligible[: len(members)]) if len(members) > 1 else set()
        for j, (ep, nf) in enumerate(zip(members, frames, strict=True)):
            remaining = len(members) - j
            unmet = [s for s in eligible if s in needs]
            if len(unmet) >= remaining:
                candidates = unmet
            else:
                candidates = [s for s in range(3) if r[s] > 0]
            s = max(candidates, key=lambda k: (want[k] - got[k], -k))
            out[SPLITS[s]].append(ep)
            got[s] += nf
            needs.discard(s)
        carry = want - got
    return {s: sorted(v) for s, v in out.items()}


def distribution_check(
    steering: Mapping[str, np.ndarray],
    direction: Mapping[str, np.ndarray],
    track: Mapping[str, np.ndarray],
) -> tuple[dict[str, Any], list[str]]:
    """Compare dev and test with train; returns ``(report, warnings)``.

    Arguments map split name to per-frame arrays (steering values, direction strings,
    track ids). The recipe insists that all splits come from the same distribution; a
    warning here means dev/test results will not predict what training optimises.
    """
    report: dict[str, Any] = {}
    warnings: list[str] = []

    def stats(s: str) -> dict[str, Any]:
        st = np.asarray(steering[s], dtype=np.float64)
        dirs = np.asarray(direction[s])
        tracks, counts = np.unique(np.asarray(track[s]), return_counts=True)
        return {
            "frames": int(st.size),
            "ccw_fraction": float(np.mean(dirs == "ccw")) if dirs.size else float("nan"),
            "steering_mean": float(st.mean()) if st.size else float("nan"),
            "steering_std": float(st.std()) if st.size else float("nan"),
            "tracks": {str(t): int(c) for t, c in zip(tracks, counts, strict=True)},
        }

    for s in SPLITS:
        report[s] = stats(s)
    tr = report["train"]
    for s in ("dev", "test"):
        cur = report[s]
        if cur["frames"] == 0:
            continue
        all_tracks = sorted(set(tr["tracks"]) | set(cur["tracks"]))
        gaps = {
            "direction_gap": abs(cur["ccw_fraction"] - tr["ccw_fraction"]),
            "steering_mean_gap": abs(cur["steering_mean"] - tr["steering_mean"]),
            "steering_histogram_tv": histogram_distance(steering["train"], steering[s]),
            "track_tv": total_variation(
                [tr["tracks"].get(t, 0) for t in all_tracks],
                [cur["tracks"].get(t, 0) for t in all_tracks],
            ),
        }
        cur.update({k: float(v) for k, v in gaps.items()})
        if gaps["direction_gap"] > MAX_DIRECTION_GAP:
            warnings.append(
                f"{s} has {100 * cur['ccw_fraction']:.0f}% ccw frames, train "
                f"{100 * tr['ccw_fraction']:.0f}% (gap {gaps['direction_gap']:.2f} > "
                f"{MAX_DIRECTION_GAP})"
            )
        if gaps["steering_mean_gap"] > MAX_STEERING_MEAN_GAP:
            warnings.append(
                f"{s} steering mean {cur['steering_mean']:+.3f}, train "
                f"{tr['steering_mean']:+.3f} (gap {gaps['steering_mean_gap']:.3f} > "
                f"{MAX_STEERING_MEAN_GAP})"
            )
        if gaps["steering_histogram_tv"] > MAX_HISTOGRAM_TV:
            warnings.append(
                f"{s} steering histogram differs from train: total variation "
                f"{gaps['steering_histogram_tv']:.3f} > {MAX_HISTOGRAM_TV}"
            )
        if gaps["track_tv"] > MAX_TRACK_TV:
            mix = ", ".join(
                f"{t} {cur['tracks'].get(t, 0)}/{tr['tracks'].get(t, 0)}" for t in all_tracks
            )
            warnings.append(
                f"{s} track mix differs from train: total variation {gaps['track_tv']:.3f} > "
                f"{MAX_TRACK_TV} (frames {s}/train: {mix})"
            )
    return report, warnings


# --------------------------------------------------------------------------- frames in memory
@dataclass
class FrameSet:
    """One split's frames: ``images`` uint8 ``(N, H, W, 3)``, labels ``(N,)`` float32.

    ``images`` may live on the CPU (then batches are copied to the device, from pinned
    memory on CUDA) or on the training device (then a batch is one ``index_select``).
    """

    images: torch.Tensor
    steering: torch.Tensor
    throttle: torch.Tensor
    episode: np.ndarray  # int32 episode index (into Dataset.episodes) per frame
    # pinned buffers for batches of host frames on their way to a GPU (made on first use)
    _stage: _PinnedStage | None = field(default=None, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.images.numel() * self.images.element_size())

    def to(
        self,
        device: torch.device,
        *,
        max_fraction: float = 0.5,
        on_device: str = "auto",
        pin: str = "auto",
    ) -> FrameSet:
        """Move the frames to ``device``; returns ``self`` (moved or not).

        Labels always move (they are small). On CUDA the ``uint8`` frames move when
        ``on_device`` is ``on``, or ``auto`` and they fit in ``max_fraction`` of the GPU's
        free memory; frames left in host memory are pinned (``pin`` ``auto`` or ``on``),
        and batches then reach the GPU through pinned staging buffers asynchronously.
        Other devices: the frames move (``on_device`` ``off`` keeps them on the CPU).
        """
        device = torch.device(device)
        self.steering = self.steering.to(device)
        self.throttle = self.throttle.to(device)
        if device.type == "cpu":
            return self
        move = on_device == "on"
        if on_device == "auto":
            if device.type == "cuda":
                free, _ = torch.cuda.mem_get_info(device)
                move = self.nbytes <= max_fraction * free
                if not move:
                    logger.info(
                        "frames (%.1f GB) stay in host memory (%.1f GB free on %s)",
                        self.nbytes / 1e9,
                        free / 1e9,
                        device,
                    )
            else:
                move = True
        if move:
            try:
                self.images = self.images.to(device)
            except torch.OutOfMemoryError:
                raise ValueError(
                    f"the frames ({self.nbytes / 1e9:.1f} GB) do not fit in the memory of "
                    f"{device}: use --frames-on-device auto or off"
                ) from None
        elif device.type == "cuda" and pin != "off" and not self.images.is_pinned():
            self.images = self.images.pin_memory()
        return self

    def batch(
        self, index: torch.Tensor, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(images uint8 NHWC, steering, throttle)`` of frames ``index`` on ``device``."""
        if self.images.device != index.device:
            host_index = index.to(self.images.device)
        else:
            host_index = index
        device = torch.device(device)
        if device.type == "cuda" and self.images.device.type == "cpu" and self.images.is_pinned():
            x = self._staged(host_index, device)
        else:
            x = self.images.index_select(0, host_index).to(device, non_blocking=True)
        idx = index.to(self.steering.device)
        return x, self.steering.index_select(0, idx), self.throttle.index_select(0, idx)

    def _staged(self, index: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Gather into a pinned buffer and copy it to the GPU asynchronously (a gather into
        pageable memory would make the copy synchronous)."""
        if self._stage is None:
            self._stage = _PinnedStage()
        return self._stage.copy(self.images, index, device)


class _PinnedStage:
    """Two pinned host buffers used in turn for batches on their way to the GPU.

    While the GPU copies one, the CPU gathers the next batch into the other; before a
    buffer is reused, the copy that last read it must have finished (its CUDA event).
    """

    def __init__(self) -> None:
        self.bufs: list[torch.Tensor] = []
        self.events: list[Any] = [None, None]
        self.next = 0

    def copy(self, images: torch.Tensor, index: torch.Tensor, device: torch.device) -> torch.Tensor:
        n = len(index)
        if not self.bufs or self.bufs[0].shape[0] < n:
            shape = (n, *images.shape[1:])
            self.bufs = [torch.empty(shape, dtype=images.dtype).pin_memory() for _ in range(2)]
            self.events = [None, None]
        k, self.next = self.next, 1 - self.next
        if self.events[k] is not None:
            self.events[k].synchronize()
        buf = self.bufs[k][:n]
        torch.index_select(images, 0, index, out=buf)
        x = buf.to(device, non_blocking=True)
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(device))
        self.events[k] = event
        return x


def index_batches(
    n: int,
    batch_size: int,
    *,
    generator: torch.Generator | None = None,
    shuffle: bool = True,
    drop_last: bool = False,
) -> list[torch.Tensor]:
    """Index tensors covering ``range(n)`` in batches (shuffled with ``generator``)."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    batches = list(order.split(batch_size))
    if drop_last and batches and len(batches[-1]) < batch_size and len(batches) > 1:
        batches = batches[:-1]
    return batches


def load_frames(
    ds: Any,
    episodes: Sequence[int],
    *,
    stride: int = 1,
    progress: bool = False,
    desc: str = "load",
    verify: bool = True,
) -> FrameSet:
    """Load ``episodes`` of ``ds`` (a ``sim.dataset.Dataset``), keeping every ``stride``-th frame.

    With ``stride`` 1 the episodes are read straight into the frame set's arrays (by the
    dataset's reader threads); otherwise one at a time into preallocated arrays, so the peak
    memory is the kept frames plus one episode. With ``verify`` (the default) each file's
    sha256 is checked against the manifest: a damaged file is a ``sim.dataset.DatasetError``
    naming it.
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    fields = ["image", "steering", "throttle"]
    if stride == 1 and episodes:
        with progress_bar(
            total=len(episodes), desc=desc, unit="ep", enabled=progress, leave=False
        ) as bar:
            a = ds.load_arrays(
                fields=fields, episodes=episodes, verify=verify, on_episode=lambda _: bar.update()
            )
        return FrameSet(
            images=torch.from_numpy(a["image"]),
            steering=torch.from_numpy(a["steering"]),
            throttle=torch.from_numpy(a["throttle"]),
            episode=a["episode"],
        )
    counts = [len(range(0, int(ds.episodes[i]["frames"]), stride)) for i in episodes]
    total = int(sum(counts))
    hw = ds.image_size
    images = steering = throttle = None
    episode = np.empty(total, dtype=np.int32)
    pos = 0
    for i, n in progress_bar(
        list(zip(episodes, counts, strict=True)),
        desc=desc,
        unit="ep",
        enabled=progress,
        leave=False,
    ):
        a = ds.load_arrays(fields=fields, episodes=[i], verify=verify)
        if images is None:
            hw = tuple(a["image"].shape[1:3])
            images = np.empty((total, *hw, 3), dtype=np.uint8)
            steering = np.empty(total, dtype=np.float32)
            throttle = np.empty(total, dtype=np.float32)
        images[pos : pos + n] = a["image"][::stride]
        steering[pos : pos + n] = a["steering"][::stride]
        throttle[pos : pos + n] = a["throttle"][::stride]
        episode[pos : pos + n] = i
        pos += n
    if images is None:
        h, w = hw or (0, 0)
        images = np.empty((0, h, w, 3), dtype=np.uint8)
        steering = np.empty(0, dtype=np.float32)
        throttle = np.empty(0, dtype=np.float32)
    return FrameSet(
        images=torch.from_numpy(images),
        steering=torch.from_numpy(steering),
        throttle=torch.from_numpy(throttle),
        episode=episode,
    )
