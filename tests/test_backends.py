"""Execution backends (``evaluation.backends``): pilots shipped by content, the process
pool's report of a pilot that cannot be loaded. The Ray backend: ``test_backends_ray.py``."""

from __future__ import annotations

import pytest

from agents.registry import load_pilot, pilot_files
from evaluation.backends import (
    RunsIncomplete,
    check_backend,
    open_backend,
    validate_backend_options,
)
from evaluation.backends.pool import PoolBackend
from evaluation.backends.shipping import materialise, pack
from evaluation.runner import RunJob, run_many


def _corrupt_weights(directory) -> None:
    w = directory / "best.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))


def test_pilot_files_name_what_a_pilot_loads(tmp_path, make_cnn_checkpoint) -> None:
    ckpt = make_cnn_checkpoint(tmp_path / "run")
    assert pilot_files("expert") is None and pilot_files("classical") is None
    for spec in (ckpt, ckpt / "best.json", ckpt / "best.safetensors"):
        entry, files = pilot_files(str(spec))
        assert entry == "best.json"
        assert sorted(f.name for f in files) == ["best.json", "best.safetensors"]
    with pytest.raises(ValueError, match="no such file"):
        pilot_files(str(tmp_path / "missing.onnx"))


def test_shipped_pilot_loads_from_its_content(tmp_path, make_cnn_checkpoint) -> None:
    ckpt = make_cnn_checkpoint(tmp_path / "run")
    bundle, payload = pack(str(ckpt))
    assert bundle.size == len(payload) and bundle.entry == "best.json"
    # the same content elsewhere has the same address; other content another one
    copy = make_cnn_checkpoint(tmp_path / "copy")
    assert pack(str(copy))[0].address == bundle.address
    other = make_cnn_checkpoint(tmp_path / "other", seed=1)
    assert pack(str(other))[0].address != bundle.address

    cache = tmp_path / "cache"
    fetched = []

    def fetch() -> bytes:
        fetched.append(1)
        return payload

    spec = materialise(bundle, fetch, cache)
    assert spec == str(cache / bundle.address / "best.json")
    original, shipped = load_pilot(str(ckpt)), load_pilot(spec)
    assert shipped.metadata()["checkpoint_sha256"] == original.metadata()["checkpoint_sha256"]
    assert materialise(bundle, fetch, cache) == spec and len(fetched) == 1  # cached

    # a damaged cached file is fetched again; a damaged payload is refused, nothing kept
    (cache / bundle.address / "best.safetensors").write_bytes(b"x")
    assert materialise(bundle, fetch, cache) == spec and len(fetched) == 2
    load_pilot(spec)
    bad = bytearray(payload)
    bad[-1] ^= 0xFF
    with pytest.raises(ValueError, match="sha256 does not match"):
        materialise(bundle, lambda: bytes(bad), tmp_path / "cache2")
    with pytest.raises(ValueError, match="truncated"):
        materialise(bundle, lambda: payload[:-1], tmp_path / "cache2")
    assert list((tmp_path / "cache2").iterdir()) == []
    assert pack("expert") is None


def test_pool_reports_an_unloadable_pilot_and_finishes_the_rest(
    tmp_path, make_cnn_checkpoint
) -> None:
    broken = make_cnn_checkpoint(tmp_path / "broken")
    _corrupt_weights(broken)
    jobs = [RunJob("expert", "oval", laps=1, seed=s, record_trajectory=False) for s in (0, 1)]
    jobs.insert(1, RunJob(str(broken), "oval", laps=1, max_time_s=1.0))
    with pytest.raises(RunsIncomplete) as info:
        run_many(jobs, workers=2, progress=False)
    e = info.value
    assert set(e.failures) == {1}
    assert [r is not None and r.laps_completed == 1 for r in e.results] == [True, False, True]
    message = str(e)
    assert message.startswith("1 of 3 runs not made: ")
    assert f"pilot '{broken}' could not be loaded on " in message
    assert "sha256 does not match" in message and "\n" not in message


def test_backend_names_and_addresses_are_checked() -> None:
    with pytest.raises(ValueError, match="backend must be one of pool, ray"):
        check_backend("spark")
    with pytest.raises(ValueError, match="--address is for --backend ray"):
        open_backend("pool", address="auto")
    with open_backend("pool", workers=2) as b:
        assert isinstance(b, PoolBackend) and b.workers == 2
    with pytest.raises(ValueError, match="workers must be >= 1"):
        PoolBackend(0)


def test_backend_options_are_checked_together_without_a_cluster() -> None:
    with pytest.raises(ValueError, match="backend must be one of pool, ray, got 'spark'"):
        validate_backend_options("spark", None)
    with pytest.raises(ValueError, match="--address is for --backend ray"):
        check_backend("pool", "auto")
    with pytest.raises(ValueError, match="^--video with --address: each video"):
        validate_backend_options("ray", "10.0.0.1:6379", video=True)
    validate_backend_options("ray", "10.0.0.1:6379")  # no probe: nothing answers there
    validate_backend_options("pool", None, video=True)


def test_evaluate_cli_rejects_address_without_ray(tmp_path, capsys) -> None:
    from evaluation.evaluate import main

    db = tmp_path / "lb.sqlite"
    rc = main(["expert", "--address", "auto", "--out", str(tmp_path), "--db", str(db)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == "error: --address is for --backend ray"
    rc = main(["expert", "--backend", "ray", "--address", "auto", "--video", str(tmp_path)]
              + ["--db", str(db)])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: --video with --address: each video would be")
    assert not db.exists()
