"""IQM and its stratified bootstrap interval on numbers checked by hand."""

import json

import numpy as np
import pytest

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


def test_results_table_reports_iqm_of_every_seed_and_episode(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from scripts import results_table

    # Normalised score = return * 10 (ref_min 0, ref_max 10, then x 100).
    fake = SimpleNamespace(storage=SimpleNamespace(metadata={"ref_min_score": 0.0,
                                                             "ref_max_score": 10.0}))
    monkeypatch.setattr(results_table, "minari_dataset", lambda dataset_id: fake)
    monkeypatch.setattr(results_table, "dataset_average", lambda quality: 40.0)
    (tmp_path / "logs").mkdir()
    returns = {0: [9.0, 9.5, 10.0, 8.0], 1: [9.2, 9.6, 9.9, 1.0], 2: [9.1, 9.4, 9.8, 9.7]}
    for seed, episode_returns in returns.items():
        run_dir = tmp_path / f"run{seed}"
        (run_dir / "checkpoints").mkdir(parents=True)
        for which in ("best", "last"):
            (run_dir / "checkpoints" / f"{which}.online.json").write_text(json.dumps({
                "dataset": "local/pusher/medium-v0", "returns": episode_returns,
                "normalized_score_mean": float(np.mean(episode_returns)) * 10}))
        (tmp_path / "logs" / f"medium_meanflow_ql_seed{seed}.log").write_text(
            f"Run directory: {run_dir}\nFinished after 100 updates\nwall_seconds 60\n")
    assert results_table.main(str(tmp_path)) == 0
    scores = np.array(list(returns.values())) * 10          # (seeds, episodes)
    low, high = stratified_bootstrap_ci(scores)
    expected = f"{iqm(scores):.1f} [{low:.1f}, {high:.1f}]"
    table = (tmp_path / "results.md").read_text()
    row = next(line for line in table.splitlines() if "MeanFlow-QL" in line)
    assert row.count(expected) == 2 and "missing" not in table      # final and best columns
    # The same table comes back from results.json alone, per-episode scores included.
    for log in (tmp_path / "logs").iterdir():
        log.unlink()
    assert results_table.main(str(tmp_path)) == 0
    assert (tmp_path / "results.md").read_text() == table
