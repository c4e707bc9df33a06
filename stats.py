"""Interquartile mean and its stratified-bootstrap confidence interval, as rliable defines them.

Agarwal et al. 2021, "Deep RL at the Edge of the Statistical Precipice", recommend reporting the
interquartile mean (IQM) of all scores with a 95% percentile confidence interval from a
stratified bootstrap over runs. Their library, rliable (1.2.0), was not used: a dry run showed
it installs without changing a version pinned in requirements.txt, but it brings pandas,
statsmodels, arch, seaborn and matplotlib (fifteen packages) for a trimmed mean and a resampling
loop. The same definitions in numpy:

- `iqm(scores)`: rliable's `aggregate_iqm`, i.e. `scipy.stats.trim_mean(scores, 0.25,
  axis=None)`: all entries pooled and sorted, `int(0.25 * n)` cut from each end, the rest
  averaged (so fewer than 4 scores are all kept, and 5 lose one at each end).
- `stratified_bootstrap_ci(scores)`: rliable's `StratifiedBootstrap` with the `percentile`
  method. `scores` has shape (num_runs, ...); every position along the other axes is a stratum
  (a task in rliable, here an evaluation episode, seeded the same for every run), and each
  replicate draws, independently for every stratum, num_runs runs with replacement. The interval
  is the (1 - size) / 2 and (1 + size) / 2 quantiles of the statistic over the replicates.

Replicates come from `numpy.random.default_rng(seed)`, so an interval is the same on every call.
"""

from __future__ import annotations

import numpy as np

# Replicates drawn at once: bounds the (chunk, num_scores) array sorted for the IQM.
CHUNK_ELEMENTS = 4_000_000


def iqm(scores, axis: int | None = None) -> float | np.ndarray:
    """Interquartile mean: the mean of the middle half of the scores (25% trimmed from each end).

    `axis=None` pools every entry (rliable's runs x tasks IQM); with an axis, one IQM per slice.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if axis is None:
        scores, axis = scores.reshape(-1), 0
    scores = np.sort(scores, axis=axis)
    n = scores.shape[axis]
    if n == 0:
        raise ValueError("the IQM of no scores is undefined")
    cut = int(0.25 * n)                        # scipy.stats.trim_mean's rounding
    return np.take(scores, np.arange(cut, n - cut), axis=axis).mean(axis=axis)


def stratified_bootstrap_ci(scores, statistic=None, size: float = 0.95, reps: int = 50_000,
                            seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic` (default: the pooled IQM), resampling runs.

    scores: (num_runs, ...) array; runs are resampled with replacement independently within each
    stratum (each position along the remaining axes). statistic maps a (reps, num_runs, ...)
    array to (reps,) values; the default pools all but the first axis into one IQM per replicate.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        scores = scores[:, None]               # one stratum
    if scores.shape[0] == 0 or scores.size == 0:
        raise ValueError("a bootstrap needs at least one run and one score")
    if not 0.0 < size < 1.0:
        raise ValueError(f"size must lie in (0, 1) (got {size})")
    statistic = statistic or (lambda batch: iqm(batch.reshape(len(batch), -1), axis=1))
    rng = np.random.default_rng(seed)
    num_runs, strata = scores.shape[0], scores.shape[1:]
    flat = scores.reshape(num_runs, -1)        # (num_runs, num_strata)
    columns = np.arange(flat.shape[1])
    chunk = max(1, CHUNK_ELEMENTS // flat.size)
    values = []
    for start in range(0, reps, chunk):
        count = min(chunk, reps - start)
        runs = rng.integers(0, num_runs, size=(count, *flat.shape))   # (count, runs, strata)
        batch = flat[runs, columns]                                   # same shape, resampled
        values.append(statistic(batch.reshape(count, num_runs, *strata)))
    values = np.concatenate(values)
    tail = (1.0 - size) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)
