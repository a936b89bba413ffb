"""Exporting the ledger: JSON Lines, one event per line, to a file or to S3; or an audit bundle.

An export is a plain copy that anyone can check with `verify_jsonl` (the same chain
check as the database's), without access to the database. A bundle (`export_bundle`)
adds what a third party needs to check everything else alone: signed heads, public
keys, and the policy and sample-row files the signed determinations cite
(`tasks/trust/bundle.py` verifies it).
"""

from __future__ import annotations

import base64
import hashlib
import json
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from tasks.ledger.chain import Event, VerifyReport, verify_events
from tasks.ledger.errors import LedgerError
from tasks.storage import atomic_writer, parse_uri, s3_client_for, write_atomic

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


BUNDLE_FORMAT = "rsp-gate-audit-bundle/1"


@dataclass(frozen=True)
class BundleResult:
    folder: Path
    count: int
    head_seq: int
    head_hash: str
    heads: int
    inputs: int
    missing: tuple[str, ...]


def export_bundle(ledger: Ledger, out: str | Path, settings: Settings | None = None) -> BundleResult:
    """Write what a third party needs to audit this ledger alone into the folder `out`::

        events.jsonl          every event (the chain)
        heads/*.note          the signed heads kept for this ledger (tasks/ledger/heads.py)
        keys/gate/*.pub       the gate's public keys as the ledger recorded them (gate.key)
        keys/roster.yaml      the roster (people, roles and their keys), when there is one
        blobs/sha256/<hex>    every policy file and sample-row file a signed determination cites
        manifest.json         ledger id, head, counts, and the cited inputs that could not be found

    The copies of keys in the bundle are for reading: the auditor verifies against keys of their own
    (`rsp audit verify --bundle DIR --trust KEYS`). An input that cannot be found is listed in
    `missing` (the bundle is still written, and its verification will fail naming it)."""
    from tasks.ledger.events import DeterminationRecorded, GateKeyRecorded
    from tasks.ledger.heads import parse_head, read_heads

    if settings is None:
        from tasks.settings import get_settings

        settings = get_settings()
    folder = Path(out)
    if folder.exists() and any(folder.iterdir()):
        raise ExportError(f"{folder}: bundle folder exists and is not empty")
    ledger_id = ledger.ledger_id
    try:
        with atomic_writer(folder / "events.jsonl", mode=0o644) as fh:
            count, seq, digest = _write(ledger, lambda line: fh.write(line.encode("utf-8")))
        heads = read_heads(settings.resolved_heads_dir / ledger_id) if ledger_id else []
        for note in heads:
            write_atomic(folder / "heads" / parse_head(note)[0].file_name, note.encode("utf-8"), mode=0o644)
        for event in ledger.iter_events(kind=GateKeyRecorded.KIND):
            name = event.subject.replace("SHA256:", "").replace("/", "_").replace("+", "-")
            write_atomic(folder / "keys" / "gate" / f"{name}.pub", (event.payload["public_key"] + "\n").encode(),
                         mode=0o644)
        roster = settings.roster or settings.home / "roster.yaml"
        if roster.is_file():
            write_atomic(folder / "keys" / "roster.yaml", roster.read_bytes(), mode=0o644)
        copied: set[str] = set()
        missing: list[str] = []
        for event in ledger.iter_events(kind=DeterminationRecorded.KIND):
            for sha, source in _cited_inputs(event.payload, settings.resolved_runs_dir):
                if sha in copied:
                    continue
                data = source.read_bytes() if source.is_file() else None
                if data is None or hashlib.sha256(data).hexdigest() != sha:
                    missing.append(f"seq {event.seq}: {source} (sha256 {sha[:12]})")
                    continue
                write_atomic(folder / "blobs" / "sha256" / sha, data, mode=0o644)
                copied.add(sha)
        manifest = {"format": BUNDLE_FORMAT, "ledger_id": ledger_id, "ledger": ledger.url, "events": count,
                    "head_seq": seq, "head_hash": digest, "heads": len(heads), "inputs": len(copied),
                    "missing": missing}
        write_atomic(folder / "manifest.json", (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode(),
                     mode=0o644)
    except OSError as exc:
        raise ExportError(f"cannot write bundle {folder}: {exc}") from None
    return BundleResult(folder, count, seq, digest, len(heads), len(copied), tuple(missing))


def _cited_inputs(payload: Mapping[str, Any], runs_dir: Path) -> list[tuple[str, Path]]:
    """(sha256, where the run folder keeps it) of the policy and rows a determination's statement cites.
    Read without verifying the signature: the auditor verifies; the exporter only gathers."""
    envelope = payload.get("attestation")
    if not isinstance(envelope, Mapping):
        return []
    try:
        predicate = json.loads(base64.b64decode(envelope["payload"]))["predicate"]
        inputs = runs_dir / predicate["run_folder"] / "inputs"
        cited = [predicate["policy"]["sha256"]] + ([predicate["rows"]["sha256"]] if predicate.get("rows") else [])
    except (KeyError, TypeError, ValueError):
        return []
    return [(sha, inputs / sha) for sha in cited if isinstance(sha, str) and len(sha) == 64 and sha.isalnum()]


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
