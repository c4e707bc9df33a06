"""Episode and reward semantics (issue #15, item 4): terminations in the middle of an episode,
actions outside the action space, and a discount of 1."""

import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import minari
import numpy as np
import pytest
from minari.data_collector import EpisodeBuffer

from config import TrainConfig
from dataset import MinariDataModule, episode_windows
from in_process import run_here
from policy import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
MAIN = str(ROOT / "main.py")
GAMMA = 0.9
TINY = ["--batch-size", "4", "--actor-hidden-dim", "16", "--critic-hidden-dim", "16",
        "--max-updates", "2", "--val-fraction", "0", "--skip-online-eval"]


def run(args, cwd):
    result = subprocess.run([sys.executable, *args], cwd=cwd, env={**os.environ},
                            capture_output=True, text=True, timeout=600)
    return result.returncode, result.stdout, result.stderr


def buffer(length, terminations=(), truncated=True, actions=None):
    """obs[t] = t, reward[t] = t + 1; terminations at the given steps."""
    terms = np.zeros(length, bool)
    terms[list(terminations)] = True
    truncs = np.zeros(length, bool)
    truncs[-1] = truncated and not terms[-1]
    actions = np.zeros((length, 1), np.float32) if actions is None else actions
    return EpisodeBuffer(observations=np.arange(length + 1, dtype=np.float64)[:, None],
                         actions=list(actions), rewards=list(np.arange(1.0, length + 1)),
                         terminations=list(terms), truncations=list(truncs))


def write(dataset_id, buffers, bound=1.0):
    return minari.create_dataset_from_buffers(
        dataset_id, buffers, observation_space=gym.spaces.Box(-99, 99, (1,), np.float64),
        action_space=gym.spaces.Box(-bound, bound, (buffers[0].actions[0].shape[0],),
                                    np.float32), algorithm_name="hand-written")


def flags(data, index):
    """(chunk_reward rounded, valid_steps, terminal, mask, raw obs history) of one window."""
    batch = data.train_set.__getitems__([index])
    return (round(float(batch["chunk_reward"][0]), 4), int(batch["valid_steps"][0]),
            bool(batch["terminal"][0]), batch["mask"][0].tolist(),
            data.obs_normalizer.unnormalize(batch["obs"][0])[:, 0].round().tolist())


def test_an_episode_is_split_at_a_mid_episode_termination(minari_path):
    # 8 steps, a termination at step 2, then 5 more steps cut by a time limit.
    dataset = write("toy/mid/termination-v0", [buffer(8, terminations=[2])])
    cfg = TrainConfig(dataset="toy/mid/termination-v0", obs_horizon=2, pred_horizon=4,
                      gamma=GAMMA, val_fraction=0.0, batch_size=4)
    data = MinariDataModule(cfg, dataset)
    assert len(data.train_ids) == 2 and len(data.train_set) == 8
    g = GAMMA
    # Piece [0..2] ends in the termination: every window's rewards stop at step 2, no bootstrap.
    assert flags(data, 0) == (round(1 + 2 * g + 3 * g**2, 4), 3, True,
                              [True, True, True, False], [0, 0])
    assert flags(data, 1) == (round(2 + 3 * g, 4), 2, True, [True, True, False, False], [0, 1])
    assert flags(data, 2) == (3, 1, True, [True, False, False, False], [1, 2])
    # Piece [3..7] starts its own history at obs 3 and ends in a truncation: it bootstraps.
    assert flags(data, 3) == (round(4 + 5 * g + 6 * g**2 + 7 * g**3, 4), 4, False,
                              [True] * 4, [3, 3])
    assert flags(data, 5) == (round(6 + 7 * g + 8 * g**2, 4), 3, False,
                              [True, True, True, False], [4, 5])
    assert data.any_terminal


def test_a_terminal_step_inside_an_unsplit_episode_stops_the_chunk():
    """What another data source will hand over: `terminals` True mid-episode, no split."""
    episode = {"obs": np.zeros((7, 1), np.float32), "actions": np.zeros((6, 1), np.float32),
               "rewards": np.arange(1.0, 7.0), "terminals": np.arange(6) == 2}
    rows = episode_windows(episode, 0, 0, obs_horizon=1, pred_horizon=3, gamma=GAMMA)
    assert rows["terminal"].tolist() == [True, True, True, False, False, False]
    assert rows["valid_steps"].tolist() == [3, 2, 1, 3, 2, 1]
    np.testing.assert_allclose(rows["chunk_reward"], [1 + 2 * GAMMA + 3 * GAMMA**2,
                                                      2 + 3 * GAMMA, 3,
                                                      4 + 5 * GAMMA + 6 * GAMMA**2,
                                                      5 + 6 * GAMMA, 6], rtol=1e-6)
    # Behaviour cloning still sees every step inside the episode.
    assert rows["mask"].tolist() == [[True] * 3] * 4 + [[True, True, False],
                                                        [True, False, False]]


def test_actions_outside_the_action_space_are_reported_and_clipped(minari_path, tmp_path):
    rng = np.random.default_rng(0)
    actions = [rng.normal(0, 1.5, (n, 2)).astype(np.float32) for n in (30, 30)]
    write("toy/wide/actions-v0", [buffer(30, actions=a) for a in actions], bound=0.33)
    values = np.concatenate(actions)
    outside = int((np.abs(values) > np.float32(0.33)).sum())
    worst = float(np.abs(values).max() - np.float32(0.33))

    code, out, err = run([MAIN, "train", "--dataset", "toy/wide/actions-v0", "--output-dir",
                          str(tmp_path / "clip"), *TINY], tmp_path)
    assert code == 0, err
    assert f"{outside} of {values.size} action values" in out and f"by up to {worst:.3g}" in out
    assert "clipped to the bounds" in out
    best = next((tmp_path / "clip").glob("*/checkpoints/best.ckpt"))
    model = load_checkpoint(best)
    assert model.action_normalizer.high.max() <= 0.33 + 1e-6      # fitted on clipped actions
    # `main.py test` compares with the same clipped data, and says so.
    code, out, err = run([MAIN, "test", "--checkpoint", str(best), "--skip-online-eval"],
                         tmp_path)
    assert code == 0, err
    assert "clipped to the bounds" in out

    code, out, err = run([MAIN, "train", "--dataset", "toy/wide/actions-v0", "--output-dir",
                          str(tmp_path / "keep"), "--no-clip-dataset-actions", *TINY], tmp_path)
    assert code == 0, err
    assert f"{outside} of {values.size} action values" in out and "kept as recorded" in out
    kept = load_checkpoint(next((tmp_path / "keep").glob("*/checkpoints/best.ckpt")))
    assert float(kept.action_normalizer.high.max()) == pytest.approx(values.max(), abs=1e-5)


def test_gamma_one_needs_a_terminating_episode_when_q_learning(minari_path, tmp_path):
    write("toy/truncated/only-v0", [buffer(6), buffer(7)])
    runs = tmp_path / "runs"
    code, out, err = run_here([MAIN, "train", "--dataset", "toy/truncated/only-v0", "--gamma",
                               "1", "--output-dir", str(runs), *TINY], os.environ, tmp_path)
    assert code == 2 and "Traceback" not in err
    assert "--gamma 1" in err and "no finite fixed point" in err and "--gamma 0.99" in err
    assert not runs.exists()
    # Pure behaviour cloning never learns from gamma: accepted.
    code, out, err = run([MAIN, "train", "--dataset", "toy/truncated/only-v0", "--gamma", "1",
                          "--actor-q-weight", "0", "--cql-alpha", "0", "--output-dir",
                          str(runs), *TINY], tmp_path)
    assert code == 0, err
    # A dataset with a (mid-episode) termination has a fixed point: accepted, split in two.
    write("toy/mid/terminated-v0", [buffer(8, terminations=[2]), buffer(5)])
    code, out, err = run([MAIN, "train", "--dataset", "toy/mid/terminated-v0", "--gamma", "1",
                          "--output-dir", str(runs), *TINY], tmp_path)
    assert code == 0, err
    assert "Data: 3 training / 0 validation episodes, 13 training windows" in out


def test_large_rewards_are_scaled_for_the_critic_and_the_factor_is_saved(minari_path, tmp_path):
    """+100 per step: the automatic scale is 1/100, chunk rewards and Monte-Carlo returns are in
    the scaled units, the factor travels in the checkpoint; --reward-scale overrides it."""
    import lightning as L
    import torch

    from meanflow_ql import MeanFlowQL

    buffers = []
    for _ in range(3):
        steps = 6
        truncations = [False] * (steps - 1) + [True]
        buffers.append(EpisodeBuffer(observations=list(np.arange(steps + 1.0)[:, None].repeat(2, 1)),
                                     actions=list(np.zeros((steps, 1))), rewards=[100.0] * steps,
                                     terminations=[False] * steps, truncations=truncations))
    dataset = minari.create_dataset_from_buffers(
        "toy/reward/hundred-v0", buffers, algorithm_name="hand-written",
        observation_space=gym.spaces.Box(-1e3, 1e3, (2,), np.float64),
        action_space=gym.spaces.Box(-1.0, 1.0, (1,), np.float32))
    cfg = TrainConfig(dataset="toy/reward/hundred-v0", pred_horizon=2, action_horizon=2,
                      gamma=0.5, val_fraction=0.0, batch_size=4, max_updates=2)
    data = MinariDataModule(cfg, dataset)
    assert data.reward_scale == pytest.approx(0.01)
    assert "multiplied by 0.01" in data.actions_note
    index = data.train_set.index
    np.testing.assert_allclose(index["chunk_reward"][:5].numpy(), 1.5)      # 1 + 0.5 * 1
    np.testing.assert_allclose(index["mc_return"][0].item(), sum(0.5 ** k for k in range(6)),
                               rtol=1e-6)
    model = MeanFlowQL.from_data(cfg, data)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False,
                        default_root_dir=tmp_path, accelerator="cpu", limit_val_batches=0)
    trainer.fit(model, datamodule=data)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    assert load_checkpoint(tmp_path / "model.ckpt").reward_scale.item() == pytest.approx(0.01)
    typed = MinariDataModule(TrainConfig(dataset="toy/reward/hundred-v0", reward_scale=1.0,
                                         pred_horizon=2, action_horizon=2, gamma=0.5,
                                         val_fraction=0.0), dataset)
    assert typed.reward_scale == 1.0
    np.testing.assert_allclose(typed.train_set.index["chunk_reward"][:5].numpy(), 150.0)
    # Checkpoints from before the factor existed load as unscaled.
    checkpoint = torch.load(tmp_path / "model.ckpt", weights_only=True)
    del checkpoint["state_dict"]["reward_scale"]
    torch.save(checkpoint, tmp_path / "old.ckpt")
    assert load_checkpoint(tmp_path / "old.ckpt").reward_scale.item() == 1.0
