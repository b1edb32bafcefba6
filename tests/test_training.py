"""Behaviour-cloning training: splits, augmentation, early stopping, checkpoints, resume, NaN,
metrics, diagnosis and a tiny end-to-end run on synthetic road images."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from agents.cnn import load_pilot
from agents.models import build_model, make_class_values, mirror_class, steering_to_class
from training.augment import AugmentParams, augment_batch, flip_consistency
from training.config import TrainConfig
from training.data import default_ratios, distribution_check, split_episodes
from training.diagnose import diagnose, estimate_base_error
from training.diagnose import main as diagnose_main
from training.metrics import classification_report, format_class_table, regression_metrics
from training.state import EarlyStopping
from training.synthetic import make_synthetic_dataset
from training.train import main as train_main

torch.set_num_threads(1)

TINY = ["--input-size", "32x40", "--batch-size", "32", "--no-progress", "--threads", "1"]


@pytest.fixture(scope="module")
def syn_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "syn"
    make_synthetic_dataset(root, episodes=6, frames=40, size=(32, 40), seed=0)
    return root


def records(groups: dict[tuple[str, str], int], frames: int = 100) -> list[dict]:
    out = []
    for (track, direction), n in groups.items():
        for i in range(n):
            out.append(
                {
                    "key": f"{track}-{direction}-{i}",
                    "frames": frames,
                    "track_id": track,
                    "direction": direction,
                }
            )
    return out


# --------------------------------------------------------------------------- split
def test_split_by_episode_stratified_with_ratios() -> None:
    recs = records({(t, d): 10 for t in ("a", "b", "c") for d in ("ccw", "cw")})
    split = split_episodes(recs, seed=3)
    all_idx = split["train"] + split["dev"] + split["test"]
    assert sorted(all_idx) == list(range(len(recs)))  # every episode in exactly one split
    assert len(set(all_idx)) == len(all_idx)
    assert [len(split[s]) for s in ("train", "dev", "test")] == [36, 12, 12]  # 60/20/20
    for s in ("train", "dev", "test"):
        groups = {(recs[i]["track_id"], recs[i]["direction"]) for i in split[s]}
        assert len(groups) == 6, f"{s} misses a (track, direction) group"
    # Deterministic for a seed, different for another.
    assert split_episodes(recs, seed=3) == split
    assert split_episodes(recs, seed=4) != split
    # Independent of the manifest's order (parallel recording finishes in any order).
    order = np.random.default_rng(0).permutation(len(recs))
    shuffled = split_episodes([recs[i] for i in order], seed=3)
    for s in ("train", "dev", "test"):
        assert sorted(recs[order[i]]["key"] for i in shuffled[s]) == sorted(
            recs[i]["key"] for i in split[s]
        )


def test_split_small_groups_and_custom_ratios() -> None:
    recs = records({("a", "ccw"): 3, ("a", "cw"): 2, ("b", "ccw"): 1})
    split = split_episodes(recs, ratios=(0.6, 0.2, 0.2))
    a_ccw = {i for i, r in enumerate(recs) if (r["track_id"], r["direction"]) == ("a", "ccw")}
    for s in ("train", "dev", "test"):
        assert a_ccw & set(split[s]), "a group of 3 episodes reaches every split"
    split = split_episodes(records({("a", "ccw"): 10}), ratios=(0.8, 0.2, 0.0))
    assert split["test"] == [] and len(split["dev"]) == 2
    with pytest.raises(ValueError):
        split_episodes(recs, ratios=(0.5, 0.2))


def test_default_ratios_follow_data_size() -> None:
    assert default_ratios(50_000) == (0.6, 0.2, 0.2)
    assert default_ratios(100_000) == (0.6, 0.2, 0.2)
    tr, dv, te = default_ratios(1_000_000)
    assert dv * 1_000_000 == pytest.approx(10_000) and tr == pytest.approx(0.98)
    tr, dv, te = default_ratios(2_000_000)
    assert (dv, te) == (pytest.approx(0.005), pytest.approx(0.005))  # 99/0.5/0.5
    # Large data: episodes of 1000 frames, dev/test get about 10k frames each.
    recs = records({(t, d): 170 for t in ("a", "b", "c") for d in ("ccw", "cw")}, frames=1000)
    split = split_episodes(recs)
    assert 6 <= len(split["dev"]) <= 14 and 6 <= len(split["test"]) <= 14


def test_distribution_check_warns_with_numbers() -> None:
    rng = np.random.default_rng(0)
    steer = {
        "train": rng.normal(0, 0.2, 1000),
        "dev": rng.normal(0, 0.2, 300),
        "test": rng.normal(0.3, 0.2, 300),
    }
    dirs = {
        "train": np.array(["ccw", "cw"] * 500),
        "dev": np.array(["ccw", "cw"] * 150),
        "test": np.array(["ccw"] * 300),
    }
    tracks = {
        "train": np.array(["a"] * 1000),
        "dev": np.array(["a"] * 300),
        "test": np.array(["b"] * 300),
    }
    report, warnings = distribution_check(steer, dirs, tracks)
    assert not any(w.startswith("dev") for w in warnings)
    text = " ".join(warnings)
    assert "test has 100% ccw frames, train 50%" in text
    assert "test steering mean" in text and "track mix" in text
    assert report["test"]["direction_gap"] == pytest.approx(0.5)


# --------------------------------------------------------------------------- augmentation
def test_flip_mirrors_image_and_negates_steering() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 8, 10)
    s = torch.linspace(-0.9, 0.9, 64)
    params = AugmentParams(flip=True, jitter=0.0, colour=0.0, shadow=0.0, shift=0.0)
    y, s2, flipped = augment_batch(x, s, params, g)
    assert 10 < int(flipped.sum()) < 54
    assert torch.equal(y[flipped], x[flipped].flip(-1))
    assert torch.equal(y[~flipped], x[~flipped])
    assert torch.equal(s2[flipped], -s[flipped]) and torch.equal(s2[~flipped], s[~flipped])
    # Classifier labels of flipped frames are the mirrored bins.
    cv = torch.tensor(make_class_values(15))
    assert torch.equal(
        steering_to_class(s2[flipped], cv), mirror_class(steering_to_class(s[flipped], cv), 15)
    )


def test_other_augmentations_keep_range_and_correct_steering() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(32, 3, 12, 16)
    s = torch.zeros(32)
    params = AugmentParams(
        flip=False, jitter=0.3, colour=0.1, shadow=1.0, shift=0.2, shift_steering=0.5
    )
    y, s2, _ = augment_batch(x, s, params, g)
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    assert not torch.equal(y, x)
    assert float(s2.abs().max()) <= 0.5 * 0.2 + 1e-6 and float(s2.abs().max()) > 0
    # Shift only: rows above the horizon never move; steering opposes the shift.
    params = AugmentParams(flip=False, jitter=0.0, colour=0.0, shadow=0.0, shift=0.25, horizon=0.5)
    ramp = torch.arange(16, dtype=torch.float32).expand(4, 3, 12, 16).contiguous()
    y, s3, _ = augment_batch(ramp, torch.zeros(4), params, torch.Generator().manual_seed(2))
    assert torch.equal(y[:, :, :6], ramp[:, :, :6])
    moved = y[:, 0, -1, 8] - ramp[:, 0, -1, 8]  # content shift at the bottom row (negated)
    assert torch.all(torch.sign(moved) == torch.sign(s3)) or torch.all(s3 == 0)


def test_flip_consistency_of_a_symmetric_model_is_zero() -> None:
    class Mirror(torch.nn.Module):
        output_kind, targets, class_values, input_size = "regression", ("steering",), None, (8, 10)

        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.linspace(-1, 1, 10))

        def forward(self, x):  # odd in the mirror: f(flip(x)) = -f(x)
            return (x.float().mean(dim=(1, 2)) * self.w).sum(dim=1, keepdim=True)

    imgs = torch.randint(0, 256, (6, 8, 10, 3), dtype=torch.uint8)
    assert flip_consistency(Mirror(), imgs) == pytest.approx(0.0, abs=1e-6)


# --------------------------------------------------------------------------- metrics and diagnosis
def test_precision_recall_f1_hand_example() -> None:
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2])
    r = classification_report(y_true, y_pred, 4, [-1.0, -0.33, 0.33, 1.0])
    c0, c1, c2, c3 = r["per_class"]
    assert (c0["precision"], c0["recall"]) == (1.0, pytest.approx(2 / 3))
    assert c0["f1"] == pytest.approx(0.8)
    assert (c1["precision"], c1["recall"], c1["f1"]) == (0.5, 0.5, 0.5)
    assert (c2["precision"], c2["recall"]) == (0.5, 1.0) and c2["f1"] == pytest.approx(2 / 3)
    assert c3["support"] == 0  # absent class: not in the macro average
    assert r["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert r["accuracy"] == pytest.approx(4 / 6)
    assert "macro" in format_class_table(r)
    m = regression_metrics(np.array([0.1, -0.2, 0.0]), np.array([0.0, 0.0, 0.0]))
    assert m["mae"] == pytest.approx(0.1) and m["mse"] == pytest.approx(0.05 / 3)


def test_diagnosis_follows_the_basic_recipe() -> None:
    d = diagnose(0.10, 0.11, 0.01)
    assert d["avoidable_bias"] == pytest.approx(0.09) and d["variance"] == pytest.approx(0.01)
    assert d["high_bias"] and "bigger network" in " ".join(d["recommendations"])
    d = diagnose(0.02, 0.10, 0.01)
    assert d["high_variance"] and not d["high_bias"]
    assert "more data" in " ".join(d["recommendations"])
    assert diagnose(0.02, 0.025, 0.015)["verdict"].startswith("low bias")
    base, note = estimate_base_error(
        [{"frames": 10, "source": "expert", "expert": {"label_noise": 0.1}}]
    )
    assert base == pytest.approx(0.1 * np.sqrt(2 / np.pi))
    base, note = estimate_base_error([{"frames": 10, "source": "human", "expert": None}])
    assert base == 0 and "unknown" in note


def test_early_stopping_keeps_the_best_epoch() -> None:
    es = EarlyStopping("min", patience=2, min_delta=0.01)
    seq = [0.50, 0.40, 0.395, 0.30, 0.31, 0.305]
    improved = [es.update(v, e + 1) for e, v in enumerate(seq)]
    assert improved == [True, True, False, True, False, False]
    assert es.should_stop and es.best_epoch == 4 and es.best == 0.30
    es = EarlyStopping("max", patience=1)
    assert es.update(0.5, 1) and not es.update(0.4, 2) and es.should_stop
    assert not es.update(float("nan"), 3)


def test_config_validation_and_json_round_trip(tmp_path) -> None:
    cfg = TrainConfig(
        data="d", out="o", model="compact_cls", directions=("ccw",), input_size=(32, 40)
    )
    assert cfg.output_kind == "classes" and cfg.resolved_stop_metric == "dev_macro_f1"
    assert cfg.stop_mode == "max" and cfg.model_args["num_classes"] == 15
    (tmp_path / "c.json").write_text(cfg.to_json())
    assert TrainConfig.from_json(tmp_path / "c.json") == cfg
    for bad in ({"lr": -1.0}, {"dropout": 1.0}, {"model": "vgg"}, {"directions": ("up",)},
                {"split_ratios": (0.5, 0.5)}, {"batch_size": 0}, {"lr": float("nan")}):  # fmt: skip
        with pytest.raises(ValueError):
            TrainConfig(**bad)
    with pytest.raises(ValueError, match="unknown config keys"):
        TrainConfig.from_dict({"learning_rate": 1.0})


# --------------------------------------------------------------------------- CLI input errors
def test_bad_input_exits_2_and_writes_nothing(tmp_path, syn_data, capsys) -> None:
    out = tmp_path / "run"
    assert train_main(["--data", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "error:" in capsys.readouterr().err and not out.exists()
    with pytest.raises(SystemExit) as e:
        train_main(["--data", str(syn_data), "--out", str(out), "--epochs", "many"])
    assert e.value.code == 2 and not out.exists()
    assert train_main(["--data", str(syn_data), "--out", str(out), "--lr", "-1"]) == 2
    assert train_main(["--data", str(syn_data), "--out", str(out), "--directions", "sideways"]) == 2
    empty = tmp_path / "empty"
    from sim.dataset import DatasetWriter

    DatasetWriter(empty, {"env_id": "x", "camera": {"image_size": [32, 40]}, "control_hz": 20})
    assert train_main(["--data", str(empty), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 4 and "no frames" in err
    assert not out.exists()


# --------------------------------------------------------------------------- training runs
def test_end_to_end_writes_all_artifacts(tmp_path, syn_data, capsys) -> None:
    out = tmp_path / "run"
    rc = train_main(
        ["--data", str(syn_data), "--out", str(out), "--epochs", "3", "--seed", "1", *TINY]
    )
    assert rc == 0
    for name in ("config.json", "split.json", "metrics.csv", "curves.png", "best.safetensors",
                 "best.json", "last.safetensors", "last.json", "last-state.safetensors",
                 "test_metrics.json", "diagnosis.json"):  # fmt: skip
        assert (out / name).is_file(), name
    assert any((out / "tb").iterdir())
    printed = capsys.readouterr().out
    assert "diagnosis" in printed and "avoidable bias" in printed
    split = json.loads((out / "split.json").read_text())
    keys = [k for s in ("train", "dev", "test") for k in split["episodes"][s]]
    assert len(keys) == len(set(keys)) == 6
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    best = json.loads((out / "best.json").read_text())
    dev = [float(r["dev_mae"]) for r in rows]
    assert best["epoch"] == int(np.argmin(dev)) + 1  # the restored best is the dev minimum
    assert best["dataset"]["fingerprint"] and best["config"]["model"] == "compact"
    assert best["output"]["kind"] == "regression" and best["split"]["test"]
    # The best checkpoint drives: it loads as a pilot and reproduces its test metrics.
    pilot = load_pilot(out)
    assert pilot.metadata()["checkpoint_sha256"] == best["weights_sha256"]
    from training import evaluate_offline

    res = evaluate_offline(out, syn_data, "test")
    test = json.loads((out / "test_metrics.json").read_text())
    assert res["mae"] == pytest.approx(test["mae"], rel=1e-5)
    assert test["mae"] < 0.35  # steering is learnable from these images
    cfg = TrainConfig.from_json(out / "config.json")
    assert cfg.epochs == 3 and cfg.seed == 1
    assert diagnose_main([str(out), "--base-error", "0.01"]) == 0
    assert "0.0100" in capsys.readouterr().out


def test_classifier_run_reports_per_class_metrics(tmp_path, syn_data, capsys) -> None:
    out = tmp_path / "cls"
    rc = train_main(["--data", str(syn_data), "--out", str(out), "--model", "compact_cls",
                     "--num-classes", "7", "--epochs", "2", "--no-tensorboard", *TINY])  # fmt: skip
    assert rc == 0
    test = json.loads((out / "test_metrics.json").read_text())
    assert len(test["classes"]["per_class"]) == 7 and "macro_f1" in test
    assert "macro" in capsys.readouterr().out
    assert load_pilot(out).metadata()["class_values"] == pytest.approx(make_class_values(7))


def test_early_stopping_triggers_and_restores_best(tmp_path, syn_data) -> None:
    out = tmp_path / "es"
    # A huge min_delta: no epoch after the first counts as an improvement.
    rc = train_main(
        ["--data", str(syn_data), "--out", str(out), "--epochs", "10", "--patience", "3",
         "--min-delta", "10", "--lr-decay-patience", "1", "--no-tensorboard", *TINY]
    )  # fmt: skip
    assert rc == 0
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == 4  # best at 1, then 3 epochs of patience
    # The learning rate halves after every epoch without improvement.
    assert [float(r["lr"]) for r in rows] == pytest.approx([1e-3, 1e-3, 5e-4, 2.5e-4])
    best = json.loads((out / "best.json").read_text())
    assert best["epoch"] == 1 and "early stopping" in best["stopped"]
    first = load_file(out / "best.safetensors")
    last = load_file(out / "last.safetensors")
    assert any(not torch.equal(first[k], last[k]) for k in first)
    # The final evaluation used the restored best weights (epoch 1's dev MAE).
    pilot = load_pilot(out)
    from training.evaluate import evaluate_offline

    dev = evaluate_offline(out, syn_data, "dev", flip_frames=0)
    assert dev["mae"] == pytest.approx(float(rows[0]["dev_mae"]), rel=1e-5)
    assert pilot.sha256 == best["weights_sha256"]


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, syn_data) -> None:
    import training.train as train_mod

    common = ["--data", str(syn_data), "--seed", "3", "--patience", "50", "--no-tensorboard", *TINY]
    straight = tmp_path / "straight"
    assert train_main([*common, "--out", str(straight), "--epochs", "4"]) == 0

    # Killed after epoch 2 (its checkpoints written), then resumed.
    killed = tmp_path / "killed"
    args = train_mod.build_parser().parse_args([*common, "--out", str(killed), "--epochs", "4"])

    def kill(epoch: int, row: dict) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_mod.run(train_mod.config_from_args(args), on_epoch_end=kill)
    assert not (killed / "test_metrics.json").exists()
    assert train_main(["--out", str(killed), "--resume", "--no-progress"]) == 0

    # Stopped by the epoch limit at 2, then extended to 4.
    extended = tmp_path / "extended"
    assert train_main([*common, "--out", str(extended), "--epochs", "2"]) == 0
    assert train_main(["--out", str(extended), "--resume", "--epochs", "4", "--no-progress"]) == 0

    for run_dir in (killed, extended):
        for name in ("last.safetensors", "best.safetensors"):
            a, b = load_file(straight / name), load_file(run_dir / name)
            assert a.keys() == b.keys()
            for k in a:
                assert torch.equal(a[k], b[k]), f"{run_dir.name}/{name}:{k} differs after resume"
        ha = list(csv.DictReader((straight / "metrics.csv").open()))
        hb = list(csv.DictReader((run_dir / "metrics.csv").open()))
        assert [r["dev_mae"] for r in ha] == [r["dev_mae"] for r in hb]
        assert [r["lr"] for r in ha] == [r["lr"] for r in hb]
    # Flags that would change the weights are refused on resume.
    assert train_main(["--out", str(extended), "--resume", "--lr", "0.1"]) == 2


def test_nan_loss_stops_without_overwriting_best(tmp_path, syn_data, monkeypatch, capsys) -> None:
    import training.trainer as train_mod

    real = train_mod.compute_loss
    calls = {"n": 0}
    steps_per_epoch = 160 // 32

    def poisoned(*args, **kwargs):
        loss = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] > steps_per_epoch + 2:  # in the middle of epoch 2
            return loss * float("nan")
        return loss

    monkeypatch.setattr(train_mod, "compute_loss", poisoned)
    out = tmp_path / "nan"
    rc = train_main(
        ["--data", str(syn_data), "--out", str(out), "--epochs", "5", "--no-tensorboard", *TINY]
    )
    assert rc == 1
    err = capsys.readouterr().err
    assert "diverged" in err and "nan" in err and "best checkpoint was left untouched" in err
    best = json.loads((out / "best.json").read_text())
    assert best["epoch"] == 1
    pilot = load_pilot(out)  # still a valid, finite checkpoint
    a = pilot.predict(np.zeros((1, 32, 40, 3), dtype=np.uint8))
    assert np.all(np.isfinite(a))
    assert not (out / "test_metrics.json").exists()


def test_directions_filter_and_max_frames(tmp_path, syn_data) -> None:
    out = tmp_path / "ccw"
    rc = train_main(["--data", str(syn_data), "--out", str(out), "--directions", "ccw", "--epochs", "1",
                     "--max-frames", "60", "--split", "0.34,0.33,0.33", "--no-tensorboard", *TINY])  # fmt: skip
    assert rc == 0
    split = json.loads((out / "split.json").read_text())
    assert split["frame_stride"] == 2  # 120 ccw frames -> every 2nd frame
    assert split["distribution"]["train"]["ccw_fraction"] == 1.0
    total = sum(split["frames"].values())
    assert total == 60


# --------------------------------------------------------------------------- search and bench
def test_fine_space_zooms_into_the_best_region() -> None:
    from training.search import COARSE_SPACE, fine_space

    best = [{"lr": 1e-3, "weight_decay": 1e-4, "dropout": 0.2, "log2_batch": 6, "width": 1.0},
            {"lr": 4e-3, "weight_decay": 1e-3, "dropout": 0.3, "log2_batch": 7, "width": 1.2}]  # fmt: skip
    fine = {p.name: p for p in fine_space(best)}
    coarse = {p.name: p for p in COARSE_SPACE}
    for name, p in fine.items():
        assert coarse[name].low <= p.low <= p.high <= coarse[name].high
        assert p.log == coarse[name].log
    assert fine["lr"].low < 1e-3 and fine["lr"].high > 4e-3
    assert fine["lr"].high / fine["lr"].low < coarse["lr"].high / coarse["lr"].low / 10
    assert (fine["log2_batch"].low, fine["log2_batch"].high) == (5, 8) or fine[
        "log2_batch"
    ].low >= 5


@pytest.mark.slow
def test_search_writes_best_config_and_plot(tmp_path, syn_data) -> None:
    from training.search import main as search_main

    out = tmp_path / "search"
    rc = search_main(["--data", str(syn_data), "--out", str(out), "--trials", "3", "--epochs", "1",
                      "--input-size", "32x40", "--no-progress"])  # fmt: skip
    assert rc == 0
    for name in ("best_config.json", "search.png", "trials.csv", "search.db"):
        assert (out / name).is_file()
    cfg = TrainConfig.from_json(out / "best_config.json")
    assert cfg.data == "" and cfg.input_size == (32, 40)  # the data is given when retraining
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [r["stage"] for r in rows] == ["1", "1", "2"]


def test_bench_measures_throughput_and_latency() -> None:
    from agents.cnn import CNNPilot
    from training.bench import bench_latency, bench_training

    r = bench_training(
        "compact", torch.device("cpu"), (48, 64), batch_size=8, repeats=1, min_seconds=0.0
    )
    assert r["train_images_per_s"] > 0 and 0 < r["augment_share"] < 1
    lat = bench_latency(CNNPilot(build_model("compact")), (48, 64), runs=3, warmup=1)
    assert 0 < lat["latency_ms_median"] <= lat["latency_ms_p95"]
