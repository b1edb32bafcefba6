"""The RL training loop: stable-baselines3 ``learn`` with an evaluation callback that keeps
the best and last safe policies and the resumable training state in ``cfg.out``."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from agents.sb3_pilot import SB3Pilot
from sim.io_utils import atomic_write_json
from tracks.progress import progress_bar
from training.rl_config import RLConfig
from training.rl_env import build_vec_env, check_tracks, close_vec_env, reward_weights
from training.rl_eval import _summary, evaluate_pilot
from training.rl_model import build_model, export_policy, policy_record
from training.rl_state import load_train_state, read_train_state, save_train_state

__all__ = ["train"]

logger = logging.getLogger(__name__)


def _callback(cfg: RLConfig, norm, progress: dict[str, Any], start: float):
    # stable-baselines3 takes seconds to import (it is loaded anyway once a model exists).
    from stable_baselines3.common.callbacks import BaseCallback

    class EvalCheckpoint(BaseCallback):
        """Evaluate every ``eval_freq`` steps; keep best and last (safe) + the train state."""

        def __init__(self) -> None:
            super().__init__()
            self.out = Path(cfg.out)
            self.next_eval = 0
            self.last_eval = -1
            self.last_updates = -1
            self.stop = False
            self.bar = None

        def _on_training_start(self) -> None:
            n = self.model.num_timesteps
            self.next_eval = (n // cfg.eval_freq + 1) * cfg.eval_freq if cfg.eval_freq else 0
            self.bar = progress_bar(total=cfg.timesteps, initial=n, unit="step", desc="training")

        def _on_rollout_start(self) -> None:
            # Between rollouts the weights are those of the latest update (evaluating in
            # _on_step would judge, and save, the weights from before it).
            n = self.model.num_timesteps
            if cfg.eval_freq and n >= self.next_eval:
                self.next_eval += cfg.eval_freq * ((n - self.next_eval) // cfg.eval_freq + 1)
                self.stop = not self.evaluate()

        def _on_step(self) -> bool:
            if self.bar is not None:
                self.bar.update(self.model.num_timesteps - self.bar.n)
            return not self.stop

        def _on_training_end(self) -> None:
            if self.bar is not None:
                self.bar.close()
            # Skip when nothing was learned since the last evaluation (e.g. a solved stop).
            if self.last_eval < 0 or self.last_updates != self.model._n_updates:
                self.evaluate()

        def evaluate(self) -> bool:
            model = self.model
            record, stats = policy_record(cfg, model, norm)
            pilot = SB3Pilot(model.policy, record, obs_norm_stats=stats, device=model.device)
            t0 = time.perf_counter()
            results = evaluate_pilot(
                pilot,
                tracks=cfg.resolved_eval_tracks,
                directions=cfg.directions,
                laps=cfg.eval_laps,
                obs_mode=cfg.env_obs_mode,
                image_size=cfg.image_size,
                fixed_speed=cfg.fixed_speed,
                seed=cfg.seed,
                weights=reward_weights(cfg),
            )
            model.policy.set_training_mode(True)
            progress["eval_s"] = progress.get("eval_s", 0.0) + time.perf_counter() - t0
            summ = _summary(results)
            n = int(model.num_timesteps)
            elapsed = progress["elapsed_s"] + time.perf_counter() - start
            line = {
                "timesteps": n,
                "elapsed_s": round(elapsed, 1),
                "eval_s": round(time.perf_counter() - t0, 2),
                **summ,
                "results": results,
            }
            with open(self.out / "evaluations.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(line) + "\n")
            for key in ("mean_return", "laps_fraction", "completed"):
                self.logger.record(f"eval/{key}", summ[key])
            self.logger.dump(n)
            extra = {"eval": {"timesteps": n, **summ}}
            best = progress.get("best_score")
            if best is None or summ["mean_return"] > best:
                progress["best_score"] = summ["mean_return"]
                progress["best_timesteps"] = n
                export_policy(cfg, model, norm, self.out, "best", extra)
            if summ["solved"] and progress.get("first_solved") is None:
                progress["first_solved"] = {"timesteps": n, "elapsed_s": round(elapsed, 1)}
            export_policy(cfg, model, norm, self.out, "last", extra)
            save_train_state(model, norm, self.out, {**progress, "elapsed_s": elapsed})
            self.last_eval = n
            self.last_updates = model._n_updates
            logger.info(
                "step %d (%.0f s): eval return %.1f, %d/%d episodes completed %d laps%s",
                n,
                elapsed,
                summ["mean_return"],
                summ["completed"],
                summ["episodes"],
                cfg.eval_laps,
                " -- solved" if summ["solved"] else "",
            )
            if summ["solved"] and cfg.stop_when_solved:
                logger.info("every eval episode completed its laps: stopping (--stop-when-solved)")
                return False
            return True

    return EvalCheckpoint()


def train(cfg: RLConfig, *, resume: bool = False) -> dict[str, Any]:
    """Train (or resume) a run; returns a summary. Writes into ``cfg.out``."""
    if not cfg.out:
        raise ValueError("an output directory (--out) is required")
    out = Path(cfg.out)
    state_path = out / "train_state.json"
    progress: dict[str, Any] = {"elapsed_s": 0.0, "best_score": None, "first_solved": None}
    prior = None
    if resume and not state_path.exists():
        logger.warning(
            "%s: no saved training state (the run stopped before its first evaluation): "
            "starting it fresh",
            out,
        )
        resume = False
    if resume:
        prior, _ = read_train_state(out)
        progress.update({k: prior.get(k) for k in ("best_score", "best_timesteps", "first_solved")})
        progress["elapsed_s"] = float(prior.get("elapsed_s", 0.0))
    elif state_path.exists():
        raise ValueError(f"{out} already holds a run: pass --resume or choose another --out")
    check_tracks((*cfg.track_pool, *cfg.resolved_eval_tracks))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", cfg.resolved())

    torch.set_num_threads(cfg.resolved_torch_threads)
    done = int(prior["num_timesteps"]) if prior else 0
    try:
        venv, norm = build_vec_env(cfg)
    except KeyboardInterrupt as exc:
        raise type(exc)(_unchanged(out, resume)) from None
    try:
        summary = _learn(cfg, venv, norm, progress, out, resume, done)
    except BaseException:
        # Ctrl-C may have cut a message in half: stop the workers, do not talk to them.
        close_vec_env(venv, graceful=False)
        raise
    close_vec_env(venv)
    return summary


def _unchanged(out: Path, resume: bool) -> str:
    if resume:
        return f"before training resumed; the saved state in {out} is unchanged"
    return f"before training started; nothing saved in {out}"


def _learn(
    cfg: RLConfig, venv, norm, progress: dict[str, Any], out: Path, resume: bool, done: int
) -> dict[str, Any]:
    try:
        # A resumed run reseeds with the step count so it does not replay its first episodes.
        model = build_model(cfg, venv, seed=cfg.seed + done)
        if resume:
            load_train_state(model, norm, out)
            logger.info("resuming %s at step %d", out, model.num_timesteps)
    except KeyboardInterrupt as exc:
        raise type(exc)(_unchanged(out, resume)) from None
    remaining = cfg.timesteps - model.num_timesteps
    start = time.perf_counter()
    if remaining > 0:
        callback = _callback(cfg, norm, progress, start)
        try:
            model.learn(
                remaining,
                callback=callback,
                reset_num_timesteps=not resume,
                tb_log_name=cfg.algo,
            )
        except KeyboardInterrupt as exc:
            # Ctrl-C or SIGTERM (tracks.cli): keep what was learned, resumable.
            if callback.bar is not None:
                callback.bar.close()
            export_policy(cfg, model, norm, out, "last")
            save_train_state(
                model,
                norm,
                out,
                {**progress, "elapsed_s": progress["elapsed_s"] + time.perf_counter() - start},
            )
            raise type(exc)(
                f"saved last.json/.safetensors and the training state at step "
                f"{int(model.num_timesteps)} in {out}; continue with --resume --out {out}"
            ) from None
    else:
        logger.info("%s already has %d >= %d steps", out, model.num_timesteps, cfg.timesteps)
    wall = time.perf_counter() - start
    learn_s = wall - progress.get("eval_s", 0.0)
    return {
        "out": str(out),
        "timesteps": int(model.num_timesteps),
        "wall_s": round(wall, 1),
        "eval_s": round(progress.get("eval_s", 0.0), 1),
        # Training throughput: env steps per second of wall time outside evaluations.
        "steps_per_s": round((model.num_timesteps - done) / learn_s, 1) if learn_s > 0 else None,
        "best_score": progress.get("best_score"),
        "best_timesteps": progress.get("best_timesteps"),
        "first_solved": progress.get("first_solved"),
    }
