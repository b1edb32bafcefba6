"""What every ``python -m training.*`` command line shares (standard library only).

- :class:`Parser`: an ``ArgumentParser`` whose usage errors are one ``error:`` line, exit 2;
- :func:`fail`: report a bad input the same way (one ``error:`` line on stderr) and return 2;
- :func:`add_alias`: a second flag name for an option derived from a config field
  (``--lr`` for ``--learning-rate``), so the names the README and old scripts use keep working;
- :func:`setup_logging`: INFO messages on stderr, unless the caller configured logging.

The flags themselves come from the config dataclasses (:mod:`tracks.cliargs`).
"""

from __future__ import annotations

import argparse
import logging
import sys

__all__ = ["Parser", "add_alias", "fail", "setup_logging"]


class Parser(argparse.ArgumentParser):
    """Usage errors as one clear line (``error: ...``) and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message}\n")


def fail(message: object) -> int:
    """Print ``error: MESSAGE`` on stderr; returns 2, the exit status of bad input."""
    print(f"error: {message}", file=sys.stderr)
    return 2


def add_alias(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, alias: str, flag: str
) -> None:
    """Accept ``alias`` wherever ``flag`` (an option already added) is accepted.

    The alias parses into the same destination with the same conversion and choices, and
    like the flags of :func:`tracks.cliargs.add_config_args` counts only when typed.
    """
    action = parser._option_string_actions[flag]
    same = {k: getattr(action, k) for k in ("dest", "type", "choices", "metavar")}
    parser.add_argument(alias, default=argparse.SUPPRESS, help=f"the same as {flag}", **same)


def setup_logging() -> None:
    """INFO messages, bare, on stderr (left alone when logging is already configured)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
