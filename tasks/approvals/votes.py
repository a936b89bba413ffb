"""Recording one vote, by the same rules whichever way it arrived (Slack, Prefect UI, CLI).

    outcome = record_vote(VoteRequest(halt_id, "approve", person="alice", justification="...",
                                      channel="cli-signed", statement=statement, signature=sig),
                          ledger=ledger, roster=roster)

How far a vote is believed depends on its channel (the trust model, README):

    cli-signed     a statement signed with a key the roster lists for the voter (tasks/trust/votes.py):
                   verified; it counts in the role it names
    slack          verified by Slack's signing secret and the roster's slack_user_id (the service)
    prefect-ui, cli-unsigned, api
                   unverified (anyone can type a name): recorded, but counted only in the roles for
                   which the policy names that channel in `approvals.trusted_unsigned_channels`

Checks, in order; each refusal is written to the ledger as `vote.refused` (who, which halt,
why, and the statement and signature when there was one) and changes nothing else:

    bad_input          decision not approve/reject, empty or over-long justification, a cli-signed
                       vote without a statement, or a statement that disagrees with the request
    unknown_user       no roster entry for the person (or for the Slack user id)
    bad_statement, wrong_halt, wrong_ledger, bad_signature, wrong_key, role_not_held
                       the signed statement does not verify (`verify_vote`'s codes)
    no_such_halt       the ledger holds no such halt
    halt_lifted        the halt was already lifted
    replayed           the same signed statement (its nonce) is already recorded for this halt
    no_rules           the halt's approver rules are unavailable (its policy cannot be found)
    unauthorised       the person holds none of the policy's approver roles (or signed as another)
    round_rejected     someone rejected this round; start a new one (`--new-round`) to ask again

A vote that passes is written as `vote.recorded` with the person's approver roles, whether it
is `verified`, the round and the tally after it. A repeated approval by the same person is recorded (every
click is audit) but counts once. A rejection also writes `approval.round_closed`: the halt
stays, and a new request needs a new round (`approval.round_opened`), which any authorised
approver starts with `rsp approve HALT --new-round` (or `new_round=True`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from policy.approvals import DECISIONS, Ballot, Tally, tally, voter_problem
from tasks.approvals.state import approval_state, ballots_of, halt_rules

if TYPE_CHECKING:
    from policy.schema import Policy
    from tasks.ledger import Ledger
    from tasks.ledger.events import LedgerEventModel
    from tasks.safeguards.roster import Roster

Channel = Literal["slack", "prefect-ui", "cli-signed", "cli-unsigned", "api"]
# Channels whose vote is verified by something other than a person's signature.
VERIFIED_CHANNELS = frozenset({"slack"})
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
    "bad_statement": (400, 2),
    "wrong_halt": (409, 1),
    "wrong_ledger": (409, 1),
    "bad_signature": (403, 1),
    "wrong_key": (403, 1),
    "role_not_held": (403, 1),
    "replayed": (409, 1),
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
    statement: dict[str, Any] | None = None  # cli-signed: tasks.trust.votes.vote_statement(...)
    signature: str | None = None  # base64 ed25519 over canonical_json(statement)


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
    verified: bool = False
    counted: bool = False  # False: recorded, but an unverified channel the policy does not trust

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
                "required_safeguards": list(self.required_safeguards), "verified": self.verified,
                "counted": self.counted}


def _clip(value: Any, limit: int = MAX_ID) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _refuse(ledger: Ledger, req: VoteRequest, code: str, message: str, *, person: str | None = None,
            roles: tuple[str, ...] = (), record: bool = True, fingerprint: str | None = None) -> VoteOutcome:
    subject = _clip(req.halt_id) or "(none)"
    if record:
        from tasks.ledger.events import VoteRefused

        signed: dict[str, Any] = {}
        if req.statement is not None or req.signature is not None:
            signed = {"statement": req.statement if isinstance(req.statement, dict) else None,
                      "signature": None if req.signature is None else _clip(req.signature, 200)}
        if fingerprint is not None:
            signed["key_fingerprint"] = fingerprint
        ledger.record(VoteRefused(
            halt_id=subject, code=code, reason=message, person=person or req.person,
            decision=_clip(req.decision, 20), channel=req.channel, channel_ref=req.channel_ref, **signed,
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
    signed = req.statement is not None or req.signature is not None or req.channel == "cli-signed"
    if signed and not (req.channel == "cli-signed" and isinstance(req.statement, dict) and req.signature):
        return _refuse(ledger, req, "bad_input", "a signed vote needs channel cli-signed, a statement and a signature",
                       record=False)
    if signed and req.statement is not None and (req.statement.get("decision") != decision
                                                 or (req.person and req.statement.get("person") != req.person)):
        return _refuse(ledger, req, "bad_input", "the signed statement's person or decision differs from the request")

    person = req.person or (req.statement.get("person") if signed and req.statement else None)
    if not person or roster.person(person) is None:
        who = person or f"Slack user {req.channel_ref}"
        return _refuse(ledger, req, "unknown_user", f"{who} is not on the roster; votes come from rostered people")

    verified_vote = None
    if signed:
        from tasks.trust.votes import VoteRefusal, verify_vote

        identity = ledger.identity()
        checked = verify_vote(req.statement, req.signature or "", roster, req.halt_id,
                              expected_ledger_id=None if identity is None else identity.ledger_id)
        if isinstance(checked, VoteRefusal):
            return _refuse(ledger, req, checked.code, f"signed vote refused: {checked.reason}", person=person)
        verified_vote = checked

    halt = ledger.halt(req.halt_id)
    if halt is None:
        return _refuse(ledger, req, "no_such_halt", f"no halt {req.halt_id!r} in the ledger")
    if not halt.is_open:
        return _refuse(ledger, req, "halt_lifted", f"halt {req.halt_id} was already lifted at {halt.lifted_at}")
    if verified_vote is not None:
        seen = _recorded_nonce(ledger, halt.halt_id, verified_vote.nonce)
        if seen is not None:
            return _refuse(ledger, req, "replayed", f"this signed statement (nonce {verified_vote.nonce}) is already "
                           f"recorded as vote {seen}; sign a new one to vote again", person=person,
                           fingerprint=verified_vote.key_fingerprint)

    hr = halt_rules(ledger, halt, settings=settings, policy=policy)
    if hr.rules is None:
        return _refuse(ledger, req, "no_rules", f"cannot count votes on {req.halt_id}: {hr.problem}")
    # A signed vote is cast in the one role its statement names; an unsigned one in every role held.
    held = frozenset({verified_vote.role}) if verified_vote is not None else roster.roles_of(person)
    problem = voter_problem(hr.rules, person, held)
    if problem is not None:
        return _refuse(ledger, req, "unauthorised", problem)
    roles = tuple(sorted(hr.rules.eligible_roles(held)))
    verified = verified_vote is not None or req.channel in VERIFIED_CHANNELS

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
    ballot = Ballot(person=person, decision=decision, roles=held, verified=verified,  # type: ignore[arg-type]
                    channel=req.channel)
    counted = bool(hr.rules.counted_roles(ballot))
    after = tally(hr.rules, [*prior, ballot])
    vote: dict[str, Any] = {
        "halt_id": halt.halt_id, "round": rnd, "person": person, "decision": decision, "roles": list(roles),
        "justification": justification, "channel": req.channel, "channel_ref": req.channel_ref,
        "duplicate": duplicate, "tally": after.to_dict(), "verified": verified,
    }
    if verified_vote is not None:
        vote.update(statement=req.statement, signature=req.signature, key_fingerprint=verified_vote.key_fingerprint,
                    role=verified_vote.role)
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
    if not counted:
        message = (f"{person}'s vote via {req.channel} is recorded UNVERIFIED and does not count: the policy trusts "
                   f"no unsigned {req.channel} vote for {', '.join(roles)} (sign it: rsp approve ... --key PATH); "
                   f"{final.tally.summary() if final.tally else ''}")
    return VoteOutcome(halt_id=halt.halt_id, status="recorded", code="duplicate" if duplicate else "recorded",
                       message=message, person=person, decision=decision, round=final.round, seq=seq,
                       tally=final.tally, required_safeguards=hr.required_safeguards, roles=roles, payload=vote,
                       verified=verified, counted=counted)


def _recorded_nonce(ledger: Ledger, halt_id: str, nonce: str) -> int | None:
    """The seq of the vote already recorded on this halt with a statement carrying `nonce`, if any."""
    from tasks.ledger.events import VoteRecorded

    for ev in ledger.events(subject=halt_id, kind=VoteRecorded.KIND):
        statement = ev.payload.get("statement")
        if isinstance(statement, dict) and statement.get("nonce") == nonce:
            return ev.seq
    return None


__all__ = ["MAX_JUSTIFICATION", "REFUSALS", "VERIFIED_CHANNELS", "Channel", "VoteOutcome", "VoteRequest", "record_vote"]
