"""Summaries with clustered bootstrap confidence intervals, vectorised and seeded.

Questions are the unit of resampling (Miller, "Adding Error Bars to Evals",
arXiv 2411.00640): several attempts at one question are first reduced to one
value per question (their mean, or their best for best-of-k), and the bootstrap
resamples questions, never rows.

The resampling is a fixed matrix of counts W (resamples x questions) drawn from
a seed and the number of questions only, applied to the question values sorted
ascending. Two properties follow that the policy engine relies on:
- the result does not depend on row order;
- raising any score never lowers the mean or either bound (W >= 0 and sorting
  is monotone), so a better score can never lower the required level.
Reusing one W for every benchmark with the same question count also makes a
policy of 100 thresholds cost 100 matrix-vector products, not 100 resamplings.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from policy.results import SampleTable

# Counts matrices up to this many cells (float64: 8 bytes each) are cached and reused.
_CACHE_CELLS = 12_000_000
# Beyond this, resamples are drawn in row chunks so memory stays bounded for huge suites.
_CHUNK_CELLS = 4_000_000


@dataclass(frozen=True)
class Summary:
    benchmark: str
    metric: str
    n_questions: int  # questions with at least one scored attempt
    n_rows: int
    n_errors: int
    error_rate: float
    max_attempts: int
    mean: float  # NaN when n_questions == 0
    ci_low: float
    ci_high: float
    confidence: float


def question_values(table: SampleTable, metric: str) -> tuple[np.ndarray, int, int, int]:
    """Reduce one benchmark's rows to one value per question.

    Returns (values sorted ascending, n_rows, n_errors, max attempts seen per question).
    Errored attempts are excluded from the value (they neither help nor hurt the
    estimate); the error rate is reported separately so the quality gate and the
    engine can fail closed on it.
    """
    n_rows = len(table)
    ok = ~np.isnan(table.score)
    n_errors = int(n_rows - ok.sum())
    if n_rows == 0:
        return np.empty(0), 0, 0, 0
    _, per_q_all = np.unique(table.sample_id, return_counts=True)
    max_attempts = int(per_q_all.max())
    if not ok.any():
        return np.empty(0), n_rows, n_errors, max_attempts
    qid, inverse = np.unique(table.sample_id[ok], return_inverse=True)
    scores = table.score[ok]
    if metric == "best_of_k":
        values = np.full(qid.shape[0], -np.inf)
        np.maximum.at(values, inverse, scores)
    elif metric == "mean":
        sums = np.bincount(inverse, weights=scores, minlength=qid.shape[0])
        counts = np.bincount(inverse, minlength=qid.shape[0])
        values = sums / counts
    else:
        raise ValueError(f"unknown metric '{metric}'")
    return np.sort(values), n_rows, n_errors, max_attempts


def _draw_counts(rng: np.random.Generator, rows: int, n: int) -> np.ndarray:
    idx = rng.integers(0, n, size=(rows, n))
    flat = idx + (np.arange(rows, dtype=np.int64) * n)[:, None]
    return np.bincount(flat.ravel(), minlength=rows * n).reshape(rows, n).astype(np.float64)


@lru_cache(maxsize=8)
def _cached_counts(n: int, resamples: int, seed: int) -> np.ndarray:
    counts = _draw_counts(np.random.default_rng([seed, n, resamples]), resamples, n)
    counts.setflags(write=False)
    return counts


def bootstrap_means(sorted_values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    n = int(sorted_values.shape[0])
    if n == 0:
        return np.empty(0)
    if resamples * n <= _CACHE_CELLS:
        return _cached_counts(n, resamples, seed) @ sorted_values / n
    rng = np.random.default_rng([seed, n, resamples])
    chunk = max(1, _CHUNK_CELLS // n)
    out = np.empty(resamples)
    for start in range(0, resamples, chunk):
        rows = min(chunk, resamples - start)
        out[start:start + rows] = _draw_counts(rng, rows, n) @ sorted_values / n
    return out


def summarize(
    table: SampleTable, benchmark: str, metric: str, *, confidence: float, resamples: int, seed: int
) -> Summary:
    """Summary of one benchmark's rows; `table` holds that benchmark's rows only."""
    values, n_rows, n_errors, max_attempts = question_values(table, metric)
    n = int(values.shape[0])
    if n == 0:
        mean = lo = hi = float("nan")
    else:
        mean = float(values.mean())
        # The draw depends on (seed, n) only: adding or removing another benchmark never moves this interval.
        means = bootstrap_means(values, resamples, seed)
        alpha = (1.0 - confidence) / 2.0
        lo, hi = (float(x) for x in np.quantile(means, [alpha, 1.0 - alpha], method="inverted_cdf"))
        # Float rounding in the products must not put the point estimate outside its own interval.
        lo, hi = min(lo, mean), max(hi, mean)
    return Summary(
        benchmark=benchmark,
        metric=metric,
        n_questions=n,
        n_rows=n_rows,
        n_errors=n_errors,
        error_rate=(n_errors / n_rows) if n_rows else 0.0,
        max_attempts=max_attempts,
        mean=mean,
        ci_low=lo,
        ci_high=hi,
        confidence=confidence,
    )
