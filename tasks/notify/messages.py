"""What each step of a halt says: Notifications built from the ledger (the one source of truth).

Builders read the halt record, the determination that caused it (thresholds with values
and intervals, safeguard states) and the approval state, and return a `Notification`
every backend can render. Nothing here sends anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tasks.notify.base import Notification

if TYPE_CHECKING:
    from tasks.ledger import Halt, Ledger

MAX_THRESHOLDS = 12


def _obj(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def thresholds_crossed(determination: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Gating thresholds that are crossed or undetermined (fail closed: undetermined counts),
    each with the measure that decided it: value, interval, threshold."""
    if not determination:
        return []
    out: list[dict[str, Any]] = []
    for t in determination.get("thresholds") or []:
        if not isinstance(t, Mapping) or t.get("status") not in ("crossed", "undetermined"):
            continue
        if t.get("gating") is False:
            continue
        measures = [m for m in t.get("measures") or [] if isinstance(m, Mapping)]
        deciding = next((m for m in measures if m.get("status") == t.get("status")), measures[0] if measures else None)
        row: dict[str, Any] = {"id": t.get("id"), "name": t.get("name"), "status": t.get("status"),
                               "reason": t.get("reason")}
        if deciding is not None:
            row.update({k: deciding.get(k) for k in ("benchmark", "metric", "value", "ci_low", "ci_high",
                                                      "threshold", "comparison")})
        out.append(row)
    return out[:MAX_THRESHOLDS]


def safeguards_missing(payload: Mapping[str, Any], determination: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    lifts = payload.get("lifts_when")
    ids = list(lifts.get("safeguards") or []) if isinstance(lifts, Mapping) else []
    checks = {c.get("id"): c for c in (determination or {}).get("safeguards") or [] if isinstance(c, Mapping)}
    return [{"id": s, "state": (checks.get(s) or {}).get("state", "unmet"),
             "evidence": (checks.get(s) or {}).get("evidence", "not verified")} for s in ids]


def _scope(payload: Mapping[str, Any]) -> str:
    from policy.halts import scope_of

    scope = scope_of(payload)
    runs = "every scaling run" if scope.all_runs else "runs " + ", ".join(scope.runs)
    return f"{' and '.join(scope.activities)} for {runs}"


def _enforcement(apply_report: Mapping[str, Any] | None) -> str | None:
    if not apply_report:
        return None
    if apply_report.get("applied"):
        return (f"applied: {len(apply_report.get('paused') or [])} deployment(s) paused, "
                f"{len(apply_report.get('already_paused') or [])} already paused, "
                f"{len(apply_report.get('cancelled') or [])} run(s) cancelled; the gate is closed")
    return f"NOT applied to Prefect ({apply_report.get('error')}); the gate is closed all the same"


def _last_apply(ledger: Ledger, halt_id: str) -> dict[str, Any] | None:
    from tasks.ledger.events import HaltApplied, HaltApplyFailed

    events = [e for e in ledger.events(subject=halt_id) if e.kind in (HaltApplied.KIND, HaltApplyFailed.KIND)]
    if not events:
        return None
    last = events[-1]
    p = dict(last.payload)
    return {"applied": last.kind == HaltApplied.KIND, "paused": p.get("paused") or [],
            "already_paused": p.get("already_paused") or [], "cancelled": p.get("cancelled") or [],
            "error": p.get("error")}


def status_line(ledger: Ledger, halt: Halt) -> tuple[str, bool]:
    """(where the halt stands in one line, whether Approve/Reject still make sense)."""
    if not halt.is_open:
        lp = halt.lift_payload or {}
        who = ", ".join(lp.get("approvers") or []) or "the approvers"
        return f"LIFTED at {halt.lifted_at}: approved by {who}; safeguards verified", False
    try:
        from tasks.approvals.state import approval_state

        state = approval_state(ledger, halt)
    except Exception as exc:  # noqa: BLE001 - a status line must never stop a notification
        return f"OPEN (approval state unavailable: {exc})", True
    if state.tally is None:
        return f"OPEN — approver rules unavailable: {state.rules_problem}", True
    if state.tally.rejected:
        return (f"OPEN — round {state.round} rejected by {state.tally.rejected_by}; the halt stays. "
                f"A new request: `rsp approve {halt.halt_id} --as PERSON --key PATH -j TEXT --new-round`"), False
    line = f"OPEN — round {state.round}: {state.tally.summary()}"
    if state.last_refusal:
        line += f". Last lift attempt refused: {state.last_refusal}"
    return line, True


def opened(ledger: Ledger, halt: Halt, *, apply_report: Mapping[str, Any] | None = None,
           flow_run_link: str | None = None, with_status: bool = False) -> Notification:
    from policy.halts import describe_cause, describe_lift
    from tasks.enforcement.halts import determination_of
    from tasks.ledger.events import HaltOpened

    payload = halt.payload
    det = determination_of(ledger, payload)
    ref = _obj(_obj(payload.get("why")).get("determination"))
    level = (det or {}).get("required_level") or ref.get("required_level")
    ckpt = _obj((det or {}).get("checkpoint"))
    checkpoint = (f"{ckpt.get('run_id')} step {ckpt.get('step')} ({_fmt_flop(ckpt.get('effective_compute'))})"
                  if ckpt.get("run_id") else (f"{ref.get('run_id')} step {ref.get('step')}" if ref.get("run_id")
                                              else None))
    pol = _obj((det or {}).get("policy"))
    policy = f"{pol.get('id')} v{pol.get('version')}" if pol.get("id") else (
        f"{ref.get('policy_id')} v{ref.get('policy_version')}" if ref.get("policy_id") else None)
    report = apply_report if apply_report is not None else _last_apply(ledger, halt.halt_id)
    missing = safeguards_missing(payload, det)
    facts: dict[str, Any] = {
        "halt_id": halt.halt_id,
        "cause": describe_cause(payload),
        "scope": _scope(payload),
        "required_level": level,
        "checkpoint": checkpoint,
        "policy": policy,
        "thresholds": thresholds_crossed(det),
        "safeguards_missing": missing,
        "lifts_when": describe_lift(payload),
        "enforcement": _enforcement(report),
        "links": {"flow_run": flow_run_link} if flow_run_link else {},
        "opened_at": halt.opened_at,
    }
    actions = halt.is_open
    if with_status:
        facts["status_line"], actions = status_line(ledger, halt)
    lines = [f"Cause: {facts['cause']}", f"Stops: {facts['scope']}"]
    if level:
        lines.append(f"Required level: {level}")
    for t in facts["thresholds"]:
        interval = f" [{t.get('ci_low')}, {t.get('ci_high')}]" if t.get("ci_low") is not None else ""
        lines.append(f"Threshold {t['id']}: {t['status']} ({t.get('benchmark')} = {t.get('value')}{interval}, "
                     f"threshold {t.get('threshold')})")
    if missing:
        lines.append("Safeguards missing: " + ", ".join(f"{s['id']} ({s['state']})" for s in missing))
    lines.append(f"Lifts when: {facts['lifts_when']}")
    if facts["enforcement"]:
        lines.append(f"Enforcement: {facts['enforcement']}")
    if flow_run_link:
        lines.append(f"Flow run: {flow_run_link}")
    lines.append(f"Approve: rsp approve {halt.halt_id} --as PERSON --key PATH --justification TEXT (a signed vote; "
                 "or the Slack buttons)")
    title = f"Scaling HALTED{f' ({level} required)' if level else ''}: {halt.halt_id}"
    return Notification(halt_id=halt.halt_id, event=HaltOpened.KIND, event_key=HaltOpened.KIND, title=title,
                        text="\n".join(lines), facts=facts, actions=actions, severity="critical")


def _fmt_flop(value: Any) -> str:
    return f"{value:.3g} FLOP" if isinstance(value, (int, float)) else "compute n/a"


def applied(halt_id: str, apply_report: Mapping[str, Any]) -> Notification:
    from tasks.ledger.events import HaltApplied, HaltApplyFailed

    ok = bool(apply_report.get("applied"))
    event = HaltApplied.KIND if ok else HaltApplyFailed.KIND
    text = _enforcement(apply_report) or ""
    if ok and apply_report.get("paused"):
        text += "\nPaused: " + ", ".join(str(p.get("name") if isinstance(p, Mapping) else p)
                                         for p in apply_report["paused"])
    return Notification(halt_id=halt_id, event=event, event_key=event,
                        title=f"Halt {halt_id} {'applied' if ok else 'NOT applied to Prefect'}", text=text,
                        facts={"apply": dict(apply_report)}, severity="info" if ok else "warning")


def vote_recorded(halt_id: str, seq: int, vote: Mapping[str, Any], tally: Mapping[str, Any] | None,
                  required_safeguards: Sequence[str] = ()) -> Notification:
    from tasks.ledger.events import VoteRecorded

    verb = "approved" if vote.get("decision") == "approve" else "rejected"
    dup = " (again; counts once)" if vote.get("duplicate") else ""
    text = (f"{vote.get('person')} ({', '.join(vote.get('roles') or [])}) {verb} via {vote.get('channel')}{dup}: "
            f"{vote.get('justification')}")
    if tally:
        if tally.get("rejected_by"):
            text += f"\nRound {vote.get('round')} is closed: rejected by {tally['rejected_by']}; the halt stays."
        elif tally.get("satisfied"):
            text += f"\nQuorum reached ({', '.join(tally.get('approvers') or [])}); verifying safeguards before lifting."
        else:
            text += (f"\n{len(tally.get('approvers') or [])}/{tally.get('quorum')} approvals; "
                     f"{tally.get('needed')} more needed")
            if tally.get("missing_roles"):
                text += f", including {' and '.join(tally['missing_roles'])}"
    if required_safeguards:
        text += f"\nSafeguards that must verify before lifting: {', '.join(required_safeguards)}"
    return Notification(halt_id=halt_id, event=VoteRecorded.KIND, event_key=f"{VoteRecorded.KIND}:{seq}",
                        title=f"Vote on {halt_id}: {vote.get('person')} {verb}", text=text,
                        facts={"vote": dict(vote), "tally": dict(tally or {})},
                        severity="warning" if verb == "rejected" else "info")


def lift_refused(halt_id: str, seq: int, payload: Mapping[str, Any]) -> Notification:
    from tasks.ledger.events import HaltLiftRefused

    missing = payload.get("missing") or []
    lines = [f"{payload.get('reason')}"]
    for m in missing:
        lines.append(f"- {m.get('id')} ({m.get('state')}): {m.get('evidence')}")
    return Notification(halt_id=halt_id, event=HaltLiftRefused.KIND, event_key=f"{HaltLiftRefused.KIND}:{seq}",
                        title=f"Halt {halt_id} NOT lifted", text="\n".join(lines), facts=dict(payload),
                        severity="warning")


def lifted(halt_id: str, payload: Mapping[str, Any], resumed: Sequence[str] = ()) -> Notification:
    from tasks.ledger.events import HaltLifted

    verified = ", ".join(payload.get("verification", {}).keys()) or "none required"
    text = (f"Approved by {', '.join(payload.get('approvers') or [])} (round {payload.get('round')}); "
            f"safeguards verified: {verified}. The scaling gate is open again.")
    if resumed:
        text += f"\nDeployments resumed: {', '.join(resumed)}"
    return Notification(halt_id=halt_id, event=HaltLifted.KIND, event_key=HaltLifted.KIND,
                        title=f"Halt {halt_id} LIFTED", text=text,
                        facts={"approvers": list(payload.get("approvers") or []), "resumed": list(resumed)},
                        severity="info")


def wait_timed_out(halt_id: str, seq: int, payload: Mapping[str, Any]) -> Notification:
    from tasks.ledger.events import ApprovalWaitTimedOut

    return Notification(
        halt_id=halt_id, event=ApprovalWaitTimedOut.KIND, event_key=f"{ApprovalWaitTimedOut.KIND}:{seq}",
        title=f"Prefect UI approval wait for {halt_id} timed out",
        text=(f"Flow run {payload.get('flow_run_id')} waited {payload.get('waited_s')} s for approvals. "
              "A timeout never approves: the halt stays until the ledger holds a quorum and verified safeguards."),
        facts=dict(payload), severity="warning")


__all__ = [
    "applied",
    "lift_refused",
    "lifted",
    "opened",
    "safeguards_missing",
    "status_line",
    "thresholds_crossed",
    "vote_recorded",
    "wait_timed_out",
]
