"""A vote as a signed statement, and its verification against the roster. Pure: no ledger, no I/O.

    statement = vote_statement(halt_id, "approve", "alice", "rso", at=now_iso(), nonce=new_nonce())
    signature = sign_vote(statement, load_private_key("~/.ssh/id_ed25519"))
    result = verify_vote(statement, signature, roster, expected_halt_id=halt_id)
    if isinstance(result, VoteRefusal): ...  # result.code, result.reason

The signature is ed25519 over `canonical_json(statement)` (tasks/trust/keys.py), so signer and
verifier agree byte for byte and any edited field breaks it. A vote verifies only when the
signature verifies with a key the roster lists for exactly the person the statement names, that
person holds the role it names, and it is about the halt being voted on (and the ledger, when
the statement names one). Whether the same statement was already used (a replay) is the
caller's question: it needs the ledger (tasks/approvals/votes.py). The audit-bundle verifier
imports `verify_vote` as it is: keep its signature and refusal codes stable.

A vote on a policy change (`rsp policy approve-change`, tasks/policy_versions.py) is a sibling
statement, `rsp.policy-change-vote/v1`, naming a `proposal_id` instead of a halt id, and verified
by the same rules (`change_vote_statement`, `verify_change_vote`): a halt vote never counts as a
change vote, nor the reverse, because the types differ.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tasks.trust.keys import canonical_json, sign, verify

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from tasks.safeguards.roster import Roster

VOTE_TYPE = "rsp.vote/v1"
CHANGE_VOTE_TYPE = "rsp.policy-change-vote/v1"
DECISIONS = ("approve", "reject")
# Clocks of the voter's machine and the gate's disagree a little; a vote from further ahead is refused.
CLOCK_SKEW = dt.timedelta(minutes=5)
_FIELDS = ("halt_id", "decision", "person", "role", "at", "nonce")
_CHANGE_FIELDS = ("proposal_id", "decision", "person", "role", "at", "nonce")


def new_nonce() -> str:
    return secrets.token_hex(16)


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def vote_statement(halt_id: str, decision: str, person: str, role: str, at: str, nonce: str,
                   ledger_id: str | None = None) -> dict[str, Any]:
    """The statement a voter signs. `at` is an ISO 8601 time with timezone; `nonce` makes it unique."""
    statement = {"_type": VOTE_TYPE, "halt_id": halt_id, "decision": decision, "person": person, "role": role,
                 "at": at, "nonce": nonce}
    if ledger_id is not None:
        statement["ledger_id"] = ledger_id
    return statement


def sign_vote(statement: Mapping[str, Any], key: Ed25519PrivateKey) -> str:
    return sign(key, canonical_json(dict(statement)))


@dataclass(frozen=True)
class VerifiedVote:
    halt_id: str
    decision: str
    person: str
    role: str
    at: str
    nonce: str
    key_fingerprint: str


@dataclass(frozen=True)
class VoteRefusal:
    """Why a signed vote does not count. Codes: bad_statement, wrong_halt (wrong_proposal for a change vote),
    wrong_ledger, unknown_user, bad_signature (no roster key signed it), wrong_key (another person's key
    signed it), role_not_held."""

    code: str
    reason: str


def _statement_problem(statement: Any, type_: str = VOTE_TYPE, fields: tuple[str, ...] = _FIELDS) -> str | None:
    if not isinstance(statement, Mapping):
        return f"a vote statement is a JSON object, got {type(statement).__name__}"
    if statement.get("_type") != type_:
        return f"statement _type is {statement.get('_type')!r}, expected {type_!r}"
    for name in fields:
        value = statement.get(name)
        if not isinstance(value, str) or not value.strip():
            return f"statement field {name!r} must be non-empty text"
    if statement["decision"] not in DECISIONS:
        return f"statement decision is {statement['decision']!r}, not approve or reject"
    try:
        at = dt.datetime.fromisoformat(statement["at"])
    except ValueError:
        return f"statement time {statement['at']!r} is not ISO 8601"
    if at.tzinfo is None or at.utcoffset() is None:
        return f"statement time {statement['at']!r} has no timezone"
    return None


def verify_vote(statement: Any, signature: str, roster: Roster, expected_halt_id: str, *,
                expected_ledger_id: str | None = None, now: dt.datetime | None = None) -> VerifiedVote | VoteRefusal:
    """The vote, verified, or why it is refused (see the module docstring). Never raises."""
    problem = _statement_problem(statement)
    if problem is not None:
        return VoteRefusal("bad_statement", problem)
    s: Mapping[str, Any] = statement
    person, role = s["person"], s["role"]
    if s["halt_id"] != expected_halt_id:
        return VoteRefusal("wrong_halt", f"the signed statement is for halt {s['halt_id']!r}, not {expected_halt_id!r}")
    checked = _signer(s, signature, roster, expected_ledger_id, now)
    if isinstance(checked, VoteRefusal):
        return checked
    return VerifiedVote(halt_id=s["halt_id"], decision=s["decision"], person=person, role=role, at=s["at"],
                        nonce=s["nonce"], key_fingerprint=checked)


def _signer(s: Mapping[str, Any], signature: str, roster: Roster, expected_ledger_id: str | None,
            now: dt.datetime | None) -> str | VoteRefusal:
    """The fingerprint of the roster key of the person `s` names that signed it (who holds the role it
    names), or why not: the checks every signed vote statement shares, after its subject matched."""
    person, role = s["person"], s["role"]
    ledger_id = s.get("ledger_id")
    if ledger_id is not None and expected_ledger_id is not None and ledger_id != expected_ledger_id:
        return VoteRefusal("wrong_ledger", f"the signed statement is for ledger {ledger_id!r}, not this one")
    at = dt.datetime.fromisoformat(s["at"])
    if at > (now or dt.datetime.now(dt.UTC)) + CLOCK_SKEW:
        return VoteRefusal("bad_statement", f"the signed statement is dated {s['at']}, in the future")
    entry = roster.person(person)
    if entry is None:
        return VoteRefusal("unknown_user", f"{person} is not on the roster; votes come from rostered people")
    data = canonical_json(dict(s))
    fp = next((f for f, key in roster.keys_of(person).items() if verify(key, signature, data)), None)
    if fp is None:
        other = next(((pid, f) for pid, f, key in roster.all_keys() if pid != person and verify(key, signature, data)),
                     None)
        if other is not None:
            return VoteRefusal("wrong_key", f"the vote names {person} but was signed with {other[0]}'s key {other[1]}")
        held = "no keys" if not roster.keys_of(person) else "none of their keys"
        return VoteRefusal("bad_signature", f"the signature matches {held} in the roster for {person} (a key outside "
                                            "the roster, or a statement altered after signing)")
    if role not in entry.roles:
        shown = ", ".join(entry.roles) or "no roles"
        return VoteRefusal("role_not_held", f"{person} signed as {role} but holds {shown} per the roster")
    return fp


# -- votes on a policy change (tasks/policy_versions.py) ------------------------------------------------------


def change_vote_statement(proposal_id: str, decision: str, person: str, role: str, at: str, nonce: str,
                          ledger_id: str | None = None) -> dict[str, Any]:
    """The statement an approver signs for a policy change proposal (`rsp policy approve-change`)."""
    statement = {"_type": CHANGE_VOTE_TYPE, "proposal_id": proposal_id, "decision": decision, "person": person,
                 "role": role, "at": at, "nonce": nonce}
    if ledger_id is not None:
        statement["ledger_id"] = ledger_id
    return statement


@dataclass(frozen=True)
class VerifiedChangeVote:
    proposal_id: str
    decision: str
    person: str
    role: str
    at: str
    nonce: str
    key_fingerprint: str


def verify_change_vote(statement: Any, signature: str, roster: Roster, expected_proposal_id: str, *,
                       expected_ledger_id: str | None = None, now: dt.datetime | None = None
                       ) -> VerifiedChangeVote | VoteRefusal:
    """A signed vote on a policy change, verified as `verify_vote` verifies a halt vote; refusal code
    `wrong_proposal` for a statement about another proposal. Never raises."""
    problem = _statement_problem(statement, CHANGE_VOTE_TYPE, _CHANGE_FIELDS)
    if problem is not None:
        return VoteRefusal("bad_statement", problem)
    s: Mapping[str, Any] = statement
    if s["proposal_id"] != expected_proposal_id:
        return VoteRefusal("wrong_proposal", f"the signed statement is for policy change {s['proposal_id']!r}, "
                                             f"not {expected_proposal_id!r}")
    checked = _signer(s, signature, roster, expected_ledger_id, now)
    if isinstance(checked, VoteRefusal):
        return checked
    return VerifiedChangeVote(proposal_id=s["proposal_id"], decision=s["decision"], person=s["person"],
                              role=s["role"], at=s["at"], nonce=s["nonce"], key_fingerprint=checked)


__all__ = ["CHANGE_VOTE_TYPE", "VOTE_TYPE", "VerifiedChangeVote", "VerifiedVote", "VoteRefusal",
           "change_vote_statement", "new_nonce", "now_iso", "sign_vote", "verify_change_vote", "verify_vote",
           "vote_statement"]
