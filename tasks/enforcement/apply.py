"""Applying one halt to Prefect, with retries, and recording the outcome in the ledger.

The halt is already in force when this runs: the ledger holds it and the gate reads the
ledger. Applying makes Prefect agree (deployments and their scaling work queue paused, runs
cancelled) so halted work is not even started. An unreachable or failing Prefect API is
retried with backoff; if it stays down the report says NOT applied and the ledger gets `halt.apply_failed`, which
`rsp status` shows until a later apply or reconcile succeeds. `halt.applied` is written
only when every step succeeded, and only once per halt unless a later apply changed
something (applying twice records one application).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from tasks.ledger import Halt, Ledger

DEFAULT_ATTEMPTS = 3
DEFAULT_BACKOFF_S = 0.5


class ApplyReport(BaseModel):
    """What applying one halt to Prefect did; returned by the apply-halt task and carried in the
    halt flow's outcome (a pydantic model so Prefect can serialise it)."""

    halt_id: str
    applied: bool
    attempts: int
    api_url: str | None
    gate_closed: bool  # the ledger holds the halt open, so every gate check for it fails
    paused: list[dict[str, Any]] = Field(default_factory=list)
    already_paused: list[str] = Field(default_factory=list)
    cancelled: list[dict[str, Any]] = Field(default_factory=list)
    paused_queues: list[dict[str, Any]] = Field(default_factory=list)  # scaling work queues this apply paused
    already_paused_queues: list[str] = Field(default_factory=list)
    errors: list[dict[str, Any]] = Field(default_factory=list)
    error: str | None = None  # why it was not applied, in one line
    automation: str | None = None
    automation_state: dict[str, Any] | None = None  # the halt-guard automation after this apply
    runs_recorded: list[str] = Field(default_factory=list)  # cancelled runs recorded as scaling.run_cancelled
    event: str | None = None  # the ledger event written: halt.applied, halt.apply_failed or None
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def summary(self) -> str:
        if not self.applied:
            return f"halt {self.halt_id} NOT applied to Prefect after {self.attempts} attempt(s): {self.error}"
        return (
            f"halt {self.halt_id} applied: {len(self.paused)} deployment(s) paused, "
            f"{len(self.already_paused)} already paused, {len(self.cancelled)} run(s) cancelled"
            + (f", work queue(s) paused: {', '.join(q['name'] for q in self.paused_queues)}" if self.paused_queues
               else "")
        )


def with_retries(work: Any, *, attempts: int, backoff_s: float, sleep: Any = time.sleep) -> tuple[Any, int]:
    """Run `work()`; on a transient Prefect failure wait backoff_s, 2*backoff_s, ... and retry.
    Returns (result, attempts used); re-raises the last error when all attempts fail."""
    from tasks.enforcement.prefect_api import is_transient

    attempts = max(1, attempts)
    for attempt in range(1, attempts + 1):
        try:
            return work(), attempt
        except Exception as exc:
            if attempt == attempts or not is_transient(exc):
                exc.attempts = attempt  # type: ignore[attr-defined]
                raise
            sleep(backoff_s * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def apply_halt(
    halt: str | Halt,
    *,
    ledger: Ledger | None = None,
    api_url: str | None = None,
    scaling_tag: str | None = None,
    names: Sequence[str] | None = None,
    attempts: int = DEFAULT_ATTEMPTS,
    backoff_s: float = DEFAULT_BACKOFF_S,
    record: bool = True,
    spare_runs: Sequence[str] = (),
) -> ApplyReport:
    """Make Prefect agree with one open halt: pause its scaling deployments, cancel their
    scheduled/pending/running/paused runs, keep the halt automation's list current. `ledger`
    None: the configured ledger. `spare_runs`: flow run ids not to cancel (a trainer applying
    the halt its own gate opened ends itself; cancelling it could kill it before it notifies)."""
    from policy.halts import scope_of
    from tasks.enforcement.automation import GuardSync, automation_name, keep_guard
    from tasks.enforcement.enforce import HaltTarget, enforce, targets_of
    from tasks.enforcement.enforce import plan as make_plan
    from tasks.enforcement.prefect_api import prefect_client, resolve_api_url, short_error
    from tasks.enforcement.settings import enforcement_settings
    from tasks.ledger import ledger_or_configured

    started = time.perf_counter()
    store = ledger_or_configured(ledger)
    halt_id = halt if isinstance(halt, str) else halt.halt_id
    current = store.halt(halt_id)
    if current is None:
        raise KeyError(f"no halt {halt_id!r} in ledger {store.url}")
    cfg = enforcement_settings(scaling_tag=scaling_tag, names=names)
    url: str | None = None
    url_error: str | None = None
    try:
        url = resolve_api_url(api_url)
    except Exception as exc:  # noqa: BLE001 - no URL configured is a failure to apply, reported like any other
        url_error = short_error(exc)
    report = ApplyReport(halt_id=halt_id, applied=False, attempts=0, api_url=url, gate_closed=current.is_open)
    if not current.is_open:
        report.error = f"halt {halt_id} was lifted at seq {current.lifted_seq}; nothing to apply"
        report.duration_s = time.perf_counter() - started
        return report
    target = HaltTarget(halt_id, scope_of(current.payload))

    def one_pass() -> Any:
        with prefect_client(url) as client:
            done = enforce(client, [target], scaling_tag=cfg.scaling_tag, names=cfg.names,
                           message=f"halted by rsp-gate: {halt_id}", spare_runs=spare_runs, queues=cfg.queues)
            # The automation reflects every open halt, not only this one.
            all_targets = targets_of(store.halts("open"))
            halted = make_plan(done.plan.deployments, [], all_targets).halted_deployment_ids()
            try:
                # Recreated if it was installed and has gone (restoring is recorded).
                guard, _ = keep_guard(client, store, cfg.scaling_tag, halted, api_url=url,
                                      halts=[t.halt_id for t in all_targets], by="apply", record=record)
            except Exception as exc:  # noqa: BLE001 - the automation is best effort; the gate is the guarantee
                guard = GuardSync(name=automation_name(cfg.scaling_tag), error=short_error(exc))
            return done, guard

    if url_error is not None:
        report.attempts, report.error = 0, url_error
    else:
        try:
            (done, guard), report.attempts = with_retries(one_pass, attempts=attempts, backoff_s=backoff_s)
        except Exception as exc:  # noqa: BLE001 - any failure means NOT applied; say why
            report.attempts = getattr(exc, "attempts", attempts)
            report.error = f"Prefect API at {url} failed: {short_error(exc)}"
        else:
            report.automation = f"error: {guard.error}" if guard.error else guard.change
            report.automation_state = guard.to_dict()
            if record and done.cancelled:
                report.runs_recorded = _record_cancelled(store, done, url)
            report.paused = done.paused
            report.cancelled = done.cancelled
            report.paused_queues, report.already_paused_queues = done.paused_queues, done.already_paused_queues(halt_id)
            report.errors = done.errors
            paused_ids = {p["id"] for p in done.paused}
            report.already_paused = [
                d.full_name for d in done.plan.deployments if done.plan.covering.get(d.id) and d.id not in paused_ids
                and d.paused
            ]
            if done.errors:
                report.error = "; ".join(f"{e['what']} {e['name']}: {e['error']}" for e in done.errors)[:500]
            else:
                report.applied = True
    report.duration_s = time.perf_counter() - started
    if record:
        _record(store, report)
    return report


def _record_cancelled(store: Ledger, done: Any, api_url: str | None) -> list[str]:
    """The runs this apply cancelled, each on record once as an attempt past the halt."""
    from tasks.enforcement.attempts import STOPPED_BY_APPLY, cancelled_by_enforcement, record_stopped_runs

    stopped = cancelled_by_enforcement(done.cancelled, done.plan.runs, done.plan.deployments, STOPPED_BY_APPLY)
    oldest = min((h.opened_seq for h in store.halts("open")), default=1)
    try:
        return record_stopped_runs(store, stopped, api_url=api_url, after_seq=oldest - 1)
    except Exception:  # noqa: BLE001 - the halt.applied record below matters more; the next reconcile retries
        return []


def _record(store: Ledger, report: ApplyReport) -> None:
    from tasks.ledger.events import HaltApplied, HaltApplyFailed

    if report.applied:
        changed = bool(report.paused or report.cancelled or report.paused_queues)
        first = not store.events(kind=HaltApplied.KIND, subject=report.halt_id, limit=1)
        if not (first or changed):
            return  # already applied and Prefect still agrees: nothing new to record
        store.record(HaltApplied(
            halt_id=report.halt_id,
            api_url=report.api_url,
            paused=[p["name"] for p in report.paused],
            already_paused=report.already_paused,
            cancelled=[c["id"] for c in report.cancelled],
            attempts=report.attempts,
            paused_queues=[q["name"] for q in report.paused_queues],
            already_paused_queues=report.already_paused_queues,
        ), report.halt_id)
        report.event = HaltApplied.KIND
    else:
        store.record(HaltApplyFailed(
            halt_id=report.halt_id,
            api_url=report.api_url,
            attempts=report.attempts,
            error=report.error,
            errors=report.errors,
            paused=[p["name"] for p in report.paused],
            cancelled=[c["id"] for c in report.cancelled],
            paused_queues=[q["name"] for q in report.paused_queues],
        ), report.halt_id)
        report.event = HaltApplyFailed.KIND


__all__ = ["ApplyReport", "apply_halt", "with_retries"]
