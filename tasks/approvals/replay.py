"""Replay guard for signed Slack requests: each (timestamp, signature) is accepted once.

A signed request captured in transit could be sent again within Slack's five-minute window
and would verify. The service remembers every accepted pair in a small table (SQLite under
<home>/approvals/state.db by default, any SQLAlchemy URL otherwise), so a restart does not
forget pairs still inside the window. The insert on a primary key is the check, so two
copies racing each other are told apart atomically. Rows older than the window are pruned.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from sqlalchemy import Column, Float, MetaData, String, Table, delete, insert
from sqlalchemy.exc import IntegrityError

from tasks.state_db import open_state_engine

METADATA = MetaData()
SEEN = Table(
    "slack_requests_seen",
    METADATA,
    Column("digest", String(64), primary_key=True),
    Column("request_ts", Float, nullable=False),
    Column("seen_at", Float, nullable=False, index=True),
)
PRUNE_EVERY_S = 60.0


class SeenRequests:
    def __init__(self, url: str, *, window_s: float = 300.0, clock: Callable[[], float] = time.time) -> None:
        self._engine = open_state_engine(url)
        METADATA.create_all(self._engine)
        self.window_s = window_s
        self._clock = clock
        self._pruned_at = 0.0

    @staticmethod
    def digest(timestamp: str, signature: str) -> str:
        return hashlib.sha256(f"{timestamp}:{signature}".encode()).hexdigest()

    def remember(self, timestamp: str, signature: str) -> bool:
        """True the first time this pair is seen; False for a replay."""
        now = self._clock()
        try:
            ts = float(timestamp)
        except ValueError:
            ts = 0.0
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(SEEN).values(digest=self.digest(timestamp, signature), request_ts=ts,
                                                 seen_at=now))
        except IntegrityError:
            return False
        if now - self._pruned_at > PRUNE_EVERY_S:
            self._pruned_at = now
            with self._engine.begin() as conn:
                # Twice the window: a pair is refused as stale by then anyway, so forgetting it is safe.
                conn.execute(delete(SEEN).where(SEEN.c.seen_at < now - 2 * self.window_s))
        return True

    def close(self) -> None:
        self._engine.dispose()


__all__ = ["SeenRequests"]
