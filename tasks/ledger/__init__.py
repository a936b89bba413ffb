"""The audit ledger: the single source of truth for what was decided, halted, approved and lifted.

An append-only, hash-chained event log in SQL (a SQLite file by default, PostgreSQL by
URL), safe with several writing processes, plus claims for exactly-once evaluation and
the queries the flows need. Use::

    from tasks.ledger import Ledger
    ledger = Ledger()                      # the configured URL (RSP_LEDGER_URL / <home>/ledger.db)
    ledger.append("checkpoint.rejected", key, {"reason": "..."})
    report = ledger.verify()               # VerifyReport(ok, checked, first_bad_seq, reason, ...)

Event kinds with meaning to the ledger (validated on append; others are free-form,
dotted lower-case): determination.recorded (payload checkpoint.run_id/step,
assessment), halt.opened / halt.lifted (payload halt_id == subject, optional cause_key),
evaluation.claimed / completed / released / failed (written by the claim methods).
"""

from tasks.ledger.chain import GENESIS_HASH, ChainVerifier, Event, VerifyReport, event_hash, verify_events
from tasks.ledger.claims import Claim
from tasks.ledger.errors import ClaimConflict, HaltConflict, InvalidEvent, LedgerConflict, LedgerError
from tasks.ledger.export import ExportError, ExportResult, export_jsonl, export_to, read_jsonl, verify_jsonl
from tasks.ledger.queries import Halt
from tasks.ledger.store import Ledger

__all__ = [
    "GENESIS_HASH",
    "ChainVerifier",
    "Claim",
    "ClaimConflict",
    "Event",
    "ExportError",
    "ExportResult",
    "Halt",
    "HaltConflict",
    "InvalidEvent",
    "Ledger",
    "LedgerConflict",
    "LedgerError",
    "VerifyReport",
    "event_hash",
    "export_jsonl",
    "export_to",
    "read_jsonl",
    "verify_events",
    "verify_jsonl",
]
