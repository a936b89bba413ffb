"""Which policy version governs the gate: the one in force, a proposed one, and the votes on it.

A policy file can be edited by anyone who can write to it; the gate must not take a looser
policy on that person's word. So a new version is adopted only when `policy.diff` finds no
loosening against the version IN FORCE, or when the loosening carries the in-force policy's
approver quorum (signed votes, counted by `policy.approvals.tally`). The new file's own
approver rules never count: a policy that lowered its quorum must not approve itself.

    decision = decide_change(in_force, proposed, ballots)
    decision.adopt            # True: evaluate with `proposed` from now on (and record it)
    decision.loosening        # the diff's loosening changes, the reason for holding

Pure: no I/O. The ledger side (what is in force, the proposal, the votes) is
`tasks/policy_versions.py`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from policy.approvals import ApprovalRules, Ballot, Tally, tally
from policy.diff import Change, diff_policies, summarize
from policy.identity import policy_sha256
from policy.schema import Policy

Outcome = Literal["first", "unchanged", "no_loosening", "approved", "held"]


def proposal_id(policy_id: str, in_force_sha256: str, proposed_sha256: str) -> str:
    """The id of the change from one version to another: the same change always gets the same id,
    and a change proposed against another in-force version is another proposal (its votes start over)."""
    digest = hashlib.sha256(f"{policy_id}\n{in_force_sha256}\n{proposed_sha256}".encode()).hexdigest()
    return f"pc-{digest[:16]}"


def approval_rules(in_force: Policy) -> ApprovalRules:
    """The approver rules that decide a change: the IN-FORCE policy's, never the proposed one's.
    Unsigned channels the policy trusts for halts are not trusted here: only signed votes count."""
    rules = ApprovalRules.of(in_force.approvals)
    return ApprovalRules(roles=rules.roles, quorum=rules.quorum, must_include=rules.must_include)


@dataclass(frozen=True)
class ChangeDecision:
    outcome: Outcome
    reason: str
    in_force_sha256: str | None
    proposed_sha256: str
    changes: tuple[Change, ...] = ()
    tally: Tally | None = None  # only when a loosening was put to the vote
    policy_id: str = ""

    @property
    def adopt(self) -> bool:
        """Whether the proposed version governs from now on."""
        return self.outcome != "held"

    @property
    def loosening(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.loosens)

    @property
    def proposal(self) -> str | None:
        """The proposal id when the change needed (or needs) the quorum."""
        if self.in_force_sha256 is None or self.outcome not in ("approved", "held"):
            return None
        return proposal_id(self.policy_id, self.in_force_sha256, self.proposed_sha256)

    def change_lines(self, *, loosening_only: bool = False) -> list[str]:
        """One line per change (LOOSENS marked), as `rsp policy diff` prints them."""
        picked = self.loosening if loosening_only else self.changes
        return summarize(picked).splitlines() if picked else []


def decide_change(in_force: Policy | None, proposed: Policy, ballots: Iterable[Ballot] = ()) -> ChangeDecision:
    """Adopt `proposed`, or hold it and keep `in_force`, given the verified ballots cast on the change.

    - nothing in force yet: the first version is adopted;
    - the same canonical policy (formatting only): nothing changes;
    - changes, none loosening (a tightening or a neutral change): adopted at once;
    - any loosening: adopted only when the ballots satisfy the in-force policy's approver rules.
    Callers pass only ballots whose signatures verified; this function does not trust any other."""
    new_sha = policy_sha256(proposed)
    pid = proposed.framework.id
    if in_force is None:
        return ChangeDecision("first", f"first version of policy {pid} this ledger has seen", None, new_sha,
                              policy_id=pid)
    old_sha = policy_sha256(in_force)
    if old_sha == new_sha:
        return ChangeDecision("unchanged", "the version in force", old_sha, new_sha, policy_id=pid)
    changes = tuple(diff_policies(in_force, proposed))
    loosening = [c for c in changes if c.loosens]
    if not loosening:
        return ChangeDecision("no_loosening", f"{len(changes)} change(s), none loosens the policy", old_sha, new_sha,
                              changes, policy_id=pid)
    result = tally(approval_rules(in_force), ballots)
    if result.satisfied:
        return ChangeDecision("approved", f"{len(loosening)} loosening change(s) approved: {result.summary()}",
                              old_sha, new_sha, changes, result, policy_id=pid)
    return ChangeDecision(
        "held", f"{len(loosening)} of {len(changes)} change(s) loosen the policy; the version in force stays until the "
                f"in-force approvers agree ({result.summary()})",
        old_sha, new_sha, changes, result, policy_id=pid)


__all__ = ["ChangeDecision", "Outcome", "approval_rules", "decide_change", "proposal_id"]
