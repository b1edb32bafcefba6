"""Command lines derived from the config dataclasses: one helper for every CLI.

A stage's ``@dataclass(frozen=True)`` config is the single statement of its settings:
each field's type, default and help text (``field(metadata={"help": ...})``, else the
comment on the field's line). :func:`add_config_args` turns fields into argparse flags
(``image_size`` -> ``--image-size``) whose ``--help`` shows the dataclass default, and
:func:`config_from_args` builds the config back from the parsed flags, so flags, config
files and help text cannot drift apart.

Flags default to "not given" (``argparse.SUPPRESS``): :func:`config_from_args` applies
only what the user typed on top of a base config (the dataclass defaults, or a config
file's values), and the dataclass's ``__post_init__`` validates the result.

Types understood: ``int``, ``float``, ``str``, ``bool`` (``--x`` / ``--no-x``),
``X | None`` (the text ``none`` gives None), ``tuple[X, ...]`` (a comma list) and
``tuple[int, int]`` fields named ``*size`` (``HxW``). Anything else needs a ``parse``
entry in the field's metadata (a function from text to value). Standard library only
(the lowest layer: tracks <- sim <- agents <- training, evaluation).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import io
import re
import tokenize
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from tracks.common import format_size, parse_size

__all__ = ["add_config_args", "config_from_args", "field_help", "flag_name"]


def flag_name(field_name: str) -> str:
    """``image_size`` -> ``--image-size``."""
    return "--" + field_name.replace("_", "-")


@functools.cache
def _comments(cls: type) -> dict[str, str]:
    """Each field's trailing ``# comment`` in the class source (empty if unavailable)."""
    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    out: dict[str, str] = {}
    line_field: dict[int, str] = {}
    for i, line in enumerate(src.splitlines(), start=1):
        m = re.match(r"^\s{4}(\w+)\s*:", line)
        if m:
            line_field[i] = m.group(1)
    try:
        for tok in tokenize.generate_tokens(io.StringIO(src).readline):
            if tok.type == tokenize.COMMENT:
                name = line_field.get(tok.start[0])
                if name and name not in out:
                    out[name] = tok.string.lstrip("#").strip()
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return out
    return out


def field_help(cls: type, f: dataclasses.Field) -> str:
    """The help text of a field: ``metadata["help"]``, else its line's comment."""
    return str(f.metadata.get("help") or _comments(cls).get(f.name, "")).strip()


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _show(value: Any, name: str) -> str:
    if value is None:
        return "none"
    if value == "":
        return '""'
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        if name.endswith("size") and len(value) == 2 and all(isinstance(v, int) for v in value):
            return format_size(value)
        return ",".join(str(v) for v in value) if value else "(empty)"
    return str(value)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _scalar(tp: Any, name: str) -> Callable[[str], Any] | None:
    if tp is bool:
        return None
    if tp in (int, float, str):

        def conv(text: str, tp=tp) -> Any:
            try:
                return tp(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected {tp.__name__}, got {text!r}") from None

        return conv
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        if name.endswith("size") and args == (int, int):
            return _wrap(lambda t: parse_size(t, what=flag_name(name)))
        if len(args) == 2 and args[1] is Ellipsis and args[0] in (int, float, str):
            item = args[0]
            kind = {int: "integers", float: "numbers", str: "names"}[item]

            def items(text: str) -> tuple:
                try:
                    return tuple(item(v.strip()) for v in text.split(",") if v.strip())
                except ValueError:
                    raise ValueError(f"expected comma-separated {kind}, got {text!r}") from None

            return _wrap(items)
        if args and all(a in (int, float) for a in args):
            n = len(args)

            def fixed(text: str) -> tuple:
                vals = [v.strip() for v in text.split(",")]
                if len(vals) != n:
                    raise ValueError(f"expected {n} comma-separated numbers, got {text!r}")
                return tuple(a(v) for a, v in zip(args, vals, strict=True))

            return _wrap(fixed)
    raise TypeError(
        f"no command-line parser for field {name!r} of type {tp!r}: give metadata parse"
    )


def _wrap(fn: Callable[[str], Any]) -> Callable[[str], Any]:
    def conv(text: str) -> Any:
        try:
            return fn(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return conv


def add_config_args(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    only: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
    help: Mapping[str, str] | None = None,  # noqa: A002 - mirrors argparse
    flags: Mapping[str, str | Sequence[str]] | None = None,
    defaults: Any = None,
    needed: Iterable[str] = (),
) -> list[str]:
    """Add one flag per field of dataclass ``cls``; returns the field names added.

    ``only``/``exclude`` pick fields; ``help`` overrides help texts; ``flags`` gives a
    field other flag names than :func:`flag_name` (``{"cruise_speed": "--speed"}``, or a
    list of aliases); ``defaults`` (an instance) is the config whose values ``--help``
    shows (the class defaults if None). A field without a default becomes a required
    flag. ``needed`` names fields whose placeholder default (``""``) is no value at all: the
    flag or a config file must give one, so ``--help`` says "required" instead of showing
    the placeholder (the flag itself stays optional for argparse, as a config file may
    give it). The parsed value is stored under the field's name either way.
    """
    must = set(needed)
    hints = typing.get_type_hints(cls)
    chosen = set(only) if only is not None else None
    skip = set(exclude)
    added: list[str] = []
    for f in dataclasses.fields(cls):
        if not f.init or f.name in skip or (chosen is not None and f.name not in chosen):
            continue
        if f.metadata.get("cli") is False:
            continue
        default = getattr(defaults, f.name) if defaults is not None else _default(f)
        text = (help or {}).get(f.name) or field_help(cls, f)
        tp, optional = _unwrap_optional(hints[f.name])
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS}
        if default is dataclasses.MISSING:
            kw["required"] = True
        elif f.name in must:
            text = text if "required" in text else f"{text} (required)".strip()
        else:
            text = (
                f"{text} (default: {_show(default, f.name)})"
                if text
                else (f"default: {_show(default, f.name)}")
            )
        kw["help"] = text.replace("%", "%%")
        if "choices" in f.metadata:
            kw["choices"] = list(f.metadata["choices"])
        names = (flags or {}).get(f.name) or flag_name(f.name)
        names = [names] if isinstance(names, str) else list(names)
        if tp is bool and "parse" not in f.metadata:
            kw["action"] = argparse.BooleanOptionalAction
            parser.add_argument(*names, **kw)
            added.append(f.name)
            continue
        conv = _wrap(f.metadata["parse"]) if "parse" in f.metadata else _scalar(tp, f.name)
        if optional:
            inner = conv

            def conv(text: str, inner=inner) -> Any:  # noqa: F811 - optional wrapper
                return None if text.strip().lower() == "none" else inner(text)

        kw["type"] = conv
        kw["metavar"] = f.metadata.get("metavar") or (
            "HxW"
            if f.name.endswith("size") and typing.get_origin(tp) is tuple
            else names[0].lstrip("-").replace("-", "_").upper()
        )
        if kw["metavar"] is None:
            del kw["metavar"]
        parser.add_argument(*names, **kw)
        added.append(f.name)
    return added


def config_from_args(cls: type, args: argparse.Namespace, *, base: Any = None, **overrides: Any):
    """``base`` (default ``cls()``) with the fields given on the command line replaced.

    Only fields present in ``args`` (flags the user typed) are applied, then
    ``overrides``; ``__post_init__`` validates the result (``ValueError``).
    """
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    given = {k: v for k, v in vars(args).items() if k in names}
    given.update(overrides)
    if base is None:
        return cls(**given)
    return dataclasses.replace(base, **given)
