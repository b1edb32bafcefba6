"""Dataset format versions: compressed (2) written and read, raw (1) still read, the two
mixed, ``migrate`` (in place and ``--out``, verified, resumable, nothing half-written), damaged
compressed data and decompression bombs refused with one line, and the bench."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import zstandard
from safetensors.numpy import load as st_load

from sim.dataset import (
    ENCODING_METADATA_KEY,
    FRAME_FIELDS,
    MAX_DECODED_BYTES,
    SCHEMA_VERSION,
    DatasetError,
    DatasetWriter,
    EpisodeMeta,
    codec,
    dataset_summary,
    is_warning,
    main,
    migrate_dataset,
    open_dataset,
    synthetic_episode,
    validate_dataset,
)
from sim.dataset.episode_file import _read_header_path
from tracks.fileio import sha256_file

GOLDEN = Path(__file__).parent / "data" / "dataset-v1"
HW = (6, 8)
INFO = {"env_id": "Versions-v0", "camera": {"image_size": list(HW)}, "control_hz": 20}


def golden_frames() -> list[dict[str, np.ndarray]]:
    """The frames of ``tests/data/dataset-v1`` (written by trackpilot 1fea607, schema 1, from
    these synthetic episodes)."""
    rng = np.random.default_rng(7)
    return [synthetic_episode(rng, n, HW) for n in (3, 4)]


def flat_frames(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """An episode whose images are flat-coloured like renders (a moving band), labels random."""
    f = synthetic_episode(np.random.default_rng(seed), n, (24, 32))
    img = np.empty((n, 24, 32, 3), np.uint8)
    img[:] = (82, 133, 71)
    for i in range(n):
        img[i, 10:, (i % 12) : (i % 12) + 16] = (69, 69, 74)
    f["image"] = img
    return f


def meta(i: int = 0, **kw) -> EpisodeMeta:
    return EpisodeMeta(**({"track_id": "oval", "track_hash": "h", "direction": "ccw",
                           "seed": i, "source": "expert", "laps": 1} | kw))  # fmt: skip


def errors(problems: list[str]) -> list[str]:
    return [p for p in problems if not is_warning(p)]


def assert_same(a: dict, b: dict) -> None:
    for name in FRAME_FIELDS:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.fixture
def golden(tmp_path) -> Path:
    """A copy of the version-1 dataset written by the previous trackpilot."""
    return Path(shutil.copytree(GOLDEN, tmp_path / "v1"))


# --------------------------------------------------------------------------- reading and writing


def test_a_dataset_written_by_the_previous_version_reads_as_before(golden):
    ds = open_dataset(golden)
    assert ds.manifest["schema_version"] == 1
    assert [_read_header_path(ds.episode_path(i)).version for i in range(2)] == [1, 1]
    frames = golden_frames()
    for i, f in enumerate(frames):
        for verify in (True, False):
            assert_same(ds.load_episode(i, verify=verify), f)
    arrays = ds.load_arrays(workers=2)
    for name in FRAME_FIELDS:
        np.testing.assert_array_equal(arrays[name], np.concatenate([f[name] for f in frames]))
    assert validate_dataset(golden) == []
    # how its episodes ended: unknown, unless sim.drive said why in extra["ended"]
    assert [ds.episode_meta(i).ended for i in range(2)] == ["unknown", "off_track"]


def test_version_2_round_trip_is_lossless_and_small(tmp_path):
    w = DatasetWriter(tmp_path, INFO | {"camera": {"image_size": [24, 32]}})
    frames = [flat_frames(50, 0), flat_frames(7, 1)]
    for i, f in enumerate(frames):
        w.write_episode(f"e{i}", f, meta(i, ended="laps_done"))
    ds = open_dataset(tmp_path)
    assert ds.manifest["schema_version"] == SCHEMA_VERSION == 2
    for i, f in enumerate(frames):
        assert_same(ds.load_episode(i), f)
        assert_same(ds.load_episode(i, verify=False), f)
        path = ds.episode_path(i)
        assert _read_header_path(path).version == 2
        stored = st_load(path.read_bytes())  # any safetensors reader opens it
        assert set(stored) == {k + s for k in FRAME_FIELDS for s in (".zst", ".zst.chunks")}
    for workers in (1, 2):
        for verify in (True, False):
            a = ds.load_arrays(verify=verify, workers=workers)
            for name in FRAME_FIELDS:
                np.testing.assert_array_equal(a[name], np.concatenate([f[name] for f in frames]))
    raw = sum(a.nbytes for f in frames for a in f.values())
    assert sum(r["bytes"] for r in ds.episodes) * 5 < raw
    assert validate_dataset(tmp_path) == []


def test_long_episodes_are_stored_in_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(codec, "CHUNK_BYTES", 3000)  # 24x32x3 = 2304 bytes a frame: 1 per chunk
    w = DatasetWriter(tmp_path, INFO | {"camera": {"image_size": [24, 32]}})
    f = flat_frames(9)
    w.write_episode("e0", f, meta())
    ds = open_dataset(tmp_path)
    header = _read_header_path(ds.episode_path(0))
    assert header.fields["image"].chunk_frames == 1 and header.fields["image"].chunks.shape == (9,)
    assert header.fields["steering"].chunk_frames == 750
    assert_same(ds.load_episode(0, verify=False), f)


def test_appending_to_a_version_1_dataset_upgrades_its_manifest(golden, caplog):
    with caplog.at_level("WARNING", logger="sim.dataset"):
        DatasetWriter(golden, open_dataset(golden).info).write_episode(
            "new", synthetic_episode(np.random.default_rng(1), 5, HW), meta()
        )
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "schema_version 1 to 2" in said[0] and "migrate" in said[0]
    ds = open_dataset(golden)
    assert ds.manifest["schema_version"] == 2
    versions = [_read_header_path(ds.episode_path(i)).version for i in range(3)]
    assert versions == [1, 1, 2]
    assert validate_dataset(golden) == [] and len(ds.load_arrays()["t"]) == 12
    s = dataset_summary(ds)
    assert s["file_versions"] == {"1": 2, "2": 1}


# --------------------------------------------------------------------------- migrate


def test_migrate_in_place_is_verified_lossless_and_idempotent(golden, capsys):
    before = open_dataset(golden)
    old = [before.load_episode(i) for i in range(2)]
    assert main(["migrate", str(golden)]) == 0
    out = capsys.readouterr().out
    assert "migrated 2 episodes to version 2" in out and "(0 already were)" in out
    ds = open_dataset(golden)
    assert ds.manifest["schema_version"] == 2 and ds.keys == before.keys
    for i in range(2):
        assert _read_header_path(ds.episode_path(i)).version == 2
        assert_same(ds.load_episode(i), old[i])
    # the episode's metadata is kept (with its ending made explicit)
    assert ds.episodes[1]["extra"] == before.episodes[1]["extra"]
    assert [r["ended"] for r in ds.episodes] == ["unknown", "off_track"]
    assert errors(validate_dataset(golden)) == [] and validate_dataset(golden) == []
    assert main(["migrate", str(golden)]) == 0
    assert "migrated 0 episodes" in capsys.readouterr().out


def test_migrate_into_another_directory_leaves_the_source_alone(golden, tmp_path, capsys):
    sums = {p.name: sha256_file(p) for p in (golden / "episodes").iterdir()}
    out = tmp_path / "v2"
    assert main(["migrate", str(golden), "--out", str(out)]) == 0
    assert {p.name: sha256_file(p) for p in (golden / "episodes").iterdir()} == sums
    a, b = open_dataset(golden), open_dataset(out)
    assert b.info == a.info and b.keys == a.keys
    for i in range(2):
        assert_same(b.load_episode(i), a.load_episode(i))
    assert main(["migrate", str(golden), "--out", str(out)]) == 0  # resumes: nothing to do
    assert "migrated 0 episodes" in capsys.readouterr().out
    other = tmp_path / "other"
    DatasetWriter(other, a.info).write_episode(
        "g0", synthetic_episode(np.random.default_rng(9), 2, HW), meta()
    )
    assert main(["migrate", str(golden), "--out", str(other)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "is not the one of" in err


def test_an_interrupted_migration_leaves_a_valid_dataset_and_resumes(golden, monkeypatch):
    old = [open_dataset(golden).load_episode(i) for i in range(2)]
    real = DatasetWriter._verify_written
    calls = []

    def interrupt_second(self, *args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C while the second file is checked, unpublished
        return real(self, *args)

    monkeypatch.setattr(DatasetWriter, "_verify_written", interrupt_second)
    with pytest.raises(KeyboardInterrupt):
        migrate_dataset(golden)
    assert validate_dataset(golden) == []  # no temp file, no warning, every file intact
    ds = open_dataset(golden)
    assert [_read_header_path(ds.episode_path(i)).version for i in range(2)] == [2, 1]
    monkeypatch.setattr(DatasetWriter, "_verify_written", real)
    s = migrate_dataset(golden)
    assert (s["migrated"], s["kept"]) == (1, 1)
    ds = open_dataset(golden)
    for i in range(2):
        assert_same(ds.load_episode(i), old[i])


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        # a byte of the file on disk differs from the bytes that were meant (a bad disk)
        ("disk", r"ep-g0\.safetensors\.tmp-.*: sha256 mismatch .*: the file is corrupt"),
        # the bytes were written as meant, but they hold another frame (a bad encoder)
        ("payload", r"ep-g0\.safetensors: field 'image' read back differs from what was written"),
    ],
)
def test_migrate_refuses_to_replace_what_it_cannot_read_back(golden, monkeypatch, damage, problem):
    import sim.dataset.writer as writer_mod  # the real DatasetWriter._verify_written runs

    if damage == "disk":
        real_write = writer_mod.write_temp_file

        def write_flipped(path, data):
            data = bytearray(data)
            data[-1] ^= 1  # the end of the last tensor's payload
            return real_write(path, data)

        monkeypatch.setattr(writer_mod, "write_temp_file", write_flipped)
    else:
        real_serialize = writer_mod._serialize_episode

        def serialize_flipped(arrays, *args):
            image = arrays["image"].copy()
            image.flat[0] ^= 1
            return real_serialize({**arrays, "image": image}, *args)

        monkeypatch.setattr(writer_mod, "_serialize_episode", serialize_flipped)
    with pytest.raises(DatasetError, match=problem):
        migrate_dataset(golden)
    ds = open_dataset(golden)
    assert _read_header_path(ds.episode_path(0)).version == 1  # the original is still there
    assert validate_dataset(golden) == []


# --------------------------------------------------------------------------- damage and bombs


def _compressed_dataset(root: Path) -> tuple[Path, dict]:
    w = DatasetWriter(root, INFO)
    f = synthetic_episode(np.random.default_rng(0), 20, HW)
    w.write_episode("e0", f, meta())
    return root / "episodes/ep-e0.safetensors", f


def _span(path: Path, tensor: str) -> tuple[int, int]:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    begin, end = json.loads(data[8 : 8 + n])[tensor]["data_offsets"]
    return 8 + n + begin, 8 + n + end


def test_a_corrupt_compressed_block_is_one_clear_error(tmp_path, capsys):
    path, _ = _compressed_dataset(tmp_path)
    begin, end = _span(path, "image.zst")
    data = bytearray(path.read_bytes())
    data[(begin + end) // 2] ^= 0x55
    path.write_bytes(bytes(data))
    ds = open_dataset(tmp_path)
    with pytest.raises(DatasetError, match="sha256 mismatch"):
        ds.load_episode(0)  # verified: the checksum, before anything is decompressed
    with pytest.raises(DatasetError) as e:
        ds.load_episode(0, verify=False)  # unverified: zstd's own checks
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "field 'image'" in msg
    assert "compressed chunk 0 of 1" in msg and "the file is damaged" in msg
    problems = errors(validate_dataset(tmp_path))
    assert any("sha256 mismatch" in p for p in problems)
    assert any("compressed chunk" in p and "damaged" in p for p in problems)
    assert main(["validate", str(tmp_path)]) == 1


def _rebuild(path: Path, **tensors: bytes) -> None:
    """Rewrite episode file ``path`` with some tensors' bytes replaced (the chunk sizes of
    ``X.zst`` follow as one chunk), a consistent layout, and its manifest record updated to
    vouch for it: a well-formed file that only its content can betray."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    blobs = {
        k: data[8 + n + v["data_offsets"][0] : 8 + n + v["data_offsets"][1]]
        for k, v in header.items()
        if k != "__metadata__"
    }
    for name, payload in tensors.items():
        blobs[name] = payload
        blobs[name + ".chunks"] = struct.pack("<Q", len(payload))
    pos, out = 0, {"__metadata__": header["__metadata__"]}
    for k in sorted(blobs):
        size = len(blobs[k])
        dtype = "U64" if k.endswith(".chunks") else "U8"
        out[k] = {"dtype": dtype, "shape": [size // (8 if dtype == "U64" else 1)],
                  "data_offsets": [pos, pos + size]}  # fmt: skip
        pos += size
    raw = json.dumps(out).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs[k] for k in sorted(blobs)))
    _vouch(path)


def _vouch(path: Path) -> None:
    """Update the manifest record of the dataset's only episode ``path`` to its new bytes."""
    manifest_path = path.parents[1] / "manifest.json"
    m = json.loads(manifest_path.read_text())
    m["episodes"][0].update(sha256=sha256_file(path), bytes=path.stat().st_size)
    manifest_path.write_text(json.dumps(m))


@pytest.mark.parametrize("content_size", [True, False])
def test_a_chunk_that_would_decode_to_more_than_its_frames_is_refused_unread(
    tmp_path, monkeypatch, content_size
):
    path, _ = _compressed_dataset(tmp_path)
    bomb = zstandard.ZstdCompressor(level=19, write_content_size=content_size).compress(
        bytes(256 << 20)
    )  # 256 MiB of zeros in a few KB, where 20 frames of 6x8 (2,880 bytes) belong
    assert len(bomb) < 64 << 10
    _rebuild(path, **{"image.zst": bomb})
    decoded = []

    class Spy:
        def stream_reader(self, *args, **kwargs):
            decoded.append(1)
            return zstandard.ZstdDecompressor().stream_reader(*args, **kwargs)

    monkeypatch.setattr(codec, "_decompressor", Spy)
    ds = open_dataset(tmp_path)
    for verify in (True, False):  # the file vouches for itself: only the content betrays it
        with pytest.raises(DatasetError, match=r"field 'image': compressed chunk 0 of 1 claims"):
            ds.load_episode(0, verify=verify)
    assert not decoded  # refused on the zstd frame header, before decompressing a byte


def test_a_header_claiming_a_huge_episode_is_refused_before_anything_is_decoded(tmp_path):
    path, _ = _compressed_dataset(tmp_path)
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    enc = json.loads(header["__metadata__"][ENCODING_METADATA_KEY])
    frames = MAX_DECODED_BYTES // (1024 * 1024 * 3) + 1
    enc["fields"]["image"].update(shape=[frames, 1024, 1024, 3], chunk_frames=1)
    header["__metadata__"][ENCODING_METADATA_KEY] = json.dumps(enc)
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])
    _vouch(path)
    ds = open_dataset(tmp_path)
    for verify in (True, False):
        with pytest.raises(DatasetError, match="MAX_DECODED_BYTES") as e:
            ds.load_episode(0, verify=verify)
        assert "\n" not in str(e.value)
    assert any("MAX_DECODED_BYTES" in p for p in validate_dataset(tmp_path))


def test_the_decoded_limit_binds_writer_and_reader(tmp_path, monkeypatch):
    import sim.dataset.episode_file as episode_file
    import sim.dataset.writer as writer

    w = DatasetWriter(tmp_path, INFO)
    f = synthetic_episode(np.random.default_rng(0), 20, HW)  # 20 * 192 bytes of labels+image
    w.write_episode("e0", f, meta())
    monkeypatch.setattr(writer, "MAX_DECODED_BYTES", 2000)
    with pytest.raises(DatasetError, match="MAX_DECODED_BYTES.*split it"):
        w.write_episode("e1", f, meta())
    monkeypatch.setattr(episode_file, "MAX_DECODED_BYTES", 2000)
    with pytest.raises(DatasetError, match="MAX_DECODED_BYTES"):
        open_dataset(tmp_path).load_episode(0)


# --------------------------------------------------------------------------- the bench


def test_bench_compares_both_versions_on_rendered_frames(tmp_path, capsys):
    assert (
        main(["bench", "--frames", "40", "--size", "24x32", "--episode-frames", "20",
              "--runs", "1", "--threads", "1,2", "--json", "--dir", str(tmp_path / "b")])
        == 0
    )  # fmt: skip
    r = json.loads(capsys.readouterr().out)
    assert "rendered by TrackEnv" in r["frames_from"]
    v1, v2 = r["versions"]["1"], r["versions"]["2"]
    assert v1["frames"] == v2["frames"] == 40 and v1["image_size"] == [24, 32]
    assert v1["bytes_per_frame"] > 5 * v2["bytes_per_frame"]
    assert set(v2["load_frames_per_s"]) == {"1_nosha", "1_sha256", "2_nosha", "2_sha256"}
    assert all(x > 0 for x in v2["load_frames_per_s"].values())
    a, b = open_dataset(tmp_path / "b/v1"), open_dataset(tmp_path / "b/v2")
    for i in range(2):
        assert_same(a.load_episode(i), b.load_episode(i))
    # frames from a dataset; the text output names both formats
    assert main(["bench", "--data", str(tmp_path / "b/v2"), "--runs", "1", "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "every episode of" in text and "raw" in text and "zstd level 1" in text
    assert main(["bench", "--data", str(tmp_path / "nowhere")]) == 2


def test_an_interrupted_migrate_says_what_it_left(golden, monkeypatch):
    import sim.dataset.cli as cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "migrate_dataset", interrupted)
    with pytest.raises(KeyboardInterrupt, match="migrated so far are kept.*rerun"):
        main(["migrate", str(golden)])
