"""The audit ledger: the single source of truth for what was decided, halted, approved and lifted.

An append-only, hash-chained event log in SQL (a SQLite file by default, PostgreSQL by
URL), safe with several writing processes, plus claims for exactly-once evaluation and
the queries the flows need. Use::

    from tasks.ledger import Ledger
    from tasks.ledger.events import CheckpointRejected
    ledger = Ledger()                      # the configured URL (RSP_LEDGER_URL / <home>/ledger.db)
    ledger.record(CheckpointRejected(key=key, reason="..."), key)
    ledger.events(kind="halt.opened")[0].typed()   # -> HaltOpened
    report = ledger.verify()               # VerifyReport(ok, checked, first_bad_seq, reason, ...)

Every event kind the code writes is a pydantic model in `tasks/ledger/events.py`, collected
in the union `LedgerEvent`; a payload of a listed kind is checked against its model on
append, however it was written. Other kinds (dotted lower-case) are free-form and read
back as `GenericEvent`. The projections (tables rebuilt from events) follow
determination.recorded, halt.opened / halt.lifted (halt_id == subject) and
evaluation.claimed / completed / released / failed (written by the claim methods).
"""

from tasks.ledger.chain import GENESIS_HASH, ChainVerifier, Event, VerifyReport, event_hash, verify_events
from tasks.ledger.claims import Claim
from tasks.ledger.errors import (
    ClaimConflict,
    HaltConflict,
    InvalidEvent,
    LedgerConflict,
    LedgerError,
    LedgerNotFound,
)
from tasks.ledger.events import GenericEvent, LedgerEvent, LedgerEventModel, parse_event
from tasks.ledger.export import ExportError, ExportResult, export_jsonl, export_to, read_jsonl, verify_jsonl
from tasks.ledger.queries import Halt
from tasks.ledger.store import Ledger, LedgerIdentity, ledger_or_configured

__all__ = [
    "GENESIS_HASH",
    "ChainVerifier",
    "Claim",
    "ClaimConflict",
    "Event",
    "ExportError",
    "ExportResult",
    "GenericEvent",
    "Halt",
    "HaltConflict",
    "InvalidEvent",
    "Ledger",
    "LedgerConflict",
    "LedgerError",
    "LedgerEvent",
    "LedgerEventModel",
    "LedgerIdentity",
    "LedgerNotFound",
    "VerifyReport",
    "event_hash",
    "export_jsonl",
    "export_to",
    "ledger_or_configured",
    "parse_event",
    "read_jsonl",
    "verify_events",
    "verify_jsonl",
]
