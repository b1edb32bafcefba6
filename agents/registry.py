"""One registry from a pilot spec (command-line text) to a pilot.

A spec is a keyword (``expert``, ``classical``) or a path: a run directory, a JSON
description, a ``.safetensors`` file. Each pilot kind is one :class:`PilotKind` entry
here plus one module that defines ``load_spec(target, *, device, speed) -> Pilot``;
the module is imported only when its kind is loaded (torch, stable-baselines3).

A path is matched by its JSON description (``format`` and kind-specific fields,
:attr:`PilotKind.describes`) or by its file suffix (:attr:`PilotKind.suffixes`).
Directories: ``best.json`` first, else the one description inside. Anything else is a
``ValueError`` that lists what is accepted.

Adding a kind: write ``agents/<kind>.py`` with ``load_spec``, then add one entry to
:data:`KINDS`, as ONNX pilots do (``PilotKind("onnx", "agents.onnx_pilot", "an ONNX
model (.onnx)", suffixes=(".onnx",))``). Nothing else changes: the closed loop reads
what the pilot needs from its ``needs`` (:class:`agents.base.PilotNeeds`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.base import read_description, resolve_checkpoint_json

__all__ = ["KINDS", "PilotKind", "kind_of", "load_pilot", "pilot_files", "resolve_spec"]

#: Fields that mark a JSON description as a stable-baselines3 agent.
SB3_KEYS = ("algo", "algorithm", "sb3_version", "stable_baselines3_version", "sb3")
CNN_FORMAT = "trackpilot-checkpoint"  # agents.cnn.CHECKPOINT_FORMAT (not imported: torch)


def _is_cnn(d: dict[str, Any]) -> bool:
    return str(d.get("format", "")) == CNN_FORMAT


def _is_sb3(d: dict[str, Any]) -> bool:
    return "sb3" in str(d.get("format", "")).lower() or any(k in d for k in SB3_KEYS)


@dataclass(frozen=True)
class PilotKind:
    """One kind of pilot: how a spec names it and which module loads it."""

    name: str  # "expert", "cnn", ... (the pilot's metadata "kind")
    module: str  # defines load_spec(target, *, device, speed); imported on use
    accepts: str  # for error messages: what a user writes to get this kind
    keyword: str | None = None  # the spec text that names it, if any
    describes: Callable[[dict[str, Any]], bool] | None = None  # its JSON description?
    suffixes: tuple[str, ...] = ()  # file suffixes that are this kind outright
    directory_target: str = "directory"  # what load_spec gets for a run directory:
    # "directory" (the directory itself) or "json" (the description found in it)

    def load(self, target: str | Path | None, *, device: str, speed: float) -> Any:
        try:
            module = importlib.import_module(self.module)
        except ImportError as e:
            raise ValueError(f"{self.name} pilots are not available ({e})") from None
        return module.load_spec(target, device=device, speed=speed)


KINDS: tuple[PilotKind, ...] = (
    PilotKind("expert", "agents.expert", "'expert'", keyword="expert"),
    PilotKind("classical", "agents.classical", "'classical'", keyword="classical"),
    PilotKind(
        "cnn",
        "agents.cnn",
        "a CNN checkpoint (run directory, .json or .safetensors)",
        describes=_is_cnn,
    ),
    PilotKind(
        "sb3",
        "agents.sb3_pilot",
        "a stable-baselines3 agent (directory or .json)",
        describes=_is_sb3,
        directory_target="json",
    ),
    PilotKind("onnx", "agents.onnx_pilot", "an ONNX model (.onnx)", suffixes=(".onnx",)),
)


def _accepted() -> str:
    parts = [k.accepts for k in KINDS]
    return ", ".join(parts[:-1]) + " or " + parts[-1]


def _read_json(path: Path) -> dict[str, Any]:
    return read_description(path, "pilot")


def _described(data: dict[str, Any]) -> PilotKind | None:
    for kind in KINDS:
        if kind.describes is not None and kind.describes(data):
            return kind
    return None


def _directory(p: Path) -> tuple[PilotKind, Path]:
    best = p / "best.json"
    if best.is_file():
        kind = _described(_read_json(best))
        if kind:
            return kind, p if kind.directory_target == "directory" else best
    found: list[tuple[PilotKind, Path]] = []
    for j in sorted(p.glob("*.json")):
        try:
            kind = _described(_read_json(j))
        except ValueError:
            continue
        if kind:
            found.append((kind, j))
    names = {k.name for k, _ in found}
    if len(found) == 1 and found[0][0].directory_target == "json":
        return found[0][0], p
    if len(names) == 1 and not best.is_file():
        raise ValueError(
            f"{p}: a directory of {found[0][0].name.upper()} checkpoints without best.json; "
            f"name the checkpoint file ({', '.join(j.name for _, j in found)})"
        )
    raise ValueError(f"{p}: no pilot found in this directory; expected {_accepted()}")


def kind_of(path: str | Path) -> tuple[PilotKind, Path]:
    """The kind of the pilot at ``path`` and what its ``load_spec`` gets; ValueError otherwise."""
    p = Path(path)
    if not p.exists():
        raise ValueError(
            f"unknown pilot {str(path)!r}: no such file or directory; expected {_accepted()}"
        )
    if p.is_dir():
        return _directory(p)
    suffix = p.suffix.lower()
    for kind in KINDS:
        if suffix in kind.suffixes:
            return kind, p
    if suffix == ".safetensors":
        desc = p.with_suffix(".json")
        kind = _described(_read_json(desc)) if desc.is_file() else None
        return kind or _by_name("cnn"), p
    if suffix == ".json":
        kind = _described(_read_json(p))
        if kind is None:
            raise ValueError(
                f"{p}: neither a CNN checkpoint (format {CNN_FORMAT!r}) nor a "
                f"stable-baselines3 agent (one of the fields {', '.join(SB3_KEYS)})"
            )
        return kind, p
    if suffix == ".zip":
        raise ValueError(
            f"{p}: stable-baselines3 .zip files hold pickles, which trackpilot never loads; "
            "export the agent with agents.sb3_pilot.write_sb3_policy and pass its .json"
        )
    raise ValueError(f"{p}: unknown pilot file type {suffix!r}; expected {_accepted()}")


def _by_name(name: str) -> PilotKind:
    return next(k for k in KINDS if k.name == name)


def resolve_spec(spec: str) -> tuple[PilotKind, Path | None]:
    """``(kind, target)`` for a spec: a keyword's kind with no target, or a path's."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a pilot spec must be non-empty text; expected {_accepted()}")
    text = spec.strip()
    for kind in KINDS:
        if kind.keyword is not None and text == kind.keyword:
            return kind, None
    return kind_of(text)


def load_pilot(spec: str, device: str = "cpu", speed: float = 2.0) -> Any:
    """The pilot named by ``spec`` on ``device`` (``speed``: the expert's cruise speed)."""
    kind, target = resolve_spec(spec)
    return kind.load(target, device=device, speed=speed)


def pilot_files(spec: str) -> tuple[str, list[Path]] | None:
    """What a pilot is loaded from: ``(entry, files)``, or None for a keyword pilot.

    ``files`` are every file :func:`load_pilot` reads for ``spec``; copied together into
    one directory, the pilot loads again from the file named ``entry`` there. A kind
    that owns a file suffix (``.onnx``) is that one file; a kind known by its JSON
    description is the description and the weights file it names (beside it). This is
    how a pilot travels by content to a machine without the same file system
    (``evaluation.backends``).
    """
    kind, target = resolve_spec(spec)
    if target is None:
        return None
    if target.is_file() and target.suffix.lower() in kind.suffixes:
        return target.name, [target]
    if kind.describes is None:
        raise ValueError(f"{spec}: cannot tell which files a {kind.name} pilot is loaded from")
    if target.is_dir():
        found = [j for j in sorted(target.glob("*.json")) if _described_file(j) is kind]
        best = target / "best.json"
        desc = best if best in found else (found[0] if len(found) == 1 else None)
        if desc is None:
            raise ValueError(f"{target}: no single {kind.name} description in this directory")
    else:
        desc = resolve_checkpoint_json(target, kind.name)
    weights = _read_json(desc).get("weights")
    if not isinstance(weights, str) or Path(weights).name != weights:
        raise ValueError(f"{desc}: its 'weights' must name a file beside it, got {weights!r}")
    if not (desc.parent / weights).is_file():
        raise ValueError(f"{desc.parent / weights}: weights named by {desc.name} not found")
    return desc.name, [desc, desc.parent / weights]


def _described_file(path: Path) -> PilotKind | None:
    try:
        return _described(_read_json(path))
    except ValueError:
        return None
