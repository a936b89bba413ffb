"""The reconciler: make Prefect agree with every open halt in the ledger, again and again.

Why it exists: Prefect state drifts away from the ledger. `serve` un-pauses its
deployments when it restarts, someone resumes a deployment in the UI, a halt opened while
the Prefect server was down was never applied. So the ledger is read afresh and applied
on every watch tick (`reconcile()`), when a serve process starts (`serve_scaling`), and on
demand (`rsp halt reconcile`).

Idempotent: when Prefect already agrees, a pass makes no Prefect write and appends no
ledger event. When it corrected drift it appends `halt.reconciled` (per halt, naming what
it fixed). When Prefect cannot be reached it appends `halt.reconcile_failed` once per
outage (not on every tick). The time and outcome of the last pass go to a small state
file outside the ledger (<home>/enforcement/reconcile.json) for `rsp status`.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.storage import write_atomic

if TYPE_CHECKING:
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
    errors: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    automation: str | None = None
    events: list[str] = field(default_factory=list)  # ledger event kinds written by this pass
    attempts: int = 0
    duration_s: float = 0.0
    ledger: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        if self.error:
            return f"reconcile FAILED ({len(self.halts)} open halt(s)): {self.error}"
        if not self.halts:
            return "reconcile: no open halts; nothing to enforce"
        if self.changed:
            return (f"reconcile: fixed drift for {len(self.halts)} open halt(s): {len(self.paused)} deployment(s) "
                    f"paused, {len(self.cancelled)} run(s) cancelled")
        return f"reconcile: Prefect agrees with {len(self.halts)} open halt(s); nothing changed"


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
    from tasks.enforcement.automation import sync_halt_automation
    from tasks.enforcement.enforce import enforce, targets_of
    from tasks.enforcement.prefect_api import prefect_client, resolve_api_url, short_error
    from tasks.enforcement.settings import enforcement_settings
    from tasks.ledger import ledger_or_configured
    from tasks.ledger.events import HaltReconciled, HaltReconcileFailed

    started = time.perf_counter()
    store = ledger_or_configured(ledger)
    cfg = enforcement_settings(scaling_tag=scaling_tag, names=names)
    path = state_path or cfg.state_path
    previous = read_state(path)
    open_halts = store.halts("open")
    targets = targets_of(open_halts)
    report = ReconcileReport(checked_at=_now(), ok=True, halts=[h.halt_id for h in open_halts], ledger=store.url)
    try:
        report.api_url = resolve_api_url(api_url)
    except Exception as exc:  # noqa: BLE001
        report.ok, report.error = not targets, short_error(exc)

    if report.api_url is not None and not targets:
        # Nothing to enforce; only switch the automation off if it is still on (best effort).
        try:
            with prefect_client(report.api_url) as client:
                report.automation = sync_halt_automation(client, cfg.scaling_tag, [], create=False)
        except Exception as exc:  # noqa: BLE001 - no halt is open, so a down server changes nothing here
            report.automation = f"error: {short_error(exc)}"
    elif report.api_url is not None:
        def one_pass() -> Any:
            with prefect_client(report.api_url) as client:
                done = enforce(client, targets, scaling_tag=cfg.scaling_tag, names=cfg.names,
                               message="halted by rsp-gate (reconcile)")
                try:
                    automation = sync_halt_automation(
                        client, cfg.scaling_tag, done.plan.halted_deployment_ids(), create=False
                    )
                except Exception as exc:  # noqa: BLE001 - best effort
                    automation = f"error: {short_error(exc)}"
                return done, automation

        try:
            (done, report.automation), report.attempts = with_retries(one_pass, attempts=attempts, backoff_s=backoff_s)
        except Exception as exc:  # noqa: BLE001
            report.attempts = getattr(exc, "attempts", attempts)
            report.ok, report.error = False, f"Prefect API at {report.api_url} failed: {short_error(exc)}"
        else:
            report.paused, report.cancelled, report.errors = done.paused, done.cancelled, done.errors
            report.changed = done.changed
            report.ok = done.ok
            if done.errors:
                report.error = "; ".join(f"{e['what']} {e['name']}: {e['error']}" for e in done.errors)[:500]
            if record and done.changed:
                for h in open_halts:
                    fixed = done.fixed_for(h.halt_id)
                    if fixed["paused"] or fixed["cancelled"]:
                        store.record(HaltReconciled(halt_id=h.halt_id, api_url=report.api_url, **fixed), h.halt_id)
                        report.events.append(HaltReconciled.KIND)
    if record and not report.ok and targets and (previous is None or previous.get("ok", True)):
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
        "duration_s": round(report.duration_s, 4),
    })
    return report


def last_reconcile(state_path: Path | None = None) -> dict[str, Any] | None:
    """What the last reconcile pass recorded in the state file (None if none ran here)."""
    from tasks.enforcement.settings import enforcement_settings

    return read_state(state_path or enforcement_settings().state_path)


__all__ = ["ReconcileReport", "last_reconcile", "read_state", "reconcile", "write_state"]
