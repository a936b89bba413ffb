"""The evaluation lag bound at work: the gate's dead-man's switch.

Where it is checked: in the scaling gate (tasks/gate.py), before every step a trainer takes.
That check is the one thing guaranteed to run whatever else has died (the watcher, the
evaluation workers, the Prefect server, a credential): it needs only the ledger and the
trainer. Trainers report each checkpoint they write (`ScalingGate.checkpoint_written`, a
`checkpoint.written` event); the gate compares those reports with the run's determinations
(`policy.lag.assess_lag`) against the policy's bound and, once the run is past it, opens the
run's `evaluation_overdue` halt through the one halt composition (record, apply, notify),
then refuses the step. A new run of the same training run meets the same halt at its start.

Lifting: an overdue halt lifts by itself once every checkpoint its run reported has a
determination. The gate checks that (a restarted trainer), and so does every reconcile
pass (watch ticks, serve, `rsp halt reconcile`), so a halt whose trainer has stopped still
lifts when evaluation catches up. The lift is `evaluation.caught_up` and `halt.lifted`
(`automatic: true`, no approvers) written in one transaction; then the deployments the halt
paused are resumed and people are told. No other cause lifts this way: `lift_caught_up`
refuses any halt that is not `evaluation_overdue`.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from policy.halts import overdue_ref, overdue_run
from policy.lag import LagBound, LagVerdict, WrittenCheckpoint, assess_lag

if TYPE_CHECKING:
    from policy.schema import Policy
    from tasks.enforcement.halting import HaltOutcome
    from tasks.ledger import Halt, Ledger

log = logging.getLogger("rsp.overdue")
AUTO_LIFT_TRIGGER = "evaluation caught up"


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def read_bound(policy: Policy | str | None = None) -> tuple[Policy, LagBound]:
    """The policy (a Policy, a bundled id or file; None: settings' policy) and its lag bound."""
    if policy is None:
        from tasks.settings import get_settings

        policy = get_settings().policy
    if isinstance(policy, str):
        from tasks.inputs import read_policy

        policy = read_policy(policy)
    return policy, LagBound.of(policy)


class RunLagTracker:
    """What the ledger says about one run's lag, kept current incrementally: `refresh` reads only
    the checkpoint reports appended since the last one, plus one indexed read of the run's last
    determined step. The gate keeps one per run and refreshes it when the ledger head moves."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.seen_head: int | None = None
        self._after_seq = 0
        self._written: dict[int, dt.datetime] = {}
        self._newest: int | None = None
        self.last_determined_step: int | None = None
        self._determined: set[int] = set()

    def refresh(self, ledger: Ledger) -> None:
        from tasks.ledger.events import CheckpointWritten

        for event in ledger.iter_events(kind=CheckpointWritten.KIND, subject=self.run_id, after_seq=self._after_seq):
            step = event.payload.get("step")
            if isinstance(step, int) and not isinstance(step, bool) and step not in self._written:
                self._written[step] = dt.datetime.fromisoformat(event.ts)
                self._newest = step if self._newest is None else max(self._newest, step)
            self._after_seq = event.seq
        self.last_determined_step = ledger.last_determined_step(self.run_id)
        self._determined = ledger.determined_steps(self.run_id) if self._written else set()

    @property
    def unevaluated(self) -> int:
        return sum(1 for step in self._written if step not in self._determined)

    @property
    def caught_up(self) -> bool:
        return self.unevaluated == 0

    @property
    def newest_step(self) -> int | None:
        return self._newest

    def verdict(self, bound: LagBound, now: dt.datetime) -> LagVerdict:
        # Only what can matter: the checkpoints past the last determination, and the newest one
        # (cheap before every step however long the run's history).
        newest = self.newest_step
        written = [WrittenCheckpoint(step, at) for step, at in self._written.items()
                   if step not in self._determined or step == newest]
        return assess_lag(self.run_id, bound, written, self.last_determined_step, now, determined=self._determined)


def run_lag(ledger: Ledger, run_id: str, bound: LagBound, now: dt.datetime | None = None) -> LagVerdict:
    tracker = RunLagTracker(run_id)
    tracker.refresh(ledger)
    return tracker.verdict(bound, now or utc_now())


def halt_overdue(
    verdict: LagVerdict,
    *,
    ledger: Ledger,
    policy: Policy | None,
    opened_by: str = "scaling-gate",
    spare_runs: Sequence[str] = (),
) -> HaltOutcome:
    """Open (or find) the run's `evaluation_overdue` halt through the one halt composition: record,
    apply to Prefect (sparing `spare_runs`, the flow run that is stopping itself), notify."""
    from tasks.enforcement.apply import apply_halt
    from tasks.enforcement.halting import PLAIN_STEPS, HaltRequest, HaltSteps, open_and_enforce

    if not verdict.overdue:
        raise ValueError(f"run {verdict.run_id} is within its evaluation lag bound; nothing to halt")
    request = HaltRequest(overdue=overdue_ref(verdict), reason="; ".join(verdict.reasons), activities=["training"],
                          runs=[verdict.run_id], opened_by=opened_by)
    steps = HaltSteps(apply=functools.partial(apply_halt, spare_runs=tuple(spare_runs))) if spare_runs else PLAIN_STEPS
    return open_and_enforce(request, ledger=ledger, policy=policy, steps=steps)


def lift_caught_up(
    ledger: Ledger,
    halt: Halt,
    tracker: RunLagTracker,
    *,
    checked_by: str,
    api_url: str | None = None,
    scaling_tag: str | None = None,
    names: Sequence[str] | None = None,
    notify: bool = True,
) -> bool:
    """Lift an open `evaluation_overdue` halt whose run has caught up (every reported checkpoint has a
    determination): True when this call lifted it. Refuses (ValueError) any other cause: nothing
    else lifts without approvals."""
    from tasks.ledger import HaltConflict
    from tasks.ledger.events import EvaluationCaughtUp, HaltLifted

    run_id = overdue_run(halt.payload)
    if run_id is None:
        raise ValueError(f"halt {halt.halt_id} is not an evaluation_overdue halt; only that cause lifts "
                         "without approvals")
    if run_id != tracker.run_id:
        raise ValueError(f"halt {halt.halt_id} stops run {run_id!r}, not {tracker.run_id!r}")
    if not halt.is_open or not tracker.caught_up:
        return False
    try:
        ledger.record_many([
            (EvaluationCaughtUp(halt_id=halt.halt_id, run_id=run_id, last_determined_step=tracker.last_determined_step,
                                newest_step=tracker.newest_step, unevaluated=0, checked_by=checked_by), halt.halt_id),
            (HaltLifted(halt_id=halt.halt_id, trigger=AUTO_LIFT_TRIGGER, approvers=[], automatic=True),
             halt.halt_id),
        ])
    except HaltConflict:
        return False  # lifted meanwhile by another gate or reconciler (or by approvers)
    log.info("halt %s lifted: run %s caught up (determinations through step %s)", halt.halt_id, run_id,
             tracker.last_determined_step)
    resumed = _resume(ledger, halt.halt_id, api_url=api_url, scaling_tag=scaling_tag, names=names)
    if notify:
        _notify_lifted(ledger, halt.halt_id, run_id, tracker.last_determined_step, resumed)
    return True


def lift_caught_up_halts(
    ledger: Ledger,
    *,
    checked_by: str = "reconcile",
    api_url: str | None = None,
    scaling_tag: str | None = None,
    names: Sequence[str] | None = None,
    notify: bool = True,
) -> list[str]:
    """Lift every open `evaluation_overdue` halt whose run has caught up; the halt ids lifted. Called
    by every reconcile pass, so the halt lifts even when its trainer has stopped for good."""
    lifted = []
    for halt in ledger.halts("open"):
        run_id = overdue_run(halt.payload)
        if run_id is None:
            continue
        tracker = RunLagTracker(run_id)
        tracker.refresh(ledger)
        if lift_caught_up(ledger, halt, tracker, checked_by=checked_by, api_url=api_url, scaling_tag=scaling_tag,
                          names=names, notify=notify):
            lifted.append(halt.halt_id)
    return lifted


def _resume(ledger: Ledger, halt_id: str, *, api_url: str | None, scaling_tag: str | None,
            names: Sequence[str] | None) -> list[str]:
    """Resume the deployments this halt paused (none are resumed that another open halt covers)."""
    from tasks.approvals.lift import resume_halt_deployments
    from tasks.enforcement.prefect_api import short_error
    from tasks.ledger.events import HaltDeploymentsResumed, HaltResumeFailed

    try:
        done = resume_halt_deployments(ledger, halt_id, api_url=api_url, scaling_tag=scaling_tag, names=names)
    except Exception as exc:  # noqa: BLE001 - the halt is lifted (gate open); what is left is recorded
        ledger.record(HaltResumeFailed(halt_id=halt_id, error=short_error(exc)), halt_id)
        return []
    ledger.record(HaltDeploymentsResumed(halt_id=halt_id, **done), halt_id)
    from tasks.enforcement.queues import resume_released_queues

    resume_released_queues(ledger, api_url=api_url, scaling_tag=scaling_tag, names=names)
    return list(done["resumed"])


def _notify_lifted(ledger: Ledger, halt_id: str, run_id: str, frontier: int | None, resumed: list[str]) -> None:
    try:
        from tasks.ledger.events import HaltLifted
        from tasks.notify.base import Notification
        from tasks.notify.dispatch import notify

        text = (f"Run {run_id} caught up: every checkpoint it reported has a determination (through step "
                f"{frontier}). The evaluation_overdue halt lifted by itself (no approval needed); the scaling "
                "gate is open again for this run.")
        if resumed:
            text += f"\nDeployments resumed: {', '.join(resumed)}"
        facts: dict[str, Any] = {"run_id": run_id, "last_determined_step": frontier, "automatic": True,
                                 "resumed": resumed}
        notify(Notification(halt_id=halt_id, event=HaltLifted.KIND, event_key=HaltLifted.KIND,
                            title=f"Halt {halt_id} LIFTED: evaluation caught up", text=text, facts=facts,
                            severity="info"), ledger=ledger)
    except Exception:
        log.exception("halt %s: lift notification failed", halt_id)


__all__ = [
    "AUTO_LIFT_TRIGGER",
    "RunLagTracker",
    "halt_overdue",
    "lift_caught_up",
    "lift_caught_up_halts",
    "read_bound",
    "run_lag",
]
