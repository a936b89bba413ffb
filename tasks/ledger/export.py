"""Exporting the ledger: JSON Lines, one event per line, to a file or to S3.

An export is a plain copy that anyone can check with `verify_jsonl` (the same chain
check as the database's), without access to the database.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

from tasks.ledger.chain import Event, VerifyReport, verify_events
from tasks.ledger.errors import LedgerError
from tasks.storage import atomic_writer, parse_uri, s3_client_for

if TYPE_CHECKING:
    from tasks.ledger.store import Ledger
    from tasks.settings import Settings


class ExportError(LedgerError):
    pass


@dataclass(frozen=True)
class ExportResult:
    target: str
    count: int
    head_seq: int
    head_hash: str


def export_jsonl(ledger: Ledger, fp: IO[str]) -> int:
    return _write(ledger, fp.write)[0]


def _write(ledger: Ledger, write: Callable[[str], object]) -> tuple[int, int, str]:
    count, last = 0, None
    for event in ledger.iter_events():
        write(event.to_json() + "\n")
        count, last = count + 1, event
    return count, (last.seq if last else 0), (last.hash if last else "0" * 64)


def read_jsonl(fp: IO[str]) -> Iterator[Event]:
    for number, line in enumerate(fp, start=1):
        if not line.strip():
            continue
        try:
            yield Event.from_dict(json.loads(line))
        except ValueError as exc:
            raise ValueError(f"line {number}: not a ledger event: {exc}") from None


def verify_jsonl(fp: IO[str]) -> VerifyReport:
    return verify_events(read_jsonl(fp))


def export_to(ledger: Ledger, out: str, settings: Settings | None = None) -> ExportResult:
    """Export to a local path (written to a temp file, then renamed: never a half file) or to
    s3://bucket/key (uploaded with boto3 using the settings' endpoint, region and profile)."""
    try:
        target = parse_uri(out, what="ledger export", object_key=True)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    if target.is_s3:
        return _to_s3(ledger, out, target.bucket, target.key, settings)
    assert target.path is not None  # a location that is not S3 is local
    try:
        # Streamed into the temp file: a long ledger never sits in memory.
        with atomic_writer(target.path) as fh:
            count, seq, digest = _write(ledger, lambda line: fh.write(line.encode("utf-8")))
    except OSError as exc:
        raise ExportError(f"cannot write export {out!r}: {exc}") from None
    return ExportResult(str(target.path), count, seq, digest)


def _to_s3(ledger: Ledger, out: str, bucket: str, key: str, settings: Settings | None) -> ExportResult:
    if settings is None:
        from tasks.settings import get_settings

        settings = get_settings()
    # Imported here: keeps `rsp --help` and SQLite-only use free of boto3's import cost.
    from botocore.exceptions import BotoCoreError, ClientError

    # Spooled to a temp file: the upload needs a seekable body, and a long ledger should not sit in memory.
    with tempfile.TemporaryFile("w+b") as raw:
        count, seq, digest = _write(ledger, lambda line: raw.write(line.encode("utf-8")))
        raw.seek(0)
        try:
            client = s3_client_for(settings)
            client.upload_fileobj(raw, bucket, key, ExtraArgs={"ContentType": "application/x-ndjson"})
        except (BotoCoreError, ClientError) as exc:
            raise ExportError(f"cannot upload export to {out}: {exc}") from None
    return ExportResult(out, count, seq, digest)
