"""Algorithm fidelity and evaluation protocol (issue #14): clipping before the critic, the
sampling corner, the update budget, critic diagnostics, the frozen critic, the result checkpoint."""

import copy

import lightning as L
import numpy as np
import pytest
import torch

from config import TrainConfig
from dataset import MinariDataModule, discounted_returns
from main import result_checkpoint
from meanflow_ql import (MULTI_STEP_SAMPLING, MeanFlowQL, compute_actor_loss, flat,
                         sample_times)
from policy import sample_chunk
from test_meanflow import small_config


def model_and_batch(toy_dataset, **overrides):
    cfg = small_config(dataset=toy_dataset.spec.dataset_id, **overrides)
    data = MinariDataModule(cfg, toy_dataset)
    model = MeanFlowQL.from_data(cfg, data)
    return model, data, data.train_set.__getitems__(list(range(8)))


def chunks_seen_by_critic(model):
    """Every chunk the first Q network is given, via a forward pre-hook on the real network."""
    seen = []
    chunk_dim = model.actor.chunk_dim
    model.critic.qs[0].register_forward_pre_hook(
        lambda module, inputs: seen.append(inputs[0][:, -chunk_dim:].detach().clone()))
    return seen


def test_the_critic_only_ever_scores_clipped_actor_chunks(toy_dataset):
    model, _, batch = model_and_batch(toy_dataset, num_candidates=4)
    with torch.no_grad():                  # push the actor's samples far outside the bounds
        model.actor.net[-1].bias.fill_(-1e3)
    low, high = model.chunk_bounds()[:2]
    seen = chunks_seen_by_critic(model)
    compute_actor_loss(model.actor, model.critic, batch, model.cfg, low, high)
    obs = flat(batch["obs"])
    sample_chunk(model, obs, torch.randn(len(obs) * 4, model.actor.chunk_dim), num_candidates=4)
    assert len(seen) == 2
    for chunk in seen:
        assert torch.all(chunk >= low - 1e-6) and torch.all(chunk <= high + 1e-6)
        assert torch.any(chunk == low) or torch.any(chunk == high)   # clipping happened


def test_consistency_term_is_the_one_to_multi_step_gap_and_shrinks_it(toy_dataset):
    """The one-step tie measures ||one-step - 16-step||^2 from the same noise, gives gradient
    only through the one-step chunk, and steps on it alone bring the two samplers together."""
    model, _, batch = model_and_batch(toy_dataset, actor_q_weight=0.0, cql_alpha=0.0,
                                      consistency_weight=1.0)
    low, high = model.chunk_bounds()[:2]
    obs = flat(batch["obs"])

    def gap(module):
        noise = torch.randn(len(obs), module.actor.chunk_dim,
                            generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            return float(((module.actor.sample(obs, noise, 1)
                           - module.actor.sample(obs, noise, MULTI_STEP_SAMPLING)) ** 2).mean())

    torch.manual_seed(3)
    loss, info = compute_actor_loss(model.actor, model.critic, batch, model.cfg, low, high)
    torch.manual_seed(3)
    plain, _ = compute_actor_loss(model.actor, model.critic, batch,
                                  small_config(actor_q_weight=0.0, cql_alpha=0.0), low, high)
    assert float((loss - plain).detach()) == pytest.approx(float(info["actor/consistency"]), abs=1e-6)
    assert info["actor/consistency"] > 0

    def gap_after_training(weight):
        torch.manual_seed(0)
        trained = copy.deepcopy(model)
        trained.actor.net[-1].bias.data += 1.0      # samplers far apart at the start
        cfg = small_config(actor_q_weight=0.0, cql_alpha=0.0, consistency_weight=weight)
        optimizer = torch.optim.Adam(trained.actor.parameters(), lr=1e-3)
        for _ in range(60):
            optimizer.zero_grad()
            compute_actor_loss(trained.actor, trained.critic, batch, cfg, low, high)[0].backward()
            optimizer.step()
        return gap(trained)

    assert gap_after_training(100.0) < 0.5 * gap_after_training(0.0)


def test_corner_rows_are_trained_at_r0_t1_and_counted_among_r_below_t():
    cfg = TrainConfig(ratio_r_neq_t=0.25, corner_ratio=0.1)
    generator = torch.Generator().manual_seed(0)
    corners = []
    for _ in range(200):
        r, t, distinct = sample_times(101, cfg, "cpu", generator)
        corner = int(((r == 0) & (t == 1)).sum())
        assert torch.all(r[:corner] == 0) and torch.all(t[:corner] == 1)
        assert corner <= distinct and torch.all(r[distinct:] == t[distinct:])
        corners.append(corner)
    assert set(corners) == {10, 11}
    assert np.mean(corners) == pytest.approx(10.1, abs=0.1)
    r, t, _ = sample_times(100, TrainConfig(), "cpu", torch.Generator().manual_seed(0))
    assert not torch.any((r == 0) & (t == 1))                 # off by default
    with pytest.raises(ValueError, match="corner_ratio"):
        TrainConfig(ratio_r_neq_t=0.1, corner_ratio=0.2)


@pytest.mark.parametrize("budget, expected", [(dict(num_updates=5), 5),
                                              (dict(num_epochs=2), "2 epochs"),
                                              (dict(num_epochs=2, max_updates=3), 3)])
def test_the_budget_counts_updates_unless_epochs_are_given(toy_dataset, tmp_path, budget,
                                                           expected):
    model, data, _ = model_and_batch(toy_dataset, **budget)
    trainer = L.Trainer(max_epochs=50, default_root_dir=tmp_path, logger=False,
                        enable_progress_bar=False, enable_checkpointing=False,
                        accelerator="cpu", limit_val_batches=0)
    trainer.fit(model, datamodule=data)
    if expected == "2 epochs":
        expected = 2 * trainer.num_training_batches
    assert int(model.num_updates) == expected


def test_monte_carlo_return_of_every_window(toy_dataset):
    np.testing.assert_allclose(discounted_returns(np.array([1.0, 2.0, 4.0]), 0.5),
                               [1 + 0.5 * 2 + 0.25 * 4, 2 + 0.5 * 4, 4])
    model, data, _ = model_and_batch(toy_dataset, gamma=0.9)
    # Toy episode i has rewards 10 i + t; the training set holds whole episodes in order.
    windows = data.train_set
    expected = []
    for i in data.train_ids:
        length = [5, 7, 9][i]
        rewards = 10.0 * i + np.arange(length)
        expected += [sum(0.9 ** (k - s) * rewards[k] for k in range(s, length))
                     for s in range(length)]
    np.testing.assert_allclose(windows.index["mc_return"].numpy(), expected, rtol=1e-5)


def test_the_actor_step_does_not_backpropagate_into_the_critic(toy_dataset, tmp_path):
    model, data, _ = model_and_batch(toy_dataset)
    accumulations = []
    for p in model.critic.parameters():
        p.register_post_accumulate_grad_hook(lambda param: accumulations.append(1))
    trainer = L.Trainer(max_steps=2, default_root_dir=tmp_path, logger=False,
                        enable_progress_bar=False, enable_checkpointing=False,
                        accelerator="cpu", limit_val_batches=0)
    trainer.fit(model, datamodule=data)
    assert int(model.num_updates) == 1
    # One gradient per critic parameter: the critic's own step, none from the actor's loss.
    assert len(accumulations) == len(list(model.critic.parameters()))
    assert all(p.requires_grad for p in model.critic.parameters())


def test_the_result_checkpoint_is_the_final_one_for_q_learning(tmp_path):
    (tmp_path / "best.ckpt").write_bytes(b"")
    assert result_checkpoint(TrainConfig(), tmp_path).name == "last.ckpt"
    assert result_checkpoint(TrainConfig(cql_alpha=0, actor_q_weight=2), tmp_path).name \
        == "last.ckpt"
    bc = TrainConfig(cql_alpha=0, actor_q_weight=0)
    assert result_checkpoint(bc, tmp_path).name == "best.ckpt"
    (tmp_path / "best.ckpt").unlink()
    assert result_checkpoint(bc, tmp_path).name == "last.ckpt"
