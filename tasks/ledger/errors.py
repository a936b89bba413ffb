"""Ledger errors. Each message is one line naming the input at fault."""

from __future__ import annotations


class LedgerError(Exception):
    """The ledger cannot be opened or used (bad URL, unreachable database, missing ledger)."""


class LedgerNotFound(LedgerError):
    """No ledger at the URL (no file, or no ledger tables in the database). Only `rsp init` and the
    first `watch` / `serve` create one; everything else says which ledger it looked for."""


class LedgerConflict(ValueError):
    """An event contradicts the ledger (a second halt for one cause, lifting a halt that is not open,
    completing a claim someone else holds). Nothing was written."""


class HaltConflict(LedgerConflict):
    pass


class ClaimConflict(LedgerConflict):
    pass


class InvalidEvent(ValueError):
    """An event that cannot be recorded or read as given (bad kind, payload not a JSON object, a
    payload that does not fit its kind's model in tasks/ledger/events.py, such as a halt without
    halt_id). Nothing was written."""
