"""Turn a pilot spec from the command line into a pilot, and the env settings it needs.

A spec is one of:

- ``expert``: the privileged pure-pursuit expert (``agents.expert``);
- ``classical``: the edge-filter lane follower (``agents.classical.EdgePilot``);
- a CNN checkpoint: a training run directory (its ``best.json``), a checkpoint
  ``.json`` or its ``.safetensors`` (``agents.cnn.load_pilot``);
- a stable-baselines3 agent: its directory or its JSON description
  (``agents.sb3_pilot.load_sb3_pilot``).

The learned and classical pilots' modules are imported only when asked for. Anything
else is a ``ValueError`` saying what is accepted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "checkpoint_kind",
    "is_privileged",
    "load_pilot_spec",
    "pilot_env_settings",
]

DEFAULT_IMAGE_SIZE = (120, 160)
CNN_FORMAT = "trackpilot-checkpoint"  # agents.cnn.CHECKPOINT_FORMAT (not imported: torch)
# Fields that mark a JSON description as a stable-baselines3 agent.
_SB3_KEYS = ("algo", "algorithm", "sb3_version", "stable_baselines3_version", "sb3")

_ACCEPTED = (
    "'expert', 'classical', a CNN checkpoint (run directory, .json or .safetensors) or a "
    "stable-baselines3 agent (directory or .json)"
)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{path}: unreadable pilot description ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a pilot description must be a JSON object")
    return data


def _json_kind(data: dict[str, Any]) -> str | None:
    fmt = str(data.get("format", ""))
    if fmt == CNN_FORMAT:
        return "cnn"
    if "sb3" in fmt.lower() or any(k in data for k in _SB3_KEYS):
        return "sb3"
    return None


def checkpoint_kind(path: str | Path) -> tuple[str, Path]:
    """``("cnn" | "sb3", path to load)`` for a file or directory; ValueError otherwise."""
    p = Path(path)
    if not p.exists():
        raise ValueError(
            f"unknown pilot {str(path)!r}: no such file or directory; expected {_ACCEPTED}"
        )
    if p.is_dir():
        best = p / "best.json"
        if best.is_file():
            kind = _json_kind(_read_json(best))
            if kind:
                return kind, p if kind == "cnn" else best
        found = []
        for j in sorted(p.glob("*.json")):
            try:
                kind = _json_kind(_read_json(j))
            except ValueError:
                continue
            if kind:
                found.append((kind, j))
        kinds = {k for k, _ in found}
        if kinds == {"sb3"} and len(found) == 1:
            return "sb3", p
        if kinds == {"cnn"} and not best.is_file():
            raise ValueError(
                f"{p}: a directory of CNN checkpoints without best.json; name the checkpoint "
                f"file ({', '.join(j.name for _, j in found)})"
            )
        raise ValueError(f"{p}: no pilot found in this directory; expected {_ACCEPTED}")
    suffix = p.suffix.lower()
    if suffix == ".safetensors":
        desc = p.with_suffix(".json")
        if desc.is_file() and _json_kind(_read_json(desc)) == "sb3":
            return "sb3", p
        return "cnn", p
    if suffix == ".json":
        kind = _json_kind(_read_json(p))
        if kind is None:
            raise ValueError(
                f"{p}: neither a CNN checkpoint (format {CNN_FORMAT!r}) nor a "
                f"stable-baselines3 agent (one of the fields {', '.join(_SB3_KEYS)})"
            )
        return kind, p
    if suffix == ".zip":
        raise ValueError(
            f"{p}: stable-baselines3 .zip files hold pickles, which trackpilot never loads; "
            "export the agent with agents.sb3_pilot.write_sb3_policy and pass its .json"
        )
    raise ValueError(f"{p}: unknown pilot file type {suffix!r}; expected {_ACCEPTED}")


def load_pilot_spec(spec: str, device: str = "cpu", speed: float = 2.0) -> Any:
    """The pilot named by ``spec`` (see the module docstring), on ``device``.

    ``speed`` is the expert's cruise speed (the env's cruise control holds the same).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a pilot spec must be non-empty text; expected {_ACCEPTED}")
    text = spec.strip()
    if text == "expert":
        from agents.expert import ExpertConfig, ExpertPilot

        return ExpertPilot(None, ExpertConfig(cruise_speed=speed))
    if text == "classical":
        try:
            from agents.classical import EdgePilot
        except ImportError as e:
            raise ValueError(f"the classical pilot is not available ({e})") from None
        return EdgePilot()
    kind, path = checkpoint_kind(text)
    if kind == "cnn":
        from agents.cnn import load_pilot

        return load_pilot(path, device=device)
    try:
        from agents.sb3_pilot import load_sb3_pilot
    except ImportError as e:
        raise ValueError(f"{path}: stable-baselines3 pilots are not available ({e})") from None
    return load_sb3_pilot(path, device=device)


def _metadata(pilot: Any) -> dict[str, Any]:
    meta = getattr(pilot, "metadata", None)
    out = meta() if callable(meta) else {}
    return dict(out) if isinstance(out, dict) else {}


def is_privileged(pilot: Any) -> bool:
    """A pilot that reads the true pose and the track (the expert), not the camera."""
    return hasattr(pilot, "set_track") or _metadata(pilot).get("kind") == "expert"


def pilot_env_settings(pilot: Any) -> dict[str, Any]:
    """What the env must give this pilot: ``obs_mode``, ``image_size``, ``throttle``.

    From the pilot's ``metadata()``: ``obs_mode`` (e.g. an SB3 state agent says
    ``"state"``), ``image_size`` (the camera it was trained on, (H, W); for SB3 agents
    read from ``input_space``) and ``controls_throttle`` or ``action_meaning ==
    ["steering", "throttle"]`` (the pilot's throttle drives the car instead of cruise
    control). A privileged pilot needs no image (``"state"``: no rendering); a camera
    pilot gets the default 120x160 camera (CNN pilots resize to their own input).
    """
    meta = _metadata(pilot)
    obs_mode = meta.get("obs_mode") or ("state" if is_privileged(pilot) else "image")
    size = meta.get("image_size") or _space_image_size(meta.get("input_space"))
    size = size or DEFAULT_IMAGE_SIZE
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"pilot {meta.get('name')!r}: bad image_size {size!r}") from None
    throttle = bool(meta.get("controls_throttle", False)) or (
        list(meta.get("action_meaning") or []) == ["steering", "throttle"]
    )
    return {"obs_mode": str(obs_mode), "image_size": (h, w), "throttle": throttle}


def _space_image_size(space: Any) -> tuple[int, int] | None:
    """(H, W) of the image in a JSON observation space (an SB3 agent's ``input_space``):
    such a policy takes exactly the frames it was trained on."""
    if not isinstance(space, dict):
        return None
    if space.get("type") == "Dict":
        return _space_image_size((space.get("spaces") or {}).get("image"))
    shape = space.get("shape")
    if space.get("type") == "Box" and isinstance(shape, list) and len(shape) == 3:
        return int(shape[0]), int(shape[1])
    return None
