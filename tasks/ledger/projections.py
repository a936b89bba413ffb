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


def epoch(ts: str) -> float:
    return dt.datetime.fromisoformat(ts).timestamp()


def _str_field(event: Event, name: str, *, optional: bool = False) -> str | None:
    value = event.payload.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidEvent(
            f"{event.kind} event for {event.subject!r}: payload[{name!r}] must be a non-empty string, "
            f"got {value!r:.80}"
        )
    return value


def _determination(conn: Connection, event: Event) -> None:
    checkpoint = event.payload.get("checkpoint")
    run_id: str | None = None
    step: int | None = None
    if checkpoint is not None:
        if not isinstance(checkpoint, dict):
            raise InvalidEvent(
                f"determination.recorded for {event.subject!r}: payload['checkpoint'] must be an object"
            )
        run_id, step = checkpoint.get("run_id"), checkpoint.get("step")
        if run_id is not None and not isinstance(run_id, str):
            raise InvalidEvent(
                f"determination.recorded for {event.subject!r}: checkpoint.run_id must be a string"
            )
        if step is not None and (not isinstance(step, int) or isinstance(step, bool)):
            raise InvalidEvent(
                f"determination.recorded for {event.subject!r}: checkpoint.step must be an integer"
            )
    assessment = event.payload.get("assessment")
    if assessment is not None and not isinstance(assessment, str):
        raise InvalidEvent(f"determination.recorded for {event.subject!r}: assessment must be a string")
    conn.execute(
        insert(schema.determinations).values(seq=event.seq, run_id=run_id, step=step, assessment=assessment)
    )


def _halt_id(event: Event) -> str:
    halt_id = _str_field(event, "halt_id")
    assert halt_id is not None
    if event.subject != halt_id:
        # Keeps events(subject=halt_id) the full history of a halt.
        raise InvalidEvent(
            f"{event.kind} event: subject {event.subject!r} must equal payload['halt_id'] {halt_id!r}"
        )
    return halt_id


def _halt_opened(conn: Connection, event: Event) -> None:
    halt_id = _halt_id(event)
    cause_key = _str_field(event, "cause_key", optional=True)
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


def _halt_lifted(conn: Connection, event: Event) -> None:
    halt_id = _halt_id(event)
    h = schema.halts
    row = conn.execute(select(h.c.lifted_seq).where(h.c.halt_id == halt_id)).first()
    if row is None:
        raise HaltConflict(f"cannot lift halt {halt_id!r}: no such halt")
    if row.lifted_seq is not None:
        raise HaltConflict(f"cannot lift halt {halt_id!r}: already lifted at seq {row.lifted_seq}")
    conn.execute(update(h).where(h.c.halt_id == halt_id).values(lifted_seq=event.seq))


def _claim_key(event: Event) -> tuple[str, str]:
    key, owner = _str_field(event, "key"), _str_field(event, "owner")
    assert key is not None and owner is not None
    if event.subject != key:
        raise InvalidEvent(f"{event.kind} event: subject {event.subject!r} must equal payload['key'] {key!r}")
    return key, owner


def _claimed(conn: Connection, event: Event) -> None:
    key, owner = _claim_key(event)
    attempt = event.payload.get("attempt")
    expires_at = event.payload.get("lease_expires_at")
    if not isinstance(attempt, int) or attempt < 1 or not isinstance(expires_at, str):
        raise InvalidEvent(f"evaluation.claimed for {key!r}: needs attempt (int >= 1) and lease_expires_at")
    c = schema.claims
    row = conn.execute(select(c).where(c.c.key == key)).first()
    values: dict[str, Any] = {
        "owner": owner,
        "state": "claimed",
        "attempts": attempt,
        "claimed_at": event.ts,
        "lease_expires": epoch(expires_at),
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


def _finished(state: str) -> Callable[[Connection, Event], None]:
    def apply(conn: Connection, event: Event) -> None:
        key, owner = _claim_key(event)
        c = schema.claims
        row = conn.execute(select(c.c.owner, c.c.state).where(c.c.key == key)).first()
        if row is None or row.state != "claimed" or row.owner != owner:
            held = "no claim" if row is None else f"{row.state} by {row.owner!r}"
            raise ClaimConflict(f"{owner!r} cannot mark {key!r} {state}: it is {held}")
        detail = event.payload.get("outcome") if state == "completed" else event.payload.get("error")
        conn.execute(
            update(c)
            .where(c.c.key == key)
            .values(
                state=state, finished_seq=event.seq, outcome=None if detail is None else canonical(detail)
            )
        )

    return apply


HANDLERS: dict[str, Callable[[Connection, Event], None]] = {
    "determination.recorded": _determination,
    "halt.opened": _halt_opened,
    "halt.lifted": _halt_lifted,
    "evaluation.claimed": _claimed,
    "evaluation.completed": _finished("completed"),
    "evaluation.released": _finished("released"),
    "evaluation.failed": _finished("failed"),
}


def project(conn: Connection, event: Event) -> None:
    handler = HANDLERS.get(event.kind)
    if handler is not None:
        handler(conn, event)


def clear(conn: Connection) -> None:
    for table in schema.PROJECTIONS:
        conn.execute(delete(table))
