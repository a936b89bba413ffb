"""check_quality: run the GX suites and turn their results into a fail-closed QualityReport.

Heavy imports (pandas, great-expectations) happen inside the calls, so importing this module,
and `tasks.quality`, stays cheap.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.quality.report import QualityCheck, QualityReport, QualityStatistics

if TYPE_CHECKING:
    import pandas as pd

    from policy.results import SampleTable
    from policy.schema import Policy

# How many example values a row-check message quotes.
_EXAMPLES = 3


def check_quality(table: SampleTable, policy: Policy, required: list[str], *,
                  docs_dir: Path | None = None) -> QualityReport:
    """Validate sample rows for the benchmarks in `required`. Never raises; never passes on doubt."""
    try:
        from tasks.quality.frames import table_frame

        df = table_frame(table)
    except Exception as exc:  # noqa: BLE001 - fail closed on anything
        return failed_closed(required, f"could not read the sample table: {type(exc).__name__}: {exc}")
    return check_quality_frame(df, policy, required, docs_dir=docs_dir)


def check_quality_frame(df: pd.DataFrame, policy: Policy, required: list[str], *,
                        docs_dir: Path | None = None) -> QualityReport:
    """As `check_quality`, over a DataFrame with the sample-row columns (which may hold anything:
    the gate exists to catch rows that `SampleTable` would have refused)."""
    required = list(dict.fromkeys(required))
    try:
        return _check(df, policy, required, docs_dir)
    except Exception as exc:  # noqa: BLE001 - GX or pandas raised: nothing here may read as safe
        from tasks.quality.engine import reset_engine

        reset_engine()
        return failed_closed(required, f"data-quality gate error: {type(exc).__name__}: {exc}")


def failed_closed(required: list[str], message: str) -> QualityReport:
    """The report when no verdict could be reached: every required benchmark failed."""
    required = list(dict.fromkeys(required))
    return QualityReport(
        passed=False,
        checks=[QualityCheck(name="gate_error", benchmark=None, passed=False, message=message)],
        failed_benchmarks={b: [message] for b in required},
        gx_success=False,
        statistics=QualityStatistics(),
    )


class _Findings:
    def __init__(self, required: list[str]) -> None:
        self.required = required
        self.checks: list[QualityCheck] = []
        self.failed: dict[str, list[str]] = {}

    def fail(self, benchmarks: list[str], message: str) -> None:
        for b in benchmarks:
            msgs = self.failed.setdefault(b, [])
            if message not in msgs:
                msgs.append(message)


def _check(df: pd.DataFrame, policy: Policy, required: list[str], docs_dir: Path | None) -> QualityReport:
    from tasks.quality.engine import get_engine, write_docs
    from tasks.quality.frames import summary_frame, with_derived

    frame = with_derived(df)
    engine = get_engine()
    found = _Findings(required)

    rows_result = engine.run_rows(frame)
    _read_rows(rows_result, frame, found)
    gx_results: list[tuple[str, Any]] = [("sample_rows", rows_result)]
    gx_success = bool(rows_result.success)

    defined = {b.id for b in policy.benchmarks}
    for bid in required:
        if bid not in defined:
            msg = f"benchmark_defined: '{bid}' is not a benchmark of policy '{policy.framework.id}'"
            found.checks.append(QualityCheck(name="benchmark_defined", benchmark=bid, passed=False,
                                             observed=None, expected="a benchmark the policy defines", message=msg))
            found.fail([bid], msg)
    known = [b for b in required if b in defined]
    if known:
        try:
            summary = summary_frame(frame, policy, known)
        except Exception as exc:  # noqa: BLE001 - rows too broken to summarise: the row checks say why
            msg = f"benchmark_summary: could not summarise rows: {type(exc).__name__}: {exc}"
            found.checks.append(QualityCheck(name="benchmark_summary", benchmark=None, passed=False, message=msg))
            found.fail(known, msg)
            gx_success = False
        else:
            bench_result = engine.run_benchmarks(summary, policy.fail_closed.max_error_rate)
            _read_benchmarks(bench_result, summary, policy.fail_closed.max_error_rate, found)
            gx_results.append(("benchmark_summary", bench_result))
            gx_success = gx_success and bool(bench_result.success)

    stats = QualityStatistics(
        evaluated=sum(int(r.statistics.get("evaluated_expectations", 0)) for _, r in gx_results),
        successful=sum(int(r.statistics.get("successful_expectations", 0)) for _, r in gx_results),
        unsuccessful=sum(int(r.statistics.get("unsuccessful_expectations", 0)) for _, r in gx_results),
    )
    passed = gx_success and all(c.passed for c in found.checks)
    # A GX failure that no check explains must still fail closed (never pass on a failed suite).
    if not gx_success and not found.failed:
        found.fail(required, "data-quality suite failed without a failing check to name")

    docs_path: str | None = None
    docs_error: str | None = None
    if docs_dir is not None:
        try:
            docs_path = str(write_docs(Path(docs_dir), gx_results, "rsp-gate data quality", passed))
        except Exception as exc:  # noqa: BLE001 - publishing is not the verdict; say why it is missing
            docs_error = f"{type(exc).__name__}: {exc}"

    return QualityReport(
        passed=passed,
        checks=_ordered_checks(found.checks, required),
        failed_benchmarks=_ordered_failures(found.failed, required),
        docs_path=docs_path,
        docs_error=docs_error,
        gx_success=gx_success,
        statistics=stats,
    )


def _ordered_checks(checks: list[QualityCheck], required: list[str]) -> list[QualityCheck]:
    """Suite order, then `required` order: GX returns results in an order of its own."""
    from tasks.quality.engine import BENCH_RULES, ROW_RULES

    names = [r.name for r in ROW_RULES] + [r.name for r in BENCH_RULES]
    rank = {n: i for i, n in enumerate(names)}
    where = {b: i for i, b in enumerate(required)}
    return sorted(checks, key=lambda c: (c.benchmark is not None, rank.get(c.name, len(rank)),
                                         where.get(c.benchmark or "", len(where)), c.benchmark or ""))


def _ordered_failures(failed: dict[str, list[str]], required: list[str]) -> dict[str, list[str]]:
    where = {b: i for i, b in enumerate(required)}
    return {b: failed[b] for b in sorted(failed, key=lambda b: (where.get(b, len(where)), b))}


def _exception(er: Any) -> str | None:
    """The message of an exception GX caught inside one expectation, if any."""
    info = er.exception_info or {}
    candidates = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
    for item in candidates:
        if item.get("raised_exception"):
            return str(item.get("exception_message") or "expectation raised")
    return None


def _json(value: Any) -> Any:
    """numpy scalars → Python; NaN → None (the report is JSON for the ledger)."""
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        try:
            value = value.item()
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _check_name(er: Any) -> str:
    return str((er.expectation_config.meta or {}).get("check", er.expectation_config.type))


def _read_rows(result: Any, frame: pd.DataFrame, found: _Findings) -> None:
    from tasks.quality.engine import ROW_BY_NAME
    from tasks.quality.frames import count_benchmarks, violations_by_benchmark

    for er in result.results:
        name = _check_name(er)
        rule = ROW_BY_NAME.get(name)
        res = er.result or {}
        raised = _exception(er)
        observed = _json(res.get("observed_value", res.get("unexpected_count")))
        expected = rule.expected if rule else name
        if er.success and raised is None:
            found.checks.append(QualityCheck(name=name, benchmark=None, passed=True, observed=observed,
                                             expected=expected, message=f"{expected}: met"))
            continue
        if raised is not None:
            msg = f"{name}: expectation could not be evaluated ({raised})"
            found.checks.append(QualityCheck(name=name, benchmark=None, passed=False, observed=None,
                                             expected=expected, message=msg))
            found.fail(found.required, msg)
            continue
        if rule is None or rule.scope == "all":
            if rule is not None and rule.name == "benchmark_not_null":
                msg = f"{name}: {res.get('unexpected_count')} {rule.violation}"
            elif "observed_value" not in res and res.get("unexpected_count") is not None:
                msg = f"{name}: {res['unexpected_count']} row(s) break '{expected}'"
            else:
                msg = f"{name}: expected {expected}, observed {observed!r}"
            found.checks.append(QualityCheck(name=name, benchmark=None, passed=False, observed=observed,
                                             expected=expected, message=msg))
            found.fail(found.required, msg)
            continue

        # Attributable: which benchmarks own the failing rows? GX's partial list when it holds
        # every failing row, otherwise the same predicate over the frame.
        count = int(res.get("unexpected_count") or 0)
        partial = res.get("partial_unexpected_index_list") or []
        if count and len(partial) >= count and all(isinstance(p, dict) for p in partial):
            per_bench: Counter[str | None] = count_benchmarks([p.get("benchmark") for p in partial])
        else:
            per_bench = violations_by_benchmark(frame, name)
        examples = _examples(res) if name != "score_null_iff_error" else ""  # its values are flag pairs
        tail = f" (e.g. {examples})" if examples else ""
        msg = f"{name}: {count} {rule.violation}{tail}"
        found.checks.append(QualityCheck(name=name, benchmark=None, passed=False, observed=count,
                                         expected=expected, message=msg))
        named = sorted(b for b in per_bench if b is not None)
        for b in named:
            found.fail([b], f"{name}: {per_bench[b]} {rule.violation}{tail}")
        if None in per_bench or not named:
            # Rows without a benchmark, or a failure the predicate cannot place: every benchmark.
            found.fail(found.required, msg)


def _examples(res: dict[str, Any]) -> str:
    shown: list[str] = []
    for v in res.get("partial_unexpected_list") or []:
        text = repr(_json(v))
        if text not in shown:
            shown.append(text)
        if len(shown) == _EXAMPLES:
            break
    return ", ".join(shown)


def _read_benchmarks(result: Any, summary: pd.DataFrame, max_error_rate: float, found: _Findings) -> None:
    from tasks.quality.engine import BENCH_BY_NAME

    records = {r["benchmark"]: r for r in summary.to_dict(orient="records")}
    for er in result.results:
        name = _check_name(er)
        rule = BENCH_BY_NAME[name]
        res = er.result or {}
        raised = _exception(er)
        unexpected = {p.get("benchmark") for p in (res.get("unexpected_index_list") or []) if isinstance(p, dict)}
        unplaced = raised is not None or (not er.success and not (unexpected & set(records)))
        for bid, row in records.items():
            observed = _json(row[rule.observed])
            limit = _json(row[rule.limit]) if rule.limit else (max_error_rate if name == "error_rate" else 1)
            ok = not unplaced and bid not in unexpected
            msg = _bench_message(name, row, limit, ok, raised)
            found.checks.append(QualityCheck(name=name, benchmark=bid, passed=ok, observed=observed,
                                             expected=limit, message=msg))
            if not ok:
                found.fail([bid], msg)


def _bench_message(name: str, row: dict[str, Any], limit: Any, ok: bool, raised: str | None) -> str:
    bid = row["benchmark"]
    if raised is not None:
        return f"{name}: expectation could not be evaluated for '{bid}' ({raised})"
    verdict = "ok" if ok else "failed"
    if name == "benchmark_present":
        return f"{name}: '{bid}' has {row['n_rows']} row(s)" + ("" if ok else "; results missing")
    if name == "min_samples":
        return (f"{name}: '{bid}' has {row['n_valid_samples']} distinct sample(s) with a valid score; "
                f"policy requires {limit} ({verdict})")
    if name == "error_rate":
        rate = row["error_rate"]
        shown = "n/a" if math.isnan(rate) else f"{rate:.2%}"  # NaN when the benchmark has no rows
        return (f"{name}: '{bid}' {row['n_errors']} of {row['n_rows']} row(s) errored ({shown}); "
                f"limit {float(limit):.2%} ({verdict})")
    if name == "attempts_per_sample":
        return (f"{name}: '{bid}' has up to {row['max_attempts_per_sample']} row(s) per sample; "
                f"policy allows {limit} attempt(s) ({verdict})")
    return f"{name}: '{bid}' {verdict}"
