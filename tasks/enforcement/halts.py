"""Halts in the ledger: opening them idempotently, and reading back the determination behind one.

The ledger is the single source of truth: a halt exists once its `halt.opened` event is
written, and the gate closes at that moment, before Prefect is told anything.

Idempotency: a determination's cause is (policy sha256, required level, unmet safeguards,
scope). While a halt for that cause is open, the same cause returns it instead of opening
another; the ledger's unique cause key makes that hold across racing processes. Once a
halt is lifted, the same cause seen again in a *new* determination (another checkpoint)
opens a new halt (the next epoch of the cause key), so lifting can never disarm a cause
for good; the same determination replayed returns the lifted halt and opens nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from policy.halts import (
    HaltRecord,
    OverdueRef,
    cause_key,
    determination_cause_base,
    manual_record,
    overdue_cause_base,
    overdue_record,
    record_for_determination,
    scope_for_determination,
    unmet_safeguards,
)

if TYPE_CHECKING:
    from tasks.ledger import Halt, Ledger

MAX_EPOCHS = 10_000  # a cause lifted ten thousand times is a loop, not a policy


def _as_determination(determination: Any) -> Any:
    from policy.determination import Determination

    if isinstance(determination, Determination):
        return determination
    if isinstance(determination, Mapping):
        return Determination.model_validate(dict(determination))
    raise TypeError(f"expected a Determination or its JSON object, got {type(determination).__name__}")


def _same_determination(payload: Mapping[str, Any], seq: int | None, run_id: str | None, step: int | None) -> bool:
    why = payload.get("why")
    det = why.get("determination") if isinstance(why, Mapping) else None
    if not isinstance(det, Mapping):
        return False
    if seq is not None and det.get("seq") is not None:
        return bool(det.get("seq") == seq)
    return run_id is not None and det.get("run_id") == run_id and det.get("step") == step


def open_halt(
    determination: Any,
    *,
    ledger: Ledger | None = None,
    runs: Sequence[str] | None = None,
    seq: int | None = None,
    subject: str | None = None,
    policy: Any | None = None,
    opened_by: str = "halt-flow",
) -> tuple[Halt, bool]:
    """Record the halt a determination calls for: (halt, created).

    `determination` is a `policy.determination.Determination` (or its JSON); `seq`/`subject`
    point at its `determination.recorded` event; `runs` narrows the halt to those training
    runs (default: every scaling run); `policy` supplies the approver rules that lift it;
    `ledger` None: the configured ledger. Raises ValueError when the determination decided `proceed`."""
    det = _as_determination(determination)
    if det.decision != "halt" and not det.halts:
        raise ValueError("determination decided 'proceed': there is nothing to halt")
    from tasks.ledger import ledger_or_configured

    store = ledger_or_configured(ledger)
    scope = scope_for_determination(det, runs)
    base = determination_cause_base(det.policy.sha256, det.required_level, unmet_safeguards(det), scope)
    run_id = det.checkpoint.run_id if det.checkpoint else None
    step = det.checkpoint.step if det.checkpoint else None
    for epoch in range(MAX_EPOCHS):
        key = cause_key(base, epoch)
        existing = store.find_halt_by_cause(key)
        if existing is None:
            record = record_for_determination(
                det, key=key, runs=runs, seq=seq, subject=subject, policy=policy, opened_by=opened_by
            )
            halt, created = store.open_halt(record.model_dump(mode="json"))
            if created or halt.is_open:
                return halt, created
            existing = halt  # another process opened and lifted this epoch meanwhile: judge it like any other
        if existing.is_open:
            return existing, False
        if _same_determination(existing.payload, seq, run_id, step):
            return existing, False
    raise RuntimeError(f"cause {base} has been halted and lifted {MAX_EPOCHS} times; refusing to go on")


def open_manual_halt(
    reason: str,
    activities: Sequence[str] = ("training", "deployment"),
    *,
    runs: Sequence[str] | None = None,
    opened_by: str = "operator",
    cause: str | None = None,
    ledger: Ledger | None = None,
    policy: Any | None = None,
) -> tuple[Halt, bool]:
    """An operator's halt. Each call is a new cause unless `cause` names one (then idempotent)."""
    from tasks.ledger import ledger_or_configured

    store = ledger_or_configured(ledger)
    key = None if cause is None else f"manual:{cause}#0"
    record = manual_record(reason, activities, runs=runs, opened_by=opened_by, key=key, policy=policy)
    return store.open_halt(record.model_dump(mode="json"))


def open_overdue_halt(
    overdue: OverdueRef,
    reason: str,
    *,
    ledger: Ledger | None = None,
    policy: Any | None = None,
    opened_by: str = "scaling-gate",
) -> tuple[Halt, bool]:
    """The `evaluation_overdue` halt of `overdue.run_id`: the open one if there is one (created
    False), else a new one at the cause's next epoch (each lift by catching up ends an epoch)."""
    from tasks.ledger import ledger_or_configured

    store = ledger_or_configured(ledger)
    base = overdue_cause_base(overdue.run_id)
    for epoch in range(MAX_EPOCHS):
        key = cause_key(base, epoch)
        existing = store.find_halt_by_cause(key)
        if existing is None:
            record = overdue_record(overdue, [reason], key=key, policy=policy, opened_by=opened_by)
            halt, created = store.open_halt(record.model_dump(mode="json"))
            if created or halt.is_open:
                return halt, created
            existing = halt
        if existing.is_open:
            return existing, False
    raise RuntimeError(f"run {overdue.run_id} has been overdue and caught up {MAX_EPOCHS} times; refusing to go on")


def open_record(record: HaltRecord, *, ledger: Ledger | None = None) -> tuple[Halt, bool]:
    from tasks.ledger import ledger_or_configured

    return ledger_or_configured(ledger).open_halt(record.model_dump(mode="json"))


def determination_of(ledger: Ledger, payload: Mapping[str, Any]) -> dict[str, Any] | None:
    """The `determination.recorded` payload that caused a halt (`payload` is its halt.opened
    payload): found by the ledger seq the halt records, else the latest determination on the
    subject it names. None for a manual halt, or when the ledger no longer holds it."""
    from tasks.ledger.events import DeterminationRecorded

    why = payload.get("why")
    det = why.get("determination") if isinstance(why, Mapping) else None
    if not isinstance(det, Mapping):
        return None
    seq = det.get("seq")
    if isinstance(seq, int):
        event = ledger.event(seq)
        if event is not None and event.kind == DeterminationRecorded.KIND:
            return event.payload
    subject = det.get("subject")
    if isinstance(subject, str) and subject:
        found = ledger.events(kind=DeterminationRecorded.KIND, subject=subject)
        if found:
            return found[-1].payload
    return None


__all__ = ["determination_of", "open_halt", "open_manual_halt", "open_overdue_halt", "open_record"]
