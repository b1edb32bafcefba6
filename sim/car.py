"""The 1:10 race car from ``pybullet_data`` (``racecar/racecar.urdf``).

The car is driven only through its actuators: Ackermann steering on the two
steering hinges (position servos with a rate limit, like a real RC servo) and
velocity-controlled wheel motors with a torque limit (a DC motor's behaviour:
full torque until the commanded wheel speed is reached). Its pose is never set
while driving; only ``place()`` (used at reset) puts it somewhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pybullet as p
import pybullet_data

URDF = "racecar/racecar.urdf"

# Joint indices of racecar.urdf (checked against the joint names at load).
STEER_JOINTS = {"left": 4, "right": 6}
WHEEL_JOINTS = (2, 3, 5, 7)
_EXPECTED_NAMES = {
    2: b"left_rear_wheel_joint",
    3: b"right_rear_wheel_joint",
    4: b"left_steering_hinge_joint",
    5: b"left_front_wheel_joint",
    6: b"right_steering_hinge_joint",
    7: b"right_front_wheel_joint",
}


@dataclass(frozen=True)
class CarParams:
    """Geometry and actuator limits of the car."""

    wheelbase: float = 0.325  # m, rear to front axle (from the URDF)
    track_width: float = 0.2  # m, left to right wheel (from the URDF)
    wheel_radius: float = 0.05  # m (from the URDF)
    max_steer: float = 0.40  # rad at the virtual centre wheel: min turning radius ~0.77 m
    steer_rate: float = 8.0  # rad/s servo slew rate (a standard RC servo: ~0.1 s / 60 deg)
    max_speed: float = 5.0  # m/s reached at full throttle
    motor_force: float = 4.0  # N*m torque limit per wheel motor
    spawn_height: float = 0.005  # m above resting height at placement

    @property
    def min_turning_radius(self) -> float:
        return self.wheelbase / math.tan(self.max_steer)


def _wheel_speed_factors(delta: float, wheelbase: float, track_width: float) -> tuple[float, ...]:
    """Wheel speeds relative to the car's centre speed, in WHEEL_JOINTS order.

    Radii about the turn centre (on the rear axle line): rear wheels at
    ``R -+ w/2``, front wheels at ``hypot(R -+ w/2, L)``, all over the radius of
    the car's centre point ``hypot(R, L/2)``.
    """
    if abs(delta) < 1e-6:
        return (1.0, 1.0, 1.0, 1.0)
    r = wheelbase / math.tan(delta)  # signed: + turning left
    centre = math.hypot(r, wheelbase / 2)
    rl, rr = abs(r - track_width / 2), abs(r + track_width / 2)
    fl, fr = math.hypot(rl, wheelbase), math.hypot(rr, wheelbase)
    # WHEEL_JOINTS = (left rear, right rear, left front, right front)
    return (rl / centre, rr / centre, fl / centre, fr / centre)


class RaceCar:
    """One racecar in one BulletClient."""

    def __init__(self, client, params: CarParams | None = None) -> None:
        self.client = client
        self.params = params or CarParams()
        client.setAdditionalSearchPath(pybullet_data.getDataPath())
        self.body = client.loadURDF(URDF, [0, 0, 0.1], useFixedBase=False)
        for j, name in _EXPECTED_NAMES.items():
            got = client.getJointInfo(self.body, j)[1]
            if got != name:
                raise RuntimeError(f"{URDF}: joint {j} is {got!r}, expected {name!r}")
        self.num_joints = client.getNumJoints(self.body)
        # Free-spinning by default: switch off the default velocity motors on
        # every joint, then drive only the ones we command.
        for j in range(self.num_joints):
            client.setJointMotorControl2(
                self.body, j, p.VELOCITY_CONTROL, targetVelocity=0, force=0
            )
        for j in WHEEL_JOINTS:
            client.changeDynamics(self.body, j, lateralFriction=1.0, rollingFriction=0.0)
        self._colors = {
            (d[1]): tuple(d[7]) for d in client.getVisualShapeData(self.body) if d[0] == self.body
        }
        self._visible = True
        self.steer = 0.0  # current servo command (normalised, after rate limit)

    # -- visibility (the car does not draw itself into its own camera) ----------
    def set_visible(self, visible: bool) -> None:
        if visible == self._visible:
            return
        for link, rgba in self._colors.items():
            color = rgba if visible else (rgba[0], rgba[1], rgba[2], 0.0)
            self.client.changeVisualShape(self.body, link, rgbaColor=color)
        self._visible = visible

    # -- placement (reset only) ---------------------------------------------------
    def place(self, x: float, y: float, yaw: float) -> None:
        c = self.client
        c.resetBasePositionAndOrientation(
            self.body, [x, y, self.params.spawn_height], c.getQuaternionFromEuler([0, 0, yaw])
        )
        c.resetBaseVelocity(self.body, [0, 0, 0], [0, 0, 0])
        for j in range(self.num_joints):
            c.resetJointState(self.body, j, 0.0, 0.0)
        self.steer = 0.0
        self.read()

    # -- actuation -------------------------------------------------------------------
    def command(self, steer: float, wheel_speed: float, dt: float) -> None:
        """Apply a steering command in [-1, 1] and a wheel surface speed in m/s.

        ``dt`` is the control period; the servo moves at most ``steer_rate * dt``
        towards the command (as normalised steering).
        """
        par = self.params
        max_delta = par.steer_rate * dt / par.max_steer
        self.steer += float(np.clip(steer - self.steer, -max_delta, max_delta))
        delta = self.steer * par.max_steer
        # Ackermann geometry: the inner wheel turns more than the outer one.
        if abs(delta) < 1e-6:
            left = right = 0.0
        else:
            r = par.wheelbase / math.tan(delta)  # signed turning radius (+ = left)
            left = math.atan(par.wheelbase / (r - par.track_width / 2))
            right = math.atan(par.wheelbase / (r + par.track_width / 2))
        c = self.client
        c.setJointMotorControlArray(
            self.body,
            [STEER_JOINTS["left"], STEER_JOINTS["right"]],
            p.POSITION_CONTROL,
            targetPositions=[left, right],
            forces=[10.0, 10.0],
        )
        # Electronic differential: each wheel's target speed follows its own
        # turning radius (a real RC car has mechanical differentials; four
        # wheels forced to one speed would scrub and understeer).
        scale = _wheel_speed_factors(delta, par.wheelbase, par.track_width)
        omega = wheel_speed / par.wheel_radius
        c.setJointMotorControlArray(
            self.body,
            list(WHEEL_JOINTS),
            p.VELOCITY_CONTROL,
            targetVelocities=[omega * f for f in scale],
            forces=[par.motor_force] * len(WHEEL_JOINTS),
        )

    # -- state ------------------------------------------------------------------------
    # Read once per control step (``read()``); ``state()`` and ``pose_matrix()``
    # derive from that reading, so a step costs three PyBullet queries, not six.
    def read(self) -> None:
        cid = self.client._client
        pos, orn = p.getBasePositionAndOrientation(self.body, physicsClientId=cid)
        self._lin, self._ang = p.getBaseVelocity(self.body, physicsClientId=cid)
        self._pos = pos
        self._m = p.getMatrixFromQuaternion(orn)

    def state(self) -> tuple[float, float, float, float, float, float]:
        """(x, y, yaw, forward speed m/s, yaw rate rad/s, up_z) as of the last ``read()``."""
        m, lin = self._m, self._lin
        fx, fy = m[0], m[3]  # body x axis in world
        yaw = math.atan2(fy, fx)
        speed = lin[0] * fx + lin[1] * fy
        return self._pos[0], self._pos[1], yaw, speed, self._ang[2], m[8]

    def pose_matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """World position and 3x3 rotation of the base, as of the last ``read()``."""
        return np.asarray(self._pos), np.asarray(self._m).reshape(3, 3)
