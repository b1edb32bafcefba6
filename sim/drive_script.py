"""Scripted inputs for ``python -m sim.drive`` (tests, demos): ``FRAME ACTION [KEY]``.

A :class:`ScriptPlayer` posts each :class:`ScriptEvent` as a real pygame event at the
start of its frame, so scripted keys take the same path as a person's.

pygame is imported inside the functions that need it, never at the top: importing it
prints its banner and loads SDL, and ``import sim.drive`` (``--help``, the tests) must
stay quiet and headless, leaving callers free to set ``SDL_VIDEODRIVER`` first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["SCRIPT_ACTIONS", "ScriptEvent", "ScriptPlayer", "parse_script"]

SCRIPT_ACTIONS = ("down", "up", "press", "quit")


@dataclass(frozen=True)
class ScriptEvent:
    """A synthetic input posted at the start of frame ``frame`` (tests, demos)."""

    frame: int
    action: str  # "down", "up", "press" (down then up in the same frame) or "quit"
    key: str = ""  # a pygame key name: "left", "w", "r", "backspace", "escape", "f1" ...

    def __post_init__(self) -> None:
        if self.frame < 0:
            raise ValueError(f"script frame must be >= 0, got {self.frame}")
        if self.action not in SCRIPT_ACTIONS:
            raise ValueError(f"script action must be one of {SCRIPT_ACTIONS}, got {self.action!r}")
        if self.action != "quit" and not self.key:
            raise ValueError(f"script action {self.action!r} needs a key")


def parse_script(text: str) -> list[ScriptEvent]:
    """``FRAME ACTION [KEY]`` per line (``#`` starts a comment), e.g. ``12 down left``."""
    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        try:
            if len(parts) not in (2, 3):
                raise ValueError("expected FRAME ACTION [KEY]")
            out.append(ScriptEvent(int(parts[0]), parts[1], parts[2] if len(parts) > 2 else ""))
        except ValueError as e:
            raise ValueError(f"script line {n} ({raw.strip()!r}): {e}") from None
    return out


class ScriptPlayer:
    """Posts scripted inputs as real pygame events, so they take the normal event path."""

    def __init__(self, events: Iterable[ScriptEvent | tuple]) -> None:
        import pygame  # lazy: see the module docstring

        self._by_frame: dict[int, list[ScriptEvent]] = {}
        for e in events:
            ev = e if isinstance(e, ScriptEvent) else ScriptEvent(*e)
            if ev.key:
                try:
                    pygame.key.key_code(ev.key)
                except ValueError:
                    raise ValueError(f"script: unknown key name {ev.key!r}") from None
            self._by_frame.setdefault(ev.frame, []).append(ev)

    def post(self, frame: int) -> None:
        import pygame  # lazy: see the module docstring

        for ev in self._by_frame.get(frame, ()):
            if ev.action == "quit":
                pygame.event.post(pygame.event.Event(pygame.QUIT))
                continue
            key = pygame.key.key_code(ev.key)
            types = {
                "down": (pygame.KEYDOWN,),
                "up": (pygame.KEYUP,),
                "press": (pygame.KEYDOWN, pygame.KEYUP),
            }[ev.action]
            for t in types:
                pygame.event.post(pygame.event.Event(t, key=key, mod=0, scancode=0, unicode=""))
