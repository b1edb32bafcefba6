"""``--help`` shows true defaults everywhere: every ``python -m`` entry point (and each of
its subcommands) is asked for ``--help`` in-process, and every option that takes a value
or switches something on and off, and has a default, must say it, as printed; where the
parser holds the default itself, the printed value must be that default."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import re

import pytest

from agents.expert import ExpertConfig
from tests._sources import entry_points
from tracks.cliargs import _show, config_from_args

#: (module whose main() parses the command line, the arguments before --help)
ENTRY_POINTS = [
    ("agents.expert", []),
    ("agents.export", []),
    ("evaluation.bench", []),
    ("evaluation.bench", ["runs"]),
    ("evaluation.bench", ["store"]),
    ("evaluation.bench", ["backends"]),
    ("evaluation.bench", ["driver"]),
    ("evaluation.cars", []),
    ("evaluation.cars", ["list"]),
    ("evaluation.cars", ["estimate"]),
    ("evaluation.cars", ["validate"]),
    ("evaluation.evaluate", []),
    ("evaluation.leaderboard", []),
    ("evaluation.profile", []),
    ("evaluation.report", []),
    ("sim.bench", []),
    ("sim.dataset.cli", []),
    ("sim.dataset.cli", ["info"]),
    ("sim.dataset.cli", ["validate"]),
    ("sim.dataset.cli", ["bench"]),
    ("sim.dataset.cli", ["view"]),
    ("sim.dataset.cli", ["migrate"]),
    ("sim.dataset.cli", ["filter"]),
    ("sim.dataset.cli", ["merge"]),
    ("sim.dataset.cli", ["import-tub"]),
    ("sim.dataset.cli", ["export-tub"]),
    ("sim.drive", []),
    ("sim.record", []),
    ("tracks.__main__", []),
    ("tracks.__main__", ["list"]),
    ("tracks.plot", []),
    ("training.bench", []),
    ("training.dagger", []),
    ("training.gpu_report", []),
    ("training.diagnose", []),
    ("training.evaluate", []),
    ("training.rl", []),
    ("training.relabel", []),
    ("training.relabel", ["check"]),
    ("training.rl", ["eval"]),
    ("training.search", []),
    ("training.train", []),
]

#: Switches whose default is "not given" (``--json``, ``--resume``): nothing to show.
_PLAIN_SWITCHES = (
    argparse._StoreTrueAction,
    argparse._StoreFalseAction,
    argparse._StoreConstAction,
    argparse._CountAction,
)


def help_of(module: str, prefix: list[str]) -> tuple[argparse.ArgumentParser, str]:
    """The parser ``main`` builds and the help it prints for ``prefix + ["--help"]``."""
    parsers: list[argparse.ArgumentParser] = []
    real = argparse.ArgumentParser.parse_known_args

    def watched(self, *args, **kwargs):  # the real parser, only noted on its way
        parsers.append(self)
        return real(self, *args, **kwargs)

    main = importlib.import_module(module).main
    out = io.StringIO()
    argparse.ArgumentParser.parse_known_args = watched
    try:
        with contextlib.redirect_stdout(out):
            try:
                status = main([*prefix, "--help"])
            except SystemExit as stop:  # argparse's exit (some mains return its code)
                status = stop.code
    finally:
        argparse.ArgumentParser.parse_known_args = real
    assert status in (0, None)
    parser = parsers[-1]  # a subcommand's parser is the last one asked
    return parser, out.getvalue()


def _words(text: str) -> str:
    return " ".join(text.split())


def _squeezed(text: str) -> str:
    # argparse wraps lines at spaces and after hyphens ("closed-" / "loop").
    return "".join(text.split())


def _shown(value) -> list[str]:
    """Ways a default may be printed."""
    if isinstance(value, (list, tuple)):
        shown = [",".join(str(v) for v in value), str(value)]
        if len(value) == 2 and all(isinstance(v, int) for v in value):
            shown.append(f"{value[0]}x{value[1]}")  # an image size, HxW
        return shown
    if isinstance(value, float) and value.is_integer():
        return [str(value), str(int(value)), f"{value:g}"]
    return [str(value)]


def problems(parser: argparse.ArgumentParser, printed: str) -> list[str]:
    formatter = parser._get_formatter()
    flat = _squeezed(printed)
    bad = []
    for action in parser._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        name = action.option_strings[0]
        if action.required:
            continue  # no default to show
        if isinstance(action, _PLAIN_SWITCHES) and action.default in (
            False,
            None,
            argparse.SUPPRESS,
        ):
            continue
        text = _words(formatter._expand_help(action)) if action.help else ""
        if text and _squeezed(text) not in flat:
            bad.append(f"{name}: its help is not what --help printed")
            continue
        alias = re.fullmatch(r"the same as (--[\w-]+)", text)
        if alias and alias.group(1) in parser._option_string_actions:
            continue  # the flag it names shows the default
        if "default" not in text.lower() and not re.search(r"\brequired\)?$", text):
            bad.append(f"{name}: no default shown ({text!r})")
            continue
        value = action.default
        if value not in (None, argparse.SUPPRESS) and not any(s in text for s in _shown(value)):
            bad.append(f"{name}: the default is {value!r}, the help says {text!r}")
    return bad


@pytest.mark.parametrize(("module", "prefix"), ENTRY_POINTS, ids=lambda v: str(v))
def test_help_shows_every_default(module, prefix) -> None:
    parser, printed = help_of(module, prefix)
    assert printed.startswith("usage:")
    assert problems(parser, printed) == []


def test_the_checker_catches_a_missing_or_false_default() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200, help="env steps")
    ap.add_argument("--laps", type=int, default=3, help="laps (default: 5)")
    ap.add_argument("--seed", type=int, default=0, help="seed (default: %(default)s)")
    ap.add_argument("--json", action="store_true", help="print JSON")
    ap.add_argument("--fast", action=argparse.BooleanOptionalAction, default=True, help="go")
    bad = problems(ap, ap.format_help())
    assert [b.split(":")[0] for b in bad] == ["--steps", "--laps", "--fast"]


def test_every_entry_point_is_checked() -> None:
    """A new ``python -m`` module must join ENTRY_POINTS."""
    found = set(entry_points())
    checked = {m.removesuffix(".__main__").removesuffix(".cli") for m, _ in ENTRY_POINTS}
    checked |= {m for m, _ in ENTRY_POINTS}
    assert found - checked == set()


def _built_configs():
    """(parser, the config the command builds when only the required flags are typed)."""
    from evaluation import leaderboard
    from sim import drive, record
    from training import rl, train_cli

    ap = train_cli.build_parser()
    yield (
        "training.train",
        ap,
        train_cli.config_from_args(ap.parse_args(["--data", "d", "--out", "o"])),
    )
    ap = rl._train_parser()
    yield "training.rl", ap, rl._config_from_args(ap.parse_args(["--out", "o"]))[0]
    ap = leaderboard.build_parser()
    yield (
        "evaluation.leaderboard",
        ap,
        config_from_args(leaderboard.LeaderboardConfig, ap.parse_args([])),
    )
    ap = record.build_parser()
    args = ap.parse_args(["--out", "o"])
    expert = config_from_args(ExpertConfig, args)
    yield "sim.record", ap, config_from_args(record.RecordConfig, args, expert=expert)
    ap = drive.build_parser()
    yield "sim.drive", ap, drive.config_from_cli(ap.parse_args([]))


def test_shown_defaults_are_the_ones_the_command_uses() -> None:
    """Flags derived from config dataclasses: the ``(default: X)`` in the help is the value
    of the config the command builds when the flag is not typed (the RL help once said
    300,000 timesteps while 100,000 ran)."""
    checked = 0
    for name, parser, cfg in _built_configs():
        for action in parser._actions:
            m = re.search(r"\(default: (.*)\)$", " ".join((action.help or "").split()))
            if not m or not hasattr(cfg, action.dest) or action.default is not argparse.SUPPRESS:
                continue
            value = getattr(cfg, action.dest)
            assert _show(value, action.dest) == m.group(1), (name, action.option_strings)
            checked += 1
    assert checked > 60


def test_tuned_rl_defaults_are_spelled_out() -> None:
    from training.rl import tuned_help
    from training.rl_config import RLConfig

    texts = tuned_help()
    assert "none: tuned: PPO 0.0003; SAC 0.0003" in texts["learning_rate"]
    state, image = RLConfig(obs="state"), RLConfig(obs="image")
    assert (
        f"PPO {state.hyperparams['batch_size']} (state) / {image.hyperparams['batch_size']} (image)"
        in texts["batch_size"]
    )
    assert f"SAC {RLConfig(algo='sac').hyperparams['buffer_size']} (state)" in texts["buffer_size"]
    assert all("none: tuned:" in t for t in texts.values()) and len(texts) == 14


def test_the_leaderboard_help_explains_every_preset() -> None:
    from evaluation.presets import PRESETS

    _, printed = help_of("evaluation.leaderboard", [])
    flat = _words(printed)
    for name, preset in PRESETS.items():
        start = flat.index(f"{name}: {preset.about}")
        text = flat[start : start + len(preset.describe()) + len(name) + 2]
        h, w = preset.image_size
        assert f"on {', '.join(preset.train_tracks)} at {h}x{w}" in text
        assert f"held-out {', '.join(preset.eval_tracks)}" in text
        assert all(f"{m.name} ({m.model}" in text for m in preset.zoo)
    tiny = flat[flat.index("tiny: ") :]
    assert "up to 1 epoch, at most 600 frames" in tiny and "compact_ccw_noflip" in tiny
