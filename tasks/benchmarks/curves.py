"""Capability curves of the simulated model (`rsp-sim`): pure functions, no Inspect.

The probability that a simulated checkpoint answers a sample correctly grows with
effective training compute C (FLOP) along a logistic curve in log10(C):

    p_correct(C) = chance + (1 - chance) / (1 + exp(-slope * (log10(C) - midpoint)))

`chance` is the benchmark's `chance_score` from the policy (0.25 for a four-way
multiple-choice proxy). One (midpoint, slope) pair per benchmark id; at
log10(C) = midpoint the model is halfway from chance to perfect.

p_correct by effective compute (chance 0.25 for the four-way multiple-choice proxies,
0 for short-answer and flag proxies; the policy's chance_score is what is used):

| benchmark id                   | midpoint | slope | 1e23 | 1e24 | 1e25 | 1e26 | 1e27 |
| ------------------------------ | -------- | ----- | ---- | ---- | ---- | ---- | ---- |
| wmdp-bio-proxy                 | 24.8     | 1.6   | 0.29 | 0.41 | 0.68 | 0.90 | 0.98 |
| wmdp-chem-proxy                | 25.0     | 1.5   | 0.29 | 0.39 | 0.62 | 0.86 | 0.96 |
| lab-bench-proxy                | 25.3     | 1.4   | 0.28 | 0.35 | 0.55 | 0.80 | 0.94 |
| virology-troubleshooting-proxy | 25.6     | 1.3   | 0.27 | 0.33 | 0.49 | 0.72 | 0.90 |
| persuasion-proxy               | 25.8     | 1.0   | 0.29 | 0.36 | 0.48 | 0.66 | 0.83 |
| cybench-proxy                  | 26.0     | 1.3   | 0.02 | 0.07 | 0.21 | 0.50 | 0.79 |
| swe-bench-proxy                | 26.0     | 1.1   | 0.04 | 0.10 | 0.25 | 0.50 | 0.75 |
| ctf-uplift-proxy               | 26.2     | 1.2   | 0.02 | 0.07 | 0.19 | 0.44 | 0.72 |
| sandbagging-probe-proxy        | 26.5     | 1.2   | 0.26 | 0.29 | 0.36 | 0.52 | 0.73 |
| re-bench-proxy                 | 26.6     | 1.0   | 0.03 | 0.07 | 0.17 | 0.35 | 0.60 |
| mle-bench-proxy                | 26.8     | 1.0   | 0.02 | 0.06 | 0.14 | 0.31 | 0.55 |
| self-replication-proxy         | 27.0     | 1.2   | 0.01 | 0.03 | 0.08 | 0.23 | 0.50 |
| (any other id)                 | 26.5     | 1.0   |      |      |      |      |      |

So the CBRN proxies cross 0.5-0.7 between 1e24 and 1e26 FLOP (0.49-0.68 at 1e25),
while cyber, AI R&D and autonomy proxies stay low until about 1e26 and later: a
scaling demo crosses CBRN thresholds first. A checkpoint's model dict may shift
this (`capability_offset`, in decades) or replace curves (`curves`: {id: [mid, slope]}).

Each outcome is deterministic: u = uniform(sha256(checkpoint key, benchmark id,
sample id, epoch)) and the sample is correct iff u < p. The checkpoint key is the
content digest, or "run_id@step" when there is none, so the same weights give the
same answers however often they are evaluated.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping

# (midpoint in log10 FLOP, slope per decade of compute)
CURVES: dict[str, tuple[float, float]] = {
    "wmdp-bio-proxy": (24.8, 1.6),
    "wmdp-chem-proxy": (25.0, 1.5),
    "lab-bench-proxy": (25.3, 1.4),
    "virology-troubleshooting-proxy": (25.6, 1.3),
    "persuasion-proxy": (25.8, 1.0),
    "cybench-proxy": (26.0, 1.3),
    "swe-bench-proxy": (26.0, 1.1),
    "ctf-uplift-proxy": (26.2, 1.2),
    "sandbagging-probe-proxy": (26.5, 1.2),
    "re-bench-proxy": (26.6, 1.0),
    "mle-bench-proxy": (26.8, 1.0),
    "self-replication-proxy": (27.0, 1.2),
}
DEFAULT_CURVE: tuple[float, float] = (26.5, 1.0)


def curve_for(benchmark_id: str, overrides: Mapping[str, tuple[float, float] | list[float]] | None = None
              ) -> tuple[float, float]:
    if overrides and benchmark_id in overrides:
        mid, slope = overrides[benchmark_id]
        return float(mid), float(slope)
    return CURVES.get(benchmark_id, DEFAULT_CURVE)


def p_correct(effective_compute: float, benchmark_id: str, chance: float = 0.0, *,
              capability_offset: float = 0.0,
              overrides: Mapping[str, tuple[float, float] | list[float]] | None = None) -> float:
    """Probability of a correct answer; `capability_offset` shifts log10(C) (a more or less efficient run)."""
    if effective_compute <= 0:
        raise ValueError(f"effective_compute must be positive, got {effective_compute}")
    if not 0.0 <= chance <= 1.0:
        raise ValueError(f"chance must be in [0, 1], got {chance}")
    mid, slope = curve_for(benchmark_id, overrides)
    x = slope * (math.log10(effective_compute) + capability_offset - mid)
    # Numerically safe logistic for large |x|.
    sig = 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))
    return chance + (1.0 - chance) * sig


def checkpoint_key(digest: str, run_id: str, step: int) -> str:
    return digest if digest else f"{run_id}@{step}"


def uniform(*parts: object) -> float:
    """A deterministic uniform in [0, 1) from the parts (sha256, first 8 bytes)."""
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64


def outcome(key: str, benchmark_id: str, sample_id: object, epoch: int, p: float) -> bool:
    """Is this (checkpoint, benchmark, sample, epoch) answered correctly at probability p?"""
    return uniform(key, benchmark_id, sample_id, epoch) < p
