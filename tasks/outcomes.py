"""What the evaluate and watch flows return, as typed values.

Plain pydantic (no Prefect), so the CLI, the demo and tests read them without starting Prefect.
Each outcome sets only the fields its status has; `as_json()` leaves the others out, which keeps
the JSON that `rsp evaluate --json` and `rsp watch --json` print the shape it has always had.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from policy.determination import Activity, Assessment

EvaluationStatus = Literal["evaluated", "failed_closed", "rejected", "already_evaluated", "claimed_elsewhere",
                           "error"]


class _Outcome(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def as_json(self) -> dict[str, Any]:
        """JSON-ready, with only the fields this outcome set (nested outcomes likewise)."""
        return self.model_dump(mode="json", exclude_unset=True)


class HaltSummary(_Outcome):
    """The halt an evaluation opened (or found open for its determination) and whether Prefect
    was brought in line; `applied` None: the halt was already lifted, nothing was applied."""

    halt_id: str
    created: bool
    applied: bool | None = None
    apply_error: str | None = None


class EvaluationOutcome(_Outcome):
    """One checkpoint's evaluation. `status`:

    - evaluated: a determination was recorded (`decision` says proceed or halt)
    - failed_closed: a stage raised; a fail-closed determination (halt) was recorded, `error` says why
    - rejected: the checkpoint's manifest is missing or invalid (`reason`); nothing was evaluated
    - already_evaluated: decided before under this policy; `decision` and `required_level` are that run's
    - claimed_elsewhere: another worker holds the claim
    - error: (watch only) the evaluate subflow itself raised; its claim stays retryable
    """

    status: EvaluationStatus
    checkpoint: str
    run_id: str | None = None
    step: int | None = None
    assessment: Assessment | None = None
    required_level: str | None = None
    decision: Literal["proceed", "halt"] | None = None
    halts: list[Activity] = Field(default_factory=list)
    determination_seq: int | None = None
    halt: HaltSummary | None = None
    error: str | None = None
    reason: str | None = None


class RejectedCheckpoint(_Outcome):
    key: str
    reason: str


class WatchSummary(_Outcome):
    """One detection tick: what was listed, rejected and evaluated, and the halt reconcile's report
    (None when enforcement is not installed; {"error": ...} when the reconcile failed)."""

    listed: int
    full_scan: bool
    new: int
    rejected: list[RejectedCheckpoint]
    newly_rejected: int
    evaluated: list[EvaluationOutcome]
    halted: list[EvaluationOutcome]
    reconciled: dict[str, Any] | None
