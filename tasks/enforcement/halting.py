"""One halt composition: record → apply → notify → start the approval wait.

Every path that halts scaling goes through `open_and_enforce`: the halt flow (and through
it evaluate, for a determination or an unreadable policy) and `rsp halt open`. So a
manual halt notifies like any other, and the steps run in the same order everywhere:

    record      halt.opened in the ledger (idempotent per cause); from here on the gate
                refuses the halted runs, whatever happens next
    apply       Prefect agrees: scaling deployments paused, their runs cancelled; never
                raises for Prefect being down (the report says NOT applied, the next
                reconcile applies it)
    notify      only when this call created the halt: the message with Approve / Reject
                (Slack, console, JSONL file); delivery is retried from the outbox
    approval    only when this call created the halt: start the Prefect UI approval form
                (the `await-approval/approval` deployment), best effort; not for a halt that
                lifts by itself (`evaluation_overdue`: the determinations catching up lift it)

The steps are plain functions here; the halt flow passes their Prefect task wrappers
(`tasks.enforcement.halt_tasks.PREFECT_STEPS`) so each shows as a task run. Prefect is
imported only inside the steps that talk to it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from policy.determination import Determination
from policy.halts import OverdueRef, lifts_automatically
from tasks.enforcement.apply import ApplyReport, apply_halt
from tasks.enforcement.halts import open_halt, open_manual_halt, open_overdue_halt

if TYPE_CHECKING:
    from policy.schema import Policy
    from tasks.ledger import Halt, Ledger

APPROVAL_DEPLOYMENT = "await-approval/approval"  # flows/approval.py, served as "approval"
Activity = Literal["training", "deployment"]


class HaltRequest(BaseModel):
    """What to halt and why: a determination that decided `halt` (with where it sits in the
    ledger), a run past the policy's evaluation lag bound (`overdue`, with `reason`), or an
    operator's reason and activities."""

    determination: Determination | None = None
    overdue: OverdueRef | None = None
    determination_seq: int | None = None
    determination_subject: str | None = None
    activities: list[Activity] | None = None  # manual halts; None: training and deployment
    runs: list[str] | None = None  # None: every scaling run
    reason: str | None = None
    cause: str | None = None  # makes a manual halt idempotent: the same cause opens one halt, ever
    opened_by: str


class RecordedHalt(BaseModel):
    """The halt as the record step found or wrote it, and whether this call created it."""

    halt_id: str
    created: bool
    opened_seq: int
    opened_at: str
    payload: dict[str, Any]
    is_open: bool

    @classmethod
    def of(cls, halt: Halt, created: bool) -> RecordedHalt:
        return cls(halt_id=halt.halt_id, created=created, opened_seq=halt.opened_seq, opened_at=halt.opened_at,
                   payload=halt.payload, is_open=halt.is_open)


class HaltOutcome(BaseModel):
    """What one halt composition did. `apply` is None when the halt was already lifted or the
    caller asked only to record it; `notified` and `approval_wait` are False unless this call
    created the halt (a repeat re-applies, it does not re-announce)."""

    halt: RecordedHalt
    apply: ApplyReport | None = None
    notified: bool = False
    approval_wait: bool = Field(default=False, description="the Prefect UI approval form was started")


def _log() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The flow or task run's logger inside a Prefect run (so the lines show in the UI), else ours."""
    if "prefect" in sys.modules:  # no Prefect loaded: certainly no run (and no import cost on the CLI)
        from prefect.context import FlowRunContext, TaskRunContext

        if FlowRunContext.get() is not None or TaskRunContext.get() is not None:
            from prefect.logging import get_run_logger

            return get_run_logger()  # type: ignore[return-value]
    return logging.getLogger("rsp.halt")


def _policy(policy: Policy | str | None) -> Policy | None:
    if policy is None or not isinstance(policy, str):
        return policy
    from tasks.inputs import read_policy

    try:
        return read_policy(policy)
    except Exception as exc:  # noqa: BLE001 - never let a missing detail stop a halt being recorded
        # Without the policy the record says "approvals per the policy" (by sha256); the halt stands.
        _log().warning("policy %s unreadable (%s); recording the halt without approver rules", policy, exc)
        return None


def record_halt(request: HaltRequest, *, ledger: Ledger, policy: Policy | str | None = None) -> RecordedHalt:
    """Write halt.opened (or find the halt this cause already opened). `policy` (a Policy, or a
    path / bundled id) supplies the approver rules recorded as what lifts the halt."""
    pol = _policy(policy)
    if request.overdue is not None:
        halt, created = open_overdue_halt(request.overdue, request.reason or "evaluation overdue", ledger=ledger,
                                          policy=pol, opened_by=request.opened_by)
    elif request.determination is not None:
        halt, created = open_halt(request.determination, ledger=ledger, runs=request.runs,
                                  seq=request.determination_seq, subject=request.determination_subject,
                                  policy=pol, opened_by=request.opened_by)
    else:
        if not request.reason:
            raise ValueError("a halt without a determination needs a reason")
        halt, created = open_manual_halt(request.reason, request.activities or ["training", "deployment"],
                                         runs=request.runs, opened_by=request.opened_by, cause=request.cause,
                                         ledger=ledger, policy=pol)
    return RecordedHalt.of(halt, created)


def notify_halt(recorded: RecordedHalt, report: ApplyReport | None, *, ledger: Ledger) -> bool:
    """Tell people a halt was opened and whether it was applied (settings.notify: Slack with
    Approve / Reject, console, JSONL file). True when the notification was dispatched: a
    channel that failed is recorded and retried from the outbox, never lost."""
    from tasks.notify import notify_halt_opened

    try:
        notify_halt_opened({"halt_id": recorded.halt_id}, None if report is None else report.to_dict(),
                           ledger=ledger)
    except Exception:  # noqa: BLE001 - the halt is in force already; a notifier fault must not fail it
        _log().exception("halt %s: notification failed (recorded for retry)", recorded.halt_id)
        return False
    return True


def approval_run_name(halt_id: str) -> str:
    """The name of a halt's approval run in the Prefect UI (one concept, one spelling)."""
    return f"approve-{halt_id}"


def start_approval_wait(halt_id: str, *, api_url: str | None = None) -> bool:
    """Start the Prefect UI approval form for this halt where the `approval` deployment is
    served (`rsp serve`). Best effort: Slack and `rsp approve` work without it, and the form
    only delivers votes; the ledger decides. Inside a flow run it uses that run's Prefect
    API (and shows as its subflow); elsewhere `api_url` or PREFECT_API_URL, and nothing when
    neither is set (no ephemeral server started for a form nobody serves)."""
    log = _log()
    try:
        from prefect.context import FlowRunContext
        from prefect.deployments import run_deployment

        # Its own top-level run named after the halt (not a subflow of the run that halted), so the
        # UI lists it where operators look and `rsp serve` can tell a halt already has one.
        start: dict[str, Any] = {"parameters": {"halt_id": halt_id}, "flow_run_name": approval_run_name(halt_id), "timeout": 0,
                 "as_subflow": False}
        if FlowRunContext.get() is not None:
            run_deployment(APPROVAL_DEPLOYMENT, **start)
        else:
            from prefect.settings import PREFECT_API_URL, temporary_settings

            from tasks.enforcement.prefect_api import resolve_api_url

            with temporary_settings(updates={PREFECT_API_URL: resolve_api_url(api_url)}):
                run_deployment(APPROVAL_DEPLOYMENT, **start)
    except Exception as exc:  # noqa: BLE001 - no such deployment (not served here), or no Prefect: no form
        log.debug("no Prefect UI approval form for halt %s: %s", halt_id, exc)
        return False
    log.info("halt %s: approval form opened in the Prefect UI (flow await-approval)", halt_id)
    return True


@dataclass(frozen=True)
class HaltSteps:
    """The two steps a flow runs as Prefect tasks; plain functions everywhere else."""

    record: Callable[..., RecordedHalt] = record_halt
    apply: Callable[..., ApplyReport] = apply_halt


PLAIN_STEPS = HaltSteps()


def open_and_enforce(
    request: HaltRequest,
    *,
    ledger: Ledger,
    policy: Policy | str | None = None,
    api_url: str | None = None,
    scaling_tag: str | None = None,
    apply: bool = True,
    steps: HaltSteps = PLAIN_STEPS,
) -> HaltOutcome:
    """Record the halt, apply it to Prefect, and, when this call created it, notify and start
    the approval wait. Idempotent: the same determination (or the same cause while its halt
    is open) records one halt; a repeat re-applies it and announces nothing. A halt already
    lifted is left alone. `apply=False` only records and notifies (`rsp halt open
    --no-apply`: Prefect is not touched; the next reconcile applies it)."""
    log = _log()
    recorded = steps.record(request, ledger=ledger, policy=policy)
    if not recorded.is_open:
        log.info("halt %s for this determination was already lifted; nothing to do", recorded.halt_id)
        return HaltOutcome(halt=recorded)
    report = steps.apply(recorded.halt_id, ledger=ledger, api_url=api_url, scaling_tag=scaling_tag) if apply else None
    if not recorded.created:
        log.info("halt %s already open for this cause; %s, not re-notified", recorded.halt_id,
                 "re-applied" if apply else "not applied")
        return HaltOutcome(halt=recorded, apply=report)
    notified = notify_halt(recorded, report, ledger=ledger)
    waiting = False
    if apply and not lifts_automatically(recorded.payload):
        waiting = start_approval_wait(recorded.halt_id, api_url=api_url)
    return HaltOutcome(halt=recorded, apply=report, notified=notified, approval_wait=waiting)


__all__ = [
    "APPROVAL_DEPLOYMENT",
    "PLAIN_STEPS",
    "Activity",
    "HaltOutcome",
    "HaltRequest",
    "HaltSteps",
    "RecordedHalt",
    "notify_halt",
    "open_and_enforce",
    "record_halt",
    "start_approval_wait",
]
