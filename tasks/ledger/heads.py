"""Signed ledger heads: a checkpoint of (ledger id, sequence number, head hash, time), signed by
the gate, in the format of C2SP tlog-checkpoint / signed-note.

Whoever controls the database can rewrite history and recompute every hash, and the chain
alone still verifies. A head signed and published before the rewrite cannot be rewritten
with it: the chain must still have, at that sequence number, the hash the head records.

A head is a signed note (c2sp.org/signed-note, c2sp.org/tlog-checkpoint)::

    rsp-gate.dev/ledger/<ledger id>       origin: which ledger
    <seq>                                 how many events (the chain is 1-based and gapless)
    <base64 of the head hash's 32 bytes>  the hash of event <seq>
    time <UTC ISO-8601>                   extension line: when it was signed

    — rsp-gate <base64(key hash[4] || ed25519 signature)>

The signature is over the text up to and including the blank line's preceding newline; the
key hash is the first 4 bytes of SHA-256(name || "\\n" || 0x01 || public key), as signed-note
defines for Ed25519. Heads are kept under `<heads_dir>/<ledger id>/` and, when
`RSP_HEAD_PUBLISH_URI=s3://bucket/prefix` is set, also written there as new objects under
Object Lock (COMPLIANCE mode, `RSP_HEAD_RETENTION_DAYS`); a bucket without Object Lock is refused.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tasks.ledger.errors import LedgerError
from tasks.storage import parse_uri, write_atomic
from tasks.trust.keys import fingerprint, verify

if TYPE_CHECKING:
    from tasks.ledger.store import Ledger
    from tasks.settings import Settings

ORIGIN_PREFIX = "rsp-gate.dev/ledger/"
KEY_NAME = "rsp-gate"
SIG_PREFIX = "\u2014 "  # an em dash and a space start every signature line of a signed note
SUFFIX = ".note"


class HeadError(LedgerError):
    """A head that cannot be signed, kept or published; one line says why."""


class HeadProblem(ValueError):
    """A head that does not parse or whose signature does not verify; one line says why."""


@dataclass(frozen=True)
class SignedHead:
    ledger_id: str
    seq: int
    hash: str  # hex, as the ledger stores it
    time: str
    note: str  # the whole signed note
    signer: str | None = None  # fingerprint of the key that signed it (set once verified or signed)
    published: str | None = None

    @property
    def file_name(self) -> str:
        stamp = self.time.replace("-", "").replace(":", "").replace("+0000", "Z")
        return f"{self.seq:012d}-{stamp}{SUFFIX}"

    def to_dict(self) -> dict[str, Any]:
        return {"ledger_id": self.ledger_id, "seq": self.seq, "hash": self.hash, "time": self.time,
                "signer": self.signer, "published": self.published}


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_hash(key: Ed25519PublicKey, name: str = KEY_NAME) -> bytes:
    """signed-note key hash: SHA-256(name || 0x0A || 0x01 || 32-byte Ed25519 key), first 4 bytes."""
    return hashlib.sha256(name.encode() + b"\n" + b"\x01" + _raw_public(key)).digest()[:4]


def head_body(ledger_id: str, seq: int, head_hash: str, time: str) -> str:
    return f"{ORIGIN_PREFIX}{ledger_id}\n{seq}\n{base64.b64encode(bytes.fromhex(head_hash)).decode()}\ntime {time}\n"


def sign_head_note(key: Ed25519PrivateKey, ledger_id: str, seq: int, head_hash: str,
                   at: dt.datetime | None = None) -> SignedHead:
    moment = (at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    time = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    body = head_body(ledger_id, seq, head_hash, time)
    sig = key.sign(body.encode("utf-8"))
    line = f"{SIG_PREFIX}{KEY_NAME} {base64.b64encode(key_hash(key.public_key()) + sig).decode()}\n"
    return SignedHead(ledger_id, seq, head_hash, time, body + "\n" + line, fingerprint(key.public_key()))


def parse_head(note: str) -> tuple[SignedHead, list[tuple[str, bytes, bytes]]]:
    """The head a note states and its signature lines (name, key hash, signature); unverified."""
    body, sep, sigs = note.partition("\n\n")
    if not sep:
        raise HeadProblem("not a signed note: no blank line before the signatures")
    lines = (body + "\n").splitlines()
    if len(lines) < 4 or not lines[0].startswith(ORIGIN_PREFIX):
        raise HeadProblem(f"not an rsp-gate head: the origin line must start with {ORIGIN_PREFIX!r}")
    ledger_id = lines[0][len(ORIGIN_PREFIX):]
    if not lines[1].isdigit():
        raise HeadProblem(f"head size {lines[1]!r} is not a number")
    try:
        head_hash = base64.b64decode(lines[2], validate=True).hex()
    except (binascii.Error, ValueError):
        raise HeadProblem("head hash is not base64") from None
    times = [ln[5:] for ln in lines[3:] if ln.startswith("time ")]
    if len(head_hash) != 64 or not times:
        raise HeadProblem("head lacks a 32-byte hash or a time line")
    signatures = []
    for line in sigs.splitlines():
        if not line.startswith(SIG_PREFIX):
            raise HeadProblem(f"bad signature line {line[:40]!r}")
        name, _, blob = line[len(SIG_PREFIX):].partition(" ")
        try:
            raw = base64.b64decode(blob, validate=True)
        except (binascii.Error, ValueError):
            raise HeadProblem("signature is not base64") from None
        if len(raw) < 5:
            raise HeadProblem("signature line too short")
        signatures.append((name, raw[:4], raw[4:]))
    if not signatures:
        raise HeadProblem("head carries no signature")
    return SignedHead(ledger_id, int(lines[1]), head_hash, times[0], note), signatures


def verify_head(note: str, trusted: Iterable[Ed25519PublicKey]) -> SignedHead:
    """The head, when a trusted key's signature over it verifies; HeadProblem otherwise."""
    head, signatures = parse_head(note)
    body = note.partition("\n\n")[0] + "\n"
    keys = list(trusted)
    for name, khash, sig in signatures:
        for key in keys:
            if key_hash(key, name) == khash and verify(key, base64.b64encode(sig).decode(), body.encode("utf-8")):
                return replace(head, signer=fingerprint(key))
    raise HeadProblem(f"head at seq {head.seq} carries no signature valid under a trusted key")


def read_heads(folder: Path) -> list[str]:
    """Every head note in `folder`, oldest sequence number first."""
    if not folder.is_dir():
        return []
    return [p.read_text(encoding="utf-8") for p in sorted(folder.glob(f"*{SUFFIX}"))]


def sign_ledger_head(ledger: Ledger, settings: Settings | None = None) -> SignedHead:
    """Sign the ledger's current head with the gate key (recording the key first when new)."""
    from tasks.trust.attest import gate_key_for

    settings = _settings(settings)
    gate = gate_key_for(ledger, settings)
    ledger_id = ledger.ledger_id
    if ledger_id is None:
        raise HeadError(f"{ledger.url}: the ledger has no identity yet; run `rsp init` first")
    seq, head_hash = ledger.head()
    return sign_head_note(gate.key, ledger_id, seq, head_hash)


def sign_and_keep(ledger: Ledger, settings: Settings | None = None) -> SignedHead:
    """Sign the head, keep it under the heads folder and publish it when a publish URI is set."""
    settings = _settings(settings)
    head = sign_ledger_head(ledger, settings)
    folder = settings.resolved_heads_dir / head.ledger_id
    write_atomic(folder / head.file_name, head.note.encode("utf-8"), mode=0o644)
    if settings.head_publish_uri:
        head = replace(head, published=publish_head(head, settings.head_publish_uri, settings))
    return head


def publish_head(head: SignedHead, uri: str, settings: Settings | None = None) -> str:
    """Write the head as a new object under `uri` (s3://bucket/prefix) with COMPLIANCE-mode Object Lock
    retention; HeadError when the bucket has no Object Lock (a head there could be rewritten)."""
    settings = _settings(settings)
    try:
        where = parse_uri(uri, what="head publish location")
    except ValueError as exc:
        raise HeadError(str(exc)) from None
    if not where.is_s3:
        raise HeadError(f"head publish location {uri!r}: must be s3://bucket/prefix (a bucket with Object Lock)")
    from botocore.exceptions import BotoCoreError, ClientError

    from tasks.storage import error_code, s3_client_for

    client = s3_client_for(settings)
    try:
        config = client.get_object_lock_configuration(Bucket=where.bucket).get("ObjectLockConfiguration", {})
    except ClientError as exc:
        if error_code(exc) in ("ObjectLockConfigurationNotFoundError", "ObjectLockConfigurationNotFound"):
            config = {}
        else:
            raise HeadError(f"cannot read the Object Lock configuration of bucket {where.bucket}: {exc}") from None
    except BotoCoreError as exc:
        raise HeadError(f"cannot reach bucket {where.bucket}: {exc}") from None
    if config.get("ObjectLockEnabled") != "Enabled":
        raise HeadError(f"refusing to publish signed heads to s3://{where.bucket}: the bucket has no Object Lock, "
                        "so a published head could be rewritten")
    key = "/".join(p for p in (where.key.strip("/"), head.ledger_id, head.file_name) if p)
    until = dt.datetime.now(dt.UTC) + dt.timedelta(days=settings.head_retention_days)
    body = head.note.encode("utf-8")
    try:
        client.put_object(Bucket=where.bucket, Key=key, Body=body, ContentType="text/plain; charset=utf-8",
                          ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until,
                          ChecksumAlgorithm="SHA256")
    except (BotoCoreError, ClientError) as exc:
        raise HeadError(f"cannot publish head seq {head.seq} to s3://{where.bucket}/{key}: {exc}") from None
    return f"s3://{where.bucket}/{key}"


def _settings(settings: Settings | None) -> Settings:
    if settings is None:
        from tasks.settings import get_settings

        return get_settings()
    return settings
