"""IQM and its stratified bootstrap interval on numbers checked by hand."""

import json
import re
import shutil
from pathlib import Path

import minari
import numpy as np
import pytest
from minari.data_collector import EpisodeBuffer

from stats import iqm, stratified_bootstrap_ci


@pytest.mark.parametrize("scores, expected", [
    ([8, 1, 7, 2, 6, 3, 5, 4], 4.5),           # n=8: 2 cut from each end, mean of 3, 4, 5, 6
    ([1, 2, 3, 4, 100], 3.0),                  # n=5: int(1.25) = 1 cut, the outlier goes
    ([10, 0, 5], 5.0),                         # n=3: int(0.75) = 0 cut, the plain mean
    ([[1, 100], [2, 3], [4, -50], [5, 6]], 3.5),   # runs x tasks pooled: mean of 2, 3, 4, 5
])
def test_iqm_of_small_samples(scores, expected):
    assert iqm(scores) == pytest.approx(expected)


def test_iqm_along_an_axis():
    np.testing.assert_allclose(iqm([[4, 1, 3, 2], [10, 40, 20, 30]], axis=1), [2.5, 25.0])


def test_iqm_matches_scipy_trim_mean():
    trim_mean = pytest.importorskip("scipy.stats").trim_mean
    rng = np.random.default_rng(1)
    for n in (1, 2, 5, 6, 7, 61):
        scores = rng.normal(size=(n, 3))
        assert iqm(scores) == pytest.approx(trim_mean(scores, 0.25, axis=None))


def test_interval_contains_the_iqm_and_is_deterministic_under_a_seed():
    scores = np.random.default_rng(0).normal(50, 10, size=(3, 20))    # seeds x episodes
    low, high = stratified_bootstrap_ci(scores, reps=5000, seed=7)
    assert low < iqm(scores) < high
    assert stratified_bootstrap_ci(scores, reps=5000, seed=7) == (low, high)
    assert stratified_bootstrap_ci(scores, reps=5000, seed=8) != (low, high)


def test_interval_narrows_as_runs_grow():
    rng = np.random.default_rng(0)
    widths = []
    for runs in (3, 30, 300):
        low, high = stratified_bootstrap_ci(rng.normal(50, 10, size=(runs, 20)), reps=2000)
        widths.append(high - low)
    assert widths[0] > 2 * widths[1] > 4 * widths[2]


def test_constant_scores_give_a_zero_width_interval():
    assert stratified_bootstrap_ci(np.full((3, 20), 97.25), reps=500) == (97.25, 97.25)
    assert stratified_bootstrap_ci(np.array([[1.0, 2.0, 3.0]]), reps=500) == (2.0, 2.0)  # 1 run


def test_runs_are_resampled_within_each_stratum_only():
    # Every run scores j on episode j: a resample within episodes changes nothing, whereas
    # pooling all scores before resampling would move the IQM.
    scores = np.tile(np.arange(20.0), (3, 1))
    assert stratified_bootstrap_ci(scores, reps=500) == (iqm(scores), iqm(scores))


def test_percentile_interval_of_two_runs():
    # Two runs, one stratum: the replicates are {0,0}, {0,1}, {1,0}, {1,1} with means 0, .5, .5,
    # 1, so the 2.5% and 97.5% quantiles are the extremes.
    assert stratified_bootstrap_ci([[0.0], [1.0]], reps=4000) == (0.0, 1.0)
    low, high = stratified_bootstrap_ci([[0.0], [1.0]], size=0.4, reps=4000)
    assert low == high == 0.5                  # the middle 40% is all 0.5


def test_custom_statistic_and_bad_arguments():
    scores = np.arange(12.0).reshape(4, 3)
    low, high = stratified_bootstrap_ci(scores, statistic=lambda b: b.max(axis=(1, 2)),
                                        reps=1000)
    assert low <= high == 11.0
    with pytest.raises(ValueError):
        stratified_bootstrap_ci(np.zeros((0, 3)))
    with pytest.raises(ValueError):
        stratified_bootstrap_ci(scores, size=1.0)
    with pytest.raises(ValueError):
        iqm([])


def pusher_episode(episode_return: float, succeeded: bool) -> EpisodeBuffer:
    """Two steps of a Pusher-v5-shaped episode; its final object 0.05 (success) or 0.5 from the
    goal in x-y (object at observation[17:19], goal at [20:22])."""
    obs = np.zeros((3, 23))
    obs[-1, 17:19] = [0.05, 0.0] if succeeded else [0.5, 0.0]
    return EpisodeBuffer(observations=list(obs), actions=list(np.zeros((2, 7), np.float32)),
                         rewards=[episode_return / 2] * 2, terminations=[False, False],
                         truncations=[False, True])


def write_run(out, slug, method, seed, returns, wall_seconds, updates, success_rate=None,
              dataset="local/pusher/tiny-v0", curve=()):
    """What scripts/results.sh leaves for one run: its log and its run's evaluation JSONs."""
    checkpoints = out / "runs" / method / f"{slug}-seed{seed}" / "checkpoints"
    checkpoints.mkdir(parents=True)
    summary = {"dataset": dataset, "seed": 3_000_000, "episodes": len(returns),
               "returns": returns, "return_mean": float(np.mean(returns)),
               "return_std": float(np.std(returns))}
    if success_rate is not None:
        summary["success_rate"] = success_rate
    (checkpoints / "last.online-test.json").write_text(json.dumps(summary))
    validation = {**summary, "seed": 2_000_000, "returns": [r - 1 for r in returns]}
    (checkpoints / "last.online-validation.json").write_text(json.dumps(validation))
    (out / "logs" / f"{slug}_{method}_seed{seed}.log").write_text(
        f"Run directory: {checkpoints.parent} (resumed from last.ckpt)\n"
        + "".join(f"validation at update {n}: val/loss 0.5000, eval/return -1.0000, "
                  f"eval/success_rate {rate:.4f}\n" for n, rate in curve)
        + f"Finished after {updates} updates\nwall_seconds {wall_seconds}\n")


def test_results_table_from_real_datasets_logs_and_evaluations(tmp_path, toy_dataset,
                                                                minari_path, capsys):
    """Two real Minari datasets: a Pusher-v5 one with reference scores -100 / 0 (score =
    return + 100) and the toy one without (scored by return); the runs' logs, evaluation JSONs
    and a zero-action baseline written as scripts/results.sh writes them."""
    from scripts import results_table

    minari.create_dataset_from_buffers(
        "local/pusher/tiny-v0",
        [pusher_episode(r, ok) for r, ok in ((-50, True), (-40, False), (-30, False), (-20, True))],
        env="Pusher-v5", eval_env="Pusher-v5", ref_min_score=-100.0, ref_max_score=0.0,
        algorithm_name="hand-written", author="test", author_email="none",
        code_permalink="tests/test_stats.py", description="hand-chosen returns and ends")
    out = tmp_path / "results"
    (out / "logs").mkdir(parents=True)
    (out / "baselines").mkdir()
    pusher = "local-pusher-tiny-v0"
    ql = {0: [-10, -4, -20, -1], 1: [-8, -6, -30, -2]}          # scores 90 96 80 99 / 92 94 70 98
    bc = {0: [-30, -25, -35, -10], 1: [-28, -26, -40, -14]}     # 70 75 65 90 / 72 74 60 86
    for seed in (0, 1):
        write_run(out, pusher, "meanflow_ql", seed, ql[seed], (300, 420)[seed], 1000,
                  (0.75, 0.25)[seed], curve=[(500, 0.2), (1000, (0.4, 0.6)[seed])][:1 + seed])
        write_run(out, pusher, "meanflow_bc", seed, bc[seed], (60, 120)[seed], 1000, 0.25)
    write_run(out, pusher, "meanflow_ql-corner", 0, [-5, -5, -5, -5], 600, 1200)
    (out / "baselines" / f"{pusher}_zero.json").write_text(json.dumps({
        "dataset": "local/pusher/tiny-v0", "checkpoint": "baseline:zero", "seed": 3_000_000,
        "episodes": 4, "returns": [-60, -70, -80, -90], "return_mean": -75.0,
        "success_rate": 0.0}))
    toy = "toy-known-values-v0"                                 # no reference scores: returns
    write_run(out, toy, "meanflow_ql", 0, [50, 60, 70], 30, 10, dataset="toy/known/values-v0")
    write_run(out, toy, "meanflow_bc", 0, [80, 90, 100], 30, 10, dataset="toy/known/values-v0")
    (out / "logs" / f"{toy}_meanflow_bc_seed1.log").write_text("Run directory: x\n")  # failed

    assert results_table.main(str(out)) == 0
    table = (out / "results.md").read_text()
    assert table in capsys.readouterr().out
    rows = {tuple(cell.strip() for cell in line.split("|")[1:4]): line.split("|")[4:-1]
            for line in table.splitlines() if line.startswith(("| local", "| toy"))}
    cells = lambda dataset, score, method: [c.strip() for c in rows[(dataset, score, method)]]

    scores = np.array(list(ql.values())) + 100.0
    assert iqm(scores) == pytest.approx(93.0)                  # middle four of eight: 90 92 94 96
    low, high = stratified_bootstrap_ci(scores)
    assert cells("local/pusher/tiny-v0", "normalised score", "MeanFlow-QL (defaults)") == [
        "2", "89.9 ± 1.4", f"93.0 [{low:.1f}, {high:.1f}]", "50%", "6.0 / 7.0", "1000"]
    low, high = stratified_bootstrap_ci(np.array(list(bc.values())) + 100.0)
    bc_label = results_table.METHODS["meanflow_bc"]
    assert cells("local/pusher/tiny-v0", "normalised score", bc_label) == [
        "2", "74.0 ± 1.0", f"{iqm(np.array(list(bc.values())) + 100.0):.1f} "
                           f"[{low:.1f}, {high:.1f}]", "25%", "1.5 / 2.0", "1000"]
    assert cells("local/pusher/tiny-v0", "normalised score", "MeanFlow-QL, variant `corner`") == [
        "1", "95.0", "95.0 [95.0, 95.0]", "—", "10.0 / 10.0", "1200"]
    low, high = stratified_bootstrap_ci(np.array([40.0, 30, 20, 10]))   # episodes resampled
    assert cells("local/pusher/tiny-v0", "normalised score", "zero action (baseline)") == [
        "—", "25.0", f"25.0 [{low:.1f}, {high:.1f}]", "0%", "—", "—"]
    low, high = stratified_bootstrap_ci(np.array([50.0, 60, 70, 80]))
    assert cells("local/pusher/tiny-v0", "normalised score", "the dataset's own episodes") == [
        "—", "65.0", f"65.0 [{low:.1f}, {high:.1f}]", "50%", "—", "—"]   # 0, 3 succeed
    assert cells("toy/known/values-v0", "return", "MeanFlow-QL (defaults)")[:4] == [
        "1", "60.0", "60.0 [50.0, 70.0]", "—"]                     # 3 episodes: IQM = mean
    low, high = stratified_bootstrap_ci(np.array([10.0, 91, 216]))
    assert cells("toy/known/values-v0", "return", "the dataset's own episodes") == [
        "—", "105.7", f"105.7 [{low:.1f}, {high:.1f}]", "—", "—", "—"]
    assert ("toy/known/values-v0", "return", "zero action (baseline)") not in rows
    assert table.splitlines()[2].split("|")[3].strip() == "MeanFlow-QL (defaults)"
    assert "- local/pusher/tiny-v0: MeanFlow-QL final >= MeanFlow BC final (normalised score): " \
           "89.9 vs 74.0: met" in table
    assert "- toy/known/values-v0: MeanFlow-QL final >= MeanFlow BC final (return): " \
           "60.0 vs 90.0: **MISSED**" in table

    # The curve: both seeds evaluated at 500 (20%), only seed 1 at 1000 (no mean over seeds, no
    # column); BC and the variant did not evaluate during training (no rows).
    curve = [line for line in table.splitlines() if line.startswith("| local/pusher/tiny-v0 | M")]
    assert curve == ["| local/pusher/tiny-v0 | MeanFlow-QL (defaults) | 2 | 20% |"]
    assert "| dataset | method | seeds | 500 |\n" in table

    saved = json.loads((out / "results.json").read_text())
    runs = saved["datasets"]["local/pusher/tiny-v0"]["runs"]["meanflow_ql"]
    assert runs[1]["curve"] == [{"updates": 500, "success_rate": 0.2},
                                {"updates": 1000, "success_rate": 0.6}]
    assert [r["seed"] for r in runs] == [0, 1]
    np.testing.assert_allclose(runs[1]["episode_scores"], [92, 94, 70, 98])
    assert runs[1]["score"] == pytest.approx(88.5) and runs[1]["success_rate"] == 0.25
    assert runs[0]["validation"]["score"] == pytest.approx(90.25)   # returns - 1 on validation
    assert saved["datasets"]["toy/known/values-v0"]["zero_action"] is None

    # Rebuilt from results.json alone: no logs, runs, baselines nor datasets on disk.
    for folder in (out / "logs", out / "runs", out / "baselines", minari_path):
        shutil.rmtree(folder)
    (out / "results.md").unlink()
    assert results_table.main(str(out)) == 0
    assert (out / "results.md").read_text() == table

    # A file measured with earlier defaults names its methods itself, in the table and the
    # headline (which finds each column's row by its label's prefix); variants keep theirs.
    saved["labels"] = {"meanflow_ql": "MeanFlow-QL (earlier defaults)",
                       "meanflow_bc": "MeanFlow BC (earlier defaults, --actor-q-weight 0)"}
    relabelled = results_table.render(saved)
    assert "| local/pusher/tiny-v0 | normalised score | MeanFlow-QL (earlier defaults) | 2 | " \
           "89.9 ± 1.4 |" in relabelled and "MeanFlow-QL (defaults)" not in relabelled
    assert "| MeanFlow-QL, variant `corner` | 1 | 95.0 |" in relabelled
    assert results_table.headline([saved])[2:] == [
        "| local/pusher/tiny-v0 | normalised score | 89.9 | 74.0 | 25.0 | 65.0 |",
        "| toy/known/values-v0 | return | 60.0 | 90.0 | — | 105.7 |"]


def test_results_table_reads_a_sweeps_trials(tmp_path, toy_dataset, capsys):
    """scripts/results.sh runs the sweep scripts/results.yaml: the table reads its trial.json
    files (the setting is the method), skipping trials not done."""
    from scripts import results_table

    results_table.minari_dataset.cache_clear()        # another test's store held the same id
    out = tmp_path / "results"
    for setting, seed, returns, status in (("meanflow_ql", 0, [50, 60, 70], "done"),
                                           ("meanflow_ql", 1, [70, 80, 90], "done"),
                                           ("meanflow_bc", 0, [10, 20, 30], "done"),
                                           ("meanflow_bc", 1, [0, 0, 0], "failed")):
        folder = out / "table" / "trials" / f"toy-known-values-v0_{setting}_seed{seed}"
        folder.mkdir(parents=True)
        (folder / "trial.json").write_text(json.dumps({
            "dataset": "toy/known/values-v0", "setting": setting, "seed": seed,
            "status": status, "wall_seconds": 120.4, "updates": 10,
            "validations": [{"updates": 10, "val/loss": 0.5}],
            "evaluation": {"seeds": "test", "first_seed": 3_000_000, "returns": returns,
                           "return_mean": float(np.mean(returns))}}))
    assert results_table.main(str(out)) == 0
    table = (out / "results.md").read_text()
    assert "| toy/known/values-v0 | return | MeanFlow-QL (defaults) | 2 | 70.0 ± 10.0 |" in table
    assert (f"| toy/known/values-v0 | return | {results_table.METHODS['meanflow_bc']} | 1 | 20.0 |"
            in table)
    assert "_meanflow_bc_seed1/trial.json: failed" in capsys.readouterr().out

    # Labels written into results.json by hand survive the next collection from the trials.
    saved = json.loads((out / "results.json").read_text())
    saved["labels"] = {"meanflow_ql": "MeanFlow-QL (defaults, 100k schedule stopped at 20k)"}
    (out / "results.json").write_text(json.dumps(saved))
    assert results_table.main(str(out)) == 0
    assert json.loads((out / "results.json").read_text())["labels"] == saved["labels"]
    assert ("| toy/known/values-v0 | return | MeanFlow-QL (defaults, 100k schedule stopped at "
            "20k) | 2 | 70.0 ± 10.0 |") in (out / "results.md").read_text()
    # A results.json that is not one (cut by a crash, say) is rewritten from the runs.
    (out / "results.json").write_text('{"datasets": ')
    assert results_table.main(str(out)) == 0
    assert "labels" not in json.loads((out / "results.json").read_text())
    assert "is not a results file" in capsys.readouterr().out


def test_the_bc_label_names_the_sweeps_bc_settings():
    """The table's MeanFlow BC label spells out the settings scripts/results.yaml trains BC
    with, so a change of either shows in the other."""
    import yaml
    from scripts import results_table

    spec = yaml.safe_load((Path(__file__).parent.parent / "scripts" / "results.yaml").read_text())
    settings = {k.replace("_", "-"): float(v) for k, v in spec["settings"]["meanflow_bc"].items()
                if k != "patience"}
    label = results_table.METHODS["meanflow_bc"]
    flags = {k: float(v) for k, v in re.findall(r"--([a-z-]+) ([\d.]+)", label)}
    assert label.startswith("MeanFlow BC (") and flags == settings
