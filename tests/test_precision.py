"""Every precision the CLI accepts trains on a CPU; clipping sees unscaled gradients (issue #15)."""

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision

from config import PRECISIONS, TrainConfig
from dataset import MinariDataModule
from meanflow_ql import MeanFlowQL
from test_faults import MAIN, SMALL, pusher, run, updates_in  # noqa: F401 - pusher is a fixture

# The dtype a run's weights are kept (and saved) in under each precision.
WEIGHT_DTYPES = {"32-true": torch.float32, "32": torch.float32, "16-mixed": torch.float32,
                 "bf16-mixed": torch.float32, "64-true": torch.float64,
                 "16-true": torch.float16, "bf16-true": torch.bfloat16}


def test_every_accepted_precision_has_an_expected_dtype():
    assert set(WEIGHT_DTYPES) == set(PRECISIONS)


@pytest.fixture(scope="module")
def exact_settings(pusher):
    """The statistics, bounds and reward scale a 32-true run saves (they come from the data
    alone): what every precision must save too (issue #29)."""
    import minari
    import os

    saved = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = pusher["env"]["MINARI_DATASETS_PATH"]
    try:
        data = MinariDataModule(TrainConfig(), minari.load_dataset("local/pusher/expert-v0"))
    finally:
        os.environ.pop("MINARI_DATASETS_PATH")
        if saved is not None:
            os.environ["MINARI_DATASETS_PATH"] = saved
    model = MeanFlowQL.from_data(TrainConfig(actor_hidden_dim=4, critic_hidden_dim=4), data)
    return {k: v for k, v in model.state_dict().items()
            if "normalizer." in k or k in ("action_low", "action_high", "reward_scale")}


@pytest.mark.parametrize("precision", PRECISIONS)
def test_each_precision_trains_on_the_cpu(pusher, exact_settings, tmp_path, precision):
    code, out, err = run([MAIN, "train", "--mixed-precision", precision, "--accelerator", "cpu",
                          "--max-updates", "3", "--grad-clip", "0.5",
                          "--output-dir", str(tmp_path / "runs"), *SMALL],
                         pusher["env"], pusher["cwd"])
    assert code == 0, err
    assert "Traceback" not in err
    assert updates_in(out) == 3
    last = next((tmp_path / "runs").glob("*/checkpoints/last.ckpt"))
    state = torch.load(last, map_location="cpu", weights_only=True)["state_dict"]
    weights = {k: v for k, v in state.items() if k.startswith(("actor.", "critic."))}
    assert {v.dtype for v in weights.values()} == {WEIGHT_DTYPES[precision]}
    assert all(torch.isfinite(v.float()).all() for v in weights.values())
    # Statistics, bounds and the reward scale: the 32-true run's dtypes and values exactly.
    assert len(exact_settings) == 11
    for key, value in exact_settings.items():
        assert state[key].dtype == value.dtype and torch.equal(state[key], value), key
    # The dual variables' logs stay float32: a bf16 log weight loses the dual's small steps.
    for key in ("support_log_weight", "consistency_log_weight", "cql_log_weight"):
        assert state[key].dtype == torch.float32, key
    # The updates moved the weights: the target critic (a copy, moved only by Polyak
    # averaging) now differs from the critic it was copied from.
    assert any(not torch.equal(state[k], state["target_" + k]) for k in weights
               if k.startswith("critic."))


def tiny_module(minari_path, cfg: TrainConfig):
    import minari
    from conftest import toy_episode, TOY_EPISODES
    import gymnasium as gym
    import numpy as np

    dataset = minari.create_dataset_from_buffers(
        "toy/precision/values-v0", [toy_episode(i, n, t) for i, (n, t) in enumerate(TOY_EPISODES)],
        observation_space=gym.spaces.Box(-1e3, 1e3, (2,), np.float64),
        action_space=gym.spaces.Box(-2.0, 2.0, (2,), np.float32))
    data = MinariDataModule(cfg, dataset)
    return data, MeanFlowQL.from_data(cfg, data)


class GradientNorms(L.Callback):
    """Records each optimizer's gradient norm as the optimizer applies it (after clipping)."""

    def __init__(self):
        self.norms = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        # The actor's gradients are the last ones applied in an update (its step comes last).
        grads = [p.grad for p in module.actor.parameters() if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(g.float()) for g in grads]))))


def test_16_mixed_clips_unscaled_gradients(minari_path):
    """16-mixed with a real GradScaler (Lightning runs 16-mixed as bf16-mixed on a CPU, so the
    plugin is built here by hand on the CPU, as Lightning builds it on a GPU): clipping must
    act on the unscaled gradients, so the applied norm is the clip value, not clip / scale."""
    clip = 1e-3                                       # far below the true gradient norm
    cfg = TrainConfig(dataset="toy/precision/values-v0", batch_size=4, obs_horizon=2,
                      pred_horizon=3, action_horizon=2, actor_hidden_dim=16,
                      critic_hidden_dim=16, val_fraction=0.0, grad_clip=clip, max_updates=4)
    # Seeded: unseeded, about 1 run in 6 at today's defaults drew weights whose scaled gradients
    # overflow float16 in one update, a step the scaler rightly skips (its norm not finite).
    L.seed_everything(0, verbose=False)
    data, model = tiny_module(minari_path, cfg)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    norms = GradientNorms()
    trainer = L.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, accelerator="cpu", limit_val_batches=0,
                        plugins=[MixedPrecision("16-mixed", "cpu", scaler)], callbacks=[norms])
    trainer.fit(model, datamodule=data)
    assert int(model.num_updates) == 4
    assert not any(o.defaults["fused"] for o in trainer.optimizers)
    assert scaler.get_scale() >= 2.0 ** 8         # gradients were scaled up while clipped
    assert norms.norms == pytest.approx([clip] * 4, rel=1e-2)


def test_32_true_keeps_the_fused_adam(minari_path):
    cfg = TrainConfig(dataset="toy/precision/values-v0", batch_size=4, obs_horizon=2,
                      pred_horizon=3, action_horizon=2, actor_hidden_dim=16,
                      critic_hidden_dim=16, val_fraction=0.0, max_updates=1)
    data, model = tiny_module(minari_path, cfg)
    trainer = L.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, accelerator="cpu", limit_val_batches=0)
    trainer.fit(model, datamodule=data)
    assert all(o.defaults["fused"] for o in trainer.optimizers)
