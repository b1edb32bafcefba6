"""``TrackEnv``: the 1:10 race car on a track, as a Gymnasium environment."""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, replace
from typing import Any

import gymnasium as gym
import numpy as np
import pybullet as p
from gymnasium import spaces
from pybullet_utils import bullet_client

from sim.car import CarParams, RaceCar
from sim.plane import GROUND, SKY, palette, plane_image
from sim.world import CameraSpec, Colors, View, World, camera_view, ground_mask, make_view
from tracks import Track, generate_track, load_track
from tracks.common import DIRECTIONS, parse_size
from tracks.limits import car_min_half_width, car_min_radius
from tracks.validate import require_drivable

ENV_ID = "trackpilot/TrackDrive-v0"
ENV_VERSION = 0

OBS_MODES = ("image", "image+state", "state")
RENDER_VIEWS = ("chase", "topdown", "camera")
CAMERA_RENDERERS = ("plane", "tiny")
STATE_FIELDS = (
    "speed/3",
    "lateral/half_width",
    "heading_error",
    "curvature@0.5m",
    "curvature@1.0m",
    "curvature@2.0m",
    "steering",
)
_LOOKAHEAD = (0.5, 1.0, 2.0)
# Bounds of the state vector (values are clipped into them): speed / 3 m/s,
# lateral / half width (the episode ends near +-1.3), heading error, curvature
# (1/m; tracks keep radii above 1 m), steering.
_STATE_BOUND = np.array([2.0, 5.0, math.pi, 2.0, 2.0, 2.0, 1.0], dtype=np.float32)


@dataclass(frozen=True)
class RewardWeights:
    """Reward = progress - penalties (all terms reported in ``info["reward_terms"]``)."""

    progress: float = 1.0  # per metre driven forward along the centreline
    lateral: float = 1.0  # per second, times (lateral / half width)^2 (0.1 let PPO cut corners)
    steer_change: float = 0.02  # per step, times |steering - previous steering|
    crash: float = 5.0  # once, on leaving the road or flipping


@functools.lru_cache(maxsize=64)
def _generated_track(seed: int) -> Track:
    return generate_track(seed)


_REVERSED: dict[str, Track] = {}


def _reversed_track(track: Track) -> Track:
    """``track.reversed()``, cached by geometry (reversing re-fits the spline)."""
    key = f"{track.geometry_hash}:{track.name}"
    if key not in _REVERSED:
        if len(_REVERSED) > 64:
            _REVERSED.clear()
        _REVERSED[key] = track.reversed()
    return _REVERSED[key]


# The sun straight overhead: shading then does not depend on the car's heading,
# so a camera frame mirrored left-right is what the mirrored road looks like and
# flip augmentation is exact. A slanted light (as domain randomisation draws)
# shades the road differently driving one way and the other, and flipped frames
# become out of distribution (measured: a compact CNN with flip augmentation
# fitted the data 3x worse under light from (1, 1, 2)).
_OVERHEAD_LIGHT = (0.0, 0.0, 1.0)


class _DirectClient(bullet_client.BulletClient):
    """A headless BulletClient. The stock one passes ``options=""`` to
    ``pybullet.connect``, which makes PyBullet print ``argv[0]=`` on stdout
    for every env; connecting without options is silent."""

    def __init__(self) -> None:
        self._shapes = {}
        self._pid = os.getpid()
        self._client = p.connect(p.DIRECT)


class TrackEnv(gym.Env):
    """The pybullet_data 1:10 race car driving on a track.

    ## Description
    ``racecar/racecar.urdf`` on a flat road built from a ``tracks.Track``, driven
    through its Ackermann steering servos and four velocity-controlled wheel
    motors (torque limited) with full rigid-body physics. A forward camera
    mounted like a DonkeyCar's (0.20 m high, pitched 20 degrees down, 100 degree
    horizontal field of view) sees the road, its white edge lines, the yellow
    dashed centre line and the red start/finish line, rendered without a
    display: the flat painted road is ray-cast through each pixel's centre
    against a 5 mm label raster of the road meshes (``sim.plane``: the same
    geometry TinyRenderer draws, ~0.1 ms instead of ~1 ms at 96x96), and anything
    standing on it is drawn by PyBullet's TinyRenderer and composited by depth.
    ``camera_renderer="tiny"`` has TinyRenderer draw the road too. The car does
    not draw itself into its own camera unless ``camera_sees_car=True`` (it
    costs ~2.3 ms a frame). Physics runs at ``physics_hz`` (240) and the pilot
    acts at ``control_hz`` (20).

    ## Action Space
    ``Box(-1, 1, (2,), float32)``: ``[steering, throttle]``. Steering +1 is full
    left (0.40 rad at the virtual centre wheel, Ackermann split, servo slew rate
    8 rad/s). Throttle sets the motors' target wheel speed ``throttle *
    max_speed`` (5 m/s) with a torque limit; negative throttle brakes and
    reverses. With ``fixed_speed=v`` the space is ``Box(-1, 1, (1,))``: steering
    only, while cruise control holds ``v`` m/s. Values outside [-1, 1] are
    clipped; NaN, inf or a wrong shape raise ``ValueError`` and never reach
    PyBullet.

    ## Observation Space
    ``obs_mode="image"`` (default): ``uint8`` RGB ``Box(0, 255, (H, W, 3))`` with
    ``image_size=(H, W)`` (default (120, 160)). ``"image+state"``: a ``Dict``
    with ``"image"`` and ``"state"``. ``"state"``: the 7-vector ``state`` alone
    (no rendering: fast RL). State: speed / 3 m/s, lateral offset / half road
    width on that side (+ left), heading error (rad), centreline curvature
    (1/m, + left) 0.5, 1.0 and 2.0 m ahead, current steering.

    ## Rewards
    Per step: ``progress`` metres driven along the centreline (negative when
    going backwards) minus ``lateral * dt * (lateral / half width)^2`` minus
    ``steer_change * |delta steering|``; minus ``crash`` once on termination by
    leaving the road or flipping. Weights in ``RewardWeights``.

    ## Termination
    ``terminated`` when the car's centre is more than ``offtrack_margin``
    (0.15 m: the wheels of one side are well onto the grass) beyond the road
    edge, when it flips (body up-axis below 45 degrees), or when ``max_laps``
    laps are done. ``truncated`` comes from the registered time limit
    (``max_episode_steps``, 2400 steps = 120 s at 20 Hz).

    Laps are counted from the start position: lap k is complete when the
    forward progress along the centreline reaches k track lengths; lap times
    are the simulated times between completions (interpolated within a step).

    ## Reset options
    ``track``: a built-in name, ``"gen:<seed>"``, a file path, a ``Track``, or
    ``"random"`` (one of ``tracks`` passed to the constructor, or a generated
    track from the env's RNG when that is empty); ``direction``: ``"ccw"``,
    ``"cw"`` or ``"random"``; ``start``: ``"line"`` or ``"random"`` (arc
    length); ``lateral_noise`` (m) and ``heading_noise`` (rad): uniform
    perturbations of the start pose. Every draw comes from ``self.np_random``.

    Every track, from any source, must be drivable for this env's car
    (``tracks.validate.require_drivable``: each half width at least
    ``car.track_width / 2 + 0.15`` m, centreline radius at least the car's turning
    radius ``wheelbase / tan(max_steer)``, no self-crossing, no overlapping edges),
    else the constructor (for a ``Track``) or ``reset`` raises a one-line
    ``ValueError``; ``allow_undrivable=True`` drives it anyway, with a warning
    logged. Each geometry is checked once per process.

    ## Version History
    - v0: first release. (Before release the camera's road plane moved from
      TinyRenderer to ``sim.plane``: same geometry, palette colours; datasets
      name their renderer and refuse to mix them.)
    """

    metadata = {"render_modes": ["rgb_array", "human"], "render_fps": 20}

    def __init__(
        self,
        *,
        track: str | Track = "oval",
        direction: str = "ccw",
        tracks: tuple[str, ...] | list[str] = (),
        image_size: tuple[int, int] = (120, 160),
        obs_mode: str = "image",
        fixed_speed: float | None = None,
        physics_hz: int = 240,
        control_hz: int = 20,
        max_laps: int | None = None,
        offtrack_margin: float = 0.15,
        camera: CameraSpec | None = None,
        camera_sees_car: bool = False,
        camera_renderer: str = "plane",
        domain_randomization: bool = False,
        reward_weights: RewardWeights | None = None,
        render_mode: str | None = None,
        render_view: str = "chase",
        render_size: tuple[int, int] = (240, 320),
        car: CarParams | None = None,
        allow_undrivable: bool = False,
    ) -> None:
        super().__init__()
        if obs_mode not in OBS_MODES:
            raise ValueError(f"obs_mode must be one of {OBS_MODES}, got {obs_mode!r}")
        if direction not in (*DIRECTIONS, "random"):
            raise ValueError(f"direction must be 'ccw', 'cw' or 'random', got {direction!r}")

        def whole(v: Any) -> bool:  # an int or numpy integer, not a bool
            return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))

        def real(v: Any) -> bool:  # an int or float (numpy's too), not a bool
            return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(
                v, (bool, np.bool_)
            )

        # Whole numbers in [16, 1024]: 120.7 is refused, not truncated (tracks.common.parse_size).
        if isinstance(image_size, (tuple, list)):
            image_size = tuple(int(v) if isinstance(v, np.integer) else v for v in image_size)
        h, w = parse_size(image_size, what="image_size")
        if not (16 <= h and 16 <= w):
            raise ValueError(
                f"image_size must be (H, W) with 16..1024 pixels each, got {image_size}"
            )
        for name, value in (("physics_hz", physics_hz), ("control_hz", control_hz)):
            if not whole(value) or value <= 0:
                raise ValueError(f"{name} must be a whole number > 0 (Hz), got {value!r}")
        physics_hz, control_hz = int(physics_hz), int(control_hz)
        if physics_hz % control_hz != 0:
            raise ValueError(
                f"physics_hz ({physics_hz}) must be a multiple of control_hz ({control_hz})"
            )
        if fixed_speed is not None and not (real(fixed_speed) and 0.0 < fixed_speed <= 5.0):
            raise ValueError(f"fixed_speed must be in (0, 5] m/s, got {fixed_speed!r}")
        if max_laps is not None and not (whole(max_laps) and max_laps >= 1):
            raise ValueError(f"max_laps must be None or a whole number >= 1, got {max_laps!r}")
        if not (real(offtrack_margin) and 0.0 <= offtrack_margin < math.inf):
            raise ValueError(
                f"offtrack_margin must be a finite distance >= 0 (m), got {offtrack_margin!r}"
            )
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}")
        if camera_renderer not in CAMERA_RENDERERS:
            raise ValueError(
                f"camera_renderer must be one of {CAMERA_RENDERERS}, got {camera_renderer!r}"
            )
        if render_view not in RENDER_VIEWS:
            raise ValueError(f"render_view must be one of {RENDER_VIEWS}, got {render_view!r}")

        self.default_track = track
        self.default_direction = direction
        self.track_pool = list(tracks)
        self.image_size = (h, w)
        self.obs_mode = obs_mode
        self.fixed_speed = fixed_speed
        self.physics_hz = physics_hz
        self.control_hz = control_hz
        self.substeps = physics_hz // control_hz
        self.dt = 1.0 / control_hz
        self.max_laps = None if max_laps is None else int(max_laps)
        self.offtrack_margin = float(offtrack_margin)
        self.camera = camera or CameraSpec()
        self._camera_base = self.camera
        self.camera_sees_car = camera_sees_car
        self.camera_renderer = camera_renderer
        self._palette_key = None
        self._palette = None
        self.domain_randomization = domain_randomization
        self.reward_weights = reward_weights or RewardWeights()
        self.render_mode = render_mode
        self.render_view = render_view
        self.render_size = render_size
        self.car_params = car or CarParams()
        self.allow_undrivable = bool(allow_undrivable)
        self._checked_track: Track | None = None  # the last track that passed _check_track
        if isinstance(track, Track):
            self._check_track(track)  # refuse an undrivable Track now, not at reset

        if fixed_speed is None:
            self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        else:
            self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        image_space = spaces.Box(0, 255, (h, w, 3), np.uint8)
        state_space = spaces.Box(-_STATE_BOUND, _STATE_BOUND, dtype=np.float32)
        if obs_mode == "image":
            self.observation_space = image_space
        elif obs_mode == "state":
            self.observation_space = state_space
        else:
            self.observation_space = spaces.Dict({"image": image_space, "state": state_space})

        self._client = None
        self._world_key: str | None = None  # geometry hash of the track built in the world
        self._fresh_state = -1  # PyBullet saveState id of that world as built
        self._world: World | None = None
        self._car: RaceCar | None = None
        # The track as given (``base_track``) and as driven (``track``: reversed
        # for a lap in the other orientation); both public, read-only.
        self.base_track: Track | None = None
        self.track: Track | None = None
        self.direction = "ccw"
        self._light = list(_OVERHEAD_LIGHT)
        self._window = None
        self._reset_state()

    # ------------------------------------------------------------------ helpers
    def _reset_state(self) -> None:
        self.t = 0.0
        self.steps = 0
        self.s = 0.0
        self.progress = 0.0
        self.laps = 0
        self.lap_times: list[float] = []
        self._last_lap_t = 0.0
        self._prev_steer = 0.0
        self._proj = None

    def _resolve_track(self, spec: Any) -> Track:
        return self._check_track(self._lookup_track(spec))

    def _lookup_track(self, spec: Any) -> Track:
        if isinstance(spec, Track):
            return spec
        if spec == "random":
            if self.track_pool:
                spec = self.track_pool[int(self.np_random.integers(len(self.track_pool)))]
            else:
                return _generated_track(int(self.np_random.integers(2**31 - 1)))
        if isinstance(spec, str) and spec.startswith("gen:"):
            return _generated_track(int(spec[4:]))
        return load_track(spec, allow_undrivable=self.allow_undrivable)

    def _check_track(self, track: Track) -> Track:
        """``track``, once it is known drivable for this car (``require_drivable``
        remembers each geometry; the same object again costs nothing)."""
        if track is not self._checked_track:
            car = self.car_params
            require_drivable(
                track,
                allow_undrivable=self.allow_undrivable,
                min_radius=car_min_radius(car.wheelbase, car.max_steer),
                min_half_width=car_min_half_width(car.track_width),
            )
            self._checked_track = track
        return track

    def _connect(self) -> None:
        if self._client is None:
            self._client = _DirectClient()
        c = self._client
        c.resetSimulation()
        c.setGravity(0, 0, -9.81)
        # 10 solver iterations instead of PyBullet's 50: a third faster, and a
        # car on flat ground with four wheel contacts needs no more (trajectories
        # differ from 50 iterations by millimetres per metre driven).
        c.setPhysicsEngineParameter(
            fixedTimeStep=1.0 / self.physics_hz, numSubSteps=0, numSolverIterations=10
        )
        self._world = World(c)
        self._world.build_ground()
        self._car = RaceCar(c, self.car_params)

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = set(options) - {"track", "direction", "start", "lateral_noise", "heading_noise"}
        if unknown:
            raise ValueError(f"unknown reset option(s): {sorted(unknown)}")
        base = self._resolve_track(options.get("track", self.default_track))
        direction = options.get("direction", self.default_direction)
        if direction == "random":
            direction = DIRECTIONS[int(self.np_random.integers(2))]
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be 'ccw', 'cw' or 'random', got {direction!r}")
        start = options.get("start", "line")
        if start not in ("line", "random"):
            raise ValueError(f"start must be 'line' or 'random', got {start!r}")
        lat_noise = float(options.get("lateral_noise", 0.0))
        head_noise = float(options.get("heading_noise", 0.0))
        if (
            not (math.isfinite(lat_noise) and math.isfinite(head_noise))
            or lat_noise < 0
            or head_noise < 0
        ):
            raise ValueError("lateral_noise and heading_noise must be finite and >= 0")

        # Orientation of the road as driven: "ccw" means the lap turns counter-
        # clockwise overall, whatever the orientation the track was defined in.
        track = base if base.orientation == direction else _reversed_track(base)
        self.direction = direction
        self.base_track = base
        self.track = track
        self._track_hash = track.geometry_hash

        # Nothing may leak from the previous episode (contact caches, joint
        # states, solver warm starts): a new track gets a fresh world, saved as
        # built; the same track again gets that saved state restored. (PyBullet
        # does not free the memory of mesh visual shapes on resetSimulation, so
        # rebuilding the road every reset would grow memory ~0.2 MB a reset.)
        if self._world_key != self._track_hash or self._client is None:
            self._connect()
            self._world.build_track(track)
            self._car.set_visible(self.camera_sees_car)
            self._car.place(0.0, 0.0, 0.0)
            self._fresh_state = self._client.saveState()
            self._world_key = self._track_hash
        else:
            self._client.restoreState(stateId=self._fresh_state)

        if self.domain_randomization:
            self._randomize()
        else:
            self.camera = self._camera_base
            self._light = list(_OVERHEAD_LIGHT)

        s0 = float(self.np_random.uniform(0, track.length)) if start == "random" else 0.0
        wl, wr = track.half_widths(s0)
        lat = float(self.np_random.uniform(-lat_noise, lat_noise)) if lat_noise else 0.0
        lat = float(np.clip(lat, -0.8 * float(wr), 0.8 * float(wl)))
        dyaw = float(self.np_random.uniform(-head_noise, head_noise)) if head_noise else 0.0
        # The car's base origin is at the rear axle: place it so that its
        # centre (half a wheelbase ahead) sits at the requested point.
        xy = track.point(s0) + track.normal(s0) * lat
        yaw = float(track.heading(s0)) + dyaw
        half_wb = self.car_params.wheelbase / 2
        self._car.place(xy[0] - half_wb * math.cos(yaw), xy[1] - half_wb * math.sin(yaw), yaw)
        # Let the suspension settle with the motors holding still.
        self._car.command(0.0, 0.0, self.dt)
        for _ in range(self.substeps):
            self._client.stepSimulation()
        self._car.read()

        self._reset_state()
        cx, cy, cyaw, speed, _, _ = self._car_state()
        self._proj = track.project(cx, cy, s_hint=s0, yaw=cyaw)
        self.s = self._proj.s
        obs = self._observe()
        info = self._info(speed, reward_terms={}, off_track=False, flipped=False)
        if self.render_mode == "human":
            self.render()
        return obs, info

    def _check_action(self, action) -> tuple[float, float]:
        # The pilots' float32 arrays take the fast path; anything else is checked to hold
        # real numbers (bool, complex, strings and objects are refused, never cast).
        if not (type(action) is np.ndarray and action.dtype.kind == "f"):
            action = self._real_action(action)
        if action.shape != self.action_space.shape:
            raise ValueError(
                f"action must have shape {self.action_space.shape}, got {action.shape}"
            )
        # Two numbers: Python floats and min/max cost a fraction of np.isfinite + np.clip.
        a = [float(v) for v in action.tolist()]
        if not all(map(math.isfinite, a)):
            raise ValueError(f"action must be finite, got {a}")
        steer = min(1.0, max(-1.0, a[0]))
        if self.fixed_speed is None:
            return steer, min(1.0, max(-1.0, a[1])) * self.car_params.max_speed
        return steer, self.fixed_speed

    @staticmethod
    def _real_action(action: Any) -> np.ndarray:
        """``action`` as a numeric array; ``ValueError`` for bool, complex or non-numbers."""
        if isinstance(action, (list, tuple)) and any(
            isinstance(v, (bool, np.bool_, complex, np.complexfloating)) for v in action
        ):
            raise ValueError(f"action must hold real numbers, got {action!r}")
        try:
            a = np.asarray(action)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"action must be an array of real numbers, got {action!r} ({e})"
            ) from None
        if a.dtype.kind not in "fiu":
            raise ValueError(f"action must hold real numbers, got dtype {a.dtype}: {action!r}")
        return a

    def step(self, action):
        return self.step_with_switch(action, action, 0)

    def step_with_switch(
        self, held_action, new_action, switch_substep: int, *, observe: bool = True
    ):
        """One control period in which the command changes part-way through.

        ``held_action`` stays applied for the first ``switch_substep`` physics
        substeps, then ``new_action`` for the rest. The latency-aware evaluator
        uses this to make a command take effect exactly when its inference
        finishes (to the physics step, 1/240 s). ``step(a)`` is
        ``step_with_switch(a, a, 0)``. With ``observe=False`` no camera frame
        is rendered and the observation returned is ``None`` (the evaluator
        skips frames a slow pilot would never look at).
        """
        if self._car is None:
            raise RuntimeError("call reset() before step()")
        if not 0 <= switch_substep <= self.substeps:
            raise ValueError(
                f"switch_substep must be in [0, {self.substeps}], got {switch_substep}"
            )
        steer, wheel_speed = self._check_action(new_action)
        held = self._check_action(held_action) if switch_substep > 0 else None

        # apply action -> simulate
        sub_dt = 1.0 / self.physics_hz
        cid = self._client._client
        if held is not None:
            self._car.command(held[0], held[1], sub_dt * switch_substep)
            for _ in range(switch_substep):
                p.stepSimulation(physicsClientId=cid)
        rest = self.substeps - switch_substep
        if rest > 0:
            self._car.command(steer, wheel_speed, sub_dt * rest)
            for _ in range(rest):
                p.stepSimulation(physicsClientId=cid)
        self._car.read()
        self.t += self.dt
        self.steps += 1

        # observe
        x, y, yaw, speed, _, up_z = self._car_state()
        track = self.track
        self._proj = track.project(x, y, s_hint=self.s, yaw=yaw)
        ds = self._proj.s - self.s
        ds -= track.length * round(ds / track.length)
        self.s = self._proj.s
        prev_progress = self.progress
        self.progress += ds
        while self.progress >= (self.laps + 1) * track.length:
            target = (self.laps + 1) * track.length
            frac = (target - prev_progress) / max(self.progress - prev_progress, 1e-9)
            t_cross = self.t - self.dt + frac * self.dt
            self.lap_times.append(t_cross - self._last_lap_t)
            self._last_lap_t = t_cross
            self.laps += 1

        # reward terms -> termination
        off_track = self._off_track()
        flipped = up_z < math.cos(math.radians(45))
        w = self.reward_weights
        hw = self._proj.half_width_left if self._proj.lateral >= 0 else self._proj.half_width_right
        terms = {
            "progress": w.progress * ds,
            "lateral": -w.lateral * self.dt * (self._proj.lateral / hw) ** 2,
            "steer_change": -w.steer_change * abs(steer - self._prev_steer),
            "crash": -w.crash if (off_track or flipped) else 0.0,
        }
        self._prev_steer = steer
        reward = float(sum(terms.values()))
        laps_done = self.max_laps is not None and self.laps >= self.max_laps
        terminated = bool(off_track or flipped or laps_done)
        obs = self._observe() if observe else None
        info = self._info(speed, terms, off_track, flipped)
        if self.render_mode == "human":
            self.render()
        return obs, reward, terminated, False, info

    def recentre(self) -> dict:
        """Put the car back on the centreline at its current arc length, at rest.

        An intervention, as in PilotNet's autonomy metric: the episode's time,
        progress and laps carry on. Returns the new info dict.
        """
        if self._car is None:
            raise RuntimeError("call reset() before recentre()")
        s = self.s
        xy = self.track.point(s)
        yaw = float(self.track.heading(s))
        half_wb = self.car_params.wheelbase / 2
        self._car.place(xy[0] - half_wb * math.cos(yaw), xy[1] - half_wb * math.sin(yaw), yaw)
        x, y, cyaw, speed, _, _ = self._car_state()
        self._proj = self.track.project(x, y, s_hint=s, yaw=cyaw)
        self._prev_steer = 0.0
        return self._info(speed, reward_terms={}, off_track=False, flipped=False)

    def observe(self):
        """The observation from the car's current pose (e.g. after ``recentre()``)."""
        if self._car is None:
            raise RuntimeError("call reset() before observe()")
        return self._observe()

    def _car_state(self):
        x, y, yaw, speed, yaw_rate, up_z = self._car.state()
        # Report the car's centre (mid wheelbase), not the rear-axle origin.
        half_wb = self.car_params.wheelbase / 2
        return x + half_wb * math.cos(yaw), y + half_wb * math.sin(yaw), yaw, speed, yaw_rate, up_z

    def _off_track(self) -> bool:
        pr = self._proj
        limit = pr.half_width_left if pr.lateral >= 0 else pr.half_width_right
        return abs(pr.lateral) > limit + self.offtrack_margin

    # --------------------------------------------------------------- observation
    def _state_vector(self, speed: float) -> np.ndarray:
        pr = self._proj
        hw = pr.half_width_left if pr.lateral >= 0 else pr.half_width_right
        ks = [float(self.track.curvature(self.s + d)) for d in _LOOKAHEAD]
        v = np.array(
            [speed / 3.0, pr.lateral / hw, pr.heading_error, *ks, self._car.steer], dtype=np.float32
        )
        return np.clip(v, -_STATE_BOUND, _STATE_BOUND)

    def _camera_image(self, width: int, height: int) -> np.ndarray:
        pos, rot = self._car.pose_matrix()
        v = camera_view(pos, rot, self.camera, width, height, self._client)
        if self.camera_renderer == "tiny":
            self._world.set_road_visible(True)
            return self._draw(v)
        # The road plane is ray-cast (sim.plane); TinyRenderer draws only what
        # stands on it (the car, if it is to be seen), composited by depth.
        self._world.set_road_visible(False)
        img = plane_image(v, self._world.raster, self._plane_palette())
        if self.camera_sees_car:
            rgb, solid = self._tiny(v)
            img[solid] = rgb[solid]
        return img

    def _plane_palette(self) -> np.ndarray:
        key = (self._world.colors, tuple(self._light))
        if key != self._palette_key:
            self._palette = palette(*key)
            self._palette_key = key
        return self._palette

    def _tiny(self, v: View) -> tuple[np.ndarray, np.ndarray]:
        """TinyRenderer's RGB image of ``v`` and the mask of pixels it drew."""
        w, h = v.width, v.height
        _, _, rgba, depth, _ = self._client.getCameraImage(
            w,
            h,
            v.view,
            v.proj,
            lightDirection=self._light,
            renderer=p.ER_TINY_RENDERER,
            flags=p.ER_NO_SEGMENTATION_MASK,
        )
        img = np.asarray(rgba, dtype=np.uint8).reshape(h, w, 4)[:, :, :3].copy()
        return img, np.asarray(depth).reshape(h, w) < 1.0

    def _draw(self, v: View) -> np.ndarray:
        img, solid = self._tiny(v)
        empty = ~solid
        if empty.any():
            colors = self._plane_palette()
            ground = ground_mask(v)
            img[empty & ground] = colors[GROUND]
            img[empty & ~ground] = colors[SKY]
        return img

    def _observe(self):
        if self.obs_mode == "state":
            return self._state_vector(self._car.state()[3])
        h, w = self.image_size
        img = self._camera_image(w, h)
        if self.obs_mode == "image":
            return img
        return {"image": img, "state": self._state_vector(self._car.state()[3])}

    def _info(self, speed: float, reward_terms: dict, off_track: bool, flipped: bool) -> dict:
        x, y, yaw, _, _, _ = self._car_state()
        pr = self._proj
        return {
            "track": self.track.name,
            "track_hash": self._track_hash,
            "direction": self.direction,
            "t": self.t,
            "lap": self.laps,
            "lap_times": list(self.lap_times),
            "progress": self.progress,
            "lap_progress": (self.progress / self.track.length) - self.laps,
            "s": self.s,
            "lateral": pr.lateral,
            "heading_error": pr.heading_error,
            "half_width_left": pr.half_width_left,
            "half_width_right": pr.half_width_right,
            "speed": speed,
            "pose": (x, y, yaw),
            "steering": self._car.steer,
            "off_track": off_track,
            "flipped": flipped,
            "reward_terms": reward_terms,
        }

    # --------------------------------------------------------------- randomisation
    def _randomize(self) -> None:
        rng = self.np_random

        def jitter(rgba, amount):
            rgb = np.clip(np.asarray(rgba[:3]) + rng.uniform(-amount, amount, 3), 0, 1)
            return (*rgb.tolist(), 1.0)

        base = Colors()
        colors = Colors(
            ground=jitter(base.ground, 0.15),
            road=jitter(base.road, 0.12),
            edge=jitter(base.edge, 0.1),
            centre=jitter(base.centre, 0.1),
            start=jitter(base.start, 0.1),
        )
        self._world.recolor(colors)
        az = rng.uniform(0, 2 * math.pi)
        el = rng.uniform(math.radians(30), math.radians(80))
        self._light = [math.cos(az) * math.cos(el), math.sin(az) * math.cos(el), math.sin(el)]
        self.camera = replace(
            self._camera_base,
            height=self._camera_base.height + float(rng.uniform(-0.03, 0.03)),
            pitch_deg=self._camera_base.pitch_deg + float(rng.uniform(-4.0, 4.0)),
        )

    # ------------------------------------------------------------------ render
    def render(self):
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='rgb_array'")
            return None
        if self._car is None:
            raise RuntimeError("call reset() before render()")
        frame = self.render_frame(self.render_view)
        if self.render_mode == "rgb_array":
            return frame
        self._show(frame)
        return None

    def render_frame(self, view: str = "chase", size: tuple[int, int] | None = None) -> np.ndarray:
        """An RGB frame of the scene: ``chase``, ``topdown`` or the car's ``camera``."""
        h, w = size or self.render_size
        if view == "camera":
            return self._camera_image(w, h)
        pos, rot = self._car.pose_matrix()
        if view == "chase":
            fwd = rot[:, 0]
            eye = pos - fwd * 1.0 + np.array([0, 0, 0.6])
            look = pos + fwd * 0.8 - eye
            v = make_view(self._client, eye, look, [0, 0, 1], 60.0, w, h, 0.05, 30.0)
        elif view == "topdown":
            pts = np.concatenate(self.track.edges())
            lo = pts.min(axis=0) - 0.5
            hi = pts.max(axis=0) + 0.5
            centre = (lo + hi) / 2
            half_h = float(max(hi[1] - lo[1], (hi[0] - lo[0]) * h / w)) / 2
            height = 60.0  # far above, narrow field of view: nearly orthographic
            vfov = math.degrees(2 * math.atan(half_h / height))
            eye = [centre[0], centre[1], height]
            v = make_view(
                self._client, eye, [0, 0, -1], [0, 1, 0], vfov, w, h, height - 5, height + 5
            )
        else:
            raise ValueError(f"view must be one of {RENDER_VIEWS}, got {view!r}")
        self._car.set_visible(True)
        self._world.set_road_visible(True)
        try:
            return self._draw(v)
        finally:
            self._car.set_visible(self.camera_sees_car)

    def _show(self, frame: np.ndarray) -> None:
        import pygame

        if self._window is None:
            pygame.init()
            pygame.display.set_caption("trackpilot")
            self._window = pygame.display.set_mode((frame.shape[1], frame.shape[0]))
        pygame.event.pump()
        surf = pygame.surfarray.make_surface(frame.swapaxes(0, 1))
        self._window.blit(surf, (0, 0))
        pygame.display.flip()

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.disconnect()
            except p.error:
                pass
            self._client = None
            self._world = None
            self._car = None
            self._world_key = None
        if self._window is not None:
            import pygame

            pygame.display.quit()
            self._window = None
