"""``python -m sim.drive``: drive the car yourself (pygame), record laps, hand over to the autopilot.

    python -m sim.drive --track kidney --direction cw --out data/manual

The window shows the car's camera (what a learned pilot sees, scaled up), a
top-down map with the car, and a HUD. Keys (also on the help overlay, H / F1):

    arrows / WASD   steer, throttle (W / UP), brake and reverse (S / DOWN)
    R               start / stop recording
    P               autopilot on / off (the expert; steer or throttle to take over)
    Backspace       reset to the start line
    C               switch direction (ccw <-> cw)
    T               next built-in track
    H, F1           help overlay
    Esc, Q          quit (also the window's close button)

The autopilot is the privileged expert (``agents.expert``). WASD steering wins
over the brief's "A = autopilot, D = direction", hence P and C.

Takeover: while the autopilot is on, any human input (a driving key held, the
gamepad outside its deadzone) overrides it for that frame: the frame is marked
``takeover=1`` and its labels are the human's command. A partial override
keeps the autopilot's value for the control the person leaves alone (steering
only: the autopilot's throttle, as with lane-keeping assists, so a quick
correction does not brake the car; throttle only: the autopilot's steering).
The takeover is bumpless: the human's smoothed command starts from the
autopilot's current one.

Recording: frames are kept in memory and written as one episode (through
``sim.dataset.DatasetWriter``: temp file, fsync, rename, manifest) when
recording is stopped, on reset, on a track or direction change, when the car
leaves the road, and on quit, including a quit by an exception (``finally``).
The frame fields and the dataset info are those of ``python -m sim.record``,
so manual and expert episodes can share one dataset directory. An episode's
``source`` is ``"expert"`` (autopilot only), ``"human"`` (no autopilot) or
``"takeover"`` (both); ``meta.extra["segments"]`` lists who drove which frames
(``expert``, ``human``, ``takeover``), ``extra["ended"]`` why it ended (the key,
``reset``, ``quit``...) and ``ended`` the ending that is (``user_stop``,
``off_track``, ``flipped``, ``split``, ...; ``sim.dataset.DRIVE_ENDINGS``).
A recording longer than ``max_episode_frames`` (5 minutes) is split
(``ended = "split"``) to bound memory. If a write fails, the frames are kept
and written again when the session ends.

Off track: leaving the road (or flipping) ends the episode. Its frames are
saved, flagged ``ended = "off_track"`` (or ``"flipped"``), because a
person's approach to the edge and the attempts to recover are useful data;
``python -m sim.dataset filter --trim-offtrack-s 2`` drops the last seconds
before such an ending, ``--drop-episodes`` whole episodes. The car is
then reset to the start line and "OFF TRACK" is shown for a moment; recording
stays on (the next frames form a new episode).

Time: each displayed frame advances the simulation by one control step
(50 ms at 20 Hz), so ``--fps 20`` is real time, lower is slow motion, and
``--fps 0`` runs unthrottled (tests). Without a display (no ``DISPLAY`` or
``WAYLAND_DISPLAY``, or one SDL cannot open) it says so in one line and exits with
status 2 instead of driving an invisible window (:class:`NoDisplayError`); it runs
headless only when asked to, with ``SDL_VIDEODRIVER=dummy`` (or ``offscreen``), and
``--script FILE`` feeds it scripted key events.

An app on top of ``agents``: the person and the expert are one pilot (the
``Copilot``) that drives the env through ``agents.loop.ClosedLoop``, like every
other pilot. This module is the command line (flags derived from ``DriveConfig``
and ``GamepadConfig`` by ``tracks.cliargs``) and :func:`run`, the window's loop;
the rest is ``sim.drive_session`` (config, copilot, session), ``sim.drive_display``
(drawing), ``sim.drive_record`` (episodes) and ``sim.drive_script`` (scripted
inputs), whose names are all importable from here too.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from agents.human import GamepadConfig, HumanConfig
from sim.drive_display import HELP_LINES, Display, TrackMap
from sim.drive_record import DRIVERS, EpisodeRecorder
from sim.drive_script import SCRIPT_ACTIONS, ScriptEvent, ScriptPlayer, parse_script
from sim.drive_session import OFF_TRACK_BANNER_FRAMES, Copilot, DriveConfig, DriveSession
from sim.record import RecordConfig, dataset_info_cached
from tracks import load_track
from tracks.cli import run_main
from tracks.cliargs import add_config_args, config_from_args

# What sim.drive offers: its own CLI and run(), and (re-exported) the modules' names.
__all__ = [
    "DRIVERS",
    "HELP_LINES",
    "OFF_TRACK_BANNER_FRAMES",
    "SCRIPT_ACTIONS",
    "Copilot",
    "Display",
    "DriveConfig",
    "DriveSession",
    "EpisodeRecorder",
    "NoDisplayError",
    "ScriptEvent",
    "ScriptPlayer",
    "TrackMap",
    "build_parser",
    "config_from_cli",
    "main",
    "parse_script",
    "run",
]

logger = logging.getLogger(__name__)

#: SDL's drivers that draw nowhere: fine when asked for (tests, scripts), not as a fallback.
HEADLESS_DRIVERS = ("dummy", "offscreen")


class NoDisplayError(RuntimeError):
    """The driving window cannot be shown: no display, or SDL fell back to drawing nowhere."""


def _no_display(detail: str) -> NoDisplayError:
    return NoDisplayError(
        f"no display to open the driving window on ({detail}); run it in a desktop session, "
        "or set SDL_VIDEODRIVER=dummy to drive headless (scripts, tests)"
    )


def check_display_env(environ: Any = None) -> None:
    """Before SDL is touched (it would print its probing errors): on X11/Wayland systems a
    window needs ``DISPLAY`` or ``WAYLAND_DISPLAY`` unless a video driver was chosen."""
    env = os.environ if environ is None else environ
    if env.get("SDL_VIDEODRIVER"):
        return  # chosen by the user: a real display, or headless on purpose
    if sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd")) and not (
        env.get("DISPLAY") or env.get("WAYLAND_DISPLAY")
    ):
        raise _no_display("neither DISPLAY nor WAYLAND_DISPLAY is set")


def check_display_driver(pygame: Any, environ: Any = None) -> None:
    """After ``pygame.display.init()``: SDL found no usable display when it fell back to a
    driver that draws nowhere that the user did not ask for."""
    env = os.environ if environ is None else environ
    driver = pygame.display.get_driver()
    if driver in HEADLESS_DRIVERS and not env.get("SDL_VIDEODRIVER"):
        where = env.get("DISPLAY") or env.get("WAYLAND_DISPLAY") or "the default display"
        raise _no_display(f"SDL could not open {where} and fell back to {driver!r}")


def run(cfg: DriveConfig, script: Iterable[ScriptEvent | tuple] | None = None) -> dict[str, Any]:
    """Open the window and drive until quit; returns a summary. Writes what was recorded.

    :class:`NoDisplayError` when there is no display to show the window on."""
    check_display_env()
    import pygame  # lazy: importing it prints a banner and loads SDL (see sim.drive_display)

    # only what is used: pygame.init() would also open audio, which fails noisily without a card
    try:
        pygame.display.init()
        check_display_driver(pygame)
    except pygame.error as exc:
        pygame.quit()
        raise _no_display(f"SDL: {exc}") from None
    except NoDisplayError:
        pygame.quit()
        raise

    try:
        info = dataset_info_cached(RecordConfig(image_size=cfg.image_size))
        recorder = EpisodeRecorder(cfg.out, info, cfg)
        if (Path(cfg.out) / "manifest.json").exists():
            recorder.writer()  # refuse an incompatible dataset now, not after a lap of driving
    except BaseException:
        pygame.quit()
        raise

    pygame.font.init()
    pygame.joystick.init()
    session = None
    ended = "error"
    frames = 0
    try:
        session = DriveSession(cfg, recorder)
        session.display = Display(cfg.image_size, cfg.scale)
        player = ScriptPlayer(script or ())
        if pygame.joystick.get_count() > 0:
            session.human.attach_joystick(pygame.joystick.Joystick(0))
        session.reset()
        clock = pygame.time.Clock()
        running = True
        while running:
            player.post(frames)
            for event in pygame.event.get():
                if not session.handle(event):
                    running = False
            if not running:
                ended = "quit"
                break
            session.frame()
            frames += 1
            session.display.draw(session.obs, session.hud(), session.help_on, session.banner)
            if cfg.fps > 0:
                clock.tick(cfg.fps)
            if cfg.max_frames is not None and frames >= cfg.max_frames:
                ended = "max_frames"
                break
    except BaseException as exc:
        ended = "interrupted" if isinstance(exc, KeyboardInterrupt) else "error"
        raise
    finally:
        # Never lose recorded frames: whatever ended the loop, write them. If the write itself
        # fails while an exception is already propagating, log it and let the first one through.
        try:
            if session is not None:
                session.end_episode(ended)
        except Exception:
            if ended not in ("error", "interrupted"):
                raise
            logger.exception("could not write the recorded frames")
        finally:
            if session is not None:
                session.close()
            pygame.quit()
    return {
        "out": str(cfg.out),
        "frames": frames,
        "episodes_written": recorder.episodes_written,
        "frames_written": recorder.frames_written,
    }


# ------------------------------------------------------------------------------------ CLI

#: Gamepad settings on the command line, under their historical names.
GAMEPAD_FLAGS = {"throttle_mode": "--joy-throttle", "deadzone": "--deadzone"}
_AXES = ("steer_axis", "throttle_axis", "brake_axis")  # --joy-axes sets all three


def _axes(text: str) -> tuple[int, int, int | None]:
    try:
        parts = [int(v) for v in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) not in (2, 3):
        raise argparse.ArgumentTypeError(
            f"expected STEER,THROTTLE[,BRAKE] axis numbers such as 0,5,2, got {text!r}"
        )
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def build_parser() -> argparse.ArgumentParser:
    """Flags from :class:`DriveConfig` and the gamepad part of ``HumanConfig``."""
    ap = argparse.ArgumentParser(
        prog="python -m sim.drive",
        description="Drive the car with the keyboard or a gamepad; record laps; "
        "hand over to the autopilot (P) and take over at any moment.",
    )
    add_config_args(ap, DriveConfig, exclude=("human",))
    pad = ap.add_argument_group("gamepad")
    defaults = GamepadConfig()
    axes = [getattr(defaults, name) for name in _AXES]
    pad.add_argument(
        "--joy-axes",
        type=_axes,
        default=argparse.SUPPRESS,
        metavar="STEER,THROTTLE[,BRAKE]",
        help="gamepad axis numbers (default: "
        f"{','.join(str(a) for a in axes if a is not None)}: left stick x, right trigger)",
    )
    add_config_args(
        pad,
        GamepadConfig,
        only=GAMEPAD_FLAGS,
        flags=GAMEPAD_FLAGS,
        help={
            "throttle_mode": "the throttle axis: trigger (rests at -1) or stick (up = forward)",
            "deadzone": "gamepad deadzone: |axis| below it reads 0",
        },
    )
    ap.add_argument(
        "--script",
        type=Path,
        default=None,
        metavar="FILE",
        help="scripted inputs: FRAME ACTION [KEY] per line (default: none: keyboard and gamepad)",
    )
    return ap


def config_from_cli(args: argparse.Namespace) -> DriveConfig:
    """The :class:`DriveConfig` of parsed flags (``ValueError`` if invalid)."""
    axes = dict(zip(_AXES, args.joy_axes, strict=True)) if "joy_axes" in args else {}
    gamepad = config_from_args(GamepadConfig, args, **axes)
    return config_from_args(DriveConfig, args, human=HumanConfig(gamepad=gamepad))


def main(
    argv: Sequence[str] | None = None, script: Iterable[ScriptEvent | tuple] | None = None
) -> int:
    """Run the driving UI. ``script`` (tests): inputs posted as pygame events, see ScriptEvent."""
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_cli(args)
        events: list[ScriptEvent | tuple] = list(script or ())
        if args.script is not None:
            events += parse_script(args.script.read_text(encoding="utf-8"))
        if not cfg.track.startswith("gen:"):
            load_track(cfg.track)  # fail fast on a bad name or file
        t0 = time.perf_counter()
        summary = run(cfg, events)
    except (ValueError, OSError, NoDisplayError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    wall = time.perf_counter() - t0
    print(
        f"wrote {summary['episodes_written']} episodes ({summary['frames_written']} frames) "
        f"to {os.path.abspath(summary['out'])}; drove {summary['frames']} frames in {wall:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main, note="what was recorded is written to --out"))
