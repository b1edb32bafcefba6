"""Every limit a track must keep, stated once: file limits and drivability thresholds.

**File limits** bound what a track file a user hands in (F1TENTH/TUM CSV or
trackpilot JSON, ``tracks.io``) may cost to read, before anything is fitted to it.
Without them a 60-point CSV with coordinates around 1e5 m took minutes and 11 GB
to plot, a 45 MB JSON was killed by the kernel and 100k nested brackets raised a
``RecursionError``. Each breach is a one-line ``ValueError`` naming the file, the
limit and the value. The numbers leave room for every real circuit at full scale
(the Nordschleife, the longest, is 20.8 km; the TUM racetrack database samples its
centrelines every few metres):

=====================  =========  ==================================================
``MAX_FILE_BYTES``     16 MiB     size of the file on disk (checked before reading)
``MAX_POINTS``         20 000     centreline points (a 20 km circuit at 1 m spacing)
``MAX_COORDINATE``     10 000 m   ``|x|`` and ``|y|`` of every point, after ``scale``
``MAX_HALF_WIDTH``     100 m      every half width, after ``scale``
``MAX_TRACK_LENGTH``   50 000 m   centreline length of the fitted track
``MAX_JSON_DEPTH``     8          nesting of JSON arrays/objects (the format needs 3)
=====================  =========  ==================================================

``MAX_COORDINATE``, ``MAX_HALF_WIDTH`` and ``MAX_TRACK_LENGTH`` also bound a
``Track`` handed to ``TrackEnv`` in Python (the road meshes and the camera's label
raster grow with the track's size); ``allow_undrivable`` does not lift them.

**Drivability thresholds** (``tracks.validate``) come from the car,
``sim.car.CarParams`` (``tracks`` is below ``sim`` and cannot import it, so its
defaults are restated here; ``tests/test_robustness_tracks.py`` checks that they
agree, and ``TrackEnv`` derives the thresholds from its own car's parameters):

* ``MIN_TURNING_RADIUS = CAR_WHEELBASE / tan(CAR_MAX_STEER)`` = 0.325 / tan(0.40)
  = 0.77 m: the tightest circle the car can drive at full lock. The centreline's
  radius of curvature may not be smaller anywhere.
* ``MIN_HALF_WIDTH = CAR_TRACK_WIDTH / 2 + LATERAL_CLEARANCE`` = 0.1 + 0.15 =
  0.25 m on each side of the centreline: the wheel centres sit 0.1 m either side
  of the car's centre, and 0.15 m more keeps the tyres (0.0225 m) plus about
  0.13 m of room for tracking error and steering noise on the road.
* ``EDGE_MARGIN`` = 0.1 m: the inner edge of a bend keeps at least this radius
  (it never folds over itself), and two parts of the road that are not neighbours
  along it stay at least this far apart (edges of distant parts never overlap).
"""

from __future__ import annotations

import math

__all__ = [
    "CAR_MAX_STEER",
    "CAR_TRACK_WIDTH",
    "CAR_WHEELBASE",
    "EDGE_MARGIN",
    "LATERAL_CLEARANCE",
    "MAX_COORDINATE",
    "MAX_FILE_BYTES",
    "MAX_HALF_WIDTH",
    "MAX_JSON_DEPTH",
    "MAX_POINTS",
    "MAX_TRACK_LENGTH",
    "MIN_HALF_WIDTH",
    "MIN_TURNING_RADIUS",
    "car_min_half_width",
    "car_min_radius",
]

# --------------------------------------------------------------------------- files

#: Largest track file read, bytes.
MAX_FILE_BYTES = 16 * 1024 * 1024
#: Most centreline points in a track file.
MAX_POINTS = 20_000
#: Largest ``|x|`` or ``|y|`` of a centreline point, metres (after ``scale``).
MAX_COORDINATE = 10_000.0
#: Largest half width, metres (after ``scale``).
MAX_HALF_WIDTH = 100.0
#: Longest centreline, metres.
MAX_TRACK_LENGTH = 50_000.0
#: Deepest nesting of JSON arrays and objects in a track file.
MAX_JSON_DEPTH = 8

# --------------------------------------------------------------------------- the car

#: ``sim.car.CarParams().wheelbase``, metres.
CAR_WHEELBASE = 0.325
#: ``sim.car.CarParams().max_steer``, radians.
CAR_MAX_STEER = 0.40
#: ``sim.car.CarParams().track_width`` (wheel centre to wheel centre), metres.
CAR_TRACK_WIDTH = 0.2
#: Road kept beyond the wheel centres on each side, metres.
LATERAL_CLEARANCE = 0.15
#: Clearance of the inner edge of a bend and between distant parts of the road, metres.
EDGE_MARGIN = 0.1


def car_min_radius(wheelbase: float, max_steer: float) -> float:
    """The car's minimum turning radius, ``wheelbase / tan(max_steer)`` (metres)."""
    return wheelbase / math.tan(max_steer)


def car_min_half_width(track_width: float) -> float:
    """The narrowest half width of road (each side) the car needs, metres."""
    return track_width / 2 + LATERAL_CLEARANCE


#: Smallest centreline radius of curvature, metres (0.77 m for the default car).
MIN_TURNING_RADIUS = car_min_radius(CAR_WHEELBASE, CAR_MAX_STEER)
#: Smallest half width on each side of the centreline, metres.
MIN_HALF_WIDTH = car_min_half_width(CAR_TRACK_WIDTH)
