"""Nothing silently wrong with datasets: training and evaluation verify every episode file,
the recorder never deletes a valid episode, and dataset files have limits.

The command lines run for real, as subprocesses, on a tiny dataset recorded by
``python -m sim.record``; each failure must be exactly one ``error:`` line on stderr
naming the file, a non-zero exit and no traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save

from sim.dataset import (
    CONTENT_SHA_KEY,
    ENCODING_METADATA_KEY,
    EPISODE_METADATA_KEY,
    MAX_EPISODE_FRAMES,
    MAX_EPISODES,
    MAX_HEADER_BYTES,
    MAX_JSON_DEPTH,
    MAX_MANIFEST_BYTES,
    MAX_NAME_CHARS,
    MAX_STRING_CHARS,
    QUARANTINE_DIRNAME,
    DatasetError,
    DatasetWriter,
    EpisodeMeta,
    is_warning,
    open_dataset,
    synthetic_episode,
    validate_dataset,
)
from sim.dataset.episode_file import (
    _decode_bytes,
    _episode_meta,
    _read_header_bytes,
    _serialize_episode,
)
from training.config import TrainConfig
from training.data import split_episodes
from training.train_cli import build_parser as train_parser
from training.train_cli import config_from_args

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
RECORD = [
    "--tracks", "oval", "--directions", "ccw,cw", "--laps", "1", "--episodes", "3",
    "--image-size", "32x40", "--workers", "1", "--seed", "3", "--no-progress",
]  # fmt: skip
#: The quickest training run that still writes a checkpoint.
TRAIN = [
    "--epochs", "1", "--max-frames", "300", "--train-eval-frames", "100",
    "--flip-eval-frames", "0", "--device", "cpu", "--no-progress", "--no-tensorboard",
]  # fmt: skip


def run(module: str, *args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=ENV,
        timeout=600,
    )


def error_lines(text: str) -> list[str]:
    # progress bars redraw with \r: a line is whatever lies between \r or \n
    return [
        line.strip() for line in re.split(r"[\r\n]+", text) if line.strip().startswith("error:")
    ]


def assert_one_error(proc: subprocess.CompletedProcess, *wanted: str) -> str:
    """Exactly one ``error:`` line on stderr, containing every ``wanted``; no traceback."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = error_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    for w in wanted:
        assert w in lines[0], lines[0]
    return lines[0]


def tensor_span(path: Path, name: str) -> tuple[int, int]:
    """Where field ``name``'s bytes lie in the episode file ``path``: its raw tensor
    (version 1) or its compressed chunks (``NAME.zst``, version 2)."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    begin, end = header[name if name in header else name + ".zst"]["data_offsets"]
    return 8 + n + begin, 8 + n + end


def flip(path: Path, offset: int, mask: int = 0xFF) -> None:
    b = bytearray(path.read_bytes())
    b[offset] ^= mask
    path.write_bytes(bytes(b))


def corrupt(path: Path, where: str, mask: int = 0xFF) -> None:
    """Flip one byte in the middle of the steering labels' or the images' stored bytes."""
    begin, end = tensor_span(path, "steering" if where == "label" else "image")
    flip(path, (begin + end) // 2, mask)


def negate_label(path: Path) -> None:
    """Rewrite episode file ``path`` with steering[10] negated, as a well-formed file (its
    own checksums hold): only the manifest's sha256 can tell, so the label stays finite and
    an unverified load trains on it."""
    data = path.read_bytes()
    hdr = _read_header_bytes(data, path)
    arrays = {k: a.copy() for k, a in _decode_bytes(data, hdr, path).items()}
    arrays["steering"][10] *= -1
    meta = _episode_meta(hdr, path)
    meta.pop(CONTENT_SHA_KEY)
    new, _ = _serialize_episode(arrays, meta, hdr.version)
    path.write_bytes(bytes(new))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """6 expert episodes (oval, ccw and cw, 1 lap, 32x40), recorded once for the module."""
    root = tmp_path_factory.mktemp("recorded")
    proc = run("sim.record", *RECORD, "--out", root / "ds", cwd=root)
    assert proc.returncode == 0, proc.stderr
    return root / "ds"


@pytest.fixture
def data(recorded, tmp_path) -> Path:
    """A fresh copy of the recorded dataset, ``tmp_path / "d"``."""
    return Path(shutil.copytree(recorded, tmp_path / "d"))


def episode(root: Path, i: int = 0) -> Path:
    return root / open_dataset(root).episodes[i]["file"]


@pytest.fixture(scope="module")
def no_verify_run(recorded, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """``training.train --no-verify`` on a copy with one steering label negated: it runs (the
    risk its help states). Its run directory is the checkpoint the evaluation tests use."""
    root = tmp_path_factory.mktemp("noverify")
    d = Path(shutil.copytree(recorded, root / "d"))
    negate_label(episode(d))
    proc = run("training.train", "--data", d, "--out", root / "r", *TRAIN, "--no-verify", cwd=root)
    return root / "r", proc


# --------------------------------------------------------------------------- 1. verification


@pytest.mark.parametrize("where", ["label", "image"])
def test_train_refuses_a_corrupted_episode_and_writes_nothing(data, tmp_path, where):
    path = episode(data)
    corrupt(path, where)
    proc = run("training.train", "--data", data, "--out", tmp_path / "r", *TRAIN, cwd=tmp_path)
    line = assert_one_error(proc, str(path), "sha256 mismatch", "python -m sim.dataset validate")
    assert line.startswith(f"error: {path}:")
    assert proc.returncode == 2
    assert not (tmp_path / "r").exists(), "a failed run left a run directory"


def test_train_no_verify_runs(no_verify_run):
    run_dir, proc = no_verify_run
    assert proc.returncode == 0, proc.stderr
    assert not error_lines(proc.stderr)
    assert (run_dir / "best.safetensors").is_file()
    assert json.loads((run_dir / "config.json").read_text())["verify"] is False


@pytest.mark.parametrize("where", ["label", "image"])
def test_evaluate_refuses_a_corrupted_episode(data, tmp_path, no_verify_run, where):
    run_dir, trained = no_verify_run
    assert trained.returncode == 0, trained.stderr
    path = episode(data, 1)
    if where == "label":
        negate_label(path)
    else:
        corrupt(path, where)
    proc = run("training.evaluate", run_dir, "--data", data, "--split", "all", cwd=tmp_path)
    assert_one_error(proc, str(path), "sha256 mismatch", "python -m sim.dataset validate")
    if where == "image":
        # a flipped byte in compressed data: damaged even unverified, one line
        proc = run(
            "training.evaluate", run_dir, "--data", data, "--split", "all", "--no-verify",
            cwd=tmp_path,
        )  # fmt: skip
        assert_one_error(proc, str(path), "the file is damaged")
        return
    proc = run(
        "training.evaluate", run_dir, "--data", data, "--split", "all", "--no-verify", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^all: 2016 frames, steering MAE", proc.stdout, re.M), proc.stdout


@pytest.mark.slow
def test_train_checks_the_test_split_before_writing_the_run_directory(data, tmp_path):
    """Test frames are loaded only after training; their files are checked up front."""
    records = open_dataset(data).episodes
    test_ep = split_episodes(records, None, 0)["test"][0]
    path = data / records[test_ep]["file"]
    corrupt(path, "image")
    proc = run("training.train", "--data", data, "--out", tmp_path / "r", *TRAIN, cwd=tmp_path)
    assert_one_error(proc, str(path), "sha256 mismatch")
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_the_reproduction_of_the_issue_fails_properly(tmp_path):
    """The issue's commands, verbatim, in a temp dir."""
    proc = run(
        "sim.record", "--tracks", "oval", "--directions", "ccw,cw", "--laps", "1",
        "--episodes", "3", "--image-size", "60x80", "--workers", "1", "--seed", "3",
        "--out", "d", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    p = tmp_path / "d/episodes/ep-oval-ccw-002-s3.safetensors"
    corrupt(p, "image")  # the issue flipped byte 3,000,000 of a raw (version 1) file
    proc = run("training.train", "--data", "d", "--out", "r", "--epochs", "1", cwd=tmp_path)
    assert_one_error(proc, "d/episodes/ep-oval-ccw-002-s3.safetensors", "sha256 mismatch")
    assert not (tmp_path / "r").exists()
    proc = run("sim.dataset", "validate", "d", cwd=tmp_path)
    assert proc.returncode == 1 and "ep-oval-ccw-002-s3.safetensors: sha256 mismatch" in proc.stdout


def test_verify_is_a_config_field_with_a_flag_that_states_the_risk():
    assert TrainConfig().verify is True
    parser = train_parser()
    text = " ".join(parser.format_help().split())
    assert "--no-verify" in text and "risk" in text
    cfg = config_from_args(parser.parse_args(["--data", "d", "--out", "r", "--no-verify"]))
    assert cfg.verify is False
    assert TrainConfig.from_dict({"data": "d"}).verify is True  # old config.json files


def test_the_reader_verifies_by_default(data):
    path = episode(data, 2)
    negate_label(path)
    ds = open_dataset(data)
    for load in (
        lambda: ds.load_arrays(fields=["steering"]),
        lambda: ds.load_arrays(episodes=[2]),
        lambda: ds.load_episode(2, fields=["steering"]),
    ):
        with pytest.raises(DatasetError, match=r"sha256 mismatch.*sim\.dataset validate") as e:
            load()
        assert str(path) in str(e.value) and "\n" not in str(e.value)
    ds.load_arrays(fields=["steering"], verify=False)  # the explicit opt-out


# --------------------------------------------------------------------------- 2. the recorder


def test_record_lists_again_the_episodes_a_cut_manifest_lacks(data, tmp_path):
    manifest_path = data / "manifest.json"
    full = json.loads(manifest_path.read_text())
    before = {p.name: sha(p) for p in (data / "episodes").iterdir()}
    cut = dict(full, episodes=full["episodes"][:3])
    manifest_path.write_text(json.dumps(cut, indent=2))
    problems = validate_dataset(data)
    assert len(problems) == 3 and all(is_warning(p) and "lists it again" in p for p in problems)

    proc = run("sim.record", *RECORD, "--out", data, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "wrote 0 episodes" in proc.stdout and "6 already complete" in proc.stdout
    said = [line for line in proc.stderr.splitlines() if "listed again" in line]
    assert len(said) == 1 and "listed again 3 complete, intact episode files" in said[0]
    assert "removed" not in proc.stderr
    assert {p.name: sha(p) for p in (data / "episodes").iterdir()} == before  # nothing deleted
    relisted = json.loads(manifest_path.read_text())["episodes"]
    key_sha = {(r["key"], r["sha256"]) for r in relisted}
    assert key_sha == {(r["key"], r["sha256"]) for r in full["episodes"]}
    assert validate_dataset(data) == []


def test_record_records_again_a_deleted_listed_episode(data, tmp_path, recorded):
    path = episode(data, 4)
    path.unlink()
    proc = run("sim.record", *RECORD, "--out", data, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "wrote 1 episodes" in proc.stdout and "5 already complete" in proc.stdout
    said = [line for line in proc.stderr.splitlines() if "recording again" in line]
    assert len(said) == 1 and f"{path.name}: missing" in said[0]
    assert path.is_file() and validate_dataset(data) == []
    key = path.name[3:-12]
    again = open_dataset(data).load_episode(key)
    original = open_dataset(recorded).load_episode(key)
    for name, a in original.items():  # the same seed records the same frames
        np.testing.assert_array_equal(again[name], a, err_msg=name)


def test_record_quarantines_and_records_again_a_corrupt_listed_episode(data, tmp_path):
    path = episode(data, 1)
    corrupt(path, "image")
    damaged = path.read_bytes()
    proc = run("sim.record", *RECORD, "--out", data, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "wrote 1 episodes" in proc.stdout
    said = [line for line in proc.stderr.splitlines() if "recording again" in line]
    assert len(said) == 1 and "sha256 mismatch" in said[0] and QUARANTINE_DIRNAME in said[0]
    assert (data / QUARANTINE_DIRNAME / path.name).read_bytes() == damaged  # kept, not deleted
    assert path.is_file() and validate_dataset(data) == []


# In-process writer behaviour (fast): what counts as a valid unlisted episode.
HW = (8, 12)
INFO = {"env_id": "Robust-v0", "camera": {"image_size": list(HW)}, "control_hz": 20}


def meta(i: int = 0, **kw) -> EpisodeMeta:
    return EpisodeMeta(**({"track_id": "oval", "track_hash": "h", "direction": "ccw",
                           "seed": i, "source": "expert", "laps": 1} | kw))  # fmt: skip


def small_dataset(root: Path, n: int = 3) -> DatasetWriter:
    w = DatasetWriter(root, INFO)
    for i in range(n):
        w.write_episode(f"e{i}", synthetic_episode(np.random.default_rng(i), 4 + i, HW), meta(i))
    return w


def unlist(root: Path, *keys: str) -> None:
    path = root / "manifest.json"
    m = json.loads(path.read_text())
    m["episodes"] = [r for r in m["episodes"] if r["key"] not in keys]
    path.write_text(json.dumps(m))


def test_writer_lists_intact_files_and_quarantines_the_rest(tmp_path, caplog):
    small_dataset(tmp_path, 5)
    eps = tmp_path / "episodes"
    full = {r["key"]: r for r in open_dataset(tmp_path).episodes}
    # e1: intact; e2: one data byte flipped; e3: truncated; e4: an old file, no content sha
    corrupt(eps / "ep-e2.safetensors", "image")
    data = (eps / "ep-e3.safetensors").read_bytes()
    (eps / "ep-e3.safetensors").write_bytes(data[: len(data) - 7])
    arrays = synthetic_episode(np.random.default_rng(4), 5, HW)
    legacy = json.dumps({"key": "e4", "schema_version": 1, "frames": 5, **meta(4).to_dict()})
    (eps / "ep-e4.safetensors").write_bytes(save(arrays, {EPISODE_METADATA_KEY: legacy}))
    dead = eps / f".ep-x.safetensors.tmp-{2**30}-ab12"
    dead.write_bytes(b"partial")
    unlist(tmp_path, "e1", "e2", "e3", "e4")
    with caplog.at_level("WARNING", logger="sim.dataset"):
        DatasetWriter(tmp_path, INFO)
    listed = {r["key"]: r for r in open_dataset(tmp_path).episodes}
    assert listed == {k: full[k] for k in ("e0", "e1")}  # e1 exactly as it was listed
    quarantine = tmp_path / QUARANTINE_DIRNAME
    assert sorted(p.name for p in quarantine.iterdir()) == [
        "ep-e2.safetensors", "ep-e3.safetensors", "ep-e4.safetensors"]  # fmt: skip
    assert not dead.exists()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines  # one line each: temp files removed, listed again, quarantined
    assert "removed 1 temp files" in lines[0] and "listed again 1" in lines[1]
    moved = lines[2]
    assert "moved 3 unlisted files" in moved and "corrupt" in moved and CONTENT_SHA_KEY in moved
    assert validate_dataset(tmp_path) == []
    # a file of the same name arriving later does not overwrite the quarantined one
    (eps / "ep-e2.safetensors").write_bytes(b"junk")
    DatasetWriter(tmp_path, INFO)
    assert (quarantine / "ep-e2.1.safetensors").read_bytes() == b"junk"


def test_repair_unlists_missing_and_corrupt_episodes(tmp_path):
    w = small_dataset(tmp_path, 3)
    (tmp_path / "episodes/ep-e0.safetensors").unlink()
    corrupt(tmp_path / "episodes/ep-e1.safetensors", "image")
    lines = w.repair(["e0", "e1"])
    assert len(lines) == 2 and "missing" in lines[0] and "sha256 mismatch" in lines[1]
    assert [r["key"] for r in w.episodes] == ["e2"]
    assert (tmp_path / QUARANTINE_DIRNAME / "ep-e1.safetensors").is_file()
    assert w.repair() == [] and validate_dataset(tmp_path) == []


def test_episode_files_vouch_for_their_content(tmp_path):
    small_dataset(tmp_path, 1)
    path = tmp_path / "episodes/ep-e0.safetensors"
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    emeta = json.loads(header["__metadata__"][EPISODE_METADATA_KEY])
    assert emeta[CONTENT_SHA_KEY] == hashlib.sha256(data[8 + n :]).hexdigest()
    assert n % 8 == 0


# --------------------------------------------------------------------------- 3. limits


def write_manifest(root: Path, m: dict) -> None:
    """``m`` as ``root/manifest.json``; a ``"DEEP"`` string becomes 5000 nested arrays."""
    text = json.dumps(m).replace('"DEEP"', "[" * 5000 + "]" * 5000)
    (root / "manifest.json").write_text(text)


def nested(depth: int) -> object:
    x: object = 0
    for _ in range(depth):
        x = [x]
    return x


def test_deep_manifest_is_one_error_line_for_training(data, tmp_path):
    m = json.loads((data / "manifest.json").read_text())
    m["info"]["deep"] = "X"
    text = json.dumps(m).replace('"X"', "[" * 100_000 + "]" * 100_000)
    (data / "manifest.json").write_text(text)
    proc = run("training.train", "--data", data, "--out", tmp_path / "r", *TRAIN, cwd=tmp_path)
    assert_one_error(proc, str(data / "manifest.json"), "MAX_JSON_DEPTH")
    assert not (tmp_path / "r").exists()
    proc = run("sim.record", *RECORD, "--out", data, cwd=tmp_path)
    assert_one_error(proc, "manifest.json", "MAX_JSON_DEPTH")


def test_oversized_manifest_is_one_error_line(data, tmp_path):
    with open(data / "manifest.json", "r+b") as f:
        f.truncate(MAX_MANIFEST_BYTES + 1)  # sparse: refused on its size, before reading
    proc = run("sim.dataset", "info", data, cwd=tmp_path)
    assert_one_error(proc, "manifest.json", "MAX_MANIFEST_BYTES")
    proc = run("sim.dataset", "validate", data, cwd=tmp_path)
    assert proc.returncode == 1 and "MAX_MANIFEST_BYTES" in proc.stdout


def _base_manifest(root: Path) -> dict:
    small_dataset(root, 1)
    return json.loads((root / "manifest.json").read_text())


@pytest.mark.parametrize(
    "change, limit",
    [
        (lambda m: m["info"].update(deep=nested(MAX_JSON_DEPTH)), "MAX_JSON_DEPTH"),
        (lambda m: m["info"].update(deep="DEEP"), "MAX_JSON_DEPTH"),
        (lambda m: m["info"].update(note="x" * (MAX_STRING_CHARS + 1)), "MAX_STRING_CHARS"),
        (lambda m: m["episodes"].extend([{}] * MAX_EPISODES), "MAX_EPISODES"),
        (lambda m: m["episodes"][0].update(track_id="t" * (MAX_NAME_CHARS + 1)), "MAX_NAME_CHARS"),
        (lambda m: m["episodes"][0].update(frames=MAX_EPISODE_FRAMES + 1), "MAX_EPISODE_FRAMES"),
        # a raw (version-1) dataset: its file sizes bound its frames
        (
            lambda m: (
                m.update(schema_version=1) or m["episodes"][0].update(frames=10**6, bytes=1000)
            ),
            "cannot fit",
        ),  # fmt: skip
        # a compressed one: what its frames decode to is bounded
        (
            lambda m: (
                m["info"]["camera"].update(image_size=[1000, 1000])
                or m["episodes"][0].update(frames=2000)
            ),
            "MAX_DECODED_BYTES",
        ),  # fmt: skip
        (lambda m: m["info"]["camera"].update(image_size=[1025, 40]), "MAX_IMAGE_SIDE"),
    ],
)
def test_manifest_limits(tmp_path, change, limit):
    m = _base_manifest(tmp_path)
    change(m)
    write_manifest(tmp_path, m)
    with pytest.raises(DatasetError, match=limit) as e:
        open_dataset(tmp_path)
    assert str(tmp_path / "manifest.json") in str(e.value) and "\n" not in str(e.value)
    assert any(limit in p for p in validate_dataset(tmp_path))
    with pytest.raises(DatasetError, match=limit):
        DatasetWriter(tmp_path, INFO)


def _rewrite_header(path: Path, edit) -> None:
    """Replace the header of episode file ``path`` by ``edit(header dict)`` (data kept)."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = edit(json.loads(data[8 : 8 + n]))
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])


def _meta_edit(**kw):
    def edit(h: dict) -> dict:
        emeta = json.loads(h["__metadata__"][EPISODE_METADATA_KEY])
        h["__metadata__"][EPISODE_METADATA_KEY] = json.dumps(emeta | kw)
        return h

    return edit


@pytest.mark.parametrize(
    "edit, limit",
    [
        (lambda h: json.dumps(h).encode() + b" " * (MAX_HEADER_BYTES + 1), "MAX_HEADER_BYTES"),
        (_meta_edit(extra={"deep": nested(MAX_JSON_DEPTH + 1)}), "MAX_JSON_DEPTH"),
        (_meta_edit(note="y" * (MAX_STRING_CHARS + 1)), "MAX_STRING_CHARS"),
        (
            lambda h: (
                h
                | {
                    f"t{i}": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}
                    for i in range(70)
                }
            ),
            "MAX_TENSORS",
        ),  # fmt: skip
    ],
)
def test_episode_header_limits(tmp_path, edit, limit):
    small_dataset(tmp_path, 1)
    path = tmp_path / "episodes/ep-e0.safetensors"
    _rewrite_header(path, edit)
    problems = validate_dataset(tmp_path, check_checksums=False)
    assert any(str(path) in p and limit in p for p in problems), problems
    assert all("\n" not in p for p in problems)


def test_image_size_limits(tmp_path):
    with pytest.raises(ValueError, match="1024"):
        DatasetWriter(tmp_path / "a", {"env_id": "X", "camera": {"image_size": [2000, 40]}})
    w = DatasetWriter(tmp_path / "b", {"env_id": "X", "control_hz": 20})
    with pytest.raises(DatasetError, match="MAX_IMAGE_SIDE"):
        w.write_episode("big", synthetic_episode(np.random.default_rng(0), 1, (4, 1025)), meta())
    w = DatasetWriter(tmp_path / "c", INFO)
    w.write_episode("e0", synthetic_episode(np.random.default_rng(0), 12, HW), meta())
    path = tmp_path / "c/episodes/ep-e0.safetensors"

    def wide(h: dict) -> dict:  # the same 12 * 8 * 12 * 3 bytes, declared as one 1x1152 image
        enc = json.loads(h["__metadata__"][ENCODING_METADATA_KEY])
        enc["fields"]["image"]["shape"] = [1, 1, 1152, 3]
        h["__metadata__"][ENCODING_METADATA_KEY] = json.dumps(enc)
        return h

    _rewrite_header(path, wide)
    problems = validate_dataset(tmp_path / "c", check_checksums=False)
    assert any("MAX_IMAGE_SIDE" in p for p in problems), problems


def test_writer_refuses_what_readers_would_refuse(tmp_path):
    w = DatasetWriter(tmp_path, INFO)
    with pytest.raises(ValueError, match="MAX_NAME_CHARS"):
        meta(track_id="t" * (MAX_NAME_CHARS + 1))
    with pytest.raises(ValueError, match="MAX_JSON_DEPTH"):
        meta(extra={"deep": nested(MAX_JSON_DEPTH)})
    with pytest.raises(ValueError, match="MAX_STRING_CHARS"):
        meta(extra={"note": "z" * (MAX_STRING_CHARS + 1)})
    with pytest.raises(ValueError, match="MAX_JSON_DEPTH"):
        DatasetWriter(tmp_path / "x", {"env_id": "X", "deep": nested(MAX_JSON_DEPTH)})
    frames = synthetic_episode(np.random.default_rng(0), 2, HW)
    w.write_episode("ok", frames, meta(extra={"deep": nested(MAX_JSON_DEPTH - 5)}))
    assert validate_dataset(tmp_path) == []


def test_threaded_loads_match_and_report_the_first_damaged_episode(tmp_path):
    small_dataset(tmp_path, 6)
    ds = open_dataset(tmp_path)
    seen: list[int] = []
    one = ds.load_arrays(workers=1)
    many = ds.load_arrays(workers=4, on_episode=seen.append)
    assert sorted(seen) == list(range(6))
    for name, a in one.items():
        np.testing.assert_array_equal(many[name], a, err_msg=name)
    for key in ("e4", "e2"):
        corrupt(tmp_path / f"episodes/ep-{key}.safetensors", "image")
    for workers in (1, 4):
        with pytest.raises(DatasetError, match="ep-e2.safetensors: sha256 mismatch"):
            ds.load_arrays(fields=["steering"], workers=workers)
