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

from flows.states import not_a_success
from tasks.approvals.lift_tasks import try_lift_task
from tasks.ledger import Ledger


@flow(name="resume", retries=0)
def resume(halt_id: str) -> dict[str, Any]:
    """Lift a halt if its approvals and a fresh safeguard verification allow it.

    A refused lift ends a deployment run Failed, named "Refused", with what is missing as its
    message and the result dict as its data (`flows.states`); a direct call returns the dict.

    Args:
        halt_id: The halt to lift (`rsp status` lists the open ones).
    """
    ledger = Ledger(create=False)  # never a new, empty ledger that no gate reads
    try:
        result = try_lift_task(halt_id, ledger=ledger, api_url=None, scaling_tag=None, trigger="resume flow")
    finally:
        ledger.close()
    log = get_run_logger()
    (log.info if result["lifted"] else log.warning)(result["message"])
    if not result["lifted"]:
        return not_a_success(result, name="Refused", message=f"lift refused: {result['message']}")  # type: ignore[no-any-return]
    return result


__all__ = ["resume", "try_lift_task"]
