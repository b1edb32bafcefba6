"""Latency settings, the inference schedule (the latency model) and latency profiling."""

from __future__ import annotations

import time

import numpy as np
import pytest

from evaluation.latency import (
    LatencySetting,
    describe_device,
    hardware_fingerprint,
    latency_substeps,
    measure_latency,
    parse_latency,
    resolve_device,
)
from evaluation.runner import InferenceSchedule

SUBSTEPS = 12  # 240 Hz physics, 20 Hz control
PHYSICS_HZ = 240


# --------------------------------------------------------------------------- parsing
@pytest.mark.parametrize(
    ("text", "mode", "value"),
    [
        ("measured", "measured", None),
        (" Measured ", "measured", None),
        ("0", "zero", 0.0),
        ("zero", "zero", 0.0),
        ("0ms", "zero", 0.0),
        ("70ms", "fixed", 0.07),
        ("70 ms", "fixed", 0.07),
        ("0.07s", "fixed", 0.07),
        ("70", "fixed", 0.07),
        ("2.5ms", "fixed", 0.0025),
        (70, "fixed", 0.07),
        (0, "zero", 0.0),
    ],
)
def test_parse_latency_accepts(text, mode, value) -> None:
    s = parse_latency(text)
    assert s.mode == mode
    if value is None:
        assert s.value_s is None
    else:
        assert s.value_s == pytest.approx(value)


@pytest.mark.parametrize(
    "text", ["", "fast", "-5ms", "-1", "70 min", "nan", "inf", "20s", "1e9", "ms", True, None]
)
def test_parse_latency_rejects_with_value_error(text) -> None:
    with pytest.raises(ValueError, match="latency"):
        parse_latency(text)


def test_latency_setting_validates_and_labels() -> None:
    assert parse_latency("70ms").label == "70ms"
    assert parse_latency("0").label == "0"
    assert parse_latency("measured").label == "measured"
    with pytest.raises(ValueError):
        LatencySetting("fixed", None)
    with pytest.raises(ValueError):
        LatencySetting("measured", 0.1)
    with pytest.raises(ValueError):
        LatencySetting("sometimes", 0.1)


@pytest.mark.parametrize(
    ("seconds", "substeps"),
    [(0.0, 0), (1e-5, 1), (0.02, 5), (0.05, 12), (0.07, 17), (0.1, 24), (0.12, 29), (0.3, 72)],
)
def test_latency_substeps_round_up(seconds, substeps) -> None:
    assert latency_substeps(seconds, PHYSICS_HZ) == substeps


def test_latency_substeps_rejects_negative() -> None:
    with pytest.raises(ValueError):
        latency_substeps(-0.01, PHYSICS_HZ)


# --------------------------------------------------------------------------- schedule
def _simulate(latency_s: float, periods: int = 12):
    """Drive an InferenceSchedule for ``periods``; the pilot answers with its call index."""
    sched = InferenceSchedule(latency_substeps(latency_s, PHYSICS_HZ), SUBSTEPS, np.zeros(1))
    calls, steps = [], []
    for k in range(periods):
        if sched.idle(k):
            calls.append(k)
            sched.submit(np.array([float(len(calls))]))
        held, new, switch = sched.period()
        steps.append((float(held[0]), float(new[0]), switch))
    return calls, steps, sched.starts


def _reference_starts(lsub: int, periods: int) -> list[int]:
    """The latency model restated: an idle pilot takes the newest frame it has not
    used yet; with none, it waits for the next frame."""
    starts, frame = [0], 0
    while True:
        finish = starts[-1] + lsub
        nxt = finish if finish // SUBSTEPS > frame else (frame + 1) * SUBSTEPS
        frame = nxt // SUBSTEPS
        if frame >= periods:
            return starts
        starts.append(nxt)


def test_schedule_no_overlap_newest_frame_when_idle() -> None:
    # 120 ms = 29 substeps: inferences start at substeps 0, 29, 58, 87 (back to back),
    # each on the newest frame: 0, 2 (t=0.10), 4 (t=0.20), 7 (t=0.35).
    calls, steps, starts = _simulate(0.12)
    assert starts[:4] == [0, 29, 58, 87]
    assert calls[:4] == [0, 2, 4, 7]
    # The command from frame 0 acts from substep 29: period 2, substep 5.
    assert steps[0] == (0.0, 0.0, 0) and steps[1] == (0.0, 0.0, 0)
    assert steps[2] == (0.0, 1.0, 5)
    assert steps[3] == (1.0, 1.0, 0)
    assert steps[4] == (1.0, 2.0, 10)  # 58 = 4 * 12 + 10


@pytest.mark.parametrize("latency_ms", [0, 5, 20, 49, 50, 70, 100, 120, 150, 300])
def test_schedule_switches_exactly_latency_later(latency_ms) -> None:
    lsub = latency_substeps(latency_ms / 1000, PHYSICS_HZ)
    calls, steps, starts = _simulate(latency_ms / 1000, periods=40)
    assert starts == _reference_starts(lsub, 40)
    assert calls == [s // SUBSTEPS for s in starts]
    for i, st in enumerate(starts, start=1):
        at = st + lsub  # absolute substep at which command i acts
        period, switch = divmod(at, SUBSTEPS)
        if period >= len(steps):
            continue
        held, new, sw = steps[period]
        assert (new, sw) == (float(i), switch)
        if switch:  # the previous command holds until the switch
            assert held == float(i - 1)
    # Effective control rate: min(camera rate, 1 / L), L in whole substeps.
    if lsub > SUBSTEPS:
        assert np.all(np.diff(starts) == lsub)
    else:
        assert calls == list(range(40))


def test_schedule_zero_latency_is_plain_stepping() -> None:
    calls, steps, _ = _simulate(0.0, periods=5)
    assert calls == [0, 1, 2, 3, 4]
    assert [s[1:] for s in steps] == [(float(i), 0) for i in range(1, 6)]


def test_schedule_rejects_overlapping_inference() -> None:
    sched = InferenceSchedule(29, SUBSTEPS, np.zeros(1))
    assert sched.idle(0)
    sched.submit(np.ones(1))
    sched.period()
    assert not sched.idle(1)  # busy until substep 29, past period 1
    with pytest.raises(RuntimeError, match="overlapping"):
        sched.submit(np.ones(1))
    assert sched.idle(2)  # ends at 29, inside period 2: takes frame 2 then


def test_schedule_cancel_drops_inference_in_flight() -> None:
    sched = InferenceSchedule(29, SUBSTEPS, np.zeros(1))
    sched.idle(0)
    sched.submit(np.ones(1))
    sched.period()
    sched.cancel()
    assert sched.idle(1)
    held, new, switch = sched.period()
    assert held[0] == 0.0 and new[0] == 0.0 and switch == 0


def test_schedule_draws_each_inference_latency_without_overlap() -> None:
    draws = iter([5, 40, 0, 13])
    sched = InferenceSchedule(0, SUBSTEPS, np.zeros(1), draw=lambda: next(draws))
    acts = []
    for k in range(6):
        if sched.idle(k):
            acts.append(sched.submit(np.full(1, float(k))))
        sched.period()
    # starts: frame 0 at 0 -> acts 5; frame 1 (12) -> acts 52; busy past frames 2-3, so
    # frame 4 (48 < 52 < 60: idle within period 4) starts at 52 -> acts 52; frame 5 (60) -> 73
    assert sched.charged == [5, 40, 0, 13]
    assert acts == [5, 52, 52, 73]
    assert sched.starts == [0, 12, 52, 60]


def test_latency_samples_are_validated() -> None:
    from agents.loop import _latency_samples

    assert list(_latency_samples([0.0, 0.05, 0.1], 240)) == [0, 12, 24]
    for bad in ([], [float("nan")], [-0.01]):
        with pytest.raises(ValueError, match="latency_samples"):
            _latency_samples(bad, 240)


def _tail_run(samples, seed=0):
    from agents.expert import ExpertPilot
    from evaluation.runner import run_closed_loop

    return run_closed_loop(
        ExpertPilot(),
        "chicane",
        laps=1,
        latency_s=0.04,
        latency_mode="profile" if samples else "fixed",
        latency_samples=samples,
        obs_mode="state",
        record_trajectory=False,
        seed=seed,
    )


def test_heavy_tailed_profile_intervenes_where_its_median_does_not() -> None:
    # A fixed profile, not a timing: 80% of inferences take 40 ms, 20% take 500 ms (the
    # median is 40 ms). Each inference draws its own latency, seeded by the run's seed.
    tail = [0.04] * 8 + [0.5] * 2
    assert float(np.median(tail)) == 0.04
    constant = _tail_run(None)
    heavy = _tail_run(tail)
    assert constant.interventions == 0 and constant.completed
    assert heavy.interventions > 0
    assert heavy.latency_distribution and heavy.latency_charged_max_ms == pytest.approx(500.0)
    assert heavy.latency_ms == pytest.approx(40.0)  # the median is what tables show
    # Reproducible: the same seed draws the same latencies.
    again = _tail_run(tail)
    assert (again.interventions, again.interventions_at) == (
        heavy.interventions,
        heavy.interventions_at,
    )


# --------------------------------------------------------------------------- profiling
class _SleepyPilot:
    name = "sleepy"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls = 0

    def reset(self) -> None:
        pass

    def act(self, observation, info):
        self.calls += 1
        time.sleep(self.seconds)
        return np.zeros(2, dtype=np.float32)

    def metadata(self):
        return {"kind": "test", "name": self.name}


def test_measure_latency_returns_sane_stats() -> None:
    pilot = _SleepyPilot(0.002)
    stats = measure_latency(pilot, np.zeros(3), {}, warmup=3, n=20)
    assert pilot.calls == 23
    assert stats.n == 20 and stats.device == "cpu"
    assert 0.002 <= stats.median_s <= stats.p95_s < 1.0
    assert stats.median_ms == pytest.approx(stats.median_s * 1000)
    assert len(stats.samples_s) == 20 and stats.max_s >= stats.p99_s >= stats.median_s
    with pytest.raises(ValueError):
        measure_latency(pilot, np.zeros(3), {}, warmup=0, n=0)


def test_device_helpers() -> None:
    assert resolve_device("auto") in ("cpu", "cuda")
    assert resolve_device("CPU") == "cpu"
    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu")
    assert describe_device("cpu").startswith("cpu (")
    fp = hardware_fingerprint("cpu")
    assert fp == hardware_fingerprint("cpu") and len(fp) == 16
