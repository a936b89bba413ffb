"""Per-benchmark summaries: an exact mean over questions and an exact binomial confidence interval.

Questions are the unit (Miller, "Adding Error Bars to Evals", arXiv 2411.00640):
several attempts at one question are first reduced to one value per question
(their mean, or their best for best-of-k), and the interval is over questions,
never rows.

**Exact arithmetic.** Every score is read as the decimal it prints as (the
shortest decimal that round-trips: a score of 0.7 is seven tenths), so a
benchmark's per-question values and their mean are exact rationals
(`fractions.Fraction`), computed with integer counts. Nothing depends on the
order of the rows, on which other benchmarks are present, or on how floating
point happened to round: a mean of exactly 0.7 is 7/10, never
0.6999999999999998. `Summary.mean` is that rational rounded to the nearest
float, for display; `Summary.mean_exact` is the rational the engine compares.

**The interval.** The Clopper-Pearson ("exact binomial") interval for the sum
S of the n per-question values:

    lower = Beta quantile(alpha/2; S, n - S + 1)        (0 when S = 0)
    upper = Beta quantile(1 - alpha/2; S + 1, n - S)    (1 when S = n)

with alpha = 1 - confidence (the policy's two-sided level; each side gets
alpha/2). For 0/1 question values this is the exact binomial interval: its
coverage is at least the nominal level at every n and every true rate,
including 0 of n and n of n (0 of 40 correct gives an upper bound of
1 - 0.025^(1/40) = 0.088 at 95%, not 0). For fractional values (partial
credit, the mean of several attempts) the same formula is used with the real
sum S: among variables in [0, 1] with a given mean the 0/1 variable is the most
spread out, so treating the sum as binomial is conservative (bench/
bench_coverage.py measures it, including near-0/1 mixtures). The price is
width for low-variance fractional values (several attempts of an easy-to-
predict question); in a safety gate a wider interval can only raise the level.

It replaces the percentile bootstrap, which collapses to [0, 0] at 0 of n and
under-covers at small n (upper bound below the true rate 14% of the time at
n=40, p=0.05, where 95% promises at most 2.5%). There is no resampling, so no
seed and no shared resampling matrix: a benchmark's interval is a function of
its own (S, n) alone. `bootstrap_means` stays as a cross-check.

Properties the engine relies on (tests/test_statistics.py, tests/test_properties.py):
- the summary is bit-identical under any permutation of the rows and any
  addition or removal of another benchmark's rows;
- raising any score never lowers the mean or either bound (the per-question
  value is monotone in each score, S in each value, and both Beta quantiles
  are increasing in S);
- the float bounds are rounded outward (widened by `_WIDEN`, then at least the
  exact mean on their side), so floating-point error in the Beta quantile can
  only move a comparison toward crossing, never away from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache

import numpy as np

from policy.results import SampleTable

# Counts matrices up to this many cells (float64: 8 bytes each) are cached and reused.
_CACHE_CELLS = 12_000_000
# Beyond this, resamples are drawn in row chunks so memory stays bounded for huge suites.
_CHUNK_CELLS = 4_000_000
# Outward margin on each computed bound: far above the Beta quantile's floating-point error,
# far below anything a report shows (3 decimals).
_WIDEN = 1e-12
# Scores with at most this many decimal places are converted to integers without Python objects.
_MAX_SHORT_PLACES = 15
_F64_EXACT = 2**53  # integers up to this are exact in float64 (so bincount sums of them are exact)
_I64_SAFE = 2**62


@dataclass(frozen=True)
class Summary:
    benchmark: str
    metric: str
    n_questions: int  # questions with at least one scored attempt
    n_rows: int
    n_errors: int
    error_rate: float
    max_attempts: int
    mean: float  # the exact mean rounded to the nearest float; NaN when n_questions == 0
    ci_low: float  # rounded down (outward)
    ci_high: float  # rounded up (outward)
    confidence: float
    mean_exact: Fraction | None = None  # the exact mean the engine compares; None when n_questions == 0


@dataclass(frozen=True)
class _Reduced:
    values: np.ndarray  # one float per question, sorted ascending
    total: Fraction  # the exact sum of the per-question values
    n_rows: int
    n_errors: int
    max_attempts: int


def _decimal_numerators(uniq: np.ndarray) -> tuple[np.ndarray, int]:
    """(numerators, D) with uniq[i] == numerators[i] / D exactly, each score read as the decimal it prints as.

    `uniq` holds distinct finite floats in [0, 1]. Scores with at most 15 decimal places (0/1, halves,
    percentages, any grid) are found without leaving NumPy and give int64 numerators over D = 10**K;
    anything longer goes through `decimal` one distinct value at a time and gives Python ints (object array).
    """
    places = np.full(uniq.shape[0], -1, dtype=np.int64)
    short = np.zeros(uniq.shape[0], dtype=np.int64)
    for k in range(_MAX_SHORT_PLACES + 1):
        todo = np.flatnonzero(places < 0)
        if todo.size == 0:
            break
        scale = float(10**k)
        m = np.rint(uniq[todo] * scale)
        # x has a k-place decimal iff the nearest float to m / 10**k is x (m and 10**k are exact floats,
        # so the division is correctly rounded); the smallest such k is what repr prints.
        hit = (m / scale) == uniq[todo]
        places[todo[hit]] = k
        short[todo[hit]] = m[hit].astype(np.int64)
    if (places >= 0).all():
        k_max = int(places.max()) if places.size else 0
        return short * (10 ** (k_max - places)), 10**k_max
    exact = [Fraction(int(m), 10 ** int(k)) if k >= 0 else Fraction(Decimal(repr(float(x))))
             for x, m, k in zip(uniq.tolist(), short.tolist(), places.tolist(), strict=True)]
    d = math.lcm(*(f.denominator for f in exact))
    return np.array([f.numerator * (d // f.denominator) for f in exact], dtype=object), d


def _reduce(table: SampleTable, metric: str) -> _Reduced:
    if metric not in ("mean", "best_of_k"):
        raise ValueError(f"unknown metric '{metric}'")
    n_rows = len(table)
    ok = ~np.isnan(table.score)
    n_errors = int(n_rows - ok.sum())
    if n_rows == 0:
        return _Reduced(np.empty(0), Fraction(0), 0, 0, 0)
    # One sort of the ids serves both the attempts per question (every row) and the scored questions.
    _, inv_all, per_q_all = np.unique(table.sample_id, return_inverse=True, return_counts=True)
    max_attempts = int(per_q_all.max())
    if not ok.any():
        return _Reduced(np.empty(0), Fraction(0), n_rows, n_errors, max_attempts)
    if n_errors == 0:
        qinv, nq = inv_all.reshape(-1), int(per_q_all.shape[0])
    else:
        scored = np.bincount(inv_all[ok], minlength=per_q_all.shape[0]) > 0
        renumber = np.cumsum(scored) - 1  # question index among the scored ones, in id order
        qinv, nq = renumber[inv_all[ok]], int(scored.sum())
    scores = table.score[ok]
    uniq = np.unique(scores)  # few distinct scores in practice: a hash, then a search, beats an argsort
    vinv = np.searchsorted(uniq, scores)
    nums, d = _decimal_numerators(uniq)
    rows = int(vinv.shape[0])
    small = nums.dtype != object

    if metric == "best_of_k":
        best = np.zeros(nq, dtype=np.int64)  # index into uniq: uniq is sorted, so the max index is the best score
        np.maximum.at(best, qinv, vinv)
        values = uniq[best]
        best_nums = nums[best]
        total_num = int(best_nums.sum()) if small and d * nq < _I64_SAFE else sum(int(x) for x in best_nums)
        return _Reduced(np.sort(values), Fraction(total_num, d), n_rows, n_errors, max_attempts)

    counts = np.bincount(qinv, minlength=nq)
    row_nums = nums[vinv]
    sums: np.ndarray
    if small and d * rows <= _F64_EXACT:
        # Every partial sum is an integer below 2**53, so float64 adds them exactly in any order.
        sums = np.bincount(qinv, weights=row_nums.astype(np.float64), minlength=nq).astype(np.int64)
    elif small and d * rows < _I64_SAFE:
        sums = np.zeros(nq, dtype=np.int64)
        np.add.at(sums, qinv, row_nums)
    else:
        order = np.argsort(qinv, kind="stable")
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        sums = np.add.reduceat(row_nums.astype(object)[order], starts)
    if small and d * rows <= _F64_EXACT:
        # Both operands are exact floats, so the quotient is the correctly rounded per-question mean.
        values = sums.astype(np.float64) / (counts * d).astype(np.float64)
    else:
        values = np.array([int(s) / (int(c) * d) for s, c in zip(sums.tolist(), counts.tolist(), strict=True)])
    # Sum of the per-question means, grouped by attempt count: one Fraction per distinct count.
    total = Fraction(0)
    for c in np.unique(counts).tolist():
        group = sums[counts == c]
        s = int(group.sum()) if small else sum(int(x) for x in group)
        total += Fraction(s, int(c))
    return _Reduced(np.sort(values), total / d, n_rows, n_errors, max_attempts)


def question_values(table: SampleTable, metric: str) -> tuple[np.ndarray, int, int, int]:
    """Reduce one benchmark's rows to one value per question.

    Returns (values sorted ascending, n_rows, n_errors, max attempts seen per question).
    Each value is the exact per-question mean (or best) rounded to the nearest float, so it
    does not depend on row order. Errored attempts are excluded from the value (they neither
    help nor hurt the estimate); the error rate is reported separately so the quality gate
    and the engine can fail closed on it.
    """
    r = _reduce(table, metric)
    return r.values, r.n_rows, r.n_errors, r.max_attempts


def _float_up(x: Fraction) -> float:
    """The smallest float >= x."""
    f = float(x)
    return f if Fraction(f) >= x else float(np.nextafter(f, math.inf))


def _float_down(x: Fraction) -> float:
    """The largest float <= x."""
    f = float(x)
    return f if Fraction(f) <= x else float(np.nextafter(f, -math.inf))


def exact_interval(total: Fraction, n: int, confidence: float) -> tuple[float, float]:
    """Clopper-Pearson bounds for a sum `total` of n values in [0, 1], rounded outward.

    Each side gets (1 - confidence) / 2. The bounds contain total / n exactly and lie in [0, 1].
    """
    if n <= 0:
        raise ValueError("an interval needs at least one question")
    if not 0 <= total <= n:
        raise ValueError(f"sum {total} of {n} values in [0, 1] is out of range")
    # Imported here: scipy.special costs about half a second to import, and most importers of this
    # module (question values for the cadence and sandbagging checks) never compute an interval.
    from scipy.special import betaincinv

    alpha = (1.0 - confidence) / 2.0
    s, rest = float(total), float(n - total)  # each correctly rounded; both monotone in total
    # betaincinv(a, b, q) is the Beta(a, b) quantile q (scipy.stats.beta.ppf without its overhead).
    hi = 1.0 if rest == 0.0 else min(1.0, float(betaincinv(s + 1.0, rest, 1.0 - alpha)) + _WIDEN)
    lo = 0.0 if total == 0 else max(0.0, float(betaincinv(s, rest + 1.0, alpha)) - _WIDEN)
    mean = total / n
    return min(lo, _float_down(mean)), max(hi, _float_up(mean))


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
    """Percentile-bootstrap resample means over questions (a cross-check; summaries use `exact_interval`)."""
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


def _summary(key: tuple[str, str], r: _Reduced, confidence: float) -> Summary:
    n = int(r.values.shape[0])
    if n == 0:
        mean = lo = hi = float("nan")
        exact: Fraction | None = None
    else:
        exact = r.total / n
        mean = float(exact)
        lo, hi = exact_interval(r.total, n, confidence)
    return Summary(
        benchmark=key[0], metric=key[1], n_questions=n, n_rows=r.n_rows, n_errors=r.n_errors,
        error_rate=(r.n_errors / r.n_rows) if r.n_rows else 0.0, max_attempts=r.max_attempts,
        mean=mean, ci_low=lo, ci_high=hi, confidence=confidence, mean_exact=exact,
    )


def summarize_many(
    tables: dict[tuple[str, str], SampleTable], *, confidence: float, resamples: int | None = None,
    seed: int | None = None,
) -> dict[tuple[str, str], Summary]:
    """Summaries for many (benchmark, metric) pairs, each table holding that benchmark's rows only.

    Each summary is computed from its own table alone, so adding or removing another
    benchmark never moves it. `resamples` and `seed` (the policy's bootstrap settings) are
    accepted and ignored: the interval is exact and draws nothing.
    """
    del resamples, seed
    return {key: _summary(key, _reduce(t, key[1]), confidence) for key, t in tables.items()}


def summarize(
    table: SampleTable, benchmark: str, metric: str, *, confidence: float, resamples: int | None = None,
    seed: int | None = None,
) -> Summary:
    """Summary of one benchmark's rows; `table` holds that benchmark's rows only."""
    return summarize_many({(benchmark, metric): table}, confidence=confidence)[(benchmark, metric)]
