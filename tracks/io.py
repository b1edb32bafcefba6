"""Track files: F1TENTH / TUM racetrack-database CSV, trackpilot JSON, and ``load_track``.

CSV (F1TENTH / TUM racetrack-database centreline format)::

    # x_m, y_m, w_tr_right_m, w_tr_left_m
    0.0, 0.0, 0.55, 0.55
    ...

JSON (``save_track_json`` / ``load_track_json``)::

    {"format": "trackpilot-track", "schema_version": 1, "name": "...", "smooth": true,
     "centreline": [[x, y], ...], "half_width_left": [...], "half_width_right": [...]}

Every file is bounded by the limits of ``tracks.limits`` (file size, point count,
coordinate and width magnitude, JSON nesting) and every track a loader returns has
passed the drivability check (``tracks.validate.require_drivable``); each failure
is a one-line ``ValueError`` starting with the file. ``allow_undrivable=True`` loads
an undrivable track anyway (with a warning logged); it does not lift the limits.
"""

from __future__ import annotations

import importlib.resources
import json
import logging
import math
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from tracks.fileio import atomic_write_text, json_shape
from tracks.generator import generate_track
from tracks.library import builtin_names, get_track
from tracks.limits import (
    MAX_COORDINATE,
    MAX_FILE_BYTES,
    MAX_HALF_WIDTH,
    MAX_JSON_DEPTH,
    MAX_POINTS,
)
from tracks.track import Track
from tracks.validate import require_drivable

logger = logging.getLogger(__name__)

CSV_HEADER = "# x_m, y_m, w_tr_right_m, w_tr_left_m"
_GEN_RE = re.compile(r"^gen[:-](\d+)$")


# --------------------------------------------------------------------------- helpers


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, refusing anything larger than ``MAX_FILE_BYTES`` unread."""
    if not path.exists():
        raise ValueError(f"{path}: file not found")
    if not path.is_file():
        raise ValueError(f"{path}: not a regular file")
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ValueError(_too_big(path, size))
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)  # the file may have grown since stat
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror})") from None
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(_too_big(path, len(data)))
    return data


def _too_big(path: Path, size: int) -> str:
    return (
        f"{path}: file size {size / 2**20:.1f} MiB exceeds the limit "
        f"{MAX_FILE_BYTES / 2**20:g} MiB (MAX_FILE_BYTES)"
    )


def _read_text(path: Path) -> str:
    try:
        return _read_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a UTF-8 text file") from None


def _too_many_points(path: Path, where: str = "") -> str:
    return f"{path}: {where}more than {MAX_POINTS} points (MAX_POINTS)"


def _lines(text: str) -> Iterator[str]:
    """The lines of ``text`` one at a time (``\\n``, ``\\r\\n`` or ``\\r`` endings): a file
    of 2M rows is refused at row MAX_POINTS + 1 without first becoming 2M strings."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    pos, n = 0, len(text)
    while pos < n:
        end = text.find("\n", pos)
        if end < 0:
            end = n
        yield text[pos:end]
        pos = end + 1


def _refuse_constant(name: str) -> float:
    raise ValueError(f"non-finite number {name} (numbers must be finite)")


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


def load_f1tenth_csv(
    path: str | Path,
    scale: float = 1.0,
    name: str | None = None,
    *,
    allow_undrivable: bool = False,
) -> Track:
    """Load an F1TENTH / TUM racetrack-database centreline CSV.

    Rows are ``x, y, w_right, w_left`` (note: right before left); lines starting with
    ``#`` and blank lines are skipped, and one non-numeric header row is allowed
    first. ``scale`` multiplies all four columns (e.g. 0.1 for a 1:10 car on a real
    circuit). A closing row that repeats the first is dropped. The scaled track must
    be drivable for the car (``tracks.validate.require_drivable``) unless
    ``allow_undrivable``.

    Raises:
        ValueError: ``"<path>: <problem>"`` (with the line number where relevant) for
            a missing file, a wrong column count, non-numeric or non-finite values,
            non-positive widths, fewer than 4 rows, a limit of ``tracks.limits``
            (file size, points, coordinate or width magnitude after ``scale``) or an
            undrivable track.
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
    for lineno, raw in enumerate(_lines(text), start=1):
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
        big = max(abs(values[0]), abs(values[1])) * scale
        if big > MAX_COORDINATE:
            raise ValueError(
                f"{path}: line {lineno}: coordinate {big:.6g} m (after scale) exceeds the "
                f"limit {MAX_COORDINATE:g} m (MAX_COORDINATE)"
            )
        wide = max(values[2], values[3]) * scale
        if wide > MAX_HALF_WIDTH:
            raise ValueError(
                f"{path}: line {lineno}: half width {wide:.6g} m (after scale) exceeds the "
                f"limit {MAX_HALF_WIDTH:g} m (MAX_HALF_WIDTH)"
            )
        if len(rows) == MAX_POINTS:
            raise ValueError(_too_many_points(path, f"line {lineno}: "))
        rows.append(values)
    if len(rows) < 4:
        raise ValueError(f"{path}: only {len(rows)} data row(s), need at least 4")
    data = np.asarray(rows) * scale
    if len(data) > 4 and np.array_equal(data[0, :2], data[-1, :2]):
        data = data[:-1]
    try:
        track = Track(data[:, :2], data[:, 3], data[:, 2], name=name or path.stem)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return require_drivable(track, allow_undrivable=allow_undrivable, source=str(path))


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


def load_track_json(path: str | Path, *, allow_undrivable: bool = False) -> Track:
    """Load a track written by ``save_track_json``; it must be drivable for the car
    (``tracks.validate.require_drivable``) unless ``allow_undrivable``.

    Types are strict (``Track.from_dict``): ``smooth`` is ``true`` or ``false``,
    ``name`` a string, the geometry finite numbers; unknown fields are refused.

    Raises:
        ValueError: ``"<path>: <problem>"`` for a missing file, invalid JSON, a wrong
            or missing ``format`` / ``schema_version``, a wrong type, bad geometry, a
            limit of ``tracks.limits`` (file size, nesting depth, points, coordinate
            or width magnitude) or an undrivable track.
    """
    path = Path(path)
    data = _read_bytes(path)
    depth, arrays = json_shape(data)
    if depth > MAX_JSON_DEPTH:
        raise ValueError(
            f"{path}: JSON nesting depth {depth} exceeds the limit {MAX_JSON_DEPTH} "
            "(MAX_JSON_DEPTH)"
        )
    if arrays > MAX_POINTS + 3:  # one [x, y] per point, plus the lists holding them
        raise ValueError(
            f"{path}: {arrays} JSON arrays: more than the limit of {MAX_POINTS} points (MAX_POINTS)"
        )
    try:
        doc = json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a UTF-8 text file") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON: {exc.msg} (line {exc.lineno})") from None
    except RecursionError:  # a second guard: the depth scan above should catch it
        raise ValueError(f"{path}: JSON nested too deeply (MAX_JSON_DEPTH)") from None
    except ValueError as exc:  # a refused constant, an integer with too many digits
        raise ValueError(f"{path}: invalid JSON: {exc}") from None
    if isinstance(doc, dict) and isinstance(doc.get("centreline"), list):
        if len(doc["centreline"]) > MAX_POINTS:
            raise ValueError(
                f"{path}: {len(doc['centreline'])} points exceed the limit {MAX_POINTS} "
                "(MAX_POINTS)"
            )
    try:
        track = Track.from_dict(doc)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return require_drivable(track, allow_undrivable=allow_undrivable, source=str(path))


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


def load_track(
    spec: str | Path | Track, *, scale: float = 1.0, allow_undrivable: bool = False
) -> Track:
    """Resolve a track spec; the track must be drivable for the car
    (``tracks.validate.require_drivable``, checked once per geometry and process)
    unless ``allow_undrivable``.

    Accepted: a ``Track`` (returned as is, once checked); a built-in name (``"oval"``);
    ``"gen:<seed>"`` or ``"gen-<seed>"``; a ``.csv`` (F1TENTH, scaled by ``scale``) or
    ``.json`` file path (a packaged file in ``tracks/data`` is found by name, e.g.
    ``"sample_circuit.csv"`` or just ``"sample_circuit"``); any of these but a file
    with the suffix ``-rev`` for the reversed track (``"oval-rev"``).
    """
    if isinstance(spec, Track):
        return require_drivable(spec, allow_undrivable=allow_undrivable)
    if isinstance(spec, Path):
        return _load_file(spec, scale, allow_undrivable)
    if not isinstance(spec, str):
        raise ValueError(f"track spec must be a name, a path or a Track, got {type(spec).__name__}")
    text = spec.strip()
    if text.lower().endswith((".csv", ".json")):
        return _load_file(Path(text), scale, allow_undrivable)
    if scale != 1.0:
        raise ValueError(f"scale applies to CSV files only, not to {text!r}")
    if text in builtin_names():
        return require_drivable(get_track(text), source=f"track {text!r}")
    m = _GEN_RE.match(text)
    if m:
        return require_drivable(generate_track(int(m.group(1))), source=f"track {text!r}")
    packaged = {Path(f).stem: f for f in packaged_track_files()}
    if text in packaged:
        return _load_file(data_dir() / packaged[text], scale, allow_undrivable)
    if text.endswith("-rev") and len(text) > 4:
        try:
            base = load_track(text[:-4], allow_undrivable=allow_undrivable)
        except _UnknownTrack:
            pass  # report the spec as given, below
        else:
            return require_drivable(
                base.reversed(), allow_undrivable=allow_undrivable, source=f"track {text!r}"
            )
    raise _UnknownTrack(
        f"unknown track {spec!r}: expected a built-in name ({', '.join(builtin_names())}), "
        f"'gen:<seed>', a packaged track ({', '.join(sorted(packaged)) or 'none'}), "
        "or a .csv / .json file (add '-rev' to a name for the reversed track)"
    )


class _UnknownTrack(ValueError):
    """A spec that names no track (as opposed to a track that fails to load)."""


def _load_file(path: Path, scale: float, allow_undrivable: bool) -> Track:
    path = _resolve_file(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return load_f1tenth_csv(path, scale=scale, allow_undrivable=allow_undrivable)
    if suffix == ".json":
        if scale != 1.0:
            raise ValueError(f"{path}: scale applies to CSV files only")
        return load_track_json(path, allow_undrivable=allow_undrivable)
    raise ValueError(f"{path}: unsupported track file type {suffix!r} (expected .csv or .json)")
