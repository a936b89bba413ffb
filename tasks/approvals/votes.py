"""Recording one vote, by the same rules whichever way it arrived (Slack, Prefect UI, CLI).

    outcome = record_vote(VoteRequest(halt_id, "approve", person="alice", justification="...",
                                      channel="cli"), ledger=ledger, roster=roster)

Checks, in order; each refusal is written to the ledger as `vote.refused` (who, which halt,
why) and changes nothing else:

    bad_input          decision not approve/reject, empty or over-long justification
    unknown_user       no roster entry for the person (or for the Slack user id)
    no_such_halt       the ledger holds no such halt
    halt_lifted        the halt was already lifted
    no_rules           the halt's approver rules are unavailable (its policy cannot be found)
    unauthorised       the person holds none of the policy's approver roles
    round_rejected     someone rejected this round; start a new one (`--new-round`) to ask again

A vote that passes is written as `vote.recorded` with the person's approver roles, the
round and the tally after it. A repeated approval by the same person is recorded (every
click is audit) but counts once. A rejection also writes `approval.round_closed`: the halt
stays, and a new request needs a new round (`approval.round_opened`), which any authorised
approver starts with `rsp approve HALT --new-round` (or `new_round=True`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from policy.approvals import DECISIONS, Tally, tally, voter_problem
from tasks.approvals.state import approval_state, ballots_of, halt_rules

if TYPE_CHECKING:
    from policy.schema import Policy
    from tasks.ledger import Ledger
    from tasks.ledger.events import LedgerEventModel
    from tasks.safeguards.roster import Roster

Channel = Literal["slack", "prefect-ui", "cli", "api"]
MAX_JUSTIFICATION = 2000
MAX_ID = 200

# code -> (HTTP status for the approval service, CLI exit code)
REFUSALS: dict[str, tuple[int, int]] = {
    "bad_input": (400, 2),
    "unknown_user": (403, 1),
    "unauthorised": (403, 1),
    "no_such_halt": (404, 2),
    "halt_lifted": (409, 1),
    "round_rejected": (409, 1),
    "no_rules": (409, 1),
    "roster_unavailable": (503, 1),
}


@dataclass(frozen=True)
class VoteRequest:
    halt_id: str
    decision: str
    person: str | None  # roster person id; None when only a Slack user id is known and unmapped
    justification: str
    channel: Channel
    channel_ref: str | None = None  # Slack user id / Prefect flow run id / OS user
    new_round: bool = False


@dataclass
class VoteOutcome:
    halt_id: str
    status: Literal["recorded", "refused"]
    code: str  # recorded | duplicate | one of REFUSALS
    message: str
    person: str | None = None
    decision: str | None = None
    round: int | None = None
    seq: int | None = None
    tally: Tally | None = None
    required_safeguards: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    payload: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "recorded"

    @property
    def http_status(self) -> int:
        return 200 if self.ok else REFUSALS.get(self.code, (400, 2))[0]

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else REFUSALS.get(self.code, (400, 2))[1]

    def to_dict(self) -> dict[str, Any]:
        return {"halt_id": self.halt_id, "status": self.status, "code": self.code, "message": self.message,
                "person": self.person, "decision": self.decision, "round": self.round, "seq": self.seq,
                "tally": None if self.tally is None else self.tally.to_dict(),
                "required_safeguards": list(self.required_safeguards)}


def _clip(value: Any, limit: int = MAX_ID) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _refuse(ledger: Ledger, req: VoteRequest, code: str, message: str, *, person: str | None = None,
            roles: tuple[str, ...] = (), record: bool = True) -> VoteOutcome:
    subject = _clip(req.halt_id) or "(none)"
    if record:
        from tasks.ledger.events import VoteRefused

        ledger.record(VoteRefused(
            halt_id=subject, code=code, reason=message, person=person or req.person,
            decision=_clip(req.decision, 20), channel=req.channel, channel_ref=req.channel_ref,
        ), subject)
    return VoteOutcome(halt_id=req.halt_id, status="refused", code=code, message=message,
                       person=person or req.person, decision=req.decision, roles=roles)


def record_vote(req: VoteRequest, *, ledger: Ledger, roster: Roster, settings: Any = None,
                policy: Policy | None = None) -> VoteOutcome:
    """Validate and record one vote (see the module docstring). Never raises for a refusal."""
    decision = (req.decision or "").strip().lower()
    justification = " ".join((req.justification or "").split())
    if decision not in DECISIONS:
        return _refuse(ledger, req, "bad_input", f"decision must be approve or reject, got {_clip(req.decision, 40)!r}",
                       record=False)
    if not justification:
        return _refuse(ledger, req, "bad_input", "a justification is required", record=False)
    if len(justification) > MAX_JUSTIFICATION:
        return _refuse(ledger, req, "bad_input",
                       f"justification is {len(justification)} characters, over the {MAX_JUSTIFICATION} limit",
                       record=False)
    if not req.halt_id or len(req.halt_id) > MAX_ID:
        return _refuse(ledger, req, "bad_input", f"halt id {_clip(req.halt_id, 40)!r} is not a halt id", record=False)

    person = req.person
    if not person or roster.person(person) is None:
        who = person or f"Slack user {req.channel_ref}"
        return _refuse(ledger, req, "unknown_user", f"{who} is not on the roster; votes come from rostered people")

    halt = ledger.halt(req.halt_id)
    if halt is None:
        return _refuse(ledger, req, "no_such_halt", f"no halt {req.halt_id!r} in the ledger")
    if not halt.is_open:
        return _refuse(ledger, req, "halt_lifted", f"halt {req.halt_id} was already lifted at {halt.lifted_at}")

    hr = halt_rules(ledger, halt, settings=settings, policy=policy)
    if hr.rules is None:
        return _refuse(ledger, req, "no_rules", f"cannot count votes on {req.halt_id}: {hr.problem}")
    held = roster.roles_of(person)
    problem = voter_problem(hr.rules, person, held)
    if problem is not None:
        return _refuse(ledger, req, "unauthorised", problem)
    roles = tuple(sorted(hr.rules.eligible_roles(held)))

    state = approval_state(ledger, halt, rules=hr, roster=roster)
    assert state.tally is not None
    from tasks.ledger.events import ApprovalRoundClosed, ApprovalRoundOpened, VoteRecorded

    items: list[tuple[LedgerEventModel, str]] = []
    rnd = state.round
    if state.tally.rejected:
        if not req.new_round:
            return _refuse(ledger, req, "round_rejected",
                           f"round {rnd} of {req.halt_id} was rejected by {state.tally.rejected_by}; "
                           f"ask again in a new round (rsp approve {req.halt_id} --new-round)", roles=roles)
        rnd += 1
        items.append((ApprovalRoundOpened(halt_id=halt.halt_id, round=rnd, by=person, channel=req.channel,
                                          justification=justification), halt.halt_id))
        prior: list[Any] = []
    else:
        prior = ballots_of(state.votes, roster)
    duplicate = any(b.person == person and b.decision == decision for b in prior)
    after = tally(hr.rules, [*prior, _ballot(person, decision, held)])
    vote = {
        "halt_id": halt.halt_id, "round": rnd, "person": person, "decision": decision, "roles": list(roles),
        "justification": justification, "channel": req.channel, "channel_ref": req.channel_ref,
        "duplicate": duplicate, "tally": after.to_dict(),
    }
    items.append((VoteRecorded.from_payload(vote), halt.halt_id))
    if decision == "reject" and after.rejected_by == person:
        items.append((ApprovalRoundClosed(halt_id=halt.halt_id, round=rnd, outcome="rejected", by=person,
                                          justification=justification), halt.halt_id))
    written = ledger.record_many(items)
    seq = next(e.seq for e in written if e.kind == VoteRecorded.KIND)
    # Re-read: a vote racing this one may have landed first; the ledger order is what counts.
    final = approval_state(ledger, halt, rules=hr, roster=roster)
    verb = "approves" if decision == "approve" else "rejects"
    message = f"{person} {verb} lifting {halt.halt_id} (round {final.round}): {final.tally.summary() if final.tally else ''}"
    return VoteOutcome(halt_id=halt.halt_id, status="recorded", code="duplicate" if duplicate else "recorded",
                       message=message, person=person, decision=decision, round=final.round, seq=seq,
                       tally=final.tally, required_safeguards=hr.required_safeguards, roles=roles, payload=vote)


def _ballot(person: str, decision: str, roles: frozenset[str]) -> Any:
    from policy.approvals import Ballot

    return Ballot(person=person, decision=decision, roles=roles)  # type: ignore[arg-type]


__all__ = ["MAX_JUSTIFICATION", "REFUSALS", "Channel", "VoteOutcome", "VoteRequest", "record_vote"]
