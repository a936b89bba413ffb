"""What the engine concludes, as data: persisted in the ledger, rendered in reports, replayable."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ThresholdStatus = Literal["below", "early_warning", "crossed", "undetermined"]
SafeguardState = Literal["met", "unmet", "expired", "unknown"]
Assessment = Literal["preliminary", "comprehensive"]
Activity = Literal["training", "deployment"]

# Statuses that make a rule fire. Undetermined fires: doubt is treated as crossed.
FIRING: frozenset[str] = frozenset({"crossed", "undetermined"})


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PolicyRef(_Out):
    id: str
    name: str
    version: str
    sha256: str


class CheckpointRef(_Out):
    run_id: str
    step: int
    effective_compute: float
    uri: str | None = None
    digest: str | None = None


class BenchmarkSummary(_Out):
    benchmark: str
    metric: str
    n_questions: int
    n_rows: int
    n_errors: int
    error_rate: float
    max_attempts: int
    mean: float | None
    ci_low: float | None
    ci_high: float | None
    confidence: float


class MeasureResult(_Out):
    benchmark: str
    metric: str
    comparison: str
    threshold: float
    early_warning: float
    min_samples: int
    status: ThresholdStatus
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n_questions: int
    reason: str


class ThresholdResult(_Out):
    id: str
    name: str
    domain: str
    gating: bool  # False for monitored/research domains: reported, never raises the level
    triggers_level: str | None
    combine: str
    status: ThresholdStatus
    reason: str
    measures: tuple[MeasureResult, ...]
    carried_from: str | None = None  # set when a preliminary assessment reused a comprehensive result


class QualityVerdict(_Out):
    status: Literal["passed", "failed", "not_run"]
    failed_benchmarks: dict[str, list[str]] = Field(default_factory=dict)
    summary: str = ""


class Anomaly(_Out):
    benchmark: str
    kind: Literal["score_drop", "chance_collapse", "elicitation_gap", "other"]
    message: str


class RunFailure(_Out):
    benchmark: str
    kind: Literal["crashed", "timed_out", "not_run"]
    message: str


class SafeguardRequirement(_Out):
    id: str
    name: str
    kind: str
    halts: tuple[Activity, ...]
    required_by: tuple[str, ...]  # level id and/or threshold ids


class SafeguardCheck(_Out):
    id: str
    state: SafeguardState
    evidence: str
    checked_at: str | None = None


class Determination(_Out):
    policy: PolicyRef
    checkpoint: CheckpointRef | None = None
    assessment: Assessment | None = None
    assessment_reason: str | None = None
    benchmarks: tuple[BenchmarkSummary, ...]
    thresholds: tuple[ThresholdResult, ...]
    required_level: str
    required_level_rank: int
    level_reasons: tuple[str, ...]
    required_safeguards: tuple[SafeguardRequirement, ...]
    quality: QualityVerdict
    anomalies: tuple[Anomaly, ...] = ()
    run_failures: tuple[RunFailure, ...] = ()
    safeguards: tuple[SafeguardCheck, ...] | None = None  # None: verification has not run
    obligations_met: bool
    decision: Literal["proceed", "halt"]
    halts: tuple[Activity, ...]
    decision_reasons: tuple[str, ...]

    def threshold(self, threshold_id: str) -> ThresholdResult:
        for t in self.thresholds:
            if t.id == threshold_id:
                return t
        raise KeyError(threshold_id)
