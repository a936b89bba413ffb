"""Data-quality gate cost: great-expectations vs the same expectations written by hand.

    python bench/bench_quality.py [--rows 1000000] [--repeats 3]

Rows are built column-wise (SampleTable.from_rows validates row by row and would dominate).
Each case is timed `repeats` times after one warm-up call (GX import and suite construction are
reported separately, once); the table shows medians. The hand-written check computes the same
row and per-benchmark expectations with pandas/NumPy, and the script checks that both name the
same failing benchmarks before printing anything.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from policy.loading import parse_policy
from policy.results import ROW_FIELDS, SampleTable
from policy.schema import Policy

BENCHMARKS = ["bio", "chem", "cyber", "swe"]

POLICY = f"""
schema_version: 1
framework: {{id: bench, name: Bench policy, version: "1", source: bench/bench_quality.py,
             effective_date: 2025-01-01, operationalisation: invented for a benchmark}}
roles: [{{id: rso, name: RSO}}]
domains: [{{id: d, name: D, status: tracked}}]
levels: [{{id: L2, name: L2, description: base}}, {{id: L3, name: L3, description: up}}]
benchmarks:
{chr(10).join(f'  - {{id: {b}, name: {b}, version: "1", domain: d, description: {b}, attempts: 5, min_samples: 100}}'
              for b in BENCHMARKS)}
thresholds:
  - id: T
    name: T
    domain: d
    description: t
    triggers_level: L3
    measures:
{chr(10).join(f'      - {{benchmark: {b}, threshold: 0.6, early_warning: 0.4}}' for b in BENCHMARKS)}
cadence: {{comprehensive_compute_factor: 4, comprehensive_max_interval_days: 182}}
approvals: {{roles: [rso], quorum: 1}}
fail_closed: {{undetermined_counts_as_crossed: true, max_error_rate: 0.05}}
"""


def make_table(n: int, seed: int = 0) -> SampleTable:
    """n rows over 4 benchmarks, 5 attempts per sample, 1% errored attempts."""
    rng = np.random.default_rng(seed)
    idx = np.arange(n)
    bench = np.array(BENCHMARKS, dtype=object)[idx % len(BENCHMARKS)]
    per_bench = idx // len(BENCHMARKS)
    sample = np.char.add("q", (per_bench // 5).astype(str)).astype(object)
    attempt = (per_bench % 5).astype(np.int64)
    score = rng.random(n)
    err = rng.random(n) < 0.01
    score[err] = np.nan
    error = np.where(err, "timeout", "").astype(object)
    return SampleTable(bench, np.full(n, "1", dtype=object), sample, attempt, score, error)


def dirty(df: pd.DataFrame, seed: int = 1) -> pd.DataFrame:
    """1% of rows with a score outside [0, 1], in every benchmark: the slow attribution path."""
    rng = np.random.default_rng(seed)
    out = df.copy()
    bad = rng.random(len(out)) < 0.01
    out.loc[bad, "score"] = 1.5
    out.loc[bad, "error"] = ""
    return out


def hand_check(df: pd.DataFrame, policy: Policy, required: list[str]) -> dict[str, list[str]]:
    """The gate's expectations, hand-written: benchmark → failure names."""
    failed: dict[str, list[str]] = defaultdict(list)

    def every(name: str) -> dict[str, list[str]]:
        for b in required:
            failed[b].append(name)
        return dict(failed)

    if set(df.columns) != set(ROW_FIELDS):
        return every("columns")
    for c in ("benchmark", "version", "sample_id", "error"):
        if not pd.api.types.is_string_dtype(df[c]):
            every(f"{c}_type")
    if df["attempt"].dtype != np.int64:
        every("attempt_type")
    if df["score"].dtype != np.float64:
        every("score_type")
    if failed:
        return dict(failed)
    bench = df["benchmark"].to_numpy(dtype=object)
    if pd.isna(bench).any():
        return every("benchmark_not_null")
    score = df["score"].to_numpy()
    attempt = df["attempt"].to_numpy()
    err = df["error"]
    has_error = (err.notna() & (err != "")).to_numpy()
    missing = np.isnan(score)
    row_checks = {
        "sample_id_not_null": df["sample_id"].isna().to_numpy(),
        "attempt_non_negative": attempt < 0,
        "score_in_range": ~missing & ((score < 0.0) | (score > 1.0)),
        "score_null_iff_error": missing != has_error,
        "unique_key": df.duplicated(subset=["benchmark", "sample_id", "attempt"], keep=False).to_numpy(),
    }
    for name, mask in row_checks.items():
        if mask.any():
            for b in Counter(bench[mask].tolist()):
                failed[b].append(name)

    b_codes, b_names = pd.factorize(bench)
    s_codes, s_names = pd.factorize(df["sample_id"])
    nb, ns = len(b_names), len(s_names)
    n_rows = np.bincount(b_codes, minlength=nb)
    n_err = np.bincount(b_codes, weights=(missing | has_error), minlength=nb)
    pair = b_codes.astype(np.int64) * ns + s_codes
    valid_pairs = np.unique(pair[~missing & (score >= 0.0) & (score <= 1.0)])
    n_valid = np.bincount(valid_pairs // ns, minlength=nb)
    pairs, counts = np.unique(pair, return_counts=True)
    most = np.zeros(nb, dtype=np.int64)
    np.maximum.at(most, pairs // ns, counts)
    where = {b: i for i, b in enumerate(b_names.tolist())}
    limit = policy.fail_closed.max_error_rate
    for b in required:
        spec = policy.benchmark(b)
        i = where.get(b)
        if i is None:
            failed[b] += ["benchmark_present", "min_samples"]
            continue
        if n_valid[i] < spec.min_samples:
            failed[b].append("min_samples")
        if n_err[i] / n_rows[i] > limit:
            failed[b].append("error_rate")
        if most[i] > spec.attempts:
            failed[b].append("attempts_per_sample")
    return dict(failed)


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    fn()  # warm-up: caches, lazy imports
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    policy = parse_policy(POLICY, "bench")
    required = list(BENCHMARKS)
    table = make_table(args.rows)

    t0 = time.perf_counter()
    import great_expectations

    t_import = time.perf_counter() - t0
    from tasks.quality import check_quality_frame
    from tasks.quality.engine import get_engine
    from tasks.quality.frames import summary_frame, table_frame, with_derived

    t0 = time.perf_counter()
    engine = get_engine()
    t_build = time.perf_counter() - t0

    clean = table_frame(table)
    bad = dirty(clean)
    rows_clean = with_derived(clean)

    results = []
    for label, df in (("clean", clean), ("1% bad scores", bad)):
        t_gate, report = timed(lambda df=df: check_quality_frame(df, policy, required), args.repeats)
        t_hand, hand = timed(lambda df=df: hand_check(df, policy, required), args.repeats)
        gx_names = {b: sorted({m.split(":", 1)[0] for m in ms}) for b, ms in report.failed_benchmarks.items()}
        hand_names = {b: sorted(set(ms)) for b, ms in hand.items()}
        if gx_names != hand_names:
            raise SystemExit(f"{label}: GX and hand-written checks disagree:\n  gx   {gx_names}\n  hand {hand_names}")
        results.append((f"check_quality, {label}", t_gate, t_hand, report.passed))

    t_rows, rows_res = timed(lambda: engine.run_rows(rows_clean), args.repeats)
    summary = summary_frame(rows_clean, policy, required)
    t_sum, _ = timed(lambda: summary_frame(rows_clean, policy, required), args.repeats)
    t_bench, _ = timed(lambda: engine.run_benchmarks(summary, policy.fail_closed.max_error_rate), args.repeats)

    n = args.rows
    print(f"data-quality gate, {n:,} rows, {len(required)} benchmarks, median of {args.repeats} "
          f"(GX {great_expectations.__version__}, pandas {pd.__version__}, numpy {np.__version__})")
    print(f"one-off: import great_expectations {t_import:.2f} s, build context + suites {t_build:.2f} s")
    print()
    print(f"{'case':<34} {'GX (s)':>8} {'hand (s)':>9} {'GX/hand':>8}  verdict")
    for label, tg, th, passed in results:
        print(f"{label:<34} {tg:8.3f} {th:9.3f} {tg / th:8.1f}x  {'passed' if passed else 'failed (same benchmarks)'}")
    print()
    print("check_quality, clean, broken down:")
    print(f"  {'GX row suite (' + str(len(rows_res.results)) + ' expectations)':<32} {t_rows:8.3f}")
    print(f"  {'pandas per-benchmark summary':<32} {t_sum:8.3f}")
    print(f"  {'GX summary suite (4 expectations)':<32} {t_bench:8.3f}")


if __name__ == "__main__":
    main()
