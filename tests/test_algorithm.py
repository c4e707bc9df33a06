"""The actor's support constraint, the adaptive one-step tie and their dual weights, the best-of-N
TD target, CQL's raised behaviour chunk, the learning-rate schedules: each on a case checked by
hand (value and direction of the gradient)."""

import copy
import math

import lightning as L
import pytest
import torch
from torch import nn

from config import TrainConfig
import meanflow_ql
from meanflow_ql import (CQL_DUAL_WARMUP_UPDATES, DoubleCritic, MeanFlowActor, MeanFlowQL,
                         compute_actor_loss, compute_critic_loss, compute_support_distance,
                         dual_step)


def test_support_distance_is_the_nearest_teacher_chunk_and_pulls_toward_it():
    """chunk (0, 0); teachers (1, 0), (0, 3), (4, 4): squared distances per element 0.5, 4.5,
    16 -> nearest 0.5. Spread: each teacher's nearest other one, (1,0)-(0,3): (1 + 9) / 2 = 5,
    (0,3)-(1,0): 5, (4,4)-(0,3): (16 + 1) / 2 = 8.5 -> mean 6.1667."""
    chunk = torch.zeros(1, 2, requires_grad=True)
    teachers = torch.tensor([[[1.0, 0.0], [0.0, 3.0], [4.0, 4.0]]])
    distance, spread = compute_support_distance(chunk, teachers)
    assert distance.item() == pytest.approx(0.5)
    assert spread.item() == pytest.approx((5 + 5 + 8.5) / 3)
    assert not spread.requires_grad
    distance.sum().backward()
    # Descending the gradient moves the chunk toward (1, 0), its nearest teacher chunk, only.
    assert chunk.grad[0, 0] < 0 and chunk.grad[0, 1] == 0


def test_dual_weight_rises_when_off_support_and_falls_on_it():
    log_weight = torch.zeros(())
    dual_step(log_weight, torch.tensor(3.0), torch.tensor(1.0), 0.1)    # 3x what is allowed
    assert log_weight.item() == pytest.approx(0.1)              # (3 - 1) clipped to 1, times 0.1
    dual_step(log_weight, torch.tensor(0.5), torch.tensor(1.0), 0.1)    # half what is allowed
    assert log_weight.item() == pytest.approx(0.1 - 0.05)
    for _ in range(1000):                                       # bounded above by 1e4
        dual_step(log_weight, torch.tensor(100.0), torch.tensor(1.0), 0.1)
    assert log_weight.exp().item() == pytest.approx(1e4, rel=1e-4)
    before = log_weight.item()
    dual_step(log_weight, torch.tensor(1.5), torch.tensor(2.0), 0.1)    # allowed 2 x 1
    assert log_weight.item() < before


def toy_batch(batch=16, obs_dim=3, horizon=2, action_dim=2):
    torch.manual_seed(0)
    return {"obs": torch.randn(batch, 1, obs_dim), "next_obs": torch.randn(batch, 1, obs_dim),
            "actions": torch.randn(batch, horizon, action_dim),
            "mask": torch.ones(batch, horizon, dtype=torch.bool),
            "chunk_reward": torch.randn(batch), "valid_steps": torch.full((batch,), horizon),
            "terminal": torch.zeros(batch, dtype=torch.bool), "mc_return": torch.randn(batch)}


def shifted_copy(teacher: MeanFlowActor, shift: float) -> MeanFlowActor:
    """A copy of the teacher whose one-step chunks lie `shift` normalised units off its flow in
    every element (one step is eps - u, so lowering u's bias moves the chunk by +shift)."""
    actor = copy.deepcopy(teacher)
    with torch.no_grad():
        actor.net[-1].bias -= shift
    return actor


def test_support_weight_moves_the_right_way_on_a_toy_batch():
    """An actor whose one-step chunks sit 5 normalised units off the teacher's flow raises the
    dual weight; one whose one-step chunks are the teacher's own multi-step samples (here: the
    teacher samples in one step too) lowers it."""
    cfg = TrainConfig(support_samples=4, consistency_steps=1, actor_q_weight=0.0,
                      dual_lr=0.05, consistency_weight=0.0)
    batch = toy_batch()
    low, high = torch.full((4,), -100.0), torch.full((4,), 100.0)
    teacher = MeanFlowActor(3, 4, 16, 2)
    for shift, direction in ((5.0, 1), (0.0, -1)):
        actor = shifted_copy(teacher, shift)
        log_weight = torch.zeros(())
        for _ in range(5):
            loss, info = compute_actor_loss(actor, DoubleCritic(3, 4, 16, 2, True), batch, cfg,
                                            low, high, teacher, log_weight.exp())
            dual_step(log_weight, info["support/distance"], info["support/spread"], cfg.dual_lr)
        assert math.copysign(1, log_weight.item()) == direction, (shift, log_weight)
        # The term's gradient pulls the shifted actor back toward the flow (bias up again).
        actor.zero_grad()
        loss.backward()
        if shift:
            assert actor.net[-1].bias.grad.sum() < 0


def test_adaptive_tie_weight_tightens_off_the_flow_and_loosens_on_it():
    """consistency_target 0.5: an actor shifted 5 units from the teacher's flow (tie ~25 per
    element against a spread of about 2 x the flow's variance) raises the tie's weight; the
    teacher's own copy (tie 0) lowers it. The weight passed in is the one the loss uses."""
    cfg = TrainConfig(consistency_weight=1.0, consistency_target=0.5, consistency_steps=1,
                      actor_q_weight=0.0, dual_lr=0.05)
    batch = toy_batch()
    low, high = torch.full((4,), -100.0), torch.full((4,), 100.0)
    teacher = MeanFlowActor(3, 4, 16, 2)
    for shift, direction in ((5.0, 1), (0.0, -1)):
        actor = shifted_copy(teacher, shift)
        log_weight = torch.zeros(())
        for _ in range(5):
            loss, info = compute_actor_loss(actor, None, batch, cfg, low, high, teacher,
                                            consistency_weight=log_weight.exp())
            assert info["tie/spread"] > 0 and not info["tie/spread"].requires_grad
            dual_step(log_weight, info["actor/consistency"],
                      cfg.consistency_target * info["tie/spread"], cfg.dual_lr)
        assert math.copysign(1, log_weight.item()) == direction, (shift, log_weight)
        if shift:
            assert info["actor/consistency"].item() == pytest.approx(25.0, rel=0.05)
    # The loss carries weight x tie: doubling the weight adds the tie once more.
    torch.manual_seed(3)
    one, info = compute_actor_loss(actor.requires_grad_(False), None, batch, cfg, low, high,
                                   teacher, consistency_weight=torch.tensor(1.0))
    torch.manual_seed(3)
    two, _ = compute_actor_loss(actor, None, batch, cfg, low, high, teacher,
                                consistency_weight=torch.tensor(2.0))
    assert (two - one).item() == pytest.approx(info["actor/consistency"].item(), rel=1e-4)


def test_adaptive_tie_starts_at_its_weight_and_old_names_still_load():
    # A weight of 0 turns the tie off whatever its target (behaviour cloning beside the tie).
    assert not TrainConfig(consistency_weight=0.0, consistency_target=0.5).uses_teacher
    assert TrainConfig.from_dict({"support_dual_lr": 0.2}).dual_lr == 0.2
    model = MeanFlowQL(TrainConfig(consistency_weight=4.0, consistency_target=0.5).to_dict(),
                       2, 2, [-1.0, -1.0], [1.0, 1.0], ["obs"], "toy")
    assert model.consistency_log_weight.exp().item() == pytest.approx(4.0)
    # A checkpoint from before the tie could adapt lacks the buffer: its fixed weight fills in.
    state = {k: v for k, v in model.state_dict().items() if k != "consistency_log_weight"}
    checkpoint = {"state_dict": state}
    model.on_load_checkpoint(checkpoint)
    assert checkpoint["state_dict"]["consistency_log_weight"].exp().item() == pytest.approx(4.0)


class SumCritic(nn.Module):
    """Q(obs, chunk) = sum of the chunk, for both Q networks: (2, B)."""

    def forward(self, obs, chunk):
        return chunk.sum(-1).expand(2, -1)


def test_td_target_bootstraps_from_the_best_of_n_next_chunks():
    """With Q = sum of the chunk, the target is r + gamma^h * max over the N sampled next chunks
    of their clipped sum: redrawn here from the same seed and checked against the logged mean."""
    cfg = TrainConfig(target_candidates=5, cql_alpha=0.0, gamma=0.9)
    batch = toy_batch(batch=8)
    actor = MeanFlowActor(3, 4, 16, 2)
    low, high = torch.full((4,), -1.0), torch.full((4,), 1.0)
    critic = DoubleCritic(3, 4, 16, 2, True)
    torch.manual_seed(7)
    _, info = compute_critic_loss(critic, SumCritic(), actor, batch, cfg, low, high, low, high)
    torch.manual_seed(7)
    next_obs = batch["next_obs"].reshape(8, -1).repeat_interleave(5, dim=0)
    with torch.no_grad():
        chunks = actor.sample(next_obs, torch.randn(40, 4)).clamp(-1, 1)
    best = chunks.sum(-1).reshape(8, 5).max(1).values
    expected = batch["chunk_reward"] + 0.9 ** 2 * best
    assert info["critic/target"].item() == pytest.approx(expected.mean().item(), rel=1e-5)
    assert (best > chunks.sum(-1).reshape(8, 5)[:, 0]).any()    # the first draw is not the max


def test_calibration_share_counts_the_actor_chunks_below_the_datas_return():
    """Q = sum of a chunk clipped to [-1, 1]^4, so every actor chunk's Q lies in [-4, 4]: a
    return of +10 is above all of them (the floor binds), -10 below all; half the windows each."""
    cfg = TrainConfig(cql_alpha=1.0, cql_calibrated=True, cql_num_samples=3)
    batch = toy_batch(batch=8)
    batch["mc_return"] = torch.tensor([10.0, -10.0] * 4)
    low, high = torch.full((4,), -1.0), torch.full((4,), 1.0)
    _, info = compute_critic_loss(SumCritic(), SumCritic(), MeanFlowActor(3, 4, 16, 2), batch,
                                  cfg, low, high, low, high)
    assert info["critic/calibration_binds"].item() == pytest.approx(0.5)


class ScaledSumCritic(nn.Module):
    """Q(obs, chunk) = w x the sum of the chunk for both Q networks, w a parameter (1 at start)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, obs, chunk):
        return (self.w * chunk.sum(-1)).expand(2, -1)


def test_cql_raises_the_best_behaviour_chunk_instead_of_the_datas():
    """A teacher whose velocity is the constant -5 samples noise + 5, clipped to (1, 1, 1, 1):
    Q = 4 for every behaviour chunk. Data chunks with a sum under 4 are beaten by it, so the
    raised Q per window is max(sum of the data chunk, 4), and the penalty falls by the mean of
    max(sum, 4) - sum against plain CQL with the same draws (the behaviour noise is drawn after
    the uniform and actor chunks). The gradient on w moves by -(4 - sum) on those windows: the
    behaviour chunk's Q, not the data's, is what the penalty raises there."""
    batch = toy_batch(batch=8)
    batch["actions"] = batch["actions"] * 3                # sums on both sides of 4
    teacher = MeanFlowActor(3, 4, 16, 2)
    with torch.no_grad():
        teacher.net[-1].weight.zero_()
        teacher.net[-1].bias.fill_(-5.0)
    low, high = torch.full((4,), -1.0), torch.full((4,), 1.0)
    data_sums = batch["actions"].reshape(8, -1).sum(-1)
    assert (data_sums > 4).any() and (data_sums < 4).any()
    results = {}
    for k in (0, 3):
        cfg = TrainConfig(cql_alpha=1.0, cql_calibrated=False, cql_behaviour_samples=k)
        critic = ScaledSumCritic()
        torch.manual_seed(3)
        loss, info = compute_critic_loss(critic, ScaledSumCritic(), MeanFlowActor(3, 4, 16, 2),
                                         batch, cfg, low, high, low, high, teacher)
        loss.backward()
        results[k] = (info, critic.w.grad.item())
    beaten = (data_sums < 4).float()
    gap = (torch.clamp(data_sums, min=4.0) - data_sums).mean().item()
    # Two critics, each contributing its own penalty.
    assert (results[0][0]["critic/cql_penalty"] - results[3][0]["critic/cql_penalty"]).item() \
        == pytest.approx(2 * gap, rel=1e-5)
    assert results[3][0]["critic/raised_behaviour"].item() == pytest.approx(beaten.mean().item())
    assert results[3][1] - results[0][1] == pytest.approx(-2 * gap, rel=1e-4)


def test_actor_schedule_ends_at_its_floor_while_the_critic_stays_constant():
    cfg = TrainConfig(num_updates=100, learning_rate=1e-3, learning_rate_floor=0.1,
                      critic_learning_rate=0.0, critic_learning_rate_schedule="constant")
    model = MeanFlowQL(cfg.to_dict(), 2, 2, [-1.0, -1.0], [1.0, 1.0], ["obs"], "toy")
    seen = []
    for k in (0, 50, 100):
        model.num_updates.fill_(k)
        seen.append((model.learning_rate_now("actor"), model.learning_rate_now("critic")))
    assert [a for a, _ in seen] == pytest.approx([1e-3, 1e-3 * (0.1 + 0.9 * 0.5), 1e-4])
    assert [c for _, c in seen] == pytest.approx([1e-3] * 3)
    one_schedule = dict(learning_rate=3e-4, learning_rate_floor=0.0, critic_learning_rate=0.0,
                        critic_learning_rate_schedule="same")
    same = MeanFlowQL(TrainConfig(num_updates=100, **one_schedule).to_dict(), 2, 2,
                      [-1.0, -1.0], [1.0, 1.0], ["obs"], "toy")
    same.num_updates.fill_(100)
    assert same.learning_rate_now("critic") == same.learning_rate_now("actor") == 0.0
    # Its own rate: the critic at 1e-3 on the actor's cosine shape, the actor's rate unchanged.
    own = MeanFlowQL(TrainConfig(num_updates=100, **{**one_schedule, "critic_learning_rate": 1e-3})
                     .to_dict(), 2, 2, [-1.0, -1.0], [1.0, 1.0], ["obs"], "toy")
    own.num_updates.fill_(50)
    assert own.learning_rate_now("critic") == pytest.approx(1e-3 * 0.5)
    assert own.learning_rate_now("actor") == pytest.approx(3e-4 * 0.5)
    assert own.configure_optimizers()[1].param_groups[0]["lr"] == pytest.approx(1e-3)


def test_dual_variables_stay_float32_when_the_module_is_cast():
    """bf16-true and 16-true cast the whole module; a bf16 log weight could not take the dual's
    0.01-sized steps near a value of 1 (bf16 resolves 1/128 there)."""
    model = MeanFlowQL(TrainConfig(consistency_weight=2.0, consistency_target=0.5).to_dict(),
                       2, 2, [-1.0, -1.0], [1.0, 1.0], ["obs"], "toy").to(torch.bfloat16)
    assert model.actor.net[0].weight.dtype == torch.bfloat16
    for name in ("support_log_weight", "consistency_log_weight"):
        assert getattr(model, name).dtype == torch.float32, name
    assert model.consistency_log_weight.item() == pytest.approx(math.log(2.0))


def test_an_older_runs_config_keeps_its_schedules_and_fixed_tie():
    """A run saved before the learning-rate floor, the critic's own rate and schedule, and the
    adaptive tie existed (its config lacks those keys) is rebuilt as it trained: both networks on
    one cosine to 0 at its learning rate, the tie's weight fixed. Today's defaults, for contrast:
    the actor's cosine ends at 0.1 x 1e-3, the critic stays at 3e-4, the tie adapts."""
    saved = TrainConfig(num_updates=100, learning_rate=3e-4, consistency_weight=1.0,
                        actor_q_weight=4.0, cql_alpha=1.0).to_dict()
    for key in ("learning_rate_floor", "critic_learning_rate", "critic_learning_rate_schedule",
                "consistency_target"):
        del saved[key]
    old = MeanFlowQL(saved, 2, 2, [-1.0, -1.0], [1.0, 1.0], ["obs"], "toy")
    new = MeanFlowQL(TrainConfig(num_updates=100).to_dict(), 2, 2, [-1.0, -1.0], [1.0, 1.0],
                     ["obs"], "toy")
    assert old.cfg.consistency_target == 0 and new.cfg.consistency_target == 0.25
    rates = {}
    for k in (50, 100):
        for model in (old, new):
            model.num_updates.fill_(k)
        rates[k] = [m.learning_rate_now(net) for m in (old, new) for net in ("actor", "critic")]
    assert rates[50] == pytest.approx([1.5e-4, 1.5e-4, 1e-3 * 0.55, 3e-4])
    assert rates[100] == pytest.approx([0.0, 0.0, 1e-4, 3e-4])
    assert [o.param_groups[0]["lr"] for o in old.configure_optimizers()] == [3e-4, 3e-4]


@pytest.mark.parametrize("critic_bias, start, end, updates_before", [
    (1e3, 0.0, 0.3, CQL_DUAL_WARMUP_UPDATES),
    (-1e3, math.log(4), math.log(4) - 0.15, CQL_DUAL_WARMUP_UPDATES),
    (-1e3, 0.0, 0.0, CQL_DUAL_WARMUP_UPDATES),
    (1e3, math.log(9.5), math.log(10), CQL_DUAL_WARMUP_UPDATES),
    (1e3, 0.0, 0.0, CQL_DUAL_WARMUP_UPDATES - 3)])
def test_cql_weight_rises_while_the_floor_never_binds_and_falls_to_cql_alpha_while_it_does(
        toy_dataset, tmp_path, monkeypatch, critic_bias, start, end, updates_before):
    """cql_calibration_target 0.5, cql_alpha 1: a critic that values every chunk at about +1000,
    far above any return of the toy data, never lets Cal-QL's floor bind (share 0), so CQL's
    weight must rise; one valuing every chunk near -1000 binds in every window (share 1), so a
    weight that had risen (to 4) must fall, one at cql_alpha must stay there, and one near
    10 x cql_alpha can rise no further than that. Three real
    updates through Lightning, each a dual step of dual_lr x (target / share - 1), clipped to
    +-1: +0.1 at share 0, -0.05 at share 1. The same three updates just before the warm-up
    ends leave the weight where it was."""
    from test_protocol import model_and_batch
    model, data, _ = model_and_batch(toy_dataset, cql_calibrated=True, cql_alpha=1.0,
                                     cql_calibration_target=0.5, dual_lr=0.1,
                                     num_updates=updates_before + 3)
    assert model.cql_log_weight.item() == 0.0                          # starts at cql_alpha
    with torch.no_grad():
        model.cql_log_weight.fill_(start)
        model.num_updates.fill_(updates_before)
        for q in model.critic.qs:
            q[-1].bias.fill_(critic_bias)
    given = []

    def critic_loss_recording_weight(*args):
        given.append(args[-1].item())
        return compute_critic_loss(*args)
    monkeypatch.setattr(meanflow_ql, "compute_critic_loss", critic_loss_recording_weight)
    L.Trainer(max_epochs=50, default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
              enable_checkpointing=False, accelerator="cpu", limit_val_batches=0,
              ).fit(model, datamodule=data)
    assert int(model.num_updates) == updates_before + 3
    assert model.cql_log_weight.item() == pytest.approx(end, rel=1e-5, abs=1e-7)
    # Each update's critic loss was given the weight as it stood: the start value first.
    assert len(given) == 3 and given[0] == pytest.approx(math.exp(start), rel=1e-5)


def test_cql_weight_given_scales_the_penalty_and_old_checkpoints_keep_their_fixed_weight():
    """The loss carries weight x penalty, the weight given replacing cql_alpha (0.5 here): a
    weight of 0.5 gives the loss of none given, 3 adds the penalty 2.5 times more. A
    checkpoint written before the weight could adapt lacks its buffer: cql_alpha fills in."""
    cfg = TrainConfig(cql_alpha=0.5, cql_calibrated=True, cql_calibration_target=0.2)
    batch = toy_batch(batch=8)
    low, high = torch.full((4,), -1.0), torch.full((4,), 1.0)
    actor, critic = MeanFlowActor(3, 4, 16, 2), DoubleCritic(3, 4, 16, 2, True)
    losses = []
    for weight in (None, 0.5, 3.0):
        torch.manual_seed(5)
        loss, info = compute_critic_loss(critic, critic, actor, batch, cfg, low, high, low, high,
                                         cql_weight=None if weight is None
                                         else torch.tensor(weight))
        losses.append(loss.item())
    assert losses[1] == pytest.approx(losses[0], rel=1e-6)
    assert losses[2] - losses[0] == pytest.approx(2.5 * info["critic/cql_penalty"].item(),
                                                  rel=1e-4)
    model = MeanFlowQL(cfg.to_dict(), 2, 2, [-1.0, -1.0], [1.0, 1.0], ["obs"], "toy")
    state = {k: v for k, v in model.state_dict().items() if k != "cql_log_weight"}
    checkpoint = {"state_dict": state}
    model.on_load_checkpoint(checkpoint)
    assert checkpoint["state_dict"]["cql_log_weight"].exp().item() == pytest.approx(0.5)
    assert TrainConfig.from_dict({}).cql_calibration_target == 0.0       # older configs: fixed
    assert not TrainConfig.from_dict({}).adapts_cql_weight
    assert TrainConfig().adapts_cql_weight                                 # today's default
    # Without a floor (plain CQL) or a weight (no CQL, as in MeanFlow BC) there is nothing to
    # steer: the default target must not turn those into errors.
    assert not TrainConfig(cql_calibrated=False).adapts_cql_weight
    assert not TrainConfig(cql_alpha=0.0).adapts_cql_weight
