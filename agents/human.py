"""A person driving: keyboard (arrows / WASD) or a gamepad, as a ``Pilot``.

Input state is fed from pygame events (:meth:`HumanPilot.handle_event`), so a
test can drive it with synthetic events; :meth:`HumanPilot.act` then advances
the smoothing by one control period and returns ``[steering, throttle]``.
The logic itself (:func:`slew`, :class:`KeyboardState`, :func:`gamepad_command`)
does not touch pygame and is unit-tested on its own.

Keyboard commands are rate limited rather than bang-bang: holding a steering key
ramps the steering towards full lock at ``steer_rate`` per second, and releasing
it (or pressing the other way) brings it back towards centre at the faster
``steer_return_rate``. Time is simulated time (``dt`` per ``act`` call), so the
feel is the same at any display rate and runs are reproducible.

A gamepad is analog and is used as is (after a deadzone): left stick x steers,
the right trigger (or a stick axis) drives, an optional second axis brakes.
Axis numbers differ between drivers (Linux xpad: RT 5, LT 2; Windows XInput:
RT 5, LT 4), hence :class:`GamepadConfig`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from agents.base import PilotNeeds, as_action

#: Keyboard controls tracked by :class:`KeyboardState`.
CONTROLS = ("left", "right", "up", "down")
#: pygame key constants (attribute names of ``pygame``) for each control.
KEY_NAMES: dict[str, tuple[str, ...]] = {
    "left": ("K_LEFT", "K_a"),
    "right": ("K_RIGHT", "K_d"),
    "up": ("K_UP", "K_w"),
    "down": ("K_DOWN", "K_s"),
}


THROTTLE_MODES = ("trigger", "stick")


@dataclass(frozen=True)
class GamepadConfig:
    """How a pygame joystick's axes map onto steering and throttle."""

    steer_axis: int = 0  # left stick x; right (+) on the stick is right (-) steering
    throttle_axis: int = 5  # right trigger on Xbox-style pads (Linux and Windows)
    brake_axis: int | None = None  # e.g. 2 (Linux LT) or 4 (Windows LT); None: no brake
    # "trigger": axis rests at -1 and reads +1 fully pressed; "stick": push up (-1) = forward,
    # pull back (+1) = brake / reverse.
    throttle_mode: str = field(default="trigger", metadata={"choices": THROTTLE_MODES})
    deadzone: float = 0.08  # |axis| below this reads 0 (rest noise); the rest is rescaled
    max_throttle: float = 0.7  # throttle at full trigger (1.0 = 5 m/s target wheel speed)
    invert_steer: bool = False  # for wheels / sticks whose x axis is mirrored

    def __post_init__(self) -> None:
        for name in ("steer_axis", "throttle_axis"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.brake_axis is not None and self.brake_axis < 0:
            raise ValueError(f"brake_axis must be >= 0 or None, got {self.brake_axis}")
        if self.throttle_mode not in THROTTLE_MODES:
            raise ValueError(
                f"throttle_mode must be 'trigger' or 'stick', got {self.throttle_mode!r}"
            )
        if not 0.0 <= self.deadzone < 1.0:
            raise ValueError(f"deadzone must be in [0, 1), got {self.deadzone}")
        if not 0.0 < self.max_throttle <= 1.0:
            raise ValueError(f"max_throttle must be in (0, 1], got {self.max_throttle}")


@dataclass(frozen=True)
class HumanConfig:
    """Keyboard feel and gamepad mapping of :class:`HumanPilot`."""

    dt: float = 0.05  # s of simulated time per act() call (the env's control period)
    steer_rate: float = 3.0  # 1/s: centre to full lock in 1/3 s (7 frames at 20 Hz)
    steer_return_rate: float = 5.0  # 1/s: full lock back to centre in 0.2 s (4 frames)
    key_throttle: float = 0.45  # throttle while UP/W is held (2.25 m/s target wheel speed)
    key_brake: float = 0.3  # reverse throttle while DOWN/S is held
    throttle_rate: float = 2.0  # 1/s, throttle ramp up
    throttle_return_rate: float = 4.0  # 1/s, throttle ramp down (lift off, brake)
    gamepad: GamepadConfig = field(default_factory=GamepadConfig)

    def __post_init__(self) -> None:
        if not (self.dt > 0 and math.isfinite(self.dt)):
            raise ValueError(f"dt must be > 0, got {self.dt}")
        for name in ("steer_rate", "steer_return_rate", "throttle_rate", "throttle_return_rate"):
            v = getattr(self, name)
            if not (v > 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be > 0 per second, got {v}")
        for name in ("key_throttle", "key_brake"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


def slew(current: float, target: float, dt: float, rise: float, fall: float) -> float:
    """Move ``current`` towards ``target`` by at most ``rate * dt``.

    ``fall`` applies while the value heads back towards zero (release, or the
    opposite direction until the sign flips), ``rise`` while it grows away from
    zero: steering returns to centre faster than it winds on.
    """
    delta = target - current
    if delta == 0.0:
        return current
    toward_zero = abs(target) < abs(current) or target * current < 0
    step = (fall if toward_zero else rise) * dt
    out = current + max(-step, min(step, delta))
    if current != 0.0 and out * current < 0 and toward_zero:
        return 0.0  # land on centre; the next step winds on at the rise rate
    return out


class KeyboardState:
    """Which driving controls are held down."""

    def __init__(self) -> None:
        self.held: set[str] = set()

    def press(self, control: str) -> None:
        if control not in CONTROLS:
            raise ValueError(f"unknown control {control!r}; expected one of {CONTROLS}")
        self.held.add(control)

    def release(self, control: str) -> None:
        self.held.discard(control)

    def clear(self) -> None:
        self.held.clear()

    @property
    def steering_active(self) -> bool:
        return bool(self.held & {"left", "right"})

    @property
    def throttle_active(self) -> bool:
        return bool(self.held & {"up", "down"})

    def targets(self, key_throttle: float, key_brake: float) -> tuple[float, float]:
        """(steering, throttle) the held keys ask for; opposite keys cancel."""
        steer = float("left" in self.held) - float("right" in self.held)
        if "up" in self.held and "down" not in self.held:
            throttle = key_throttle
        elif "down" in self.held and "up" not in self.held:
            throttle = -key_brake
        else:
            throttle = 0.0
        return steer, throttle


class Joystick(Protocol):
    """The part of ``pygame.joystick.JoystickType`` that :class:`HumanPilot` uses."""

    def get_numaxes(self) -> int: ...

    def get_axis(self, axis: int) -> float: ...


def _deadzone(v: float, dz: float) -> float:
    """0 inside the deadzone; outside it, rescaled so the output still spans [-1, 1]."""
    if not math.isfinite(v) or abs(v) <= dz:
        return 0.0
    return math.copysign(min((abs(v) - dz) / (1.0 - dz), 1.0), v)


@dataclass
class GamepadCommand:
    """One reading of the gamepad: commands plus which parts are being used."""

    steering: float
    throttle: float
    steering_active: bool
    throttle_active: bool


def gamepad_command(
    read_axis: Callable[[int], float],
    num_axes: int,
    cfg: GamepadConfig,
    armed: set[int] | None = None,
) -> GamepadCommand:
    """Map raw axes to ``[steering, throttle]`` (pure; ``read_axis(i)`` gives axis i).

    Triggers are only trusted once ``armed``: some drivers report 0 (half
    pressed) for a trigger until it first moves, which would otherwise start
    the car and count as a permanent takeover. A trigger axis joins ``armed``
    (updated in place) the first time it reads its rest value (<= -0.9).
    Pass ``armed=None`` to trust every axis.
    """

    def axis(i: int | None) -> float:
        if i is None or i >= num_axes:
            return 0.0
        v = float(read_axis(i))
        return v if math.isfinite(v) else 0.0

    def trigger(i: int | None) -> float:
        if i is None or i >= num_axes:
            return 0.0
        v = axis(i)
        if armed is not None:
            if v <= -0.9:
                armed.add(i)
            if i not in armed:
                return 0.0
        return _deadzone(max(0.0, (v + 1.0) / 2.0), cfg.deadzone)

    steer = -_deadzone(axis(cfg.steer_axis), cfg.deadzone)
    if cfg.invert_steer:
        steer = -steer
    if cfg.throttle_mode == "trigger":
        throttle = trigger(cfg.throttle_axis) - trigger(cfg.brake_axis)
    else:
        throttle = -_deadzone(axis(cfg.throttle_axis), cfg.deadzone)
        throttle -= _deadzone(axis(cfg.brake_axis), cfg.deadzone) if cfg.brake_axis else 0.0
    throttle = max(-1.0, min(1.0, throttle)) * cfg.max_throttle
    return GamepadCommand(steer, throttle, steer != 0.0, throttle != 0.0)


class HumanPilot:
    """Keyboard / gamepad driving; implements ``agents.base.Pilot``.

    Call :meth:`handle_event` with every pygame event, then :meth:`act` once per
    control step. :attr:`active` says whether the person is giving any input
    this step (a key held, or the gamepad outside its deadzone): ``sim.drive``
    uses it to detect a takeover while the autopilot drives, and :meth:`sync`
    to make that takeover bumpless (the smoothed command starts from what the
    car is currently doing, not from zero).
    """

    needs = PilotNeeds(obs_mode="image", throttle=True)

    def __init__(self, config: HumanConfig | None = None) -> None:
        self.config = config or HumanConfig()
        self.name = "human"
        self.keys = KeyboardState()
        self.joystick: Joystick | None = None
        self._joystick_id: int | None = None
        self._armed: set[int] = set()
        self._key_codes: dict[int, str] | None = None
        self.steering = 0.0
        self.throttle = 0.0
        self.steering_active = False
        self.throttle_active = False

    # ------------------------------------------------------------------ input
    def attach_joystick(self, joystick: Joystick | None) -> None:
        """Use ``joystick`` (any object with ``get_numaxes``/``get_axis``), or none."""
        self.joystick = joystick
        self._armed = set()
        get_id = getattr(joystick, "get_instance_id", None)
        self._joystick_id = get_id() if callable(get_id) else None

    def _codes(self) -> dict[int, str]:
        if self._key_codes is None:
            import pygame

            self._key_codes = {
                getattr(pygame, name): control
                for control, names in KEY_NAMES.items()
                for name in names
            }
        return self._key_codes

    def handle_event(self, event: Any) -> bool:
        """Update the input state from one pygame event; True if it was a driving input."""
        import pygame

        if event.type in (pygame.KEYDOWN, pygame.KEYUP):
            control = self._codes().get(event.key)
            if control is None:
                return False
            if event.type == pygame.KEYDOWN:
                self.keys.press(control)
            else:
                self.keys.release(control)
            return True
        if event.type == pygame.WINDOWFOCUSLOST:
            self.keys.clear()  # the KEYUPs will go to another window: never leave a key stuck
            return False
        if event.type == pygame.JOYDEVICEADDED and self.joystick is None:
            self.attach_joystick(pygame.joystick.Joystick(event.device_index))
            return False
        if event.type == pygame.JOYDEVICEREMOVED and self.joystick is not None:
            if self._joystick_id is None or event.instance_id == self._joystick_id:
                self.attach_joystick(None)
            return False
        return False

    @property
    def joystick_name(self) -> str | None:
        if self.joystick is None:
            return None
        get_name = getattr(self.joystick, "get_name", None)
        return str(get_name()) if callable(get_name) else "gamepad"

    # ------------------------------------------------------------------ pilot
    @property
    def active(self) -> bool:
        """True while the person gives any steering or throttle input."""
        return self.steering_active or self.throttle_active

    def reset(self) -> None:
        self.steering = 0.0
        self.throttle = 0.0
        self.steering_active = False
        self.throttle_active = False

    def sync(self, action: np.ndarray | tuple[float, float]) -> None:
        """Start the smoothing from ``action`` (the command the car is executing)."""
        self.steering = float(np.clip(action[0], -1.0, 1.0))
        self.throttle = float(np.clip(action[1], -1.0, 1.0))

    def act(self, observation: Any = None, info: dict[str, Any] | None = None) -> np.ndarray:
        cfg = self.config
        pad = None
        if self.joystick is not None:
            try:
                pad = gamepad_command(
                    self.joystick.get_axis,
                    self.joystick.get_numaxes(),
                    cfg.gamepad,
                    self._armed,
                )
            except RuntimeError:  # pygame.error: the device went away between events
                self.attach_joystick(None)
        k_steer, k_throttle = self.keys.targets(cfg.key_throttle, cfg.key_brake)
        if self.keys.steering_active or pad is None or not pad.steering_active:
            self.steering = slew(
                self.steering, k_steer, cfg.dt, cfg.steer_rate, cfg.steer_return_rate
            )
        else:
            self.steering = pad.steering  # analog: no smoothing needed
        if self.keys.throttle_active or pad is None or not pad.throttle_active:
            self.throttle = slew(
                self.throttle, k_throttle, cfg.dt, cfg.throttle_rate, cfg.throttle_return_rate
            )
        else:
            self.throttle = pad.throttle
        self.steering_active = self.keys.steering_active or bool(pad and pad.steering_active)
        self.throttle_active = self.keys.throttle_active or bool(pad and pad.throttle_active)
        return as_action(self.steering, self.throttle)

    def metadata(self) -> dict[str, Any]:
        return {
            "kind": "human",
            "name": self.name,
            "gamepad_name": self.joystick_name,
            **asdict(self.config),
        }
