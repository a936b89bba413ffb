"""Small SQLite-or-any-SQL state tables beside the ledger (notification outbox, replay guard)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url


def open_state_engine(url: str) -> Engine:
    """An engine for a state table that is NOT the audit record: on SQLite, WAL with synchronous=NORMAL
    (survives a process crash, may lose the last instant in a power cut; the ledger is the durable
    record, so the cost is at most one repeated delivery or one remembered request forgotten)."""
    parsed = make_url(url)
    kwargs: dict[str, Any] = {}
    if parsed.drivername.startswith("sqlite"):
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30.0, "check_same_thread": False}
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _wal(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            try:
                cur.execute("PRAGMA journal_mode = WAL")
                cur.execute("PRAGMA synchronous = NORMAL")
                cur.execute("PRAGMA busy_timeout = 30000")
            except Exception:  # noqa: BLE001, S110 - an optimisation; the default journal still works
                pass
            finally:
                cur.close()

    return engine
