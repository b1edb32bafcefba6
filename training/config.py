"""The behaviour-cloning training configuration (one frozen dataclass, JSON round trip).

Every run writes its resolved config to ``RUN_DIR/config.json``; ``python -m training.train
--config RUN_DIR/config.json`` reproduces the run from that file alone.

Regularisation, as the recipe lists it:

- **L2 weight decay** is *decoupled* (AdamW, Loshchilov & Hutter 2019): each step multiplies
  the weights by ``1 - lr * weight_decay`` next to the Adam update, instead of adding
  ``lambda/2 * ||w||^2`` to the loss (with Adam, a loss-side L2 term is rescaled by the
  adaptive step sizes and regularises unevenly). ``weight_decay`` is that lambda; it applies
  to convolution and dense weights only, not to biases or batch-norm scales/shifts.
- **Dropout** before every dense layer (rate ``dropout``).
- **Batch norm** after every convolution (``batch_norm``).
- **Data augmentation** (``flip`` etc.) and **early stopping** on the dev metric.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from tracks import HELDOUT_TRACKS
from tracks.common import DIRECTIONS, parse_size
from tracks.fileio import read_json
from training.augment import AugmentParams
from training.compensation import parse_compensation

# parse_size (the ``HxW`` syntax) is defined in tracks.common and kept importable here.
__all__ = ["CONFIG_VERSION", "TrainConfig", "json_dict", "parse_size"]

CONFIG_VERSION = 1
ARCHS = ("pilotnet", "compact", "compact_cls", "resnet_cls")
CLASS_ARCHS = ("compact_cls", "resnet_cls")
DEVICES = ("auto", "cpu", "cuda")
STOP_METRICS = ("auto", "dev_mae", "dev_mse", "dev_loss", "dev_macro_f1")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SWITCHES = ("auto", "on", "off")


def json_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as a JSON-ready dict (tuple fields become lists)."""
    d = asdict(config)
    for k, v in d.items():
        if isinstance(v, tuple):
            d[k] = list(v)
    return d


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a behaviour-cloning run."""

    # --- data
    data: str = ""  # dataset directory (written by python -m sim.record); required
    out: str = ""  # run directory (new or empty) for checkpoints, curves, metrics; required
    directions: tuple[str, ...] = DIRECTIONS  # keep only episodes driven in these directions
    max_frames: int | None = None  # cap on frames used: every k-th frame of each episode
    split_ratios: tuple[float, float, float] | None = field(
        default=None,
        metadata={
            "help": "train,dev,test fractions, e.g. 0.8,0.1,0.1; none: by data size (data.py)",
            "metavar": "TRAIN,DEV,TEST",
        },
    )
    split_seed: int = 0  # shuffles episodes within (track, direction) groups
    verify: bool = field(
        default=True,
        metadata={
            "help": "check every episode file's sha256 against the manifest while loading; "
            "--no-verify skips it to load faster, at a risk: a corrupted file then trains "
            "on wrong labels or images without any error"
        },
    )

    # --- model (agents.models.build_model)
    model: str = "compact"  # pilotnet | compact | compact_cls | resnet_cls
    width: float | None = None  # channel multiplier; none: the architecture's default
    depth: int | None = None  # conv depth (meaning per architecture); none: its default
    input_size: tuple[int, int] | None = (
        None  # model input (H, W); none: the architecture's default
    )
    batch_norm: bool = True  # batch norm after every convolution
    dropout: float = 0.2  # dropout rate before dense layers
    num_classes: int = 15  # steering bins of the classifiers (odd keeps a 0 bin)
    predict_throttle: bool = False  # regression models: also predict throttle
    normalize: str = "data"  # data: per-channel mean/std of the training frames; or imagenet

    # --- optimisation
    epochs: int = 30  # upper limit; early stopping usually ends sooner
    batch_size: int = 128  # frames per training step
    lr: float = 1e-3  # AdamW learning rate
    weight_decay: float = 1e-2  # decoupled AdamW weight decay lambda (conv and dense weights)
    loss: str = "mse"  # regression loss: "mse" or "huber" (classes: cross-entropy)
    huber_delta: float = 0.1  # Huber transition point, steering units
    throttle_weight: float = 0.5  # weight of the throttle term when predict_throttle
    label_smoothing: float = 0.0  # cross-entropy label smoothing for classifiers
    grad_clip: float | None = 5.0  # max global gradient norm; none disables
    lr_decay_patience: int = field(
        default=2,
        metadata={
            "help": "multiply lr by lr_decay_factor after this many epochs without dev "
            "improvement (and again after as many more); 0: constant lr"
        },
    )
    lr_decay_factor: float = 0.5  # the lr multiplier of --lr-decay-patience

    # --- early stopping
    patience: int = 5  # epochs without improvement of the dev metric before stopping
    min_delta: float = 1e-4  # smallest change of the dev metric that counts as improvement
    stop_metric: str = "auto"  # auto: dev_mae (regression), dev_macro_f1 (classes)

    # --- augmentation (training.augment)
    flip: bool = True  # mirror frames and negate steering
    jitter: float = 0.2  # brightness/contrast strength
    colour: float = 0.05  # per-channel colour gain strength
    shadow: float = 0.3  # probability of a random shadow
    shift: float = 0.0  # lateral shift (fraction of width) with steering correction; 0: off
    shift_steering: float = 0.5  # steering correction per image width of shift

    # --- diagnosis
    base_error: float | None = None  # irreducible steering MAE; none: estimate from the data

    # --- latency and driving (training.relabel, training.drive_check)
    compensate_latency: str | None = field(
        default=None,
        metadata={
            "help": "relabel every frame with the expert's command for the state at t + L, "
            "L the latency the pilot will have: milliseconds (70, 70ms) or car:NAME (the "
            "median latency estimated for this model on that car computer); none: the "
            "recorded labels",
            "metavar": "MS|car:NAME",
        },
    )
    init_from: str | None = field(
        default=None,
        metadata={
            "help": "warm start: the weights (and normalisation) of this checkpoint, a run "
            "directory or checkpoint JSON of the same model",
            "metavar": "CHECKPOINT",
        },
    )
    closed_loop_every: int = field(
        default=0,
        metadata={
            "help": "every K epochs drive the current weights in closed loop on the dev "
            "tracks and keep best_closed_loop beside best; 0: never",
            "metavar": "K",
        },
    )
    closed_loop_tracks: tuple[str, ...] | None = field(
        default=None,
        metadata={
            "help": "dev tracks of those drives; none: the dataset's own (training) tracks; "
            "never the held-out evaluation tracks"
        },
    )
    closed_loop_laps: int = 1  # laps per drive (each dev track, each trained direction)
    closed_loop_latency: str | None = field(
        default=None,
        metadata={
            "help": "latency of those drives (MS or car:NAME); none: --compensate-latency's, else 0",
            "metavar": "MS|car:NAME",
        },
    )

    # --- runtime
    seed: int = 0  # seeds weights, batch order, augmentation and dropout
    device: str = "auto"  # auto | cpu | cuda (cuda:N accepted)
    amp: bool = True  # with --precision auto: mixed precision on CUDA; --no-amp: fp32 everywhere
    precision: str = field(
        default="auto",
        metadata={
            "help": "auto: bf16 autocast on CUDA where supported, else fp16 with a grad "
            "scaler, fp32 on the CPU; or fp32, bf16 (CUDA or CPU), fp16 (CUDA)",
            "choices": PRECISIONS,
        },
    )
    channels_last: str = field(
        default="auto",
        metadata={
            "help": "NHWC memory layout for the model and its batches (tensor cores like it); "
            "auto: on for CUDA, off on the CPU (convolutions there are faster in NCHW)",
            "choices": SWITCHES,
        },
    )
    frames_on_device: str = field(
        default="auto",
        metadata={
            "help": "keep the uint8 train/dev frames in the GPU's memory (batches are then "
            "gathered and augmented there); auto: when they fit in half its free memory",
            "choices": SWITCHES,
        },
    )
    pin_memory: str = field(
        default="auto",
        metadata={
            "help": "frames left in host memory on CUDA are pinned, and batches are copied "
            "through pinned buffers asynchronously; auto: on for CUDA",
            "choices": SWITCHES,
        },
    )
    sync_batch_norm: bool = field(
        default=True,
        metadata={
            "help": "under torchrun with more than one process: batch-norm statistics over "
            "the global batch, as one process computes them (see training.distributed)"
        },
    )
    dist_timeout_s: float = 600.0  # under torchrun: how long a collective waits for the others
    deterministic: bool = True  # deterministic kernels (CPU results are reproducible)
    threads: int | None = None  # CPU threads for torch; none: torch's default
    eval_batch_size: int = 512  # frames per evaluation batch
    train_eval_frames: int = 5000  # frames of train evaluated each epoch for the train error
    flip_eval_frames: int = 1000  # dev frames used for the flip-consistency metric
    progress: bool = True  # tqdm progress bars
    tensorboard: bool = True  # TensorBoard events in RUN_DIR/tb

    version: int = field(default=CONFIG_VERSION, repr=False, metadata={"cli": False})

    def __post_init__(self) -> None:
        def check(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(msg)

        def finite(name: str) -> float:
            v = getattr(self, name)
            check(
                isinstance(v, (int, float)) and not isinstance(v, bool),
                f"{name} must be a number, got {v!r}",
            )
            check(math.isfinite(v), f"{name} must be finite, got {v}")
            return float(v)

        check(
            self.version == CONFIG_VERSION, f"config version {self.version} is not {CONFIG_VERSION}"
        )
        check(self.model in ARCHS, f"model must be one of {ARCHS}, got {self.model!r}")
        dirs = tuple(self.directions)
        check(
            len(dirs) > 0 and all(d in DIRECTIONS for d in dirs) and len(set(dirs)) == len(dirs),
            f"directions must be a non-empty subset of {DIRECTIONS}, got {list(dirs)}",
        )
        object.__setattr__(self, "directions", dirs)
        check(
            self.max_frames is None or self.max_frames >= 1,
            f"max_frames must be >= 1, got {self.max_frames}",
        )
        if self.split_ratios is not None:
            from training.data import check_ratios

            object.__setattr__(self, "split_ratios", check_ratios(self.split_ratios))
        check(
            self.width is None or 0.05 <= finite("width") <= 16,
            f"width must be in [0.05, 16], got {self.width}",
        )
        check(
            self.depth is None or 0 <= self.depth <= 8, f"depth must be in 0..8, got {self.depth}"
        )
        if self.input_size is not None:
            size = tuple(int(v) for v in self.input_size)
            check(len(size) == 2 and min(size) >= 16 and max(size) <= 1024,
                  f"input_size must be (H, W) with 16..1024 pixels, got {self.input_size}")  # fmt: skip
            object.__setattr__(self, "input_size", size)
        check(0 <= finite("dropout") < 1, f"dropout must be in [0, 1), got {self.dropout}")
        check(
            2 <= self.num_classes <= 255, f"num_classes must be in 2..255, got {self.num_classes}"
        )
        check(not (self.predict_throttle and self.model in CLASS_ARCHS),
              "predict_throttle is for regression models only")  # fmt: skip
        check(
            self.normalize in ("data", "imagenet"),
            f"normalize must be 'data' or 'imagenet', got {self.normalize!r}",
        )
        check(1 <= self.epochs <= 100_000, f"epochs must be >= 1, got {self.epochs}")
        check(
            1 <= self.batch_size <= 65_536, f"batch_size must be in 1..65536, got {self.batch_size}"
        )
        check(0 < finite("lr") <= 10, f"lr must be in (0, 10], got {self.lr}")
        check(
            0 <= finite("weight_decay") <= 10,
            f"weight_decay must be in [0, 10], got {self.weight_decay}",
        )
        check(self.loss in ("mse", "huber"), f"loss must be 'mse' or 'huber', got {self.loss!r}")
        check(finite("huber_delta") > 0, f"huber_delta must be > 0, got {self.huber_delta}")
        check(
            finite("throttle_weight") >= 0,
            f"throttle_weight must be >= 0, got {self.throttle_weight}",
        )
        check(
            0 <= finite("label_smoothing") < 1,
            f"label_smoothing must be in [0, 1), got {self.label_smoothing}",
        )
        check(self.grad_clip is None or (math.isfinite(self.grad_clip) and self.grad_clip > 0),
              f"grad_clip must be > 0 or None, got {self.grad_clip}")  # fmt: skip
        check(
            self.lr_decay_patience >= 0,
            f"lr_decay_patience must be >= 0, got {self.lr_decay_patience}",
        )
        check(
            0 < finite("lr_decay_factor") <= 1,
            f"lr_decay_factor must be in (0, 1], got {self.lr_decay_factor}",
        )
        check(self.patience >= 1, f"patience must be >= 1, got {self.patience}")
        check(finite("min_delta") >= 0, f"min_delta must be >= 0, got {self.min_delta}")
        check(
            self.stop_metric in STOP_METRICS,
            f"stop_metric must be one of {STOP_METRICS}, got {self.stop_metric!r}",
        )
        check(self.stop_metric != "dev_macro_f1" or self.output_kind == "classes",
              "stop_metric dev_macro_f1 needs a classifier model")  # fmt: skip
        self.augment  # noqa: B018  (validates the augmentation fields)
        check(self.base_error is None or (math.isfinite(self.base_error) and self.base_error >= 0),
              f"base_error must be >= 0, got {self.base_error}")  # fmt: skip
        for name in ("compensate_latency", "closed_loop_latency"):
            if getattr(self, name) is not None:
                parse_compensation(getattr(self, name), "--" + name.replace("_", "-"))
        check(
            self.closed_loop_every >= 0,
            f"closed_loop_every must be >= 0, got {self.closed_loop_every}",
        )
        check(
            self.closed_loop_laps >= 1,
            f"closed_loop_laps must be >= 1, got {self.closed_loop_laps}",
        )
        if self.closed_loop_tracks is not None:
            tracks = tuple(self.closed_loop_tracks)
            held = sorted(set(tracks) & set(HELDOUT_TRACKS))
            check(bool(tracks), "closed_loop_tracks must name at least one track")
            check(not held, f"closed_loop_tracks must not be the held-out tracks, got {held}")
            object.__setattr__(self, "closed_loop_tracks", tracks)
        check(self.device in DEVICES or str(self.device).startswith("cuda:"),
              f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")  # fmt: skip
        check(
            self.threads is None or self.threads >= 1, f"threads must be >= 1, got {self.threads}"
        )
        check(
            self.precision in PRECISIONS,
            f"precision must be one of {PRECISIONS}, got {self.precision!r}",
        )
        check(self.amp or self.precision in ("auto", "fp32"),
              f"--no-amp contradicts precision {self.precision}")  # fmt: skip
        for name in ("channels_last", "frames_on_device", "pin_memory"):
            value = getattr(self, name)
            check(value in SWITCHES, f"{name} must be one of {SWITCHES}, got {value!r}")
        check(
            0 < finite("dist_timeout_s") <= 86_400,
            f"dist_timeout_s must be in (0, 86400], got {self.dist_timeout_s}",
        )
        check(self.eval_batch_size >= 1, "eval_batch_size must be >= 1")
        check(self.train_eval_frames >= 1, "train_eval_frames must be >= 1")
        check(self.flip_eval_frames >= 0, "flip_eval_frames must be >= 0")
        check(
            isinstance(self.seed, int) and 0 <= self.seed < 2**31,
            f"seed must be in [0, 2^31), got {self.seed}",
        )

    # ------------------------------------------------------------------ derived values
    @property
    def output_kind(self) -> str:
        """``"classes"`` for the steering classifiers, ``"regression"`` otherwise."""
        return "classes" if self.model in CLASS_ARCHS else "regression"

    @property
    def resolved_stop_metric(self) -> str:
        if self.stop_metric != "auto":
            return self.stop_metric
        return "dev_macro_f1" if self.output_kind == "classes" else "dev_mae"

    @property
    def stop_mode(self) -> str:
        """``"max"`` when a larger dev metric is better (F1), else ``"min"``."""
        return "max" if self.resolved_stop_metric == "dev_macro_f1" else "min"

    @property
    def augment(self) -> AugmentParams:
        return AugmentParams(
            flip=self.flip,
            jitter=self.jitter,
            colour=self.colour,
            shadow=self.shadow,
            shift=self.shift,
            shift_steering=self.shift_steering,
        )

    @property
    def model_args(self) -> dict[str, Any]:
        """Arguments for ``agents.models.build_model`` (normalisation stats excluded)."""
        args: dict[str, Any] = {
            "batch_norm": self.batch_norm,
            "dropout": self.dropout,
        }
        if self.width is not None:
            args["width"] = self.width
        if self.depth is not None:
            args["depth"] = self.depth
        if self.input_size is not None:
            args["input_size"] = list(self.input_size)
        if self.output_kind == "classes":
            args["num_classes"] = self.num_classes
        else:
            args["predict_throttle"] = self.predict_throttle
        return args

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        return json_dict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any], **overrides: Any) -> TrainConfig:
        """Build from a dict (unknown keys are an error), with ``overrides`` on top."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown config keys: {unknown}")
        merged = {**d, **overrides}
        for k in ("directions", "split_ratios", "input_size", "closed_loop_tracks"):
            if isinstance(merged.get(k), list):
                merged[k] = tuple(merged[k])
        return cls(**merged)

    @classmethod
    def from_json(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        path = Path(path)
        d = read_json(path, what="training config")
        if not isinstance(d, dict):
            raise ValueError(f"{path}: config must be a JSON object")
        try:
            return cls.from_dict(d, **overrides)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from None
