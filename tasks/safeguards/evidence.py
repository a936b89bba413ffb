"""The evidence registry: attestation records that a safeguard is in place, one file per record.

A store is a folder (the embedded default, `<home>/evidence`) or an S3 prefix
(`s3://bucket/prefix`). Records are JSON (YAML accepted for hand-written ones),
validated strictly into `Attestation`. The store is append-only: the writer never
replaces a record (exclusive create locally, `If-None-Match: *` on S3), and a newer
record supersedes an older one for the same safeguard.

Reading never drops anything silently. A file that cannot be read, parsed or
validated, a digest that does not match, or a stray file in the store becomes an
`EvidenceProblem`; problems are attributed to a safeguard where the file name or
content says which, and a problem that cannot be attributed concerns every
safeguard. The attestation verifier turns any problem concerning a safeguard into
`unknown`: an unreadable record might be the newer one.

File names: `<safeguard>@<attested_at, UTC, compact>@<person>@<digest[:12]>.json`.
'@' cannot occur in an identifier, so the safeguard id is recoverable from the name
even when the content is garbage.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from policy.schema import Identifier, Text
from tasks.safeguards._text import describe_validation, load_yaml, one_line
from tasks.storage import TruncatedListing, bucket_problem, error_code, iter_objects, parse_uri, s3_client, write_atomic

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

MAX_RECORD_BYTES = 64 * 1024
RECORD_SUFFIXES = (".json", ".yaml", ".yml")
_SEP = "@"

Sha256Hex = Annotated[str, StringConstraints(strict=True, pattern=r"^[0-9a-f]{64}$")]
Signature = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=8192)]
# Timestamps arrive as ISO strings in JSON and sometimes as YAML timestamps; both parse, naive ones do not.
Timestamp = Annotated[AwareDatetime, Field(strict=False)]


class EvidenceStoreError(Exception):
    """The store as a whole cannot be read or written (unreachable, denied, not a folder)."""


class Attestation(BaseModel):
    """A person's signed-off statement that a safeguard is in place, in a role, at a time.

    `digest` is the sha256 of the record's canonical JSON without `digest` and
    `signature` (`signed_body`); the writer always sets it and readers reject a record
    whose digest does not match (an edited record). `signature` is base64 ed25519 by the
    attester over `canonical_json(signed_body())`, which includes `key_fingerprint`, the
    signer's key as the roster lists it; the attestation verifier checks it against the
    attester's roster keys (an edited record whose digest was recomputed fails there).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    schema_version: Literal[1] = 1
    safeguard: Identifier
    attested_by: Identifier
    role: Identifier
    attested_at: Timestamp
    expires_at: Timestamp | None = None
    evidence: Text
    digest: Sha256Hex | None = None
    key_fingerprint: Annotated[str, StringConstraints(strict=True, pattern=r"^SHA256:[A-Za-z0-9+/]{43}$")] | None = None
    signature: Signature | None = None

    @model_validator(mode="after")
    def _expiry_after_attestation(self) -> Attestation:
        if self.expires_at is not None and self.expires_at <= self.attested_at:
            raise ValueError(
                f"expires_at ({self.expires_at.isoformat()}) must be after attested_at ({self.attested_at.isoformat()})"
            )
        return self

    def signed_body(self) -> dict[str, Any]:
        """What the digest and the signature cover. `key_fingerprint` only when set, so records written
        before it existed keep their digests."""
        body = self.model_dump(mode="json", exclude={"digest", "signature"})
        if body.get("key_fingerprint") is None:
            body.pop("key_fingerprint", None)
        return body

    def body_digest(self) -> str:
        canonical = json.dumps(self.signed_body(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def to_json(self) -> bytes:
        return (json.dumps(self.model_dump(mode="json", exclude_none=True), indent=2, sort_keys=True) + "\n").encode()


def new_attestation(
    safeguard: str,
    attested_by: str,
    role: str,
    evidence: str,
    *,
    attested_at: dt.datetime | None = None,
    expires_at: dt.datetime | None = None,
    key: Ed25519PrivateKey | None = None,
) -> Attestation:
    """A validated record with its digest set, signed with `key` when given (the attester's private
    key; its fingerprint goes into the signed body). Raises pydantic.ValidationError on bad input."""
    from tasks.trust.keys import canonical_json, fingerprint, sign

    at = attested_at or dt.datetime.now(dt.UTC)
    draft = Attestation(safeguard=safeguard, attested_by=attested_by, role=role, evidence=evidence,
                        attested_at=at, expires_at=expires_at,
                        key_fingerprint=None if key is None else fingerprint(key.public_key()))
    signature = None if key is None else sign(key, canonical_json(draft.signed_body()))
    return draft.model_copy(update={"digest": draft.body_digest(), "signature": signature})


def record_filename(record: Attestation) -> str:
    at = record.attested_at.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    digest = (record.digest or record.body_digest())[:12]
    return f"{record.safeguard}{_SEP}{at}{_SEP}{record.attested_by}{_SEP}{digest}.json"


@dataclass(frozen=True)
class StoredAttestation:
    record: Attestation
    source: str  # file path or s3:// URI


@dataclass(frozen=True)
class EvidenceProblem:
    source: str
    message: str
    # Safeguards this problem may concern; empty: cannot tell, so it concerns every safeguard.
    safeguards: frozenset[str] = frozenset()

    def concerns(self, safeguard_id: str) -> bool:
        return not self.safeguards or safeguard_id in self.safeguards

    def __str__(self) -> str:
        return f"{self.source}: {self.message}"


@dataclass(frozen=True)
class EvidenceSnapshot:
    store: str
    records: tuple[StoredAttestation, ...] = ()
    problems: tuple[EvidenceProblem, ...] = ()
    _latest: dict[str, StoredAttestation] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Latest attested_at wins; the source name breaks ties so the answer never depends on listing order.
        for s in sorted(self.records, key=lambda s: (s.record.attested_at, s.source)):
            self._latest[s.record.safeguard] = s

    def latest(self, safeguard_id: str) -> StoredAttestation | None:
        return self._latest.get(safeguard_id)

    def history(self, safeguard_id: str) -> list[StoredAttestation]:
        """Every valid record for a safeguard, newest first."""
        return sorted((s for s in self.records if s.record.safeguard == safeguard_id),
                      key=lambda s: (s.record.attested_at, s.source), reverse=True)

    def problems_for(self, safeguard_id: str) -> list[EvidenceProblem]:
        return [p for p in self.problems if p.concerns(safeguard_id)]


def _safeguard_from_name(name: str) -> str | None:
    base = name.rsplit("/", 1)[-1]
    if _SEP not in base:
        return None
    head = base.split(_SEP, 1)[0]
    return head or None


def parse_record(raw: bytes, source: str) -> tuple[StoredAttestation | None, EvidenceProblem | None]:
    """Bytes of one record file → the record, or a problem naming the file. Never raises."""
    from_name = _safeguard_from_name(source)
    attributed = {from_name} if from_name else set()

    def problem(message: str) -> tuple[None, EvidenceProblem]:
        return None, EvidenceProblem(source, message, frozenset(attributed))

    if len(raw) > MAX_RECORD_BYTES:
        return problem(f"{len(raw)} bytes, over the {MAX_RECORD_BYTES}-byte record limit")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return problem("not UTF-8 text")
    if not text.strip():
        return problem("empty record")
    try:
        data: Any = load_yaml(text)
    except ValueError as exc:
        return problem(str(exc))
    if isinstance(data, dict) and isinstance(data.get("safeguard"), str):
        attributed.add(data["safeguard"])
    if not isinstance(data, dict):
        return problem(f"expected a JSON object, got {type(data).__name__}")
    try:
        record = Attestation.model_validate(data)
    except ValidationError as exc:
        return problem(f"invalid attestation: {describe_validation(exc)}")
    if record.digest is not None and record.digest != record.body_digest():
        return problem(f"digest mismatch: the record says {record.digest[:12]}…, its content hashes to "
                       f"{record.body_digest()[:12]}… (edited after it was written?)")
    if from_name is not None and from_name != record.safeguard:
        return problem(f"file name says safeguard '{from_name}' but the record says '{record.safeguard}'")
    return StoredAttestation(record, source), None


def _stray(source: str, why: str) -> EvidenceProblem:
    from_name = _safeguard_from_name(source)
    return EvidenceProblem(source, why, frozenset({from_name}) if from_name else frozenset())


def _is_hidden(name: str) -> bool:
    # Dot-files are the writer's temporaries (and editors' swap files): never records.
    return name.rsplit("/", 1)[-1].startswith(".")


class EvidenceStore(ABC):
    uri: str

    @abstractmethod
    def read(self) -> EvidenceSnapshot:
        """Every record and every problem. Raises EvidenceStoreError if the store cannot be listed."""

    @abstractmethod
    def write(self, record: Attestation) -> str:
        """Add a record (never replacing one); returns where it went. Raises EvidenceStoreError."""


class LocalEvidenceStore(EvidenceStore):
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.uri = str(self.folder)

    def read(self) -> EvidenceSnapshot:
        if not self.folder.exists():
            # A store nobody has written to yet: no records, so every attestation reads as missing.
            return EvidenceSnapshot(self.uri)
        if not self.folder.is_dir():
            raise EvidenceStoreError(f"evidence store {self.folder}: not a folder")
        records: list[StoredAttestation] = []
        problems: list[EvidenceProblem] = []
        try:
            entries = sorted(self.folder.iterdir())
        except OSError as exc:
            raise EvidenceStoreError(f"evidence store {self.folder}: cannot list: {exc.strerror or exc}") from None
        for path in entries:
            source = str(path)
            if _is_hidden(path.name):
                continue
            if path.is_dir():
                problems.append(_stray(source, "a folder inside the evidence store; records are files directly in it"))
                continue
            if path.suffix.lower() not in RECORD_SUFFIXES:
                problems.append(_stray(source, f"not a record file (expected {', '.join(RECORD_SUFFIXES)})"))
                continue
            try:
                size = path.stat().st_size
                if size > MAX_RECORD_BYTES:
                    problems.append(_stray(source, f"{size} bytes, over the {MAX_RECORD_BYTES}-byte record limit"))
                    continue
                raw = path.read_bytes()
            except OSError as exc:
                problems.append(_stray(source, f"unreadable: {exc.strerror or exc}"))
                continue
            record, problem = parse_record(raw, source)
            if record is not None:
                records.append(record)
            if problem is not None:
                problems.append(problem)
        return EvidenceSnapshot(self.uri, tuple(records), tuple(problems))

    def write(self, record: Attestation) -> str:
        target = self.folder / record_filename(record)
        try:
            # Without overwrite the writer publishes with a hard link, which fails if the name exists:
            # readers never see half a record, and no record is ever replaced. Mode 0o666 (less the
            # umask), as a plain file: records are read by whoever runs the gate, not only their writer.
            write_atomic(target, record.to_json(), overwrite=False, mode=0o666)
        except FileExistsError:
            raise EvidenceStoreError(f"{target}: a record with this name already exists") from None
        except OSError as exc:
            raise EvidenceStoreError(f"evidence store {self.folder}: cannot write: {exc.strerror or exc}") from None
        return str(target)


class S3EvidenceStore(EvidenceStore):
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        client: Any = None,
    ):
        problem = bucket_problem(bucket)
        if problem:
            raise ValueError(f"evidence store: {problem}")
        prefix = prefix.strip("/")
        self.bucket = bucket
        self.prefix = prefix + "/" if prefix else ""
        self.uri = f"s3://{bucket}/{self.prefix}"
        self._client = client
        self.endpoint_url, self.region, self.profile = endpoint_url, region, profile

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = s3_client(endpoint_url=self.endpoint_url, region=self.region, profile=self.profile)
        return self._client

    def _fail(self, what: str, exc: BaseException) -> EvidenceStoreError:
        return EvidenceStoreError(f"evidence store {self.uri}: {what}: {one_line(exc)}")

    def read(self) -> EvidenceSnapshot:
        from botocore.exceptions import BotoCoreError, ClientError

        records: list[StoredAttestation] = []
        problems: list[EvidenceProblem] = []
        try:
            # Inside the try: building the client fails like a listing does.
            objects = iter_objects(self.client, self.bucket, self.prefix)
            for obj in objects:
                key: str = obj["Key"]
                rel = key.removeprefix(self.prefix)
                source = f"s3://{self.bucket}/{key}"
                if not rel or key.endswith("/") or _is_hidden(rel):
                    continue  # folder markers made by consoles, and temporaries
                if "/" in rel:
                    problems.append(_stray(source, "nested under the evidence prefix; records lie directly in it"))
                    continue
                if not rel.lower().endswith(RECORD_SUFFIXES):
                    problems.append(_stray(source, f"not a record file (expected {', '.join(RECORD_SUFFIXES)})"))
                    continue
                if obj.get("Size", 0) > MAX_RECORD_BYTES:
                    problems.append(_stray(source, f"{obj['Size']} bytes, over the {MAX_RECORD_BYTES}-byte record limit"))
                    continue
                try:
                    response = self.client.get_object(Bucket=self.bucket, Key=key)
                    with response["Body"] as body:
                        raw = body.read(MAX_RECORD_BYTES + 1)
                except ClientError as exc:
                    if error_code(exc) in ("NoSuchKey", "404"):
                        continue  # deleted between listing and reading: it is simply not there any more
                    problems.append(_stray(source, f"unreadable: {one_line(exc)}"))
                    continue
                except BotoCoreError as exc:
                    raise self._fail(f"cannot read {key}", exc) from exc
                record, problem = parse_record(raw, source)
                if record is not None:
                    records.append(record)
                if problem is not None:
                    problems.append(problem)
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("cannot list", exc) from exc
        except TruncatedListing as exc:
            raise EvidenceStoreError(f"evidence store {self.uri}: {exc}") from None
        return EvidenceSnapshot(self.uri, tuple(records), tuple(problems))

    def write(self, record: Attestation) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        key = self.prefix + record_filename(record)
        try:
            # If-None-Match: a record is never replaced, even by a second writer racing this one.
            self.client.put_object(Bucket=self.bucket, Key=key, Body=record.to_json(),
                                   ContentType="application/json", IfNoneMatch="*")
        except ClientError as exc:
            if error_code(exc) in ("PreconditionFailed", "412"):
                raise EvidenceStoreError(f"s3://{self.bucket}/{key}: a record with this name already exists") from None
            raise self._fail(f"cannot write {key}", exc) from exc
        except BotoCoreError as exc:
            raise self._fail(f"cannot write {key}", exc) from exc
        return f"s3://{self.bucket}/{key}"


def open_evidence_store(uri: str | None = None, *, settings: Any = None, client: Any = None) -> EvidenceStore:
    """A store from a folder path, file:// URI or s3://bucket/prefix; default: the settings' evidence store.

    S3 endpoint, region and profile come from the settings (`s3_endpoint_url`, `s3_region`, `s3_profile`).
    Raises ValueError naming the URI when it cannot be used.
    """
    if uri is None or (settings is None and uri.startswith("s3://")):
        if settings is None:
            from tasks.settings import get_settings

            settings = get_settings()
        uri = uri or settings.resolved_evidence_store
    assert uri is not None
    location = parse_uri(uri, what="evidence store")
    if location.is_s3:
        return S3EvidenceStore(
            location.bucket, location.key,
            endpoint_url=getattr(settings, "s3_endpoint_url", None),
            region=getattr(settings, "s3_region", None),
            profile=getattr(settings, "s3_profile", None),
            client=client,
        )
    assert location.path is not None  # a location that is not S3 is local
    return LocalEvidenceStore(location.path)


def format_records(records: Iterable[StoredAttestation]) -> list[dict[str, Any]]:
    """Plain dicts for JSON output (CLI, reports)."""
    return [{**s.record.model_dump(mode="json", exclude_none=True), "source": s.source} for s in records]
