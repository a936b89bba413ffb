"""The halt flow: record the halt, apply it, notify, start the approval wait.

    record-halt  -> the ledger holds the halt; from here on every gate check refuses the run
    apply-halt   -> Prefect agrees: scaling deployments paused, their runs cancelled
    notify       -> Slack (Approve / Reject), console, JSONL file; only by the run that created the halt
    approval     -> the Prefect UI approval form (deployment await-approval/approval), best effort

The composition is `tasks.enforcement.halting.open_and_enforce`, the same one `rsp halt open`
runs; this flow gives it Prefect task runs and a form in the Prefect UI. Idempotent: the
same determination (or the same cause while its halt is open) records one halt. When
Prefect cannot be reached the halt still stands (the gate reads the ledger) and the
outcome says NOT applied; the next reconcile applies it. Lifting belongs to the resume flow.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from pydantic import BaseModel, Field

from policy.determination import Determination
from tasks.enforcement.halt_tasks import PREFECT_STEPS
from tasks.enforcement.halting import Activity, HaltOutcome, HaltRequest, open_and_enforce
from tasks.ledger import Ledger


@flow(name="halt", retries=0)
def halt(
    determination: Determination | dict[str, Any] | None = None,
    determination_seq: int | None = None,
    determination_subject: str | None = None,
    activities: list[Activity] | None = None,
    runs: list[str] | None = None,
    reason: str | None = None,
    cause: str | None = None,
    opened_by: str = "halt-flow",
    policy: str | None = None,
    ledger_url: str | None = None,
    api_url: str | None = None,
    scaling_tag: str | None = None,
) -> HaltOutcome:
    """Halt scaling for a determination, or by hand for an operator's reason.

    Args:
        determination: The determination that decided `halt` (its JSON). Leave empty for a manual halt.
        determination_seq: Ledger seq of the determination's `determination.recorded` event.
        determination_subject: Ledger subject of that event (the checkpoint URI).
        activities: Manual halt: what to stop, training and/or deployment (default: both).
        runs: Training run ids to halt (default: every scaling run).
        reason: Manual halt: why scaling must stop (recorded in the ledger; required without a determination).
        cause: Manual halt: a key that makes it idempotent (the same cause opens one halt, ever).
        opened_by: Who or what is halting (recorded).
        policy: Policy file path or bundled id whose approver rules are recorded as what lifts the halt.
        ledger_url: SQLAlchemy URL of the ledger (default: settings).
        api_url: Prefect API URL to apply the halt to (default: PREFECT_API_URL).
        scaling_tag: Tag marking scaling deployments (default: settings, "scaling").

    Returns:
        The recorded halt, the apply report (None when it was already lifted), and whether
        this run notified and started the approval wait (only the run that created the halt does).
    """
    if isinstance(determination, dict):  # evaluate and the Prefect UI send its JSON
        determination = Determination.model_validate(determination)
    request = HaltRequest(
        determination=determination, determination_seq=determination_seq,
        determination_subject=determination_subject, activities=activities, runs=runs, reason=reason, cause=cause,
        opened_by=opened_by,
    )
    ledger = Ledger(ledger_url, create=False)  # never a new, empty ledger that no gate reads
    try:
        return open_and_enforce(request, ledger=ledger, policy=policy, api_url=api_url, scaling_tag=scaling_tag,
                                steps=PREFECT_STEPS)
    finally:
        ledger.close()


class HaltForm(BaseModel):
    """A halt opened by hand: from now on every gate check refuses the scaling runs it covers,
    until approvals and a fresh safeguard verification lift it."""

    reason: str = Field(title="Reason", min_length=1, max_length=2000,
                        description="Why scaling must stop (recorded in the audit ledger and sent to approvers).")
    activities: list[Activity] = Field(default=["training", "deployment"], min_length=1,
                                       title="Activities", description="What to stop: training, deployment, or both.")
    runs: list[str] = Field(default_factory=list, title="Training runs",
                            description="Run ids to halt; leave empty to halt every scaling run.")


@flow(name="halt", retries=0)
def halt_by_hand(request: HaltForm) -> HaltOutcome:
    """Halt scaling by hand from the Prefect UI (the `halt` deployment's form).

    Args:
        request: What to halt and why.
    """
    # The flow function itself, not a subflow: one run in the UI, whose task runs are the halt's steps.
    return halt.fn(reason=request.reason, activities=list(request.activities), runs=request.runs or None,
                   opened_by="prefect-ui")


__all__ = ["HaltForm", "halt", "halt_by_hand"]
