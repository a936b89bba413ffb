"""What the data-quality gate reports: plain pydantic values, cheap to import.

The report is data for the ledger and the report renderer; `to_verdict()` turns it
into the core's `QualityVerdict`, which makes only the failed benchmarks' thresholds
undetermined.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from policy.determination import QualityVerdict


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QualityCheck(_Out):
    """One expectation's outcome. `benchmark` is None for checks over all sample rows."""

    name: str
    benchmark: str | None
    passed: bool
    observed: JsonValue = None
    expected: JsonValue = None
    message: str


class QualityStatistics(_Out):
    """Counts over GX expectation results (a per-benchmark expectation counts once)."""

    evaluated: int = 0
    successful: int = 0
    unsuccessful: int = 0


class QualityReport(_Out):
    # True only when every check passed, GX included; a report that could not be produced is False.
    passed: bool
    checks: list[QualityCheck] = Field(default_factory=list)
    # benchmark id -> failure messages. Checks that concern every row name every required benchmark.
    failed_benchmarks: dict[str, list[str]] = Field(default_factory=dict)
    docs_path: str | None = None
    # Why Data Docs were asked for but not written; publishing never changes the verdict.
    docs_error: str | None = None
    gx_success: bool
    statistics: QualityStatistics = Field(default_factory=QualityStatistics)

    def to_verdict(self) -> QualityVerdict:
        """The core's view: which benchmarks' results cannot be trusted."""
        if self.passed:
            return QualityVerdict(status="passed", summary=f"{self.statistics.successful} expectation(s) met")
        failed = [c for c in self.checks if not c.passed]
        names = sorted({c.name for c in failed})
        summary = (f"{len(failed)} check(s) failed ({', '.join(names)}); "
                   f"benchmarks affected: {', '.join(sorted(self.failed_benchmarks)) or 'none'}")
        return QualityVerdict(status="failed", failed_benchmarks=dict(self.failed_benchmarks), summary=summary)
