"""Where a halt's approval stands, read from the ledger: rules, round, votes, tally.

The ledger decides (DESIGN.md): votes are `vote.recorded` events on the halt's subject,
rounds begin at `halt.opened` and at each `approval.round_opened`, and the tally is the
pure `policy.approvals.tally` over the current round's votes in ledger order. Slack,
the Prefect UI and the CLI only deliver votes.

Approver rules, in order of authority:
1. `lifts_when.approvals` recorded in the halt (the policy that decided, at the time);
2. the policy whose sha256 the halt names (`lifts_when.policy_sha256`), looked up among the
   configured policy (RSP_POLICY), an explicitly given one, and the bundled frameworks;
3. for a halt that names no policy (a manual halt opened without one): the configured policy.
A halt that names a policy nobody can find has NO rules: votes are refused and it cannot be
lifted until that policy is configured (fail closed, never "any two people").
Halt records do not carry `trusted_unsigned_channels`: that comes from the halt's own policy
(by sha256) when it can be found, and is empty (only verified votes count) when it cannot.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from policy.approvals import ApprovalRules, Ballot, Decision, Tally, tally

if TYPE_CHECKING:
    from policy.schema import Policy
    from tasks.ledger import Event, Halt, Ledger
    from tasks.safeguards.roster import Roster


def obj(value: Any) -> Mapping[str, Any]:
    """`value` if it is a JSON object, else an empty one: halt records are read fail-closed."""
    return value if isinstance(value, Mapping) else {}


_policy_lock = threading.Lock()
_policy_cache: dict[tuple[str, int, int], tuple[Policy, str]] = {}


def _load_policy(ref: str | Path) -> tuple[Policy, str]:
    """A policy and its sha256, cached by file identity (path, mtime, size)."""
    from policy.identity import policy_sha256
    from tasks.inputs import read_policy, resolve_policy_path

    path = resolve_policy_path(ref)
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    with _policy_lock:
        hit = _policy_cache.get(key)
    if hit is not None:
        return hit
    policy = read_policy(path)
    value = (policy, policy_sha256(policy))
    with _policy_lock:
        _policy_cache[key] = value
    return value


def configured_policy_ref(settings: Any = None) -> str | None:
    if settings is None:
        try:
            from tasks.settings import get_settings

            settings = get_settings()
        except Exception:  # noqa: BLE001 - no settings: no configured policy
            return None
    ref = getattr(settings, "policy", None)
    return str(ref) if ref else None


def find_policy(sha256: str | None, *, settings: Any = None, policy: Policy | None = None
                ) -> tuple[Policy | None, str | None]:
    """(policy, problem). With a sha256: the candidate whose hash matches; without: the given
    or configured policy."""
    from policy.identity import policy_sha256

    candidates: list[Any] = []
    if policy is not None:
        candidates.append(policy)
    ref = configured_policy_ref(settings)
    if ref:
        candidates.append(ref)
    if sha256 is not None:
        from tasks.inputs import bundled_frameworks

        candidates.extend(str(p) for p in bundled_frameworks().values())
    problems: list[str] = []
    for cand in candidates:
        try:
            pol, sha = (cand, policy_sha256(cand)) if not isinstance(cand, str) else _load_policy(cand)
        except Exception as exc:  # noqa: BLE001 - one unreadable candidate must not hide the others
            problems.append(f"{cand}: {' '.join(str(exc).split())[:200]}")
            continue
        if sha256 is None or sha == sha256:
            return pol, None
    if sha256 is None:
        return None, "no policy configured (RSP_POLICY)" + (f"; {problems[0]}" if problems else "")
    return None, (f"the policy with sha256 {sha256[:12]}… that decided this halt is not available; "
                  "set RSP_POLICY to that policy file")


@dataclass
class HaltRules:
    rules: ApprovalRules | None
    source: str
    problem: str | None
    policy: Policy | None  # for verifying safeguards; may be None
    policy_problem: str | None
    required_safeguards: tuple[str, ...]


def halt_rules(ledger: Ledger, halt: Halt, *, settings: Any = None, policy: Policy | None = None) -> HaltRules:
    payload = halt.payload
    lifts = obj(payload.get("lifts_when"))
    sha = lifts.get("policy_sha256")
    if not isinstance(sha, str) or not sha:
        det = obj(obj(payload.get("why")).get("determination"))
        sha = det.get("policy_sha256") if isinstance(det.get("policy_sha256"), str) else None
    found, policy_problem = find_policy(sha, settings=settings, policy=policy)
    rules: ApprovalRules | None = None
    source, problem = "", None
    recorded = lifts.get("approvals")
    if isinstance(recorded, Mapping):
        try:
            rules, source = ApprovalRules.of(recorded), "the halt record"
        except ValueError as exc:
            problem = f"the halt record's approver rules are unusable: {exc}"
    if rules is None and problem is None:
        if found is not None:
            rules = ApprovalRules.of(found.approvals)
            source = f"policy {found.framework.id} {found.framework.version}"
        else:
            problem = policy_problem
    elif rules is not None and found is not None and found.approvals.trusted_unsigned_channels:
        rules = replace(rules, trusted_unsigned=ApprovalRules.of(found.approvals).trusted_unsigned)
    return HaltRules(rules=rules, source=source, problem=problem, policy=found, policy_problem=policy_problem,
                     required_safeguards=required_safeguards(ledger, halt))


def required_safeguards(ledger: Ledger, halt: Halt) -> tuple[str, ...]:
    """Every safeguard that must verify before the halt lifts: those it names as unmet, plus
    every safeguard its determination required (one met then may have lapsed since)."""
    from tasks.enforcement.halts import determination_of

    lifts = obj(halt.payload.get("lifts_when"))
    ids = [str(s) for s in lifts.get("safeguards") or []]
    det = determination_of(ledger, halt.payload)
    for req in (det or {}).get("required_safeguards") or []:
        if isinstance(req, Mapping) and isinstance(req.get("id"), str):
            ids.append(req["id"])
    return tuple(dict.fromkeys(ids))


@dataclass
class ApprovalState:
    halt_id: str
    round: int
    round_started_seq: int
    votes: list[Event] = field(default_factory=list)  # vote.recorded events of the current round
    rules: ApprovalRules | None = None
    rules_problem: str | None = None
    tally: Tally | None = None
    last_refusal: str | None = None  # the latest halt.lift_refused reason in this round
    required_safeguards: tuple[str, ...] = ()
    policy: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"halt_id": self.halt_id, "round": self.round, "rules": None if self.rules is None else
                self.rules.to_dict(), "rules_problem": self.rules_problem,
                "tally": None if self.tally is None else self.tally.to_dict(), "last_refusal": self.last_refusal,
                "required_safeguards": list(self.required_safeguards)}


def vote_is_verified(payload: Mapping[str, Any]) -> bool:
    """Whether a recorded vote was verified (signed, or Slack). A vote recorded before `verified`
    existed counts as verified only if it came through Slack, whose signature the service checked."""
    if "verified" in payload:
        return payload.get("verified") is True
    return payload.get("channel") == "slack"


def ballots_of(votes: Sequence[Event], roster: Roster | None = None) -> list[Ballot]:
    """Ballots from vote events. With a roster, a person's roles are what they held when they
    voted AND still hold now: someone who lost the role since no longer counts."""
    out = []
    for ev in votes:
        p = ev.payload
        roles = frozenset(str(r) for r in p.get("roles") or [])
        if roster is not None:
            roles &= roster.roles_of(str(p.get("person")))
        decision: Decision = "reject" if p.get("decision") == "reject" else "approve"
        channel = str(p.get("channel"))
        # "cli" is the name unsigned CLI votes were recorded under before signed ones existed.
        channel = "cli-unsigned" if channel == "cli" else channel
        out.append(Ballot(person=str(p.get("person")), decision=decision, roles=roles, seq=ev.seq,
                          verified=vote_is_verified(p), channel=channel))
    return out


def approval_state(ledger: Ledger, halt: Halt, *, settings: Any = None, policy: Policy | None = None,
                   roster: Roster | None = None, rules: HaltRules | None = None,
                   events: Sequence[Event] | None = None) -> ApprovalState:
    from tasks.ledger.events import ApprovalRoundOpened, HaltLiftRefused, VoteRecorded

    hr = rules or halt_rules(ledger, halt, settings=settings, policy=policy)
    evs = list(events) if events is not None else ledger.events(subject=halt.halt_id)
    rnd, start = 1, halt.opened_seq
    votes: list[Event] = []
    refusal: str | None = None
    for ev in evs:
        if ev.kind == ApprovalRoundOpened.KIND:
            # Only a higher round number starts a round: two people reopening at once open one round.
            wanted = ev.payload.get("round")
            if isinstance(wanted, int) and wanted > rnd:
                rnd, start, votes, refusal = wanted, ev.seq, [], None
        elif ev.kind == VoteRecorded.KIND:
            votes.append(ev)
        elif ev.kind == HaltLiftRefused.KIND:
            refusal = str(ev.payload.get("reason") or "")
    state = ApprovalState(halt_id=halt.halt_id, round=rnd, round_started_seq=start, votes=votes, rules=hr.rules,
                          rules_problem=hr.problem, last_refusal=refusal, required_safeguards=hr.required_safeguards,
                          policy=hr.policy)
    if hr.rules is not None:
        state.tally = tally(hr.rules, ballots_of(votes, roster))
    return state


__all__ = [
    "ApprovalState",
    "HaltRules",
    "approval_state",
    "ballots_of",
    "find_policy",
    "halt_rules",
    "required_safeguards",
    "vote_is_verified",
]
