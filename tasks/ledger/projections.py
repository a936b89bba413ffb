"""Projections: query tables derived from events.

`project` runs inside the append transaction, after the event row is written and
before commit, so a projection never disagrees with the chain; when it refuses an
event (a second halt for one cause, lifting a halt that is not open, a claim someone
else holds) the whole append rolls back. `rebuild` replays the events into empty
projection tables, so the events stay the only source of truth.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from tasks.ledger import schema
from tasks.ledger.chain import Event, canonical
from tasks.ledger.errors import ClaimConflict, HaltConflict, InvalidEvent
from tasks.ledger.events import (
    DeterminationRecorded,
    EvaluationClaimed,
    EvaluationCompleted,
    EvaluationFailed,
    EvaluationReleased,
    HaltLifted,
    HaltOpened,
    LedgerEventModel,
)

# A handler gets the stored event and its payload's model (tasks/ledger/events.py), already validated.
Handler = Callable[[Connection, Event, LedgerEventModel], None]
ClaimEvent = EvaluationClaimed | EvaluationCompleted | EvaluationReleased | EvaluationFailed


def epoch(ts: str) -> float:
    return dt.datetime.fromisoformat(ts).timestamp()


def _non_empty(event: Event, name: str, value: str | None, *, optional: bool = False) -> str | None:
    """The models say a field is a string; the projections also need it not to be empty."""
    if value is None and optional:
        return None
    if not value:
        raise InvalidEvent(
            f"{event.kind} event for {event.subject!r}: payload[{name!r}] must be a non-empty string, "
            f"got {value!r:.80}"
        )
    return value


def _determination(conn: Connection, event: Event, typed: LedgerEventModel) -> None:
    # The model has checked the shape: checkpoint an object, run_id a string, step an integer.
    assert isinstance(typed, DeterminationRecorded)
    checkpoint = typed.checkpoint
    conn.execute(
        insert(schema.determinations).values(
            seq=event.seq,
            run_id=None if checkpoint is None else checkpoint.run_id,
            step=None if checkpoint is None else checkpoint.step,
            assessment=typed.assessment,
        )
    )


def _halt_id(event: Event, typed: LedgerEventModel) -> str:
    assert isinstance(typed, HaltOpened | HaltLifted)
    halt_id = _non_empty(event, "halt_id", typed.halt_id)
    assert halt_id is not None
    if event.subject != halt_id:
        # Keeps events(subject=halt_id) the full history of a halt.
        raise InvalidEvent(
            f"{event.kind} event: subject {event.subject!r} must equal payload['halt_id'] {halt_id!r}"
        )
    return halt_id


def _halt_opened(conn: Connection, event: Event, typed: LedgerEventModel) -> None:
    assert isinstance(typed, HaltOpened)
    halt_id = _halt_id(event, typed)
    cause_key = _non_empty(event, "cause_key", typed.cause_key, optional=True)
    h = schema.halts
    existing = conn.execute(select(h.c.opened_seq).where(h.c.halt_id == halt_id)).first()
    if existing is not None:
        raise HaltConflict(f"halt {halt_id!r} was already opened at seq {existing.opened_seq}")
    if cause_key is not None:
        same = conn.execute(select(h.c.halt_id, h.c.opened_seq).where(h.c.cause_key == cause_key)).first()
        if same is not None:
            raise HaltConflict(
                f"cause {cause_key!r} already opened halt {same.halt_id!r} at seq {same.opened_seq}"
            )
    conn.execute(
        insert(h).values(halt_id=halt_id, cause_key=cause_key, opened_seq=event.seq, lifted_seq=None)
    )


def _halt_lifted(conn: Connection, event: Event, typed: LedgerEventModel) -> None:
    halt_id = _halt_id(event, typed)
    h = schema.halts
    row = conn.execute(select(h.c.lifted_seq).where(h.c.halt_id == halt_id)).first()
    if row is None:
        raise HaltConflict(f"cannot lift halt {halt_id!r}: no such halt")
    if row.lifted_seq is not None:
        raise HaltConflict(f"cannot lift halt {halt_id!r}: already lifted at seq {row.lifted_seq}")
    conn.execute(update(h).where(h.c.halt_id == halt_id).values(lifted_seq=event.seq))


def _claim_key(event: Event, typed: ClaimEvent) -> tuple[str, str]:
    key, owner = _non_empty(event, "key", typed.key), _non_empty(event, "owner", typed.owner)
    assert key is not None and owner is not None
    if event.subject != key:
        raise InvalidEvent(f"{event.kind} event: subject {event.subject!r} must equal payload['key'] {key!r}")
    return key, owner


def _claimed(conn: Connection, event: Event, typed: LedgerEventModel) -> None:
    assert isinstance(typed, EvaluationClaimed)
    key, owner = _claim_key(event, typed)
    if typed.attempt < 1:
        raise InvalidEvent(f"evaluation.claimed for {key!r}: needs attempt (int >= 1) and lease_expires_at")
    c = schema.claims
    row = conn.execute(select(c).where(c.c.key == key)).first()
    values: dict[str, Any] = {
        "owner": owner,
        "state": "claimed",
        "attempts": typed.attempt,
        "claimed_at": event.ts,
        "lease_expires": epoch(typed.lease_expires_at),
        "finished_seq": None,
        "outcome": None,
    }
    if row is None:
        conn.execute(insert(c).values(key=key, **values))
        return
    # Judged at the event's own time, so a replay reaches the same verdict as the live append.
    if row.state == "completed":
        raise ClaimConflict(f"{key!r} was already completed by {row.owner!r}")
    if row.state == "claimed" and row.owner != owner and row.lease_expires > epoch(event.ts):
        raise ClaimConflict(f"{key!r} is held by {row.owner!r} until its lease expires")
    conn.execute(update(c).where(c.c.key == key).values(**values))


def _finished(state: str) -> Handler:
    def apply(conn: Connection, event: Event, typed: LedgerEventModel) -> None:
        assert isinstance(typed, EvaluationCompleted | EvaluationReleased | EvaluationFailed)
        key, owner = _claim_key(event, typed)
        c = schema.claims
        row = conn.execute(select(c.c.owner, c.c.state).where(c.c.key == key)).first()
        if row is None or row.state != "claimed" or row.owner != owner:
            held = "no claim" if row is None else f"{row.state} by {row.owner!r}"
            raise ClaimConflict(f"{owner!r} cannot mark {key!r} {state}: it is {held}")
        detail: Any = None  # completed: the outcome; failed: the error; released: nothing
        if isinstance(typed, EvaluationCompleted):
            detail = typed.outcome
        elif isinstance(typed, EvaluationFailed):
            detail = typed.error
        conn.execute(
            update(c)
            .where(c.c.key == key)
            .values(
                state=state, finished_seq=event.seq, outcome=None if detail is None else canonical(detail)
            )
        )

    return apply

HANDLERS: dict[str, Handler] = {
    DeterminationRecorded.KIND: _determination,
    HaltOpened.KIND: _halt_opened,
    HaltLifted.KIND: _halt_lifted,
    EvaluationClaimed.KIND: _claimed,
    EvaluationCompleted.KIND: _finished("completed"),
    EvaluationReleased.KIND: _finished("released"),
    EvaluationFailed.KIND: _finished("failed"),
}


def project(conn: Connection, event: Event, typed: LedgerEventModel | None = None) -> None:
    """Apply `event` to the projection tables. `typed` is its model when the appender already
    parsed it (saves a second validation); a replay parses it here."""
    handler = HANDLERS.get(event.kind)
    if handler is not None:
        handler(conn, event, typed if typed is not None else event.typed())


def clear(conn: Connection) -> None:
    for table in schema.PROJECTIONS:
        conn.execute(delete(table))
