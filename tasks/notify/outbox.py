"""The notification outbox: every notification a channel owes, until it is delivered and recorded.

One row per idempotency key (halt_id|event_key|channel), holding the notification itself so a
retry needs nothing else. States:

    sending   -> claimed by a process that is delivering it now (a lease, so a crash is retried)
    sent      -> delivered, `notification.sent` not yet in the ledger (a crash between the two)
    recorded  -> delivered and recorded: done, never sent again
    failed    -> delivery failed; `next_attempt_at` says when `retry_pending` tries again

Claiming is a conditional update (or an insert racing on the primary key), so two processes
never deliver the same key at once. The ledger stays the audit record; this table is how
delivery is coordinated and retried. SQLite by default (<home>/notify/outbox.db), any
SQLAlchemy URL otherwise (share it between machines that notify).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from tasks.state_db import open_state_engine

METADATA = MetaData()
OUTBOX = Table(
    "notify_outbox",
    METADATA,
    Column("key", String(600), primary_key=True),
    Column("halt_id", String(200), nullable=False, index=True),
    Column("channel", String(50), nullable=False),
    Column("event_key", String(300), nullable=False),
    Column("state", String(20), nullable=False, index=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False, default=0.0),
    Column("lease_until", Float, nullable=False, default=0.0),
    Column("last_error", Text, nullable=True),
    Column("notification", Text, nullable=False),
    Column("ref", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)
LEASE_S = 120.0
MAX_BACKOFF_S = 3600.0


@dataclass(frozen=True)
class OutboxRow:
    key: str
    halt_id: str
    channel: str
    event_key: str
    state: str
    attempts: int
    next_attempt_at: float
    last_error: str | None
    notification: dict[str, Any]
    ref: dict[str, Any] | None


def _row(r: Any) -> OutboxRow:
    return OutboxRow(key=r.key, halt_id=r.halt_id, channel=r.channel, event_key=r.event_key, state=r.state,
                     attempts=r.attempts, next_attempt_at=r.next_attempt_at, last_error=r.last_error,
                     notification=json.loads(r.notification), ref=None if r.ref is None else json.loads(r.ref))


def _engine(url: str) -> Engine:
    engine = open_state_engine(url)
    METADATA.create_all(engine)
    return engine


class Outbox:
    def __init__(self, url: str, *, clock: Callable[[], float] = time.time, lease_s: float = LEASE_S) -> None:
        self.url = url
        self._engine = _engine(url)
        self._clock = clock
        self.lease_s = lease_s

    def close(self) -> None:
        self._engine.dispose()

    def get(self, key: str) -> OutboxRow | None:
        with self._engine.connect() as conn:
            r = conn.execute(select(OUTBOX).where(OUTBOX.c.key == key)).first()
        return None if r is None else _row(r)

    def claim(self, key: str, halt_id: str, channel: str, event_key: str, notification: dict[str, Any],
              *, force: bool = False) -> bool:
        """Take the right to deliver `key` now. False: delivered already, someone else is
        delivering it, or (unless `force`) its retry is not due yet."""
        now = self._clock()
        text = json.dumps(notification, sort_keys=True, default=str)
        with self._engine.begin() as conn:
            r = conn.execute(select(OUTBOX).where(OUTBOX.c.key == key)).first()
            if r is None:
                try:
                    conn.execute(insert(OUTBOX).values(
                        key=key, halt_id=halt_id, channel=channel, event_key=event_key, state="sending",
                        attempts=0, next_attempt_at=0.0, lease_until=now + self.lease_s, last_error=None,
                        notification=text, ref=None, created_at=now, updated_at=now))
                    return True
                except IntegrityError:
                    return False  # another process inserted it first: it delivers
            if r.state in ("sent", "recorded"):
                return False
            if r.state == "sending" and r.lease_until > now:
                return False
            if r.state == "failed" and r.next_attempt_at > now and not force:
                return False
            done = conn.execute(
                update(OUTBOX)
                .where(OUTBOX.c.key == key, OUTBOX.c.state == r.state, OUTBOX.c.updated_at == r.updated_at)
                .values(state="sending", lease_until=now + self.lease_s, updated_at=now)
            )
            return done.rowcount == 1

    def mark_sent(self, key: str, ref: dict[str, Any]) -> None:
        self._set(key, state="sent", ref=json.dumps(ref, sort_keys=True, default=str), last_error=None)

    def mark_recorded(self, key: str) -> None:
        self._set(key, state="recorded")

    def mark_failed(self, key: str, error: str, base_s: float) -> OutboxRow | None:
        now = self._clock()
        with self._engine.begin() as conn:
            r = conn.execute(select(OUTBOX.c.attempts).where(OUTBOX.c.key == key)).first()
            attempts = (r.attempts if r else 0) + 1
            delay = min(base_s * 2 ** (attempts - 1), MAX_BACKOFF_S)
            conn.execute(update(OUTBOX).where(OUTBOX.c.key == key).values(
                state="failed", attempts=attempts, next_attempt_at=now + delay, last_error=error[:1000],
                lease_until=0.0, updated_at=now))
        return self.get(key)

    def _set(self, key: str, **values: Any) -> None:
        with self._engine.begin() as conn:
            conn.execute(update(OUTBOX).where(OUTBOX.c.key == key).values(updated_at=self._clock(), **values))

    def pending(self, *, force: bool = False, limit: int = 500) -> list[OutboxRow]:
        """Rows that still owe something: failed ones that are due (all with `force`), sent ones not
        yet recorded, and deliveries whose lease ran out (the process died mid-send)."""
        now = self._clock()
        o = OUTBOX
        with self._engine.connect() as conn:
            rows = conn.execute(select(o).where(o.c.state.in_(("failed", "sent", "sending")))
                                .order_by(o.c.created_at).limit(limit)).all()
        out = []
        for r in rows:
            if r.state == "failed" and (force or r.next_attempt_at <= now) or r.state == "sent" or r.state == "sending" and r.lease_until <= now:
                out.append(_row(r))
        return out

    def rows(self, halt_id: str | None = None) -> list[OutboxRow]:
        query = select(OUTBOX).order_by(OUTBOX.c.created_at)
        if halt_id is not None:
            query = query.where(OUTBOX.c.halt_id == halt_id)
        with self._engine.connect() as conn:
            return [_row(r) for r in conn.execute(query)]


__all__ = ["LEASE_S", "Outbox", "OutboxRow"]
