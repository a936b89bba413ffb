"""Exporting the ledger: JSON Lines, one event per line, to a file or to S3.

An export is a plain copy that anyone can check with `verify_jsonl` (the same chain
check as the database's), without access to the database.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING
from urllib.parse import urlparse

from tasks.ledger.chain import Event, VerifyReport, verify_events
from tasks.ledger.errors import LedgerError

if TYPE_CHECKING:
    from rsp.settings import Settings
    from tasks.ledger.store import Ledger


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


def parse_s3(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    key = parsed.path.lstrip("/")
    if parsed.scheme != "s3" or not parsed.netloc or not key or key.endswith("/"):
        raise ExportError(f"bad S3 target {uri!r}: expected s3://bucket/key")
    return parsed.netloc, key


def export_to(ledger: Ledger, out: str, settings: Settings | None = None) -> ExportResult:
    """Export to a local path (written to a temp file, then renamed: never a half file) or to
    s3://bucket/key (uploaded with boto3 using the settings' endpoint, region and profile)."""
    if out.startswith("s3://"):
        return _to_s3(ledger, out, settings)
    path = Path(out)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fp:
                count, seq, digest = _write(ledger, fp.write)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise ExportError(f"cannot write export {out!r}: {exc}") from None
    return ExportResult(str(path), count, seq, digest)


def _to_s3(ledger: Ledger, out: str, settings: Settings | None) -> ExportResult:
    bucket, key = parse_s3(out)
    if settings is None:
        from rsp.settings import get_settings

        settings = get_settings()
    # Imported here: keeps `rsp --help` and SQLite-only use free of boto3's import cost.
    import boto3  # type: ignore[import-untyped]
    from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

    # Spooled to a temp file: the upload needs a seekable body, and a long ledger should not sit in memory.
    with tempfile.TemporaryFile("w+b") as raw:
        count, seq, digest = _write(ledger, lambda line: raw.write(line.encode("utf-8")))
        raw.seek(0)
        try:
            session = boto3.session.Session(profile_name=settings.s3_profile, region_name=settings.s3_region)
            client = session.client("s3", endpoint_url=settings.s3_endpoint_url)
            client.upload_fileobj(raw, bucket, key, ExtraArgs={"ContentType": "application/x-ndjson"})
        except (BotoCoreError, ClientError) as exc:
            raise ExportError(f"cannot upload export to {out}: {exc}") from None
    return ExportResult(out, count, seq, digest)
