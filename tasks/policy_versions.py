"""The policy version in force, per policy id, as the ledger records it; changes held for approval.

    in_force = policy_in_force(ledger, "policy.yaml")   # read, decide, record, notify
    in_force.policy, in_force.ref                        # what to evaluate with, and the ref to record

The decision itself is `policy.change.decide_change` (pure). This module keeps its inputs and
outputs in the ledger:

- `policy.adopted` (subject: the policy id) puts a version in force, with the policy file's text,
  so the version stays usable when the file on disk changes: the first version a ledger sees, a
  change that loosens nothing (with the diff's lines), or an approved loosening (with its approvers).
- `policy.change_proposed` (subject: the proposal id) records a loosening version once, with the
  diff's loosening lines and the in-force approver rules, and is notified through the notifier
  dispatch (tasks/notify). Until the quorum is met the version in force is what evaluations use
  AND record: `ref` is then a copy of the in-force text under `<home>/policies/<sha256>.yaml`,
  which the determination's `policy_ref`, its signed statement and the halt's approver rules cite.
- `policy.change_voted` / `policy.change_vote_refused`: signed votes (`rsp policy approve-change`).
  Every vote is verified again against the roster whenever it is counted, so a vote written into
  the ledger by hand, without a valid signature, never counts.

Fail closed: a stored version whose text no longer hashes to its recorded sha256 raises (the
callers treat it as an unreadable policy: halt); an unreadable roster counts no votes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from policy.approvals import Ballot, Tally, tally
from policy.change import ChangeDecision, approval_rules, decide_change, proposal_id
from policy.errors import PolicyError
from policy.identity import policy_sha256
from policy.loading import parse_policy
from policy.schema import Policy

if TYPE_CHECKING:
    from tasks.ledger import Event, Ledger
    from tasks.safeguards.roster import Roster

STORE_DIR = "policies"


@dataclass(frozen=True)
class InForce:
    """The policy an evaluation uses and records. `ref` is the reference it was asked for when that
    file holds the version in force, else the stored copy of the version in force."""

    policy: Policy
    ref: str
    sha256: str
    decision: ChangeDecision
    proposal: str | None = None  # the loosening proposal held meanwhile, if any

    @property
    def held(self) -> bool:
        return self.decision.outcome == "held"

    def message(self) -> str:
        if not self.held:
            return f"policy {self.policy.framework.id} {self.sha256[:12]} in force ({self.decision.reason})"
        return (f"policy {self.policy.framework.id}: the proposed version {self.decision.proposed_sha256[:12]} is HELD "
                f"as {self.proposal}: {self.decision.reason}; evaluating with the version in force "
                f"{self.sha256[:12]}. Approve with `rsp policy approve-change {self.proposal} --key KEY`.")


def _roster(settings: Any) -> Roster | None:
    from tasks.approvals.config import ApprovalConfig
    from tasks.safeguards.roster import RosterError, load_roster

    try:
        return load_roster(ApprovalConfig.from_settings(settings).roster_path)
    except (RosterError, ValueError, OSError):
        return None  # no roster, no verified vote: a loosening stays held


def in_force_event(ledger: Ledger, policy_id: str) -> Event | None:
    """The `policy.adopted` event of the version in force for `policy_id`, or None."""
    from tasks.ledger.events import PolicyAdopted

    adopted = ledger.events(kind=PolicyAdopted.KIND, subject=policy_id)
    return adopted[-1] if adopted else None


def stored_policy(event: Event) -> Policy:
    """The policy an adoption or proposal event holds; PolicyError when its text no longer is that version."""
    text, sha = event.payload.get("text"), event.payload.get("sha256")
    where = f"ledger seq {event.seq} ({event.kind} {event.subject})"
    if not isinstance(text, str):
        raise PolicyError(where, ["no policy text recorded"])
    policy = parse_policy(text, where)
    if policy_sha256(policy) != sha:
        raise PolicyError(where, [f"the recorded text hashes to {policy_sha256(policy)[:12]}, not {str(sha)[:12]}"])
    return policy


def stored_copy(home: Path, sha256: str, text: str) -> Path:
    """The in-force text as a file (`<home>/policies/<sha256>.yaml`), written when missing or altered:
    what determinations made under a stored version cite and sign."""
    from tasks.storage import write_atomic

    path = Path(home) / STORE_DIR / f"{sha256}.yaml"
    try:
        same = path.read_text(encoding="utf-8") == text
    except (OSError, UnicodeDecodeError):
        same = False
    if not same:
        write_atomic(path, text.encode("utf-8"), mode=0o644)
    return path


def policy_in_force(ledger: Ledger, policy_ref: str, *, settings: Any = None, roster: Roster | None = None,
                    notify: bool = True) -> InForce:
    """Read `policy_ref`, decide it against the version in force (recording an adoption or a proposal),
    and return the policy to evaluate with. Raises what `read_policy` raises for an unreadable file,
    and PolicyError for a stored version that no longer verifies."""
    from tasks.inputs import read_policy_text
    from tasks.ledger.events import PolicyAdopted

    if settings is None:
        from tasks.settings import get_settings

        settings = get_settings()
    text, proposed = read_policy_text(policy_ref)
    pid = proposed.framework.id
    current = in_force_event(ledger, pid)
    in_force = None if current is None else stored_policy(current)
    ballots: list[Ballot] = []
    if in_force is not None and policy_sha256(in_force) != policy_sha256(proposed):
        proposal = proposal_id(pid, policy_sha256(in_force), policy_sha256(proposed))
        ballots = change_ballots(ledger, proposal, roster or _roster(settings))
    decision = decide_change(in_force, proposed, ballots)
    if decision.outcome == "unchanged":
        return InForce(proposed, str(policy_ref), decision.proposed_sha256, decision)
    if decision.adopt:
        adopted = PolicyAdopted(
            policy_id=pid, sha256=decision.proposed_sha256, reason=decision.outcome, text=text,
            version=proposed.framework.version, source=str(policy_ref), previous_sha256=decision.in_force_sha256,
            changes=decision.change_lines() or None, proposal_id=decision.proposal,
            approvers=list(decision.tally.approvers) if decision.tally is not None else None)
        ledger.record(_set_only(adopted), pid)
        if decision.outcome == "approved" and notify:
            _notify(ledger, settings, decision, adopted=True)
        return InForce(proposed, str(policy_ref), decision.proposed_sha256, decision)
    assert in_force is not None and current is not None and decision.proposal is not None
    _propose(ledger, decision, proposed, text, str(policy_ref), in_force, settings=settings, notify=notify)
    copy = stored_copy(settings.home, decision.in_force_sha256 or "", current.payload["text"])
    return InForce(in_force, str(copy), policy_sha256(in_force), decision, proposal=decision.proposal)


def governing(ledger: Ledger, policy: Policy, *, settings: Any = None) -> Policy:
    """`policy`, or the version in force when `policy` is a loosening of it still held: the same
    decision as `policy_in_force`, read-only (nothing recorded, nothing notified), for readers such
    as the scaling gate that must not take a looser file on its word. PolicyError when the stored
    version no longer verifies."""
    current = in_force_event(ledger, policy.framework.id)
    if current is None:
        return policy
    in_force = stored_policy(current)
    if policy_sha256(in_force) == policy_sha256(policy):
        return policy
    if settings is None:
        from tasks.settings import get_settings

        settings = get_settings()
    proposal = proposal_id(policy.framework.id, policy_sha256(in_force), policy_sha256(policy))
    decision = decide_change(in_force, policy, change_ballots(ledger, proposal, _roster(settings)))
    return policy if decision.adopt else in_force


def _set_only(event: Any) -> Any:
    """The event with only the fields that hold a value: a None field is left out of the payload."""
    return type(event)(**{k: v for k, v in event.to_payload().items() if v is not None})


def _propose(ledger: Ledger, decision: ChangeDecision, proposed: Policy, text: str, source: str, in_force: Policy,
             *, settings: Any, notify: bool) -> None:
    """Record the held change once per proposal, and notify it once."""
    from tasks.ledger.events import PolicyChangeProposed

    assert decision.proposal is not None and decision.in_force_sha256 is not None
    if not ledger.events(kind=PolicyChangeProposed.KIND, subject=decision.proposal, limit=1):
        ledger.record(PolicyChangeProposed(
            proposal_id=decision.proposal, policy_id=proposed.framework.id, sha256=decision.proposed_sha256,
            in_force_sha256=decision.in_force_sha256, loosening=decision.change_lines(loosening_only=True),
            changes=decision.change_lines(), text=text, rules=approval_rules(in_force).to_dict(),
            version=proposed.framework.version, source=source), decision.proposal)
    if notify:
        _notify(ledger, settings, decision, adopted=False)


def _notify(ledger: Ledger, settings: Any, decision: ChangeDecision, *, adopted: bool) -> None:
    """Through the notifier dispatch, once per (proposal, event, channel); a delivery failure is
    recorded and retried by the dispatcher, and never stops an evaluation."""
    from tasks.ledger.events import PolicyAdopted, PolicyChangeProposed
    from tasks.notify import Notification, notify

    assert decision.proposal is not None
    if adopted:
        approvers = ", ".join(decision.tally.approvers) if decision.tally else ""
        n = Notification(halt_id=decision.proposal, event=PolicyAdopted.KIND, event_key=PolicyAdopted.KIND,
                         title=f"Policy {decision.policy_id}: loosening change {decision.proposal} ADOPTED",
                         text=f"Approved by {approvers}; version {decision.proposed_sha256[:12]} is now in force.\n"
                              + "\n".join(decision.change_lines(loosening_only=True)),
                         facts={"proposal_id": decision.proposal, "sha256": decision.proposed_sha256},
                         severity="warning")
    else:
        n = Notification(
            halt_id=decision.proposal, event=PolicyChangeProposed.KIND, event_key=PolicyChangeProposed.KIND,
            title=f"Policy {decision.policy_id}: a loosening change is held for approval ({decision.proposal})",
            text=(f"{decision.reason}.\nIn force: {decision.in_force_sha256 or ''}; proposed: "
                  f"{decision.proposed_sha256}.\n" + "\n".join(decision.change_lines(loosening_only=True))
                  + f"\nApprove: rsp policy approve-change {decision.proposal} --key KEY"),
            facts={"proposal_id": decision.proposal, "loosening": decision.change_lines(loosening_only=True),
                   "tally": decision.tally.to_dict() if decision.tally else {}},
            severity="critical")
    try:
        notify(n, ledger=ledger, settings=settings, refresh=False)
    except Exception:  # noqa: BLE001, S110 - the proposal is recorded; the dispatcher records its own failures
        pass


# -- votes ------------------------------------------------------------------------------------------------


def change_ballots(ledger: Ledger, proposal: str, roster: Roster | None) -> list[Ballot]:
    """The ballots on `proposal` whose signatures verify against the roster now, in ledger order;
    anything else in the ledger (a forged or unsigned vote, a statement for another proposal) is skipped."""
    from tasks.ledger.events import PolicyChangeVoted
    from tasks.trust.votes import VerifiedChangeVote, verify_change_vote

    if roster is None:
        return []
    identity = ledger.identity()
    out: list[Ballot] = []
    for ev in ledger.events(kind=PolicyChangeVoted.KIND, subject=proposal):
        checked = verify_change_vote(ev.payload.get("statement"), str(ev.payload.get("signature") or ""), roster,
                                     proposal, expected_ledger_id=None if identity is None else identity.ledger_id)
        if isinstance(checked, VerifiedChangeVote) and checked.person == ev.payload.get("person") \
                and checked.decision == ev.payload.get("decision"):
            out.append(Ballot(person=checked.person, decision=checked.decision,  # type: ignore[arg-type]
                              roles=frozenset({checked.role}), seq=ev.seq, verified=True, channel="cli-signed"))
    return out


@dataclass(frozen=True)
class ProposalState:
    proposal_id: str
    policy_id: str
    sha256: str
    in_force_sha256: str
    status: Literal["pending", "adopted", "superseded"]
    loosening: tuple[str, ...]
    tally: Tally
    seq: int

    def to_dict(self) -> dict[str, Any]:
        return {"proposal_id": self.proposal_id, "policy_id": self.policy_id, "sha256": self.sha256,
                "in_force_sha256": self.in_force_sha256, "status": self.status, "loosening": list(self.loosening),
                "tally": self.tally.to_dict(), "summary": self.tally.summary(), "seq": self.seq}


def proposal_state(ledger: Ledger, event: Event, roster: Roster | None) -> ProposalState:
    """Where a recorded proposal stands: adopted, superseded (another version came into force first)
    or pending, with the tally of its verified votes under the rules recorded with it."""
    from tasks.ledger.events import PolicyAdopted

    p = event.payload
    pid, proposal = str(p["policy_id"]), str(p["proposal_id"])
    adoptions = ledger.events(kind=PolicyAdopted.KIND, subject=pid)
    status: Literal["pending", "adopted", "superseded"] = "pending"
    if any(a.payload.get("proposal_id") == proposal for a in adoptions):
        status = "adopted"
    elif not adoptions or adoptions[-1].payload.get("sha256") != p["in_force_sha256"]:
        status = "superseded"
    result = tally(p["rules"], change_ballots(ledger, proposal, roster))
    return ProposalState(proposal, pid, str(p["sha256"]), str(p["in_force_sha256"]), status,
                         tuple(p.get("loosening") or ()), result, event.seq)


def proposals(ledger: Ledger, roster: Roster | None) -> list[ProposalState]:
    from tasks.ledger.events import PolicyChangeProposed

    return [proposal_state(ledger, ev, roster) for ev in ledger.events(kind=PolicyChangeProposed.KIND)]


def versions_in_force(ledger: Ledger) -> dict[str, dict[str, Any]]:
    """policy id -> the adoption in force (sha256, version, reason, seq, ts), for `rsp policy status`."""
    from tasks.ledger.events import PolicyAdopted

    out: dict[str, dict[str, Any]] = {}
    for ev in ledger.events(kind=PolicyAdopted.KIND):
        out[ev.subject] = {k: ev.payload.get(k) for k in ("sha256", "version", "reason", "source", "proposal_id",
                                                           "approvers")} | {"seq": ev.seq, "ts": ev.ts}
    return out


@dataclass
class ChangeVoteOutcome:
    proposal_id: str
    status: Literal["recorded", "refused"]
    code: str
    message: str
    seq: int | None = None
    tally: Tally | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "recorded"

    def to_dict(self) -> dict[str, Any]:
        return {"proposal_id": self.proposal_id, "status": self.status, "code": self.code, "message": self.message,
                "seq": self.seq, "tally": None if self.tally is None else self.tally.to_dict()}


# Refusals that are bad input (exit 2) rather than a vote that does not count (exit 1).
USAGE_REFUSALS = frozenset({"no_such_proposal", "bad_statement"})


def record_change_vote(ledger: Ledger, proposal: str, statement: dict[str, Any], signature: str, roster: Roster, *,
                       justification: str | None = None, now: dt.datetime | None = None) -> ChangeVoteOutcome:
    """Verify and record one signed vote on a pending proposal; a refusal is recorded too (except for
    a proposal the ledger does not hold). The change itself is adopted by the next evaluation."""
    from tasks.ledger.events import PolicyChangeProposed, PolicyChangeVoted, PolicyChangeVoteRefused
    from tasks.trust.votes import VoteRefusal, verify_change_vote

    def refuse(code: str, reason: str, *, record: bool = True) -> ChangeVoteOutcome:
        if record:
            ledger.record(_set_only(PolicyChangeVoteRefused(
                proposal_id=proposal, code=code, reason=reason, person=statement.get("person"), statement=statement,
                signature=signature)), proposal)
        return ChangeVoteOutcome(proposal, "refused", code, reason)

    found = ledger.events(kind=PolicyChangeProposed.KIND, subject=proposal, limit=1)
    if not found:
        return refuse("no_such_proposal", f"no policy change proposal {proposal!r} in the ledger", record=False)
    state = proposal_state(ledger, found[0], roster)
    if state.status != "pending":
        return refuse(f"proposal_{state.status}", f"proposal {proposal} is already {state.status}")
    identity = ledger.identity()
    checked = verify_change_vote(statement, signature, roster, proposal,
                                 expected_ledger_id=None if identity is None else identity.ledger_id, now=now)
    if isinstance(checked, VoteRefusal):
        return refuse(checked.code, f"signed vote refused: {checked.reason}")
    rules = state.tally.rules
    if checked.role not in rules.roles:
        return refuse("unauthorised", f"{checked.person} signed as {checked.role}; approving a change to this "
                                      f"policy needs one of {', '.join(rules.roles)} (the rules IN FORCE)")
    for ev in ledger.events(kind=PolicyChangeVoted.KIND, subject=proposal):
        if (ev.payload.get("statement") or {}).get("nonce") == checked.nonce:
            return refuse("replayed", f"this signed statement is already recorded as vote {ev.seq}")
    event = ledger.record(_set_only(PolicyChangeVoted(
        proposal_id=proposal, person=checked.person, decision=checked.decision, role=checked.role,
        statement=statement, signature=signature, key_fingerprint=checked.key_fingerprint,
        justification=justification)), proposal)
    after = proposal_state(ledger, found[0], roster).tally
    verb = "approves" if checked.decision == "approve" else "rejects"
    more = (" The next evaluation adopts it." if after.satisfied else "")
    return ChangeVoteOutcome(proposal, "recorded", "recorded",
                             f"{checked.person} ({checked.role}) {verb} {proposal}: {after.summary()}.{more}",
                             seq=event.seq, tally=after)


__all__ = ["STORE_DIR", "USAGE_REFUSALS", "ChangeVoteOutcome", "InForce", "ProposalState", "change_ballots",
           "governing", "in_force_event", "policy_in_force", "proposal_state", "proposals", "record_change_vote", "stored_copy",
           "stored_policy", "versions_in_force"]
