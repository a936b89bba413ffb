"""Every attempt to train past a halt, on record: runs of halted scaling deployments that were stopped.

A run of a halted deployment ends in one of two ways. Either it starts and its gate refuses
it (`guard_flow_start` records `scaling.run_blocked`), or Prefect-side enforcement cancels it
first: the halt-guard automation (usually before it starts, which leaves nothing on the run
itself but a plain Cancelled state), an apply or a reconcile. This module records the second
kind as `scaling.run_cancelled`, once per flow run, with who or what started it as Prefect
reports it (`created_by`, `auto_scheduled`, the deployment) and who stopped it.

Where they are found: apply and reconcile record the runs they cancel themselves; each
reconcile pass (every watch tick, serve start-up, `rsp halt reconcile`) also lists the runs of
scaling deployments cancelled (or still cancelling) while a halt covered them, since the
oldest open halt opened, and records those not yet on record. Halts lifted within
`LIFTED_LOOKBACK` still count, for runs stopped while they were open, so a halt lifted
between two passes does not hide the attempts made under it. Who stopped an observed run is
read from Prefect's event log (the automation's `action.triggered` events name their target);
otherwise it reads "found cancelled while halted".

Idempotent: existing records (`scaling.run_cancelled` and `scaling.run_blocked`, by flow run
id) are read before anything is written, so a pass that finds nothing new writes nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from policy.halts import scope_of
from tasks.enforcement.enforce import HaltTarget, halts_covering_run
from tasks.enforcement.prefect_api import FlowRunInfo, ScalingDeployment

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

    from tasks.ledger import Halt, Ledger

STOPPED_BY_AUTOMATION = "halt-guard automation"
STOPPED_BY_RECONCILE = "reconcile"
STOPPED_BY_APPLY = "apply"
FOUND_CANCELLED = "found cancelled while halted"
LIFTED_LOOKBACK = dt.timedelta(days=1)
SKEW = dt.timedelta(seconds=5)  # the ledger's clock and Prefect's need not agree to the millisecond


def _time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class HaltWindow:
    """A halt and the time it was (or is) in force."""

    target: HaltTarget
    opened_seq: int
    opened: dt.datetime
    lifted: dt.datetime | None

    @classmethod
    def of(cls, halt: Halt) -> HaltWindow:
        opened = _time(halt.opened_at) or dt.datetime.min.replace(tzinfo=dt.UTC)
        return cls(HaltTarget(halt.halt_id, scope_of(halt.payload)), halt.opened_seq, opened, _time(halt.lifted_at))

    def covers_time(self, moment: dt.datetime) -> bool:
        return self.opened - SKEW <= moment and (self.lifted is None or moment <= self.lifted + SKEW)


def halt_windows(store: Ledger, *, now: dt.datetime | None = None,
                 lookback: dt.timedelta = LIFTED_LOOKBACK) -> list[HaltWindow]:
    """Open halts, and halts lifted within `lookback`, oldest first."""
    now = now or dt.datetime.now(dt.UTC)
    found = [HaltWindow.of(h) for h in store.halts("open")]
    for h in store.halts("lifted"):
        w = HaltWindow.of(h)
        if w.lifted is not None and w.lifted >= now - lookback:
            found.append(w)
    return sorted(found, key=lambda w: w.opened_seq)


@dataclass(frozen=True)
class StoppedRun:
    """A flow run of a halted scaling deployment that was cancelled, and by what."""

    run: FlowRunInfo
    halts: tuple[str, ...]
    stopped_by: str
    deployment: str | None = None
    state: str | None = None  # after stopping, when it differs from the run's (a cancel just issued)
    stopped_at: str | None = None
    automation_id: str | None = None


def covering_halts(run: FlowRunInfo, dep: ScalingDeployment | None, windows: Sequence[HaltWindow],
                   *, now: dt.datetime | None = None) -> list[str]:
    """Halts that covered this run when it was stopped."""
    moment = _time(run.stopped_at) or now or dt.datetime.now(dt.UTC)
    live = [w.target for w in windows if w.covers_time(moment)]
    return halts_covering_run(run, dep, live) if live else []


def find_stopped_runs(
    client: SyncPrefectClient,
    deployments: Sequence[ScalingDeployment],
    windows: Sequence[HaltWindow],
    *,
    cancelling: Iterable[FlowRunInfo] | None = None,
    skip: Iterable[str] = (),
) -> list[StoppedRun]:
    """Runs of these deployments cancelled (or cancelling) while a halt in `windows` covered them.
    `cancelling`: the cancelling runs already listed this pass (saves a query); `skip`: flow run
    ids already handled this pass."""
    from tasks.enforcement.prefect_api import list_stopped_runs

    if not windows or not deployments:
        return []
    since = min(w.opened for w in windows) - SKEW
    runs = list_stopped_runs(client, [d.id for d in deployments], since, cancelling=cancelling is None)
    if cancelling is not None:
        runs = [*runs, *cancelling]
    by_id = {d.id: d for d in deployments}
    done = set(skip)
    found: list[StoppedRun] = []
    for run in runs:
        if run.id in done or run.state_type not in ("CANCELLED", "CANCELLING"):
            continue
        done.add(run.id)
        dep = by_id.get(run.deployment_id or "")
        halts = covering_halts(run, dep, windows)
        if halts:
            found.append(StoppedRun(run, tuple(halts), FOUND_CANCELLED, dep.full_name if dep else None))
    return found


def attribute_to_automation(client: SyncPrefectClient, stopped: Sequence[StoppedRun], automation_id: str | None,
                            since: dt.datetime) -> list[StoppedRun]:
    """Name the halt-guard automation as what stopped the runs it acted on (Prefect's event log).
    Best effort: the runs are returned unchanged when the events cannot be read."""
    from dataclasses import replace

    from tasks.enforcement.prefect_api import automation_targets

    unknown = [s for s in stopped if s.stopped_by == FOUND_CANCELLED]
    if not unknown or not automation_id:
        return list(stopped)
    try:
        targets = automation_targets(client, automation_id, since - SKEW)
    except Exception:  # noqa: BLE001 - attribution only; the run is recorded either way
        return list(stopped)
    return [replace(s, stopped_by=STOPPED_BY_AUTOMATION, automation_id=automation_id)
            if s.stopped_by == FOUND_CANCELLED and s.run.id in targets else s for s in stopped]


def cancelled_by_enforcement(cancelled: Sequence[dict[str, Any]], runs: Iterable[FlowRunInfo],
                             deployments: Sequence[ScalingDeployment], stopped_by: str) -> list[StoppedRun]:
    """The runs an enforce pass just cancelled (its `cancelled` entries), as stopped runs."""
    by_id = {r.id: r for r in runs}
    deps = {d.id: d for d in deployments}
    now = dt.datetime.now(dt.UTC).isoformat()
    out = []
    for entry in cancelled:
        run = by_id.get(entry["id"])
        if run is None:
            continue
        dep = deps.get(run.deployment_id or "")
        out.append(StoppedRun(run, tuple(entry["halts"]), stopped_by, dep.full_name if dep else None,
                              state=entry.get("state_after"), stopped_at=now))
    return out


def on_record(store: Ledger, flow_run_ids: Iterable[str], *, after_seq: int = 0) -> set[str]:
    """Which of these flow runs the ledger already holds an attempt record for (either kind).
    `after_seq`: records older than this cannot concern them (saves reading all history)."""
    from tasks.ledger.events import ScalingRunBlocked, ScalingRunCancelled

    wanted = set(flow_run_ids)
    if not wanted:
        return set()
    found: set[str] = set()
    for kind in (ScalingRunCancelled.KIND, ScalingRunBlocked.KIND):
        for event in store.iter_events(kind=kind, after_seq=after_seq):
            fr = event.payload.get("flow_run_id")
            if fr in wanted:
                found.add(fr)
    return found


def record_stopped_runs(store: Ledger, stopped: Sequence[StoppedRun], *, api_url: str | None,
                        after_seq: int = 0) -> list[str]:
    """Write `scaling.run_cancelled` for each run not already on record; returns their flow run ids."""
    from tasks.ledger.events import ScalingRunCancelled

    unique = list({s.run.id: s for s in stopped}.values())
    if not unique:
        return []
    known = on_record(store, [s.run.id for s in unique], after_seq=after_seq)
    written = []
    for s in unique:
        if s.run.id in known:
            continue
        r = s.run
        store.record(ScalingRunCancelled(
            halt_id=s.halts[0], flow_run_id=r.id, stopped_by=s.stopped_by, halts=list(s.halts),
            started_by=r.started_by, flow_run_name=r.name, deployment_id=r.deployment_id, deployment=s.deployment,
            run_id=r.run_id, auto_scheduled=r.auto_scheduled, created_by=r.created_by, created=r.created,
            stopped_at=s.stopped_at or r.stopped_at, state=s.state or r.state_type,
            state_message=r.state_message, automation_id=s.automation_id, api_url=api_url,
        ), r.id)
        written.append(r.id)
    return written


__all__ = [
    "FOUND_CANCELLED",
    "LIFTED_LOOKBACK",
    "STOPPED_BY_APPLY",
    "STOPPED_BY_AUTOMATION",
    "STOPPED_BY_RECONCILE",
    "HaltWindow",
    "StoppedRun",
    "attribute_to_automation",
    "cancelled_by_enforcement",
    "covering_halts",
    "find_stopped_runs",
    "halt_windows",
    "on_record",
    "record_stopped_runs",
]
