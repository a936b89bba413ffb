"""The data-quality gate, with real great-expectations runs.

Bad rows are built as DataFrames directly: SampleTable refuses them, and the gate must catch
them anyway (an importer or a future code path may hand it rows no SampleTable checked).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from policy.loading import parse_policy
from policy.results import SampleTable
from policy.schema import Policy
from tasks.quality import QualityReport, check_quality, check_quality_frame
from tasks.quality import engine as quality_engine
from tasks.quality.frames import table_frame

POLICY_YAML = """
schema_version: 1
framework:
  id: qtest
  name: Quality test policy
  version: "1"
  source: tests/test_quality.py
  effective_date: 2025-01-01
  operationalisation: Numbers invented for tests.
roles:
  - {id: rso, name: Responsible Scaling Officer}
domains:
  - {id: cbrn, name: CBRN, status: tracked}
levels:
  - {id: L2, name: Level 2, description: baseline}
  - {id: L3, name: Level 3, description: elevated}
benchmarks:
  - {id: a, name: A, version: "1", domain: cbrn, description: a, min_samples: 10}
  - {id: b, name: B, version: "1", domain: cbrn, description: b, min_samples: 10, attempts: 3}
  - {id: c, name: C, version: "1", domain: cbrn, description: c, min_samples: 10}
thresholds:
  - id: T
    name: T
    domain: cbrn
    description: t
    triggers_level: L3
    measures:
      - {benchmark: a, threshold: 0.6, early_warning: 0.4}
      - {benchmark: b, threshold: 0.6, early_warning: 0.4}
      - {benchmark: c, threshold: 0.6, early_warning: 0.4}
cadence:
  comprehensive_compute_factor: 4
  comprehensive_max_interval_days: 182
approvals:
  roles: [rso]
  quorum: 1
fail_closed:
  undetermined_counts_as_crossed: true
  max_error_rate: 0.1
"""

REQUIRED = ["a", "b", "c"]


@pytest.fixture(scope="module")
def policy() -> Policy:
    return parse_policy(POLICY_YAML, "inline")


def rows(bench: str, n: int, attempts: int = 1, errors: int = 0, start: int = 0) -> list[dict]:
    out = []
    for i in range(start, start + n):
        for k in range(attempts):
            j = (i - start) * attempts + k
            if j < errors:
                out.append({"benchmark": bench, "version": "1", "sample_id": f"q{i}", "attempt": k,
                            "score": None, "error": "timeout"})
            else:
                out.append({"benchmark": bench, "version": "1", "sample_id": f"q{i}", "attempt": k,
                            "score": float((i + k) % 2), "error": None})
    return out


def clean_table() -> SampleTable:
    return SampleTable.from_rows(rows("a", 12) + rows("b", 12, attempts=3) + rows("c", 12))


def clean_frame() -> pd.DataFrame:
    return table_frame(clean_table())


def set_cell(df: pd.DataFrame, bench: str, nth: int, column: str, value: object) -> None:
    idx = df.index[df["benchmark"] == bench][nth]
    if column == "score" and value is not None:
        df["score"] = df["score"].astype("float64")
    df.loc[idx, column] = value


def only_failed(report: QualityReport, expected: set[str]) -> None:
    assert not report.passed
    assert set(report.failed_benchmarks) == expected, report.failed_benchmarks


def failing_checks(report: QualityReport) -> set[str]:
    return {c.name for c in report.checks if not c.passed}


# --- clean data -------------------------------------------------------------------------------

def test_clean_table_passes(policy: Policy) -> None:
    report = check_quality(clean_table(), policy, REQUIRED)
    assert report.passed and report.gx_success
    assert report.failed_benchmarks == {}
    assert all(c.passed for c in report.checks)
    assert report.statistics.evaluated == report.statistics.successful > 10
    assert report.statistics.unsuccessful == 0
    # Each per-benchmark check appears once per required benchmark, with its numbers.
    min_samples = [c for c in report.checks if c.name == "min_samples"]
    assert [c.benchmark for c in min_samples] == REQUIRED
    assert {(c.observed, c.expected) for c in min_samples} == {(12, 10)}
    assert report.to_verdict().status == "passed"
    json.loads(report.model_dump_json())  # ledger-ready


def test_errors_within_limit_and_full_attempts_pass(policy: Policy) -> None:
    # b: 3 attempts per sample (its limit) and 3 errors in 36 rows (8.3% <= 10%).
    table = SampleTable.from_rows(rows("a", 12) + rows("b", 12, attempts=3, errors=3) + rows("c", 12))
    report = check_quality(table, policy, REQUIRED)
    assert report.passed, report.failed_benchmarks
    rate = next(c for c in report.checks if c.name == "error_rate" and c.benchmark == "b")
    assert rate.observed == pytest.approx(3 / 36) and rate.expected == 0.1


# --- row checks, each naming only the benchmarks whose rows fail -----------------------------

def test_score_out_of_range_names_its_benchmark(policy: Policy) -> None:
    df = clean_frame()
    set_cell(df, "a", 0, "score", 1.5)
    set_cell(df, "a", 1, "score", -0.25)
    report = check_quality_frame(df, policy, REQUIRED)
    only_failed(report, {"a"})
    assert failing_checks(report) == {"score_in_range"}
    assert "2 row(s) with a score outside [0, 1]" in report.failed_benchmarks["a"][0]
    assert "1.5" in report.failed_benchmarks["a"][0]


def test_infinite_score_is_out_of_range(policy: Policy) -> None:
    df = clean_frame()
    set_cell(df, "c", 3, "score", np.inf)
    report = check_quality_frame(df, policy, REQUIRED)
    only_failed(report, {"c"})
    assert failing_checks(report) == {"score_in_range"}


def test_nan_score_without_error(policy: Policy) -> None:
    df = clean_frame()
    set_cell(df, "b", 5, "score", np.nan)
    report = check_quality_frame(df, policy, REQUIRED)
    only_failed(report, {"b"})
    assert failing_checks(report) == {"score_null_iff_error"}


def test_score_with_error_message(policy: Policy) -> None:
    df = clean_frame()
    set_cell(df, "c", 0, "error", "crashed")
    report = check_quality_frame(df, policy, REQUIRED)
    only_failed(report, {"c"})
    assert failing_checks(report) == {"score_null_iff_error"}


def test_duplicate_keys(policy: Policy) -> None:
    df = clean_frame()
    dup = df[df["benchmark"] == "a"].iloc[[2]]
    df = pd.concat([df, dup], ignore_index=True)
    report = check_quality_frame(df, policy, REQUIRED)
    only_failed(report, {"a"})
    # The duplicate is also one row too many for a's single attempt.
    assert failing_checks(report) == {"unique_key", "attempts_per_sample"}
    assert any("unique_key: 2 row(s) sharing a key" in m for m in report.failed_benchmarks["a"])


def test_null_sample_id_and_negative_attempt(policy: Policy) -> None:
    df = clean_frame()
    df["sample_id"] = df["sample_id"].astype(object)
    set_cell(df, "b", 0, "sample_id", None)
    set_cell(df, "c", 0, "attempt", -1)
    report = check_quality_frame(df, policy, REQUIRED)
    only_failed(report, {"b", "c"})
    assert {"sample_id_not_null", "attempt_non_negative"} <= failing_checks(report)


def test_many_bad_rows_are_all_attributed(policy: Policy) -> None:
    """More failing rows than GX's partial list holds: the attribution must still be complete."""
    table = SampleTable.from_rows(rows("a", 40) + rows("b", 12, attempts=3) + rows("c", 12))
    df = table_frame(table)
    a_rows = df.index[df["benchmark"] == "a"]
    df.loc[a_rows[:30], "score"] = 2.0
    # One bad c row far past the first 20 failing rows: only a complete attribution finds it.
    df.loc[df.index[df["benchmark"] == "c"][-1], "score"] = 3.0
    report = check_quality_frame(df, policy, REQUIRED)
    only_failed(report, {"a", "c"})
    assert report.failed_benchmarks["a"][0].startswith("score_in_range: 30 row(s)")
    assert report.failed_benchmarks["c"][0].startswith("score_in_range: 1 row(s)")


def test_unrequired_benchmark_failure_leaves_required_alone(policy: Policy) -> None:
    df = clean_frame()
    set_cell(df, "c", 0, "score", 7.0)
    report = check_quality_frame(df, policy, ["a", "b"])
    only_failed(report, {"c"})  # reported, but a and b stay trustworthy
    assert report.to_verdict().failed_benchmarks == {"c": report.failed_benchmarks["c"]}


# --- per-benchmark checks ---------------------------------------------------------------------

def test_missing_required_benchmark(policy: Policy) -> None:
    table = SampleTable.from_rows(rows("a", 12) + rows("b", 12, attempts=3))
    report = check_quality(table, policy, REQUIRED)
    only_failed(report, {"c"})
    assert failing_checks(report) == {"benchmark_present", "min_samples"}
    assert any("results missing" in m for m in report.failed_benchmarks["c"])


def test_too_few_samples(policy: Policy) -> None:
    # a has only 9 samples, all valid; it needs 10.
    table = SampleTable.from_rows(rows("a", 9) + rows("b", 12, attempts=3) + rows("c", 12))
    report = check_quality(table, policy, REQUIRED)
    only_failed(report, {"a"})
    assert failing_checks(report) == {"min_samples"}
    check = next(c for c in report.checks if c.name == "min_samples" and c.benchmark == "a")
    assert (check.observed, check.expected, check.passed) == (9, 10, False)


def test_errored_samples_do_not_count_as_samples(policy: Policy) -> None:
    table = SampleTable.from_rows(rows("a", 11, errors=2) + rows("b", 12, attempts=3) + rows("c", 12))
    report = check_quality(table, policy, REQUIRED)
    only_failed(report, {"a"})
    assert failing_checks(report) == {"min_samples", "error_rate"}


def test_error_rate_over_limit(policy: Policy) -> None:
    # b: 4 errors in 36 rows = 11.1% > 10%; every sample keeps a valid attempt.
    table = SampleTable.from_rows(rows("a", 12) + rows("b", 12, attempts=3, errors=4) + rows("c", 12))
    report = check_quality(table, policy, REQUIRED)
    only_failed(report, {"b"})
    assert failing_checks(report) == {"error_rate"}
    assert "4 of 36 row(s) errored" in report.failed_benchmarks["b"][0]


def test_too_many_attempts(policy: Policy) -> None:
    # a allows 1 attempt; b allows 3 and gets 3.
    table = SampleTable.from_rows(rows("a", 12, attempts=2) + rows("b", 12, attempts=3) + rows("c", 12))
    report = check_quality(table, policy, REQUIRED)
    only_failed(report, {"a"})
    assert failing_checks(report) == {"attempts_per_sample"}
    check = next(c for c in report.checks if c.name == "attempts_per_sample" and c.benchmark == "a")
    assert (check.observed, check.expected) == (2, 1)


def test_benchmark_the_policy_lacks(policy: Policy) -> None:
    report = check_quality(clean_table(), policy, ["a", "zzz"])
    only_failed(report, {"zzz"})
    assert report.gx_success  # the data is fine; the request is not


def test_empty_table_fails_every_required_benchmark(policy: Policy) -> None:
    report = check_quality(SampleTable.empty(), policy, REQUIRED)
    only_failed(report, set(REQUIRED))


# --- failures that concern every row ---------------------------------------------------------

def test_extra_column_fails_every_required_benchmark(policy: Policy) -> None:
    df = clean_frame().assign(note="x")
    report = check_quality_frame(df, policy, REQUIRED)
    only_failed(report, set(REQUIRED))
    assert "columns" in failing_checks(report)


def test_missing_column_fails_every_required_benchmark(policy: Policy) -> None:
    df = clean_frame().drop(columns=["error"])
    report = check_quality_frame(df, policy, REQUIRED)
    only_failed(report, set(REQUIRED))
    assert not report.gx_success


def test_wrong_score_type_fails_every_required_benchmark(policy: Policy) -> None:
    df = clean_frame()
    df["score"] = df["score"].astype(str)
    report = check_quality_frame(df, policy, REQUIRED)
    only_failed(report, set(REQUIRED))
    assert "score_type" in failing_checks(report)


def test_null_benchmark_fails_every_required_benchmark(policy: Policy) -> None:
    df = clean_frame()
    df["benchmark"] = df["benchmark"].astype(object)
    df.loc[0, "benchmark"] = None
    report = check_quality_frame(df, policy, REQUIRED)
    only_failed(report, set(REQUIRED))
    assert "benchmark_not_null" in failing_checks(report)


def test_unhashable_values_fail_closed(policy: Policy) -> None:
    df = clean_frame()
    df["sample_id"] = [[s] for s in df["sample_id"]]
    report = check_quality_frame(df, policy, REQUIRED)
    only_failed(report, set(REQUIRED))
    assert not report.gx_success


def test_gx_raising_fails_every_required_benchmark(policy: Policy, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(self: object, df: object) -> None:
        raise RuntimeError("metric provider exploded")

    monkeypatch.setattr(quality_engine.Engine, "run_rows", boom)
    report = check_quality(clean_table(), policy, REQUIRED)
    only_failed(report, set(REQUIRED))
    assert not report.gx_success
    for b in REQUIRED:
        assert "metric provider exploded" in report.failed_benchmarks[b][0]
    assert report.to_verdict().status == "failed"
    monkeypatch.undo()
    # The engine was dropped after the failure and is rebuilt: the next call is judged afresh.
    assert check_quality(clean_table(), policy, REQUIRED).passed


def test_not_a_dataframe_fails_closed(policy: Policy) -> None:
    report = check_quality_frame("not a frame", policy, REQUIRED)  # type: ignore[arg-type]
    only_failed(report, set(REQUIRED))


# --- isolation, docs, import cost -------------------------------------------------------------

def test_results_do_not_leak_between_calls(policy: Policy) -> None:
    df = clean_frame()
    set_cell(df, "a", 0, "score", 9.0)
    assert not check_quality_frame(df, policy, REQUIRED).passed
    report = check_quality(clean_table(), policy, REQUIRED)
    assert report.passed and report.failed_benchmarks == {}
    # A long-lived worker must not accumulate validation results in the in-memory store.
    assert quality_engine.get_engine().context.validation_results_store.list_keys() == []


def test_docs_dir_gets_data_docs(policy: Policy, tmp_path: Path) -> None:
    df = clean_frame()
    set_cell(df, "a", 0, "score", 1.5)
    report = check_quality_frame(df, policy, REQUIRED, docs_dir=tmp_path / "docs")
    assert report.docs_path is not None and report.docs_error is None
    index = Path(report.docs_path)
    assert index.is_file() and index.parent == tmp_path / "docs"
    assert "FAILED" in index.read_text()
    pages = sorted(p.name for p in index.parent.glob("*.html"))
    assert pages == ["benchmark_summary.html", "index.html", "sample_rows.html"]
    rows_page = (index.parent / "sample_rows.html").read_text()
    assert "<html" in rows_page.lower() and "score" in rows_page


def test_unwritable_docs_dir_does_not_change_verdict(policy: Policy, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    report = check_quality(clean_table(), policy, REQUIRED, docs_dir=blocker / "docs")
    assert report.passed and report.docs_path is None and report.docs_error


def test_import_is_cheap() -> None:
    code = ("import sys, tasks.quality; "
            "print(sorted(m for m in ('pandas', 'great_expectations') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip() == "[]"
