"""Coverage of the policy's interval: how often its upper bound falls below the true rate.

The engine rules a '>=' threshold out when the interval's upper bound is below it, so
the upper bound missing the true rate is the error that lowers a level. At the policy's
two-sided level (95%) each bound may miss at most 2.5% of the time.

For each n (questions) x p (true rate) cell this simulates result sets, computes each
one's upper bound with `policy.statistics.exact_interval` on its exact sum (the first
25 sets of every cell also go through the production path, `summarize` on a
SampleTable, and must agree) and counts the sets whose upper bound is below p. Beside it: the nominal one-sided level,
the Monte Carlo error (2 standard errors of a rate at the nominal level over that many
sets), and, for 0/1 scores, the exact non-coverage of the method (a sum of binomial
probabilities, no simulation) and of the percentile bootstrap it replaced (its
infinitely-many-resamples limit). A cell fails when the simulated rate exceeds nominal
+ Monte Carlo error; the script exits 1 if any cell fails.

The second table draws fractional per-question values: the mean of 3 attempts at
questions of varying difficulty, partial credit in {0, 0.5, 1}, almost-0/1 scores in
{0, 0.9, 1}, and continuous Beta-distributed scores. There the old column is the percentile bootstrap as the engine
ran it (1,000 resamples, fixed seed).

Run: python bench/bench_coverage.py [--sets N] [--confidence C] [--seed S]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy.stats import binom

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from policy.results import SampleTable
from policy.statistics import bootstrap_means, exact_interval, summarize

NS = (20, 40, 100, 400)
PS = (0.02, 0.05, 0.2, 0.5)


def table_maker(n: int, attempts: int) -> Callable[[np.ndarray], SampleTable]:
    """A SampleTable of one benchmark with n questions x `attempts` attempts, given its scores (row-major)."""
    rows = n * attempts
    bench = np.full(rows, "b", dtype=str)
    empty = np.full(rows, "", dtype=str)
    ids = np.repeat(np.array([f"q{i}" for i in range(n)], dtype=str), attempts)
    attempt = np.tile(np.arange(attempts, dtype=np.int64), n)
    return lambda scores: SampleTable(bench, empty, ids, attempt, scores.astype(np.float64).ravel(), empty.copy())


def exact_miss(n: int, p: float, confidence: float) -> tuple[float, float]:
    """Exact non-coverage of the upper bound for 0/1 scores: (this method, percentile bootstrap limit)."""
    k = np.arange(n + 1)
    pmf = binom.pmf(k, n, p)
    upper = np.array([exact_interval(Fraction(int(x)), n, confidence)[1] for x in k])
    boot = binom.ppf(1 - (1 - confidence) / 2, n, k / n) / n
    return float(pmf[upper < p].sum()), float(pmf[boot < p].sum())


# Fractional score generators: (rng, n, p) -> scores of shape (n, attempts) with E[per-question value] = p.
def three_attempts(rng: np.random.Generator, n: int, p: float) -> np.ndarray:
    difficulty = rng.beta(2 * p / (1 - p) if p < 1 else 1, 2, size=n)  # Beta(a, 2) has mean a / (a + 2) = p
    return (rng.random((n, 3)) < difficulty[:, None]).astype(float)


def partial_credit(rng: np.random.Generator, n: int, p: float) -> np.ndarray:
    # {0, 0.5, 1} with P(1) = P(0.5) = q: mean 1.5 q = p
    q = p / 1.5
    u = rng.random((n, 1))
    return np.where(u < q, 1.0, np.where(u < 2 * q, 0.5, 0.0))


def near_binary(rng: np.random.Generator, n: int, p: float) -> np.ndarray:
    # {0, 0.9, 1} with P(1) = P(0.9) = q: mean 1.9 q = p. Almost 0/1, so almost as spread as a binomial,
    # but off the integers: the case where reading the sum as binomial has the least slack.
    q = p / 1.9
    u = rng.random((n, 1))
    return np.where(u < q, 1.0, np.where(u < 2 * q, 0.9, 0.0))


def continuous(rng: np.random.Generator, n: int, p: float) -> np.ndarray:
    return rng.beta(4 * p, 4 * (1 - p), size=(n, 1))


FRACTIONAL: dict[str, tuple[int, Callable[[np.random.Generator, int, float], np.ndarray]]] = {
    "mean of 3 attempts": (3, three_attempts),
    "partial {0,.5,1}": (1, partial_credit),
    "near 0/1 {0,.9,1}": (1, near_binary),
    "Beta(4p, 4(1-p))": (1, continuous),
}


def exact_sum(scores: np.ndarray) -> Fraction:
    """The exact sum of one set's per-question means (scores: n x attempts), scores read as decimals."""
    attempts = scores.shape[1]
    if np.isin(scores, (0.0, 0.5, 1.0)).all():  # 0/1 and partial credit: halves add exactly
        return Fraction(int(np.rint(2 * scores.sum())), 2 * attempts)
    return Fraction(math.fsum(scores.ravel().tolist())) / attempts  # continuous: within 1e-16 of the decimal sum


def simulate(n: int, p: float, sets: int, rng: np.random.Generator, confidence: float, attempts: int,
             draw: Callable[[np.random.Generator, int, float], np.ndarray], check: int, old: bool = False
             ) -> tuple[float, float | None]:
    """(non-coverage of the upper bound, and of the old percentile bootstrap's when `old`).

    Each set's bound is `exact_interval` of its exact sum; the first `check` sets also go through the
    production path (`summarize` on a SampleTable) and must agree with it.
    """
    make = table_maker(n, attempts)
    alpha = (1 - confidence) / 2
    data = np.stack([draw(rng, n, p) for _ in range(sets)])  # sets x n x attempts
    cache: dict[Fraction, float] = {}
    miss = 0
    for i in range(sets):
        total = exact_sum(data[i])
        if total not in cache:
            cache[total] = exact_interval(total, n, confidence)[1]
        upper = cache[total]
        if i < check:
            via_engine = summarize(make(data[i]), "b", "mean", confidence=confidence).ci_high
            if abs(via_engine - upper) > 1e-12:
                raise SystemExit(f"n={n} p={p}: summarize gives {via_engine!r}, exact_interval {upper!r}")
        miss += upper < p
    if not old:
        return miss / sets, None
    # The old method as the engine ran it: one fixed counts matrix (1,000 resamples, seed 0) over sorted values.
    values = np.sort(data.mean(axis=2), axis=1)  # sets x n
    means = np.stack([bootstrap_means(v, 1000, 0) for v in values], axis=1)  # 1000 x sets
    boot = np.quantile(means, 1 - alpha, axis=0, method="inverted_cdf")
    return miss / sets, float((boot < p).mean())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", type=int, default=4000, help="simulated result sets per cell (0/1 table)")
    ap.add_argument("--fractional-sets", type=int, default=2000, help="simulated result sets per cell (fractional)")
    ap.add_argument("--confidence", type=float, default=0.95, help="the policy's two-sided level")
    ap.add_argument("--seed", type=int, default=20261130)
    ap.add_argument("--check", type=int, default=25,
                    help="sets per cell also summarised through policy.statistics.summarize (must agree)")
    args = ap.parse_args()
    nominal = (1 - args.confidence) / 2
    rng = np.random.default_rng(args.seed)
    failed = 0
    t0 = time.perf_counter()

    def mc(sets: int) -> float:
        return 2 * math.sqrt(nominal * (1 - nominal) / sets)

    def binary(r: np.random.Generator, n: int, p: float) -> np.ndarray:
        return (r.random((n, 1)) < p).astype(float)

    print(f"Upper bound below the true rate, 0/1 scores ({args.sets:,} sets per cell, "
          f"{args.confidence:.0%} two-sided interval)")
    print(f"{'n':>5} {'p':>5} {'nominal':>8} {'MC err':>7} {'simulated':>10} {'exact':>7} "
          f"{'old bootstrap':>14}  ok")
    for n in NS:
        for p in PS:
            sim, _ = simulate(n, p, args.sets, rng, args.confidence, 1, binary, args.check)
            exact, boot = exact_miss(n, p, args.confidence)
            ok = sim <= nominal + mc(args.sets) and exact <= nominal
            failed += not ok
            print(f"{n:>5} {p:>5.2f} {nominal:>8.4f} {mc(args.sets):>7.4f} {sim:>10.4f} {exact:>7.4f} "
                  f"{boot:>14.4f}  {'yes' if ok else 'NO'}")

    sets = args.fractional_sets
    print()
    print(f"Upper bound below the true mean, fractional per-question values ({sets:,} sets per cell)")
    print(f"{'scores':<20} {'n':>5} {'p':>5} {'nominal':>8} {'MC err':>7} {'simulated':>10} "
          f"{'old bootstrap':>14}  ok")
    for name, (attempts, draw) in FRACTIONAL.items():
        for n in NS:
            for p in PS:
                sim, old = simulate(n, p, sets, rng, args.confidence, attempts, draw, args.check, old=True)
                ok = sim <= nominal + mc(sets)
                failed += not ok
                print(f"{name:<20} {n:>5} {p:>5.2f} {nominal:>8.4f} {mc(sets):>7.4f} {sim:>10.4f} "
                      f"{old if old is not None else math.nan:>14.4f}  {'yes' if ok else 'NO'}")
    print()
    print(f"{failed} cell(s) above nominal + Monte Carlo error; {time.perf_counter() - t0:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
