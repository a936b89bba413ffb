"""The halt flow: record the halt, apply it, notify.

    record_halt  -> the ledger holds the halt; from here on every gate check refuses the run
    apply_halt   -> Prefect agrees: scaling deployments paused, their runs cancelled
    notify_halt  -> HOOK for the notification issue (Slack, console, file); logs only for now

Idempotent: the same determination (or the same cause while its halt is open) records one
halt, applies it, and notifies only when the halt was created by this run. When Prefect
cannot be reached, the halt still stands (the gate reads the ledger) and the report says
NOT applied; the next reconcile applies it.

Waiting for approval and lifting belong to the resume flow, not here.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.logging import get_run_logger


@task(name="record-halt", retries=2, retry_delay_seconds=1)
def record_halt(
    determination: dict[str, Any] | None,
    *,
    determination_seq: int | None,
    determination_subject: str | None,
    activities: list[str] | None,
    runs: list[str] | None,
    reason: str | None,
    cause: str | None,
    opened_by: str,
    ledger_url: str | None,
    policy_ref: str | None,
) -> dict[str, Any]:
    """Write halt.opened (or find the halt this cause already opened). Returns the halt and
    whether this call created it."""
    from tasks.enforcement import open_halt, open_manual_halt

    policy = None
    if policy_ref is not None:
        from tasks.inputs import read_policy

        try:
            policy = read_policy(policy_ref)
        except Exception as exc:  # noqa: BLE001 - never let a missing detail stop a halt being recorded
            # Without the policy the record says "approvals per the policy" (by sha256); the halt stands.
            get_run_logger().warning("policy %s unreadable (%s); recording the halt without approver rules",
                                     policy_ref, exc)
    if determination is not None:
        halt, created = open_halt(determination, ledger_url=ledger_url, runs=runs, seq=determination_seq,
                                  subject=determination_subject, policy=policy, opened_by=opened_by)
    else:
        if not reason:
            raise ValueError("a halt without a determination needs a reason")
        halt, created = open_manual_halt(reason, activities or ["training", "deployment"], runs=runs,
                                         opened_by=opened_by, cause=cause, ledger_url=ledger_url, policy=policy)
    return {"halt_id": halt.halt_id, "created": created, "opened_seq": halt.opened_seq, "payload": halt.payload,
            "is_open": halt.is_open}


@task(name="apply-halt")
def apply_halt_task(halt_id: str, *, ledger_url: str | None, api_url: str | None,
                    scaling_tag: str | None) -> dict[str, Any]:
    """Pause scaling deployments and cancel their runs. Never raises for Prefect being down:
    the report says applied=False and the ledger records halt.apply_failed."""
    from tasks.enforcement import apply_halt

    return apply_halt(halt_id, ledger_url=ledger_url, api_url=api_url, scaling_tag=scaling_tag).to_dict()


def notify_halt(halt: dict[str, Any], report: dict[str, Any], ledger_url: str | None = None) -> None:
    """Tell people a halt was opened and whether it was applied (Slack with approve/reject buttons,
    console, JSONL file — settings.notify). Called once per halt, by the run that created it;
    delivery is idempotent per halt and retried from the outbox when a channel is down."""
    from tasks.ledger import Ledger
    from tasks.notify import notify_halt_opened

    try:
        notify_halt_opened(halt, report, ledger=Ledger(ledger_url) if ledger_url else None)
    except Exception:  # the halt is in force already; a notifier fault must not fail it
        get_run_logger().exception("halt %s: notification failed (recorded for retry)", halt["halt_id"])


def _open_ui_approval(halt_id: str) -> None:
    """Start an approval form in the Prefect UI for this halt, where the `approval` deployment is
    served (`rsp serve`). Best effort: Slack and `rsp approve` work without it, and the form only
    delivers votes; the ledger decides."""
    log = get_run_logger()
    try:
        from prefect.deployments import run_deployment

        run_deployment("await-approval/approval", parameters={"halt_id": halt_id}, timeout=0)
        log.info("halt %s: approval form opened in the Prefect UI (flow await-approval)", halt_id)
    except Exception as exc:  # no such deployment (not served here): nothing to open
        log.debug("no Prefect UI approval form for halt %s: %s", halt_id, exc)


@flow(name="halt", retries=0)
def halt(
    determination: dict[str, Any] | None = None,
    determination_seq: int | None = None,
    determination_subject: str | None = None,
    activities: list[str] | None = None,
    runs: list[str] | None = None,
    reason: str | None = None,
    cause: str | None = None,
    opened_by: str = "halt-flow",
    policy: str | None = None,
    ledger_url: str | None = None,
    api_url: str | None = None,
    scaling_tag: str | None = None,
) -> dict[str, Any]:
    """Halt scaling for a determination (its JSON, with where it sits in the ledger), or, with
    no determination, for an operator's `reason` and `activities` (`cause`, when given, makes
    such a halt idempotent: the same cause opens one halt, ever). `policy` (path or bundled
    id) supplies the approver rules recorded as what lifts the halt; `scaling_tag` overrides
    the configured tag that marks scaling deployments."""
    log = get_run_logger()
    recorded = record_halt(
        determination, determination_seq=determination_seq, determination_subject=determination_subject,
        activities=activities, runs=runs, reason=reason, cause=cause, opened_by=opened_by, ledger_url=ledger_url,
        policy_ref=policy,
    )
    if not recorded["is_open"]:
        log.info("halt %s for this determination was already lifted; nothing to do", recorded["halt_id"])
        return {"halt": recorded, "apply": None}
    report = apply_halt_task(recorded["halt_id"], ledger_url=ledger_url, api_url=api_url, scaling_tag=scaling_tag)
    if recorded["created"]:
        notify_halt(recorded, report, ledger_url)
        _open_ui_approval(recorded["halt_id"])
    else:
        log.info("halt %s already open for this cause; re-applied, not re-notified", recorded["halt_id"])
    return {"halt": recorded, "apply": report}


__all__ = ["halt", "notify_halt"]
