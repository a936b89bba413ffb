"""The ledger: an append-only, hash-chained event log in a SQL database.

There is deliberately no update or delete: corrections are new events. Every append
takes the write lock, reads the head, writes the event and its projections, moves the
head and commits, so seq is gapless and the chain linear with any number of writers.

Events are typed (tasks/ledger/events.py): `record(event, subject)` writes a model,
`append(kind, subject, payload)` a kind and a dict, and both check a listed kind's
payload against its model before anything is written.

A ledger has an identity (`identity()`, `ledger_id`): a random id written when it is
created, or, for a ledger older than identities, one derived from its first event. A gate
configured with RSP_LEDGER_ID refuses any other ledger. Only the creating commands (`rsp
init`, the first `watch` / `serve`) pass `create=True`; everything that only uses a ledger
opens it with `create=False` and gets `LedgerNotFound` when there is none.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Self

from pydantic import BaseModel
from sqlalchemy import Connection, Engine, bindparam, func, insert, inspect, select, update

from tasks.ledger import projections, schema
from tasks.ledger.chain import (
    GENESIS_HASH,
    ChainVerifier,
    Event,
    VerifyReport,
    canonical,
    event_hash,
    utc_iso,
)
from tasks.ledger.claims import ClaimsMixin
from tasks.ledger.engine import genesis_identity, open_engine, read_tx, redact, write_tx
from tasks.ledger.errors import InvalidEvent
from tasks.ledger.events import CheckpointWritten, LedgerEventModel, parse_event
from tasks.ledger.queries import QueriesMixin, row_event

# Built once: constructing statements per append costs more than executing them on SQLite.
_HEAD = select(schema.head.c.seq, schema.head.c.hash).where(schema.head.c.id == 1)
_INSERT = insert(schema.events)
_MOVE_HEAD = (
    update(schema.head).where(schema.head.c.id == 1).values(seq=bindparam("h_seq"), hash=bindparam("h_hash"))
)

KIND = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
BATCH = 2000

Clock = Callable[[], dt.datetime]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _normalise(
    kind: str, subject: str, payload: Mapping[str, Any] | BaseModel
) -> tuple[str, dict[str, Any], LedgerEventModel]:
    if not isinstance(kind, str) or len(kind) > 200 or not KIND.match(kind):
        raise InvalidEvent(f"event kind {kind!r} must be dotted lower-case words, e.g. 'halt.opened'")
    if not isinstance(subject, str):
        raise InvalidEvent(f"{kind} event: subject must be a string, got {type(subject).__name__}")
    if isinstance(payload, LedgerEventModel):
        if payload.kind != kind:
            raise InvalidEvent(f"{kind} event for {subject!r}: the payload given is a {payload.kind} event")
        payload = payload.to_payload()
    elif isinstance(payload, BaseModel):
        payload = payload.model_dump(mode="json")
    if not isinstance(payload, Mapping):
        raise InvalidEvent(
            f"{kind} event for {subject!r}: payload must be a JSON object, got {type(payload).__name__}"
        )
    try:
        text = canonical(dict(payload))
    except (TypeError, ValueError) as exc:
        raise InvalidEvent(f"{kind} event for {subject!r}: payload is not JSON: {exc}") from None
    # Hash and return the decoded canonical form, so the event equals what verify will recompute.
    decoded = json.loads(text)
    # Checked in its stored form, so a model and a dict are judged alike; a kind not listed passes as is.
    return text, decoded, parse_event(kind, decoded, subject)


@dataclass(frozen=True)
class LedgerIdentity:
    ledger_id: str
    origin: str  # created | derived_from_genesis (recorded) | genesis (derived now, not yet recorded)
    created_at: str | None = None


class Ledger(ClaimsMixin, QueriesMixin):
    """Open (and by default create) the ledger at `url`; None means the configured one.

    `create=False` (what every command but `rsp init`, watch and serve uses) raises
    `LedgerNotFound` when there is no ledger there, instead of creating an empty one."""

    def __init__(self, url: str | None = None, *, create: bool = True, clock: Clock | None = None) -> None:
        if url is None:
            from tasks.settings import get_settings

            url = get_settings().resolved_ledger_url
        self._engine: Engine = open_engine(url, create=create)
        self._clock: Clock = clock or _utc_now
        self.url = redact(url)

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({self.url!r})"

    # -- writing ---------------------------------------------------------------------------

    def append(self, kind: str, subject: str, payload: Mapping[str, Any] | BaseModel) -> Event:
        with write_tx(self._engine) as conn:
            return self._append_in(conn, kind, subject, payload)

    def record(self, event: LedgerEventModel, subject: str) -> Event:
        """Append a typed event (tasks/ledger/events.py); its kind comes from the model."""
        return self.append(event.kind, subject, event)

    def record_many(self, items: Iterable[tuple[LedgerEventModel, str]]) -> list[Event]:
        """`record` several (event, subject) pairs in one transaction: all or none."""
        return self.append_many((event.kind, subject, event) for event, subject in items)

    def append_many(self, items: Iterable[tuple[str, str, Mapping[str, Any] | BaseModel]]) -> list[Event]:
        """Append several events in one transaction: all or none, one lock and one fsync for the lot."""
        with write_tx(self._engine) as conn:
            head = conn.execute(_HEAD).one()
            seq, prev = head.seq, head.hash
            written = []
            for kind, subject, payload in items:
                event = self._write_event(conn, seq, prev, kind, subject, payload, None)
                written.append(event)
                seq, prev = event.seq, event.hash
            if written:
                conn.execute(_MOVE_HEAD, {"h_seq": seq, "h_hash": prev})
            return written

    def _append_in(
        self,
        conn: Connection,
        kind: str,
        subject: str,
        payload: Mapping[str, Any] | BaseModel,
        at: dt.datetime | None = None,
    ) -> Event:
        """Append inside a write transaction (the caller holds the lock)."""
        head = conn.execute(_HEAD).one()
        event = self._write_event(conn, head.seq, head.hash, kind, subject, payload, at)
        conn.execute(_MOVE_HEAD, {"h_seq": event.seq, "h_hash": event.hash})
        return event

    def _record_in(
        self, conn: Connection, event: LedgerEventModel, subject: str, at: dt.datetime | None = None
    ) -> Event:
        """`record` inside a write transaction (the caller holds the lock)."""
        return self._append_in(conn, event.kind, subject, event, at)

    def _write_event(
        self,
        conn: Connection,
        prev_seq: int,
        prev_hash: str,
        kind: str,
        subject: str,
        payload: Mapping[str, Any] | BaseModel,
        at: dt.datetime | None,
    ) -> Event:
        text, decoded, typed = _normalise(kind, subject, payload)
        seq, ts = prev_seq + 1, utc_iso(at or self._clock())
        digest = event_hash(seq, ts, kind, subject, decoded, prev_hash)
        event = Event(seq, ts, kind, subject, decoded, prev_hash, digest)
        conn.execute(
            _INSERT,
            {
                "seq": seq,
                "ts": ts,
                "kind": kind,
                "subject": subject,
                "payload": text,
                "prev_hash": prev_hash,
                "hash": digest,
            },
        )
        projections.project(conn, event, typed)
        return event

    # -- reading ---------------------------------------------------------------------------

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the last event; (0, 64 zeros) when empty."""
        with read_tx(self._engine) as conn:
            row = conn.execute(
                select(schema.head.c.seq, schema.head.c.hash).where(schema.head.c.id == 1)
            ).one()
        return row.seq, row.hash

    def event(self, seq: int) -> Event | None:
        with read_tx(self._engine) as conn:
            row = conn.execute(select(schema.events).where(schema.events.c.seq == seq)).first()
        return None if row is None else row_event(row)

    def iter_events(
        self,
        kind: str | None = None,
        subject: str | None = None,
        after_seq: int = 0,
        limit: int | None = None,
        batch: int = BATCH,
    ) -> Iterator[Event]:
        """Events in seq order, fetched in batches (keyset pages, each its own short read)."""
        e = schema.events
        last, left = after_seq, limit
        while left is None or left > 0:
            size = batch if left is None else min(batch, left)
            query = select(e).where(e.c.seq > last).order_by(e.c.seq).limit(size)
            if kind is not None:
                query = query.where(e.c.kind == kind)
            if subject is not None:
                query = query.where(e.c.subject == subject)
            with read_tx(self._engine) as conn:
                rows = conn.execute(query).all()
            for row in rows:
                yield row_event(row)
            if len(rows) < size:
                return
            last = rows[-1].seq
            if left is not None:
                left -= len(rows)

    def events(
        self,
        kind: str | None = None,
        subject: str | None = None,
        after_seq: int = 0,
        limit: int | None = None,
    ) -> list[Event]:
        return list(self.iter_events(kind=kind, subject=subject, after_seq=after_seq, limit=limit))

    # -- identity and runs ------------------------------------------------------------------

    def identity(self) -> LedgerIdentity | None:
        """Which ledger this is: recorded at creation, else derived from the first event; None for an
        empty ledger created before identities existed (the next `rsp init` assigns one)."""
        with read_tx(self._engine) as conn:
            if inspect(conn).has_table(schema.identity.name):
                row = conn.execute(select(schema.identity).where(schema.identity.c.id == 1)).first()
                if row is not None:
                    return LedgerIdentity(row.ledger_id, row.origin, row.created_at)
            derived = genesis_identity(conn)
        return None if derived is None else LedgerIdentity(derived[0], "genesis")

    @property
    def ledger_id(self) -> str | None:
        found = self.identity()
        return None if found is None else found.ledger_id

    def last_determined_step(self, run_id: str) -> int | None:
        """The highest step of `run_id` with a recorded determination (one indexed read)."""
        d = schema.determinations
        with read_tx(self._engine) as conn:
            return conn.execute(select(func.max(d.c.step)).where(d.c.run_id == run_id)).scalar()

    def determined_steps(self, run_id: str) -> set[int]:
        """Every step of `run_id` with a recorded determination. The lag bound counts a reported checkpoint
        as evaluated only when its own step was determined: a higher step does not cover it (a stray
        manifest at step 10**6 must not make the run look caught up)."""
        d = schema.determinations
        with read_tx(self._engine) as conn:
            return {int(s) for s in conn.execute(select(d.c.step).where(d.c.run_id == run_id, d.c.step.is_not(None))
                                                 .distinct()).scalars()}

    def runs(self) -> list[str]:
        """Every run the ledger knows: those with a determination or a checkpoint a trainer reported."""
        d, e = schema.determinations, schema.events
        with read_tx(self._engine) as conn:
            found = set(conn.execute(select(d.c.run_id).where(d.c.run_id.is_not(None)).distinct()).scalars())
            found |= set(conn.execute(select(e.c.subject).where(e.c.kind == CheckpointWritten.KIND).distinct())
                         .scalars())
        return sorted(found)

    # -- integrity -------------------------------------------------------------------------

    def verify(self, batch: int = 5000) -> VerifyReport:
        """Recompute every hash and link, streaming; names the first bad event and why."""
        e = schema.events
        head_seq, head_hash = self.head()
        verifier = ChainVerifier(head_seq=head_seq, head_hash=head_hash)
        columns = (e.c.seq, e.c.ts, e.c.kind, e.c.subject, e.c.payload, e.c.prev_hash, e.c.hash)
        last = 0
        while True:
            with read_tx(self._engine) as conn:
                rows = conn.execute(
                    select(*columns).where(e.c.seq > last).order_by(e.c.seq).limit(batch)
                ).all()
            if not rows:
                break
            for row in rows:
                if not verifier.feed(*row):
                    return verifier.finish()
            last = rows[-1].seq
        return verifier.finish()

    def rebuild_projections(self) -> int:
        """Empty the projection tables and replay every event into them; returns events replayed."""
        count = 0
        with write_tx(self._engine) as conn:
            projections.clear(conn)
            for event in self._scan(conn):
                projections.project(conn, event)
                count += 1
        return count

    def _scan(self, conn: Connection) -> Iterator[Event]:
        e, last = schema.events, 0
        while True:
            rows = conn.execute(select(e).where(e.c.seq > last).order_by(e.c.seq).limit(BATCH)).all()
            if not rows:
                return
            yield from (row_event(r) for r in rows)
            last = rows[-1].seq


def ledger_or_configured(ledger: Ledger | None) -> Ledger:
    """`ledger` when one is given, else the existing ledger at the configured URL (RSP_LEDGER_URL or
    <home>/ledger.db): what `ledger=None` means for every tasks-level function that takes one.
    Never creates one (LedgerNotFound): a halt or a vote written to a ledger nobody else reads
    would be lost."""
    return ledger if ledger is not None else Ledger(create=False)


__all__ = ["GENESIS_HASH", "Ledger", "LedgerIdentity", "ledger_or_configured"]
