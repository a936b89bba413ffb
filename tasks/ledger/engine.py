"""Opening the ledger database: SQLite file by default, PostgreSQL (or any SQLAlchemy URL) by URL.

Writers serialise on one lock so seq stays gapless with several processes appending:
SQLite takes its database write lock up front (`BEGIN IMMEDIATE`, waiting up to the busy
timeout) instead of upgrading a read lock mid-transaction, which is what deadlocks and
fails with "database is locked"; other databases lock the single head row (`FOR UPDATE`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, insert, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from tasks.ledger import schema
from tasks.ledger.chain import GENESIS_HASH
from tasks.ledger.errors import LedgerError, LedgerNotFound

WRITE = "rsp_ledger_write"
BUSY_TIMEOUT_S = 30.0
_PG_INIT_LOCK = 0x5253_5047  # arbitrary constant: serialises concurrent schema creation on PostgreSQL


def redact(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def _sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite"):
        return None
    db = parsed.database
    if not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db)


def open_engine(url: str, *, create: bool) -> Engine:
    """An engine for `url`, with the ledger's tables in place (created if `create`)."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise LedgerError(f"bad ledger URL {url!r}: {exc}") from None
    shown = redact(url)
    path = _sqlite_path(url)
    if path is not None:
        if not create and not path.is_file():
            raise LedgerNotFound(f"no ledger at {shown}: file {path} does not exist")
        if create:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise LedgerError(f"cannot create the folder for ledger {shown}: {exc}") from None
    kwargs: dict[str, Any] = {}
    if parsed.drivername.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": BUSY_TIMEOUT_S}
        if not parsed.database or parsed.database == ":memory:":
            kwargs["poolclass"] = StaticPool  # one shared in-memory database, not one per connection
    try:
        engine = create_engine(url, **kwargs)
    except (NoSuchModuleError, ImportError) as exc:
        raise LedgerError(f"no driver for ledger URL {shown}: {exc}") from None
    except (ArgumentError, SQLAlchemyError) as exc:
        raise LedgerError(f"bad ledger URL {shown}: {exc}") from None
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    try:
        _ensure_schema(engine, create=create)
    except LedgerError:
        engine.dispose()
        raise
    except SQLAlchemyError as exc:
        engine.dispose()
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise LedgerError(f"cannot open ledger {shown}: {reason}") from None
    return engine


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Hand transaction control to the "begin" hook below (pysqlite's own BEGIN is deferred).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            # WAL lets readers (verify, queries) run while a writer appends. It is an optimisation:
            # a read-only or momentarily locked file still works in its current journal mode.
            with contextlib.suppress(Exception):
                cursor.execute("PRAGMA journal_mode = WAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE) else "BEGIN")


@contextmanager
def write_tx(engine: Engine) -> Iterator[Connection]:
    """A transaction holding the ledger's write lock until commit."""
    with engine.connect() as conn:
        conn.execution_options(**{WRITE: True})
        with conn.begin():
            if engine.dialect.name != "sqlite":
                conn.execute(select(schema.head.c.seq).where(schema.head.c.id == 1).with_for_update())
            yield conn


@contextmanager
def read_tx(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn, conn.begin():
        yield conn


def _ensure_schema(engine: Engine, *, create: bool) -> None:
    if not create:
        if not inspect(engine).has_table(schema.events.name):
            shown = engine.url.render_as_string(hide_password=True)
            raise LedgerNotFound(f"no ledger at {shown}: table {schema.events.name} missing")
        return
    with engine.connect() as conn:
        conn.execution_options(**{WRITE: True})
        with conn.begin():
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_INIT_LOCK})
            schema.metadata.create_all(conn)
            if conn.execute(select(schema.head.c.id).where(schema.head.c.id == 1)).first() is None:
                conn.execute(
                    insert(schema.head).values(
                        id=1, seq=0, hash=GENESIS_HASH, schema_version=schema.SCHEMA_VERSION
                    )
                )
            if conn.execute(select(schema.identity.c.id).where(schema.identity.c.id == 1)).first() is None:
                ledger_id, origin = genesis_identity(conn) or (new_ledger_id(), "created")
                conn.execute(insert(schema.identity).values(
                    id=1, ledger_id=ledger_id, origin=origin,
                    created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                ))


def new_ledger_id() -> str:
    return f"ledger-{uuid.uuid4().hex}"


def genesis_identity(conn: Connection) -> tuple[str, str] | None:
    """The identity of a ledger created before identities existed: its first event's hash (which
    every later event's hash depends on). None while it has no event."""
    row = conn.execute(select(schema.events.c.hash).where(schema.events.c.seq == 1)).first()
    return None if row is None else (f"genesis-{row.hash[:32]}", "derived_from_genesis")
