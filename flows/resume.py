"""The resume flow: lift a halt once the ledger's approvals and fresh safeguard checks allow it.

    resume(halt_id)  ->  tasks.approvals.try_lift(halt_id) as a Prefect flow run

Re-verifies the halt's required safeguards, checks the current round's votes against the
policy's approver rules, appends `halt.lifted` (with votes and verification) or
`halt.lift_refused` (saying what is missing), resumes the deployments the halt paused, and
notifies. Idempotent: a second run, or a run racing a Slack quorum, lifts once (the ledger
refuses a second `halt.lifted`). The plain function is `tasks.approvals.try_lift`; the
approval service and `rsp approve` call it directly, this flow is for running it from
Prefect (a deployment, an automation, the UI).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from tasks.approvals.lift_tasks import try_lift_task
from tasks.ledger import Ledger


@flow(name="resume", retries=0)
def resume(halt_id: str, ledger_url: str | None = None, api_url: str | None = None,
           scaling_tag: str | None = None) -> dict[str, Any]:
    """Lift `halt_id` if approvals and safeguards allow; the result says what happened or what is missing.

    Args:
        halt_id: The halt to lift (see `rsp status`).
        ledger_url: SQLAlchemy URL of the ledger (default: settings).
        api_url: Prefect API URL where the halted deployments are resumed (default: PREFECT_API_URL).
        scaling_tag: Tag marking scaling deployments (default: settings, "scaling").
    """
    ledger = Ledger(ledger_url, create=False)  # never a new, empty ledger that no gate reads
    try:
        result = try_lift_task(halt_id, ledger=ledger, api_url=api_url, scaling_tag=scaling_tag,
                               trigger="resume flow")
    finally:
        ledger.close()
    log = get_run_logger()
    (log.info if result["lifted"] else log.warning)(result["message"])
    return result


__all__ = ["resume", "try_lift_task"]
