"""Algorithm fidelity and evaluation protocol (issue #14): clipping before the critic, the
sampling corner, the update budget, critic diagnostics, the frozen critic, the result checkpoint."""

import copy
import dataclasses

import lightning as L
import numpy as np
import pytest
import torch

from config import TrainConfig
from dataset import MinariDataModule, discounted_returns
from main import result_checkpoint
from meanflow_ql import (MeanFlowQL, clip_chunk, compute_actor_loss, compute_critic_loss,
                         compute_meanflow_loss, flat, sample_times)
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


def test_consistency_term_ties_the_one_step_chunk_to_the_teachers_multi_step_chunk(
        toy_dataset, tmp_path):
    """The one-step tie adds w * ||one-step - teacher's multi-step||^2 to the actor loss; steps on
    it bring the actor's one-step chunk to the teacher's; in a Trainer run the teacher (a copy
    of the actor) moves only by Polyak averaging. Without the tie there is no teacher."""
    model, data, batch = model_and_batch(toy_dataset, actor_q_weight=0.0, cql_alpha=0.0,
                                         consistency_weight=1.0, tau=0.25)
    assert MeanFlowQL.from_data(small_config(), data).target_actor is None
    teacher = model.target_actor
    for mine, its in zip(model.actor.parameters(), teacher.parameters()):
        assert torch.equal(mine, its) and not its.requires_grad
    low, high = model.chunk_bounds()[:2]
    obs = flat(batch["obs"])

    torch.manual_seed(3)
    loss, info = compute_actor_loss(model.actor, model.critic, batch, model.cfg, low, high,
                                    teacher)
    torch.manual_seed(3)
    plain, _ = compute_actor_loss(model.actor, model.critic, batch,
                                  small_config(actor_q_weight=0.0, cql_alpha=0.0), low, high)
    assert float((loss - plain).detach()) == pytest.approx(float(info["actor/consistency"]),
                                                           abs=1e-6)

    def gap_after_training(weight):
        """||actor one-step - teacher 8-step||^2 after 60 steps, from an actor moved away."""
        torch.manual_seed(0)
        student = copy.deepcopy(model.actor)
        student.net[-1].bias.data += 1.0
        cfg = small_config(actor_q_weight=0.0, cql_alpha=0.0, consistency_weight=weight)
        optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
        for _ in range(60):
            optimizer.zero_grad()
            compute_actor_loss(student, model.critic, batch, cfg, low, high,
                               teacher)[0].backward()
            optimizer.step()
        noise = torch.randn(len(obs), student.chunk_dim,
                            generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            return float(((student.sample(obs, noise, 1)
                           - teacher.sample(obs, noise, cfg.consistency_steps)) ** 2).mean())

    assert gap_after_training(100.0) < 0.5 * gap_after_training(0.0)

    # One real update: the teacher ends at 0.75 * itself + 0.25 * the updated actor.
    before = copy.deepcopy(teacher.state_dict())
    trainer = L.Trainer(max_steps=2, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    model.cfg.max_updates = 1
    trainer.fit(model, datamodule=data)
    assert int(model.num_updates) == 1
    actor = model.actor.state_dict()
    for name, value in teacher.state_dict().items():
        torch.testing.assert_close(value, 0.75 * before[name] + 0.25 * actor[name])
        assert not torch.equal(value, before[name])


def test_the_tie_pulls_toward_the_teachers_chunk_clipped_to_the_bounds(toy_dataset):
    """A teacher whose multi-step chunk lies far outside the action bounds is clipped before
    the tie measures the distance, as executed chunks are: the tie stays of the order of the
    bounds instead of the teacher's stray (here ~1e6 unclipped)."""
    model, _, batch = model_and_batch(toy_dataset, actor_q_weight=0.0, cql_alpha=0.0,
                                      consistency_weight=1.0)
    teacher = model.target_actor
    with torch.no_grad():                  # the teacher's velocity: 1e3 everywhere
        teacher.net[-1].weight.zero_()
        teacher.net[-1].bias.fill_(1e3)
    low, high = model.chunk_bounds()[:2]
    obs, actions = flat(batch["obs"]), batch["actions"]

    torch.manual_seed(5)
    _, info = compute_actor_loss(model.actor, model.critic, batch, model.cfg, low, high, teacher)
    torch.manual_seed(5)                   # the same draws: the MeanFlow loss's, then the noise
    compute_meanflow_loss(model.actor, obs, actions, batch["mask"], model.cfg)
    noise = torch.randn_like(flat(actions))
    with torch.no_grad():
        stray = teacher.sample(obs, noise, model.cfg.consistency_steps)
        one_step = model.actor.sample(obs, noise, 1)
    assert torch.all(stray < low)          # the teacher left the box on every element
    expected = ((one_step - clip_chunk(stray, low, high)) ** 2).mean()
    assert float(info["actor/consistency"]) == pytest.approx(float(expected), rel=1e-5)
    assert float(((one_step - stray) ** 2).mean()) > 1e5


@pytest.mark.parametrize("level", [-1e3, 1e3])
@pytest.mark.parametrize("samples", [1, 3])
def test_calibrated_cql_never_pushes_the_actors_chunks_below_the_datas_return(toy_dataset, level,
                                                                              samples):
    """Cal-QL: with every chunk valued at `level`, plain CQL's penalty is 0 (sampled chunks
    valued like the data's); the calibrated one values each actor chunk whose Q is below the
    window's Monte-Carlo return at that return, so far below every return the penalty only
    lifts the critic (its gradient on a Q network's output bias is -1), and far above every
    return it is plain CQL."""
    penalties, bias_grads = {}, {}
    for calibrated in (False, True):
        model, _, batch = model_and_batch(toy_dataset, cql_alpha=1.0, cql_calibrated=calibrated,
                                          cql_num_samples=samples)
        with torch.no_grad():              # both Q networks output `level` for every input
            for q in model.critic.qs:
                q[-1].weight.zero_()
                q[-1].bias.fill_(level)
        losses = []
        for alpha in (1.0, 0.0):           # the same draws: the difference is the penalty
            torch.manual_seed(0)
            cfg = dataclasses.replace(model.cfg, cql_alpha=alpha)
            loss, info = compute_critic_loss(model.critic, model.target_critic, model.actor,
                                             batch, cfg, *model.chunk_bounds())
            losses.append(loss)
            if alpha:                      # with alpha 0 the penalty is neither added nor logged
                penalties[calibrated] = float(info["critic/cql_penalty"])
        bias = model.critic.qs[0][-1].bias
        bias_grads[calibrated] = float(torch.autograd.grad(losses[0] - losses[1], bias)[0])
    returns = batch["mc_return"].double()
    assert torch.all(returns.abs() < 1e2)
    assert penalties[False] == pytest.approx(0.0, abs=1e-3)
    assert bias_grads[False] == pytest.approx(0.0, abs=1e-4)
    if level < 0:
        expected = 2 * float((torch.logaddexp(torch.tensor(level, dtype=torch.float64), returns)
                              - np.log(2) - level).mean())
        assert penalties[True] == pytest.approx(expected, rel=1e-5)
        assert bias_grads[True] == pytest.approx(-1.0, abs=1e-4)
    else:
        assert penalties[True] == pytest.approx(0.0, abs=1e-3)
        assert bias_grads[True] == pytest.approx(0.0, abs=1e-4)


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


def test_a_saved_config_without_a_newer_setting_keeps_what_its_run_trained_with(toy_dataset):
    """Runs saved before --cql-calibrated existed trained with plain CQL: their config (and so
    a resumed run or a loaded checkpoint's model) must say so whatever today's default is."""
    saved = TrainConfig(dataset=toy_dataset.spec.dataset_id).to_dict()
    del saved["cql_calibrated"]
    assert TrainConfig.from_dict(saved).cql_calibrated is False
    model, _, _ = model_and_batch(toy_dataset)
    old = MeanFlowQL(saved, **{k: v for k, v in model.hparams.items() if k != "cfg"})
    assert old.cfg.cql_calibrated is False
    assert TrainConfig.from_dict({**saved, "cql_calibrated": True}).cql_calibrated is True
