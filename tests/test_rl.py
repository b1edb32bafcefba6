"""Reinforcement learning: env compatibility, learning, safe save/load, resume, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.sb3_pilot import SB3Pilot, load_sb3_pilot
from training.rl import (
    EpisodeSampler,
    build_model,
    build_vec_env,
    export_policy,
    load_train_state,
    main,
    make_env,
    save_train_state,
)
from training.rl_config import RLConfig


@pytest.fixture(autouse=True)
def _one_thread():
    # Reproducible and fast for tiny networks; restored for other test modules.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _returns(policy_fn, seeds, max_steps: int = 300) -> np.ndarray:
    """Undiscounted returns on the oval from seeded random starts (fixed speed 2 m/s)."""
    from sim.env import TrackEnv

    env = EpisodeSampler(
        TrackEnv(track="oval", tracks=("oval",), obs_mode="state", fixed_speed=2.0),
        random_start=True,
    )
    out = []
    try:
        for s in seeds:
            obs, _ = env.reset(seed=s)
            env.action_space.seed(s)
            total = 0.0
            for _ in range(max_steps):
                obs, r, terminated, _, _ = env.step(policy_fn(obs, env))
                total += r
                if terminated:
                    break
            out.append(total)
    finally:
        env.close()
    return np.asarray(out)


@pytest.fixture(scope="module")
def trained_ppo():
    """A state PPO trained for 3072 steps on the oval (seeded, one env, one thread)."""
    torch.set_num_threads(1)
    cfg = RLConfig(
        tracks=("oval",),
        n_envs=1,
        n_steps=256,
        batch_size=64,
        timesteps=3072,
        seed=0,
        max_episode_steps=300,
    )
    venv, norm = build_vec_env(cfg)
    model = build_model(cfg, venv, tensorboard=False)
    seeds = range(100, 108)
    before = _returns(lambda o, e: model.predict(o, deterministic=True)[0], seeds)
    model.learn(cfg.timesteps)
    yield cfg, model, norm, before
    venv.close()


# --------------------------------------------------------------------------- env
@pytest.mark.parametrize(
    "kwargs",
    [
        {"obs_mode": "state", "fixed_speed": 2.0},
        {"obs_mode": "state"},
        {"obs_mode": "image", "image_size": (36, 36), "fixed_speed": 2.0},
        {"obs_mode": "image+state", "image_size": (36, 48)},
    ],
    ids=["state-fixed", "state-full", "image", "image+state"],
)
def test_env_passes_sb3_check_env(kwargs, tiny_track):
    from stable_baselines3.common.env_checker import check_env

    from sim.env import TrackEnv

    env = TrackEnv(track=tiny_track, **kwargs)
    try:
        check_env(env, warn=True, skip_render_check=True)
    finally:
        env.close()


def test_training_env_passes_check_env_and_samples_episodes():
    from stable_baselines3.common.env_checker import check_env

    cfg = RLConfig(tracks=("oval", "kidney"), generated=1, n_envs=1)
    env = make_env(cfg)()
    try:
        check_env(env, warn=True, skip_render_check=True)
        seen = set()
        env.reset(seed=3)
        for _ in range(12):
            _, info = env.reset()
            seen.add((info["track"].removesuffix("-rev"), info["direction"]))
        assert {t for t, _ in seen} == {"oval", "kidney", "gen-10000"}
        assert {d for _, d in seen} == {"ccw", "cw"}
    finally:
        env.close()


# --------------------------------------------------------------------------- learning
def test_short_ppo_beats_random_and_untrained_policy(trained_ppo):
    _, model, _, before = trained_ppo
    seeds = range(100, 108)
    rand = _returns(lambda o, e: e.action_space.sample(), seeds)
    after = _returns(lambda o, e: model.predict(o, deterministic=True)[0], seeds)
    # Random steering crashes within metres (~-3); the trained policy drives the 300
    # steps (~30 m of progress). Margins are wide; the run itself is seeded.
    assert after.mean() > rand.mean() + 10, (after, rand)
    assert after.mean() > before.mean() + 10, (after, before)


# --------------------------------------------------------------------------- save / load
def _compare_pilot_with_model(model, venv, pilot: SB3Pilot, steps: int) -> int:
    """Drive ``venv`` with model.predict; the pilot sees raw env frames only. Returns #steps."""
    base = venv.unwrapped
    keys = list(base.buf_obs)

    def raw():
        if keys == [None]:
            return base.buf_obs[None][0].copy()
        return {k: base.buf_obs[k][0].copy() for k in keys}

    obs = venv.reset()
    pilot.reset()
    for _ in range(steps):
        expected, _ = model.predict(obs, deterministic=True)
        got = pilot.act(raw(), {})
        n = expected.shape[-1]
        assert np.array_equal(got[:n], expected[0].astype(np.float32)), (got, expected)
        if n == 1:
            assert got[1] == 0.0
        obs, _, done, _ = venv.step(expected)
        if done[0]:
            pilot.reset()
    return steps


def test_round_trip_state_ppo_identical_actions(trained_ppo, tmp_path):
    cfg, model, norm, _ = trained_ppo
    path = export_policy(cfg, model, norm, tmp_path, "best")
    pilot = load_sb3_pilot(tmp_path)
    assert pilot.metadata()["checkpoint_sha256"] == json.loads(path.read_text())["weights_sha256"]
    venv, _ = build_vec_env(cfg)
    try:
        _compare_pilot_with_model(model, venv, pilot, 150)
    finally:
        venv.close()


@pytest.mark.parametrize(
    "overrides",
    [
        {"algo": "ppo", "obs": "both", "frame_stack": 2, "normalize": True, "image_size": (36, 40)},
        {"algo": "ppo", "obs": "image", "frame_stack": 3, "image_size": (36, 36)},
        {"algo": "sac", "obs": "state", "frame_stack": 2, "normalize": True, "fixed_speed": None},
        {"algo": "sac", "obs": "both", "frame_stack": 1, "image_size": (36, 36)},
    ],
    ids=["ppo-both-stack2-norm", "ppo-image-stack3", "sac-state-full-stack2-norm", "sac-both"],
)
def test_round_trip_stacked_normalised_identical_actions(overrides, tmp_path):
    cfg = RLConfig(
        tracks=("oval",), n_envs=1, seed=1, max_episode_steps=40, buffer_size=500, **overrides
    )
    venv, norm = build_vec_env(cfg)
    try:
        model = build_model(cfg, venv, tensorboard=False)
        # Let VecNormalize gather non-trivial statistics, then freeze them.
        venv.reset()
        for _ in range(30):
            venv.step(np.stack([venv.action_space.sample()]))
        if norm is not None:
            norm.training = False
        export_policy(cfg, model, norm, tmp_path, "p")
        pilot = load_sb3_pilot(tmp_path / "p.json")
        assert pilot.frame_stack == cfg.resolved_frame_stack
        _compare_pilot_with_model(model, venv, pilot, 60)
    finally:
        venv.close()


def test_bad_or_missing_checkpoint_is_value_error(trained_ppo, tmp_path):
    cfg, model, norm, _ = trained_ppo
    with pytest.raises(ValueError, match="not found"):
        load_sb3_pilot(tmp_path / "nothing")
    jpath = export_policy(cfg, model, norm, tmp_path, "p")
    wpath = tmp_path / "p.safetensors"
    good_json, good_weights = jpath.read_text(), wpath.read_bytes()

    jpath.write_text("{not json")
    with pytest.raises(ValueError, match="p.json"):
        load_sb3_pilot(jpath)
    jpath.write_text(json.dumps({**json.loads(good_json), "format": "something-else"}))
    with pytest.raises(ValueError, match="not a trackpilot SB3 policy"):
        load_sb3_pilot(jpath)

    jpath.write_text(good_json)
    wpath.write_bytes(good_weights[:-10])
    with pytest.raises(ValueError, match="p.safetensors.*sha256"):
        load_sb3_pilot(wpath)

    # Consistent sha256 but not a safetensors file.
    from sim.io_utils import sha256_bytes

    junk = b"\x00" * 64
    wpath.write_bytes(junk)
    jpath.write_text(json.dumps({**json.loads(good_json), "weights_sha256": sha256_bytes(junk)}))
    with pytest.raises(ValueError, match="not a valid safetensors"):
        load_sb3_pilot(jpath)

    # Valid file whose tensors do not fit the described network.
    wpath.write_bytes(good_weights)
    rec = json.loads(good_json)
    rec["policy_kwargs"]["net_arch"] = [32, 32]
    jpath.write_text(json.dumps(rec))
    with pytest.raises(ValueError, match="do not fit"):
        load_sb3_pilot(jpath)

    wpath.unlink()
    jpath.write_text(good_json)
    with pytest.raises(ValueError, match="p.safetensors"):
        load_sb3_pilot(jpath)


def test_pilot_rejects_wrong_observation(trained_ppo, tmp_path):
    cfg, model, norm, _ = trained_ppo
    pilot = load_sb3_pilot(export_policy(cfg, model, norm, tmp_path, "p"))
    with pytest.raises(ValueError, match="shape"):
        pilot.act(np.zeros(5, np.float32), {})
    assert pilot.act({"state": np.zeros(7, np.float32)}, {}).shape == (2,)


# --------------------------------------------------------------------------- resume
@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_train_state_round_trip(algo, tmp_path):
    cfg = RLConfig(
        algo=algo,
        tracks=("oval",),
        n_envs=1,
        n_steps=64,
        batch_size=32,
        learning_starts=32,
        buffer_size=500,
        normalize=True,
        max_episode_steps=50,
    )
    venv, norm = build_vec_env(cfg)
    try:
        model = build_model(cfg, venv, tensorboard=False)
        model.learn(128)
        save_train_state(model, norm, tmp_path, {"elapsed_s": 1.0})
        venv2, norm2 = build_vec_env(cfg)
        try:
            fresh = build_model(cfg, venv2, seed=99, tensorboard=False)
            load_train_state(fresh, norm2, tmp_path)
            assert fresh.num_timesteps == model.num_timesteps
            for (k, a), (_, b) in zip(
                model.policy.state_dict().items(), fresh.policy.state_dict().items(), strict=True
            ):
                assert torch.equal(a, b), k
            from training.rl import _optimizers

            for name, opt in _optimizers(model).items():
                sa, sb = opt.state_dict(), _optimizers(fresh)[name].state_dict()
                assert sa["state"].keys() == sb["state"].keys()
                for idx in sa["state"]:
                    for key, v in sa["state"][idx].items():
                        assert torch.equal(
                            torch.as_tensor(v), torch.as_tensor(sb["state"][idx][key])
                        )
            assert np.array_equal(norm.obs_rms.mean, norm2.obs_rms.mean)
            assert norm.ret_rms.count == norm2.ret_rms.count
        finally:
            venv2.close()
    finally:
        venv.close()


# --------------------------------------------------------------------------- CLI
_TINY = ["--tracks", "oval", "--n-steps", "128", "--batch-size", "64", "--eval-laps", "1"]


def test_cli_train_resume_eval(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--out", str(out), "--timesteps", "256", "--n-envs", "1", "--eval-freq", "128", *_TINY]
    assert main(args) == 0
    for name in (
        "config.json",
        "best.json",
        "best.safetensors",
        "last.json",
        "last.safetensors",
        "train_state.json",
        "train_state.safetensors",
        "evaluations.jsonl",
    ):
        assert (out / name).is_file(), name
    assert list((out / "tb").rglob("events.out.tfevents.*"))
    assert not list(out.glob("*.zip")) and not list(out.glob("*.pkl"))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["resolved"]["hyperparams"]["n_steps"] == 128
    evals = [json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines()]
    assert [e["timesteps"] for e in evals] == [128, 256]

    # An existing run is not overwritten; resume may not change the recipe.
    assert main(args) == 2
    assert main(["--resume", "--out", str(out), "--timesteps", "384", "--gamma", "0.9"]) == 2
    assert main(["--resume", "--out", str(out), "--timesteps", "384"]) == 0
    state = json.loads((out / "train_state.json").read_text())
    assert state["num_timesteps"] == 384

    capsys.readouterr()
    rc = main(["eval", str(out), "--tracks", "oval", "--directions", "cw", "--laps", "1"])
    assert rc in (0, 1)  # 1: the untrained pilot left the road
    report = json.loads((out / "eval-best.json").read_text())
    assert report["results"][0]["track"] == "oval" and report["results"][0]["direction"] == "cw"
    assert "oval" in capsys.readouterr().out

    assert main(["eval", str(tmp_path / "missing")]) == 2


def test_cli_rejects_bad_input(tmp_path):
    out = str(tmp_path / "r")
    assert main(["--out", out, "--obs", "image", "--image-size", "8x8"]) == 2
    assert main(["--out", out, "--directions", "up"]) == 2
    assert main(["--out", out, "--tracks", "nowhere"]) == 2
    assert main(["--timesteps", "10"]) == 2  # no --out
    with pytest.raises(SystemExit):
        main(["--out", out, "--algo", "dqn"])


def test_cli_sac_two_envs_full_control(tmp_path):
    out = tmp_path / "sac"
    args = [
        "--algo", "sac", "--out", str(out), "--timesteps", "200", "--n-envs", "2",
        "--full-control", "--learning-starts", "50", "--buffer-size", "1000",
        "--batch-size", "32", "--eval-freq", "0", "--tracks", "oval", "--eval-laps", "1",
    ]  # fmt: skip
    assert main(args) == 0
    pilot = load_sb3_pilot(out / "last.json")
    assert pilot.fixed_speed is None and pilot.record["action_meaning"] == ["steering", "throttle"]
    assert main(["--resume", "--out", str(out), "--timesteps", "300", "--n-envs", "1"]) == 0


@pytest.mark.slow
def test_cli_image_ppo_two_envs(tmp_path):
    out = tmp_path / "img"
    args = [
        "--obs", "image", "--image-size", "48x48", "--out", str(out), "--timesteps", "1024",
        "--n-envs", "2", "--eval-freq", "512", "--tracks", "oval", "--eval-laps", "1",
    ]  # fmt: skip
    assert main(args) == 0
    pilot = load_sb3_pilot(out)
    assert pilot.frame_stack == 2 and pilot.observation_space.shape == (48, 48, 3)


def test_config_round_trip_and_validation(tmp_path):
    cfg = RLConfig(out="x", obs="both", net_arch=(32, 16), image_size=(40, 40), generated=2)
    again = RLConfig.from_dict(json.loads(json.dumps(cfg.resolved())))
    assert again == cfg
    assert cfg.generated_tracks == ("gen:10000", "gen:10001")
    assert cfg.resolved_frame_stack == 2 and cfg.env_obs_mode == "image+state"
    for bad in ({"algo": "a2c"}, {"n_envs": 0}, {"gamma": 1.5}, {"tracks": (), "generated": 0}):
        with pytest.raises(ValueError):
            RLConfig(**bad)
    with pytest.raises(ValueError, match="unknown"):
        RLConfig.from_dict({"nope": 1})
    p = Path(tmp_path / "c.json")
    p.write_text("[]")
    with pytest.raises(ValueError, match="c.json"):
        RLConfig.load(p)
