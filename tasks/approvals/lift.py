"""Lifting a halt: quorum in the ledger, safeguards verified now, then the gate reopens.

    outcome = try_lift(halt_id)            # the plain function; flows/resume.py wraps it

1. The halt must be open (a lifted one only gets its deployments resumed, if that never
   finished: crash recovery).
2. The current round's votes must satisfy the policy's approver rules (policy.approvals).
3. Every safeguard the halt requires is verified again, now (`verify_safeguards`): a halt
   lifts on evidence, not on the determination's old verdict.
4. Only then `halt.lifted` is appended, with the votes and the verification. The ledger
   refuses a second lift (HaltConflict), so two quorum completions racing lift once; the
   loser reports `already_lifted` and does nothing more.
5. The deployments THIS halt paused (its halt.applied / halt.reconciled events) are resumed,
   except those another open halt still covers; recorded as `halt.deployments_resumed`
   (or `halt.resume_failed`, retried by calling try_lift again).
6. Everyone is told (threaded Slack reply, console, file) and the halt message refreshed.

Anything short of that appends `halt.lift_refused` naming exactly what is missing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from tasks.approvals.state import approval_state, halt_rules, vote_is_verified

if TYPE_CHECKING:
    from policy.schema import Policy
    from tasks.approvals.votes import VoteOutcome
    from tasks.ledger import Halt, Ledger
    from tasks.notify.dispatch import Dispatcher
    from tasks.safeguards.context import VerificationContext
    from tasks.safeguards.roster import Roster

log = logging.getLogger("rsp.approvals")


@dataclass
class LiftOutcome:
    halt_id: str
    status: Literal["lifted", "already_lifted", "refused", "no_such_halt"]
    message: str
    missing: list[dict[str, Any]] = field(default_factory=list)
    tally: dict[str, Any] | None = None
    verification: dict[str, Any] = field(default_factory=dict)
    resumed: list[str] = field(default_factory=list)
    kept_paused: list[dict[str, Any]] = field(default_factory=list)
    resume_error: str | None = None
    seq: int | None = None

    @property
    def lifted(self) -> bool:
        return self.status in ("lifted", "already_lifted")

    @property
    def exit_code(self) -> int:
        return 0 if self.lifted else (2 if self.status == "no_such_halt" else 1)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "lifted": self.lifted}


def _roster(roster: Roster | None, settings: Any) -> Roster:
    if roster is not None:
        return roster
    from tasks.approvals.config import ApprovalConfig
    from tasks.safeguards.roster import load_roster

    return load_roster(ApprovalConfig.from_settings(settings).roster_path)


def _notify(dispatcher: Dispatcher | None, ledger: Ledger, settings: Any, build: Any, halt_id: str) -> None:
    """Send one notification and refresh the halt message; a failure here never undoes a decision."""
    try:
        from tasks.notify.dispatch import notify

        notify(build(), ledger=ledger, settings=settings, dispatcher=dispatcher)
    except Exception:  # delivery failures are recorded by the dispatcher; this catches the rest
        log.exception("notification for %s could not be sent", halt_id)


def _refuse(ledger: Ledger, halt_id: str, reason: str, *, missing: Sequence[dict[str, Any]] = (),
            tally: dict[str, Any] | None = None, round_: int | None = None, trigger: str,
            notify: bool, dispatcher: Dispatcher | None, settings: Any,
            verification: dict[str, Any] | None = None) -> LiftOutcome:
    payload = {"halt_id": halt_id, "reason": reason, "missing": list(missing), "tally": tally, "round": round_,
               "trigger": trigger}
    from tasks.ledger.events import HaltLiftRefused

    event = ledger.record(HaltLiftRefused.from_payload(payload), halt_id)
    if notify:
        from tasks.notify import messages

        _notify(dispatcher, ledger, settings, lambda: messages.lift_refused(halt_id, event.seq, payload), halt_id)
    return LiftOutcome(halt_id=halt_id, status="refused", message=f"halt {halt_id} NOT lifted: {reason}",
                       missing=list(missing), tally=tally, seq=event.seq, verification=verification or {})


def try_lift(
    halt_id: str,
    *,
    ledger: Ledger | None = None,
    settings: Any = None,
    policy: Policy | None = None,
    roster: Roster | None = None,
    context: VerificationContext | None = None,
    api_url: str | None = None,
    scaling_tag: str | None = None,
    names: Sequence[str] | None = None,
    notify: bool = True,
    dispatcher: Dispatcher | None = None,
    trigger: str = "approval",
) -> LiftOutcome:
    """Lift `halt_id` if the ledger's votes and a fresh safeguard verification allow it
    (see the module docstring). Idempotent; never raises for a refusal. `ledger` None: the
    configured ledger."""
    from tasks.ledger import ledger_or_configured

    store = ledger_or_configured(ledger)
    halt = store.halt(halt_id)
    if halt is None:
        return LiftOutcome(halt_id=halt_id, status="no_such_halt", message=f"no halt {halt_id!r} in the ledger")
    if not halt.is_open:
        return _already_lifted(store, halt, api_url=api_url, scaling_tag=scaling_tag, names=names)
    common = {"trigger": trigger, "notify": notify, "dispatcher": dispatcher, "settings": settings}

    try:
        people = _roster(roster, settings)
    except Exception as exc:  # noqa: BLE001 - an unreadable roster cannot confirm anyone's role: refuse
        return _refuse(store, halt_id, f"the roster cannot be read, so no approver can be confirmed: {exc}", **common)
    hr = halt_rules(store, halt, settings=settings, policy=policy)
    if hr.rules is None:
        return _refuse(store, halt_id, f"approver rules unavailable: {hr.problem}", **common)
    state = approval_state(store, halt, rules=hr, roster=people)
    tally = state.tally
    assert tally is not None
    if not tally.satisfied:
        why = (f"round {state.round} was rejected by {tally.rejected_by}" if tally.rejected
               else f"approvals: {tally.summary()} (policy: {hr.rules.describe()})")
        return _refuse(store, halt_id, why, tally=tally.to_dict(), round_=state.round, **common)

    checks = verify(hr.policy, hr.required_safeguards, settings=settings, context=context,
                    policy_problem=hr.policy_problem)
    verification = {sid: c for sid, c in checks.items()}
    missing = [{"id": sid, **c} for sid, c in checks.items() if c["state"] != "met"]
    if missing:
        names_ = ", ".join(f"{m['id']} ({m['state']})" for m in missing)
        return _refuse(store, halt_id, f"quorum reached but safeguards are not verified met: {names_}",
                       missing=missing, tally=tally.to_dict(), round_=state.round, verification=verification,
                       **common)

    votes = [{"seq": ev.seq, "person": ev.payload.get("person"), "decision": ev.payload.get("decision"),
              "roles": ev.payload.get("roles"), "channel": ev.payload.get("channel"),
              "verified": vote_is_verified(ev.payload), "key_fingerprint": ev.payload.get("key_fingerprint"),
              "justification": ev.payload.get("justification")} for ev in state.votes]
    payload = {"halt_id": halt_id, "round": state.round, "approvers": list(tally.approvers),
               "assignment": dict(tally.assignment), "rules": hr.rules.to_dict(), "rules_source": hr.source,
               "votes": votes, "verification": verification, "trigger": trigger}
    from tasks.ledger import HaltConflict
    from tasks.ledger.events import HaltLifted

    try:
        event = store.record(HaltLifted.from_payload(payload), halt_id)
    except HaltConflict:
        # Another quorum completion lifted it first; that one resumes and notifies.
        return LiftOutcome(halt_id=halt_id, status="already_lifted",
                           message=f"halt {halt_id} was lifted concurrently by another request",
                           tally=tally.to_dict(), verification=verification)
    outcome = LiftOutcome(halt_id=halt_id, status="lifted", seq=event.seq, tally=tally.to_dict(),
                          verification=verification,
                          message=f"halt {halt_id} LIFTED: approved by {', '.join(tally.approvers)}; "
                                  f"{len(verification)} safeguard(s) verified; the gate is open")
    _resume_into(outcome, store, halt_id, api_url=api_url, scaling_tag=scaling_tag, names=names)
    if notify:
        from tasks.notify import messages

        _notify(dispatcher, store, settings, lambda: messages.lifted(halt_id, payload, outcome.resumed), halt_id)
    return outcome


def verify(policy: Policy | None, required: Sequence[str], *, settings: Any = None,
           context: VerificationContext | None = None, policy_problem: str | None = None) -> dict[str, dict[str, Any]]:
    """{safeguard id: {state, evidence, checked_at}} from a fresh verification round."""
    if not required:
        return {}
    if policy is None:
        return {sid: {"state": "unknown", "evidence": f"cannot verify: {policy_problem or 'no policy'}",
                      "checked_at": None} for sid in required}
    from tasks.safeguards import VerificationContext, verify_safeguards

    ctx = context or VerificationContext.from_settings(settings)
    checks = verify_safeguards(policy, list(required), ctx)
    return {sid: {"state": c.state, "evidence": c.evidence, "checked_at": c.checked_at} for sid, c in checks.items()}


def _already_lifted(store: Ledger, halt: Halt, **prefect: Any) -> LiftOutcome:
    outcome = LiftOutcome(halt_id=halt.halt_id, status="already_lifted",
                          message=f"halt {halt.halt_id} was already lifted at {halt.lifted_at}")
    from tasks.ledger.events import HaltDeploymentsResumed

    events = store.events(subject=halt.halt_id)
    if any(e.kind == HaltDeploymentsResumed.KIND for e in events):
        return outcome
    # Lifted, but its deployments were never resumed (Prefect was down, or the process died): do it now.
    _resume_into(outcome, store, halt.halt_id, **prefect)
    return outcome


def _resume_into(outcome: LiftOutcome, store: Ledger, halt_id: str, **prefect: Any) -> None:
    from tasks.enforcement.automation import release_guard
    from tasks.ledger.events import HaltDeploymentsResumed, HaltResumeFailed

    release_guard(store, **prefect)  # first: a run started the moment they resume must not be cancelled
    try:
        done = resume_halt_deployments(store, halt_id, **prefect)
    except Exception as exc:  # noqa: BLE001 - the halt is lifted in the ledger (gate open); say what is left
        from tasks.enforcement.prefect_api import short_error

        outcome.resume_error = short_error(exc)
        store.record(HaltResumeFailed(halt_id=halt_id, error=outcome.resume_error), halt_id)
        outcome.message += f"; deployments NOT resumed ({outcome.resume_error}); retry with `rsp resume {halt_id}`"
        return
    outcome.resumed, outcome.kept_paused = done["resumed"], done["kept_paused"]
    store.record(HaltDeploymentsResumed(halt_id=halt_id, **done), halt_id)
    from tasks.enforcement.queues import resume_released_queues

    # The scaling work queue (fifth layer) resumes with the deployments, not a reconcile pass later.
    queues = resume_released_queues(store, **prefect)
    if queues:
        outcome.message += "; resumed queue(s) " + ", ".join(str(q["name"]) for q in queues)
    if done["resumed"]:
        outcome.message += f"; resumed {', '.join(done['resumed'])}"
    if done["kept_paused"]:
        outcome.message += "; still paused by other halts: " + ", ".join(k["name"] for k in done["kept_paused"])


def paused_by(store: Ledger, halt_id: str) -> list[str]:
    """Deployments (flow/deployment names) this halt paused, from its enforcement events."""
    from tasks.ledger.events import HaltApplied, HaltReconciled

    names: list[str] = []
    for ev in store.events(subject=halt_id):
        if ev.kind in (HaltApplied.KIND, HaltReconciled.KIND):
            names.extend(str(n) for n in ev.payload.get("paused") or [])
    return list(dict.fromkeys(names))


def resume_halt_deployments(store: Ledger, halt_id: str, *, api_url: str | None = None,
                            scaling_tag: str | None = None, names: Sequence[str] | None = None) -> dict[str, Any]:
    """Resume the deployments `halt_id` paused that no other open halt still covers.
    Raises on a Prefect failure (the caller records it)."""
    wanted = paused_by(store, halt_id)
    result: dict[str, Any] = {"resumed": [], "kept_paused": [], "not_paused": [], "not_found": []}
    if not wanted:
        return result
    from uuid import UUID

    from tasks.enforcement.apply import with_retries
    from tasks.enforcement.enforce import halts_covering_deployment, targets_of
    from tasks.enforcement.prefect_api import list_scaling_deployments, prefect_client
    from tasks.enforcement.settings import enforcement_settings

    cfg = enforcement_settings(scaling_tag=scaling_tag, names=names)
    others = targets_of(h for h in store.halts("open") if h.halt_id != halt_id)

    def one_pass() -> dict[str, Any]:
        out: dict[str, Any] = {"resumed": [], "kept_paused": [], "not_paused": [], "not_found": []}
        with prefect_client(api_url) as client:
            deployments = list_scaling_deployments(client, cfg.scaling_tag, [*cfg.names, *wanted])
            by_name = {d.full_name: d for d in deployments}
            for name in wanted:
                dep = by_name.get(name)
                if dep is None:
                    out["not_found"].append(name)
                    continue
                covering = halts_covering_deployment(dep, others)
                if covering:
                    out["kept_paused"].append({"name": name, "halts": covering})
                elif not dep.paused:
                    out["not_paused"].append(name)
                else:
                    client.resume_deployment(UUID(dep.id))
                    out["resumed"].append(name)
        return out

    result, _ = with_retries(one_pass, attempts=3, backoff_s=0.5)
    return result


def handle_recorded_vote(outcome: VoteOutcome, *, ledger: Ledger, settings: Any = None, policy: Policy | None = None,
                         roster: Roster | None = None, dispatcher: Dispatcher | None = None, lift: bool = True,
                         notify: bool = True, **lift_kwargs: Any) -> LiftOutcome | None:
    """After a vote is recorded: tell people, and lift if it completed the quorum. The heavy
    half of an approval (the approval service runs it after answering Slack)."""
    if not outcome.ok or outcome.seq is None:
        return None
    if notify:
        from tasks.notify import messages

        tally_dict = outcome.tally.to_dict() if outcome.tally else None
        _notify(dispatcher, ledger, settings,
                lambda: messages.vote_recorded(outcome.halt_id, outcome.seq or 0, outcome.payload, tally_dict,
                                               outcome.required_safeguards), outcome.halt_id)
    if lift and outcome.tally is not None and outcome.tally.satisfied:
        return try_lift(outcome.halt_id, ledger=ledger, settings=settings, policy=policy, roster=roster,
                        dispatcher=dispatcher, notify=notify, trigger=f"vote {outcome.seq} via {outcome.payload.get('channel')}",
                        **lift_kwargs)
    return None


__all__ = ["LiftOutcome", "handle_recorded_vote", "paused_by",
           "resume_halt_deployments", "try_lift", "verify"]
