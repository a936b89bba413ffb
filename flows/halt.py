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


__all__ = ["halt"]
