"""builders/ogbench.py against the real ogbench package, MuJoCo and Minari (no mocks)."""

import gymnasium as gym
import minari
import numpy as np
import ogbench
import pytest

import collect
from config import UsageError
from builders.ogbench import (DEFAULT_TASK, PLAY_DATASETS, generate_play_dataset, load_singletask,
                              official_npz_path, parse_singletask_id, reaches_success,
                              run_eval_episode,
                              singletask_episodes, singletask_ids)

CUBE_TASK2_GOAL = np.array([0.50, 0.0, 0.02])  # cube_env.py, task2_vertical1 goal_xyzs
CUBE_QPOS = slice(14, 17)                      # qpos of the cube's position (after 14 robot joints)


def write_ogbench_npz(path, episodes, nq, nv=None, buttons=None):
    """An npz as OGBench's driver writes it: rows = states before each step, episodes back to
    back, terminals True at each episode's last row. `episodes` is a list of dicts with the
    per-row `qpos` (R, nq) or `button_states` (R, buttons); observations are
    obs[r] = (episode, r, r, ...) and actions[r] = r / 10, so alignment can be checked."""
    rows = {k: [] for k in ("observations", "actions", "terminals", "qpos", "qvel", "button_states")}
    for e, ep in enumerate(episodes):
        n = len(ep["qpos"]) if "qpos" in ep else len(ep["button_states"])
        r = np.arange(n, dtype=np.float32)
        obs = np.tile(r[:, None], (1, 28))
        obs[:, 0] = e
        rows["observations"].append(obs)
        rows["actions"].append(np.tile(r[:, None] / 10, (1, 5)))
        rows["terminals"].append(np.arange(n) == n - 1)
        rows["qpos"].append(ep.get("qpos", np.zeros((n, nq))))
        rows["qvel"].append(np.zeros((n, nv or nq)))
        if buttons is not None:
            rows["button_states"].append(ep["button_states"])
    dtypes = {"terminals": bool, "button_states": np.int64}
    arrays = {k: np.concatenate(v).astype(dtypes.get(k, np.float32)) for k, v in rows.items() if v}
    np.savez_compressed(path, **arrays)
    return path


@pytest.fixture
def cube_npz(tmp_path):
    """Two cube-single episodes. Episode 0: the cube at these x offsets from task 2's goal:
    0.10 no, 0.039 yes, 0.0 yes, 0.041 no, 0.02 yes | final state 0.5. Episode 1: 3 rows, the
    cube on the goal in the middle one only."""
    def cube_at(offsets):
        qpos = np.zeros((len(offsets), 21))
        qpos[:, CUBE_QPOS] = CUBE_TASK2_GOAL + np.outer(offsets, [1.0, 0.0, 0.0])
        return {"qpos": qpos}
    return write_ogbench_npz(tmp_path / "cube-single-play-v0.npz",
                             [cube_at([0.10, 0.039, 0.0, 0.041, 0.02, 0.5]), cube_at([0.3, 0.0, 0.3])],
                             nq=21, nv=20)


# --------------------------------------------------------------------------------------------
# Regenerating play data
# --------------------------------------------------------------------------------------------

def test_builder_writes_ogbench_layout_and_ogbench_reads_it(tmp_path):
    path = generate_play_dataset("cube-single-play-v0", 2, seed=3, out_path=tmp_path / "c.npz",
                                 workers=2, progress=False, episode_length=30)
    with np.load(path) as file:
        data = {k: file[k] for k in file.files}
    assert set(data) == {"observations", "actions", "terminals", "qpos", "qvel"}
    assert {k: (v.shape, v.dtype) for k, v in data.items()} == {
        "observations": ((60, 28), np.float32), "actions": ((60, 5), np.float32),
        "terminals": ((60,), bool), "qpos": ((60, 21), np.float32), "qvel": ((60, 20), np.float32)}
    assert np.flatnonzero(data["terminals"]).tolist() == [29, 59]
    assert np.abs(data["actions"]).max() <= 1.0 and np.abs(data["actions"]).max() > 0.1
    # qpos is the state before the step, like the observation: the arm joints agree
    np.testing.assert_array_equal(data["observations"][:, :6], data["qpos"][:, :6])
    assert not np.array_equal(data["observations"][:30], data["observations"][30:])

    # OGBench's own loader: 29 transitions per episode, next state = the following row
    loaded = ogbench.load_dataset(str(path))
    assert loaded["observations"].shape == (58, 28)
    np.testing.assert_array_equal(loaded["next_observations"][:29], data["observations"][1:30])
    np.testing.assert_array_equal(loaded["terminals"][[28, 57]], [1.0, 1.0])

    # the same seed gives the same arrays in one process; another seed does not
    same = generate_play_dataset("cube-single-play-v0", 2, seed=3, out_path=tmp_path / "d.npz",
                                 workers=1, progress=False, episode_length=30)
    with np.load(same) as file:
        for k, v in data.items():
            np.testing.assert_array_equal(file[k], v, err_msg=k)

    # and the single-task converter reads the regenerated file: 29 transitions, 30 observations
    episodes = load_singletask(path, "ogbench/cube-single-play-singletask-task2-v0")
    assert [len(ep["obs"]) for ep in episodes] == [30, 30]
    assert [len(ep["rewards"]) for ep in episodes] == [29, 29]
    np.testing.assert_array_equal(episodes[1]["obs"], data["observations"][30:])
    # ... exactly as OGBench's own single-task pipeline does (it wants a -val file beside it)
    (tmp_path / "c-val.npz").write_bytes(path.read_bytes())
    env, train, _ = ogbench.make_env_and_datasets("cube-single-play-singletask-task2-v0",
                                                  dataset_path=str(path))
    env.close()
    for key, ours in [("rewards", "rewards"), ("masks", "masks"), ("observations", "obs"),
                      ("actions", "actions")]:
        rows = [ep[ours][:29] for ep in episodes]  # obs: the 29 transitions' first states
        np.testing.assert_array_equal(np.concatenate(rows), train[key], err_msg=key)


@pytest.mark.parametrize("name, obs_dim, nq, buttons", [("puzzle-3x3-play-v0-val", 55, 23, 9),
                                                        ("scene-play-v0", 40, 25, 2)])
def test_builder_records_button_states(tmp_path, name, obs_dim, nq, buttons):
    path = generate_play_dataset(name, 1, seed=0, out_path=tmp_path / f"{name}.npz", workers=1,
                                 progress=False, episode_length=20)
    with np.load(path) as file:
        assert file["observations"].shape == (20, obs_dim)
        assert file["qpos"].shape == (20, nq)
        assert file["button_states"].dtype == np.int64
        assert file["button_states"].shape == (20, buttons)
        assert set(np.unique(file["button_states"])) <= {0, 1}
    loaded = ogbench.load_dataset(str(path), add_info=True)
    assert loaded["button_states"].shape == (19, buttons)


def test_validation_split_uses_other_seeds(tmp_path):
    paths = [generate_play_dataset(name, 1, seed=0, out_path=tmp_path / f"{name}.npz", workers=1,
                                   progress=False, episode_length=5)
             for name in ("cube-single-play-v0", "cube-single-play-v0-val")]
    train, val = (np.load(p)["qpos"] for p in paths)
    assert not np.allclose(train[0, CUBE_QPOS], val[0, CUBE_QPOS])  # another initial scene


def test_builder_refuses_bad_names_and_existing_files(tmp_path):
    with pytest.raises(ValueError, match="supported"):
        generate_play_dataset("cube-double-play-v0", 1, 0, tmp_path / "x.npz", progress=False)
    (tmp_path / "x.npz").write_bytes(b"")
    with pytest.raises(FileExistsError):
        generate_play_dataset("cube-single-play-v0", 1, 0, tmp_path / "x.npz", progress=False)


# --------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------

def test_singletask_ids_and_parsing():
    assert singletask_ids("cube-single-play-v0") == [
        f"ogbench/cube-single-play-singletask-task{k}-v0" for k in range(1, 6)]
    task = parse_singletask_id("ogbench/puzzle-3x3-play-singletask-task5-v0")
    assert (task.dataset_name, task.task, task.env_id) == (
        "puzzle-3x3-play-v0", 5, "puzzle-3x3-singletask-task5-v0")
    assert parse_singletask_id("scene-play-singletask-task1-v0").env_id == "scene-singletask-task1-v0"
    for bad in ["ogbench/cube-single-play-singletask-task6-v0", "ogbench/cube-double-play-singletask-v0",
                "ogbench/cube-single-noisy-singletask-task2-v0", "cube-single-singletask-task2-v0"]:
        with pytest.raises(ValueError):
            parse_singletask_id(bad)
    with pytest.raises(ValueError):
        singletask_ids("cube-single-v0")


@pytest.mark.parametrize("name", list(PLAY_DATASETS))
def test_bare_id_is_the_packages_default_task(name):
    """The package maps the bare id's reward_task_id=0 to its default task at construction."""
    bare = parse_singletask_id(f"ogbench/{name.removesuffix('-play-v0')}-play-singletask-v0")
    assert bare.task == DEFAULT_TASK[name]
    env = gym.make(bare.env_id)
    assert env.unwrapped._reward_task_id == DEFAULT_TASK[name]
    assert env.unwrapped.num_tasks == 5
    env.close()
    for k in range(1, 6):  # every explicit task id is registered, with OGBench's time limit
        assert gym.spec(parse_singletask_id(singletask_ids(name)[k - 1]).env_id).max_episode_steps == {
            "cube-single-play-v0": 200, "scene-play-v0": 750, "puzzle-3x3-play-v0": 500}[name]


def test_official_npz_path(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert official_npz_path("scene-play-v0") == tmp_path / ".ogbench/data/scene-play-v0.npz"
    assert official_npz_path("scene-play-v0-val", tmp_path / "d") == tmp_path / "d/scene-play-v0-val.npz"


# --------------------------------------------------------------------------------------------
# Single-task relabelling
# --------------------------------------------------------------------------------------------

def test_relabel_cube_by_hand(cube_npz):
    """cube-single has one component: reward = 1 - 1 = 0 on a success state, 0 - 1 = -1
    elsewhere; mask 0 exactly on success states. The last row of an episode is an observation
    only (its action has no next state)."""
    episodes = load_singletask(cube_npz, "ogbench/cube-single-play-singletask-task2-v0")
    assert len(episodes) == 2
    first, second = episodes
    np.testing.assert_array_equal(first["rewards"], [-1.0, 0.0, 0.0, -1.0, 0.0])
    np.testing.assert_array_equal(first["masks"], [1.0, 0.0, 0.0, 1.0, 0.0])
    np.testing.assert_array_equal(second["rewards"], [-1.0, 0.0])
    np.testing.assert_array_equal(second["masks"], [1.0, 0.0])
    assert first["rewards"].dtype == np.float64 and first["obs"].dtype == np.float32
    np.testing.assert_array_equal(first["obs"][:, 1], np.arange(6))  # all 6 rows, in order
    np.testing.assert_array_equal(second["obs"][:, 0], 1.0)
    np.testing.assert_allclose(first["actions"][:, 0], np.arange(5) / 10)
    # another task moves the goal: task 3's goal (0.35, 0, 0.02) is never reached here
    other = load_singletask(cube_npz, "cube-single-play-singletask-task3-v0")
    np.testing.assert_array_equal(other[0]["rewards"], -np.ones(5))


def test_relabel_puzzle_by_hand_and_bare_id(tmp_path):
    """puzzle-3x3 task 4: all nine buttons in state 1 (puzzle_env.py). Rows with k buttons off
    score -k; mask 0 only when none is off."""
    off = [9, 3, 0, 1, 0]  # buttons off per row; the last row is the final state
    states = np.ones((len(off), 9), dtype=np.int64)
    for row, k in enumerate(off):
        states[row, :k] = 0
    path = write_ogbench_npz(tmp_path / "puzzle-3x3-play-v0.npz", [{"button_states": states}],
                             nq=23, buttons=9)
    for task_id in ["ogbench/puzzle-3x3-play-singletask-task4-v0", "ogbench/puzzle-3x3-play-singletask-v0"]:
        (episode,) = load_singletask(path, task_id)
        np.testing.assert_array_equal(episode["rewards"], [-9.0, -3.0, 0.0, -1.0])
        np.testing.assert_array_equal(episode["masks"], [1.0, 1.0, 0.0, 1.0])
    # Q-chunking's sparse reward on the same hand-labelled episode: -1 until every button is
    # on, 0 in the success state; the masks are OGBench's, unchanged.
    sparse_id = "ogbench/puzzle-3x3-play-singletask-task4-sparse-v0"
    task = parse_singletask_id(sparse_id)
    assert task.sparse and task.task == 4 and task.env_id == "puzzle-3x3-singletask-task4-v0"
    assert not parse_singletask_id("ogbench/puzzle-3x3-play-singletask-task4-v0").sparse
    (episode,) = load_singletask(path, sparse_id)
    np.testing.assert_array_equal(episode["rewards"], [-1.0, -1.0, 0.0, -1.0])
    np.testing.assert_array_equal(episode["masks"], [1.0, 1.0, 0.0, 1.0])
    assert parse_singletask_id("ogbench/puzzle-3x3-play-singletask-sparse-v0").task == 4
    with pytest.raises(ValueError, match="button_states"):
        load_singletask(write_ogbench_npz(tmp_path / "no-buttons.npz", [{"qpos": np.zeros((3, 23))}],
                                          nq=23), "puzzle-3x3-play-singletask-task4-v0")


# --------------------------------------------------------------------------------------------
# Minari and evaluation
# --------------------------------------------------------------------------------------------

def write_minari_singletask(dataset_id, npz_path, source, overwrite=False):
    buffers, metadata = singletask_episodes(dataset_id, npz_path, source)
    return collect.write_dataset(dataset_id, buffers, overwrite, **metadata)


def test_minari_singletask_dataset(cube_npz, minari_path):
    dataset_id = "ogbench/cube-single-play-singletask-task2-v0"
    dataset = write_minari_singletask(dataset_id, cube_npz, "official")
    assert dataset.total_episodes == 2 and dataset.total_steps == 7
    first, second = dataset.iterate_episodes()
    np.testing.assert_array_equal(first.rewards, [-1.0, 0.0, 0.0, -1.0, 0.0])
    np.testing.assert_array_equal(first.infos["mask"], [1.0, 0.0, 0.0, 1.0, 0.0, 1.0])
    assert first.infos["mask"].dtype == np.float32
    assert first.observations.shape == (6, 28) and first.actions.shape == (5, 5)
    assert not first.terminations.any() and not second.terminations.any()
    np.testing.assert_array_equal(first.truncations, [False] * 4 + [True])
    np.testing.assert_array_equal(second.truncations, [False, True])
    np.testing.assert_array_equal(second.infos["mask"], [1.0, 0.0, 1.0])
    # a success state counts when a step leaves from it, not when only the final state has one
    assert reaches_success(first.infos) and reaches_success(second.infos)
    assert reaches_success({"mask": np.array([1.0, 1.0, 0.0])}) is False
    assert reaches_success({}) is None and reaches_success(None) is None
    assert "reach the task's success state: 100.0%" in collect.summarize(dataset)

    reloaded = minari.load_dataset(dataset_id)
    assert "official" in reloaded.storage.metadata["description"]
    assert reloaded.spec.env_spec.kwargs["mode"] == "data_collection"
    eval_env = reloaded.recover_environment(eval_env=True)
    assert eval_env.spec.id == "cube-single-singletask-task2-v0"
    assert eval_env.spec.max_episode_steps == 200
    eval_env.close()
    assert not any(p.name.startswith(".building") for p in minari_path.iterdir())
    with pytest.raises(UsageError, match="already exists"):
        write_minari_singletask(dataset_id, cube_npz, "official")
    replaced = write_minari_singletask(dataset_id, cube_npz, "regenerated", overwrite=True)
    assert "regenerated" in replaced.storage.metadata["description"]
    # The sparse twin records its reward in the dataset itself (rewards and description).
    sparse = write_minari_singletask("ogbench/cube-single-play-singletask-task2-sparse-v0",
                                     cube_npz, "regenerated")
    assert "sparse reward" in sparse.storage.metadata["description"]
    np.testing.assert_array_equal(next(sparse.iterate_episodes()).rewards,
                                  [-1.0, 0.0, 0.0, -1.0, 0.0])


def test_eval_env_reports_success():
    result = run_eval_episode("cube-single-singletask-task2-v0", "zero", seed=0)
    assert result == {"steps": 200, "return": -200.0, "success": False, "terminated": False,
                      "truncated": True}


def test_success_masks_stop_bootstrapping_without_cutting_episodes(cube_npz, minari_path):
    """Masks [1, 0, 0, 1, 0 | 1] and [1, 0 | 1]: every chunk holding a mask-0 step ends there
    (reward to it, no bootstrap), but the episodes stay whole (7 windows, unbroken history)."""
    from config import TrainConfig
    from dataset import MinariDataModule
    dataset_id = "ogbench/cube-single-play-singletask-task2-v0"
    write_minari_singletask(dataset_id, cube_npz, "official")
    cfg = TrainConfig(dataset=dataset_id, obs_horizon=2, pred_horizon=2, action_horizon=2,
                      val_fraction=0.0, gamma=0.5)
    windows = MinariDataModule(cfg, minari.load_dataset(dataset_id)).train_set.index
    assert len(windows["terminal"]) == 7
    assert windows["terminal"].tolist() == [True] * 7
    assert windows["valid_steps"].tolist() == [2, 1, 1, 2, 1, 2, 1]
    # rewards [-1, 0, 0, -1, 0] and [-1, 0]: the chunk at step 3 sums -1 + 0.5 * 0.
    assert windows["chunk_reward"].tolist() == [-1.0, 0.0, 0.0, -1.0, 0.0, -1.0, 0.0]
    assert windows["obs"][2].tolist() == [1, 2]            # history runs through step 1


def test_a_single_task_id_trains_and_tests_with_a_success_rate(tmp_path):
    """`main.py train --dataset ogbench/...-singletask-task2-v0` builds the Minari dataset from a
    regenerated play file, trains; `main.py test` evaluates in the single-task env and reports
    the success rate, and the online evaluation during training logs it too; a play id is
    refused as a training set."""
    import json
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    folder = tmp_path / "regenerated"
    generate_play_dataset("cube-single-play-v0", 3, seed=0, workers=1, progress=False,
                          out_path=folder / "cube-single-play-v0.npz", episode_length=40)
    env = {**os.environ, "HOME": str(tmp_path), "MINARI_DATASETS_PATH": str(tmp_path / "minari"),
           "MEANFLOW_QL_OGBENCH_DIR": str(folder)}
    run = lambda *args: subprocess.run([sys.executable, str(root / "main.py"), *args], env=env,
                                       cwd=tmp_path, capture_output=True, text=True, timeout=600)
    dataset_id = "ogbench/cube-single-play-singletask-task2-v0"
    trained = run("train", "--dataset", dataset_id, "--max-updates", "8", "--batch-size", "16",
                  "--actor-hidden-dim", "32", "--critic-hidden-dim", "32", "--skip-online-eval",
                  "--val-every-updates", "4", "--eval-every", "1", "--eval-episodes", "1")
    assert trained.returncode == 0, trained.stderr
    assert re.search(r"validation at update 8: .*eval/success_rate [01]\.0000", trained.stdout)
    assert f"Using the regenerated OGBench file {folder / 'cube-single-play-v0.npz'}" \
        in trained.stdout
    tested = run("test", "--dataset", dataset_id, "--episodes", "2")
    assert tested.returncode == 0, tested.stderr
    assert "in cube-single-singletask-task2-v0 over 2 episodes" in tested.stdout
    assert "success rate:" in tested.stdout
    online = json.loads(next(tmp_path.glob("runs/*/checkpoints/last.online-test.json")).read_text())
    assert online["env"] == "cube-single-singletask-task2-v0"
    assert online["success_rate"] in (0.0, 0.5, 1.0)
    assert all(length <= 200 for length in [online["length_mean"]])
    refused = run("train", "--dataset", "ogbench/cube-single-play-v0", "--max-updates", "1")
    assert refused.returncode == 2 and "not one to train on" in refused.stderr
    assert "cube-single-play-singletask-task2-v0" in refused.stderr
