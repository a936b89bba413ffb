"""The scaling gate: the check every scaling flow makes at start and before every step.

Plain Python over the ledger, usable in or out of Prefect:

    from tasks.gate import ScalingGate, ScalingHalted
    gate = ScalingGate()                 # the configured ledger
    for step in ...:
        gate.check(run_id)               # raises ScalingHalted while an open halt covers run_id
        train_one_step()

This, not a paused Prefect deployment, is what stops a run: a run started by hand, by an
automation, after a serve restart, or by calling the flow function directly all pass
through it. It is cheap enough for every step: the open halts are cached and revalidated
with one indexed read of the ledger head (the sequence number moves on every append, so
a halt opened or lifted by any process is seen at the next check).

Fail closed: if the ledger cannot be read the gate raises `GateUnavailable` (a
`ScalingHalted`), and a halt record it cannot understand covers every run.
An explicitly configured ledger (argument or RSP_LEDGER_URL) must already exist; only the
embedded default under <home> is created on first use, so a mistyped URL can never read
as "no halts".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from policy.halts import HaltScope, describe_cause, describe_lift, scope_covers, scope_of

if TYPE_CHECKING:
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

    def message(self, run_id: str, activity: str) -> str:
        return (
            f"scaling halted: run {run_id!r} ({activity}) is stopped by halt {self.halt_id} "
            f"(opened {self.opened_at}). Cause: {describe_cause(self.payload)}. "
            f"Lifts when: {describe_lift(self.payload)}. "
            f"To lift: once that holds, record approvals with `rsp approve {self.halt_id}` (see `rsp status`)."
        )


def _default_ledger(ledger_url: str | None) -> Ledger:
    from tasks.ledger import Ledger

    if ledger_url is not None:
        return Ledger(ledger_url, create=False)
    from tasks.settings import get_settings

    settings = get_settings()
    # Only the embedded default may be created here; a configured URL must already hold a ledger.
    return Ledger(settings.resolved_ledger_url, create=settings.ledger_url is None)


class ScalingGate:
    """Is scaling allowed for (run, activity)? Thread-safe; one per process is plenty.

    `max_staleness_s` (default 0: revalidate on every call) lets a very hot loop skip the
    head read for that long; a halt is then seen at most that late."""

    def __init__(self, ledger_url: str | None = None, *, ledger: Ledger | None = None,
                 max_staleness_s: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._ledger_url = ledger_url
        self._ledger = ledger
        self._max_staleness = max_staleness_s
        self._clock = clock
        self._lock = threading.Lock()
        self._seq: int | None = None
        self._validated_at = float("-inf")
        self._halts: tuple[GateHalt, ...] = ()

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            try:
                self._ledger = _default_ledger(self._ledger_url)
            except Exception as exc:
                raise GateUnavailable(f"scaling gate closed: cannot open the ledger: {exc}") from exc
        return self._ledger

    def open_halts(self) -> tuple[GateHalt, ...]:
        """The open halts, revalidated against the ledger head (one cheap read)."""
        with self._lock:
            now = self._clock()
            if self._seq is not None and now - self._validated_at < self._max_staleness:
                return self._halts
            try:
                seq = self.ledger.head()[0]
                if seq != self._seq:
                    halts = self.ledger.halts("open")
                    self._halts = tuple(GateHalt(h.halt_id, scope_of(h.payload), h.opened_at, h.payload)
                                        for h in halts)
                    self._seq = seq
            except GateUnavailable:
                raise
            except Exception as exc:
                self._seq = None
                raise GateUnavailable(
                    f"scaling gate closed: cannot read the ledger ({' '.join(str(exc).split())[:200]})"
                ) from exc
            self._validated_at = now
            return self._halts

    def blocking_halt(self, run_id: str, activity: str = "training") -> GateHalt | None:
        """The oldest open halt covering this run and activity, or None when the gate is open."""
        for halt in self.open_halts():
            if scope_covers(halt.scope, run_id, activity):
                return halt
        return None

    def is_open(self, run_id: str, activity: str = "training") -> bool:
        return self.blocking_halt(run_id, activity) is None

    def check(self, run_id: str, activity: str = "training") -> None:
        """Return if scaling may go on; raise ScalingHalted if an open halt covers the run."""
        halt = self.blocking_halt(run_id, activity)
        if halt is not None:
            raise ScalingHalted(halt.message(run_id, activity), halt_id=halt.halt_id, run_id=run_id,
                                activity=activity)

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
    created_by = flow_run.created_by.model_dump(mode="json") if getattr(flow_run, "created_by", None) else None
    deployment_id = str(flow_run.deployment_id) if flow_run.deployment_id else None
    if getattr(flow_run, "auto_scheduled", False):
        started_by = "schedule (auto-scheduled run)"
    elif created_by and created_by.get("type"):
        started_by = f"{str(created_by['type']).lower()}: {created_by.get('display_value') or created_by.get('id')}"
    elif deployment_id:
        started_by = "deployment run started by hand (UI, API or CLI)"
    elif getattr(flow_run, "parent_task_run_id", None):
        started_by = "subflow call"
    else:
        started_by = "direct call of the flow function"
    return {
        "started_by": started_by,
        "flow_run_id": str(flow_run.id),
        "flow_run_name": flow_run.name,
        "deployment_id": deployment_id,
        "auto_scheduled": bool(getattr(flow_run, "auto_scheduled", False)),
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
    from tasks.ledger.events import ScalingRunBlocked

    event = gate.ledger.record(ScalingRunBlocked(
        halt_id=halt.halt_id, run_id=run_id, activity=activity, **origin,
    ), halt.halt_id)
    raise ScalingHalted(
        f"{halt.message(run_id, activity)} Run blocked at start ({origin['started_by']}; ledger seq {event.seq}).",
        halt_id=halt.halt_id, run_id=run_id, activity=activity,
    )


__all__ = ["GateHalt", "GateUnavailable", "ScalingGate", "ScalingHalted", "flow_run_origin", "guard_flow_start"]
