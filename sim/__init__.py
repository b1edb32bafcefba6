"""trackpilot's PyBullet simulator: the driving env, its world, and the dataset format.

``import sim`` registers ``trackpilot/TrackDrive-v0`` with Gymnasium; that is its
only side effect. ``sim.TrackEnv`` is imported lazily so that light users of the
package (``sim.dataset``) do not pay for PyBullet.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

ENV_ID = "trackpilot/TrackDrive-v0"

if ENV_ID not in gym.registry:
    gym.register(
        id=ENV_ID,
        entry_point="sim.env:TrackEnv",
        max_episode_steps=2400,  # 120 s of simulated time at 20 Hz
    )

__all__ = ["ENV_ID", "TrackEnv"]


def __getattr__(name: str) -> Any:
    if name == "TrackEnv":
        from sim.env import TrackEnv

        return TrackEnv
    raise AttributeError(f"module 'sim' has no attribute {name!r}")
