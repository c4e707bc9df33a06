"""Environments a user meets through the CLI (issue #15, items 2 and 3): ones that cannot be made
or rebuilt, nested Dict observations, and a point-maze rollout with a success rate."""

import json
import os
import time
from pathlib import Path

import gymnasium as gym
import minari
import numpy as np
import pytest
from gymnasium.envs.registration import EnvSpec
from minari.data_collector import EpisodeBuffer

import collect
import tests.toy_envs  # noqa: F401 - registers NestedToy-v0
from in_process import run_here
from test_faults import run

ROOT = Path(__file__).resolve().parent.parent
MAIN, EVAL = str(ROOT / "main.py"), str(ROOT / "eval_online.py")
TINY = ["--batch-size", "16", "--actor-hidden-dim", "16", "--critic-hidden-dim", "16",
        "--obs-horizon", "1", "--pred-horizon", "2", "--action-horizon", "2",
        "--val-fraction", "0.25"]


def rollouts(env, episodes: int, seed: int, controller) -> list[EpisodeBuffer]:
    """Whole episodes of `controller(obs, rng)` as Minari episode buffers."""
    rng = np.random.default_rng(seed)
    buffers = []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        observations, actions, rewards, terms, truncs = [obs], [], [], [], []
        done = False
        while not done:
            action = controller(obs, rng)
            obs, reward, terminated, truncated, _ = env.step(action)
            observations.append(obs)
            actions.append(action)
            rewards.append(reward)
            terms.append(terminated)
            truncs.append(truncated)
            done = terminated or truncated
        stack = lambda items: ({k: stack([o[k] for o in items]) for k in items[0]}
                               if isinstance(items[0], dict) else np.stack(items))
        buffers.append(EpisodeBuffer(observations=stack(observations), actions=actions,
                                     rewards=rewards, terminations=terms, truncations=truncs))
    return buffers


def random_actions(obs, rng):
    return rng.uniform(-1, 1, 2).astype(np.float32)


@pytest.fixture(scope="module")
def nested(tmp_path_factory):
    """A nested-Dict dataset written with Minari's writer, and a checkpoint trained on it."""
    base = tmp_path_factory.mktemp("nested")
    env = {**os.environ, "MINARI_DATASETS_PATH": str(base / "minari")}
    with collect.datasets_root(env["MINARI_DATASETS_PATH"]):
        toy = gym.make("NestedToy-v0")
        buffers = rollouts(toy, 8, 0, random_actions)
        for dataset_id in ("toy/nested/dict-v0", "toy/nested/old-spec-v0"):
            minari.create_dataset_from_buffers(dataset_id, buffers, env=toy,
                                               algorithm_name="random")
    code, out, err = run([MAIN, "train", "--dataset", "toy/nested/dict-v0", "--max-updates",
                          "10", "--skip-online-eval", *TINY], env, base)
    assert code == 0, err
    checkpoint = next((base / "runs").glob("*/checkpoints/best.ckpt"))
    return {"env": env, "cwd": base, "checkpoint": checkpoint}


def online(checkpoint: Path) -> dict:
    return json.loads(checkpoint.with_name(checkpoint.stem + ".online-test.json").read_text())


def test_nested_dict_observations_give_the_same_returns_for_any_num_envs(nested, tmp_path):
    import imageio.v3 as iio

    env, cwd, checkpoint = nested["env"], nested["cwd"], nested["checkpoint"]
    video = tmp_path / "nested.gif"
    code, out, err = run([EVAL, "--checkpoint", str(checkpoint), "--episodes", "3",
                          "--num-envs", "1", "--video", str(video)], env, cwd)
    assert code == 0, err
    one = online(checkpoint)
    code, out, err = run([EVAL, "--checkpoint", str(checkpoint), "--episodes", "3",
                          "--num-envs", "2"], env, cwd)
    assert code == 0, err
    two = online(checkpoint)
    assert one["env"] == "NestedToy-v0" and len(one["returns"]) == 3
    # The same episodes; a batch of two goes through the network's matmuls differently, so the
    # float32 actions may differ in the last bits.
    assert two["returns"] == pytest.approx(one["returns"], abs=1e-6)
    assert len(set(one["returns"])) == 3                   # three different seeded episodes
    frames = iio.imread(video)
    assert frames.shape == (21, 32, 32, 3)                 # the reset frame and 20 steps


def test_an_environment_gymnasium_refuses_is_one_message(nested):
    code, out, err = run_here([EVAL, "--checkpoint", str(nested["checkpoint"]), "--env",
                               "Pusher-v4", "--episodes", "1"], nested["env"], nested["cwd"])
    assert code == 2 and "Traceback" not in err
    assert "Environment Pusher-v4 cannot be made" in err and "mujoco<3" in err


def gone_dataset(env):
    """A dataset whose environment lives in a package that is not installed: written with the
    toy env, then its stored spec pointed at the missing package (Minari's writer makes the env,
    so it cannot write such a dataset directly)."""
    toy = gym.make("NestedToy-v0")
    with collect.datasets_root(env["MINARI_DATASETS_PATH"]):
        minari.create_dataset_from_buffers("toy/gone/env-v0",
                                           rollouts(toy, 4, 0, random_actions), env=toy,
                                           algorithm_name="random")
    metadata_file = Path(env["MINARI_DATASETS_PATH"]) / "toy/gone/env-v0/data/metadata.json"
    metadata = json.loads(metadata_file.read_text())
    spec = json.loads(metadata["env_spec"])
    spec.update(id="Gone-v0", entry_point="gone_robotics_pkg.envs:GoneEnv")
    metadata["env_spec"] = json.dumps(spec)
    metadata_file.write_text(json.dumps(metadata))


def test_a_missing_environment_package_keeps_the_finished_training(nested, tmp_path):
    env, cwd = nested["env"], nested["cwd"]
    gone_dataset(env)
    runs = tmp_path / "runs"
    code, out, err = run([MAIN, "train", "--dataset", "toy/gone/env-v0", "--max-updates", "3",
                          "--output-dir", str(runs), *TINY], env, cwd)
    assert code == 2 and "Traceback" not in err
    assert "Finished after 3 updates" in out
    assert "Environment Gone-v0 cannot be made" in err
    assert "pip install gone-robotics-pkg" in err
    result = next(runs.glob("*/checkpoints/last.ckpt"))      # Q learning's result checkpoint
    assert "checkpoints are kept" in err and f"--checkpoint {result} --env ENV_ID" in err

    # With --eval-every the environment is made before the first update: no run is started.
    early = tmp_path / "early"
    start = time.monotonic()
    code, out, err = run_here([MAIN, "train", "--dataset", "toy/gone/env-v0", "--eval-every",
                               "1", "--output-dir", str(early), *TINY], env, cwd)
    assert code == 2 and "Traceback" not in err
    assert "pip install gone-robotics-pkg" in err and "Finished" not in out
    assert not early.exists()
    assert time.monotonic() - start < 60


def test_an_env_spec_from_an_older_gymnasium_still_trains(nested, tmp_path):
    env, cwd = nested["env"], nested["cwd"]
    metadata_file = (Path(env["MINARI_DATASETS_PATH"]) / "toy/nested/old-spec-v0/data"
                     / "metadata.json")
    metadata = json.loads(metadata_file.read_text())
    # What an older Minari/Gymnasium wrote: fields this Gymnasium's EnvSpec no longer has.
    metadata["env_spec"] = metadata["env_spec"].replace(
        '"order_enforce": true,',
        '"order_enforce": true, "autoreset": true, "apply_api_compatibility": true,')
    assert '"autoreset": true' in metadata["env_spec"]
    metadata_file.write_text(json.dumps(metadata))

    runs = tmp_path / "runs"
    code, out, err = run([MAIN, "train", "--dataset", "toy/nested/old-spec-v0",
                          "--max-updates", "3", "--output-dir", str(runs), *TINY], env, cwd)
    assert code == 0, err
    assert "cannot be rebuilt by this Gymnasium" in out and "autoreset" in out
    assert "Finished after 3 updates" in out and "--env ENV_ID" in out
    best = next(runs.glob("*/checkpoints/best.ckpt"))
    code, out, err = run_here([EVAL, "--checkpoint", str(best), "--episodes", "1"], env, cwd)
    assert code == 2 and "Traceback" not in err and "--env ENV_ID" in err
    code, out, err = run([EVAL, "--checkpoint", str(best), "--episodes", "2", "--env",
                          "tests.toy_envs:NestedToy-v0"], env, cwd)
    assert code == 0, err
    assert len(online(best)["returns"]) == 2


MAZE = [[1, 1, 1, 1, 1], [1, "r", 0, "g", 1], [1, 1, 1, 1, 1]]


def maze_controller(obs, rng):
    """Steers toward the goal, with noise, so some episodes succeed and some do not."""
    push = 5 * (obs["desired_goal"] - obs["achieved_goal"]) - 0.5 * obs["observation"][2:]
    return np.clip(push + rng.normal(0, 1.0, 2), -1, 1).astype(np.float32)


def test_point_maze_rollouts_report_a_success_rate(minari_path, tmp_path):
    import gymnasium_robotics

    from policy import MeanFlowPolicy

    gym.register_envs(gymnasium_robotics)
    maze = gym.make("PointMaze_UMaze-v3", maze_map=MAZE, continuing_task=False,
                    max_episode_steps=40)
    minari.create_dataset_from_buffers("toy/pointmaze/tiny-v0",
                                       rollouts(maze, 6, 0, maze_controller), env=maze,
                                       algorithm_name="noisy controller")
    env = {**os.environ}
    code, out, err = run([MAIN, "train", "--dataset", "toy/pointmaze/tiny-v0", "--max-updates",
                          "10", "--skip-online-eval", "--output-dir", str(tmp_path / "runs"),
                          *TINY], env, tmp_path)
    assert code == 0, err
    best = next((tmp_path / "runs").glob("*/checkpoints/best.ckpt"))
    code, out, err = run([EVAL, "--checkpoint", str(best), "--episodes", "4"], env, tmp_path)
    assert code == 0, err
    summary = online(best)
    assert 0 <= summary["success_rate"] <= 1 and "success rate:" in out

    # The same four episodes (test seeds), stepped here: the rate is the share whose final info
    # says success.
    from config import TEST_SEED
    policy = MeanFlowPolicy.from_checkpoint(best, seed=TEST_SEED)
    finals, returns = [], []
    for i in range(4):
        rollout_env = gym.make(minari.load_dataset("toy/pointmaze/tiny-v0").spec.env_spec)
        obs, _ = rollout_env.reset(seed=TEST_SEED + i)
        policy.reset()
        policy.reset(0, seed=TEST_SEED + i)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, info = rollout_env.step(policy.act(obs))
            total += reward
            done = terminated or truncated
        finals.append(bool(info["success"]))
        returns.append(total)
    assert summary["returns"] == pytest.approx(returns)
    assert summary["success_rate"] == pytest.approx(np.mean(finals))
