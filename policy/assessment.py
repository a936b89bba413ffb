"""The arithmetic of one assessment, on plain values: how deep it goes, which benchmarks run
first, what a preliminary assessment carries forward, when it escalates to comprehensive (an
early-warning result, or a forecast that a threshold may be crossed before the next
comprehensive step: `policy.forecast`), and the per-benchmark scores later checkpoints of the
run compare against.

No I/O: the evaluate flow reads the ledger and hands in the payloads it recorded earlier
(determinations as written, `Determination.model_dump(mode="json")` plus `scores`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from policy.cadence import CadenceDecision, LastComprehensive, assessment_depth, escalates
from policy.determination import Determination, ThresholdResult
from policy.forecast import (
    DEFAULT_SETTINGS,
    ForecastSettings,
    MeasureForecast,
    forecast_measures,
    next_comprehensive_compute,
    warnings,
)
from policy.identity import policy_sha256
from policy.results import SampleTable
from policy.sandbagging import PastScore
from policy.schema import Policy
from policy.statistics import question_values


@dataclass(frozen=True)
class PriorComprehensive:
    """The last comprehensive determination of this run below the current step: its payload as
    recorded in the ledger and when it was recorded (cadence counts days from then)."""

    payload: Mapping[str, Any]
    recorded_at: dt.datetime


@dataclass(frozen=True)
class AssessmentPlan:
    """What an evaluation runs first, and what it may reuse for the benchmarks it does not run."""

    depth: CadenceDecision
    first: tuple[str, ...]
    # None: nothing may be carried (no earlier comprehensive result, or one under another policy).
    carried: Mapping[str, ThresholdResult] | None = None
    # Forecasts from the run's earlier checkpoints (when the caller handed in its history), the
    # effective compute of the next comprehensive assessment after this one, and the forecasts whose
    # earliest crossing comes before it: each is recorded as a forecast warning.
    forecasts: tuple[MeasureForecast, ...] = ()
    next_comprehensive: float | None = None
    warnings: tuple[MeasureForecast, ...] = ()

    def warning_payloads(self, run_id: str, step: int | None) -> list[dict[str, Any]]:
        """What each forecast warning records (`warnings` against `next_comprehensive`)."""
        if self.next_comprehensive is None:
            return []
        return [w.warning_payload(run_id=run_id, step=step, next_comprehensive=self.next_comprehensive)
                for w in self.warnings]


@dataclass(frozen=True)
class CurrentScores:
    """Per-benchmark means now (and best-of-k for benchmarks with several attempts), recorded with
    the determination so that later checkpoints' sandbagging checks have a history."""

    mean: dict[str, float] = field(default_factory=dict)
    best_of_k: dict[str, float] = field(default_factory=dict)

    def as_payload(self) -> dict[str, dict[str, float]]:
        return {"mean": dict(self.mean), "best_of_k": dict(self.best_of_k)}


def last_comprehensive(prior: PriorComprehensive) -> LastComprehensive:
    """What cadence compares against. A payload without a compute figure reads as 0 FLOP, which
    cadence treats as unusable (and so assesses comprehensively: the safe side)."""
    ck = prior.payload.get("checkpoint") or {}
    return LastComprehensive(effective_compute=float(ck.get("effective_compute") or 0.0),
                             assessed_at=prior.recorded_at, step=ck.get("step"))


def carried_thresholds(prior: PriorComprehensive, policy_sha: str) -> dict[str, ThresholdResult] | None:
    """The prior comprehensive result's thresholds, by id, when it was decided under the same policy
    (by sha256): a result under other thresholds or benchmarks says nothing about this policy."""
    if prior.payload.get("policy", {}).get("sha256") != policy_sha:
        return None
    return {t["id"]: ThresholdResult.model_validate(t) for t in prior.payload.get("thresholds", [])}


def first_benchmarks(policy: Policy, depth: CadenceDecision) -> tuple[str, ...]:
    """Every benchmark for a comprehensive assessment; the policy's preliminary set otherwise (all of
    them when the policy names none)."""
    all_ids = tuple(b.id for b in policy.benchmarks)
    if depth.assessment == "comprehensive":
        return all_ids
    return tuple(policy.cadence.preliminary_benchmarks) or all_ids


def plan_assessment(policy: Policy, effective_compute: float, now: dt.datetime,
                    prior: PriorComprehensive | None, *, policy_sha: str | None = None,
                    history: Iterable[Mapping[str, Any]] | None = None,
                    forecast_settings: ForecastSettings = DEFAULT_SETTINGS) -> AssessmentPlan:
    """Depth from the policy's cadence, the benchmarks to run first, and what may be carried.
    `policy_sha`: the policy's sha256 when the caller has it already (computed otherwise).

    `history`: the run's recorded determination payloads (those with less effective compute are
    used). With it, each measure is forecast, and a preliminary assessment escalates to
    comprehensive when a gating measure's earliest forecast crossing (the band's upper edge) comes
    before the cadence's next comprehensive step (when the policy escalates on early warning)."""
    last = None if prior is None else last_comprehensive(prior)
    depth = assessment_depth(policy.cadence, effective_compute, now, last)
    carried = None
    if prior is not None:
        carried = carried_thresholds(prior, policy_sha if policy_sha is not None else policy_sha256(policy))
    if history is None:
        return AssessmentPlan(depth=depth, first=first_benchmarks(policy, depth), carried=carried)
    forecasts = tuple(forecast_measures(policy, history, below_compute=effective_compute,
                                        settings=forecast_settings))
    if depth.assessment == "preliminary" and last is not None and policy.cadence.escalate_on_early_warning:
        due = next_comprehensive_compute(policy.cadence, last.effective_compute)
        early = warnings(forecasts, due)
        if early and due is not None:
            depth = CadenceDecision("comprehensive", forecast_escalation_reason(early, due, depth.reason))
    after = effective_compute if depth.assessment == "comprehensive" else (last.effective_compute if last else None)
    upcoming = next_comprehensive_compute(policy.cadence, after)
    return AssessmentPlan(depth=depth, first=first_benchmarks(policy, depth), carried=carried, forecasts=forecasts,
                          next_comprehensive=upcoming, warnings=tuple(warnings(forecasts, upcoming)))


def forecast_escalation_reason(early: list[MeasureForecast], due: float, preliminary_reason: str) -> str:
    first = min(early, key=lambda f: f.curve.earliest or float("inf"))
    return (f"escalated by forecast: {first.measure} may cross {first.comparison} {first.threshold:g} from "
            f"{first.curve.earliest:.2e} FLOP (upper band), before the next comprehensive step at {due:.2e} FLOP"
            f"{f' ({len(early)} measures in all)' if len(early) > 1 else ''}; cadence alone: {preliminary_reason}")


def escalates_to_comprehensive(policy: Policy, det: Determination) -> bool:
    """A preliminary determination whose freshly measured gating thresholds reached early warning
    (or worse) escalates: carried results and monitored domains do not count."""
    if det.assessment != "preliminary":
        return False
    fresh: list[str] = [t.status for t in det.thresholds if t.carried_from is None and t.gating]
    return escalates(policy.cadence, fresh)


def remaining_benchmarks(policy: Policy, ran: Iterable[str]) -> list[str]:
    """The policy's benchmarks not yet run, in policy order."""
    done = set(ran)
    return [b.id for b in policy.benchmarks if b.id not in done]


def escalation_reason(preliminary_reason: str) -> str:
    return f"escalated from preliminary ({preliminary_reason}): a threshold reached early warning or worse"


def current_scores(policy: Policy, table: SampleTable) -> CurrentScores:
    """Mean per benchmark over questions (and best-of-k where the policy asks for several attempts);
    a benchmark without a scored question has no entry."""
    means: dict[str, float] = {}
    best: dict[str, float] = {}
    for bid, rows in table.split_by_benchmark().items():
        values, *_ = question_values(rows, "mean")
        if values.size:
            means[bid] = float(values.mean())
        if policy.benchmark(bid).attempts > 1:
            bvalues, *_ = question_values(rows, "best_of_k")
            if bvalues.size:
                best[bid] = float(bvalues.mean())
    return CurrentScores(mean=means, best_of_k=best)


def score_history(determinations: Iterable[Mapping[str, Any]], step: int) -> dict[str, list[PastScore]]:
    """Earlier checkpoints' mean scores by benchmark, from the run's recorded determination payloads
    (in the order given): only steps below `step`, and only payloads that name their step."""
    out: dict[str, list[PastScore]] = {}
    for payload in determinations:
        ck = payload.get("checkpoint") or {}
        if ck.get("step") is None or ck["step"] >= step:
            continue
        for bid, mean in payload.get("scores", {}).get("mean", {}).items():
            out.setdefault(bid, []).append(PastScore(step=ck["step"], effective_compute=ck["effective_compute"],
                                                     mean=mean))
    return out
