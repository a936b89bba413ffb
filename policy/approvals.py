"""Do these votes satisfy the policy's approver rules? A pure function over plain values.

The rules come from the policy (`approvals: roles, quorum, must_include`); the votes from
wherever they were cast (Slack, the Prefect UI, the CLI). Who holds which role is the
roster's business: each ballot carries the roles its person holds, and this module only
decides what they add up to. No I/O, no Prefect, no ledger.

Rules, in the order they apply:

1. A ballot counts only if its person holds at least one of `roles` (an eligible voter).
2. Ballots are read in the order they were cast. The first rejection by an eligible voter
   ends the round: nothing after it counts, and the round is `rejected`. A new round is a
   new request (the caller decides where rounds begin).
3. Approvals count per DISTINCT person: the same person approving twice counts once.
4. `must_include`: every listed role must be held by a different counted approver
   (a maximum bipartite matching of roles to people). One person holding two required
   roles covers only one of them; a policy asking for a CEO and an RSO wants two people.
5. Satisfied when not rejected, at least `quorum` distinct approvers, and every
   must_include role matched.
6. An unverified ballot (no signature: the Prefect UI form, `rsp approve` without a key)
   counts, approval or rejection, only in the roles for which the rules trust its channel
   (`trusted_unsigned_channels`, empty by default): otherwise it is listed as `unverified`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Decision = Literal["approve", "reject"]
DECISIONS: tuple[str, ...] = ("approve", "reject")


@dataclass(frozen=True)
class ApprovalRules:
    roles: tuple[str, ...]
    quorum: int
    must_include: tuple[str, ...] = ()
    # role -> unsigned channels whose votes count for that role (policy.schema.Approvals)
    trusted_unsigned: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.roles:
            raise ValueError("approval rules need at least one approver role")
        if self.quorum < 1:
            raise ValueError(f"approval quorum must be at least 1, got {self.quorum}")
        stray = [r for r in self.must_include if r not in self.roles]
        if stray:
            raise ValueError(f"must_include roles {stray} are not approver roles {list(self.roles)}")

    @classmethod
    def of(cls, rules: Any) -> ApprovalRules:
        """From `policy.schema.Approvals`, a halt record's `lifts_when.approvals` mapping, or itself."""
        if isinstance(rules, ApprovalRules):
            return rules
        if isinstance(rules, Mapping):
            get = rules.get
        else:
            def get(name: str, default: Any = None) -> Any:
                return getattr(rules, name, default)
        roles, quorum = get("roles"), get("quorum")
        if not roles or not isinstance(quorum, int) or isinstance(quorum, bool):
            raise ValueError(f"approval rules need roles and an integer quorum, got roles={roles!r} quorum={quorum!r}")
        trusted = get("trusted_unsigned_channels") or {}
        if not isinstance(trusted, Mapping):
            raise ValueError(f"trusted_unsigned_channels must map roles to channels, got {trusted!r}")  # noqa: TRY004 - callers catch ValueError for unusable rules
        return cls(roles=tuple(str(r) for r in roles), quorum=quorum,
                   must_include=tuple(str(r) for r in (get("must_include") or ())),
                   trusted_unsigned={str(r): tuple(str(c) for c in cs) for r, cs in trusted.items() if cs})

    def counted_roles(self, ballot: Ballot) -> frozenset[str]:
        """The approver roles a ballot counts in: all its eligible roles when verified, else only
        those whose trusted unsigned channels include the ballot's channel."""
        eligible = self.eligible_roles(ballot.roles)
        if ballot.verified:
            return eligible
        return frozenset(r for r in eligible if ballot.channel in self.trusted_unsigned.get(r, ()))

    def eligible_roles(self, held: Iterable[str]) -> frozenset[str]:
        return frozenset(held) & frozenset(self.roles)

    def describe(self) -> str:
        text = f"{self.quorum} distinct approver(s) holding {' or '.join(self.roles)}"
        if self.must_include:
            text += f", including {' and '.join(self.must_include)}"
        return text

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"roles": list(self.roles), "quorum": self.quorum, "must_include": list(self.must_include)}
        if self.trusted_unsigned:
            out["trusted_unsigned_channels"] = {r: list(cs) for r, cs in self.trusted_unsigned.items()}
        return out


@dataclass(frozen=True)
class Ballot:
    """One vote: who, approve or reject, the roles it is cast in, and whether a signature (or
    Slack's) vouches for it; `channel` names how an unverified one arrived."""

    person: str
    decision: Decision
    roles: frozenset[str] = frozenset()
    seq: int = 0  # where the vote sits in the ledger; only for reporting
    verified: bool = True
    channel: str | None = None

    def __post_init__(self) -> None:
        if self.decision not in DECISIONS:
            raise ValueError(f"decision must be 'approve' or 'reject', got {self.decision!r}")


@dataclass(frozen=True)
class Tally:
    rules: ApprovalRules
    satisfied: bool
    rejected_by: str | None
    approvers: tuple[str, ...]  # distinct eligible approvers, in the order they first approved
    ineligible: tuple[str, ...]  # people whose ballots did not count (no approver role)
    ignored_after_rejection: int
    assignment: Mapping[str, str] = field(default_factory=dict)  # must_include role -> approver covering it
    missing_roles: tuple[str, ...] = ()  # must_include roles no distinct approver covers yet
    unverified: tuple[str, ...] = ()  # people whose unsigned ballots did not count (channel not trusted)

    @property
    def rejected(self) -> bool:
        return self.rejected_by is not None

    @property
    def needed(self) -> int:
        """How many more distinct approvers are needed (0 when satisfied or rejected)."""
        if self.satisfied or self.rejected:
            return 0
        return max(self.rules.quorum - len(self.approvers), len(self.missing_roles))

    def summary(self) -> str:
        if self.rejected:
            return f"rejected by {self.rejected_by}"
        have = f"{len(self.approvers)}/{self.rules.quorum} approvals"
        who = f" ({', '.join(self.approvers)})" if self.approvers else ""
        if self.satisfied:
            return f"quorum reached: {have}{who}"
        more = f"; {self.needed} more needed"
        if self.missing_roles:
            more += f", including a distinct approver holding {' and '.join(self.missing_roles)}"
        if self.unverified:
            more += f"; not counted, unsigned: {', '.join(self.unverified)}"
        return f"{have}{who}{more}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "satisfied": self.satisfied,
            "rejected_by": self.rejected_by,
            "approvers": list(self.approvers),
            "needed": self.needed,
            "quorum": self.rules.quorum,
            "missing_roles": list(self.missing_roles),
            "assignment": dict(self.assignment),
            "ineligible": list(self.ineligible),
            "unverified": list(self.unverified),
        }


def match_required_roles(required: Sequence[str], approvers: Mapping[str, frozenset[str]]) -> dict[str, str]:
    """Maximum matching of required roles to distinct approvers (Kuhn's augmenting paths;
    the sets are a handful of roles and people, so simplicity beats asymptotics)."""
    owner: dict[str, str] = {}  # person -> role they cover

    def augment(role: str, seen: set[str]) -> bool:
        for person in sorted(approvers):  # sorted: the same votes always give the same assignment
            if role not in approvers[person] or person in seen:
                continue
            seen.add(person)
            if person not in owner or augment(owner[person], seen):
                owner[person] = role
                return True
        return False

    for role in required:
        augment(role, set())
    return {role: person for person, role in owner.items()}


def tally(rules: ApprovalRules | Any, ballots: Iterable[Ballot]) -> Tally:
    """What the ballots of one round add up to under `rules` (see the module docstring)."""
    rules = ApprovalRules.of(rules)
    approvers: dict[str, frozenset[str]] = {}
    ineligible: list[str] = []
    unverified: list[str] = []
    rejected_by: str | None = None
    ignored = 0
    for ballot in ballots:
        if rejected_by is not None:
            ignored += 1
            continue
        eligible = rules.counted_roles(ballot)
        if not eligible:
            untrusted = not ballot.verified and rules.eligible_roles(ballot.roles)
            skipped = unverified if untrusted else ineligible
            if ballot.person not in skipped:
                skipped.append(ballot.person)
            continue
        if ballot.decision == "reject":
            rejected_by = ballot.person
        elif ballot.person not in approvers:
            approvers[ballot.person] = eligible
    assignment = match_required_roles(rules.must_include, approvers)
    missing = tuple(r for r in rules.must_include if r not in assignment)
    satisfied = rejected_by is None and len(approvers) >= rules.quorum and not missing
    return Tally(rules=rules, satisfied=satisfied, rejected_by=rejected_by, approvers=tuple(approvers),
                 ineligible=tuple(ineligible), ignored_after_rejection=ignored, assignment=assignment,
                 missing_roles=missing, unverified=tuple(unverified))


def voter_problem(rules: ApprovalRules | Any, person: str, roles: Iterable[str]) -> str | None:
    """Why `person` may not vote under `rules`, or None when they may."""
    rules = ApprovalRules.of(rules)
    held = frozenset(roles)
    if rules.eligible_roles(held):
        return None
    shown = ", ".join(sorted(held)) or "no roles"
    return f"{person} holds {shown}; approving needs one of {', '.join(rules.roles)}"


__all__ = [
    "DECISIONS",
    "ApprovalRules",
    "Ballot",
    "Decision",
    "Tally",
    "match_required_roles",
    "tally",
    "voter_problem",
]
