"""The MeanFlow target, the optimizers, the target critic and a real Trainer run."""

import copy
import math

import lightning as L
import numpy as np
import pytest
import torch
from torch.func import jvp

from config import TrainConfig, UsageError
from dataset import MinariDataModule
from meanflow_ql import MeanFlowActor, MeanFlowQL, compute_meanflow_loss, sample_times
from policy import MeanFlowPolicy, load_checkpoint


def small_config(**overrides):
    values = dict(obs_horizon=2, pred_horizon=3, action_horizon=2, batch_size=4,
                  actor_hidden_dim=32, critic_hidden_dim=32, actor_num_layers=2,
                  critic_num_layers=2, val_fraction=0.34, cql_alpha=1.0, actor_q_weight=1.0,
                  reward_scale=1.0,      # the toy's rewards as written (automatic would scale)
                  # No teacher unless a test asks for the tie, then with a fixed weight.
                  consistency_weight=0.0, consistency_target=0.0)
    values.update(overrides)
    return TrainConfig(**values)


def test_jvp_matches_a_finite_difference_along_the_flow():
    torch.manual_seed(0)
    actor = MeanFlowActor(obs_dim=3, chunk_dim=4, hidden_dim=16, num_layers=2).double()
    z, v, obs = torch.randn(5, 4).double(), torch.randn(5, 4).double(), torch.randn(5, 3).double()
    r, t = torch.full((5,), 0.2).double(), torch.full((5,), 0.7).double()
    _, dudt = jvp(lambda z_, r_, t_: actor(z_, r_, t_, obs), (z, r, t),
                  (v, torch.zeros_like(r), torch.ones_like(t)))
    h = 1e-6
    finite = (actor(z + h * v, r, t + h, obs) - actor(z - h * v, r, t - h, obs)) / (2 * h)
    torch.testing.assert_close(dudt, finite, rtol=1e-5, atol=1e-7)


def test_meanflow_loss_gradient_comes_only_from_u():
    """Zeroing the loss's gradient path through u must leave no gradient at all."""
    torch.manual_seed(0)
    cfg = small_config()
    actor = MeanFlowActor(obs_dim=4, chunk_dim=6, hidden_dim=16, num_layers=2)
    obs, actions = torch.randn(8, 4), torch.randn(8, 3, 2)
    mask = torch.ones(8, 3, dtype=torch.bool)
    loss, info = compute_meanflow_loss(actor, obs, actions, mask, cfg)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in actor.parameters())
    # Masked-out steps do not contribute: a loss with every step masked is exactly zero.
    zero, _ = compute_meanflow_loss(actor, obs, actions, torch.zeros_like(mask), cfg)
    assert zero.item() == 0.0


def test_one_step_sampling_is_noise_minus_average_velocity():
    torch.manual_seed(0)
    actor = MeanFlowActor(obs_dim=2, chunk_dim=3, hidden_dim=8, num_layers=1)
    obs, noise = torch.randn(4, 2), torch.randn(4, 3)
    ones = torch.ones(4)
    expected = noise - actor(noise, 0 * ones, ones, obs)
    torch.testing.assert_close(actor.sample(obs, noise, steps=1), expected)
    two = actor.sample(obs, noise, steps=2)
    half = noise - 0.5 * actor(noise, 0.5 * ones, ones, obs)
    torch.testing.assert_close(two, half - 0.5 * actor(half, 0 * ones, 0.5 * ones, obs))


def test_each_optimizer_moves_only_its_own_parameters(toy_dataset):
    cfg = small_config(dataset=toy_dataset.spec.dataset_id)
    data = MinariDataModule(cfg, toy_dataset)
    model = MeanFlowQL.from_data(cfg, data)
    actor_opt, critic_opt = model.configure_optimizers()
    owned = {id(p) for group in actor_opt.param_groups for p in group["params"]}
    critic_owned = {id(p) for group in critic_opt.param_groups for p in group["params"]}
    assert owned == {id(p) for p in model.actor.parameters()}
    assert critic_owned == {id(p) for p in model.critic.parameters()}
    target_ids = {id(p) for p in model.target_critic.parameters()}
    assert not target_ids & (owned | critic_owned)
    assert not any(p.requires_grad for p in model.target_critic.parameters())

    trainer = L.Trainer(max_steps=4, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, limit_val_batches=0, accelerator="cpu")
    before = copy.deepcopy(model.state_dict())
    trainer.fit(model, datamodule=data)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("actor.") for k in changed)
    assert any(k.startswith("critic.") for k in changed)
    assert not any(k.startswith(("obs_normalizer", "action_normalizer")) for k in changed)
    assert int(model.num_updates) == 2          # max_steps counts both optimizers' steps


def test_target_critic_moves_only_by_polyak_averaging(toy_dataset):
    cfg = small_config(dataset=toy_dataset.spec.dataset_id, tau=0.25)
    data = MinariDataModule(cfg, toy_dataset)
    model = MeanFlowQL.from_data(cfg, data)
    with torch.no_grad():                        # make critic and target differ
        for p in model.critic.parameters():
            p.add_(torch.randn_like(p))
    target = copy.deepcopy(model.target_critic.state_dict())
    critic = copy.deepcopy(model.critic.state_dict())
    model._polyak_update(model.target_critic, model.critic)
    for name, value in model.target_critic.state_dict().items():
        torch.testing.assert_close(value, 0.75 * target[name] + 0.25 * critic[name])


def test_a_trainer_run_writes_a_checkpoint_that_reloads_and_acts(toy_dataset, tmp_path):
    cfg = small_config(dataset=toy_dataset.spec.dataset_id, action_horizon=2, pred_horizon=3)
    data = MinariDataModule(cfg, toy_dataset)
    model = MeanFlowQL.from_data(cfg, data)
    trainer = L.Trainer(max_epochs=2, default_root_dir=tmp_path, logger=False,
                        enable_progress_bar=False, accelerator="cpu")
    trainer.fit(model, datamodule=data)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)

    loaded = load_checkpoint(path)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], value)
    assert int(loaded.num_updates) == int(model.num_updates) > 0

    policy = MeanFlowPolicy(loaded, seed=0)
    twin = MeanFlowPolicy(load_checkpoint(path), seed=0)
    obs = np.array([1.0, 101.0])
    actions = [policy.act(obs + i) for i in range(5)]
    assert all(a.shape == (2,) and np.all(np.abs(a) <= 2.0) for a in actions)
    np.testing.assert_array_equal(np.stack(actions), np.stack([twin.act(obs + i)
                                                               for i in range(5)]))
    # action_horizon = 2: the second action comes from the chunk sampled at the first, so a
    # network changed in between matters only from the third action (the replan) on.
    changed = MeanFlowPolicy(load_checkpoint(path), seed=0)
    untouched = MeanFlowPolicy(load_checkpoint(path), seed=0)
    assert np.array_equal(changed.act(obs), untouched.act(obs))
    with torch.no_grad():
        changed.model.actor.net[-1].bias.add_(1.0)
    assert np.array_equal(changed.act(obs), untouched.act(obs))
    assert not np.array_equal(changed.act(obs), untouched.act(obs))


def test_hand_written_time_derivative_matches_torch_func_jvp():
    torch.manual_seed(0)
    actor = MeanFlowActor(obs_dim=6, chunk_dim=10, hidden_dim=64, num_layers=3)
    z, v, obs = torch.randn(32, 10), torch.randn(32, 10), torch.randn(32, 6)
    t = torch.rand(32)
    r = t * torch.rand(32)
    u, dudt = actor.forward_with_time_derivative(z, r, t, obs, v)
    u_ref, dudt_ref = actor._generic_time_derivative(z, r, t, obs, v, 32)
    torch.testing.assert_close(u, u_ref)
    torch.testing.assert_close(dudt, dudt_ref, rtol=1e-4, atol=1e-5)
    assert u.requires_grad and not dudt.requires_grad
    # The derivative of a leading slice of rows only, on both paths: the same numbers.
    for method in (actor.forward_with_time_derivative, actor._generic_time_derivative):
        u_part, dudt_part = method(z, r, t, obs, v, 12)
        assert dudt_part.shape == (12, 10)
        torch.testing.assert_close(u_part, u)
        torch.testing.assert_close(dudt_part, dudt[:12], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("ratio", [0.0, 0.5, 1.0])
def test_meanflow_loss_equals_the_identity_target_on_every_row(ratio):
    """The loss skips du/dt where r = t; it must equal the textbook loss, u against
    sg(v - (t - r) du/dt) with du/dt from torch.func.jvp on every row, on the same draws
    (ratio 0: plain flow matching; 1: du/dt on every row)."""
    torch.manual_seed(0)
    cfg = small_config(ratio_r_neq_t=ratio, adaptive_weight_power=0.0)
    actor = MeanFlowActor(obs_dim=4, chunk_dim=6, hidden_dim=16, num_layers=2)
    obs, actions = torch.randn(64, 4), torch.randn(64, 3, 2)
    mask = torch.rand(64, 3) > 0.2
    loss, _ = compute_meanflow_loss(actor, obs, actions, mask, cfg,
                                    generator=torch.Generator().manual_seed(3))

    replay = torch.Generator().manual_seed(3)                  # the same draws, in order
    x = actions.reshape(64, 6)
    noise = torch.randn(x.shape, generator=replay)
    r, t, distinct = sample_times(64, cfg, "cpu", replay)
    assert 64 * ratio <= distinct <= min(64, 64 * ratio + 1)
    assert (r[:distinct] < t[:distinct]).all() and (r[distinct:] == t[distinct:]).all()
    z, v = (1 - t[:, None]) * x + t[:, None] * noise, noise - x
    u, dudt = jvp(lambda z_, r_, t_: actor(z_, r_, t_, obs), (z, r, t),
                  (v, torch.zeros_like(r), torch.ones_like(t)))
    target = v - (t - r)[:, None] * dudt
    step_mask = mask.float().repeat_interleave(2, dim=1)
    expected = ((u - target) ** 2 * step_mask).sum(1).mean() / 6
    torch.testing.assert_close(loss, expected)


def test_share_of_rows_with_r_below_t_is_the_configured_ratio_on_average():
    # 10 rows at 0.25 cannot hold the share exactly in any one batch, only on average.
    torch.manual_seed(0)
    counts = [sample_times(10, small_config(), "cpu")[2] for _ in range(2000)]
    assert set(counts) == {2, 3} and abs(np.mean(counts) / 10 - 0.25) < 0.01


def test_behaviour_cloning_leaves_the_critic_untouched(toy_dataset):
    cfg = small_config(dataset=toy_dataset.spec.dataset_id, actor_q_weight=0.0, cql_alpha=0.0)
    data = MinariDataModule(cfg, toy_dataset)
    model = MeanFlowQL.from_data(cfg, data)
    before = copy.deepcopy(model.state_dict())
    L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              limit_val_batches=0, accelerator="cpu").fit(model, datamodule=data)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if "critic" in k)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("actor."))
    with pytest.raises(UsageError, match="behaviour cloning"):
        MeanFlowPolicy(model, num_candidates=4)


def test_batched_policy_acts_per_environment_as_a_single_one(toy_dataset):
    """Two environments side by side, the second reset mid-chunk: each row of the batched
    policy's actions equals what a one-environment policy with the same seed does."""
    cfg = small_config(dataset=toy_dataset.spec.dataset_id, obs_horizon=2, pred_horizon=3,
                       action_horizon=2)
    model = MeanFlowQL.from_data(cfg, MinariDataModule(cfg, toy_dataset))
    stream = lambda offset, t: np.array([t + offset, 3.0 * t - offset])

    batched = MeanFlowPolicy(model, seed=0)
    batched.reset(0, seed=10)
    batched.reset(1, seed=20)
    first, second, after_reset = (MeanFlowPolicy(model, seed=0) for _ in range(3))
    first.reset(0, seed=10)
    second.reset(0, seed=20)
    after_reset.reset(0, seed=30)
    for t in range(7):
        if t == 3:                                     # episode 2 starts in environment 1
            batched.reset(1, seed=30)
        env1 = stream(1.0, t) if t < 3 else stream(50.0, t)
        rows = batched.act(np.stack([stream(0.0, t), env1]), batched=True)
        np.testing.assert_allclose(rows[0], first.act(stream(0.0, t)), atol=1e-5)
        single = second if t < 3 else after_reset
        np.testing.assert_allclose(rows[1], single.act(env1), atol=1e-5)
    # The reset replanned environment 1 off the shared schedule: step 3 is mid-chunk for env 0.
    assert batched.cursor.tolist() == [1, 2]


@pytest.mark.parametrize("schedule, cap", [("cosine", 0), ("constant", 0), ("cosine", 4)])
def test_learning_rate_follows_its_schedule_over_the_update_budget(toy_dataset, tmp_path,
                                                                   schedule, cap):
    """Cosine: lr * (1 + cos(pi * k / budget)) / 2 at update k; constant: lr. The budget is the
    run's (num_updates or num_epochs), not --max-updates: a capped run stops early on the same
    schedule, so resuming it with a higher cap continues one schedule."""
    cfg = small_config(dataset=toy_dataset.spec.dataset_id, num_epochs=3,
                       learning_rate_schedule=schedule, max_updates=cap, learning_rate_floor=0.0,
                       critic_learning_rate=0.0, critic_learning_rate_schedule="same")
    data = MinariDataModule(cfg, toy_dataset)
    model = MeanFlowQL.from_data(cfg, data)
    seen = []                                   # (actor lr, critic lr) used by each update

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            seen.append(tuple(opt.param_groups[0]["lr"] for opt in trainer.optimizers))

    trainer = L.Trainer(max_epochs=10, default_root_dir=tmp_path, logger=False,
                        enable_progress_bar=False, accelerator="cpu", callbacks=[Record()],
                        enable_checkpointing=False)
    trainer.fit(model, datamodule=data)
    budget = 3 * trainer.num_training_batches
    assert len(seen) == int(model.num_updates) == (cap or budget) and budget > 4
    assert all(actor == critic for actor, critic in seen)
    lr = cfg.learning_rate
    expected = [lr * (0.5 * (1 + math.cos(math.pi * k / budget)) if schedule == "cosine" else 1)
                for k in range(len(seen))]
    assert [actor for actor, _ in seen] == pytest.approx(expected, rel=1e-6)
