"""Claims: exactly-once evaluation of a checkpoint across processes.

A claim is a lease. Whoever holds a live lease evaluates; a lease that expires without
completion (the worker crashed) can be claimed again, with `attempts` counting tries.
Every transition is a ledger event (evaluation.claimed / .completed / .released /
.failed) written in the same locked transaction as the claims-table row, so the chain
records who evaluated what and the table can be rebuilt from it.

Lease times come from this process's clock; hosts sharing a ledger need synchronised
clocks (NTP) and leases much longer than their skew.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select

from tasks.ledger import schema
from tasks.ledger.chain import Event, utc_iso
from tasks.ledger.engine import read_tx, write_tx
from tasks.ledger.errors import ClaimConflict, InvalidEvent
from tasks.ledger.events import (
    ClaimState,
    EvaluationClaimed,
    EvaluationCompleted,
    EvaluationFailed,
    EvaluationReleased,
    LedgerEventModel,
)


@dataclass(frozen=True)
class Claim:
    key: str
    owner: str
    state: ClaimState
    attempts: int
    claimed_at: str
    lease_expires_at: str
    outcome: Any = None  # completed: the outcome; failed: the error


def _claim(row: Any) -> Claim:
    return Claim(
        key=row.key,
        owner=row.owner,
        state=row.state,
        attempts=row.attempts,
        claimed_at=row.claimed_at,
        lease_expires_at=utc_iso(dt.datetime.fromtimestamp(row.lease_expires, dt.UTC)),
        outcome=None if row.outcome is None else json.loads(row.outcome),
    )


def _check_ids(key: object, owner: object) -> None:
    if not isinstance(key, str) or not key:
        raise InvalidEvent(f"claim key must be a non-empty string, got {key!r:.80}")
    if not isinstance(owner, str) or not owner:
        raise InvalidEvent(f"claim owner for {key!r} must be a non-empty string, got {owner!r:.80}")


class ClaimsMixin:
    _engine: Engine
    _clock: Callable[[], dt.datetime]
    _record_in: Callable[..., Event]

    def claim(self, key: str, owner: str, lease_s: float, *, max_attempts: int | None = None) -> bool:
        """True if `owner` now holds `key`: it was unclaimed, or released, failed, or its lease
        expired. False if completed, held by someone else, or out of attempts. A repeated claim
        by the current holder is True and changes nothing (a retried call after a lost reply)."""
        _check_ids(key, owner)
        if not isinstance(lease_s, int | float) or not math.isfinite(lease_s) or lease_s <= 0:
            raise InvalidEvent(
                f"lease for claim {key!r} must be a positive number of seconds, got {lease_s!r}"
            )
        c = schema.claims
        with write_tx(self._engine) as conn:
            row = conn.execute(select(c).where(c.c.key == key)).first()
            now = self._clock()
            if row is None:
                attempt = 1
            elif row.state == "completed":
                return False
            elif row.state == "claimed" and row.lease_expires > now.timestamp():
                return row.owner == owner
            elif max_attempts is not None and row.attempts >= max_attempts:
                return False
            else:
                attempt = row.attempts + 1
            event = EvaluationClaimed(
                key=key,
                owner=owner,
                attempt=attempt,
                lease_s=lease_s,
                lease_expires_at=utc_iso(now + dt.timedelta(seconds=lease_s)),
                previous_owner=None if row is None else row.owner,
                previous_state=None if row is None else row.state,
            )
            self._record_in(conn, event, key, at=now)
        return True

    def _finish(
        self, event: type[LedgerEventModel], state: ClaimState, key: str, owner: str, extra: dict[str, Any]
    ) -> Event | None:
        _check_ids(key, owner)
        c = schema.claims
        with write_tx(self._engine) as conn:
            row = conn.execute(select(c).where(c.c.key == key)).first()
            if row is not None and row.owner == owner and row.state == state:
                return None  # already done by this owner: a retried call is a no-op
            if row is None or row.state != "claimed" or row.owner != owner:
                held = "not claimed" if row is None else f"{row.state} by {row.owner!r}"
                raise ClaimConflict(f"{owner!r} cannot mark {key!r} {state}: it is {held}")
            return self._record_in(conn, event(key=key, owner=owner, attempt=row.attempts, **extra), key)

    def complete(self, key: str, owner: str, outcome: Mapping[str, Any] | None = None) -> Event | None:
        """Mark `key` evaluated. ClaimConflict if `owner` does not hold it (someone re-claimed
        it after the lease expired); None if this owner had already completed it."""
        return self._finish(EvaluationCompleted, "completed", key, owner, {"outcome": dict(outcome or {})})

    def release(self, key: str, owner: str, reason: str = "") -> Event | None:
        """Give `key` back unevaluated (shutting down); anyone may claim it at once."""
        return self._finish(EvaluationReleased, "released", key, owner, {"reason": reason})

    def fail(self, key: str, owner: str, error: str) -> Event | None:
        """Record that evaluating `key` failed; it may be claimed again (attempts counts tries)."""
        return self._finish(EvaluationFailed, "failed", key, owner, {"error": error})

    def get_claim(self, key: str) -> Claim | None:
        c = schema.claims
        with read_tx(self._engine) as conn:
            row = conn.execute(select(c).where(c.c.key == key)).first()
        return None if row is None else _claim(row)

    def is_done(self, key: str) -> bool:
        claim = self.get_claim(key)
        return claim is not None and claim.state == "completed"

    def pending_expired(self) -> list[Claim]:
        """Claims whose lease ran out before completion (their worker likely died), oldest first."""
        c = schema.claims
        now = self._clock().timestamp()
        with read_tx(self._engine) as conn:
            rows = conn.execute(
                select(c).where(c.c.state == "claimed", c.c.lease_expires <= now).order_by(c.c.lease_expires)
            ).all()
        return [_claim(r) for r in rows]
