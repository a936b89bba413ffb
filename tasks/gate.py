"""The scaling gate: the check every scaling flow makes at start and before every step.

Plain Python over the ledger, usable in or out of Prefect:

    from tasks.gate import ScalingGate, ScalingHalted
    gate = ScalingGate()                 # the configured ledger (and RSP_LEDGER_ID, if set)
    for step in ...:
        gate.check(run_id)               # raises ScalingHalted while an open halt covers run_id
        train_one_step()
        write_checkpoint(step)
        gate.checkpoint_written(run_id, step, uri=...)   # what the evaluation lag bound counts

This, not a paused Prefect deployment, is what stops a run: a run started by hand, by an
automation, after a serve restart, or by calling the flow function directly all pass
through it. It is cheap enough for every step: the open halts are cached and revalidated
with one indexed read of the ledger head (the sequence number moves on every append, so
a halt opened or lifted by any process is seen at the next check).

It is also the dead-man's switch (tasks/enforcement/overdue.py): the checkpoints a trainer
reports are compared with the run's determinations, and a run further ahead of its last
determination than the policy allows (`cadence.max_unevaluated_checkpoints`,
`cadence.max_evaluation_lag`) gets an `evaluation_overdue` halt, recorded, applied and
notified like any halt, then refused. So when detection or evaluation stops (a crashed
watcher, a wedged server, an expired credential) scaling stops too, with nothing but the
trainer and the ledger left running. The halt lifts by itself once the determinations
catch up (checked here and by every reconcile pass).

Fail closed: if the ledger cannot be read the gate raises `GateUnavailable` (a
`ScalingHalted`), and a halt record it cannot understand covers every run. The gate never
creates a ledger: no ledger at its URL (a mistyped URL, a trainer started from another
folder) closes it, and so does a ledger whose identity is not the one it is pinned to
(`ledger_id=` or RSP_LEDGER_ID; `rsp init` prints it). So is a policy it cannot read, since
then it cannot know the lag bound.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from policy.halts import (
    HaltScope,
    describe_cause,
    describe_lift,
    lifts_automatically,
    overdue_run,
    scope_covers,
    scope_of,
)

if TYPE_CHECKING:
    from policy.lag import LagBound, LagVerdict
    from policy.schema import Policy
    from tasks.enforcement.overdue import RunLagTracker
    from tasks.ledger import Ledger


class ScalingHalted(RuntimeError):
    """Scaling is halted for this run and activity. The message says by which halt, why,
    and what lifts it."""

    def __init__(self, message: str, *, halt_id: str | None = None, run_id: str | None = None,
                 activity: str | None = None) -> None:
        super().__init__(message)
        self.halt_id = halt_id
        self.run_id = run_id
        self.activity = activity

    def __reduce__(self) -> tuple[Any, ...]:
        # Picklable with its fields: Prefect carries a flow's exception across processes.
        return (_rebuild, (type(self), str(self), self.halt_id, self.run_id, self.activity))


def _rebuild(cls: type[ScalingHalted], message: str, halt_id: str | None, run_id: str | None,
             activity: str | None) -> ScalingHalted:
    return cls(message, halt_id=halt_id, run_id=run_id, activity=activity)


class GateUnavailable(ScalingHalted):
    """The ledger could not be read; scaling stops rather than run unchecked."""


@dataclass(frozen=True)
class GateHalt:
    halt_id: str
    scope: HaltScope
    opened_at: str
    payload: Mapping[str, Any]
    # Set for a halt the ledger has decided but not yet opened (`ScalingGate._decided_halt`).
    pending_note: str | None = None

    def message(self, run_id: str, activity: str) -> str:
        if self.pending_note is not None:
            return f"scaling halted: run {run_id!r} ({activity}): {self.pending_note}"
        if lifts_automatically(self.payload):
            how = ("To lift: get detection and evaluation going again (`rsp watch` / `rsp serve`); the halt lifts "
                   "by itself when the determinations catch up (see `rsp status`).")
        else:
            how = f"To lift: once that holds, record approvals with `rsp approve {self.halt_id}` (see `rsp status`)."
        return (
            f"scaling halted: run {run_id!r} ({activity}) is stopped by halt {self.halt_id} "
            f"(opened {self.opened_at}). Cause: {describe_cause(self.payload)}. "
            f"Lifts when: {describe_lift(self.payload)}. {how}"
        )


def _default_ledger(ledger_url: str | None) -> Ledger:
    from tasks.ledger import Ledger
    from tasks.settings import get_settings

    # Never created here: a trainer that finds no ledger must stop, not train against an empty one.
    return Ledger(get_settings().resolved_ledger_url if ledger_url is None else ledger_url, create=False)


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _current_flow_run_id() -> str | None:
    import sys

    if "prefect" not in sys.modules:  # no Prefect loaded: certainly no flow run
        return None
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    flow_run = getattr(ctx, "flow_run", None) if ctx is not None else None
    return None if flow_run is None else str(flow_run.id)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


class ScalingGate:
    """Is scaling allowed for (run, activity)? Thread-safe; one per process is plenty.

    `ledger_id` (default: settings' RSP_LEDGER_ID) pins the ledger: any other identity closes
    the gate. `policy` (a Policy, bundled id or file; default: settings' policy) states the
    evaluation lag bound. `max_staleness_s` (default 0: revalidate on every call) lets a very
    hot loop skip the head read for that long; a halt is then seen at most that late. `now`
    is the wall clock the lag is measured with."""

    def __init__(self, ledger_url: str | None = None, *, ledger: Ledger | None = None,
                 ledger_id: str | None = None, policy: Policy | str | None = None,
                 max_staleness_s: float = 0.0, clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], dt.datetime] = _utc_now) -> None:
        self._ledger_url = ledger_url
        self._ledger = ledger
        self._ledger_id = ledger_id
        self._pin: str | None = None
        self._opened = False
        self._policy_ref = policy
        self._policy: Policy | None = None
        self._bound: LagBound | None = None
        self._max_staleness = max_staleness_s
        self._clock = clock
        self._now = now
        self._lock = threading.RLock()
        self._seq: int | None = None
        self._validated_at = float("-inf")
        self._halts: tuple[GateHalt, ...] = ()
        self._trackers: dict[str, RunLagTracker] = {}
        self._decided: dict[tuple[str, str], tuple[int | None, GateHalt | None]] = {}

    @property
    def ledger(self) -> Ledger:
        with self._lock:
            if not self._opened:
                try:
                    if self._ledger is None:
                        self._ledger = _default_ledger(self._ledger_url)
                    pin = self._ledger_id
                    if pin is None:
                        from tasks.settings import get_settings

                        pin = get_settings().ledger_id
                    self._pin = pin
                except Exception as exc:
                    raise GateUnavailable(f"scaling gate closed: cannot open the ledger: {_one_line(exc)}") from exc
                self._check_identity()
                self._opened = True
            assert self._ledger is not None
            return self._ledger

    def _check_identity(self) -> None:
        """The pinned ledger or none: a ledger with another identity (another folder's, a restored
        copy, a fresh empty one) must not decide whether a run may scale."""
        if self._pin is None or self._ledger is None:
            return
        try:
            found = self._ledger.ledger_id
        except Exception as exc:
            raise GateUnavailable(f"scaling gate closed: cannot read the ledger's identity: {_one_line(exc)}") from exc
        if found != self._pin:
            raise GateUnavailable(
                f"scaling gate closed: the ledger at {self._ledger.url} is {found or 'a ledger without an identity'}, "
                f"not {self._pin}, the ledger this gate is pinned to (RSP_LEDGER_ID)"
            )

    def open_halts(self) -> tuple[GateHalt, ...]:
        """The open halts, revalidated against the ledger head (one cheap read)."""
        with self._lock:
            now = self._clock()
            if self._seq is not None and now - self._validated_at < self._max_staleness:
                return self._halts
            ledger = self.ledger
            try:
                seq = ledger.head()[0]
                if seq != self._seq:
                    self._check_identity()
                    halts = ledger.halts("open")
                    self._halts = tuple(GateHalt(h.halt_id, scope_of(h.payload), h.opened_at, h.payload)
                                        for h in halts)
                    self._seq = seq
            except GateUnavailable:
                self._seq = None
                raise
            except Exception as exc:
                self._seq = None
                raise GateUnavailable(f"scaling gate closed: cannot read the ledger ({_one_line(exc)[:200]})") from exc
            self._validated_at = now
            return self._halts

    def _refresh(self) -> tuple[GateHalt, ...]:
        with self._lock:
            self._seq = None
            return self.open_halts()

    # -- the evaluation lag bound -----------------------------------------------------------------------

    def lag_bound(self) -> LagBound:
        """The policy's evaluation lag bound (read once); GateUnavailable when the policy cannot be read."""
        with self._lock:
            if self._bound is None:
                from tasks.enforcement.overdue import read_bound

                try:
                    from policy.lag import LagBound
                    from tasks.policy_versions import governing

                    # The version in force: a loosened file (a longer lag) held for approval does not count.
                    policy = governing(self.ledger, read_bound(self._policy_ref)[0])
                    self._policy, self._bound = policy, LagBound.of(policy)
                except GateUnavailable:
                    raise
                except Exception as exc:
                    raise GateUnavailable(
                        f"scaling gate closed: cannot read the policy that bounds evaluation lag: {_one_line(exc)}"
                    ) from exc
            return self._bound

    def lag(self, run_id: str) -> LagVerdict:
        """How far `run_id` is ahead of its last determination, against the policy's bound."""
        with self._lock:
            self.open_halts()
            return self._verdict(run_id)

    def _verdict(self, run_id: str) -> LagVerdict:
        bound = self.lag_bound()
        return self._tracker(run_id).verdict(bound, self._now())

    def _tracker(self, run_id: str) -> RunLagTracker:
        from tasks.enforcement.overdue import RunLagTracker

        tracker = self._trackers.get(run_id)
        if tracker is None:
            tracker = self._trackers[run_id] = RunLagTracker(run_id)
        if tracker.seen_head is None or tracker.seen_head != self._seq:
            try:
                tracker.refresh(self.ledger)
            except Exception as exc:
                raise GateUnavailable(f"scaling gate closed: cannot read run {run_id}'s lag from the ledger "
                                      f"({_one_line(exc)[:200]})") from exc
            tracker.seen_head = self._seq
        return tracker

    def _enforce_lag(self, run_id: str, halts: tuple[GateHalt, ...]) -> tuple[GateHalt, ...]:
        """Open the run's evaluation_overdue halt when it is past the bound; lift it once caught up."""
        verdict = self._verdict(run_id)
        tracker = self._trackers[run_id]
        own = [h for h in halts if overdue_run(h.payload) == run_id]
        if own and tracker.caught_up:
            from tasks.enforcement.overdue import lift_caught_up

            ledger = self.ledger
            for gh in own:
                halt = ledger.halt(gh.halt_id)
                if halt is not None:
                    lift_caught_up(ledger, halt, tracker, checked_by=f"scaling gate of run {run_id}")
            return self._refresh()
        if verdict.overdue and not own:
            from tasks.enforcement.overdue import halt_overdue

            spare = _current_flow_run_id()
            try:
                halt_overdue(verdict, ledger=self.ledger, policy=self._policy, spare_runs=(spare,) if spare else ())
            except Exception as exc:
                raise GateUnavailable(
                    f"scaling gate closed: run {run_id!r} is past its evaluation lag bound "
                    f"({'; '.join(verdict.reasons)}) and its halt could not be recorded: {_one_line(exc)}"
                ) from exc
            return self._refresh()
        return halts

    # -- the checks -----------------------------------------------------------------------------------------

    def blocking_halt(self, run_id: str, activity: str = "training") -> GateHalt | None:
        """The oldest open halt covering this run and activity, or None when the gate is open. For
        training (the activity that writes checkpoints) the evaluation lag bound is enforced first."""
        with self._lock:
            halts = self.open_halts()
            if activity != "deployment":
                halts = self._enforce_lag(run_id, halts)
        for halt in halts:
            if scope_covers(halt.scope, run_id, activity):
                return halt
        with self._lock:
            return self._decided_halt(run_id, activity)

    def _decided_halt(self, run_id: str, activity: str) -> GateHalt | None:
        """A HALT determination whose halt is not in the ledger yet still stops the run.

        The evaluation records its determination and then opens the halt; a trainer that saw the
        determination in between would otherwise pass the gate and write the next checkpoint (seen
        under load). Also the fail-closed answer when the evaluation died between the two: the run
        stays stopped until a halt is opened (re-evaluate) or one covering it is opened or lifted
        after that determination. Cached per ledger head, like the open halts."""
        cached = self._decided.get((run_id, activity))
        if cached is not None and cached[0] == self._seq and self._seq is not None:
            return cached[1]
        try:
            pending: GateHalt | None = None
            det = self.ledger.latest_determination_event(run_id)
            if det is not None and det.payload.get("decision") == "halt" and (
                    activity in (det.payload.get("halts") or ()) or activity not in ("training", "deployment")):
                later = [h for h in self.ledger.halts() if scope_covers(scope_of(h.payload), run_id, activity)
                         and max(h.opened_seq, h.lifted_seq or 0) > det.seq]
                if not later:
                    step = (det.payload.get("checkpoint") or {}).get("step")
                    pending = GateHalt(
                        f"pending@{det.seq}", HaltScope(activities=("training", "deployment"), runs=(run_id,)),
                        det.ts, det.payload,
                        pending_note=(f"the determination at step {step} (ledger seq {det.seq}) decided HALT and its "
                                      "halt is not recorded yet; retry in a moment (`rsp status`). If it never "
                                      "appears, the evaluation stopped before opening it: re-run `rsp evaluate`."))
        except Exception as exc:
            raise GateUnavailable(f"scaling gate closed: cannot read run {run_id}'s last determination "
                                  f"({_one_line(exc)[:200]})") from exc
        self._decided[(run_id, activity)] = (self._seq, pending)
        return pending

    def is_open(self, run_id: str, activity: str = "training") -> bool:
        return self.blocking_halt(run_id, activity) is None

    def check(self, run_id: str, activity: str = "training") -> None:
        """Return if scaling may go on; raise ScalingHalted if an open halt covers the run."""
        halt = self.blocking_halt(run_id, activity)
        if halt is not None:
            raise ScalingHalted(halt.message(run_id, activity), halt_id=halt.halt_id, run_id=run_id,
                                activity=activity)

    def checkpoint_written(self, run_id: str, step: int, *, uri: str | None = None,
                           effective_compute: float | None = None) -> None:
        """Report a checkpoint the trainer wrote (`checkpoint.written`): the evaluation lag bound
        counts these. GateUnavailable when it cannot be recorded: a checkpoint the gate cannot count
        must not let the run go on."""
        from tasks.ledger.events import CheckpointWritten

        fields: dict[str, Any] = {"run_id": run_id, "step": step}
        if uri is not None:
            fields["uri"] = uri
        if effective_compute is not None:
            fields["effective_compute"] = effective_compute
        try:
            self.ledger.record(CheckpointWritten(**fields), run_id)
        except GateUnavailable:
            raise
        except Exception as exc:
            raise GateUnavailable(f"scaling gate closed: cannot record checkpoint {run_id} step {step}: "
                                  f"{_one_line(exc)}") from exc

    def guard_flow_start(self, run_id: str, activity: str = "training") -> None:
        guard_flow_start(run_id, activity, gate=self)


def flow_run_origin() -> dict[str, Any]:
    """Who or what started the current flow run, from Prefect's run context."""
    try:
        from prefect.context import FlowRunContext
    except ImportError:  # pragma: no cover - prefect is a dependency; be useful without it anyway
        return {"started_by": "direct call (no Prefect)"}
    ctx = FlowRunContext.get()
    flow_run = getattr(ctx, "flow_run", None) if ctx is not None else None
    if flow_run is None:
        return {"started_by": "direct call (no Prefect flow run)"}
    from tasks.enforcement.prefect_api import describe_start

    created_by = flow_run.created_by.model_dump(mode="json") if getattr(flow_run, "created_by", None) else None
    deployment_id = str(flow_run.deployment_id) if flow_run.deployment_id else None
    auto_scheduled = bool(getattr(flow_run, "auto_scheduled", False))
    return {
        "started_by": describe_start(created_by, deployment_id, auto_scheduled,
                                     getattr(flow_run, "parent_task_run_id", None)),
        "flow_run_id": str(flow_run.id),
        "flow_run_name": flow_run.name,
        "deployment_id": deployment_id,
        "auto_scheduled": auto_scheduled,
        "created_by": created_by,
        "tags": list(flow_run.tags or []),
    }


def guard_flow_start(run_id: str, activity: str = "training", *, gate: ScalingGate | None = None,
                     ledger: Ledger | None = None) -> None:
    """First thing a scaling flow calls. If a halt covers the run, record `scaling.run_blocked`
    in the ledger (which halt, and who or what started this run), then raise ScalingHalted so
    the run ends before its first step. Without `gate`, a gate over `ledger` (None: the
    configured ledger, as `ScalingGate()` opens it)."""
    gate = gate or ScalingGate(ledger=ledger)
    halt = gate.blocking_halt(run_id, activity)
    if halt is None:
        return
    origin = flow_run_origin()
    from tasks.ledger.events import ScalingRunBlocked, ScalingRunCancelled

    # One record per flow run: one a reconcile already recorded as cancelled (it was starting
    # as it was cancelled) is not recorded again. Subject of scaling.run_cancelled: the flow run id.
    flow_run_id = origin.get("flow_run_id")
    prior = gate.ledger.events(kind=ScalingRunCancelled.KIND, subject=flow_run_id, limit=1) if flow_run_id else []
    event = prior[0] if prior else gate.ledger.record(ScalingRunBlocked(
        halt_id=halt.halt_id, run_id=run_id, activity=activity, **origin,
    ), halt.halt_id)
    raise ScalingHalted(
        f"{halt.message(run_id, activity)} Run blocked at start ({origin['started_by']}; ledger seq {event.seq}).",
        halt_id=halt.halt_id, run_id=run_id, activity=activity,
    )


__all__ = ["GateHalt", "GateUnavailable", "ScalingGate", "ScalingHalted", "flow_run_origin", "guard_flow_start"]
