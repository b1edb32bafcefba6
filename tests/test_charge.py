"""Which latency a pilot is charged: profiles, car computers, measured samples."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evaluation.cars import CARS, get_car
from evaluation.evaluate import evaluate, main

RUN = dict(tracks=["oval"], directions=["ccw"], laps=1, max_time_s=1.0, progress=False)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from agents.cnn import write_checkpoint
    from agents.flops import count_mflop
    from agents.models import build_model

    d = tmp_path_factory.mktemp("ckpt")
    model = build_model("compact", input_size=(30, 40), width=0.5, depth=3)
    write_checkpoint(d, "best", model)
    sha = json.loads((d / "best.json").read_text())["weights_sha256"]
    return d, sha, count_mflop(model)


def _profile(path, sha, samples_ms, camera=(30, 40), version=1):
    s = np.asarray(samples_ms, dtype=float)
    path.write_text(
        json.dumps(
            {
                "format": "trackpilot-latency-profile",
                "schema_version": version,
                "pilot": "compact",
                "pilot_kind": "cnn",
                "model_sha256": sha,
                "source_sha256": sha,
                "runtime": "onnxruntime",
                "runtime_version": "1.32.0",
                "threads": 1,
                "device": {
                    "description": "Raspberry Pi 4 Model B Rev 1.4 (aarch64, 4 cores)",
                    "machine": "aarch64",
                    "cpu": "Cortex-A72",
                    "cores": 4,
                    "fingerprint": "0123456789abcdef",
                },
                "libraries": {"python": "3.11.2", "numpy": "1.26.4", "onnxruntime": "1.32.0"},
                "camera_size": list(camera),
                "frames": len(s),
                "warmup": 20,
                "samples_ms": s.tolist(),
                "median_ms": float(np.median(s)),
                "p95_ms": float(np.percentile(s, 95)),
                "p99_ms": float(np.percentile(s, 99)),
                "max_ms": float(s.max()),
                "mean_ms": float(s.mean()),
                "profiler_overhead_ms": 0.001,
                "created": "2026-12-02T00:00:00Z",
            }
        )
    )
    return path


def test_car_estimate_is_charged_and_labelled(checkpoint) -> None:
    d, sha, mflop = checkpoint
    (row,) = evaluate([str(d)], car="rpi4-tflite", **RUN)
    est = get_car("rpi4-tflite").estimate(mflop)
    assert row.latency_mode == "estimated" and row.car == "rpi4-tflite"
    assert row.latency_source.startswith("estimated for rpi4-tflite")
    assert row.latency_ms == pytest.approx(est.median_ms, rel=1e-9)
    assert row.latency_p99_ms == pytest.approx(est.p99_ms, rel=1e-9)
    assert row.latency_distribution and row.mflop == pytest.approx(mflop)
    assert row.car_model and row.checkpoint_sha256 == sha


def test_profile_wins_over_the_car_estimate(checkpoint, tmp_path) -> None:
    d, sha, _ = checkpoint
    prof = _profile(tmp_path / "p.json", sha, [30.0] * 150 + [90.0] * 50)
    for car in (None, "rpi4-tflite"):
        (row,) = evaluate([str(d)], latency=str(prof), car=car, **RUN)
        assert row.latency_mode == "profile" and row.latency_ms == pytest.approx(30.0)
        assert row.latency_max_ms == pytest.approx(90.0)
        assert row.car == (car or "Raspberry Pi 4 Model B Rev 1.4 (aarch64, 4 cores)")
        assert row.profile_model_sha256 == sha and row.profile_hardware == "0123456789abcdef"
        assert row.latency_charged_max_ms <= 90.0 + 1000 / 240


def test_profile_for_another_model(checkpoint, tmp_path, capsys) -> None:
    d, _, _ = checkpoint
    prof = _profile(tmp_path / "other.json", "ff" * 32, [30.0] * 200)
    rc = main([str(d), "--tracks", "oval", "--directions", "ccw", "--laps", "1",
               "--latency", str(prof), "--no-progress", "--out", str(tmp_path / "o"),
               "--db", str(tmp_path / "lb.sqlite")])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "no profile for" in err[0] and "ffffffffffff" in err[0]
    assert not (tmp_path / "lb.sqlite").exists()  # a refused pilot leaves no store behind
    # With a car, a pilot without its own profile gets the estimate instead.
    (row,) = evaluate([str(d)], latency=str(prof), car="rpi4-tflite", **RUN)
    assert row.latency_mode == "estimated"


def test_profile_at_another_camera_size_is_refused(checkpoint, tmp_path) -> None:
    d, sha, _ = checkpoint
    prof = _profile(tmp_path / "p.json", sha, [30.0] * 200, camera=(120, 160))
    with pytest.raises(ValueError, match="camera 120x160"):
        evaluate([str(d)], latency=str(prof), **RUN)


def test_a_directory_of_profiles_and_a_bad_one(checkpoint, tmp_path) -> None:
    d, sha, _ = checkpoint
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    _profile(profiles / "a.json", "ee" * 32, [10.0] * 200)
    _profile(profiles / "b.json", sha, [20.0] * 200)
    (row,) = evaluate([str(d)], latency=str(profiles), **RUN)
    assert row.latency_ms == pytest.approx(20.0)
    _profile(profiles / "c.json", sha, [20.0] * 200, version=99)
    with pytest.raises(ValueError, match="c.json"):
        evaluate([str(d)], latency=str(profiles), **RUN)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["expert", "--car", "commodore64"], ["rpi4-tflite", "jetson-nano"]),
        (["expert", "--car", "rpi4-tflite"], ["no counted FLOPs", "evaluation.profile"]),
        (["expert", "--latency", "missing.json"], ["missing.json", "no such file"]),
    ],
)
def test_bad_car_or_profile_is_one_error_line(tmp_path, capsys, argv, words) -> None:
    rc = main([*argv, "--tracks", "oval", "--laps", "1", "--no-progress",
               "--out", str(tmp_path), "--db", str(tmp_path / "lb.sqlite")])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert not (tmp_path / "lb.sqlite").exists()
    assert all(w in err[0] for w in words), err[0]


def test_measured_latency_keeps_its_samples() -> None:
    (row,) = evaluate(["expert"], latency="measured", latency_calls=30, **RUN)
    assert row.latency_mode == "measured" and row.latency_distribution
    assert row.latency_ms <= row.latency_p95_ms <= row.latency_p99_ms <= row.latency_max_ms
    assert row.car is None and row.latency_source.startswith("measured on cpu")


def test_every_car_estimates_the_zoo() -> None:
    for car in CARS.values():
        small, big = car.estimate(10.2), car.estimate(123.3)
        assert 0 < small.median_ms < big.median_ms <= big.max_ms
