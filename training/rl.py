"""Reinforcement learning on the driving env with stable-baselines3 (PPO, SAC).

``python -m training.rl --algo ppo --obs state --timesteps 300000 --out runs/rl-ppo`` trains;
``python -m training.rl eval runs/rl-ppo --tracks oval,kidney --directions ccw,cw --laps 3``
drives the saved pilot closed-loop and reports laps and off-track events.

Environment: ``trackpilot/TrackDrive-v0`` unchanged. Every episode draws its track from
the pool (``--tracks`` plus ``--generated K`` procedural tracks), its direction from
``--directions``, a random start arc length and a small random lateral / heading offset
(:class:`EpisodeSampler`, through the env's own reset options and RNG). ``n_envs`` copies
run in ``SubprocVecEnv`` workers (``DummyVecEnv`` for one), under ``VecMonitor``,
optionally ``VecNormalize``, and ``VecFrameStack`` for images; stable-baselines3 adds
``VecTransposeImage`` (HWC -> CHW) itself.

Run directory (``--out``)::

    config.json                  resolved config (fields + derived hyperparameters)
    tb/                          TensorBoard (SB3 rollout/train scalars + eval/*)
    evaluations.jsonl            one line per evaluation (per-track laps, off-track, return)
    best.json, best.safetensors  safe policy with the best mean eval return so far
    last.json, last.safetensors  safe policy at the latest evaluation / end of training
    train_state.json/.safetensors   what --resume needs (see below)

Loading a trained agent never unpickles: ``agents.sb3_pilot.load_sb3_pilot(DIR)``
rebuilds the policy from ``best.json`` and reads ``best.safetensors``. Resuming does not
unpickle either: ``train_state.*`` holds the policy and optimiser tensors (Adam moments,
SAC's entropy coefficient), ``VecNormalize`` statistics and the step counter as
safetensors + JSON; no stable-baselines3 ``.zip`` is written or read. SAC's replay
buffer is not kept (it would be gigabytes for images): a resumed SAC run refills it
with the current policy before learning again (``learning_starts`` steps).

Ctrl-C or SIGTERM during training writes ``last.*`` and ``train_state.*`` (the step
reached), stops the env workers and exits 130 (143) with one line saying so; ``--resume``
continues from there.

The pieces: :mod:`training.rl_env` (envs), :mod:`training.rl_model` (SB3 model, safe
export), :mod:`training.rl_state` (``--resume`` state), :mod:`training.rl_train` (the
loop), :mod:`training.rl_eval` (closed-loop evaluation); this module is the command line
(its flags come from :class:`~training.rl_config.RLConfig` and
:class:`~training.rl_eval.EvalSettings`) and keeps every name importable from here.

Defaults and why (measured on the project's shared 2-core CPU machine):

- **Fixed speed 2.0 m/s, steering only.** The same cruise speed as the expert that
  records behaviour-cloning data, so RL and BC pilots are compared on the same task;
  one action dimension learns much faster than steering + throttle (``--full-control``).
- **Tracks oval + kidney, both directions, random start.** The kidney has left and
  right bends, the oval long straights; drawing both directions per episode avoids
  the left-turn bias of counter-clockwise-only driving (the recipe's augmentation
  point), and random start positions show every bend from the first episodes
  instead of only the first corner after the line. Small start offsets (0.1 m,
  0.15 rad) teach recovery.
- **Lateral penalty 1.0 (the env's default is 0.1).** The reward is progress along the
  centreline, and on a bend of radius R a car driving d metres on the inside advances
  the centreline ~d/R faster than its own speed. With the env's 0.1 weight PPO learns
  to cut every corner (after 200k steps its mean |offset| was 0.25-0.3 m and its
  worst 0.57 m on a 0.5 m half-width road, wheels on the grass, and it crashed on the
  unseen hairpin). At 1.0 the penalty's slope beats the corner-cutting gain beyond
  ~0.1 m, and the agent keeps to the centreline (worst offset ~0.1 m) and generalises.
- **PPO, 2 envs, 2048 transitions per update, batch 256, 10 epochs, lr 3e-4, gamma
  0.99, GAE 0.95, clip 0.2, no entropy bonus** (the stable-baselines3 / MuJoCo
  defaults, which work here unchanged). gamma 0.99 looks ~100 steps = 5 s = 10 m
  ahead at 2 m/s, longer than any bend. The 7-vector observation is already scaled to
  about [-1, 1], so no ``VecNormalize`` (``--normalize`` exists; its statistics travel
  with the safe checkpoint); rewards are metres per step (~0.1), returns stay small.
  Two envs use both cores (env stepping is ~80% of the time).
- **Policy MLP 64-64 tanh, initial log std -0.5** (std 0.6 on steering). With std 1
  (SB3's default) most early actions are near full lock and episodes end within a
  few metres; 0.6 still explores both ways.
- **100k steps, evaluation every 10k.** The state agent laps both tracks both ways
  after ~20k steps; the rest makes it smoother (mean offset 0.09 -> 0.05 m).
- **Images: NatureCNN on 64x64, 2 stacked frames**, rollout 1024 transitions, batch 64,
  4 epochs: the CNN update is what costs on a CPU, so fewer epochs per rollout.
- **SAC: MLP 256-256 relu, lr 3e-4, batch 256, buffer 300k (20k for images, ~1 GB), 2k
  random steps first, automatic entropy, one gradient step per transition.**
- **One torch thread in the learner** (``--torch-threads``): the env workers need the
  cores; with two threads on the shared machine a NatureCNN update was 4x slower.
- **Evaluation**: 3 laps from the start line on every (eval track, direction),
  deterministic actions, training reward weights; "best" is the highest mean return
  (episodes end at 3 laps, so among lapping policies the one closest to the centreline
  with the calmest steering wins).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, fields, replace
from pathlib import Path

from sim.io_utils import atomic_write_json
from tracks.cli import run_main
from tracks.cliargs import add_config_args, config_from_args, field_help
from tracks.outputs import check_output_dir, check_output_file, os_error_line
from training.cli import add_alias, fail, setup_logging
from training.rl_config import ALGOS, RLConfig
from training.rl_env import EpisodeSampler, build_vec_env, env_kwargs, make_env, reward_weights
from training.rl_eval import EvalSettings, _format_results, _summary, evaluate_pilot, run_eval
from training.rl_model import build_model, export_policy, policy_alias, policy_record
from training.rl_state import (
    TRAIN_STATE_FORMAT,
    TRAIN_STATE_VERSION,
    _optimizers,
    load_train_state,
    read_train_state,
    save_train_state,
)
from training.rl_train import train

__all__ = [
    "TRAIN_STATE_FORMAT",
    "TRAIN_STATE_VERSION",
    "EpisodeSampler",
    "EvalSettings",
    "_format_results",
    "_optimizers",
    "_summary",
    "build_model",
    "build_vec_env",
    "env_kwargs",
    "evaluate_pilot",
    "export_policy",
    "load_train_state",
    "main",
    "make_env",
    "policy_alias",
    "policy_record",
    "read_train_state",
    "reward_weights",
    "run_eval",
    "save_train_state",
    "train",
]

# Runtime settings that may change when a run is resumed; everything else must match.
_RESUMABLE = ("timesteps", "n_envs", "device", "eval_freq", "torch_threads", "stop_when_solved")


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def tuned_help() -> dict[str, str]:
    """Help texts of the hyperparameters that ``none`` leaves to the tuned defaults, with
    those defaults spelled out per algorithm (and observation, where they differ), taken
    from :attr:`RLConfig.hyperparams` at the default ``--n-envs``: what "none" means."""
    base = RLConfig()
    tuned = {
        (algo, obs): RLConfig(algo=algo, obs=obs).hyperparams
        for algo in ALGOS
        for obs in ("state", "image")
    }
    out: dict[str, str] = {}
    for f in fields(RLConfig):
        text = field_help(RLConfig, f)
        if "none: tuned" not in text:
            continue
        parts = []
        for algo in ALGOS:
            state, image = tuned[algo, "state"].get(f.name), tuned[algo, "image"].get(f.name)
            if state is None and image is None:
                continue
            if state == image:
                parts.append(f"{algo.upper()} {_shown(state)}")
            else:
                parts.append(f"{algo.upper()} {_shown(state)} (state) / {_shown(image)} (image)")
        if f.name == "n_steps":
            parts[-1] += f" with --n-envs {base.n_envs}"
        out[f.name] = text.replace("none: tuned", "none: tuned: " + "; ".join(parts))
    return out


def _train_parser() -> argparse.ArgumentParser:
    """One flag per :class:`RLConfig` field (``--lr`` for ``--learning-rate``), plus
    ``--config``, ``--resume`` and ``--full-control`` (no cruise speed)."""
    ap = argparse.ArgumentParser(
        prog="python -m training.rl",
        description="Train a PPO/SAC pilot on trackpilot/TrackDrive-v0 "
        "(`python -m training.rl eval DIR ...` evaluates one).",
        argument_default=argparse.SUPPRESS,
    )
    names = [f.name for f in fields(RLConfig)]
    speed_at = names.index("fixed_speed")
    add_config_args(ap, RLConfig, only=["out"], needed=["out"])
    ap.add_argument(
        "--config",
        dest="config_file",
        help="start from this config.json; flags override it (default: none: the defaults "
        "shown here)",
    )
    ap.add_argument("--resume", action="store_true", help="continue the run in --out")
    add_config_args(ap, RLConfig, only=names[1:speed_at])
    speed = ap.add_mutually_exclusive_group()
    add_config_args(speed, RLConfig, only=["fixed_speed"])
    speed.add_argument(
        "--full-control", action="store_true", help="steering and throttle (no cruise speed)"
    )
    add_config_args(ap, RLConfig, only=names[speed_at + 1 :], help=tuned_help())
    add_alias(ap, "--lr", "--learning-rate")
    return ap


def _config_from_args(ns: argparse.Namespace) -> tuple[RLConfig, bool]:
    given = dict(vars(ns))
    resume = bool(given.pop("resume", False))
    config_file = given.pop("config_file", None)
    if given.pop("full_control", False):
        given["fixed_speed"] = None
    known = {f.name for f in fields(RLConfig)}
    unknown = set(given) - known
    if unknown:  # pragma: no cover - parser and dataclass out of sync
        raise ValueError(f"internal: flags without config fields {sorted(unknown)}")
    if resume:
        if "out" not in given:
            raise ValueError("--resume needs --out DIR (the run to continue)")
        saved = RLConfig.load(Path(given["out"]) / "config.json")
        changed = [
            k for k, v in given.items() if k not in (*_RESUMABLE, "out") and getattr(saved, k) != v
        ]
        if changed:
            raise ValueError(
                f"--resume continues the saved config; cannot change {sorted(changed)} "
                f"(only {', '.join(_RESUMABLE)})"
            )
        return replace(saved, **given), True
    base = RLConfig.load(config_file) if config_file else RLConfig()
    cfg = replace(base, **given)
    if not cfg.out:
        raise ValueError("--out DIR is required")
    return cfg, False


def _main_train(argv: list[str]) -> int:
    ns = _train_parser().parse_args(argv)
    try:
        cfg, resume = _config_from_args(ns)
        check_output_dir(cfg.out)  # before the envs and the model are built
        summary = train(cfg, resume=resume)
    except OSError as e:  # while writing: one line, no traceback
        return fail(os_error_line(e, getattr(ns, "out", None)))
    except ValueError as e:
        return fail(e)
    # Ctrl-C and SIGTERM go up to tracks.cli.run_main: one line saying what was saved.
    print(json.dumps(summary, indent=2))
    print(f"wrote {summary['out']} (best.json/.safetensors, last.*, tb/, evaluations.jsonl)")
    return 0


def _eval_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m training.rl eval",
        description="Drive a saved (safe-loaded) SB3 pilot closed-loop and report laps.",
    )
    ap.add_argument("checkpoint", help="run directory, policy .json or .safetensors")
    ap.add_argument(
        "--which",
        default="best",
        choices=("best", "last"),
        help="which checkpoint of a run directory (default: %(default)s)",
    )
    add_config_args(ap, EvalSettings)
    ap.add_argument("--json", default=None, help="write results here (default: next to it)")
    return ap


def _main_eval(argv: list[str]) -> int:
    a = _eval_parser().parse_args(argv)
    settings = config_from_args(EvalSettings, a)
    try:
        target = Path(a.checkpoint)
        if target.is_dir():
            target = target / f"{a.which}.json"
        # Where the report goes (by default next to the checkpoint), before the laps.
        if a.json:
            check_output_file(a.json)
        elif target.exists():
            check_output_dir(target.parent)
        report = run_eval(target, **asdict(settings))
    except ValueError as e:
        return fail(e)
    print(_format_results(report["results"]))
    s = report["summary"]
    print(
        f"{s['completed']}/{s['episodes']} completed {settings.laps} laps without leaving the road"
    )
    ckpt = Path(report["checkpoint"])
    dest = Path(a.json) if a.json else ckpt.with_name(f"eval-{ckpt.stem}.json")
    try:
        atomic_write_json(dest, report)
    except OSError as e:
        return fail(os_error_line(e, dest))
    print(f"wrote {dest}")
    return 0 if s["solved"] else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m training.rl [train] ...`` or ``python -m training.rl eval DIR ...``."""
    args = list(sys.argv[1:] if argv is None else argv)
    setup_logging()
    if args and args[0] == "eval":
        return _main_eval(args[1:])
    if args and args[0] == "train":
        args = args[1:]
    return _main_train(args)


if __name__ == "__main__":
    raise SystemExit(run_main(main))
