"""Track files: F1TENTH / TUM racetrack-database CSV, trackpilot JSON, and ``load_track``.

CSV (F1TENTH / TUM racetrack-database centreline format)::

    # x_m, y_m, w_tr_right_m, w_tr_left_m
    0.0, 0.0, 0.55, 0.55
    ...

JSON (``save_track_json`` / ``load_track_json``)::

    {"format": "trackpilot-track", "schema_version": 1, "name": "...", "smooth": true,
     "centreline": [[x, y], ...], "half_width_left": [...], "half_width_right": [...]}
"""

from __future__ import annotations

import importlib.resources
import json
import logging
import math
import re
from pathlib import Path

import numpy as np

from tracks.fileio import atomic_write_text
from tracks.generator import generate_track
from tracks.library import builtin_names, get_track
from tracks.track import Track

logger = logging.getLogger(__name__)

CSV_HEADER = "# x_m, y_m, w_tr_right_m, w_tr_left_m"
_GEN_RE = re.compile(r"^gen[:-](\d+)$")


# --------------------------------------------------------------------------- helpers


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


def _read_text(path: Path) -> str:
    if not path.exists():
        raise ValueError(f"{path}: file not found")
    if not path.is_file():
        raise ValueError(f"{path}: not a regular file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror})") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def data_dir() -> Path:
    """The folder of track files shipped with the package (``tracks/data``)."""
    return Path(str(importlib.resources.files("tracks") / "data"))


def packaged_track_files() -> list[str]:
    """File names of the tracks shipped in ``tracks/data``."""
    folder = data_dir()
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.suffix.lower() in (".csv", ".json"))


# --------------------------------------------------------------------------- CSV


def load_f1tenth_csv(path: str | Path, scale: float = 1.0, name: str | None = None) -> Track:
    """Load an F1TENTH / TUM racetrack-database centreline CSV.

    Rows are ``x, y, w_right, w_left`` (note: right before left); lines starting with
    ``#`` and blank lines are skipped, and one non-numeric header row is allowed
    first. ``scale`` multiplies all four columns (e.g. 0.1 for a 1:10 car on a real
    circuit). A closing row that repeats the first is dropped.

    Raises:
        ValueError: ``"<path>: <problem>"`` (with the line number where relevant) for
            a missing file, a wrong column count, non-numeric or non-finite values,
            non-positive widths or fewer than 4 rows.
    """
    path = Path(path)
    try:
        scale = float(scale)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: scale must be a positive number, got {scale!r}") from None
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"{path}: scale must be a positive number, got {scale!r}")
    text = _read_text(path)
    rows: list[list[float]] = []
    seen_data_or_header = False
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split(",")]
        if not seen_data_or_header:
            seen_data_or_header = True
            if not any(_is_number(f) for f in fields) and any(c.isalpha() for c in line):
                continue  # a plain-text header row such as "x_m,y_m,w_tr_right_m,w_tr_left_m"
        if len(fields) != 4:
            raise ValueError(
                f"{path}: line {lineno}: expected 4 comma-separated values "
                f"(x, y, w_right, w_left), got {len(fields)}"
            )
        try:
            values = [float(f) for f in fields]
        except ValueError:
            bad = next(f for f in fields if not _is_number(f))
            raise ValueError(f"{path}: line {lineno}: non-numeric value {bad!r}") from None
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"{path}: line {lineno}: non-finite value in {line!r}")
        if values[2] <= 0 or values[3] <= 0:
            raise ValueError(
                f"{path}: line {lineno}: widths must be positive, got w_right={values[2]:g}, "
                f"w_left={values[3]:g}"
            )
        rows.append(values)
    if len(rows) < 4:
        raise ValueError(f"{path}: only {len(rows)} data row(s), need at least 4")
    data = np.asarray(rows) * scale
    if len(data) > 4 and np.array_equal(data[0, :2], data[-1, :2]):
        data = data[:-1]
    try:
        return Track(data[:, :2], data[:, 3], data[:, 2], name=name or path.stem)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def save_f1tenth_csv(track: Track, path: str | Path, decimals: int | None = None) -> None:
    """Write ``track``'s control points and widths as an F1TENTH CSV (atomically).

    With ``decimals=None`` values are written with full precision (an exact round
    trip); otherwise rounded to that many decimals.
    """
    path = Path(path)

    def fmt(v: float) -> str:
        return repr(float(v)) if decimals is None else f"{v:.{decimals}f}"

    wl, wr = track.control_half_widths
    lines = [CSV_HEADER]
    for (x, y), r, left in zip(track.control_points, wr, wl, strict=True):
        lines.append(f"{fmt(x)},{fmt(y)},{fmt(r)},{fmt(left)}")
    _atomic_write_text(path, "\n".join(lines) + "\n")
    logger.info("wrote %s", path)


# --------------------------------------------------------------------------- JSON


def save_track_json(track: Track, path: str | Path) -> None:
    """Write ``track.to_dict()`` as JSON (atomically: temp file, fsync, os.replace)."""
    path = Path(path)
    _atomic_write_text(path, json.dumps(track.to_dict(), indent=1) + "\n")
    logger.info("wrote %s", path)


def load_track_json(path: str | Path) -> Track:
    """Load a track written by ``save_track_json``.

    Raises:
        ValueError: ``"<path>: <problem>"`` for a missing file, invalid JSON, a wrong
            or missing ``format`` / ``schema_version``, or bad geometry.
    """
    path = Path(path)
    text = _read_text(path)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON: {exc.msg} (line {exc.lineno})") from None
    try:
        return Track.from_dict(doc)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


# --------------------------------------------------------------------------- dispatch


def _resolve_file(path: Path) -> Path:
    """``path`` itself, or the packaged file of the same name if only that exists."""
    if path.exists():
        return path
    parent = path.parent.as_posix()
    if parent in (".", "") or parent.endswith("tracks/data"):
        packaged = data_dir() / path.name
        if packaged.is_file():
            logger.debug("using packaged %s for %s", packaged, path)
            return packaged
    return path


def load_track(spec: str | Path | Track, *, scale: float = 1.0) -> Track:
    """Resolve a track spec.

    Accepted: a ``Track`` (returned as is); a built-in name (``"oval"``);
    ``"gen:<seed>"`` or ``"gen-<seed>"``; a ``.csv`` (F1TENTH, scaled by ``scale``) or
    ``.json`` file path (a packaged file in ``tracks/data`` is found by name, e.g.
    ``"sample_circuit.csv"`` or just ``"sample_circuit"``); any of these but a file
    with the suffix ``-rev`` for the reversed track (``"oval-rev"``).
    """
    if isinstance(spec, Track):
        return spec
    if isinstance(spec, Path):
        return _load_file(spec, scale)
    if not isinstance(spec, str):
        raise ValueError(f"track spec must be a name, a path or a Track, got {type(spec).__name__}")
    text = spec.strip()
    if text.lower().endswith((".csv", ".json")):
        return _load_file(Path(text), scale)
    if scale != 1.0:
        raise ValueError(f"scale applies to CSV files only, not to {text!r}")
    if text in builtin_names():
        return get_track(text)
    m = _GEN_RE.match(text)
    if m:
        return generate_track(int(m.group(1)))
    packaged = {Path(f).stem: f for f in packaged_track_files()}
    if text in packaged:
        return _load_file(data_dir() / packaged[text], scale)
    if text.endswith("-rev") and len(text) > 4:
        try:
            return load_track(text[:-4]).reversed()
        except ValueError:
            pass  # report the spec as given, below
    raise ValueError(
        f"unknown track {spec!r}: expected a built-in name ({', '.join(builtin_names())}), "
        f"'gen:<seed>', a packaged track ({', '.join(sorted(packaged)) or 'none'}), "
        "or a .csv / .json file (add '-rev' to a name for the reversed track)"
    )


def _load_file(path: Path, scale: float) -> Track:
    path = _resolve_file(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return load_f1tenth_csv(path, scale=scale)
    if suffix == ".json":
        if scale != 1.0:
            raise ValueError(f"{path}: scale applies to CSV files only")
        return load_track_json(path)
    raise ValueError(f"{path}: unsupported track file type {suffix!r} (expected .csv or .json)")
