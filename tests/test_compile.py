"""The compiled update (issue #31): `--compile on` trains to the eager update's losses from the
same seed, and its runs checkpoint, resume and evaluate as eager ones.

Every compiled run here has the same shapes (the tiny Pusher dataset, SMALL's batch and widths),
so Inductor compiles the graphs once and later runs, in-process or subprocesses, load them from
its cache: the first compile takes about a minute on a 2-core CPU, a cached one seconds.
"""

import json
import math

import lightning as L
import pytest
import torch

import main
import meanflow_ql
from config import TrainConfig
from dataset import MinariDataModule, load_dataset
from in_process import environment, run_here
from meanflow_ql import MeanFlowQL, uses_compile
from test_faults import MAIN, SMALL, pusher, run, updates_in  # noqa: F401 - pusher is a fixture

# The network and batch of SMALL, so the in-process and the CLI runs compile the same graphs.
SMALL_CONFIG = dict(batch_size=64, actor_hidden_dim=64, critic_hidden_dim=64)


class LossRecorder(L.Callback):
    """Both losses after every update (each update's own figures, `latest_figures`; the module
    writes to the loggers only every log_every_n_steps updates)."""

    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        figures = module.latest_figures
        self.losses.append((float(figures["loss/critic"]), float(figures["loss/actor"])))


def fit(pusher, compile_setting: str, updates: int):
    """(losses per update, final state dict, the torch RNG state after the run) of an
    in-process run on the tiny Pusher dataset, seeded like `main.py train`."""
    cfg = TrainConfig(compile=compile_setting, max_updates=updates, patience=0, **SMALL_CONFIG)
    with environment(pusher["env"], pusher["cwd"]):
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        data = MinariDataModule(cfg, load_dataset(cfg.dataset))
        model = MeanFlowQL.from_data(cfg, data)
        recorder = LossRecorder()
        trainer = L.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False,
                            limit_val_batches=0, accelerator="cpu", devices=1,
                            log_every_n_steps=1, callbacks=[recorder])
        trainer.fit(model, datamodule=data)
    assert int(model.num_updates) == updates
    assert model.compiled == (compile_setting == "on")
    return recorder.losses, model.state_dict(), torch.get_rng_state()


def test_a_compiled_run_trains_to_the_eager_losses(pusher, monkeypatch):
    updates = 300
    # CQL's weight moves from the first update (not after the default hold of 2,500), so the
    # compiled loss sees a weight that changes between its calls.
    monkeypatch.setattr(meanflow_ql, "CQL_DUAL_WARMUP_UPDATES", 0)
    compiled_before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    eager_losses, eager_state, eager_rng = fit(pusher, "off", updates)
    compiled_losses, compiled_state, compiled_rng = fit(pusher, "on", updates)
    assert eager_state["cql_log_weight"].item() != pytest.approx(math.log(0.1), abs=1e-3)
    # The compiled run went through torch.compile: Dynamo made graphs of the losses.
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > compiled_before
    # It drew the same random numbers, in the same order and number, as the eager one...
    assert torch.equal(eager_rng, compiled_rng)
    # ...so the losses agree to float rounding (fused kernels sum in another order) at every
    # update, and the weights at the end; the losses moved, so agreeing is not trivial.
    eager, compiled = torch.tensor(eager_losses), torch.tensor(compiled_losses)
    assert len(eager) == len(compiled) == updates
    assert not torch.allclose(eager[0], eager[-1], rtol=0.1)
    torch.testing.assert_close(compiled, eager, rtol=1e-3, atol=1e-4)
    # The same state-dict keys (no `_orig_mod.` prefixes), so checkpoints interchange.
    assert list(compiled_state) == list(eager_state)
    for name, value in eager_state.items():
        torch.testing.assert_close(compiled_state[name], value, rtol=1e-3, atol=1e-4,
                                   msg=lambda m, name=name: f"{name}: {m}")


def train_and_resume(pusher, tmp_path, first: str, then: str):
    """Train 30 updates with `--compile first` and resume to 60 with `--compile then` through
    the CLI; returns last.ckpt."""
    out = tmp_path / first
    code, stdout, err = run([MAIN, "train", "--compile", first, "--max-updates", "30",
                             "--patience", "0", "--output-dir", str(out), *SMALL],
                            pusher["env"], pusher["cwd"])
    assert code == 0, err
    assert ("Compiling the update" in stdout) == (first == "on")
    run_dir = next(out.iterdir())
    code, stdout, err = run([MAIN, "train", "--resume", str(run_dir), "--max-updates", "60",
                             "--compile", then, "--skip-online-eval"],
                            pusher["env"], pusher["cwd"])
    assert code == 0, err
    assert ("Compiling the update" in stdout) == (then == "on")
    assert updates_in(stdout) == 60
    return run_dir / "checkpoints" / "last.ckpt"


def test_a_compiled_run_checkpoints_resumes_and_tests_as_an_eager_one(pusher, tmp_path):
    # The eager run resumes with another --compile value (auto, eager on a CPU): a running
    # setting, which resume accepts.
    eager = train_and_resume(pusher, tmp_path, "off", "auto")
    compiled = train_and_resume(pusher, tmp_path, "on", "on")
    eager_state, compiled_state = (torch.load(path, map_location="cpu", weights_only=True)
                                   ["state_dict"] for path in (eager, compiled))
    assert list(compiled_state) == list(eager_state)
    assert not any("_orig_mod" in key for key in compiled_state)
    assert int(compiled_state["num_updates"]) == 60
    for name, value in eager_state.items():
        torch.testing.assert_close(compiled_state[name], value, rtol=1e-3, atol=1e-4)
    # The compiled run's checkpoint tests like any other (offline and online), with the
    # eager twin's offline figure.
    code, stdout, err = run([MAIN, "test", "--checkpoint", str(compiled), "--episodes", "1"],
                            pusher["env"], pusher["cwd"])
    assert code == 0, err
    offline = json.loads(compiled.with_name("last.test.json").read_text())
    with environment(pusher["env"], pusher["cwd"]):
        eager_offline = main.offline_test(eager, None)
    assert offline["action_mse"] == pytest.approx(eager_offline["action_mse"], rel=1e-3)
    online = json.loads(compiled.with_name("last.online-test.json").read_text())
    assert online["episodes"] == 1 and -200 < online["return_mean"] < 0


def test_auto_compiles_on_a_gpu_only():
    assert uses_compile("auto", torch.device("cuda"))
    assert not uses_compile("auto", torch.device("cpu"))
    assert uses_compile("on", torch.device("cpu")) and not uses_compile("off", torch.device("cuda"))
    assert meanflow_ql.compiled_losses("cpu") != (meanflow_ql.compute_critic_loss,
                                                 meanflow_ql.compute_actor_loss)


def test_a_bad_compile_value_is_refused(tmp_path):
    code, out, err = run_here([MAIN, "train", "--compile", "yes"], {}, tmp_path)
    assert code == 2
    assert "compile must be one of auto, on, off (got 'yes')" in err
    assert "Traceback" not in err
