"""Prefect UI approvals: a flow run that pauses for an approval form and records each answer.

    await_approval(halt_id, timeout_s=3600)

The run pauses with `pause_flow_run(wait_for_input=ApprovalInput, timeout=...)`; the Prefect
UI shows the form (approver, decision, justification) on the paused run's Resume button,
and `resume_flow_run(flow_run_id, run_input={...})` does the same from code. Each answer is
checked by the same rules as Slack and the CLI (roster, approver roles, distinct people,
rounds) and recorded as a vote in the ledger; then the run pauses again, until the quorum
is reached (it then tries to lift), the round is rejected, the halt is lifted elsewhere,
or time runs out.

What the field taught us (DESIGN.md): the UI only DELIVERS a vote, the ledger decides. A
wait that times out records `approval.wait_timed_out` and approves nothing; the run ends
Completed with outcome "timed_out" rather than Failed, so a timeout is not mistaken for
a crash, and the halt stays until the ledger says otherwise. Anyone who can open the
Prefect UI can type any approver name: the form is an honour system unless the Prefect UI
itself is behind authentication (see the report's limitations).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Literal

from prefect import flow, get_run_logger
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import Field

if TYPE_CHECKING:
    from tasks.ledger import Ledger


class ApprovalInput(RunInput):
    """The form the Prefect UI shows on the paused run."""

    approver: str = Field(description="Your person id in the roster (e.g. alice)", min_length=1, max_length=200)
    decision: Literal["approve", "reject"] = Field(description="approve lifting the halt, or reject this request")
    justification: str = Field(description="Why: this goes into the audit ledger", min_length=1, max_length=2000)


def _flow_run_id() -> str | None:
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    run = getattr(ctx, "flow_run", None)
    return None if run is None else str(run.id)


@flow(name="await-approval", retries=0, log_prints=False, flow_run_name="approve-{halt_id}")
def await_approval(
    halt_id: str,
    timeout_s: int = 3600,
    poll_interval_s: int = 5,
    ledger_url: str | None = None,
    lift: bool = True,
    api_url: str | None = None,
    scaling_tag: str | None = None,
) -> dict[str, Any]:
    """Pause for approval forms until quorum, rejection, lift or `timeout_s` (total, across
    every pause). Returns {"outcome": lifted | refused | rejected | already_lifted | timed_out | ...};
    a rejected round or a refused lift ends a deployment run Failed (named Rejected / Refused)
    with that dict as the state's data, so the UI never shows it as a green Completed.

    Args:
        halt_id: The halt to collect approvals for (`rsp status` lists the open ones).
        timeout_s: Seconds to wait for the quorum in total; a timeout approves nothing.
        poll_interval_s: Seconds between checks for a submitted form (leave as is).
        ledger_url: Internal: SQLAlchemy URL of the ledger (empty: the configured one).
        lift: Internal: try to lift the halt once a quorum is reached (leave ticked).
        api_url: Internal: Prefect API where halted deployments are resumed (empty: PREFECT_API_URL).
        scaling_tag: Internal: tag marking scaling deployments (empty: the configured one).
    """
    from prefect.exceptions import FlowPauseTimeout

    from tasks.approvals.config import ApprovalConfig
    from tasks.approvals.lift import handle_recorded_vote
    from tasks.approvals.state import approval_state
    from tasks.approvals.votes import VoteRequest, record_vote
    from tasks.ledger import Ledger
    from tasks.ledger.events import ApprovalWaitEnded, ApprovalWaitStarted, VoteRefused
    from tasks.safeguards.roster import load_roster

    log = get_run_logger()
    ledger = Ledger(ledger_url, create=False)  # never a new, empty ledger that no gate reads
    run_id = _flow_run_id()
    halt = ledger.halt(halt_id)
    if halt is None:
        raise ValueError(f"await_approval: no halt {halt_id!r} in ledger {ledger.url}")
    started = time.monotonic()
    ledger.record(ApprovalWaitStarted(halt_id=halt_id, flow_run_id=run_id, timeout_s=timeout_s), halt_id)
    votes: list[dict[str, Any]] = []

    def end(outcome: str, **extra: Any) -> dict[str, Any]:
        ledger.record(ApprovalWaitEnded(halt_id=halt_id, flow_run_id=run_id, outcome=outcome, votes=len(votes)),
                      halt_id)
        return {"halt_id": halt_id, "outcome": outcome, "flow_run_id": run_id, "votes": votes, **extra}

    pause = 0
    while True:
        halt = ledger.halt(halt_id)
        if halt is None or not halt.is_open:
            return end("already_lifted")
        state = approval_state(ledger, halt)
        if state.tally is not None and state.tally.rejected:
            return _not_lifted("Rejected", end("rejected", rejected_by=state.tally.rejected_by))
        left = timeout_s - (time.monotonic() - started)
        if left < 1:
            return _timed_out(ledger, halt_id, run_id, started, end)
        pause += 1
        try:
            form = ApprovalInput.with_initial_data(description=_form_description(halt, state))
            answer = pause_flow_run(wait_for_input=form, timeout=int(left),
                                    poll_interval=max(1, poll_interval_s), key=f"approval-{pause}")
        except FlowPauseTimeout:
            return _timed_out(ledger, halt_id, run_id, started, end)
        except Exception as exc:  # noqa: BLE001 - input that cannot be loaded is refused, and we ask again
            ledger.record(VoteRefused(halt_id=halt_id, code="bad_input", channel="prefect-ui", channel_ref=run_id,
                                      reason=f"unreadable input: {exc}"[:500]), halt_id)
            log.warning("approval input could not be read: %s", exc)
            continue
        roster = load_roster(ApprovalConfig.from_settings().roster_path)
        req = VoteRequest(halt_id=halt_id, decision=answer.decision, person=answer.approver.strip(),
                          justification=answer.justification, channel="prefect-ui", channel_ref=run_id)
        outcome = record_vote(req, ledger=ledger, roster=roster)
        votes.append({"person": outcome.person, "decision": outcome.decision, "status": outcome.code,
                      "message": outcome.message})
        log.info("approval form: %s", outcome.message)
        if not outcome.ok:
            continue
        lifted = handle_recorded_vote(outcome, ledger=ledger, roster=roster, lift=lift, api_url=api_url,
                                      scaling_tag=scaling_tag)
        if lifted is not None:
            log.info(lifted.message)
            if lifted.lifted:
                return end("lifted" if lifted.status == "lifted" else "already_lifted", lift=lifted.to_dict())
            # Quorum reached but safeguards missing: the halt stays; more waiting will not change that.
            return _not_lifted("Refused", end("refused", lift=lifted.to_dict()))


def _not_lifted(name: str, result: dict[str, Any]) -> Any:
    from flows.states import not_a_success

    why = result.get("lift", {}).get("message") or f"rejected by {result.get('rejected_by')}"
    return not_a_success(result, name=name, message=f"halt {result['halt_id']} not lifted: {why}")


def _form_description(halt: Any, state: Any) -> str:
    """The paused run's form text (markdown): which halt, why, the votes so far, what is still missing."""
    from policy.halts import describe_cause

    lines = [f"**Approve lifting halt `{halt.halt_id}`**", "", f"- Cause: {describe_cause(halt.payload)}"]
    votes = [f"{v.payload.get('person')} {v.payload.get('decision')}" for v in state.votes]
    lines.append(f"- Votes this round: {', '.join(votes) if votes else 'none yet'}")
    if state.tally is not None and state.tally.needed:
        roles = f" (roles: {', '.join(state.tally.missing_roles)})" if state.tally.missing_roles else ""
        lines.append(f"- Still needed: {state.tally.needed} more approver(s){roles}")
    safeguards = ", ".join(state.required_safeguards) or "none"
    lines.append(f"- Safeguards re-verified before the lift: {safeguards}")
    if state.last_refusal:
        lines.append(f"- Last lift refused: {state.last_refusal}")
    return "\n".join(lines)


def _timed_out(ledger: Ledger, halt_id: str, run_id: str | None, started: float, end: Any) -> dict[str, Any]:
    from tasks.ledger.events import ApprovalWaitTimedOut

    waited = round(time.monotonic() - started, 1)
    event = ledger.record(ApprovalWaitTimedOut(
        halt_id=halt_id, flow_run_id=run_id, waited_s=waited,
        note="a timed-out wait approves nothing; the halt stays until the ledger holds a quorum"), halt_id)
    try:
        from tasks.notify import messages
        from tasks.notify.dispatch import notify

        notify(messages.wait_timed_out(halt_id, event.seq, event.payload), ledger=ledger)
    except Exception:  # noqa: BLE001 - the timeout is recorded; a notification failure is the dispatcher's
        get_run_logger().exception("could not notify the approval timeout")
    return end("timed_out", waited_s=waited)


__all__ = ["ApprovalInput", "await_approval"]
