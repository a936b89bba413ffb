"""Where an open halt's approval stands, as `rsp status` and `rsp halt list` show it.

Read-only, from the ledger through the public functions of tasks/approvals/state.py (the
same state the vote and lift code decide on): the current round's tally per approver role,
every vote of the round (who, role, channel, verified or not, when), and the latest refused
lift and refused vote with their reasons. Nothing here counts votes itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from policy.approvals import Ballot
    from tasks.ledger import Event, Halt, Ledger
    from tasks.safeguards.roster import Roster

# Channels whose identity the gate checks itself: a Slack vote arrives in a request signed with the app's
# signing secret and names the Slack user; the CLI and the Prefect UI record what was typed.
_VERIFIED_CHANNELS = frozenset({"slack"})


def vote_verified(payload: Mapping[str, Any], ballot: Any = None) -> bool:
    """Whether the voter's identity was verified: what the approval state's ballot says when it says
    (signed votes), else the vote's own `verified` flag, else whether its channel authenticates its sender."""
    for flag in (getattr(ballot, "verified", None), payload.get("verified")):
        if isinstance(flag, bool):
            return flag
    return payload.get("channel") in _VERIFIED_CHANNELS


def load_roster_or_none(settings: Any) -> tuple[Roster | None, str | None]:
    """The roster (people's roles now), or None and why: the view then shows roles as recorded at vote time."""
    from tasks.safeguards.roster import default_roster_path, load_roster

    path = default_roster_path(settings)
    try:
        return load_roster(path), None
    except Exception as exc:  # noqa: BLE001 - a status view must still show the votes
        return None, f"roster {path} unreadable ({' '.join(str(exc).split())[:160]}); roles as recorded at vote time"


def _vote_row(ev: Event, ballot: Ballot, counted: frozenset[str]) -> dict[str, Any]:
    p = ev.payload
    return {"seq": ev.seq, "at": ev.ts, "person": p.get("person"), "decision": p.get("decision"),
            "roles": sorted(ballot.roles), "channel": p.get("channel"), "channel_ref": p.get("channel_ref"),
            "verified": vote_verified(p, ballot),
            "counted": p.get("decision") == "approve" and p.get("person") in counted,
            "duplicate": bool(p.get("duplicate")), "justification": p.get("justification")}


def _last(events: list[Event], kind: str) -> Event | None:
    return next((ev for ev in reversed(events) if ev.kind == kind), None)


def approval_summary(ledger: Ledger, halt: Halt, *, settings: Any = None, roster: Roster | None = None
                     ) -> dict[str, Any]:
    """The approval state of `halt` as plain data (see the module docstring)."""
    from tasks.approvals.state import approval_state, ballots_of
    from tasks.ledger.events import HaltLiftRefused, VoteRefused

    events = list(ledger.events(subject=halt.halt_id))
    state = approval_state(ledger, halt, settings=settings, roster=roster, events=events)
    t = state.tally
    counted = frozenset(t.approvers) if t is not None else frozenset()
    ballots = ballots_of(state.votes, roster)  # one per vote, in order; roles as held now when a roster is given
    roles_of = {b.person: b.roles for b in ballots}
    tally: dict[str, Any] | None = None
    if t is not None and state.rules is not None:
        per_role = []
        for role in state.rules.roles:
            who = [p for p in t.approvers if role in roles_of.get(p, frozenset())]
            per_role.append({"role": role, "counted": len(who), "needed": 1 if role in state.rules.must_include else 0,
                             "approvers": who, "covered_by": t.assignment.get(role)})
        tally = {**t.to_dict(), "counted": len(t.approvers), "summary": t.summary(), "roles": per_role}
    lift = _last(events, HaltLiftRefused.KIND)
    vote = _last(events, VoteRefused.KIND)
    return {
        "round": state.round,
        "rules": None if state.rules is None else {**state.rules.to_dict(), "text": state.rules.describe()},
        "rules_problem": state.rules_problem,
        "tally": tally,
        "votes": [_vote_row(ev, b, counted) for ev, b in zip(state.votes, ballots, strict=True)],
        "last_lift_refused": None if lift is None else {
            "seq": lift.seq, "at": lift.ts, "reason": lift.payload.get("reason"),
            "trigger": lift.payload.get("trigger"), "missing": lift.payload.get("missing") or []},
        "last_vote_refused": None if vote is None else {
            "seq": vote.seq, "at": vote.ts, "person": vote.payload.get("person"), "code": vote.payload.get("code"),
            "reason": vote.payload.get("reason"), "channel": vote.payload.get("channel")},
    }


def approval_lines(a: Mapping[str, Any], indent: str = "    ") -> list[str]:
    """The approval summary as text lines, for the human output of `rsp status` and `rsp halt list`."""
    lines: list[str] = []
    t = a.get("tally")
    if t is None:
        lines.append(f"{indent}approvals: votes cannot be counted: {a.get('rules_problem')}")
    else:
        roles = "; ".join(
            f"{r['role']} {r['counted']}/{r['needed']}" + (f" ({', '.join(r['approvers'])})" if r["approvers"] else "")
            if r["needed"] else f"{r['role']} {r['counted']}" + (f" ({', '.join(r['approvers'])})" if r["approvers"]
                                                                  else "")
            for r in t["roles"])
        lines.append(f"{indent}approvals (round {a['round']}): {t['summary']}; per role: {roles}")
    for v in a.get("votes") or []:
        how = "verified" if v["verified"] else "NOT verified (self-declared)"
        note = "" if v["counted"] or v["decision"] != "approve" else " (not counted)"
        lines.append(f"{indent}  vote seq {v['seq']} {v['at']}: {v['person']} {v['decision']}s{note} as "
                     f"{'/'.join(v['roles']) or 'no approver role'} via {v['channel']} ({how})")
    lift = a.get("last_lift_refused")
    if lift is not None:
        lines.append(f"{indent}last refused lift: seq {lift['seq']} {lift['at']}: {lift['reason']}")
    vote = a.get("last_vote_refused")
    if vote is not None:
        lines.append(f"{indent}last refused vote: seq {vote['seq']} {vote['at']}: {vote['person']} via "
                     f"{vote['channel']} ({vote['code']}): {vote['reason']}")
    return lines
