"""Approvals: votes from Slack, the Prefect UI and the CLI, counted by the policy's rules,
and the lift that follows a quorum once safeguards verify.

    from tasks.approvals import VoteRequest, record_vote, try_lift
    outcome = record_vote(VoteRequest(halt_id, "approve", person="alice", justification="...",
                                      channel="cli"), ledger=ledger, roster=roster)
    if outcome.tally and outcome.tally.satisfied:
        try_lift(halt_id, ledger=ledger)

The rule itself ("do these votes satisfy the approvals?") is the pure
`policy.approvals.tally`; this package reads and writes the ledger around it.
Ledger events (subject = halt id): vote.recorded, vote.refused, approval.round_opened,
approval.round_closed, approval.wait_started, approval.wait_timed_out, halt.lift_refused,
halt.lifted, halt.deployments_resumed, halt.resume_failed.
"""

from tasks.approvals.config import ApprovalConfig, RosterCache
from tasks.approvals.lift import LiftOutcome, handle_recorded_vote, resume_halt_deployments, try_lift
from tasks.approvals.state import ApprovalState, approval_state, halt_rules
from tasks.approvals.votes import REFUSALS, VoteOutcome, VoteRequest, record_vote

__all__ = [
    "REFUSALS",
    "ApprovalConfig",
    "ApprovalState",
    "LiftOutcome",
    "RosterCache",
    "VoteOutcome",
    "VoteRequest",
    "approval_state",
    "halt_rules",
    "handle_recorded_vote",
    "record_vote",
    "resume_halt_deployments",
    "try_lift",
]
