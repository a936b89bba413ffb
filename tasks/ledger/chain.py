"""The hash chain, as pure functions: no database, no I/O.

An event's hash is the sha256 of the canonical JSON of {seq, ts, kind, subject,
payload, prev_hash}; the first event's prev_hash is 64 zeros. Verification is
incremental (`ChainVerifier.feed`) so a ledger of any length streams through it
in batches, and the same code checks a database and an exported JSONL file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from policy.identity import canonical_json
from tasks.ledger.events import LedgerEventModel, parse_event

GENESIS_HASH = "0" * 64


def canonical(value: Any) -> str:
    """Canonical JSON text (sorted keys, compact, no NaN/Infinity); ValueError/TypeError if not JSON."""
    return canonical_json(value)


def utc_iso(moment: dt.datetime) -> str:
    """UTC ISO-8601 with microseconds, one fixed width so strings order like times."""
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {moment!r} has no timezone; the ledger records UTC")
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds")


def event_hash(seq: int, ts: str, kind: str, subject: str, payload: Mapping[str, Any], prev_hash: str) -> str:
    body = {
        "seq": seq,
        "ts": ts,
        "kind": kind,
        "subject": subject,
        "payload": payload,
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical(body).encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    ts: str
    kind: str
    subject: str
    payload: dict[str, Any]
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ts": self.ts,
            "kind": self.kind,
            "subject": self.subject,
            "payload": self.payload,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }

    def to_json(self) -> str:
        return canonical(self.to_dict())

    def typed(self) -> LedgerEventModel:
        """The payload as its kind's model (tasks/ledger/events.py), or a GenericEvent for a kind
        not listed there. InvalidEvent, naming the kind and the field, if it does not fit its model."""
        return parse_event(self.kind, self.payload, self.subject)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        missing = {"seq", "ts", "kind", "subject", "payload", "prev_hash", "hash"} - set(data)
        if missing:
            raise ValueError(f"event record lacks {sorted(missing)}: {dict(data)!r:.200}")
        return cls(
            seq=data["seq"],
            ts=data["ts"],
            kind=data["kind"],
            subject=data["subject"],
            payload=data["payload"],
            prev_hash=data["prev_hash"],
            hash=data["hash"],
        )


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    checked: int
    first_bad_seq: int | None = None
    reason: str | None = None
    head_seq: int = 0
    head_hash: str = GENESIS_HASH

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "first_bad_seq": self.first_bad_seq,
            "reason": self.reason,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
        }


@dataclass
class ChainVerifier:
    """Feed events in seq order; stops at the first bad one and remembers why.

    `head_seq`/`head_hash` are the ledger's own record of its last event, read before the
    stream starts: they catch a truncated tail, which a chain alone cannot show. Events
    appended while verifying (seq beyond the head) are checked like any other."""

    head_seq: int | None = None
    head_hash: str | None = None
    checked: int = 0
    last_seq: int = 0
    last_hash: str = GENESIS_HASH
    first_bad_seq: int | None = None
    reason: str | None = None

    @property
    def failed(self) -> bool:
        return self.first_bad_seq is not None

    def _fail(self, seq: int, reason: str) -> bool:
        self.first_bad_seq, self.reason = seq, reason
        return False

    def feed(
        self,
        seq: int,
        ts: str,
        kind: str,
        subject: str,
        payload: str | Mapping[str, Any],
        prev_hash: str,
        hash_: str,
    ) -> bool:
        """Check one event against its predecessor; False (and stop) at the first bad one.

        `payload` is the stored canonical text (database) or the decoded object (export)."""
        if self.failed:
            return False
        self.checked += 1
        expected = self.last_seq + 1
        if seq != expected:
            # A deleted row shows as a jump; the missing seq is the first bad event.
            return self._fail(
                expected, f"sequence gap after {self.last_seq}: expected seq {expected}, found {seq}"
            )
        if prev_hash != self.last_hash:
            if seq == 1:
                return self._fail(seq, "prev_hash of the first event is not 64 zeros")
            return self._fail(seq, f"prev_hash does not match event {seq - 1}")
        if isinstance(payload, str):
            try:
                decoded = json.loads(payload)
            except ValueError:
                return self._fail(seq, "payload is not valid JSON")
        else:
            decoded = payload
        try:
            recomputed = event_hash(seq, ts, kind, subject, decoded, prev_hash)
        except (TypeError, ValueError) as exc:
            return self._fail(seq, f"event fields are not canonical JSON: {exc}")
        if recomputed != hash_:
            # The hash covers ts, kind, subject and payload alike; payload is what gets edited in practice.
            return self._fail(
                seq, "payload changed: hash mismatch (the stored hash does not cover this event's content)"
            )
        if seq == self.head_seq and self.head_hash is not None and hash_ != self.head_hash:
            return self._fail(seq, f"event {seq} does not match the hash the ledger head records")
        self.last_seq, self.last_hash = seq, hash_
        return True

    def feed_event(self, event: Event) -> bool:
        return self.feed(
            event.seq, event.ts, event.kind, event.subject, event.payload, event.prev_hash, event.hash
        )

    def finish(self) -> VerifyReport:
        if not self.failed and self.head_seq is not None and self.last_seq < self.head_seq:
            self._fail(
                self.last_seq + 1,
                f"chain ends at seq {self.last_seq} but the ledger head records seq {self.head_seq}: events deleted",
            )
        return VerifyReport(
            ok=not self.failed,
            checked=self.checked,
            first_bad_seq=self.first_bad_seq,
            reason=self.reason,
            head_seq=self.last_seq,
            head_hash=self.last_hash,
        )


def verify_events(events: Iterable[Event]) -> VerifyReport:
    """Verify a stream of events (e.g. read back from an export) without a database."""
    verifier = ChainVerifier()
    for event in events:
        if not verifier.feed_event(event):
            break
    return verifier.finish()
