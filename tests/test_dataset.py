"""Windows, split and normalisation on a Minari dataset whose values are known."""

import numpy as np
import pytest
import torch

from config import TrainConfig
from dataset import MinariDataModule, episode_windows, split_episodes

GAMMA = 0.9


def make_data(dataset, **overrides):
    values = dict(dataset=dataset.spec.dataset_id, obs_horizon=3, pred_horizon=4,
                  action_horizon=2, gamma=GAMMA, val_fraction=0.0, batch_size=4,
                  reward_scale=1.0)      # the toy's rewards as written (automatic would scale)
    values.update(overrides)
    return MinariDataModule(TrainConfig(**values), dataset)


def raw_window(data, index):
    """Window `index` of the training set in raw (unnormalised) units."""
    batch = data.train_set.__getitems__([index])
    return {
        "obs": data.obs_normalizer.unnormalize(batch["obs"][0]).numpy(),
        "next_obs": data.obs_normalizer.unnormalize(batch["next_obs"][0]).numpy(),
        "actions": data.action_normalizer.unnormalize(batch["actions"][0]).numpy(),
        **{k: batch[k][0].numpy() for k in ("mask", "chunk_reward", "valid_steps", "terminal")},
    }


def test_windows_hold_exactly_the_expected_steps(toy_dataset):
    data = make_data(toy_dataset)
    # Episodes of 5 (terminated), 7 and 9 steps (truncated): one window per step.
    assert len(data.train_set) == 5 + 7 + 9

    first = raw_window(data, 0)                        # episode 0, t = 0
    np.testing.assert_allclose(first["obs"][:, 0], [0, 0, 0], atol=1e-4)   # padded history
    np.testing.assert_allclose(first["actions"][:, 0], [0.0, 0.1, 0.2, 0.3], atol=1e-5)
    np.testing.assert_allclose(first["next_obs"][:, 0], [2, 3, 4], atol=1e-4)
    assert first["mask"].all() and first["valid_steps"] == 4 and not first["terminal"]
    assert first["chunk_reward"] == pytest.approx(0 + 1 * GAMMA + 2 * GAMMA**2 + 3 * GAMMA**3)

    last = raw_window(data, 3)                         # episode 0, t = 3 (of 5, terminated)
    np.testing.assert_allclose(last["obs"][:, 0], [1, 2, 3], atol=1e-4)
    np.testing.assert_allclose(last["actions"][:, 0], [0.3, 0.4, 0.4, 0.4], atol=1e-5)
    assert last["mask"].tolist() == [True, True, False, False]
    assert last["valid_steps"] == 2 and last["terminal"]
    assert last["chunk_reward"] == pytest.approx(3 + 4 * GAMMA)
    np.testing.assert_allclose(last["next_obs"][:, 0], [3, 4, 5], atol=1e-4)  # clipped at obs 5

    truncated = raw_window(data, 5 + 5)                # episode 1, t = 5 of 7, truncated
    np.testing.assert_allclose(truncated["obs"][:, 1], [103, 104, 105], atol=1e-3)
    assert truncated["mask"].tolist() == [True, True, False, False]
    assert not truncated["terminal"]                   # a time limit is no termination
    assert truncated["chunk_reward"] == pytest.approx(15 + 16 * GAMMA)
    np.testing.assert_allclose(truncated["next_obs"][:, 1], [105, 106, 107], atol=1e-3)
    np.testing.assert_allclose(truncated["actions"][:, 1], [-1, -1, -1, -1], atol=1e-5)


def test_no_window_crosses_an_episode_boundary(toy_dataset):
    data = make_data(toy_dataset, obs_horizon=2, pred_horizon=3)
    for i in range(len(data.train_set)):
        window = raw_window(data, i)
        episode = window["obs"][0, 1] // 100
        assert np.all(window["obs"][:, 1] // 100 == episode)
        assert np.all(window["next_obs"][:, 1] // 100 == episode)
        assert np.allclose(window["actions"][:, 1], -episode, atol=1e-4)


def test_only_the_last_chunk_of_a_terminated_episode_is_terminal():
    episode = {"obs": np.zeros((7, 1), np.float32), "actions": np.zeros((6, 1), np.float32),
               "rewards": np.ones(6), "terminals": np.arange(6) == 5}
    rows = episode_windows(episode, 0, 0, obs_horizon=1, pred_horizon=3, gamma=1.0)
    assert rows["terminal"].tolist() == [False, False, False, True, True, True]
    assert rows["chunk_reward"].tolist() == [3, 3, 3, 3, 2, 1]
    episode["terminals"] = np.zeros(6, bool)
    rows = episode_windows(episode, 0, 0, obs_horizon=1, pred_horizon=3, gamma=1.0)
    assert not rows["terminal"].any()


def test_split_is_by_episode_and_deterministic():
    train, val = split_episodes(50, 0.2, seed=3)
    assert len(val) == 10 and sorted(train + val) == list(range(50))
    assert split_episodes(50, 0.2, seed=3) == (train, val)
    assert split_episodes(50, 0.2, seed=4) != (train, val)


def test_validation_scores_a_fixed_evenly_spaced_subset_and_test_scores_all(toy_dataset):
    """A large validation set costs each validation what many updates cost: at most val_windows
    windows are scored, spread over the whole set (its first and last included), the same ones
    each time; `main.py test` (test_dataloader) scores every one."""
    data = make_data(toy_dataset, val_fraction=0.34, seed=1, val_windows=3)
    total = len(data.val_set)
    assert total > 3 and total % 2 == 1        # so the middle of three is a whole window

    def scored(loader):
        return torch.cat([batch["obs"] for batch in loader])

    expected = data.val_set.__getitems__([0, (total - 1) // 2, total - 1])["obs"]
    torch.testing.assert_close(scored(data.val_dataloader()), expected)
    torch.testing.assert_close(scored(data.val_dataloader()), expected)
    assert len(scored(data.test_dataloader())) == total
    whole = make_data(toy_dataset, val_fraction=0.34, seed=1, val_windows=total)
    assert len(scored(whole.val_dataloader())) == total


def test_validation_episodes_are_whole_and_unseen(toy_dataset):
    data = make_data(toy_dataset, val_fraction=0.34, seed=1)
    assert len(data.val_ids) == 1 and len(data.train_ids) == 2
    lengths = [5, 7, 9]
    assert len(data.train_set) == sum(lengths[i] for i in data.train_ids)
    assert len(data.val_set) == lengths[data.val_ids[0]]
    val_episode = data.val_ids[0]
    val_obs = data.obs_normalizer.unnormalize(data.val_set.obs)[:, 1] // 100
    train_obs = data.obs_normalizer.unnormalize(data.train_set.obs)[:, 1] // 100
    assert set(val_obs.round().tolist()) == {val_episode}
    assert val_episode not in set(train_obs.round().tolist())


def test_normalisation_is_fitted_on_training_episodes_only(toy_dataset):
    data = make_data(toy_dataset, val_fraction=0.34, seed=1)
    train_obs = np.concatenate([np.stack([np.arange(n + 1), 100 * i + np.arange(n + 1)], 1)
                                for i, n in enumerate([5, 7, 9]) if i in data.train_ids])
    np.testing.assert_allclose(data.obs_normalizer.mean.numpy(), train_obs.mean(0), rtol=1e-5)
    np.testing.assert_allclose(data.obs_normalizer.std.numpy(), train_obs.std(0), rtol=1e-5)
    # Actions are z-scored per dimension from the data, not divided by the bound (2).
    assert data.action_normalizer.std[0] < 0.5


def test_constant_dimensions_are_not_blown_up(toy_dataset):
    data = make_data(toy_dataset, val_fraction=0.0)
    obs = torch.zeros(3, 2)
    obs[:, 0] = 1e-6 * torch.arange(3)
    data.obs_normalizer.fit(obs)
    assert data.obs_normalizer.normalize(obs).abs().max() < 1e-3


def test_a_batch_is_one_gather_with_the_right_shapes(toy_dataset):
    data = make_data(toy_dataset, batch_size=8)
    batch = next(iter(data.train_dataloader()))
    assert batch["obs"].shape == (8, 3, 2) and batch["next_obs"].shape == (8, 3, 2)
    assert batch["actions"].shape == (8, 4, 2) and batch["mask"].shape == (8, 4)
    assert batch["chunk_reward"].shape == (8,) and batch["terminal"].dtype == torch.bool
