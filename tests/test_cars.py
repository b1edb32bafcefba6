"""Reference car computers: constants, estimates, latency samples, the fit, the command line."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluation import cars
from evaluation.cars import CARS, CarComputer, fit_cost_line, get_car, main, mflop_of


# --------------------------------------------------------------------------- the cars
def test_boards_covered() -> None:
    boards = {c.board for c in CARS.values()}
    for board in ("Pi 3 Model B+", "Pi 4", "Pi 5", "Jetson Nano"):
        assert any(board in b for b in boards), board
    pi4 = [c for c in CARS.values() if "Pi 4" in c.board]
    assert len({c.runtime for c in pi4}) >= 3


@pytest.mark.parametrize("name", list(CARS))
def test_every_car_has_sources_and_positive_constants(name: str) -> None:
    car = CARS[name]
    assert car.name == name and car.board and car.runtime
    assert car.sources and all(k.startswith("S") and v for k, v in car.sources.items())
    assert car.overhead_ms > 0 and car.ms_per_mflop > 0
    assert math.isfinite(car.overhead_ms) and math.isfinite(car.ms_per_mflop)
    assert 1.0 <= car.p95_ratio <= car.p99_ratio <= car.max_ratio


def test_stock_donkeycar_pi4_reproduces_its_published_figures() -> None:
    e = get_car("rpi4-tf23-predict").estimate(cars.KERAS_LINEAR_MFLOP)
    assert e.median_ms == pytest.approx(295.06)
    assert e.p99_ms == pytest.approx(416.84)
    assert e.max_ms == pytest.approx(566.66)
    assert get_car("rpi4-tflite").median_ms(cars.KERAS_LINEAR_MFLOP) == pytest.approx(20.0)


def test_unknown_car_lists_the_known_names() -> None:
    with pytest.raises(ValueError) as err:
        get_car("rpi9")
    text = str(err.value)
    assert "\n" not in text and "rpi9" in text
    assert all(name in text for name in CARS)


def test_car_rejects_bad_constants() -> None:
    with pytest.raises(ValueError):
        CarComputer("x", "b", "r", 0.0, 0.1, 1.1, 1.2, 1.3, sources={"S1": "y"})
    with pytest.raises(ValueError):
        CarComputer("x", "b", "r", 1.0, 0.1, 1.1, 1.2, 1.3)  # no sources


# --------------------------------------------------------------------------- estimates
@pytest.mark.parametrize("name", list(CARS))
def test_estimate_monotone_in_mflop(name: str) -> None:
    car = CARS[name]
    ests = [car.estimate(m) for m in (0.0, 1.0, 10.2, 123.3, 1000.0)]
    medians = [e.median_ms for e in ests]
    assert all(a < b for a, b in zip(medians[:-1], medians[1:], strict=True))
    e = ests[2]
    assert e.median_ms < e.p95_ms <= e.p99_ms <= e.max_ms
    assert e.label == f"estimated for {name}" and e.car == name and e.mflop == 10.2


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "10", True])
def test_estimate_rejects_bad_mflop(bad) -> None:
    with pytest.raises(ValueError):
        get_car("rpi4-tflite").estimate(bad)


@pytest.mark.parametrize("name", ["rpi4-tf23-predict", "rpi4-pytorch", "jetson-nano-tensorrt"])
def test_samples_reproducible_and_match_the_estimate(name: str) -> None:
    e = get_car(name).estimate(50.0)
    a = e.samples_s(1000, seed=3)
    assert a.dtype == np.float64 and a.shape == (1000,)
    np.testing.assert_array_equal(a, e.samples_s(1000, seed=3))
    assert not np.array_equal(a, e.samples_s(1000, seed=4))
    ms = a * 1000.0
    assert np.all(ms > 0) and np.all(ms <= e.max_ms)
    assert np.median(ms) == pytest.approx(e.median_ms, rel=0.01)
    assert np.percentile(ms, 99) == pytest.approx(e.p99_ms, rel=0.03)
    assert np.percentile(ms, 95) == pytest.approx(e.p95_ms, rel=0.03)
    assert ms.max() == pytest.approx(e.max_ms, rel=0.03)


def test_samples_reject_bad_n() -> None:
    with pytest.raises(ValueError):
        get_car("rpi4-tflite").estimate(1.0).samples_s(0)


# --------------------------------------------------------------------------- mflop_of
def test_mflop_of_cnn_equals_count_mflop() -> None:
    from agents.cnn import CNNPilot
    from agents.flops import count_mflop
    from agents.models import build_model

    model = build_model("compact", input_size=(32, 40), depth=3, width=0.5)
    pilot = CNNPilot(model)
    expected = count_mflop(model)
    assert expected > 0
    assert pilot.metadata()["mflop"] == pytest.approx(expected)
    assert mflop_of(pilot) == pytest.approx(expected)

    class Bare:  # a CNN pilot whose metadata does not say
        def __init__(self) -> None:
            self.model = model

        def metadata(self) -> dict:
            return {"kind": "cnn"}

    assert mflop_of(Bare()) == pytest.approx(expected)


def test_mflop_of_pilot_without_network_is_none() -> None:
    from agents.expert import ExpertPilot

    assert mflop_of(ExpertPilot()) is None

    class Said:
        def metadata(self) -> dict:
            return {"mflop": 7.5}

    assert mflop_of(Said()) == 7.5


# --------------------------------------------------------------------------- the fit
def test_fit_recovers_known_constants() -> None:
    x = np.array([2.0, 10.0, 40.0, 120.0, 400.0])
    y = 0.3 + 0.02 * x
    for relative in (True, False):
        overhead, slope = fit_cost_line(x, y, relative=relative)
        assert overhead == pytest.approx(0.3) and slope == pytest.approx(0.02)
    noisy = y * (1 + 0.02 * np.random.default_rng(0).standard_normal(len(x)))
    overhead, slope = fit_cost_line(x, noisy)
    assert overhead == pytest.approx(0.3, rel=0.2) and slope == pytest.approx(0.02, rel=0.1)


@pytest.mark.parametrize(
    ("x", "y"), [([1.0], [1.0]), ([1.0, 1.0], [1.0, 2.0]), ([1.0, 2.0], [1.0, -1.0])]
)
def test_fit_rejects_degenerate_data(x, y) -> None:
    with pytest.raises(ValueError):
        fit_cost_line(x, y)


def test_validation_sets_are_disjoint_and_cover_the_zoo_architectures() -> None:
    fit = [m for m in cars.VALIDATION_MODELS if m.fit]
    held = [m for m in cars.VALIDATION_MODELS if not m.fit]
    assert fit and held
    assert not {(m.arch, tuple(sorted(m.args.items()))) for m in fit} & {
        (m.arch, tuple(sorted(m.args.items()))) for m in held
    }
    assert {m.arch for m in cars.VALIDATION_MODELS} == {
        "compact",
        "compact_cls",
        "pilotnet",
        "resnet_cls",
    }


# --------------------------------------------------------------------------- command line
def test_cli_list(capsys) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in CARS)


def test_cli_estimate_mflop(capsys) -> None:
    assert main(["estimate", "--mflop", "10.2"]) == 0
    out = capsys.readouterr().out
    assert "10.2 MFLOP" in out and all(name in out for name in CARS)


@pytest.mark.parametrize(
    "argv",
    [
        ["estimate", "--mflop", "-5"],
        ["estimate", "--mflop", "nan"],
        ["estimate"],
        ["estimate", "expert"],  # no network
        ["estimate", "/no/such/pilot"],
    ],
)
def test_cli_bad_input_one_line(argv, capsys) -> None:
    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err


def test_cli_estimate_pilot_checkpoint(tmp_path, capsys) -> None:
    from agents.cnn import write_checkpoint
    from agents.models import build_model

    model = build_model("compact", input_size=(32, 40), depth=3)
    write_checkpoint(tmp_path, "best", model)
    assert main(["estimate", str(tmp_path / "best.json")]) == 0
    assert "rpi4-tflite" in capsys.readouterr().out
