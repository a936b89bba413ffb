"""Tables. `events` is the ledger; the rest are projections of it, written in the same
transaction as the event they come from and rebuildable from the events alone."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

events = Table(
    "ledger_events",
    metadata,
    # Assigned by the appender under the write lock (head + 1), never by the database, so it is gapless.
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False),
    Column("ts", String(40), nullable=False),
    Column("kind", String(200), nullable=False),
    Column("subject", Text, nullable=False),
    Column("payload", Text, nullable=False),  # canonical JSON text, exactly what the hash covers
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False, unique=True),
    Index("ix_ledger_events_kind_seq", "kind", "seq"),
    Index("ix_ledger_events_subject_seq", "subject", "seq"),
)

# One row (id 1): the last event. Appenders lock it (FOR UPDATE) on PostgreSQL, and verify
# compares the chain's end with it, which catches deleted tail events.
head = Table(
    "ledger_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("schema_version", Integer, nullable=False),
)

determinations = Table(
    "ledger_determinations",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("run_id", Text, nullable=True),
    Column("step", BigInteger, nullable=True),
    Column("assessment", String(40), nullable=True),
    Index("ix_ledger_determinations_run", "run_id", "step", "seq"),
)

halts = Table(
    "ledger_halts",
    metadata,
    Column("halt_id", String(200), primary_key=True),
    # Unique: the same cause never opens a second halt, even from two racing processes.
    Column("cause_key", Text, nullable=True, unique=True),
    Column("opened_seq", BigInteger, nullable=False),
    Column("lifted_seq", BigInteger, nullable=True),
    Index("ix_ledger_halts_open", "lifted_seq", "opened_seq"),
)

claims = Table(
    "ledger_claims",
    metadata,
    Column("key", String(1000), primary_key=True),
    Column("owner", Text, nullable=False),
    Column("state", String(20), nullable=False),  # claimed | completed | released | failed
    Column("attempts", Integer, nullable=False),
    Column("claimed_at", String(40), nullable=False),
    Column("lease_expires", Float, nullable=False),  # epoch seconds: cheap to compare in SQL
    Column("finished_seq", BigInteger, nullable=True),
    Column("outcome", Text, nullable=True),  # canonical JSON
    Index("ix_ledger_claims_state_lease", "state", "lease_expires"),
)

# One row (id 1): which ledger this is. Written when the ledger is created (a random id), or, for a
# ledger created before identities existed, derived from its first event the first time a creating
# command (`rsp init`, watch, serve) opens it. Not a projection: `rebuild_projections` leaves it alone.
identity = Table(
    "ledger_identity",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("ledger_id", String(200), nullable=False),
    Column("created_at", String(40), nullable=False),
    Column("origin", String(40), nullable=False),  # created | derived_from_genesis
)

SCHEMA_VERSION = 1
PROJECTIONS = (determinations, halts, claims)
