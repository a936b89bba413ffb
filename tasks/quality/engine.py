"""The great-expectations side: two suites on one ephemeral context, built once per process.

* `sample_rows`: one row per (benchmark, sample, attempt) plus the derived flags.
* `benchmark_summary`: one row per required benchmark; per-benchmark limits are columns and
  the policy-wide error-rate limit is a suite parameter, so the same suites serve any policy.

Building the context costs far less than importing GX (about 3 s), but both are paid once.
Results never outlive a call: the Validator is per run, and the in-memory results store that
`ValidationDefinition.run` writes to is emptied after every run (it would grow without bound
in a long-lived worker).
"""

from __future__ import annotations

import html
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tasks.quality.frames import FRAME_COLUMNS, HAS_ERROR, KEY_COLUMNS, SCORE_MISSING

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations.core import ExpectationSuiteValidationResult

Scope = Literal["all", "rows"]


@dataclass(frozen=True)
class RowRule:
    """A row expectation. scope "all": a failure concerns every row (schema, types, null
    benchmark) and so every required benchmark; "rows": failing rows name their benchmarks."""

    name: str
    scope: Scope
    expected: str  # what a clean table looks like, in words
    violation: str  # what a failing row is, in words


@dataclass(frozen=True)
class BenchRule:
    name: str
    observed: str  # summary column compared
    limit: str | None  # summary column holding the per-benchmark limit (None: the suite parameter)
    expected: str


STRING_COLUMNS = ("benchmark", "version", "sample_id", "error")

ROW_RULES: tuple[RowRule, ...] = (
    RowRule("columns", "all", f"columns exactly {', '.join(FRAME_COLUMNS)}", "wrong column set"),
    *(RowRule(f"{c}_type", "all", f"'{c}' holds strings", "not a string") for c in STRING_COLUMNS),
    RowRule("attempt_type", "all", "'attempt' is int64", "not int64"),
    RowRule("score_type", "all", "'score' is float64", "not float64"),
    RowRule("benchmark_not_null", "all", "'benchmark' never null", "row(s) with no benchmark"),
    RowRule("sample_id_not_null", "rows", "'sample_id' never null", "row(s) with a null sample_id"),
    RowRule("attempt_not_null", "rows", "'attempt' never null", "row(s) with a null attempt"),
    RowRule("attempt_non_negative", "rows", "'attempt' >= 0", "row(s) with a negative attempt"),
    RowRule("score_in_range", "rows", "'score' in [0, 1] where not null", "row(s) with a score outside [0, 1]"),
    RowRule("score_null_iff_error", "rows", "'score' is null exactly where 'error' is non-empty",
            "row(s) whose score and error disagree (null score without error, or both)"),
    RowRule("unique_key", "rows", "(benchmark, sample_id, attempt) unique", "row(s) sharing a key"),
)

BENCH_RULES: tuple[BenchRule, ...] = (
    BenchRule("benchmark_present", "n_rows", None, "at least one row"),
    BenchRule("min_samples", "n_valid_samples", "min_samples",
              "distinct samples with a valid score >= the benchmark's min_samples"),
    BenchRule("error_rate", "error_rate", None, "error rows / rows <= policy max_error_rate"),
    BenchRule("attempts_per_sample", "max_attempts_per_sample", "attempts_allowed",
              "rows per sample <= the benchmark's attempts"),
)

ROW_BY_NAME = {r.name: r for r in ROW_RULES}
BENCH_BY_NAME = {r.name: r for r in BENCH_RULES}

# Rows: SUMMARY keeps cost flat however many rows fail (COMPLETE took minutes on a million bad
# rows); the partial list carries each failing row's benchmark. No index query: on pandas it
# spells out every failing index.
ROWS_RESULT_FORMAT: dict[str, Any] = {
    "result_format": "SUMMARY",
    "unexpected_index_column_names": ["benchmark"],
    "return_unexpected_index_query": False,
}
# The summary has one row per benchmark: the complete list is cheap and names every failure.
BENCH_RESULT_FORMAT: dict[str, Any] = {
    "result_format": "COMPLETE",
    "unexpected_index_column_names": ["benchmark"],
    "return_unexpected_index_query": False,
}


def _row_expectations() -> list[Any]:
    import great_expectations.expectations as gxe

    def m(name: str) -> dict[str, Any]:
        return {"meta": {"check": name}, "description": ROW_BY_NAME[name].expected}

    exps: list[Any] = [gxe.ExpectTableColumnsToMatchSet(column_set=list(FRAME_COLUMNS), exact_match=True,
                                                        **m("columns"))]
    # "str" matches pandas 3's string dtype by dtype (free) and object columns value by value.
    exps += [gxe.ExpectColumnValuesToBeOfType(column=c, type_="str", **m(f"{c}_type")) for c in STRING_COLUMNS]
    exps += [
        gxe.ExpectColumnValuesToBeOfType(column="attempt", type_="int64", **m("attempt_type")),
        gxe.ExpectColumnValuesToBeOfType(column="score", type_="float64", **m("score_type")),
        gxe.ExpectColumnValuesToNotBeNull(column="benchmark", **m("benchmark_not_null")),
        gxe.ExpectColumnValuesToNotBeNull(column="sample_id", **m("sample_id_not_null")),
        gxe.ExpectColumnValuesToNotBeNull(column="attempt", **m("attempt_not_null")),
        gxe.ExpectColumnValuesToBeBetween(column="attempt", min_value=0, **m("attempt_non_negative")),
        # Skips nulls by design; null scores are judged by the pair expectation below.
        gxe.ExpectColumnValuesToBeBetween(column="score", min_value=0.0, max_value=1.0, **m("score_in_range")),
        gxe.ExpectColumnPairValuesToBeEqual(column_A=SCORE_MISSING, column_B=HAS_ERROR, ignore_row_if="neither",
                                            **m("score_null_iff_error")),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=list(KEY_COLUMNS), ignore_row_if="never",
                                            **m("unique_key")),
    ]
    assert [(e.meta or {}).get("check") for e in exps] == [r.name for r in ROW_RULES]
    return exps


def _bench_expectations() -> list[Any]:
    import great_expectations.expectations as gxe

    def m(name: str) -> dict[str, Any]:
        return {"meta": {"check": name}, "description": BENCH_BY_NAME[name].expected}

    exps = [
        gxe.ExpectColumnValuesToBeBetween(column="n_rows", min_value=1, **m("benchmark_present")),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="n_valid_samples", column_B="min_samples",
                                                    or_equal=True, ignore_row_if="neither", **m("min_samples")),
        # NaN (benchmark absent) is skipped here: benchmark_present already fails it.
        gxe.ExpectColumnValuesToBeBetween(column="error_rate", min_value=0.0,
                                          max_value={"$PARAMETER": "max_error_rate"}, **m("error_rate")),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="attempts_allowed", column_B="max_attempts_per_sample",
                                                    or_equal=True, ignore_row_if="neither",
                                                    **m("attempts_per_sample")),
    ]
    assert [(e.meta or {}).get("check") for e in exps] == [r.name for r in BENCH_RULES]
    return exps


class Engine:
    """One ephemeral GX context with both suites; `run_*` are serialised (GX is not thread-safe)."""

    def __init__(self) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        config = DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(),
            analytics_enabled=False,  # no network from a gate
            progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),  # they go to stderr
        )
        self.context = gx.get_context(mode="ephemeral", project_config=config)
        source = self.context.data_sources.add_pandas("rsp_quality")
        rows_batch = source.add_dataframe_asset("sample_rows").add_batch_definition_whole_dataframe("all_rows")
        bench_batch = source.add_dataframe_asset("benchmark_summary").add_batch_definition_whole_dataframe(
            "all_benchmarks")
        rows_suite = self.context.suites.add(gx.ExpectationSuite(name="sample_rows", expectations=_row_expectations()))
        bench_suite = self.context.suites.add(
            gx.ExpectationSuite(name="benchmark_summary", expectations=_bench_expectations()))
        self.rows = self.context.validation_definitions.add(
            gx.ValidationDefinition(name="sample_rows", data=rows_batch, suite=rows_suite))
        self.bench = self.context.validation_definitions.add(
            gx.ValidationDefinition(name="benchmark_summary", data=bench_batch, suite=bench_suite))
        self.lock = threading.Lock()

    def _run(self, definition: Any, df: pd.DataFrame, result_format: dict[str, Any],
             parameters: dict[str, Any] | None = None) -> ExpectationSuiteValidationResult:
        with self.lock:
            try:
                return definition.run(batch_parameters={"dataframe": df}, result_format=result_format,
                                      expectation_parameters=parameters)
            finally:
                store = self.context.validation_results_store
                for key in store.list_keys():
                    store.remove_key(key)

    def run_rows(self, df: pd.DataFrame) -> ExpectationSuiteValidationResult:
        return self._run(self.rows, df, ROWS_RESULT_FORMAT)

    def run_benchmarks(self, summary: pd.DataFrame, max_error_rate: float) -> ExpectationSuiteValidationResult:
        return self._run(self.bench, summary, BENCH_RESULT_FORMAT, {"max_error_rate": float(max_error_rate)})


_engine: Engine | None = None
_engine_lock = threading.Lock()


def get_engine() -> Engine:
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = Engine()
        return _engine


def reset_engine() -> None:
    """Drop the cached context: after GX itself raised, its state is not to be trusted."""
    global _engine
    with _engine_lock:
        _engine = None


def write_docs(docs_dir: Path, results: list[tuple[str, ExpectationSuiteValidationResult]], title: str,
               passed: bool) -> Path:
    """Render each validation result with GX's own Data Docs renderer (works offline; the pages
    link Bootstrap from a CDN, so offline they are unstyled but complete) plus a small index."""
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    docs_dir.mkdir(parents=True, exist_ok=True)
    renderer, view = ValidationResultsPageRenderer(), DefaultJinjaPageView()
    links = []
    for name, result in results:
        page = docs_dir / f"{name}.html"
        page.write_text(view.render(renderer.render(result)), encoding="utf-8")
        stats = result.statistics
        links.append(
            f'<li><a href="{html.escape(page.name)}">{html.escape(name)}</a>: '
            f"{'passed' if result.success else 'FAILED'} "
            f"({stats.get('successful_expectations', 0)}/{stats.get('evaluated_expectations', 0)} expectations met)"
            "</li>"
        )
    index = docs_dir / "index.html"
    index.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>"
        f"{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1>"
        f"<p>Data-quality gate: <strong>{'passed' if passed else 'FAILED'}</strong></p>"
        f"<ul>{''.join(links)}</ul></body></html>\n",
        encoding="utf-8",
    )
    return index
