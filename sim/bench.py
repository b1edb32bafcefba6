"""``python -m sim.bench``: how fast the driving env steps, against CarRacing-v3.

Every figure is the median over ``--repeats`` timed blocks of ``--steps`` env
steps, after a warm-up. A steering P-controller on the env's ``info`` keeps
the car on the road, so the timing covers driving, not crash-and-reset loops
(resets that do happen are included in the time). Gymnasium's own
``CarRacing-v3`` (96x96, Box2D, driven along its road by a pure-pursuit
controller) is measured in the same process as the reference, and the ratio
is reported.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np

import sim  # noqa: F401  (registers the env)
from sim.pool import prepare_worker, spawning
from sim.vector import close_vector_env, make_vector_env, pin_worker, worker_cpus
from tracks.cli import run_main


def _p_control(lateral, heading_error):
    return np.clip(-1.2 * np.asarray(lateral) - 1.5 * np.asarray(heading_error), -1, 1)


def _time_blocks(step_block: Callable[[], None], steps: int, repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step_block()
        rates.append(steps / (time.perf_counter() - t0))
    return statistics.median(rates)


def bench_single(
    env_kwargs: dict, steps: int, repeats: int, warmup: int = 20, barrier=None
) -> float:
    env = gym.make(sim.ENV_ID, **env_kwargs)
    _, info = env.reset(seed=0)
    state = {"info": info}

    def run(n: int) -> None:
        info = state["info"]
        for _ in range(n):
            a = np.array([_p_control(info["lateral"], info["heading_error"])], dtype=np.float32)
            _, _, term, trunc, info = env.step(a)
            if term or trunc:
                _, info = env.reset()
        state["info"] = info

    run(warmup)
    if barrier is not None:  # start timing together with the other processes
        barrier.wait()
    rate = _time_blocks(lambda: run(steps), steps, repeats)
    env.close()
    return rate


def bench_vector(
    env_kwargs: dict,
    n_envs: int,
    steps: int,
    repeats: int,
    warmup: int = 10,
    pin: bool = False,
    spin_step_s: float | None = None,
    info_keys: tuple[str, ...] | None = None,
) -> float:
    """Total env steps per second of ``n_envs`` envs in an ``AsyncVectorEnv``
    (one subprocess each; with ``pin``, worker i on CPU i). With
    ``spin_step_s`` the envs are stand-ins that busy-wait that long per step
    and return nothing else: the vector env's own ceiling for that step time."""
    if spin_step_s is None:
        venv = make_vector_env(n_envs, pin=pin, info_keys=info_keys, **env_kwargs)
    else:
        cpus = worker_cpus(n_envs) if pin else [None] * n_envs
        h, w = env_kwargs.get("image_size", (120, 160))
        with spawning():
            venv = gym.vector.AsyncVectorEnv(
                [functools.partial(_SpinEnv, spin_step_s, (h, w, 3), c, os.getpid()) for c in cpus]
            )
    try:
        _, info = venv.reset(seed=0)
        state = {"info": info}

        def run(n: int) -> None:
            info = state["info"]
            for _ in range(n):
                a = _p_control(info["lateral"], info["heading_error"]).astype(np.float32)[:, None]
                _, _, _, _, info = venv.step(a)
            state["info"] = info

        run(warmup)
        rate = _time_blocks(lambda: run(steps), steps, repeats) * n_envs
    except BaseException:
        close_vector_env(venv, interrupted=True)
        raise
    close_vector_env(venv)
    return rate


class _SpinEnv(gym.Env):
    """Busy-waits ``step_s`` per step; same observation and action shapes as the
    image env, a two-key info. Measures what the vector env costs by itself."""

    def __init__(self, step_s: float, shape: tuple, cpu: int | None, parent_pid: int) -> None:
        if os.getpid() != parent_pid:
            prepare_worker(parent_pid)
        pin_worker(cpu, parent_pid)
        self.step_s = step_s
        self.observation_space = gym.spaces.Box(0, 255, shape, np.uint8)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self._obs = np.zeros(shape, np.uint8)
        self._info = {"lateral": 0.0, "heading_error": 0.0}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._obs, dict(self._info)

    def step(self, action):
        end = time.perf_counter() + self.step_s
        while time.perf_counter() < end:
            pass
        return self._obs, 0.0, False, False, dict(self._info)


def _independent_worker(args) -> float:
    env_kwargs, steps, repeats, barrier = args
    return bench_single(env_kwargs, steps, repeats, barrier=barrier)


def bench_independent(env_kwargs: dict, n_procs: int, steps: int, repeats: int) -> float:
    """Sum of the steps/s of ``n_procs`` processes each stepping its own env,
    started together: how the env itself scales, without a vector env's
    lock-step round trips."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(n_procs)
        with spawning():
            pool = ctx.Pool(n_procs, initializer=prepare_worker, initargs=(os.getpid(),))
        with pool:
            rates = pool.map(_independent_worker, [(env_kwargs, steps, repeats, barrier)] * n_procs)
    return float(sum(rates))


def _car_racing_pilot(env):
    """Pure pursuit on CarRacing's own waypoints, so the reference is timed on the
    road (driving off it leaves less to draw and makes CarRacing look faster)."""
    import math

    u = env.unwrapped
    waypoints = np.array([(t[2], t[3]) for t in u.track])

    def act() -> np.ndarray:
        x, y = u.car.hull.position
        i = int(np.argmin(np.hypot(waypoints[:, 0] - x, waypoints[:, 1] - y)))
        tx, ty = waypoints[(i + 6) % len(waypoints)]
        err = math.atan2(ty - y, tx - x) - (u.car.hull.angle + math.pi / 2)
        err = (err + math.pi) % (2 * math.pi) - math.pi
        speed = float(np.hypot(*u.car.hull.linearVelocity))
        return np.array([np.clip(-2.0 * err, -1, 1), 0.1 if speed < 30 else 0.0, 0.0], np.float32)

    return act


def bench_car_racing(steps: int, repeats: int) -> float | None:
    try:
        env = gym.make("CarRacing-v3")
    except Exception as exc:  # box2d missing
        print(f"warning: CarRacing-v3 unavailable ({exc}); no reference", file=sys.stderr)
        return None
    env.reset(seed=0)
    act = _car_racing_pilot(env)

    def run(n: int) -> None:
        for _ in range(n):
            _, _, term, trunc, _ = env.step(act())
            if term or trunc:
                env.reset()

    run(60)  # past CarRacing's zoom-in frames
    rate = _time_blocks(lambda: run(steps), steps, repeats)
    env.close()
    return rate


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sim.bench", description=__doc__.split("\n")[0])
    ap.add_argument(
        "--steps", type=int, default=200, help="env steps per timed block (default: %(default)s)"
    )
    ap.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="timed blocks; the median is reported (default: %(default)s)",
    )
    ap.add_argument(
        "--envs",
        type=int,
        default=os.cpu_count() or 1,
        help="parallel envs (default: one per core, %(default)s here)",
    )
    ap.add_argument("--track", default="oval", help="track to drive (default: %(default)s)")
    ap.add_argument(
        "--quick", action="store_true", help="2 blocks of 30 steps instead (smoke test)"
    )
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.repeats < 1 or args.envs < 1:
        print("error: --steps, --repeats and --envs must be >= 1", file=sys.stderr)
        return 2
    steps, repeats = (30, 2) if args.quick else (args.steps, args.repeats)
    base = {"track": args.track, "fixed_speed": 2.0}

    rows: list[dict] = []
    ref = bench_car_racing(steps, repeats)
    if ref is not None:
        rows.append({"case": "CarRacing-v3 96x96 (reference)", "steps_per_s": ref})
    single: dict[tuple[int, int], float] = {}
    for size in ((64, 64), (96, 96), (120, 160)):
        r = bench_single({**base, "image_size": size}, steps, repeats)
        single[size] = r
        rows.append({"case": f"trackpilot image {size[0]}x{size[1]}, 1 env", "steps_per_s": r})
    rows.append(
        {
            "case": "trackpilot state-only, 1 env",
            "steps_per_s": bench_single({**base, "obs_mode": "state"}, steps * 2, repeats),
        }
    )
    if args.envs > 1:
        n = args.envs
        for size in ((96, 96), (120, 160)):
            kw = {**base, "image_size": size}
            tag = f"trackpilot image {size[0]}x{size[1]}"
            for case, r in (
                (f"{n} envs, AsyncVectorEnv", bench_vector(kw, n, steps, repeats)),
                (
                    f"{n} envs, AsyncVectorEnv, pinned",
                    bench_vector(kw, n, steps, repeats, pin=True),
                ),
                (
                    f"{n} envs, AsyncVectorEnv, pinned, 2 info keys",
                    bench_vector(
                        kw, n, steps, repeats, pin=True, info_keys=("lateral", "heading_error")
                    ),
                ),
                (f"{n} independent processes", bench_independent(kw, n, steps, repeats)),
                (
                    f"{n} busy-wait stand-ins, AsyncVectorEnv, pinned",
                    bench_vector(kw, n, steps, repeats, pin=True, spin_step_s=1 / single[size]),
                ),
            ):
                rows.append(
                    {"case": f"{tag}, {case}", "steps_per_s": r, "vs_1_env": r / single[size]}
                )
    for row in rows:
        if ref is not None and row["case"].startswith("trackpilot"):
            row["vs_car_racing"] = row["steps_per_s"] / ref

    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "steps": steps,
        "repeats": repeats,
        "rows": rows,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"median of {repeats} blocks of {steps} steps; {os.cpu_count()} CPUs")
    print(f"{'case':<52} {'steps/s':>9} {'x CarRacing':>12} {'x 1 env':>8}")
    for row in rows:
        vs = f"{row['vs_car_racing']:.2f}" if "vs_car_racing" in row else ""
        v1 = f"{row['vs_1_env']:.2f}" if "vs_1_env" in row else ""
        print(f"{row['case']:<52} {row['steps_per_s']:>9.1f} {vs:>12} {v1:>8}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
