"""Undefined metrics say so; a measured 0 prints as 0, never as ``nan``.

A 2-frame classifier run printed ``dev F1 0.000`` for its epoch and then
``best epoch 1 (dev_macro_f1 nan)`` for the same number: ``f"{best or nan}"`` turns a
measured 0.0 into NaN (``training/train.py``, the epoch-limit line; the same idiom prints
a flip consistency of 0.0 as ``flip nan``).
"""

from __future__ import annotations

import logging
import math
import re

import numpy as np
import pytest

from training.metrics import UNDEFINED, classification_report, format_class_table, format_metric


def test_format_metric() -> None:
    assert format_metric(0.0) == "0.000"  # measured: a zero, not "nan"
    assert format_metric(0.5, ".4f") == "0.5000"
    assert format_metric(np.float32(1.0)) == "1.000"
    for undefined in (None, math.nan, math.inf, np.nan, "x", True):
        assert format_metric(undefined) == UNDEFINED == "n/a"


def test_two_frames_wrong_class_f1_is_a_defined_zero() -> None:
    r = classification_report(np.array([0, 0]), np.array([1, 1]), 3, [-1.0, 0.0, 1.0])
    assert r["macro_f1"] == 0.0 and r["accuracy"] == 0.0 and r["classes_in_average"] == 1
    # The class only predicted counts in the all-classes average, not in the one over
    # classes that hold frames.
    assert r["macro_f1_all"] == 0.0 and r["classes_present"] == 2
    table = format_class_table(r)
    assert "nan" not in table
    macro = table.splitlines()[-1]
    assert re.search(r"macro\s+0\.000\s+0\.000\s+0\.000\s+2", macro), macro
    # The class that never occurs nor is predicted has no F1: n/a, not 0.000.
    assert table.splitlines()[3].split()[-4:] == ["n/a", "n/a", "n/a", "0"]


def test_a_handful_of_frames_in_a_rare_bin_does_not_swing_macro_f1() -> None:
    """Bins under 1% of the frames are left out of the macro average: getting their few
    frames right or wrong moves it by little (over every bin it would swing by ~1/3)."""
    rng = np.random.default_rng(0)
    y_true = np.concatenate([np.zeros(600, int), np.ones(394, int), np.full(6, 2)])
    y_pred = y_true.copy()
    noisy = rng.choice(994, 60, replace=False)  # 6% errors between the two common bins
    y_pred[noisy] = 1 - y_pred[noisy]
    right = classification_report(y_true, y_pred, 3)
    wrong_pred = y_pred.copy()
    wrong_pred[-6:] = 0  # the six rare frames all missed
    wrong = classification_report(y_true, wrong_pred, 3)
    assert right["min_support_frames"] == 10 and right["classes_in_average"] == 2
    assert abs(right["macro_f1"] - wrong["macro_f1"]) < 0.01
    assert right["macro_f1_all"] - wrong["macro_f1_all"] > 0.3
    # Every bin keeps its row; min_support=0 is the average over every class present.
    assert [c["averaged"] for c in right["per_class"]] == [True, True, False]
    every = classification_report(y_true, wrong_pred, 3, min_support=0.0)
    assert every["macro_f1"] == wrong["macro_f1_all"] and every["classes_in_average"] == 3
    assert ">= 10 frames" in format_class_table(right)


def test_no_frames_is_undefined_not_nan() -> None:
    r = classification_report(np.array([], int), np.array([], int), 3)
    assert math.isnan(r["macro_f1"]) and math.isnan(r["accuracy"])
    table = format_class_table(r)
    assert "nan" not in table and "no frames" in table
    assert table.splitlines()[-1].split()[1:4] == ["n/a", "n/a", "n/a"]


@pytest.fixture(scope="module")
def two_frame_data(tmp_path_factory: pytest.TempPathFactory):
    from training.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("data") / "syn2"
    make_synthetic_dataset(root, episodes=3, frames=2, size=(32, 40), seed=0)
    return root


def test_two_frame_classifier_run_prints_one_f1(tmp_path, two_frame_data, caplog, capsys):
    import torch

    from training.train import main as train_main

    threads = torch.get_num_threads()
    try:
        with caplog.at_level(logging.INFO):
            rc = train_main(
                ["--data", str(two_frame_data), "--out", str(tmp_path / "run"),
                 "--model", "compact_cls", "--num-classes", "7", "--epochs", "1",
                 "--no-tensorboard", "--input-size", "32x40", "--batch-size", "32",
                 "--no-progress", "--threads", "1", "--seed", "0"]
            )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    text = caplog.text + capsys.readouterr().out
    epoch_f1 = re.search(r"dev F1 (\S+)", text).group(1)
    best_f1 = re.search(r"best epoch 1 \(dev_macro_f1 (\S+)\)", text).group(1)
    assert epoch_f1 != "nan" and best_f1 != "nan", text
    assert float(best_f1) == pytest.approx(float(epoch_f1), abs=1e-3), text
