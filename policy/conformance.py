"""Are these results what the policy asked for? Pure checks the engine runs before trusting an estimate.

A result set that answers a different question than the policy posed must not
decide a level (README, "Fail closed"):

- **Version.** Rows that name a benchmark version other than the one the policy
  declares measured a different benchmark: every measure on that benchmark is
  `undetermined`, with both versions in the reason. (Rows that name no version
  are taken as the declared one; the runners fill it in, and a results file may
  leave it out.)
- **Attempts.** A `best_of_k` measure is only as strong as its k: a question
  given fewer attempts than the benchmark declares is under-elicited, and every
  `best_of_k` measure on that benchmark is `undetermined`. Errored attempts are
  attempts; the next rule covers what they might have scored.
- **Errors in the rule-out test.** An errored attempt might have succeeded. The
  point estimate is computed from scored attempts only, but the bound that rules
  a threshold out is computed with every errored attempt scored at its worst
  (1.0 for `>=`/`>`, 0.0 for `<=`/`<`), so errors can only raise the level.
  `conservative_summaries` gives those summaries; the engine takes whichever
  bound is more conservative.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from policy.results import SampleTable
from policy.schema import Benchmark, Measure, Policy
from policy.statistics import Summary, summarize_many

UP, DOWN = ">=", "<="


def direction(comparison: str) -> str:
    """`>=` when a higher score fires the threshold (`>=`, `>`), `<=` otherwise."""
    return UP if comparison in (">=", ">") else DOWN


def version_mismatch(benchmark: Benchmark, table: SampleTable) -> str | None:
    # np.unique first: one Python string per distinct version, not per row (a million rows cost 0.5 s).
    found = sorted({str(v) for v in np.unique(table.version)} - {"", benchmark.version})
    if not found:
        return None
    plural = "s" if len(found) > 1 else ""
    return (f"results are for version{plural} {', '.join(repr(v) for v in found)} of '{benchmark.id}', "
            f"the policy declares version {benchmark.version!r}")


def under_elicited(benchmark: Benchmark, table: SampleTable) -> str | None:
    if len(table) == 0:
        return None
    _, counts = table.attempts_per_question()
    short = int((counts < benchmark.attempts).sum())
    if short == 0:
        return None
    return (f"under-elicited: {short} of {counts.shape[0]} questions have fewer attempts than the "
            f"{benchmark.attempts} the policy declares for best-of-{benchmark.attempts} (fewest: {int(counts.min())})")


def mismatches(policy: Policy, by_bench: Mapping[str, SampleTable],
               measures: Iterable[Measure]) -> dict[tuple[str, str], list[str]]:
    """(benchmark, metric) → why its results are not what the policy asked for; absent when they are."""
    out: dict[tuple[str, str], list[str]] = {}
    for m in measures:
        key = (m.benchmark, m.metric)
        table = by_bench.get(m.benchmark)
        if table is None or key in out:
            continue
        bench = policy.benchmark(m.benchmark)
        reasons = [r for r in (version_mismatch(bench, table),
                               under_elicited(bench, table) if m.metric == "best_of_k" else None) if r]
        if reasons:
            out[key] = reasons
    return out


def conservative_summaries(policy: Policy, by_bench: Mapping[str, SampleTable],
                           measures: Iterable[Measure]) -> dict[tuple[str, str, str], Summary]:
    """(benchmark, metric, direction) → summary with every errored attempt scored at its worst for that direction.

    Only benchmarks with errored attempts appear: without errors the ordinary summary is already the
    conservative one. The interval method is the ordinary one (`summarize_many`), so the two bounds differ
    only in what the errors are taken to have scored.
    """
    rules = policy.fail_closed
    wanted: dict[str, dict[tuple[str, str], SampleTable]] = {UP: {}, DOWN: {}}
    for m in measures:
        table = by_bench.get(m.benchmark)
        if table is None or not (table.error != "").any():
            continue
        d = direction(m.comparison)
        wanted[d][(m.benchmark, m.metric)] = table.with_errors_scored(1.0 if d == UP else 0.0)
    out: dict[tuple[str, str, str], Summary] = {}
    for d, tables in wanted.items():
        if tables:
            for (bid, metric), s in summarize_many(tables, confidence=rules.confidence,
                                                   resamples=rules.bootstrap_resamples, seed=rules.seed).items():
                out[(bid, metric, d)] = s
    return out


def rule_out_bound(policy: Policy, measure: Measure, summary: Summary,
                   conservative: Summary | None) -> tuple[float, str]:
    """The value the rule-out test compares with the threshold, and how to name it in a reason."""
    rules = policy.fail_closed
    upper = direction(measure.comparison) == UP

    def pick(s: Summary) -> float:
        if rules.rule_out == "point_estimate":
            return s.mean
        return s.ci_high if upper else s.ci_low

    name = "point estimate" if rules.rule_out == "point_estimate" else (
        f"{summary.confidence:.0%} interval's {'upper' if upper else 'lower'} bound")
    bound = pick(summary)
    if conservative is None or summary.n_errors == 0:
        return bound, name
    alt = pick(conservative)
    worse = alt > bound if upper else alt < bound
    if not worse:
        return bound, name
    n = summary.n_errors
    return alt, f"{name} ({n} errored attempt{'s' if n != 1 else ''} scored {'1' if upper else '0'})"
