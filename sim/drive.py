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
(``expert``, ``human``, ``takeover``) and ``extra["ended"]`` why it ended.
A recording longer than ``max_episode_frames`` (5 minutes) is split
(``ended = "split"``) to bound memory. If a write fails, the frames are kept
and written again when the session ends.

Off track: leaving the road (or flipping) ends the episode. Its frames are
saved, flagged ``extra["ended"] = "off_track"`` (or ``"flipped"``), because a
person's approach to the edge and the attempts to recover are useful data; a
consumer that wants clean laps only can drop them by that flag. The car is
then reset to the start line and "OFF TRACK" is shown for a moment; recording
stays on (the next frames form a new episode).

Time: each displayed frame advances the simulation by one control step
(50 ms at 20 Hz), so ``--fps 20`` is real time, lower is slow motion, and
``--fps 0`` runs unthrottled (tests). Works headless with
``SDL_VIDEODRIVER=dummy``; ``--script FILE`` feeds it scripted key events.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from agents.human import GamepadConfig, HumanConfig
from sim.drive_display import HELP_LINES, Display, TrackMap
from sim.drive_record import DRIVERS, EpisodeRecorder
from sim.drive_script import SCRIPT_ACTIONS, ScriptEvent, ScriptPlayer, parse_script
from sim.drive_session import OFF_TRACK_BANNER_FRAMES, DriveConfig, DriveSession
from sim.record import RecordConfig, dataset_info_cached
from tracks import load_track

# The names sim.drive has always offered, now defined in the modules above.
__all__ = [
    "DRIVERS",
    "HELP_LINES",
    "OFF_TRACK_BANNER_FRAMES",
    "SCRIPT_ACTIONS",
    "Display",
    "DriveConfig",
    "DriveSession",
    "EpisodeRecorder",
    "ScriptEvent",
    "ScriptPlayer",
    "TrackMap",
    "build_parser",
    "main",
    "parse_script",
    "run",
]

logger = logging.getLogger(__name__)


def run(cfg: DriveConfig, script: Iterable[ScriptEvent | tuple] | None = None) -> dict[str, Any]:
    """Open the window and drive until quit; returns a summary. Writes what was recorded."""
    import pygame  # lazy: importing it prints a banner and loads SDL (see sim.drive_display)

    info = dataset_info_cached(RecordConfig(image_size=cfg.image_size))
    recorder = EpisodeRecorder(cfg.out, info, cfg)
    if (Path(cfg.out) / "manifest.json").exists():
        recorder.writer()  # refuse an incompatible dataset now, not after a lap of driving

    # only what is used: pygame.init() would also open audio, which fails noisily without a card
    pygame.display.init()
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


def _size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)x(\d+)", text.strip().lower())
    if not m:
        raise argparse.ArgumentTypeError(f"expected HxW such as 120x160, got {text!r}")
    return int(m.group(1)), int(m.group(2))


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
    ap = argparse.ArgumentParser(
        prog="python -m sim.drive",
        description="Drive the car with the keyboard or a gamepad; record laps; "
        "hand over to the autopilot (P) and take over at any moment.",
    )
    ap.add_argument("--track", default="oval", help="built-in name, gen:<seed> or a track file")
    ap.add_argument("--direction", choices=("ccw", "cw"), default="ccw")
    ap.add_argument("--image-size", type=_size, default=(120, 160), help="camera HxW")
    ap.add_argument("--out", default="data/manual", help="dataset directory (created or appended)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--speed", type=float, default=2.0, help="autopilot cruise speed, m/s")
    ap.add_argument(
        "--fps",
        type=float,
        default=20.0,
        help="frames per second; one 50 ms step per frame, so 20 = real time, 0 = unthrottled",
    )
    ap.add_argument("--max-frames", type=int, default=None, help="quit after N frames")
    ap.add_argument("--scale", type=int, default=4, help="camera view magnification")
    ap.add_argument("--record", action="store_true", help="start with recording on")
    ap.add_argument("--autopilot", action="store_true", help="start with the autopilot on")
    ap.add_argument(
        "--joy-axes",
        type=_axes,
        default=(0, 5, None),
        help="gamepad axes STEER,THROTTLE[,BRAKE] (default 0,5: left stick x, right trigger)",
    )
    ap.add_argument(
        "--joy-throttle",
        choices=("trigger", "stick"),
        default="trigger",
        help="throttle axis is a trigger (rests at -1) or a stick (up = forward)",
    )
    ap.add_argument("--deadzone", type=float, default=0.08, help="gamepad deadzone")
    ap.add_argument("--script", type=Path, default=None, help="scripted inputs: FRAME ACTION [KEY]")
    return ap


def main(
    argv: Sequence[str] | None = None, script: Iterable[ScriptEvent | tuple] | None = None
) -> int:
    """Run the driving UI. ``script`` (tests): inputs posted as pygame events, see ScriptEvent."""
    args = build_parser().parse_args(argv)
    try:
        steer_axis, throttle_axis, brake_axis = args.joy_axes
        cfg = DriveConfig(
            track=args.track,
            direction=args.direction,
            image_size=args.image_size,
            out=args.out,
            seed=args.seed,
            speed=args.speed,
            fps=args.fps,
            max_frames=args.max_frames,
            scale=args.scale,
            record=args.record,
            autopilot=args.autopilot,
            human=HumanConfig(
                gamepad=GamepadConfig(
                    steer_axis=steer_axis,
                    throttle_axis=throttle_axis,
                    brake_axis=brake_axis,
                    throttle_mode=args.joy_throttle,
                    deadzone=args.deadzone,
                )
            ),
        )
        events: list[ScriptEvent | tuple] = list(script or ())
        if args.script is not None:
            events += parse_script(args.script.read_text(encoding="utf-8"))
        if not cfg.track.startswith("gen:"):
            load_track(cfg.track)  # fail fast on a bad name or file
        t0 = time.perf_counter()
        summary = run(cfg, events)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    wall = time.perf_counter() - t0
    print(
        f"wrote {summary['episodes_written']} episodes ({summary['frames_written']} frames) "
        f"to {os.path.abspath(summary['out'])}; drove {summary['frames']} frames in {wall:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
