"""The reconciler: make Prefect agree with every open halt in the ledger, again and again.

Why it exists: Prefect state drifts away from the ledger. `serve` un-pauses its
deployments when it restarts, someone resumes a deployment in the UI, a halt opened while
the Prefect server was down was never applied. So the ledger is read afresh and applied
on every watch tick (`reconcile()`), when a serve process starts (`serve_scaling`), and on
demand (`rsp halt reconcile`).

First, each pass lifts every `evaluation_overdue` halt whose run has caught up (every checkpoint
it reported has a determination; tasks/enforcement/overdue.py), so such a halt lifts even when
its trainer has stopped. No other halt is ever lifted here.

Every layer: besides pausing deployments and their scaling work queue and cancelling runs, a pass
resumes a scaling queue that it (or an apply) paused once no open halt covers it any more (a lifted
halt; tasks/enforcement/queues.py), and keeps the halt-guard automation in
place once it was installed (tasks/enforcement/automation.py `keep_guard`): deleted, disabled
or edited, it is put back and `halt_guard.restored` is recorded. And every attempt on record:
runs of halted deployments that were cancelled (by this pass, by the automation, or found
cancelled while halted) are recorded once each as `scaling.run_cancelled`, with who started
them (tasks/enforcement/attempts.py).

Idempotent: when Prefect already agrees, a pass makes no Prefect write and appends no
ledger event. When it corrected drift it appends `halt.reconciled` (per halt, naming what
it fixed). When Prefect cannot be reached it appends `halt.reconcile_failed` once per
outage (not on every tick). The time and outcome of the last pass, with the automation's
state, go to a small state file outside the ledger (<home>/enforcement/reconcile.json) for
`rsp status`.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from tasks.storage import write_atomic

if TYPE_CHECKING:
    from tasks.enforcement.attempts import HaltWindow, StoppedRun
    from tasks.enforcement.automation import GuardSync
    from tasks.enforcement.enforce import Enforcement, HaltTarget
    from tasks.enforcement.settings import EnforcementSettings
    from tasks.ledger import Ledger

DEFAULT_ATTEMPTS = 2
DEFAULT_BACKOFF_S = 0.5


@dataclass
class ReconcileReport:
    checked_at: str
    ok: bool  # Prefect agrees with every open halt after this pass
    halts: list[str]
    api_url: str | None = None
    changed: bool = False
    paused: list[dict[str, Any]] = field(default_factory=list)
    cancelled: list[dict[str, Any]] = field(default_factory=list)
    paused_queues: list[dict[str, Any]] = field(default_factory=list)  # scaling work queues paused by this pass
    resumed_queues: list[dict[str, Any]] = field(default_factory=list)  # {name, halt_id}: no open halt covers them
    errors: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    queue_error: str | None = None  # resuming a released queue failed (the halt side is unaffected)
    automation: str | None = None  # what the sync changed (created, updated, enabled, ...), "absent" or "error: ..."
    automation_state: dict[str, Any] | None = None  # GuardSync.to_dict(): present, enabled, restored, ...
    runs_recorded: list[str] = field(default_factory=list)  # flow runs newly recorded as scaling.run_cancelled
    events: list[str] = field(default_factory=list)  # ledger event kinds written by this pass
    attempts: int = 0
    duration_s: float = 0.0
    ledger: str | None = None
    lifted: list[str] = field(default_factory=list)  # evaluation_overdue halts lifted: their runs caught up

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        extra = self._extras()
        if self.error:
            return f"reconcile FAILED ({len(self.halts)} open halt(s)): {self.error}{extra}"
        if not self.halts:
            return f"reconcile: no open halts; nothing to enforce{extra}"
        if self.changed:
            return (f"reconcile: fixed drift for {len(self.halts)} open halt(s): {len(self.paused)} deployment(s) "
                    f"paused, {len(self.cancelled)} run(s) cancelled{extra}")
        return f"reconcile: Prefect agrees with {len(self.halts)} open halt(s); nothing changed{extra}"

    def _extras(self) -> str:
        parts = []
        guard = self.automation_state
        if guard and guard.get("restored"):
            parts.append(f"halt-guard automation RESTORED (was {guard.get('found')}: {guard.get('change')})")
        elif guard and guard.get("error"):
            parts.append(f"halt-guard automation: ERROR {guard['error']}")
        elif guard and guard.get("present"):
            parts.append("halt-guard automation " + (f"enabled for {len(guard.get('deployments') or [])} "
                                                     "deployment(s)" if guard.get("enabled") else "disabled"))
        if self.runs_recorded:
            parts.append(f"{len(self.runs_recorded)} stopped run(s) of halted deployments recorded")
        if self.paused_queues:
            parts.append("work queue(s) paused: " + ", ".join(q["name"] for q in self.paused_queues))
        if self.resumed_queues:
            parts.append("work queue(s) resumed (no open halt covers them): "
                         + ", ".join(q["name"] for q in self.resumed_queues))
        if self.queue_error:
            parts.append(f"resuming work queues FAILED: {self.queue_error}")
        return "".join(f"; {p}" for p in parts)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def read_state(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_state(path: Path, data: dict[str, Any]) -> None:
    # Atomic: `rsp status` never reads half a file, even with two reconcilers.
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str).encode("utf-8"))


def reconcile(
    *,
    ledger: Ledger | None = None,
    api_url: str | None = None,
    scaling_tag: str | None = None,
    names: Sequence[str] | None = None,
    attempts: int = DEFAULT_ATTEMPTS,
    backoff_s: float = DEFAULT_BACKOFF_S,
    state_path: Path | None = None,
    record: bool = True,
) -> ReconcileReport:
    """One reconcile pass over every open halt. Never raises for Prefect being down: the
    report says `ok=False` with the error (the gate keeps the halt in force meanwhile).
    `ledger` None: the configured ledger."""
    from tasks.enforcement.apply import with_retries
    from tasks.enforcement.attempts import halt_windows
    from tasks.enforcement.enforce import targets_of
    from tasks.enforcement.prefect_api import resolve_api_url, short_error
    from tasks.enforcement.settings import enforcement_settings
    from tasks.ledger import ledger_or_configured
    from tasks.ledger.events import HaltReconciled

    started = time.perf_counter()
    store = ledger_or_configured(ledger)
    cfg = enforcement_settings(scaling_tag=scaling_tag, names=names)
    path = state_path or cfg.state_path
    previous = read_state(path)
    lifted = _lift_caught_up(store, api_url, cfg) if record else []  # evaluation_overdue halts only
    open_halts = store.halts("open")
    targets = targets_of(open_halts)
    report = ReconcileReport(checked_at=_now(), ok=True, halts=[h.halt_id for h in open_halts], ledger=store.url,
                             lifted=lifted)
    try:
        report.api_url = resolve_api_url(api_url)
    except Exception as exc:  # noqa: BLE001
        report.ok, report.error = not targets, short_error(exc)

    windows = halt_windows(store)  # open halts and those lifted lately: whose stopped runs to record
    stopped: list[StoppedRun] = []
    if report.api_url is not None and not targets:
        # Nothing to enforce; keep the automation (off) and record runs stopped under a halt lifted lately.
        try:
            result = _one_pass(store, cfg, report.api_url, [], windows, record=record)
        except Exception as exc:  # noqa: BLE001 - no halt is open, so a down server changes nothing here
            report.automation = f"error: {short_error(exc)}"
        else:
            _note_guard(report, result)
            stopped = result.stopped
            _note_queues(report, result)
    elif report.api_url is not None:
        url = report.api_url

        def one_pass() -> _Pass:
            return _one_pass(store, cfg, url, targets, windows, record=record)

        try:
            result, report.attempts = with_retries(one_pass, attempts=attempts, backoff_s=backoff_s)
        except Exception as exc:  # noqa: BLE001
            report.attempts = getattr(exc, "attempts", attempts)
            report.ok, report.error = False, f"Prefect API at {report.api_url} failed: {short_error(exc)}"
        else:
            _note_guard(report, result)
            _note_queues(report, result)
            stopped, done = result.stopped, result.done
            assert done is not None  # enforced: there were targets
            report.paused, report.cancelled, report.errors = done.paused, done.cancelled, done.errors
            report.paused_queues = done.paused_queues
            report.changed = done.changed or result.guard.restored or bool(report.resumed_queues)
            report.ok = done.ok
            if done.errors:
                report.error = "; ".join(f"{e['what']} {e['name']}: {e['error']}" for e in done.errors)[:500]
            if record and done.changed:
                for h in open_halts:
                    fixed = done.fixed_for(h.halt_id)
                    if fixed["paused"] or fixed["cancelled"] or fixed["paused_queues"]:
                        store.record(HaltReconciled(halt_id=h.halt_id, api_url=report.api_url, **fixed), h.halt_id)
                        report.events.append(HaltReconciled.KIND)
    if record and stopped:
        _record_stopped(store, report, stopped, windows)
    if record and not report.ok and targets and (previous is None or previous.get("ok", True)):
        from tasks.ledger.events import HaltReconcileFailed

        # Once per outage: a watch tick every minute must not fill the ledger with the same failure.
        for h in open_halts:
            store.record(HaltReconcileFailed(halt_id=h.halt_id, api_url=report.api_url, error=report.error),
                         h.halt_id)
            report.events.append(HaltReconcileFailed.KIND)
    report.duration_s = time.perf_counter() - started
    write_state(path, {
        "checked_at": report.checked_at, "ok": report.ok, "halts": report.halts, "changed": report.changed,
        "error": report.error, "api_url": report.api_url, "ledger": report.ledger,
        "paused": [p["name"] for p in report.paused], "cancelled": [c["id"] for c in report.cancelled],
        "paused_queues": [q["name"] for q in report.paused_queues], "resumed_queues": report.resumed_queues,
        "duration_s": round(report.duration_s, 4), "automation": report.automation_state,
        "runs_recorded": report.runs_recorded,
    })
    return report


class _Pass(NamedTuple):
    done: Enforcement | None  # None when no halt is open (nothing enforced)
    guard: GuardSync
    guard_events: list[str]  # ledger kinds keep_guard wrote
    stopped: list[StoppedRun]  # runs stopped while halted, not yet on record
    resumed_queues: list[dict[str, Any]]  # scaling queues resumed: no open halt covers them now
    queue_error: str | None


def _one_pass(store: Ledger, cfg: EnforcementSettings, url: str, targets: Sequence[HaltTarget],
              windows: Sequence[HaltWindow], *, record: bool) -> _Pass:
    """One pass against Prefect: enforce the open halts (when any), keep the halt-guard automation,
    and find the runs stopped while halted that are not on record yet."""
    from tasks.enforcement.attempts import (
        STOPPED_BY_RECONCILE,
        attribute_to_automation,
        cancelled_by_enforcement,
        find_stopped_runs,
    )
    from tasks.enforcement.automation import GuardSync, automation_name, keep_guard
    from tasks.enforcement.enforce import enforce
    from tasks.enforcement.prefect_api import (
        CANCELLING_STATE,
        is_transient,
        list_scaling_deployments,
        prefect_client,
        short_error,
    )
    from tasks.enforcement.queues import release_queues

    with prefect_client(url) as client:
        done = None
        halted: list[str] = []
        if targets:
            done = enforce(client, targets, scaling_tag=cfg.scaling_tag, names=cfg.names,
                           message="halted by rsp-gate (reconcile)", queues=cfg.queues)
            halted = done.plan.halted_deployment_ids()
        resumed: list[dict[str, Any]] = []
        queue_error = None
        try:
            resumed = release_queues(client, store, scaling_tag=cfg.scaling_tag, names=cfg.names, queues=cfg.queues,
                                     targets=targets, api_url=url, by="reconcile", record=record)
        except Exception as exc:  # a queue left paused errs on the safe side; reported, not raised
            if is_transient(exc):
                raise
            queue_error = short_error(exc)
        guard_events: list[str] = []
        try:
            guard, guard_events = keep_guard(client, store, cfg.scaling_tag, halted, api_url=url,
                                             halts=[t.halt_id for t in targets], by="reconcile", record=record)
        except Exception as exc:  # noqa: BLE001 - best effort; the gate is the guarantee
            guard = GuardSync(name=automation_name(cfg.scaling_tag), error=short_error(exc))
        stopped: list[StoppedRun] = []
        if windows:
            deployments = (done.plan.deployments if done is not None
                           else list_scaling_deployments(client, cfg.scaling_tag, cfg.names))
            own = [] if done is None else cancelled_by_enforcement(done.cancelled, done.plan.runs, deployments,
                                                                    STOPPED_BY_RECONCILE)
            cancelling = None if done is None else [r for r in done.plan.runs if r.state_type == CANCELLING_STATE]
            found = find_stopped_runs(client, deployments, windows, cancelling=cancelling,
                                      skip=[s.run.id for s in own])
            found = _unrecorded(store, found, windows)
            if found:
                found = attribute_to_automation(client, found, guard.automation_id, min(w.opened for w in windows))
            stopped = own + found
    return _Pass(done, guard, guard_events, stopped, resumed, queue_error)


def _note_queues(report: ReconcileReport, result: _Pass) -> None:
    from tasks.ledger.events import HaltReconciled

    report.resumed_queues, report.queue_error = result.resumed_queues, result.queue_error
    report.events.extend(HaltReconciled.KIND for _ in result.resumed_queues)
    report.changed = report.changed or bool(result.resumed_queues)


def _unrecorded(store: Ledger, stopped: list[StoppedRun], windows: Sequence[HaltWindow]) -> list[StoppedRun]:
    from tasks.enforcement.attempts import on_record

    if not stopped:
        return stopped
    known = on_record(store, [s.run.id for s in stopped], after_seq=_after_seq(windows))
    return [s for s in stopped if s.run.id not in known]


def _after_seq(windows: Sequence[HaltWindow]) -> int:
    # A record concerning a run stopped while one of these halts held was written after it opened.
    return min((w.opened_seq for w in windows), default=1) - 1


def _note_guard(report: ReconcileReport, result: _Pass) -> None:
    guard = result.guard
    report.automation = f"error: {guard.error}" if guard.error else guard.change
    report.automation_state = guard.to_dict()
    report.events.extend(result.guard_events)


def _record_stopped(store: Ledger, report: ReconcileReport, stopped: list[StoppedRun],
                    windows: Sequence[HaltWindow]) -> None:
    from tasks.enforcement.attempts import record_stopped_runs
    from tasks.enforcement.prefect_api import short_error
    from tasks.ledger.events import ScalingRunCancelled

    try:
        report.runs_recorded = record_stopped_runs(store, stopped, api_url=report.api_url,
                                                   after_seq=_after_seq(windows))
    except Exception as exc:  # noqa: BLE001 - a ledger fault here must not hide the enforcement outcome
        report.error = report.error or f"recording stopped runs failed: {short_error(exc)}"
        return
    report.events.extend(ScalingRunCancelled.KIND for _ in report.runs_recorded)


def _lift_caught_up(store: Ledger, api_url: str | None, cfg: EnforcementSettings) -> list[str]:
    """Lift every evaluation_overdue halt whose run has caught up (tasks/enforcement/overdue.py)."""
    from tasks.enforcement.overdue import lift_caught_up_halts

    return lift_caught_up_halts(store, api_url=api_url, scaling_tag=cfg.scaling_tag, names=cfg.names)


def last_reconcile(state_path: Path | None = None) -> dict[str, Any] | None:
    """What the last reconcile pass recorded in the state file (None if none ran here)."""
    from tasks.enforcement.settings import enforcement_settings

    return read_state(state_path or enforcement_settings().state_path)


__all__ = ["ReconcileReport", "last_reconcile", "read_state", "reconcile", "write_state"]
