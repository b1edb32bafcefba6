"""The latency profile of a pilot on the machine that will drive it: ``python -m evaluation.profile``.

Run on the car (a Raspberry Pi with ``pip install numpy onnxruntime`` and trackpilot
copied without its dependencies), it times batch-1 ``pilot.act(obs, info)``,
preprocessing included, over at least :data:`MIN_FRAMES` frames after a warm-up, each
call on a different frame, and writes a profile JSON that the evaluator can charge in
simulated time. An ``.onnx`` pilot is loaded straight from :mod:`agents.onnx_pilot`
(numpy and onnxruntime only); any other pilot (a CNN checkpoint, an SB3 agent) goes
through :func:`agents.registry.load_pilot` on torch.

The profile (:data:`PROFILE_FORMAT`, schema :data:`SCHEMA_VERSION`) is a contract other
code reads, through :func:`read_profile`:

``format``, ``schema_version``, ``pilot``, ``pilot_kind``, ``model_sha256`` (the sha256
of what was profiled: the ``.onnx`` file's bytes, a torch checkpoint's weights),
``source_sha256`` (the checkpoint weights it came from: the ONNX metadata's
``source_sha256``; ``== model_sha256`` on torch), ``runtime`` (``onnxruntime`` or
``torch``), ``runtime_version``, ``threads``, ``device`` (``description``, ``machine``,
``cpu``, ``cores``, ``fingerprint``), ``libraries``, ``camera_size`` ``[H, W]``,
``frames`` (timed calls), ``warmup``, ``samples_ms`` (each timed call), ``median_ms``,
``p95_ms``, ``p99_ms``, ``max_ms``, ``mean_ms``, ``profiler_overhead_ms`` (the same loop
timing a no-op, median) and ``created`` (ISO date, UTC).

The device ``fingerprint`` (:func:`device_fingerprint`) hashes the machine, CPU model, core
count and device-tree model; it is *not* the evaluator's
``evaluation.latency.hardware_fingerprint`` (which adds the GPU and the torch version and
imports torch): the two never compare equal.

Standard library and numpy only at the top (the car has no torch and no ``tracks``): the
small atomic write and bounded JSON reader here stand in for ``tracks.fileio``'s.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import re
import secrets
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "KNOWN_SCHEMA_VERSIONS",
    "PROFILE_FORMAT",
    "SCHEMA_VERSION",
    "LatencyProfile",
    "device_fingerprint",
    "device_info",
    "main",
    "profile_matches",
    "profile_pilot",
    "read_profile",
    "time_calls",
]

PROFILE_FORMAT = "trackpilot-latency-profile"
SCHEMA_VERSION = 1
KNOWN_SCHEMA_VERSIONS = (1,)
MIN_FRAMES = 200
DEFAULT_FRAMES = 300
DEFAULT_WARMUP = 20
MAX_FRAMES = 1_000_000  # timed calls in one profile, and samples a profile may hold
MAX_PROFILE_BYTES = 16 << 20
MAX_FRAMES_FILE_BYTES = 1 << 30
MAX_SAMPLE_MS = 10_000.0  # one call over 10 s is a broken measurement, not a latency
RUNTIMES = ("onnxruntime", "torch")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX16 = re.compile(r"[0-9a-f]{16}")


# --------------------------------------------------------------------------- the device
def _read_text(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read(4096).replace(b"\x00", b"").decode("utf-8", "replace").strip() or None
    except OSError:
        return None


def _cpu_model() -> str:
    """``model name`` from ``/proc/cpuinfo`` (x86), else its ``Model``/``Hardware`` line
    (ARM boards), else what ``platform`` knows."""
    found: dict[str, str] = {}
    text = _read_text_all("/proc/cpuinfo")
    for line in (text or "").splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and value.strip():
            found.setdefault(key, value.strip())
    for key in ("model name", "cpu model", "hardware"):
        if key in found:
            return found[key]
    return platform.processor() or platform.machine() or "unknown cpu"


def _read_text_all(path: str, limit: int = 1 << 20) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8", "replace")
    except OSError:
        return None


def device_fingerprint(machine: str, cpu: str, cores: int | None, board: str | None) -> str:
    """16 hex digits over (machine, CPU model, core count, device-tree model).

    Torch-free, and so a different fingerprint from the evaluator's
    ``evaluation.latency.hardware_fingerprint``."""
    parts = ["trackpilot-device-v1", machine, cpu, str(cores), board or "no-device-tree"]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def device_info() -> dict[str, Any]:
    """The machine running the profile: ``description`` (e.g. ``"Raspberry Pi 4 Model B
    Rev 1.4 (aarch64, 4 cores)"``), ``machine``, ``cpu``, ``cores``, ``fingerprint``."""
    board = _read_text("/proc/device-tree/model")
    machine = platform.machine() or "unknown"
    cpu = _cpu_model()
    cores = os.cpu_count()
    return {
        "description": f"{board or cpu} ({machine}, {cores} cores)",
        "machine": machine,
        "cpu": cpu,
        "cores": cores,
        "board": board,
        "fingerprint": device_fingerprint(machine, cpu, cores, board),
    }


# --------------------------------------------------------------------------- timing
def time_calls(
    fn: Callable[[Any, dict[str, Any]], Any], observations: Sequence[Any], frames: int, warmup: int
) -> np.ndarray:
    """Seconds of each of ``frames`` timed calls ``fn(obs, {})`` after ``warmup`` untimed
    ones; call ``i`` gets ``observations[i % len(observations)]``."""
    n = len(observations)
    info: dict[str, Any] = {}
    for i in range(warmup):
        fn(observations[i % n], info)
    clock = time.perf_counter_ns
    out = np.empty(frames, dtype=np.int64)
    for i in range(frames):
        obs = observations[(warmup + i) % n]
        t0 = clock()
        fn(obs, info)
        out[i] = clock() - t0
    return out.astype(np.float64) / 1e9


def _noop(obs: Any, info: dict[str, Any]) -> None:
    return None


# --------------------------------------------------------------------------- frames
def random_frames(camera: tuple[int, int], n: int, seed: int) -> np.ndarray:
    """``n`` seeded random ``uint8`` camera frames ``[n, H, W, 3]``."""
    return np.random.default_rng(seed).integers(0, 256, (n, *camera, 3), dtype=np.uint8)


def load_frames_file(path: str | Path, camera: tuple[int, int]) -> np.ndarray:
    """``uint8 [N, H, W, 3]`` frames at ``camera`` from a ``.npy`` file (no pickles, at most
    :data:`MAX_FRAMES_FILE_BYTES`, at least 2 frames so consecutive calls differ)."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_FRAMES_FILE_BYTES:
            raise ValueError(
                f"{size} bytes, more than the {MAX_FRAMES_FILE_BYTES >> 30} GiB allowed"
            )
        arr = np.load(p, allow_pickle=False, mmap_mode="r")
    except OSError as e:
        raise ValueError(f"{p}: cannot read the frames file ({e.strerror or e})") from None
    except ValueError as e:
        raise ValueError(f"{p}: not a frames file ({e})") from None
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{p}: not a .npy array (an .npz archive?)")
    want = (*camera, 3)
    if arr.dtype != np.uint8 or arr.ndim != 4 or tuple(arr.shape[1:]) != want:
        raise ValueError(
            f"{p}: frames must be uint8 [N, {want[0]}, {want[1]}, 3] (the pilot's camera), "
            f"got {arr.dtype} {list(arr.shape)}"
        )
    if not 2 <= arr.shape[0] <= MAX_FRAMES:
        raise ValueError(f"{p}: needs 2 to {MAX_FRAMES} frames, has {arr.shape[0]}")
    return np.array(arr, copy=True)  # in memory (and writable): no disk reads while timing


def _observations(pilot: Any, frames: np.ndarray, n: int, seed: int) -> list[Any]:
    """What ``pilot.act`` gets: the frames, or samples of its observation space."""
    mode = pilot.needs.obs_mode
    if mode == "image":
        return list(frames)
    space = getattr(pilot, "observation_space", None)
    if space is None:
        raise ValueError(f"{pilot.name}: cannot make {mode!r} observations to time it with")
    space.seed(seed)
    return [space.sample() for _ in range(n)]


# --------------------------------------------------------------------------- profiling
def _percentiles(samples_s: np.ndarray) -> dict[str, float]:
    ms = samples_s * 1e3
    return {
        "median_ms": float(np.median(ms)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
        "mean_ms": float(ms.mean()),
    }


def _load(spec: str, runtime: str | None, threads: int) -> tuple[Any, str, str, str | None, str]:
    """``(pilot, runtime, model_sha256, source_sha256, runtime_version)``."""
    is_onnx = Path(spec).suffix.lower() == ".onnx"
    if is_onnx:
        if runtime not in (None, "onnxruntime"):
            raise ValueError(f"{spec}: an .onnx model runs on onnxruntime, not {runtime}")
        import onnxruntime  # the car's runtime; agents.registry would import torch's world

        from agents.onnx_pilot import OnnxPilot

        pilot = OnnxPilot(spec, threads=threads)
        source = pilot.meta.get("source_sha256")
        return pilot, "onnxruntime", pilot.sha256, source, onnxruntime.__version__
    if runtime == "onnxruntime":
        raise ValueError(
            f"{spec}: onnxruntime runs .onnx models; export this one first with "
            f"`python -m agents.export {spec} --format onnx --out MODEL.onnx`"
        )
    import torch  # torch pilots only (not on the car)

    from agents.registry import load_pilot

    torch.set_num_threads(threads)
    pilot = load_pilot(spec, device="cpu")
    if pilot.needs.privileged:
        raise ValueError(f"{spec}: {pilot.name} reads the true pose; only learned pilots are timed")
    meta = pilot.metadata() if callable(getattr(pilot, "metadata", None)) else {}
    sha = meta.get("checkpoint_sha256")
    if not (isinstance(sha, str) and _HEX64.fullmatch(sha)):
        raise ValueError(f"{spec}: {pilot.name} has no checkpoint sha256 to name the profile by")
    return pilot, "torch", sha, sha, torch.__version__


def profile_pilot(
    spec: str,
    *,
    runtime: str | None = None,
    threads: int = 1,
    frames: int = DEFAULT_FRAMES,
    warmup: int = DEFAULT_WARMUP,
    frames_file: str | Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The profile (a JSON-able dict, the schema above) of the pilot ``spec``."""
    if runtime is not None and runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    if not MIN_FRAMES <= frames <= MAX_FRAMES:
        raise ValueError(f"frames must be in [{MIN_FRAMES}, {MAX_FRAMES}], got {frames}")
    if not 0 <= warmup <= 100_000:
        raise ValueError(f"warmup must be in [0, 100000], got {warmup}")
    if not 1 <= threads <= 256:
        raise ValueError(f"threads must be in [1, 256], got {threads}")
    pilot, runtime, model_sha, source_sha, version = _load(spec, runtime, threads)
    camera = tuple(pilot.needs.camera)
    if frames_file is not None:
        images = load_frames_file(frames_file, camera)
    else:
        images = random_frames(camera, min(frames + warmup, 1000), seed)
    observations = _observations(pilot, images, len(images), seed)
    pilot.reset()
    samples = time_calls(pilot.act, observations, frames, warmup)
    overhead = time_calls(_noop, observations, frames, warmup)
    if not np.all(samples * 1e3 <= MAX_SAMPLE_MS):
        raise ValueError(f"{spec}: a call took {samples.max():.1f} s, more than 10 s")
    libraries = {"python": platform.python_version(), "numpy": np.__version__, runtime: version}
    meta = pilot.metadata() if callable(getattr(pilot, "metadata", None)) else {}
    return {
        "format": PROFILE_FORMAT,
        "schema_version": SCHEMA_VERSION,
        "pilot": pilot.name,
        "pilot_kind": meta.get("kind", "unknown"),
        "model_sha256": model_sha,
        "source_sha256": source_sha,
        "runtime": runtime,
        "runtime_version": version,
        "threads": threads,
        "device": device_info(),
        "libraries": libraries,
        "camera_size": list(camera),
        "frames": int(frames),
        "warmup": int(warmup),
        "frames_source": str(frames_file) if frames_file is not None else f"random (seed {seed})",
        "samples_ms": [round(float(v) * 1e3, 6) for v in samples],
        **_percentiles(samples),
        "profiler_overhead_ms": float(np.median(overhead) * 1e3),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


# --------------------------------------------------------------------------- files
def write_profile(path: str | Path, profile: Mapping[str, Any]) -> Path:
    """Write ``profile`` to ``path`` atomically (temp file, fsync, rename, fsync of the
    directory: ``tracks.fileio.atomic_write_json``'s steps, which the car cannot import)."""
    path = Path(path)
    data = (json.dumps(dict(profile), indent=1, allow_nan=False) + "\n").encode()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return path


@dataclass(frozen=True, eq=False)
class LatencyProfile:
    """A latency profile read back and checked (:func:`read_profile`); times in seconds."""

    samples_s: np.ndarray  # float64, each timed call
    median_s: float
    p95_s: float
    p99_s: float
    max_s: float
    model_sha256: str
    source_sha256: str | None
    pilot: str
    runtime: str
    device: str  # the description, e.g. "Raspberry Pi 4 Model B Rev 1.4 (aarch64, 4 cores)"
    fingerprint: str
    camera_size: tuple[int, int]
    path: Path
    sha256: str  # of the profile file itself


def _bounded_json(p: Path) -> tuple[Any, bytes]:
    try:
        size = p.stat().st_size
        if size > MAX_PROFILE_BYTES:
            raise ValueError(f"{size} bytes, more than the {MAX_PROFILE_BYTES >> 20} MiB allowed")
        with p.open("rb") as f:
            data = f.read(MAX_PROFILE_BYTES + 1)
        if len(data) > MAX_PROFILE_BYTES:
            raise ValueError(f"more than the {MAX_PROFILE_BYTES >> 20} MiB allowed")
        return json.loads(data.decode("utf-8"), parse_constant=_refuse_constant), data
    except OSError as e:
        raise ValueError(f"{p}: cannot read the latency profile ({e.strerror or e})") from None
    except RecursionError:
        raise ValueError(f"{p}: unreadable latency profile (nested too deeply)") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{p}: unreadable latency profile ({e})") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (numbers must be finite)")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_profile(path: str | Path) -> LatencyProfile:
    """The latency profile at ``path``, checked: bounded JSON, the format and a known
    schema version, every sample a finite number in ``(0, 10 s]`` (1 to 1,000,000 of
    them), the summary consistent with the samples. Any problem is one ``ValueError``
    naming the file."""
    p = Path(path)
    doc, data = _bounded_json(p)

    def bad(why: str) -> ValueError:
        return ValueError(f"{p}: latency profile {why}")

    if not isinstance(doc, dict) or doc.get("format") != PROFILE_FORMAT:
        raise bad(f"is not one (format != {PROFILE_FORMAT!r})")
    version = doc.get("schema_version")
    if version not in KNOWN_SCHEMA_VERSIONS:
        known = ", ".join(map(str, KNOWN_SCHEMA_VERSIONS))
        raise bad(f"has schema_version {version!r}; this trackpilot reads version {known}")
    raw = doc.get("samples_ms")
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_FRAMES:
        n = len(raw) if isinstance(raw, list) else raw
        raise bad(f"samples_ms must be a list of 1 to {MAX_FRAMES} numbers, got {n!r}")
    if not all(_number(v) for v in raw):
        raise bad("samples_ms must hold numbers only")
    ms = np.asarray(raw, dtype=np.float64)
    if not np.all(np.isfinite(ms)):
        raise bad("has a sample that is not finite")
    if not np.all((ms > 0) & (ms <= MAX_SAMPLE_MS)):
        worst = ms[(ms <= 0) | (ms > MAX_SAMPLE_MS)][0]
        raise bad(f"has a sample of {worst} ms; samples must be in (0, {MAX_SAMPLE_MS:g}] ms")
    srt = np.sort(ms)
    n = len(srt)
    for field, q in (("median_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99), ("max_ms", 1.0)):
        v = doc.get(field)
        if not _number(v) or not math.isfinite(v):
            raise bad(f"field {field} must be a finite number, got {v!r}")
        # Loose: any usual percentile definition lies between these two order statistics.
        lo = srt[max(0, math.floor(q * n) - 1)]
        hi = srt[min(n - 1, math.ceil(q * n))]
        slack = 1e-6 * max(1.0, hi)
        if not lo - slack <= v <= hi + slack:
            raise bad(f"field {field} = {v} does not match its samples ({lo:g} to {hi:g} ms)")
    model_sha = doc.get("model_sha256")
    if not (isinstance(model_sha, str) and _HEX64.fullmatch(model_sha)):
        raise bad(f"model_sha256 must be 64 hex digits, got {model_sha!r}")
    source_sha = doc.get("source_sha256")
    if source_sha is not None and not (
        isinstance(source_sha, str) and _HEX64.fullmatch(source_sha)
    ):
        raise bad(f"source_sha256 must be 64 hex digits or null, got {source_sha!r}")
    if doc.get("runtime") not in RUNTIMES:
        raise bad(f"runtime must be one of {RUNTIMES}, got {doc.get('runtime')!r}")
    pilot = doc.get("pilot")
    if not isinstance(pilot, str) or not 1 <= len(pilot) <= 200:
        raise bad(f"pilot must be a name of 1 to 200 characters, got {pilot!r}")
    device = doc.get("device")
    if not isinstance(device, dict) or not isinstance(device.get("description"), str):
        raise bad("device must be an object with a description")
    fingerprint = device.get("fingerprint")
    if not (isinstance(fingerprint, str) and _HEX16.fullmatch(fingerprint)):
        raise bad(f"device.fingerprint must be 16 hex digits, got {fingerprint!r}")
    camera = doc.get("camera_size")
    if not (
        isinstance(camera, list)
        and len(camera) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1024 for v in camera)
    ):
        raise bad(f"camera_size must be [H, W] with sides in [1, 1024], got {camera!r}")
    s = ms / 1e3
    return LatencyProfile(
        samples_s=s,
        median_s=float(np.median(s)),
        p95_s=float(np.percentile(s, 95)),
        p99_s=float(np.percentile(s, 99)),
        max_s=float(s.max()),
        model_sha256=model_sha,
        source_sha256=source_sha,
        pilot=pilot,
        runtime=doc["runtime"],
        device=device["description"],
        fingerprint=fingerprint,
        camera_size=(camera[0], camera[1]),
        path=p,
        sha256=hashlib.sha256(data).hexdigest(),
    )


def profile_matches(profile: LatencyProfile, sha256: str | None) -> bool:
    """Whether ``profile`` measured the model ``sha256`` names: the profiled model itself
    (an ``.onnx`` file, a checkpoint's weights) or the checkpoint it was exported from."""
    if not sha256:
        return False
    return sha256 in (profile.model_sha256, profile.source_sha256)


# --------------------------------------------------------------------------- the command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m evaluation.profile",
        description="Time a pilot's batch-1 act() on this machine and write a latency profile.",
    )
    p.add_argument("pilot", help="an .onnx model, a CNN checkpoint or a stable-baselines3 agent")
    p.add_argument("--out", required=True, help="the profile JSON to write")
    p.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default=None,
        help="onnxruntime for .onnx models, torch for checkpoints (default: by the file)",
    )
    p.add_argument("--threads", type=int, default=1, help="inference threads (default 1)")
    p.add_argument(
        "--frames",
        type=int,
        default=DEFAULT_FRAMES,
        help=f"timed calls, at least {MIN_FRAMES} (default {DEFAULT_FRAMES})",
    )
    p.add_argument(
        "--warmup", type=int, default=DEFAULT_WARMUP, help="untimed calls first (default 20)"
    )
    p.add_argument(
        "--frames-file",
        default=None,
        help="uint8 [N, H, W, 3] .npy camera frames (default: seeded random frames)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the random frames (default: %(default)s)"
    )
    return p


def _main(argv: Sequence[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    out = Path(args.out)
    if not out.parent.is_dir():
        print(f"error: {out.parent}: no such directory for --out", file=sys.stderr)
        return 2
    try:
        profile = profile_pilot(
            args.pilot,
            runtime=args.runtime,
            threads=args.threads,
            frames=args.frames,
            warmup=args.warmup,
            frames_file=args.frames_file,
            seed=args.seed,
        )
        write_profile(out, profile)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {out}: cannot write the profile ({e.strerror or e})", file=sys.stderr)
        return 2
    print(
        f"{profile['pilot']} on {profile['runtime']} {profile['runtime_version']}, "
        f"{profile['threads']} thread(s), {profile['device']['description']}: "
        f"median {profile['median_ms']:.3f} ms, p95 {profile['p95_ms']:.3f}, "
        f"p99 {profile['p99_ms']:.3f}, max {profile['max_ms']:.3f} over {profile['frames']} "
        f"frames (overhead {profile['profiler_overhead_ms'] * 1e3:.2f} us); wrote {out}"
    )
    return 0


def run_main(fn: Any, argv: Sequence[str] | None = None, note: str = "") -> int:
    """``tracks.cli.run_main`` (Ctrl-C and SIGTERM as in every trackpilot command), or on
    the car, where the rest of trackpilot's dependencies are absent, a Ctrl-C that ends
    in one line and exit 130."""
    try:
        from tracks.cli import run_main as run_cli  # imports tracks: not on the car
    except ImportError:
        try:
            return fn(argv)
        except KeyboardInterrupt:
            print(f"interrupted: {note}", file=sys.stderr)
            return 130
    return run_cli(fn, argv, note=note)


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_main, argv, note="nothing written")


if __name__ == "__main__":
    raise SystemExit(run_main(_main, note="nothing written"))
