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


def _interval(means: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha], axis=0, method="inverted_cdf")
    return lo, hi


def summarize_many(
    tables: dict[tuple[str, str], SampleTable], *, confidence: float, resamples: int, seed: int
) -> dict[tuple[str, str], Summary]:
    """Summaries for many (benchmark, metric) pairs, each table holding that benchmark's rows only.

    Benchmarks with the same number of questions share one counts matrix, so
    their bootstrap is a single matrix product rather than one resampling each.
    The draw depends on (seed, n) only: adding or removing another benchmark
    never moves an interval.
    """
    reduced = {key: question_values(t, key[1]) for key, t in tables.items()}
    by_n: dict[int, list[tuple[str, str]]] = {}
    for key, (values, *_rest) in reduced.items():
        by_n.setdefault(int(values.shape[0]), []).append(key)
    bounds: dict[tuple[str, str], tuple[float, float]] = {}
    for n, keys in by_n.items():
        if n == 0:
            continue
        matrix = np.stack([reduced[k][0] for k in keys], axis=1)  # n x m, columns sorted ascending
        if resamples * n <= _CACHE_CELLS:
            means = _cached_counts(n, resamples, seed) @ matrix / n
        else:
            means = np.column_stack([bootstrap_means(matrix[:, j], resamples, seed) for j in range(len(keys))])
        lo, hi = _interval(means, confidence)
        for j, k in enumerate(keys):
            bounds[k] = (float(lo[j]), float(hi[j]))
    out = {}
    for key, (values, n_rows, n_errors, max_attempts) in reduced.items():
        n = int(values.shape[0])
        if n == 0:
            mean = lo_ = hi_ = float("nan")
        else:
            mean = float(values.mean())
            lo_, hi_ = bounds[key]
            # Float rounding in the products must not put the point estimate outside its own interval.
            lo_, hi_ = min(lo_, mean), max(hi_, mean)
        out[key] = Summary(
            benchmark=key[0], metric=key[1], n_questions=n, n_rows=n_rows, n_errors=n_errors,
            error_rate=(n_errors / n_rows) if n_rows else 0.0, max_attempts=max_attempts,
            mean=mean, ci_low=lo_, ci_high=hi_, confidence=confidence,
        )
    return out


def summarize(
    table: SampleTable, benchmark: str, metric: str, *, confidence: float, resamples: int, seed: int
) -> Summary:
    """Summary of one benchmark's rows; `table` holds that benchmark's rows only."""
    return summarize_many({(benchmark, metric): table}, confidence=confidence, resamples=resamples,
                          seed=seed)[(benchmark, metric)]
