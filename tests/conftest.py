"""Shared fixtures: a temporary Minari store and a tiny dataset with known values."""

import os

import gymnasium as gym
import minari
import numpy as np
import pytest
from minari.data_collector import EpisodeBuffer

os.environ.setdefault("MUJOCO_GL", "egl")
# One thread per process: the suite runs two pytest workers on two cores, and each worker's
# subprocesses inherit this. Torch's default (a thread per core) gave four busy threads on two
# cores, which slowed every training subprocess about twofold.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# (length, terminated): the first episode ends in a true termination, the second is cut by a
# time limit, the third is longer so the split has something to hold out.
TOY_EPISODES = [(5, True), (7, False), (9, False)]


def toy_episode(index: int, length: int, terminated: bool) -> EpisodeBuffer:
    """obs[t] = (t, 100 * index + t), action[t] = (t / 10, -index), reward[t] = 10 * index + t."""
    steps = np.arange(length + 1, dtype=np.float64)
    obs = np.stack([steps, 100 * index + steps], axis=1)
    actions = np.stack([np.arange(length) / 10, np.full(length, -float(index))], axis=1)
    rewards = (10 * index + np.arange(length)).astype(np.float64)
    terminations = np.zeros(length, dtype=bool)
    truncations = np.zeros(length, dtype=bool)
    (terminations if terminated else truncations)[-1] = True
    return EpisodeBuffer(observations=list(obs), actions=list(actions), rewards=list(rewards),
                         terminations=list(terminations), truncations=list(truncations))


@pytest.fixture
def minari_path(tmp_path, monkeypatch):
    """An empty MINARI_DATASETS_PATH for this test."""
    path = tmp_path / "minari"
    path.mkdir()
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(path))
    return path


@pytest.fixture
def toy_dataset(minari_path):
    buffers = [toy_episode(i, n, term) for i, (n, term) in enumerate(TOY_EPISODES)]
    return minari.create_dataset_from_buffers(
        "toy/known/values-v0", buffers,
        observation_space=gym.spaces.Box(-1e3, 1e3, (2,), np.float64),
        action_space=gym.spaces.Box(-2.0, 2.0, (2,), np.float32),
        algorithm_name="hand-written", description="obs[t] = t: windows can be checked exactly")
