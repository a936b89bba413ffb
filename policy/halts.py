"""Halt records: what a halt stops, why, and what lifts it, as plain data (no Prefect, no I/O).

A halt lives in the ledger as the payload of its `halt.opened` event. This module
builds that payload from a determination (or an operator's manual halt), derives the
cause key that keeps halting idempotent, and answers "does this halt cover run R doing
activity A?" for the gate and for enforcement.

Reading is fail-closed: a halt payload this code cannot understand (written by an older
version, or by hand) covers every activity of every run.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

if TYPE_CHECKING:
    from policy.lag import LagVerdict

ACTIVITIES: tuple[str, ...] = ("training", "deployment")
ALL_RUNS = "*"


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HaltScope(_Data):
    """What is halted: activities, and which scaling runs (["*"]: every one)."""

    activities: tuple[Literal["training", "deployment"], ...]
    runs: tuple[str, ...] = (ALL_RUNS,)

    @field_validator("activities")
    @classmethod
    def _some_activity(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("a halt must stop at least one activity (training, deployment)")
        return tuple(a for a in ACTIVITIES if a in set(value))  # canonical order, no duplicates

    @field_validator("runs")
    @classmethod
    def _some_run(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or any(not r for r in value):
            raise ValueError("runs must be a non-empty list of run ids, or ['*'] for every scaling run")
        return (ALL_RUNS,) if ALL_RUNS in value else tuple(sorted(set(value)))

    @property
    def all_runs(self) -> bool:
        return self.runs == (ALL_RUNS,)


class DeterminationRef(_Data):
    """Which determination caused the halt: where it is in the ledger and what it said."""

    seq: int | None = None
    subject: str | None = None
    policy_id: str | None = None
    policy_version: str | None = None
    policy_sha256: str | None = None
    required_level: str | None = None
    run_id: str | None = None
    step: int | None = None
    unmet_safeguards: tuple[str, ...] = ()


class HaltCause(_Data):
    kind: Literal["determination", "manual", "evaluation_overdue"]
    reasons: tuple[str, ...]
    determination: DeterminationRef | None = None


class OverdueRef(_Data):
    """Why a run is overdue: its lag against the policy's bound when the gate closed (policy.lag)."""

    run_id: str
    unevaluated: int
    oldest_unevaluated_step: int | None
    oldest_unevaluated_at: str | None
    newest_step: int | None
    last_determined_step: int | None
    lag_s: float
    max_unevaluated_checkpoints: int
    max_evaluation_lag_s: float
    bound_stated: bool


class OverdueCause(HaltCause):
    """An `evaluation_overdue` halt: the run got further ahead of its last determination than the
    policy allows (detection or evaluation stopped, or fell behind)."""

    kind: Literal["evaluation_overdue"] = "evaluation_overdue"
    overdue: OverdueRef


class Approvals(_Data):
    roles: tuple[str, ...]
    quorum: int
    must_include: tuple[str, ...] = ()


class LiftRequirements(_Data):
    """What lifts the halt: every listed safeguard verified met, plus recorded approvals.

    `approvals` is None when the policy that decided was not available when the halt was
    opened: the resume flow must then take the approver rules from that policy (by sha256)."""

    safeguards: tuple[str, ...] = ()
    approvals: Approvals | None = None
    policy_sha256: str | None = None


AUTO_LIFT: Literal["evaluation_caught_up"] = "evaluation_caught_up"


class AutomaticLift(LiftRequirements):
    """What lifts an overdue halt: the determinations catching up, with no approval. The only
    cause that lifts by itself (`lifts_automatically`); approvers may still lift it, but while
    the run is still overdue the gate opens the next one at its next check."""

    automatic: Literal["evaluation_caught_up"] = AUTO_LIFT


class HaltRecord(_Data):
    """The payload of a `halt.opened` ledger event."""

    halt_id: str
    cause_key: str
    what: HaltScope
    why: HaltCause
    lifts_when: LiftRequirements
    opened_by: str = "rsp"

    def covers(self, run_id: str, activity: str) -> bool:
        return scope_covers(self.what, run_id, activity)


class OverdueHaltRecord(HaltRecord):
    why: OverdueCause
    lifts_when: AutomaticLift


# -- cause keys and ids -----------------------------------------------------------------------------------


def _digest(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def determination_cause_base(
    policy_sha256: str, required_level: str, unmet_safeguards: Iterable[str], scope: HaltScope
) -> str:
    """The cause of a determination halt, before its epoch: the same policy, level, unmet
    safeguards and scope is the same cause, whichever checkpoint revealed it."""
    body = {
        "policy_sha256": policy_sha256,
        "required_level": required_level,
        "unmet": sorted(set(unmet_safeguards)),
        "activities": list(scope.activities),
        "runs": list(scope.runs),
    }
    return f"det:{_digest(body)[:32]}"


def cause_key(base: str, epoch: int) -> str:
    """A cause can open at most one halt, ever (the ledger enforces it); after that halt is
    lifted, the same cause coming back is a new epoch and may open a new halt."""
    return f"{base}#{epoch}"


def halt_id_for(key: str) -> str:
    return f"halt-{hashlib.sha256(key.encode('utf-8')).hexdigest()[:16]}"


def overdue_cause_base(run_id: str) -> str:
    """One cause per run: a run overdue again after its overdue halt lifted is the next epoch."""
    return f"overdue:{_digest({'run_id': run_id})[:32]}"


def _policy_sha(policy: Any | None) -> str | None:
    from policy.identity import policy_sha256

    return None if policy is None else policy_sha256(policy)


def manual_cause_key() -> str:
    # Each operator halt is its own cause: two operators halting for the same words are two decisions.
    return f"manual:{uuid.uuid4().hex}#0"


# -- building records -------------------------------------------------------------------------------------


def unmet_safeguards(determination: Any) -> tuple[str, ...]:
    """Required safeguards not verified `met`; all of them when verification has not run."""
    required = [r.id for r in determination.required_safeguards]
    if determination.safeguards is None:
        return tuple(sorted(required))
    met = {c.id for c in determination.safeguards if c.state == "met"}
    return tuple(sorted(r for r in required if r not in met))


def scope_for_determination(determination: Any, runs: Sequence[str] | None = None) -> HaltScope:
    activities = tuple(determination.halts)
    if not activities:
        # A halt decision that names no activity is a bug upstream; fail closed and stop both.
        activities = ACTIVITIES
    return HaltScope(activities=activities, runs=tuple(runs) if runs else (ALL_RUNS,))  # type: ignore[arg-type]


def approvals_from_policy(policy: Any | None) -> Approvals | None:
    if policy is None:
        return None
    a = policy.approvals
    return Approvals(roles=tuple(a.roles), quorum=a.quorum, must_include=tuple(a.must_include))


def record_for_determination(
    determination: Any,
    *,
    key: str,
    runs: Sequence[str] | None = None,
    seq: int | None = None,
    subject: str | None = None,
    policy: Any | None = None,
    opened_by: str = "halt-flow",
) -> HaltRecord:
    """The halt record for a determination whose decision is `halt`. `policy` (the Policy that
    decided, matched by sha256) supplies the approver rules; without it they stay None."""
    if determination.decision != "halt" and not determination.halts:
        raise ValueError("determination decided 'proceed': there is nothing to halt")
    scope = scope_for_determination(determination, runs)
    unmet = unmet_safeguards(determination)
    if policy is not None:
        from policy.identity import policy_sha256

        if policy_sha256(policy) != determination.policy.sha256:
            policy = None  # another version of the policy: its approver rules are not the ones that apply
    ckpt = determination.checkpoint
    ref = DeterminationRef(
        seq=seq,
        subject=subject,
        policy_id=determination.policy.id,
        policy_version=determination.policy.version,
        policy_sha256=determination.policy.sha256,
        required_level=determination.required_level,
        run_id=None if ckpt is None else ckpt.run_id,
        step=None if ckpt is None else ckpt.step,
        unmet_safeguards=unmet,
    )
    return HaltRecord(
        halt_id=halt_id_for(key),
        cause_key=key,
        what=scope,
        why=HaltCause(kind="determination", reasons=tuple(determination.decision_reasons), determination=ref),
        lifts_when=LiftRequirements(
            safeguards=unmet, approvals=approvals_from_policy(policy), policy_sha256=determination.policy.sha256
        ),
        opened_by=opened_by,
    )


def manual_record(
    reason: str,
    activities: Sequence[str],
    *,
    runs: Sequence[str] | None = None,
    opened_by: str = "operator",
    key: str | None = None,
    policy: Any | None = None,
) -> HaltRecord:
    if not reason.strip():
        raise ValueError("a manual halt needs a reason")
    key = key or manual_cause_key()
    scope = HaltScope(activities=tuple(activities), runs=tuple(runs) if runs else (ALL_RUNS,))  # type: ignore[arg-type]
    sha = _policy_sha(policy)
    return HaltRecord(
        halt_id=halt_id_for(key),
        cause_key=key,
        what=scope,
        why=HaltCause(kind="manual", reasons=(reason.strip(),)),
        lifts_when=LiftRequirements(safeguards=(), approvals=approvals_from_policy(policy), policy_sha256=sha),
        opened_by=opened_by,
    )


def overdue_ref(verdict: LagVerdict) -> OverdueRef:
    b = verdict.bound
    return OverdueRef(
        run_id=verdict.run_id,
        unevaluated=verdict.unevaluated,
        oldest_unevaluated_step=verdict.oldest_unevaluated_step,
        oldest_unevaluated_at=None if verdict.oldest_unevaluated_at is None
        else verdict.oldest_unevaluated_at.isoformat(),
        newest_step=verdict.newest_step,
        last_determined_step=verdict.last_determined_step,
        lag_s=round(verdict.lag.total_seconds(), 3),
        max_unevaluated_checkpoints=b.max_unevaluated_checkpoints,
        max_evaluation_lag_s=b.max_evaluation_lag.total_seconds(),
        bound_stated=b.stated,
    )


def overdue_record(
    overdue: OverdueRef,
    reasons: Sequence[str],
    *,
    key: str,
    policy: Any | None = None,
    opened_by: str = "scaling-gate",
) -> OverdueHaltRecord:
    """The halt record of a run that is past the policy's evaluation lag bound: it stops that run's
    training (a deployment of an evaluated checkpoint is not what lags) and lifts by itself."""
    sha = _policy_sha(policy)
    return OverdueHaltRecord(
        halt_id=halt_id_for(key),
        cause_key=key,
        what=HaltScope(activities=("training",), runs=(overdue.run_id,)),
        why=OverdueCause(reasons=tuple(reasons) or ("evaluation overdue",), overdue=overdue),
        lifts_when=AutomaticLift(safeguards=(), approvals=approvals_from_policy(policy), policy_sha256=sha),
        opened_by=opened_by,
    )


# -- reading records back (fail closed) -------------------------------------------------------------------


def scope_of(payload: Mapping[str, Any]) -> HaltScope:
    """The scope of a halt.opened payload; everything when the payload does not say clearly."""
    what = payload.get("what")
    if isinstance(what, Mapping):
        try:
            return HaltScope.model_validate(dict(what))
        except ValueError:
            pass
    return HaltScope(activities=ACTIVITIES, runs=(ALL_RUNS,))  # type: ignore[arg-type]


def scope_covers(scope: HaltScope, run_id: str, activity: str) -> bool:
    # An activity we do not know is treated as training: the thing a halt most often stops.
    act = activity if activity in ACTIVITIES else "training"
    return act in scope.activities and (scope.all_runs or run_id in scope.runs)


def lifts_automatically(payload: Mapping[str, Any]) -> bool:
    """Only an `evaluation_overdue` halt lifts without approvals (when the determinations catch up)."""
    why, lifts = payload.get("why"), payload.get("lifts_when")
    return (isinstance(why, Mapping) and why.get("kind") == "evaluation_overdue"
            and isinstance(lifts, Mapping) and lifts.get("automatic") == AUTO_LIFT)


def overdue_run(payload: Mapping[str, Any]) -> str | None:
    """The run an `evaluation_overdue` halt stopped; None for any other halt."""
    if not lifts_automatically(payload):
        return None
    overdue = payload["why"].get("overdue")
    run = overdue.get("run_id") if isinstance(overdue, Mapping) else None
    return run if isinstance(run, str) and run else None


def describe_lift(payload: Mapping[str, Any]) -> str:
    """One line: what lifts this halt."""
    lifts = payload.get("lifts_when")
    if not isinstance(lifts, Mapping):
        return "see the halt record; lifting needs verified safeguards and approvals per the policy"
    run = overdue_run(payload)
    if run is not None:
        return (f"lifts by itself once every checkpoint run {run} reported has a determination (restart the "
                "watcher and evaluation); no approval needed")
    parts = []
    safeguards = lifts.get("safeguards") or []
    if safeguards:
        parts.append("safeguards verified met: " + ", ".join(str(s) for s in safeguards))
    approvals = lifts.get("approvals")
    if isinstance(approvals, Mapping):
        text = f"{approvals.get('quorum')} approval(s) from roles {', '.join(approvals.get('roles') or [])}"
        if approvals.get("must_include"):
            text += f" including {', '.join(approvals['must_include'])}"
        parts.append(text)
    else:
        parts.append("approvals per the policy's approver rules")
    return "; ".join(parts)


def describe_cause(payload: Mapping[str, Any]) -> str:
    why = payload.get("why")
    if not isinstance(why, Mapping):
        return str(payload.get("reason") or payload.get("cause_key") or "unknown cause")
    reasons = "; ".join(str(r) for r in why.get("reasons") or []) or "no reason recorded"
    det = why.get("determination")
    if why.get("kind") == "determination" and isinstance(det, Mapping):
        where = f"{det.get('run_id')}@{det.get('step')}" if det.get("run_id") else "a determination"
        return f"determination for {where} requires {det.get('required_level')}: {reasons}"
    if why.get("kind") == "evaluation_overdue":
        overdue = why.get("overdue")
        run = overdue.get("run_id") if isinstance(overdue, Mapping) else None
        return f"evaluation overdue for run {run}: {reasons}"
    return f"{why.get('kind', 'manual')} halt: {reasons}"


__all__ = [
    "ACTIVITIES",
    "ALL_RUNS",
    "AUTO_LIFT",
    "Approvals",
    "AutomaticLift",
    "DeterminationRef",
    "HaltCause",
    "HaltRecord",
    "HaltScope",
    "LiftRequirements",
    "OverdueCause",
    "OverdueHaltRecord",
    "OverdueRef",
    "approvals_from_policy",
    "cause_key",
    "describe_cause",
    "describe_lift",
    "determination_cause_base",
    "halt_id_for",
    "lifts_automatically",
    "manual_record",
    "overdue_cause_base",
    "overdue_record",
    "overdue_ref",
    "overdue_run",
    "record_for_determination",
    "scope_covers",
    "scope_of",
    "unmet_safeguards",
]
