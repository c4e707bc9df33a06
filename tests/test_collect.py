"""collect.py against real Minari and MuJoCo: tiny datasets in a temporary MINARI_DATASETS_PATH."""

import os
import subprocess
import sys

import gymnasium as gym
import minari
import numpy as np
import pytest

import collect
from builders.pusher import PusherExpert
from config import UsageError

PENDULUM = "local/invertedpendulum/medium-v0"
PUSHER_IDS = ["local/pusher/expert-v0", "local/pusher/medium-v0", "local/pusher/mixed-v0"]


@pytest.fixture
def store(tmp_path, monkeypatch):
    """An empty Minari store (Minari reads MINARI_DATASETS_PATH at call time) and few reference
    episodes, so each build stays fast."""
    path = tmp_path / "datasets"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(path))
    monkeypatch.setenv(collect.REF_EPISODES_ENV, "3")
    monkeypatch.delenv(collect.EPISODES_ENV, raising=False)
    return path


def arrays(dataset):
    return [(ep.observations, ep.actions, ep.rewards, ep.terminations, ep.truncations)
            for ep in dataset.iterate_episodes()]


def same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for ea, eb in zip(a, b) for x, y in zip(ea, eb))


@pytest.mark.parametrize("dataset_id", PUSHER_IDS)
def test_pusher_builds_load_back_with_plain_minari(store, dataset_id):
    collect.build_local_dataset(dataset_id, num_episodes=3, progress=False)
    dataset = minari.load_dataset(dataset_id)  # a fresh load, not the returned object
    assert dataset.spec.dataset_id == dataset_id
    assert dataset.total_episodes == 3 and dataset.total_steps == 300
    assert dataset.observation_space.shape == (23,)
    assert dataset.action_space.shape == (7,) and np.all(dataset.action_space.high == 2.0)
    assert dataset.spec.env_spec.id == "Pusher-v5"
    assert dataset.recover_environment(eval_env=True).spec.id == "Pusher-v5"
    metadata = dataset.storage.metadata
    assert metadata["ref_max_score"] > metadata["ref_min_score"] + 50
    assert metadata["num_episodes_average_score"] == 3
    assert "seed 0+i" in metadata["description"] and "3 episodes" in metadata["description"]
    for episode in dataset.iterate_episodes():
        assert len(episode.rewards) == 100 and episode.truncations[-1] and not episode.terminations.any()
        assert np.all(np.abs(episode.actions) <= 2.0)
    assert dataset_id in minari.list_local_datasets()
    assert [on_disk for i, on_disk, _ in collect.list_local_datasets() if i == dataset_id] == [True]


def test_normalised_scores_expert_near_100_random_near_0(store):
    dataset = collect.build_local_dataset("local/pusher/mixed-v0", num_episodes=6, progress=False)
    returns = np.array([ep.rewards.sum() for ep in dataset.iterate_episodes()])
    scores = 100 * minari.get_normalized_score(dataset, returns)
    expert, medium, random = scores[0::3], scores[1::3], scores[2::3]
    # 2 episodes per behaviour and 3 reference episodes: loose bounds, but far apart
    assert abs(expert.mean() - 100) < 35 and abs(random.mean()) < 20, scores
    assert expert.min() > medium.max() and medium.min() > random.max(), scores
    ref_min, ref_max = dataset.storage.metadata["ref_min_score"], dataset.storage.metadata["ref_max_score"]
    assert np.isclose(minari.get_normalized_score(dataset, np.array(ref_max)), 1.0)
    assert np.isclose(minari.get_normalized_score(dataset, np.array(ref_min)), 0.0)


def test_same_seed_same_arrays_other_seed_differs(store):
    first = arrays(collect.build_local_dataset("local/pusher/medium-v0", 2, seed=3, progress=False))
    again = arrays(collect.build_local_dataset("local/pusher/medium-v0", 2, seed=3, overwrite=True,
                                               progress=False))
    other = arrays(collect.build_local_dataset("local/pusher/medium-v0", 2, seed=4, overwrite=True,
                                               progress=False))
    assert same(first, again)
    assert not same(first, other)


def test_existing_dataset_is_kept_unless_overwrite(store):
    collect.build_local_dataset(PENDULUM, num_episodes=4, seed=0, progress=False)
    before = arrays(minari.load_dataset(PENDULUM))
    data_files = sorted((store / PENDULUM / "data").rglob("*"))
    stamps = [(f, f.stat().st_mtime_ns) for f in data_files]
    with pytest.raises(UsageError, match="--overwrite"):
        collect.build_local_dataset(PENDULUM, num_episodes=6, seed=1, progress=False)
    assert [(f, f.stat().st_mtime_ns) for f in data_files] == stamps
    assert same(arrays(minari.load_dataset(PENDULUM)), before)

    collect.build_local_dataset(PENDULUM, num_episodes=6, seed=1, overwrite=True, progress=False)
    replaced = minari.load_dataset(PENDULUM)
    assert replaced.total_episodes == 6 and not same(arrays(replaced), before)
    assert list(minari.list_local_datasets()) == [PENDULUM]
    assert [p.name for p in store.iterdir() if p.name.startswith(".")] == []  # no staging left


@pytest.mark.parametrize("where", ["episode loop", "while writing"])
def test_interrupted_build_leaves_nothing(store, monkeypatch, where):
    if where == "episode loop":
        calls = []
        real_run_episode = collect.run_episode

        def run_episode(*args, **kwargs):
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt
            return real_run_episode(*args, **kwargs)

        monkeypatch.setattr(collect, "run_episode", run_episode)
    else:  # Minari has written the whole dataset into the staging folder, then Ctrl-C
        real_create = minari.create_dataset_from_buffers

        def create(*args, **kwargs):
            real_create(*args, **kwargs)
            raise KeyboardInterrupt

        monkeypatch.setattr(minari, "create_dataset_from_buffers", create)
    with pytest.raises(KeyboardInterrupt):
        collect.build_local_dataset(PENDULUM, num_episodes=5, progress=False)
    with pytest.raises(FileNotFoundError):
        minari.load_dataset(PENDULUM)
    assert minari.list_local_datasets() == {}
    assert not (store / PENDULUM).exists()
    assert [p.name for p in store.iterdir() if p.name.startswith(".")] == []
    assert [on_disk for i, on_disk, _ in collect.list_local_datasets() if i == PENDULUM] == [False]


def test_interrupted_overwrite_keeps_the_old_dataset(store, monkeypatch):
    collect.build_local_dataset(PENDULUM, num_episodes=3, progress=False)
    before = arrays(minari.load_dataset(PENDULUM))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(minari, "create_dataset_from_buffers", interrupted)
    with pytest.raises(KeyboardInterrupt):
        collect.build_local_dataset(PENDULUM, num_episodes=5, seed=7, overwrite=True, progress=False)
    assert same(arrays(minari.load_dataset(PENDULUM)), before)


def test_unknown_id_lists_buildable_ids(store, capsys):
    with pytest.raises(UsageError) as error:
        collect.build_local_dataset("local/pusher/nonsense-v0")
    for dataset_id in collect.LOCAL_DATASETS:
        assert dataset_id in str(error.value)
    assert collect.main(["--dataset", "local/cheetah/expert-v0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and PENDULUM in err and "Traceback" not in err
    assert collect.is_local("local/pusher/expert-v0") and not collect.is_local("mujoco/pusher/expert-v0")


def test_pendulum_has_terminated_and_truncated_episodes(store):
    dataset = collect.build_local_dataset(PENDULUM, num_episodes=20, progress=False)
    ends = [(bool(ep.terminations[-1]), bool(ep.truncations[-1]), len(ep.rewards))
            for ep in dataset.iterate_episodes()]
    assert any(term and length < 100 for term, _, length in ends)
    assert any(trunc and length == 100 for _, trunc, length in ends)
    assert all(term != trunc for term, trunc, _ in ends)
    env = minari.load_dataset(PENDULUM).recover_environment()
    assert env.spec.id == "InvertedPendulum-v5" and env.spec.max_episode_steps == 100


def test_episode_count_env_var_sets_the_default(store, monkeypatch):
    monkeypatch.setenv(collect.EPISODES_ENV, "2")
    assert collect.build_local_dataset(PENDULUM, progress=False).total_episodes == 2
    monkeypatch.setenv(collect.EPISODES_ENV, "zero")
    with pytest.raises(UsageError, match=collect.EPISODES_ENV):
        collect.build_local_dataset(PENDULUM, overwrite=True, progress=False)


def test_controller_only_reads_the_simulation():
    env = gym.make("Pusher-v5")
    obs, _ = env.reset(seed=0)
    env.step(env.action_space.sample())
    data = env.unwrapped.data
    before = {name: getattr(data, name).copy() for name in ("qpos", "qvel", "xpos", "xmat", "qacc", "ctrl")}
    controller = PusherExpert(env)
    action = controller(obs)
    assert action.shape == (7,) and np.all(np.abs(action) <= 2.0) and np.any(action != 0)
    for name, value in before.items():
        assert np.array_equal(getattr(data, name), value), name


def test_cli_builds_prints_summary_and_minari_lists_it(store, capsys):
    assert collect.main(["--dataset", PENDULUM, "--episodes", "5", "--no-progress"], prog="collect") == 0
    out = capsys.readouterr().out
    assert "5 episodes" in out and "mean normalised score" in out
    assert collect.main(["--list"]) == 0
    listing = capsys.readouterr().out
    assert all(dataset_id in listing for dataset_id in collect.LOCAL_DATASETS)
    assert any(PENDULUM in line and "not built" not in line for line in listing.splitlines())
    assert any("local/pusher/expert-v0" in line and "not built" in line for line in listing.splitlines())
    cli = subprocess.run([sys.executable, "-c", "from minari.cli import app; app()", "list", "local"],
                         capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"},
                         timeout=600)
    assert cli.returncode == 0 and PENDULUM in cli.stdout, cli.stdout + cli.stderr
