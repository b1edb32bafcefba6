"""Shared definitions: HxW sizes, directions, command lines from config dataclasses."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import pytest

from tracks.cliargs import add_config_args, config_from_args
from tracks.common import DIRECTIONS, parse_directions, parse_size


def test_parse_size() -> None:
    assert parse_size("120x160") == (120, 160)
    assert parse_size(" 96X96 ") == (96, 96)
    assert parse_size((60, 80)) == (60, 80)
    for bad in ("120", "120x", "x160", "1.5x2", "-1x4", "0x10", "4000x4000", (1.0, 2.0), (True, 2)):
        with pytest.raises(ValueError):
            parse_size(bad)
    with pytest.raises(ValueError, match="--image-size"):
        parse_size("big", what="--image-size")


def test_parse_directions() -> None:
    assert parse_directions("ccw,cw") == DIRECTIONS
    assert parse_directions(["cw"]) == ("cw",)
    for bad in ("", "up", "ccw,left"):
        with pytest.raises(ValueError, match="directions"):
            parse_directions(bad)


@dataclass(frozen=True)
class Demo:
    """A config as the stages write them."""

    data: str  # dataset directory
    epochs: int = 30  # passes over the training split
    lr: float = 1e-3  # learning rate
    image_size: tuple[int, int] = (120, 160)  # camera HxW
    tracks: tuple[str, ...] = ("oval", "kidney")  # comma list of tracks
    seeds: tuple[int, ...] = (0,)
    max_frames: int | None = None  # cap on frames; none: all
    flip: bool = True  # horizontal-flip augmentation
    mode: str = field(default="a", metadata={"choices": ("a", "b"), "help": "which mode"})

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError("epochs must be >= 1")


def _parser(**kw) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="demo")
    add_config_args(p, Demo, **kw)
    return p


def test_help_comes_from_the_dataclass() -> None:
    text = _parser().format_help()
    for expected in (
        "passes over the training split (default: 30)",
        "camera HxW (default: 120x160)",
        "comma list of tracks (default: oval,kidney)",
        "(default: none)",
        "--flip, --no-flip",
        "which mode (default: a)",
    ):
        assert expected in " ".join(text.split()), expected


def test_flags_round_trip_to_the_config() -> None:
    p = _parser(flags={"lr": ["--lr", "--learning-rate"]})
    args = p.parse_args(
        "--data d --epochs 5 --learning-rate 0.01 --image-size 60x80 --tracks a,b "
        "--seeds 1,2 --max-frames none --no-flip --mode b".split()
    )
    cfg = config_from_args(Demo, args)
    assert cfg == Demo("d", 5, 0.01, (60, 80), ("a", "b"), (1, 2), None, False, "b")


def test_only_typed_flags_replace_a_base_config() -> None:
    base = Demo("from-file", epochs=7, lr=0.5)
    args = _parser().parse_args(["--data", "x", "--epochs", "9"])
    assert config_from_args(Demo, args, base=base) == Demo("x", epochs=9, lr=0.5)
    with pytest.raises(ValueError, match="epochs"):  # __post_init__ validates
        config_from_args(Demo, _parser().parse_args(["--data", "x", "--epochs", "0"]))


@pytest.mark.parametrize(
    "argv",
    [["--epochs", "3"], ["--data", "d", "--epochs", "x"], ["--data", "d", "--image-size", "9"]],
)
def test_bad_flags_are_argparse_errors(argv, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        _parser().parse_args(argv)
    assert e.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_read_json_is_bounded_before_parsing(tmp_path) -> None:
    from tracks.fileio import read_json

    ok = tmp_path / "ok.json"
    ok.write_text('{"a": [1, 2, {"b": null}]}')
    assert read_json(ok) == {"a": [1, 2, {"b": None}]}
    cases = {
        "deep.json": ("[" * 100_000 + "]" * 100_000, "nested more than 64 levels"),
        "nan.json": ('{"a": NaN}', "NaN is not JSON"),
        "bad.json": ('{"a": ', "unreadable config"),
        "big.json": ('"' + "x" * 2000 + '"', "more than the 1000 bytes"),
    }
    for name, (text, words) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=words) as e:
            read_json(tmp_path / name, what="config", max_bytes=1000 if "big" in name else 1 << 20)
        assert str(e.value).startswith(str(tmp_path / name)) and "\n" not in str(e.value)
    with pytest.raises(ValueError, match="cannot read the config"):
        read_json(tmp_path / "missing.json", what="config")


def test_config_files_are_read_bounded(tmp_path) -> None:
    from training.config import TrainConfig
    from training.rl_config import RLConfig

    deep = tmp_path / "deep.json"
    deep.write_text('{"data": ' + "[" * 10_000 + "]" * 10_000 + "}")
    with pytest.raises(ValueError, match="nested more than"):
        TrainConfig.from_json(deep)
    with pytest.raises(ValueError, match="nested more than"):
        RLConfig.load(deep)
