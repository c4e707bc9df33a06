"""Run bookkeeping (runs.py): `train --run-dir`, result files named by their seeds, W&B's
server from WANDB_BASE_URL."""

import json
import os
import socket

import pytest

import logs
import runs
from in_process import run_here
from test_faults import MAIN, SMALL, pusher, run  # noqa: F401


def test_a_named_run_directory_is_used_as_named_and_never_reused(pusher, tmp_path):
    run_dir = tmp_path / "my run"
    code, out, err = run([MAIN, "train", "--run-dir", str(run_dir), "--max-updates", "4",
                          "--val-every-updates", "2", *SMALL], pusher["env"], pusher["cwd"])
    assert code == 0, err
    assert f"Run directory: {run_dir}\n" in out and "Finished after 4 updates" in out
    assert json.loads((run_dir / "config.json").read_text())["output_dir"] == str(tmp_path)
    assert [r["updates"] for r in runs.read_validations(run_dir)] == [2, 4]
    assert not list(tmp_path.glob("*_seed0_*"))                       # no timestamped folder
    before = (run_dir / "checkpoints" / "last.ckpt").stat().st_mtime_ns

    # A directory holding a run is refused (resume it instead), as is --run-dir with --resume
    # or with an --output-dir elsewhere; nothing is written.
    for argv, says in (([], "already holds a run"),
                       (["--resume", str(run_dir)], "pass one of them"),):
        code, out, err = run_here([MAIN, "train", "--run-dir", str(run_dir), *argv],
                                  pusher["env"], pusher["cwd"])
        assert code == 2 and says in err and "Traceback" not in err
    code, out, err = run_here([MAIN, "train", "--run-dir", str(tmp_path / "new"), "--output-dir",
                               str(tmp_path / "elsewhere")], pusher["env"], pusher["cwd"])
    assert code == 2 and "disagree on where the run lives" in err
    assert not (tmp_path / "new").exists() and not (tmp_path / "elsewhere").exists()
    assert (run_dir / "checkpoints" / "last.ckpt").stat().st_mtime_ns == before


@pytest.mark.parametrize("seed, name", [(3_000_000, "last.online-test.json"),
                                        (3_000_020, "last.online-test.json"),
                                        (2_001_000, "last.online-validation.json"),
                                        (7, "last.online-seed7.json")])
def test_online_results_are_named_by_their_seeds(tmp_path, seed, name):
    assert runs.online_result_path(tmp_path / "last.ckpt", seed) == tmp_path / name


def test_the_wandb_check_asks_the_server_wandb_base_url_names(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    assert logs.wandb_server() == ("api.wandb.ai", 443)
    monkeypatch.setenv("WANDB_BASE_URL", "http://wandb.lab.example:8080")
    assert logs.wandb_server() == ("wandb.lab.example", 8080)
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.lab.example")
    assert logs.wandb_server() == ("wandb.lab.example", 443)

    # A self-hosted server listening here: online. The same port closed: offline.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
        assert not logs.wandb_offline()
    assert logs.wandb_offline()
    monkeypatch.setenv("WANDB_MODE", "online")                  # the user's choice stands
    assert not logs.wandb_offline()


def test_a_json_file_is_replaced_whole(tmp_path):
    path = tmp_path / "trial.json"
    runs.write_json_atomic(path, {"status": "pending"})
    runs.write_json_atomic(path, {"status": "done", "score": float("nan")})
    assert json.loads(path.read_text())["status"] == "done"
    assert os.listdir(tmp_path) == ["trial.json"]                  # no temporary file left


# Sends SIGTERM to its own process inside the validation at update 4, after its first batch, then
# runs main.py's command line: what a cluster's preemption does at the worst moment.
SIGTERM_IN_VALIDATION = """
import os, signal, sys
sys.path.insert(0, os.path.dirname(sys.argv[1]))      # argv: -c, main.py, its arguments
import main
record_callback = main.validation_record_callback
def with_sigterm(run_dir):
    record = record_callback(run_dir)
    class SigtermInValidation(type(record)):
        def on_validation_batch_end(self, trainer, pl_module, *args, **kwargs):
            if not trainer.sanity_checking and int(pl_module.num_updates) == 4 \\
                    and not os.environ.get("SENT"):
                os.environ["SENT"] = "1"
                os.kill(os.getpid(), signal.SIGTERM)
    record.__class__ = SigtermInValidation
    return record
main.validation_record_callback = with_sigterm
sys.exit(main.main(sys.argv[2:]))
"""


def test_a_sigterm_inside_a_validation_lets_it_finish_and_keeps_its_record(pusher, tmp_path):
    """Stopped during the validation at update 4 (of several batches), the run still records that
    validation and saves its checkpoint at 4; resumed, it records 6 and 8 after it, none twice
    and none missing. Before, the cut validation's record was lost for good."""
    run_dir = tmp_path / "run"
    code, out, err = run(["-c", SIGTERM_IN_VALIDATION, MAIN, "train", "--run-dir", str(run_dir),
                          "--num-updates", "8", "--val-every-updates", "2", *SMALL],
                         pusher["env"], pusher["cwd"])
    assert code == 143, err[-2000:]
    assert "Interrupted by SIGTERM after 4 updates" in out
    assert [r["updates"] for r in runs.read_validations(run_dir)] == [2, 4]
    code, out, err = run([MAIN, "train", "--resume", str(run_dir)], pusher["env"], pusher["cwd"])
    assert code == 0, err[-2000:]
    assert [r["updates"] for r in runs.read_validations(run_dir)] == [2, 4, 6, 8]
