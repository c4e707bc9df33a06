"""`main.py sweep` (issue #36) on a real local Ray cluster and on one started by
scripts/slurm_sweep.sh (SLURM's commands stood in for): trials, layout, report, skip, resume
after SIGTERM, retry after a lost worker, failed trials, refused specs."""

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from in_process import run_here
from test_faults import MAIN, pusher, run  # noqa: F401

ray = pytest.importorskip("ray", reason="the sweep tests need `pip install -r "
                                      "requirements-sweep.txt`")

ROOT = Path(MAIN).parent
DATASET = "local/pusher/expert-v0"
SMALL = {"batch_size": 64, "actor_hidden_dim": 64, "critic_hidden_dim": 64, "patience": 0,
         "val_windows": 200}


def write_spec(path: Path, **fields) -> Path:
    spec = {"name": "s", "datasets": [DATASET], "seeds": [0], "settings": {"defaults": {}},
            "train": {**SMALL, "num_updates": 40, "val_every_updates": 20},
            "evaluate": {"episodes": 2, "seeds": "test"}, **fields}
    path.write_text(yaml.safe_dump(spec))
    return path


def trial(out: Path, name: str, trial_id: str) -> dict:
    return json.loads((out / name / "trials" / trial_id / "trial.json").read_text())


def snapshot(folder: Path) -> dict:
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*")
            if p.is_file()}


@pytest.mark.parametrize("change, named", [
    ({"seed": [0]}, "unknown key 'seed'. Did you mean seeds?"),
    ({"seeds": []}, "seeds must be a non-empty list"),
    ({"settings": {"bc": {"actor_q_wieght": 0}}}, "unknown key 'actor_q_wieght'. Did you mean "
                                                  "actor_q_weight?"),
    ({"settings": {"bc": {"gamma": 2}}}, "setting bc: gamma must lie in (0, 1]"),
    ({"settings": {"bc": {"seed": 3}}}, "sets seed, which a sweep takes from the seeds list"),
    ({"datasets": ["local/nowhere/none-v0"]}, "dataset local/nowhere/none-v0 cannot be loaded"),
])
def test_a_bad_spec_is_refused_before_any_trial(pusher, tmp_path, change, named):
    spec = write_spec(tmp_path / "bad.yaml", **change)
    code, out, err = run_here([MAIN, "sweep", str(spec), "--output-dir", str(tmp_path / "out")],
                              pusher["env"], pusher["cwd"])
    assert code == 2
    assert named in err and err.count("error:") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_sweep_runs_every_trial_reports_them_and_a_rerun_skips_them(pusher, tmp_path):
    # 1 dataset x 2 seeds x 3 settings: `gamma1` passes the spec's checks, but Q learning with
    # gamma 1 on data without terminations is refused when its run starts: those two trials fail.
    spec = write_spec(tmp_path / "spec.yaml", name="grid", seeds=[0, 1], settings={
        "defaults": {}, "bc": {"actor_q_weight": 0, "cql_alpha": 0}, "gamma1": {"gamma": 1}})
    out = tmp_path / "sweeps"
    started = time.monotonic()
    code, stdout, stderr = run([MAIN, "sweep", str(spec), "--output-dir", str(out)],
                               pusher["env"], pusher["cwd"], timeout=400)
    first_call = time.monotonic() - started
    assert code == 1, stdout + stderr[-3000:]            # two trials failed
    assert "4 done, 2 failed, 0 not finished, of 6" in stdout
    assert yaml.safe_load((out / "grid" / "spec.yaml").read_text())["seeds"] == [0, 1]
    scores = {}
    for setting in ("defaults", "bc"):
        for seed in (0, 1):
            record = trial(out, "grid", f"local-pusher-expert-v0_{setting}_seed{seed}")
            assert record["status"] == "done" and record["attempts"] == 1
            assert record["exit_codes"] == [0] and record["updates"] == 40
            assert record["config"]["seed"] == seed and record["config"]["num_updates"] == 40
            evaluation = record["evaluation"]
            assert evaluation["seeds"] == "test" and evaluation["first_seed"] == 3_000_000
            assert len(evaluation["episode_scores"]) == 2
            assert [v["updates"] for v in record["validations"]] == [20, 40]
            scores.setdefault(setting, []).append(evaluation["score"])
            # The checkpoint says how many updates, beside Lightning's optimizer steps.
            saved = torch.load(out / "grid" / "trials" / record["trial"] / "run" / "checkpoints"
                               / "last.ckpt", weights_only=True)
            assert saved["updates"] == 40
            assert saved["global_step"] == (80 if setting == "defaults" else 40)
    for seed in (0, 1):
        record = trial(out, "grid", f"local-pusher-expert-v0_gamma1_seed{seed}")
        assert record["status"] == "failed" and record["attempts"] == 1     # not retried
        assert record["exit_codes"] == [2]
        assert record["message"].startswith("--gamma 1 with Q learning needs episodes")

    # The report: per setting, the IQM over the runs x tasks matrix of run scores (2 x 1). Of
    # two runs the 25%-trimmed mean cuts none: their mean. The bootstrap draws both runs' pairs
    # (a, a), (a, b), (b, a), (b, b) a quarter of the time each, so the 2.5% and 97.5%
    # quantiles of the replicates' IQMs are the lower and the higher score.
    results = json.loads((out / "grid" / "results.json").read_text())
    rows = {row["setting"]: row for row in results["rows"]}
    for setting, (a, b) in scores.items():
        row = rows[setting]
        assert row["runs"] == 2 and row["seeds"] == [0, 1]
        assert row["iqm"] == pytest.approx((a + b) / 2)
        assert row["iqm_ci"] == pytest.approx([min(a, b), max(a, b)])
    assert rows["gamma1"]["seeds"] == []
    table = (out / "grid" / "results.md").read_text()
    assert f"| {DATASET} | bc | normalised score | 2 |" in table
    assert "local-pusher-expert-v0_gamma1_seed0: failed (--gamma 1 with Q learning" in table
    assert (out / "grid" / "curves.png").stat().st_size > 0

    # Again: nothing runs (no Ray cluster either) and no file of a done trial changes.
    before = snapshot(out / "grid" / "trials")
    started = time.monotonic()
    code, stdout, stderr = run([MAIN, "sweep", str(spec), "--output-dir", str(out)],
                               pusher["env"], pusher["cwd"])
    assert code == 1 and "all 6 trials are done or failed; nothing to run" in stdout
    assert snapshot(out / "grid" / "trials") == before
    assert time.monotonic() - started < first_call / 2

    # --dry-run lists each trial and what it has done, running nothing.
    code, stdout, stderr = run_here([MAIN, "sweep", str(spec), "--output-dir", str(out),
                                     "--dry-run"], pusher["env"], pusher["cwd"])
    assert code == 0 and "Sweep grid: 6 trials" in stdout
    assert "local-pusher-expert-v0_bc_seed1: done, 1 attempts, 40 updates" in stdout
    assert "local-pusher-expert-v0_gamma1_seed0: failed, 1 attempts" in stdout
    assert snapshot(out / "grid" / "trials") == before

    # A changed spec for the same name is refused, naming the change.
    write_spec(spec, name="grid", seeds=[0, 1, 2], settings={"defaults": {}})
    code, stdout, stderr = run_here([MAIN, "sweep", str(spec), "--output-dir", str(out)],
                                    pusher["env"], pusher["cwd"])
    assert code == 2 and "seeds: [0, 1] then, [0, 1, 2] now" in stderr
    assert "--force-new" in stderr


def test_the_aggregate_row_takes_each_dataset_as_a_task():
    """rliable's runs x tasks matrix: two datasets (tasks) x three seeds (runs) per setting; the
    aggregate IQM pools the six run scores, its interval resamples runs within each task."""
    from stats import iqm, stratified_bootstrap_ci
    from sweep.report import build_results, render

    spec = {"name": "agg", "datasets": ["a/x-v0", "b/y-v0"], "seeds": [0, 1, 2],
            "settings": {"ql": {}}, "evaluate": {"episodes": 2, "seeds": "test"}}
    scores = {"a/x-v0": [10.0, 20.0, 90.0], "b/y-v0": [40.0, 50.0, 60.0]}
    records = [{"trial": f"{d}_{s}", "dataset": d, "setting": "ql", "seed": s, "status": "done",
                "attempts": 1, "updates": 100, "wall_seconds": 60.0, "message": None,
                "evaluation": {"score": scores[d][s], "score_kind": "normalised score"}}
               for d in scores for s in (0, 1, 2)]
    records[-1] = {**records[-1], "status": "failed", "evaluation": None, "message": "boom"}
    results = build_results(spec, records)
    matrix = [[10.0, 40.0], [20.0, 50.0]]               # seed 2 is not done on b/y-v0
    (row,) = results["aggregate"]
    assert row["runs"] == 2 and row["tasks"] == 2 and row["seeds"] == [0, 1]
    assert row["iqm"] == pytest.approx(iqm(matrix)) == pytest.approx(30.0)   # 20 and 40 kept
    assert row["iqm_ci"] == pytest.approx(list(stratified_bootstrap_ci(matrix)))
    by_dataset = {r["dataset"]: r for r in results["rows"]}
    # Three runs: a 25% trim of three cuts none (scipy's trim_mean), so the IQM is their mean.
    assert by_dataset["a/x-v0"]["iqm"] == pytest.approx(40.0)
    assert by_dataset["b/y-v0"]["runs"] == 2
    assert "| all 2 datasets | ql | normalised score | 2 x 2 | 30.0 |" in render(results)
    assert "- b/y-v0_2: failed (boom)" in render(results)


def wait_for(condition, process, what: str, timeout: float = 200):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            output = process.communicate()
            pytest.fail(f"{what} did not happen: {output[0][-3000:]} {output[1][-3000:]}")
        time.sleep(0.2)


def stand_ins(folder: Path) -> Path:
    """`srun` and `scontrol` stand-ins: srun runs its command here, scontrol lists hostnames."""
    folder.mkdir()
    (folder / "srun").write_text('#!/usr/bin/env bash\nwhile [[ $1 == -* ]]; do\n'
                                 '  case $1 in -w|-N|-n) shift 2;; *) shift;; esac\ndone\n'
                                 'exec "$@"\n')
    (folder / "scontrol").write_text('#!/usr/bin/env bash\necho "$3" | tr , "\\n"\n')
    for name in ("srun", "scontrol"):
        (folder / name).chmod((folder / name).stat().st_mode | stat.S_IEXEC)
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_stopped_sweep_resumes_its_trial_and_a_lost_worker_is_retried(pusher, tmp_path):
    budget = 1500
    spec = write_spec(tmp_path / "long.yaml", name="long", train={
        **SMALL, "num_updates": budget, "val_every_updates": 50},
        evaluate={"episodes": 1, "seeds": "validation"})
    out = tmp_path / "sweeps"
    folder = out / "long" / "trials" / "local-pusher-expert-v0_defaults_seed0"

    def record():
        try:
            return json.loads((folder / "trial.json").read_text())
        except (OSError, ValueError):
            return {}

    def validations():
        path = folder / "run" / "validations.jsonl"
        return len(path.read_text().splitlines()) if path.is_file() else 0

    # 1. A local cluster; SIGTERM to the sweep once the trial has a checkpoint.
    process = subprocess.Popen([sys.executable, MAIN, "sweep", str(spec), "--output-dir",
                                str(out)], cwd=pusher["cwd"], env=pusher["env"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: validations() >= 2, process, "two validations")
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 143, stdout + stderr[-3000:]
    assert "Stopped by SIGTERM. Resume: python main.py sweep" in stdout
    stopped = record()
    assert stopped["status"] == "pending" and stopped["exit_codes"] == [143]
    assert 0 < stopped["updates"] < budget
    assert "stopped by SIGTERM" in stopped["message"]

    # 2. The same sweep on a cluster that scripts/slurm_sweep.sh starts (`ray start --head`,
    # then `sweep --address`), SLURM's commands stood in for. The trial resumes; its worker is
    # killed once it validated again, and Ray's retry resumes it once more.
    port = free_port()
    env = {**pusher["env"], "PATH": f"{stand_ins(tmp_path / 'bin')}{os.pathsep}"
           f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "SLURM_JOB_NODELIST": socket.gethostname(), "SLURM_CPUS_PER_TASK": "1",
           "RAY_PORT": str(port)}
    process = subprocess.Popen(["bash", str(ROOT / "scripts" / "slurm_sweep.sh"), str(spec),
                                "--output-dir", str(out)], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = validations()
    wait_for(lambda: record().get("attempts") == 2 and validations() > seen, process,
             "a validation of the resumed attempt")
    os.kill(record()["history"][-1]["worker_pid"], signal.SIGKILL)
    stdout, stderr = process.communicate(timeout=400)
    assert process.returncode == 0, stdout + stderr[-3000:]
    assert f":{port} (1 CPUs, 0 GPUs)" in stdout         # the script's cluster, not a local one
    done = record()
    assert done["status"] == "done" and done["attempts"] == 3 and done["updates"] == budget
    first, second, third = done["history"]
    assert second["resumed_from_updates"] == first["updates"] == stopped["updates"]
    # Its worker was killed; its trial process, told by the kernel, saved and stopped (143), or
    # Ray's raylet killed it with its worker before it could record that ("lost"); either way
    # the retry continues from the last checkpoint on disk, never from update 0.
    assert second["worker_lost"] and second["exit_code"] in (143, "lost")
    if second["exit_code"] == 143:
        assert second["updates"] > second["resumed_from_updates"]
        assert third["resumed_from_updates"] == second["updates"]   # continued, not restarted
    else:
        assert third["resumed_from_updates"] >= second["resumed_from_updates"] > 0
    assert third["exit_code"] == 0
    assert done["evaluation"]["seeds"] == "validation"
    # One record per validation, none repeated across the three attempts.
    assert [v["updates"] for v in done["validations"]] == list(range(50, budget + 1, 50))
