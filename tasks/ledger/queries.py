"""Questions the flows ask of the ledger, answered from the projection tables.

Determinations are ordered by training step, then seq: checkpoints of one run can be
evaluated concurrently and finish out of order, and cadence needs the assessment of the
furthest-trained checkpoint, not the one that happened to be recorded last.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy import Connection, Engine, Select, select

from tasks.ledger import schema
from tasks.ledger.chain import Event
from tasks.ledger.engine import read_tx, write_tx
from tasks.ledger.errors import InvalidEvent
from tasks.ledger.events import HaltLifted, HaltOpened, LedgerEventModel, parse_event


def row_event(row: Any) -> Event:
    return Event(row.seq, row.ts, row.kind, row.subject, json.loads(row.payload), row.prev_hash, row.hash)


@dataclass(frozen=True)
class Halt:
    halt_id: str
    cause_key: str | None
    status: Literal["open", "lifted"]
    opened_seq: int
    opened_at: str
    payload: dict[str, Any]  # the halt.opened payload
    lifted_seq: int | None = None
    lifted_at: str | None = None
    lift_payload: dict[str, Any] | None = None

    @property
    def is_open(self) -> bool:
        return self.status == "open"

    def record(self) -> HaltOpened:
        """The halt.opened payload, typed (InvalidEvent if it does not fit the model)."""
        typed = parse_event(HaltOpened.KIND, self.payload, self.halt_id)
        assert isinstance(typed, HaltOpened)
        return typed

    def lift(self) -> HaltLifted | None:
        """The halt.lifted payload, typed; None while the halt is open."""
        if self.lift_payload is None:
            return None
        typed = parse_event(HaltLifted.KIND, self.lift_payload, self.halt_id)
        assert isinstance(typed, HaltLifted)
        return typed


class QueriesMixin:
    _engine: Engine
    _append_in: Callable[..., Event]

    # -- determinations --------------------------------------------------------------------

    def _determination_events(
        self,
        run_id: str | None,
        *,
        comprehensive: bool = False,
        before_step: int | None = None,
        latest: bool = False,
    ) -> list[Event]:
        d, e = schema.determinations, schema.events
        query: Select[Any] = select(e).join(d, d.c.seq == e.c.seq)
        if run_id is not None:
            query = query.where(d.c.run_id == run_id)
        if comprehensive:
            query = query.where(d.c.assessment == "comprehensive")
        if before_step is not None:
            query = query.where(d.c.step < before_step)
        if latest:
            query = query.order_by(d.c.step.desc(), d.c.seq.desc()).limit(1)
        else:
            query = query.order_by(d.c.seq)
        with read_tx(self._engine) as conn:
            return [row_event(r) for r in conn.execute(query)]

    def last_comprehensive_event(self, run_id: str, before_step: int | None = None) -> Event | None:
        """The comprehensive determination of `run_id` at the highest step (below `before_step`);
        the event carries the time it was recorded (`ts`), which cadence needs."""
        found = self._determination_events(run_id, comprehensive=True, before_step=before_step, latest=True)
        return found[0] if found else None

    def last_comprehensive(self, run_id: str, before_step: int | None = None) -> dict[str, Any] | None:
        event = self.last_comprehensive_event(run_id, before_step)
        return None if event is None else event.payload

    def latest_determination_event(self, run_id: str) -> Event | None:
        """The determination of `run_id` at its highest step (the latest recorded there), with its seq."""
        found = self._determination_events(run_id, latest=True)
        return found[0] if found else None

    def previous_determination(self, run_id: str, before_step: int | None = None) -> dict[str, Any] | None:
        """The determination at the highest step below `before_step` (any step when None)."""
        found = self._determination_events(run_id, before_step=before_step, latest=True)
        return found[0].payload if found else None

    def determinations(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """Determination payloads in the order they were recorded."""
        return [ev.payload for ev in self._determination_events(run_id)]

    # -- halts -----------------------------------------------------------------------------

    def _halts(self, conn: Connection, *where: Any) -> list[Halt]:
        h, e = schema.halts, schema.events
        lifted = e.alias("lifted")
        query = (
            select(
                h.c.halt_id,
                h.c.cause_key,
                e.c.seq,
                e.c.ts,
                e.c.payload,
                lifted.c.seq.label("l_seq"),
                lifted.c.ts.label("l_ts"),
                lifted.c.payload.label("l_payload"),
            )
            .join(e, e.c.seq == h.c.opened_seq)
            .outerjoin(lifted, lifted.c.seq == h.c.lifted_seq)
            .where(*where)
            .order_by(h.c.opened_seq)
        )
        return [
            Halt(
                halt_id=r.halt_id,
                cause_key=r.cause_key,
                status="open" if r.l_seq is None else "lifted",
                opened_seq=r.seq,
                opened_at=r.ts,
                payload=json.loads(r.payload),
                lifted_seq=r.l_seq,
                lifted_at=r.l_ts,
                lift_payload=None if r.l_payload is None else json.loads(r.l_payload),
            )
            for r in conn.execute(query)
        ]

    def halts(self, status: Literal["open", "lifted"] | None = None) -> list[Halt]:
        h = schema.halts
        where = (
            []
            if status is None
            else [h.c.lifted_seq.is_(None) if status == "open" else h.c.lifted_seq.is_not(None)]
        )
        with read_tx(self._engine) as conn:
            return self._halts(conn, *where)

    def open_halts(self) -> list[dict[str, Any]]:
        """halt.opened payloads of halts not lifted, oldest first."""
        return [h.payload for h in self.halts("open")]

    def halt(self, halt_id: str) -> Halt | None:
        with read_tx(self._engine) as conn:
            found = self._halts(conn, schema.halts.c.halt_id == halt_id)
        return found[0] if found else None

    def find_halt_by_cause(self, cause_key: str) -> Halt | None:
        """The halt (open or lifted) that `cause_key` opened; a cause opens at most one, ever."""
        with read_tx(self._engine) as conn:
            found = self._halts(conn, schema.halts.c.cause_key == cause_key)
        return found[0] if found else None

    def open_halt(self, payload: Mapping[str, Any] | BaseModel) -> tuple[Halt, bool]:
        """Record halt.opened unless its cause_key already opened a halt: (halt, created).

        The check and the append share one locked transaction, so two processes halting for
        the same cause get one halt between them. `payload` is a HaltOpened, or its dict."""
        if isinstance(payload, LedgerEventModel):
            data = payload.to_payload()
        else:
            data = payload.model_dump(mode="json") if isinstance(payload, BaseModel) else dict(payload)
        halt_id, cause_key = data.get("halt_id"), data.get("cause_key")
        if not isinstance(halt_id, str) or not halt_id:
            raise InvalidEvent(
                f"open_halt: payload['halt_id'] must be a non-empty string, got {halt_id!r:.80}"
            )
        with write_tx(self._engine) as conn:
            if cause_key is not None:
                existing = self._halts(conn, schema.halts.c.cause_key == cause_key)
                if existing:
                    return existing[0], False
            # A model goes in as given: the append refuses one of another kind.
            self._append_in(conn, HaltOpened.KIND, halt_id, payload if isinstance(payload, LedgerEventModel) else data)
            return self._halts(conn, schema.halts.c.halt_id == halt_id)[0], True


__all__ = ["Halt", "QueriesMixin", "row_event"]
