"""The DataFrames the GX suites validate, and row predicates that name failing benchmarks.

Imports pandas at module level: only `tasks.quality.gate` imports this, inside a call.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from policy.results import ROW_FIELDS

if TYPE_CHECKING:
    from policy.results import SampleTable
    from policy.schema import Policy

# Derived per-row flags: GX compares them with a pair expectation ("score null iff error").
SCORE_MISSING = "_score_missing"
HAS_ERROR = "_has_error"
FRAME_COLUMNS: tuple[str, ...] = (*ROW_FIELDS, SCORE_MISSING, HAS_ERROR)
KEY_COLUMNS = ["benchmark", "sample_id", "attempt"]

SUMMARY_COLUMNS: tuple[str, ...] = (
    "benchmark", "n_rows", "n_errors", "n_valid_samples", "min_samples", "error_rate",
    "max_attempts_per_sample", "attempts_allowed",
)


def table_frame(table: SampleTable) -> pd.DataFrame:
    """Columnar table → DataFrame without per-row Python work (pandas infers its string dtype)."""
    return pd.DataFrame({f: getattr(table, f) for f in ROW_FIELDS})


def with_derived(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of `df` with the derived flags; a flag whose source column is absent is left out,
    so the column-set expectation fails rather than this function."""
    extra: dict[str, pd.Series] = {}
    if "score" in df.columns:
        extra[SCORE_MISSING] = df["score"].isna()
    if "error" in df.columns:
        err = df["error"]
        # None/NaN and "" both mean "no error"; anything else (even a non-string) is an error.
        extra[HAS_ERROR] = (err.notna() & (err != "")).astype(bool)
    return df.assign(**extra)


def _numeric(series: pd.Series) -> pd.Series:
    return pd.to_numeric(series, errors="coerce")


def errored_rows(df: pd.DataFrame) -> pd.Series:
    """A row counts as an error when it says so or has no score: fail closed on either."""
    return df[HAS_ERROR] | df[SCORE_MISSING]


def summary_frame(df: pd.DataFrame, policy: Policy, benchmark_ids: list[str]) -> pd.DataFrame:
    """One row per benchmark in `benchmark_ids` (all defined by `policy`), present or not.

    The per-benchmark limits travel as columns so that one cached GX suite serves every policy.
    """
    # Factorised codes and bincounts: a NumPy job on a million rows, no per-group Python.
    b_codes, b_names = pd.factorize(df["benchmark"])
    s_codes, s_names = pd.factorize(df["sample_id"])
    nb, ns = len(b_names), max(len(s_names), 1)
    score = _numeric(df["score"]).to_numpy(dtype=float, na_value=np.nan)
    with np.errstate(invalid="ignore"):
        valid = (score >= 0.0) & (score <= 1.0)  # NaN is neither: an errored row is no valid sample
    errored = errored_rows(df).to_numpy(dtype=bool, na_value=True)
    has_b = b_codes >= 0
    keyed = has_b & (s_codes >= 0)
    n_rows = np.bincount(b_codes[has_b], minlength=nb)
    n_err = np.bincount(b_codes[has_b & errored], minlength=nb)
    pair = b_codes.astype(np.int64) * ns + s_codes
    n_valid = np.bincount(np.unique(pair[keyed & valid]) // ns, minlength=nb)
    pairs, counts = np.unique(pair[keyed], return_counts=True)
    most = np.zeros(nb, dtype=np.int64)
    np.maximum.at(most, pairs // ns, counts)
    index = {b: i for i, b in enumerate(b_names.tolist())}

    rows = []
    for bid in benchmark_ids:
        b = policy.benchmark(bid)
        i = index.get(bid)
        n = int(n_rows[i]) if i is not None else 0
        errors = int(n_err[i]) if i is not None else 0
        rows.append({
            "benchmark": bid,
            "n_rows": n,
            "n_errors": errors,
            "n_valid_samples": int(n_valid[i]) if i is not None else 0,
            "min_samples": int(b.min_samples),
            # NaN for an absent benchmark: the presence check is what fails it, not a made-up rate.
            "error_rate": errors / n if n else float("nan"),
            "max_attempts_per_sample": int(most[i]) if i is not None else 0,
            "attempts_allowed": int(b.attempts),
        })
    out = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    return out.astype({"n_rows": "int64", "n_errors": "int64", "n_valid_samples": "int64", "min_samples": "int64",
                       "error_rate": "float64", "max_attempts_per_sample": "int64", "attempts_allowed": "int64"})


# Row predicates, one per attributable row expectation: True where a row violates it.
# They name the benchmarks behind a GX failure when GX's partial list does not cover every row.
def _violations(df: pd.DataFrame, check: str) -> pd.Series:
    if check == "sample_id_not_null":
        return df["sample_id"].isna()
    if check == "attempt_not_null":
        return df["attempt"].isna()
    if check == "attempt_non_negative":
        return _numeric(df["attempt"]) < 0
    if check == "score_in_range":
        score = _numeric(df["score"])
        return score.notna() & ~score.between(0.0, 1.0)
    if check == "score_null_iff_error":
        return df[SCORE_MISSING] != df[HAS_ERROR]
    if check == "unique_key":
        return df.duplicated(subset=KEY_COLUMNS, keep=False)
    raise KeyError(check)


def violations_by_benchmark(df: pd.DataFrame, check: str) -> Counter[str | None]:
    """Rows violating `check`, counted per benchmark; None counts rows with no usable benchmark."""
    mask = _violations(df, check).to_numpy(dtype=bool, na_value=True)
    return count_benchmarks(df["benchmark"].to_numpy(dtype=object)[mask].tolist())


def count_benchmarks(values: list[object]) -> Counter[str | None]:
    return Counter(v if isinstance(v, str) and v else None for v in values)
