"""How early the forecast warns, and how often it warns for nothing, on simulated runs.

    python bench/bench_forecast.py                  # 12 runs per shape and noise level (under a minute unloaded)
    python bench/bench_forecast.py --curves 30 --band 0.9

Each simulated run has checkpoints spaced x2 in effective compute (14 of them, 1e21 to 8e24
FLOP) and one measure: score >= 0.6 on a benchmark with chance 0.25. The scores follow a known
curve plus Gaussian measurement noise (sd 0.01, 0.03, 0.06: roughly 2,000, 250 and 60
questions), with that noise's 95% interval passed along as a determination records it.

Shapes that cross 0.6 (the crossing checkpoint drawn between the 7th and the 12th):

* logistic     - rises from chance to 1, slope 1.5-4 per decade of compute;
* linear-log   - chance until it starts, then 0.1-0.3 per decade (capped at 1);
* step-like    - a logistic of slope 20 per decade: from chance to 1 within about 0.2 decades.

Shapes that never cross (every warning is false):

* plateau      - a logistic that levels off 0.1-0.25 below the threshold;
* flat         - chance throughout.

Before each checkpoint is evaluated, the gate forecasts from the checkpoints before it, as
`policy.assessment.plan_assessment` does: cadence factor 4, so a comprehensive assessment every
second checkpoint unless the forecast escalates one. A warning is the band's earliest crossing
coming before the next comprehensive step. Reported, over the curves of each shape and noise
level:

* warned       - runs warned before the crossing checkpoint was measured (crossing shapes);
* ahead        - checkpoints between the first warning and the crossing checkpoint: 0 means the
                 warning came when planning the crossing checkpoint itself (which it made comprehensive),
                 1 one checkpoint earlier, ...; median and range over warned runs;
* covered      - share of forecasts (made before the crossing) whose band held the true crossing;
* false        - runs that warned although the curve never crosses (never-crossing shapes), and
                 the share of their checkpoints planned under a warning (a warning while a plateau is still
                 rising that stops once it levels off is a short one).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy.special import expit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policy.forecast import DEFAULT_SETTINGS, ForecastSettings, Observation, fit_crossing

CHANCE, THRESHOLD, FACTOR = 0.25, 0.6, 4.0
X0, SPACING, N_CKPT = 21.0, math.log10(2.0), 14  # log10 FLOP of the first checkpoint, x2 apart
NOISES = (0.01, 0.03, 0.06)
Curve = Callable[[np.ndarray], np.ndarray]


def _crossing_x(rng: np.random.Generator) -> float:
    """A true crossing between checkpoints 6 and 11 (0-based), not on a checkpoint."""
    return X0 + SPACING * (rng.integers(5, 11) + rng.uniform(0.1, 0.9))


def logistic(rng: np.random.Generator) -> tuple[Curve, float | None]:
    k, xc = rng.uniform(1.5, 4.0), _crossing_x(rng)
    mid = xc - math.log((THRESHOLD - CHANCE) / (1 - THRESHOLD)) / k
    return (lambda x: CHANCE + (1 - CHANCE) * expit(k * (x - mid))), xc


def linear_log(rng: np.random.Generator) -> tuple[Curve, float | None]:
    a, xc = rng.uniform(0.1, 0.3), _crossing_x(rng)
    start = xc - (THRESHOLD - CHANCE) / a
    return (lambda x: np.clip(CHANCE + a * np.maximum(0.0, x - start), 0, 1)), xc


def step_like(rng: np.random.Generator) -> tuple[Curve, float | None]:
    k, xc = 20.0, _crossing_x(rng)
    mid = xc - math.log((THRESHOLD - CHANCE) / (1 - THRESHOLD)) / k
    return (lambda x: CHANCE + (1 - CHANCE) * expit(k * (x - mid))), xc


def plateau(rng: np.random.Generator) -> tuple[Curve, float | None]:
    top, k = THRESHOLD - rng.uniform(0.1, 0.25), rng.uniform(1.5, 4.0)
    mid = X0 + SPACING * rng.uniform(3, 9)
    return (lambda x: CHANCE + (top - CHANCE) * expit(k * (x - mid))), None


def flat(rng: np.random.Generator) -> tuple[Curve, float | None]:
    return (lambda x: np.full_like(x, CHANCE)), None


SHAPES: dict[str, Callable[[np.random.Generator], tuple[Curve, float | None]]] = {
    "logistic": logistic, "linear-log": linear_log, "step-like": step_like, "plateau": plateau, "flat": flat}


@dataclass
class RunResult:
    crossing_index: int | None
    first_warning: int | None  # the checkpoint being planned when the first warning came
    covered: int
    forecasts: int
    warnings: int  # plan-time forecasts that warned
    plans: int


def simulate(curve: Curve, xc: float | None, noise: float, rng: np.random.Generator,
             settings: ForecastSettings) -> RunResult:
    x = X0 + SPACING * np.arange(N_CKPT)
    y = np.clip(curve(x) + rng.normal(0.0, noise, N_CKPT), 0.0, 1.0)
    obs = [Observation(i, 10 ** x[i], float(y[i]), float(y[i] - 1.96 * noise), float(y[i] + 1.96 * noise))
           for i in range(N_CKPT)]
    cross = None if xc is None else int(np.argmax(x >= xc))
    last_comprehensive = 0  # checkpoint 0 is comprehensive: nothing before it
    first_warning, covered, forecasts, warned = None, 0, 0, 0
    for j in range(1, N_CKPT if cross is None else cross + 1):
        preliminary = 10 ** x[j] < FACTOR * 10 ** x[last_comprehensive]
        fc = fit_crossing(obs[:j], THRESHOLD, floor=CHANCE, settings=settings)
        if fc.ok and xc is not None:
            forecasts += 1
            covered += int((fc.earliest or math.inf) <= 10**xc <= (fc.latest or math.inf))
        next_step = FACTOR * 10 ** x[last_comprehensive if preliminary else j]
        warns = fc.ok and fc.earliest is not None and fc.earliest <= next_step
        warned += int(warns)
        if warns and first_warning is None:
            first_warning = j
        if not preliminary or warns:
            last_comprehensive = j
    return RunResult(cross, first_warning, covered, forecasts, warned, j)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--curves", type=int, default=12, help="simulated runs per shape and noise level")
    ap.add_argument("--band", type=float, default=DEFAULT_SETTINGS.band, help="central bootstrap band")
    ap.add_argument("--ceiling-weight", type=float, default=DEFAULT_SETTINGS.ceiling_weight,
                    help="weight of the pseudo-observation that the curve levels off at 1")
    ap.add_argument("--max-slope", type=float, default=DEFAULT_SETTINGS.max_slope,
                    help="steepest rise the curve may take, per decade of compute")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    settings = replace(DEFAULT_SETTINGS, band=args.band, ceiling_weight=args.ceiling_weight, max_slope=args.max_slope)
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    print(f"{args.curves} runs per row, {N_CKPT} checkpoints x2 apart, threshold >= {THRESHOLD} (chance {CHANCE}), "
          f"cadence x{FACTOR:g}, band {settings.band:.0%}, ceiling weight {settings.ceiling_weight:g}, "
          f"max slope {settings.max_slope:g}/decade, "
          f"{settings.resamples} bootstrap refits")
    print(f"{'shape':<11} {'noise':>5}  {'warned':>7}  {'ahead: median [range]':>21}  {'missed':>6}  "
          f"{'covered':>7}  {'false: runs, checkpoints':>24}")
    totals = {"false": [0, 0], "warned": [0, 0]}
    for name, make in SHAPES.items():
        for noise in NOISES:
            runs = [simulate(*make(rng), noise, rng, settings) for _ in range(args.curves)]
            if runs[0].crossing_index is None:
                false = sum(r.first_warning is not None for r in runs)
                totals["false"][0] += false
                totals["false"][1] += len(runs)
                per_ckpt = sum(r.warnings for r in runs) / sum(r.plans for r in runs)
                print(f"{name:<11} {noise:>5.2f}  {'':>7}  {'':>21}  {'':>6}  {'':>7}  "
                      f"{f'{false / len(runs):.0%}, {per_ckpt:.0%}':>24}")
                continue
            ahead = [r.crossing_index - r.first_warning for r in runs
                     if r.first_warning is not None and r.crossing_index is not None]
            totals["warned"][0] += len(ahead)
            totals["warned"][1] += len(runs)
            fc = sum(r.forecasts for r in runs)
            cov = f"{sum(r.covered for r in runs) / fc:.0%}" if fc else "-"
            spread = f"{statistics.median(ahead):g} [{min(ahead)}-{max(ahead)}]" if ahead else "-"
            print(f"{name:<11} {noise:>5.2f}  {len(ahead) / len(runs):>7.0%}  {spread:>21}  "
                  f"{len(runs) - len(ahead):>6}  {cov:>7}  {'':>6}")
    w, f = totals["warned"], totals["false"]
    print(f"all crossing runs warned in time: {w[0]}/{w[1]}; never-crossing runs warned: {f[0]}/{f[1]}; "
          f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
