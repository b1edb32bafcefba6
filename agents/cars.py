"""Reference car computers: what a pilot's latency would be on a hobby car's board and runtime.

A car computer is a board *and* its runtime: DonkeyCar's KerasLinear on a Raspberry Pi 4
takes ~295 ms under TensorFlow 2.3 ``model.predict``, ~30 ms under TF 2.2 and ~20 ms as
TFLite. Each :class:`CarComputer` estimates the median batch-1 latency of a network from
its counted FLOPs (:func:`agents.flops.count_mflop`) with two constants::

    median_ms = overhead_ms + ms_per_mflop * mflop

(small nets are overhead-bound: the per-call term dominates below ~100 MFLOP on every
car here), and its tail as ratios to the median. Every constant is derived from
published measurements in ``docs/car-computers.md`` (arithmetic included); the
``sources`` field of each car names the figures it comes from.

:meth:`CarEstimate.samples_s` turns an estimate into a reproducible latency
distribution for the closed loop to draw each inference's latency from.

The model lives in ``agents`` (numpy only at import), beside :mod:`agents.flops`, because
both the evaluator (the latency a pilot is charged) and training (labels compensated for
the latency a pilot will have, ``--compensate-latency car:NAME``) need it.
:mod:`evaluation.cars` re-exports it with the command line (``list``, ``estimate``) and
the check of the model's form on this machine (``validate``).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "CARS",
    "KERAS_LINEAR_MFLOP",
    "CarComputer",
    "CarEstimate",
    "check_mflop",
    "get_car",
    "mflop_of",
]

_NORMAL = statistics.NormalDist()
_Z95 = _NORMAL.inv_cdf(0.95)
_Z99 = _NORMAL.inv_cdf(0.99)


def check_mflop(mflop: float) -> float:
    if isinstance(mflop, bool) or not isinstance(mflop, (int, float)):
        raise ValueError(f"mflop must be a number, got {mflop!r}")
    value = float(mflop)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"mflop must be a finite number >= 0, got {mflop!r}")
    return value


# --------------------------------------------------------------------------- estimates
@dataclass(frozen=True)
class CarEstimate:
    """The estimated batch-1 latency of a network of ``mflop`` MFLOP on car ``car``."""

    car: str
    mflop: float
    median_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @property
    def label(self) -> str:
        return f"estimated for {self.car}"

    def quantile_ms(self, u: np.ndarray | float) -> np.ndarray:
        """The latency (ms) at probability ``u`` in (0, 1) of :meth:`samples_s`'s law.

        Lognormal body through the median and p95 (sigma = ln(p95/median) / z95); from
        p95 to p99 log-linear in the normal quantile z (a pure lognormal when the three
        agree); from p99 to the max log-linear in ``u``, reaching the max at u = 1.
        """
        u = np.asarray(u, dtype=np.float64)
        z = np.array([_NORMAL.inv_cdf(float(v)) for v in np.clip(u, 1e-12, 1 - 1e-12).flat])
        z = z.reshape(u.shape)
        l95 = math.log(self.p95_ms / self.median_ms)
        l99 = math.log(self.p99_ms / self.median_ms)
        lmax = math.log(self.max_ms / self.median_ms)
        body = z * (l95 / _Z95)
        mid = l95 + (z - _Z95) * (l99 - l95) / (_Z99 - _Z95)
        tail = l99 + (u - 0.99) / 0.01 * (lmax - l99)
        log_ratio = np.where(u <= 0.95, body, np.where(u <= 0.99, mid, tail))
        return self.median_ms * np.exp(log_ratio)

    def samples_s(self, n: int = 1000, seed: int = 0) -> np.ndarray:
        """``n`` latencies (float64 seconds) whose median, p99 and max match the estimate.

        Stratified: the probabilities ``(i + 0.5) / n`` through :meth:`quantile_ms`, in
        an order shuffled by ``seed``. So the empirical quantiles equal the estimate's
        (up to the grid: the largest sample is the quantile at ``1 - 0.5 / n``), the
        same seed gives the same sequence, and every sample is > 0 and <= ``max_ms``.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an integer >= 1, got {n!r}")
        u = (np.arange(n, dtype=np.float64) + 0.5) / n
        ms = self.quantile_ms(u)
        rng = np.random.default_rng(seed)
        return np.minimum(ms[rng.permutation(n)], self.max_ms) / 1000.0


# --------------------------------------------------------------------------- cars
@dataclass(frozen=True)
class CarComputer:
    """A board and its runtime, as a two-term cost model plus tail ratios.

    ``median_ms = overhead_ms + ms_per_mflop * mflop``; p95, p99 and max are the median
    times ``p95_ratio``, ``p99_ratio`` and ``max_ratio``. ``sources`` maps each source id
    of ``docs/car-computers.md`` to the figure taken from it.
    """

    name: str  # e.g. "rpi4-tflite": board-runtime
    board: str  # e.g. "Raspberry Pi 4 Model B"
    runtime: str  # e.g. "TFLite (DonkeyCar TFLitePilot)"
    overhead_ms: float  # per-call term
    ms_per_mflop: float  # per-FLOP term (ms per 1e6 FLOPs)
    p95_ratio: float  # p95 / median
    p99_ratio: float  # p99 / median
    max_ratio: float  # max / median
    sources: dict[str, str] = field(default_factory=dict)
    notes: str = ""

    def __post_init__(self) -> None:
        for key in ("overhead_ms", "ms_per_mflop"):
            v = getattr(self, key)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"car {self.name}: {key} must be finite and > 0, got {v}")
        if not (1.0 <= self.p95_ratio <= self.p99_ratio <= self.max_ratio):
            raise ValueError(f"car {self.name}: need 1 <= p95 <= p99 <= max ratios")
        if not self.sources:
            raise ValueError(f"car {self.name}: every constant needs a source")

    def median_ms(self, mflop: float) -> float:
        return self.overhead_ms + self.ms_per_mflop * check_mflop(mflop)

    def estimate(self, mflop: float) -> CarEstimate:
        """The latency of a network of ``mflop`` MFLOP per frame on this car."""
        med = self.median_ms(mflop)
        return CarEstimate(
            car=self.name,
            mflop=float(mflop),
            median_ms=med,
            p95_ms=med * self.p95_ratio,
            p99_ms=med * self.p99_ratio,
            max_ms=med * self.max_ratio,
        )

    @property
    def tail(self) -> str:
        return f"p95 x{self.p95_ratio:.2f}, p99 x{self.p99_ratio:.2f}, max x{self.max_ratio:.2f}"


# The published figures each constant comes from (docs/car-computers.md derives them).
#: DonkeyCar KerasLinear at 120x160: 47.8 M multiply-accumulates (the shared count).
KERAS_LINEAR_MFLOP = 95.6
#: torchvision's weight tables (multiply-adds, "GFLOPS" column), in MFLOP (2 per MAC).
_MFLOP = {
    "resnet18": 2 * 1810.0,
    "resnet34": 2 * 3660.0,
    "resnet50": 2 * 4090.0,
    "shufflenet_v2_x0_5": 2 * 40.0,
    "shufflenet_v2_x1_0": 2 * 140.0,
}


def _slope(a: tuple[float, float], b: tuple[float, float]) -> float:
    """ms per MFLOP of the line through two (MFLOP, ms) points."""
    return (b[1] - a[1]) / (b[0] - a[0])


def _tail_s3() -> tuple[float, float, float]:
    """S3 (KerasLinear, Pi 4, TF 2.3 in the DonkeyCar loop): p50 295.06, p90 318.53,
    p99 416.84, max 566.66 ms. p95 is interpolated between p90 and p99 in z."""
    p50, p90, p99, pmax = 295.06, 318.53, 416.84, 566.66
    z90 = _NORMAL.inv_cdf(0.90)
    l90, l99 = math.log(p90 / p50), math.log(p99 / p50)
    l95 = l90 + (_Z95 - z90) * (l99 - l90) / (_Z99 - z90)
    return math.exp(l95), p99 / p50, pmax / p50


_S3_P95, _S3_P99, _S3_MAX = _tail_s3()
#: S6: PyTorch on a Pi 4 with 4 threads, best case 60 ms with spikes to 128 ms.
_S6_MAX = 128.0 / 60.0

# Pi 4, FP32 dense convolutions: S6's PyTorch ResNet-18 -> ResNet-50 model times.
_PI4_DENSE_MS_PER_MFLOP = _slope((_MFLOP["resnet18"], 100.3), (_MFLOP["resnet50"], 225.2))
# Pi 4, PyTorch: S6's two smallest FP32 rows (ShuffleNetV2 x0.5, x1.0), nearest our sizes.
_PI4_TORCH = ((_MFLOP["shufflenet_v2_x0_5"], 18.2), (_MFLOP["shufflenet_v2_x1_0"], 37.7))
_PI4_TORCH_SLOPE = _slope(*_PI4_TORCH)
_PI4_TORCH_OVERHEAD = _PI4_TORCH[0][1] - _PI4_TORCH_SLOPE * _PI4_TORCH[0][0]
# S22 (TFLite, MobileNet v2 / v1 SSD on Pi 3B+, Pi 4, Pi 5): board ratios, same runtime.
_TFLITE_PI3_OVER_PI4 = (379.6 / 112.6 + 271.5 / 82.7) / 2
_TFLITE_PI5_OVER_PI4 = (23.5 / 112.6 + 16.9 / 82.7) / 2
# S6: the same PyTorch script runs ~30 fps on a Pi 4 and ~41 fps on a Pi 5.
_TORCH_PI5_OVER_PI4 = 30.0 / 41.0
# Jetson Nano GPU, TensorRT FP16 (S19): ResNet-18 -> ResNet-34; PyTorch FP16 the same.
_NANO_TRT_SLOPE = _slope((_MFLOP["resnet18"], 11.4), (_MFLOP["resnet34"], 20.2))
_NANO_TORCH_SLOPE = _slope((_MFLOP["resnet18"], 34.7), (_MFLOP["resnet34"], 64.8))
_NANO_TORCH_OVERHEAD = 34.7 - _NANO_TORCH_SLOPE * _MFLOP["resnet18"]
# Jetson Nano CPU (S21, ncnn FP32, 1 thread): ResNet-18 203 ms, all of it counted as compute.
_NANO_CPU_MS_PER_MFLOP = 203.0 / _MFLOP["resnet18"]


def _one_point(ms: float, per_mflop: float, mflop: float = KERAS_LINEAR_MFLOP) -> float:
    """The per-call term when one model (``mflop``, ``ms``) is published: ms - per-FLOP part."""
    return ms - per_mflop * mflop


_S3_TAIL = {"p95_ratio": _S3_P95, "p99_ratio": _S3_P99, "max_ratio": _S3_MAX}
_TORCH_TAIL = {"p95_ratio": _S3_P95, "p99_ratio": _S3_P99, "max_ratio": _S6_MAX}
_DENSE_SRC = "S6: PyTorch FP32 ResNet-18 100.3 ms / ResNet-50 225.2 ms (per-MFLOP term)"
_S3_SRC = "S3: KerasLinear p50 295.06 / p90 318.53 / p99 416.84 / max 566.66 ms (tail ratios)"
_S4_TFLITE = "S4: KerasLinear as TFLite ~20 ms"


def _pi4_tflite() -> tuple[float, float]:
    return _one_point(20.0, _PI4_DENSE_MS_PER_MFLOP), _PI4_DENSE_MS_PER_MFLOP


def _cars() -> dict[str, CarComputer]:
    tfl_over, tfl_slope = _pi4_tflite()
    pi3, pi4, pi5, nano = (
        "Raspberry Pi 3 Model B+",
        "Raspberry Pi 4 Model B",
        "Raspberry Pi 5",
        "NVIDIA Jetson Nano",
    )
    cars = [
        CarComputer(
            "rpi3bplus-tflite",
            pi3,
            "TFLite (DonkeyCar TFLitePilot)",
            tfl_over * _TFLITE_PI3_OVER_PI4,
            tfl_slope * _TFLITE_PI3_OVER_PI4,
            **_S3_TAIL,
            sources={
                "S4": _S4_TFLITE + " on a Pi 4 (the rpi4-tflite constants)",
                "S6": _DENSE_SRC,
                "S22": "TFLite Pi 3B+ / Pi 4: 379.6/112.6 and 271.5/82.7 ms (board ratio)",
                "S3": _S3_SRC + ", assumed",
            },
            notes="rpi4-tflite scaled by the TFLite Pi 3B+/Pi 4 ratio (both terms).",
        ),
        CarComputer(
            "rpi4-tf23-predict",
            pi4,
            "TensorFlow 2.3 .h5, Keras model.predict (stock DonkeyCar 4.x)",
            _one_point(295.06, _PI4_DENSE_MS_PER_MFLOP),
            _PI4_DENSE_MS_PER_MFLOP,
            **_S3_TAIL,
            sources={"S3": _S3_SRC + " (median and tail)", "S6": _DENSE_SRC},
            notes="predict's per-call cost, not the convolutions: overhead-bound at any size.",
        ),
        CarComputer(
            "rpi4-tf2-call",
            pi4,
            "TensorFlow 2.3+ .h5, Keras model(x) (DonkeyCar after PR 861)",
            _one_point(1000.0 / 22.0, _PI4_DENSE_MS_PER_MFLOP),
            _PI4_DENSE_MS_PER_MFLOP,
            **_S3_TAIL,
            sources={
                "S5": "KerasLinear ~22 fps with model(x) instead of predict (45.5 ms)",
                "S6": _DENSE_SRC,
                "S3": _S3_SRC + ", assumed",
            },
        ),
        CarComputer(
            "rpi4-tf22",
            pi4,
            "TensorFlow 2.2 .h5 (DonkeyCar 4.x install of 2021-01)",
            _one_point(30.0, _PI4_DENSE_MS_PER_MFLOP),
            _PI4_DENSE_MS_PER_MFLOP,
            **_S3_TAIL,
            sources={
                "S4": "KerasLinear under TF 2.2.0 ~30 ms",
                "S6": _DENSE_SRC,
                "S3": _S3_SRC + ", assumed",
            },
        ),
        CarComputer(
            "rpi4-tflite",
            pi4,
            "TFLite (DonkeyCar TFLitePilot)",
            tfl_over,
            tfl_slope,
            **_S3_TAIL,
            sources={"S4": _S4_TFLITE, "S6": _DENSE_SRC, "S3": _S3_SRC + ", assumed"},
        ),
        CarComputer(
            "rpi4-pytorch",
            pi4,
            "PyTorch FP32, 4 threads",
            _PI4_TORCH_OVERHEAD,
            _PI4_TORCH_SLOPE,
            **_TORCH_TAIL,
            sources={
                "S6": "ShuffleNetV2 x0.5 18.2 ms / x1.0 37.7 ms model time (line); "
                "4 threads: best 60 ms, spikes 128 ms (max ratio)",
                "S3": "p95/p99 ratios, assumed",
            },
            notes="ShuffleNetV2 has many small ops: likely pessimistic for plain convnets.",
        ),
        CarComputer(
            "rpi5-tflite",
            pi5,
            "TFLite",
            tfl_over * _TFLITE_PI5_OVER_PI4,
            tfl_slope * _TFLITE_PI5_OVER_PI4,
            **_S3_TAIL,
            sources={
                "S4": _S4_TFLITE + " on a Pi 4 (the rpi4-tflite constants)",
                "S6": _DENSE_SRC,
                "S22": "TFLite Pi 5 / Pi 4: 23.5/112.6 and 16.9/82.7 ms (board ratio)",
                "S3": _S3_SRC + ", assumed",
            },
            notes="rpi4-tflite scaled by the TFLite Pi 5/Pi 4 ratio (both terms).",
        ),
        CarComputer(
            "rpi5-pytorch",
            pi5,
            "PyTorch FP32, 4 threads",
            _PI4_TORCH_OVERHEAD * _TORCH_PI5_OVER_PI4,
            _PI4_TORCH_SLOPE * _TORCH_PI5_OVER_PI4,
            **_TORCH_TAIL,
            sources={
                "S6": "rpi4-pytorch constants; the same script ~30 fps on a Pi 4, ~41 fps "
                "on a Pi 5 (board ratio); spikes 128/60 ms (max ratio)",
                "S3": "p95/p99 ratios, assumed",
            },
        ),
        CarComputer(
            "jetson-nano-tensorrt",
            nano,
            "TensorRT (DonkeyCar TensorRTLinear), 5 W mode",
            _one_point(30.0, _NANO_TRT_SLOPE),
            _NANO_TRT_SLOPE,
            **_S3_TAIL,
            sources={
                "S18": "KerasLinear TensorRT 30 ms in the drive loop (16.7 ms isolated)",
                "S19": "torch2trt FP16 ResNet-18 11.4 ms / ResNet-34 20.2 ms (per-MFLOP term)",
                "S3": _S3_SRC + ", assumed",
            },
            notes="the in-loop figure: the car waits 1.8x the isolated benchmark (S18).",
        ),
        CarComputer(
            "jetson-nano-tflite-cpu",
            nano,
            "TFLite on the CPU (DonkeyCar TFLitePilot)",
            _one_point(52.0, _NANO_CPU_MS_PER_MFLOP),
            _NANO_CPU_MS_PER_MFLOP,
            **_S3_TAIL,
            sources={
                "S17": "KerasLinear TFLite 52 ms average in the car loop",
                "S21": "ncnn FP32 1 thread ResNet-18 203 ms (per-MFLOP term, upper bound)",
                "S3": _S3_SRC + ", assumed",
            },
        ),
        CarComputer(
            "jetson-nano-pytorch",
            nano,
            "PyTorch on the GPU, FP16 (isolated benchmark)",
            _NANO_TORCH_OVERHEAD,
            _NANO_TORCH_SLOPE,
            **_S3_TAIL,
            sources={
                "S19": "PyTorch FP16 ResNet-18 34.7 ms / ResNet-34 64.8 ms (line)",
                "S3": _S3_SRC + ", assumed",
            },
            notes="isolated; S18 saw 1.8x that inside the drive loop (not applied).",
        ),
    ]
    return {c.name: c for c in cars}


#: Every reference car computer by name.
CARS: dict[str, CarComputer] = _cars()


def get_car(name: str) -> CarComputer:
    """The car computer ``name``; a ``ValueError`` listing the known names otherwise."""
    car = CARS.get(name) if isinstance(name, str) else None
    if car is None:
        raise ValueError(f"unknown car {name!r}; known cars: {', '.join(CARS)}")
    return car


def mflop_of(pilot: Any) -> float | None:
    """The pilot's counted MFLOP per frame; ``None`` for a pilot without a network.

    ``pilot.metadata()["mflop"]`` when the pilot says, else :func:`agents.flops.count_mflop`
    of ``pilot.model`` when it is an :class:`agents.models.SteeringNet`.
    """
    try:
        meta = pilot.metadata()
    except Exception:  # noqa: BLE001 - a pilot without usable metadata says nothing
        meta = {}
    value = meta.get("mflop") if isinstance(meta, dict) else None
    if value is not None:
        return check_mflop(value)
    model = getattr(pilot, "model", None)
    if model is None:
        return None
    # torch only here: listing or estimating cars needs no network.
    from agents.flops import count_mflop
    from agents.models import SteeringNet

    return count_mflop(model) if isinstance(model, SteeringNet) else None
