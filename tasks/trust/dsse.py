"""DSSE envelopes carrying in-toto Statements: how the gate signs what it decides.

Formats, exactly as published (no crypto here: signing and verifying are `tasks.trust.keys`):

- DSSE v1 (secure-systems-lab/dsse, protocol.md and envelope.md): the signature is over
  PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body, LEN the byte length
  in ASCII decimal; the envelope is `{"payload": b64(body), "payloadType": type,
  "signatures": [{"keyid": ..., "sig": b64(sig)}]}`. Standard or URL-safe base64 is read.
  The keyid is only a hint (the spec forbids security decisions on it): a signature counts
  when it verifies under a trusted key, whatever keyid it claims.
- in-toto Statement v1 (in-toto/attestation, spec/v1/statement.md): `{"_type":
  "https://in-toto.io/Statement/v1", "subject": [{"name", "digest": {alg: hex}}],
  "predicateType", "predicate"}`, payload type `application/vnd.in-toto+json`.

Hand-written rather than taken from securesystemslib: PAE is one line, and that library
would bring its own key and signer model beside `tasks.trust.keys`.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tasks.trust.keys import canonical_json, fingerprint, sign, verify

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"


class EnvelopeProblem(ValueError):
    """An envelope or statement that is malformed or not validly signed; one line says what."""


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what is actually signed."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(body), body)


def sign_envelope(body: bytes, payload_type: str, key: Ed25519PrivateKey) -> dict[str, Any]:
    """A DSSE envelope over `body`, signed by `key`; keyid is the key's `SHA256:` fingerprint."""
    return {
        "payload": base64.b64encode(body).decode("ascii"),
        "payloadType": payload_type,
        "signatures": [{"keyid": fingerprint(key.public_key()), "sig": sign(key, pae(payload_type, body))}],
    }


def _b64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise EnvelopeProblem(f"envelope {what} is not a base64 string")
    padded = text + "=" * (-len(text) % 4)
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(padded.encode("ascii"))
        return base64.b64decode(padded.encode("ascii"), validate=True)
    except (binascii.Error, ValueError):
        raise EnvelopeProblem(f"envelope {what} is not valid base64") from None


def open_envelope(envelope: object, trusted: Iterable[Ed25519PublicKey],
                  payload_type: str = IN_TOTO_PAYLOAD_TYPE) -> tuple[bytes, str]:
    """(body, fingerprint of the key whose signature verified). EnvelopeProblem when the envelope is
    malformed, of another payload type, or carries no signature valid under a trusted key."""
    if not isinstance(envelope, Mapping):
        raise EnvelopeProblem("envelope is not a JSON object")
    missing = [f for f in ("payload", "payloadType", "signatures") if f not in envelope]
    if missing:
        raise EnvelopeProblem(f"envelope lacks {', '.join(missing)}")
    kind = envelope["payloadType"]
    if kind != payload_type:
        raise EnvelopeProblem(f"envelope payloadType is {kind!r}, expected {payload_type!r}")
    body = _b64(envelope["payload"], "payload")
    signatures = envelope["signatures"]
    if not isinstance(signatures, list) or not signatures:
        raise EnvelopeProblem("envelope has no signatures")
    message = pae(payload_type, body)
    keys = list(trusted)
    for entry in signatures:
        sig = entry.get("sig") if isinstance(entry, Mapping) else None
        if not isinstance(sig, str):
            raise EnvelopeProblem("envelope signature lacks 'sig'")
        raw = base64.b64encode(_b64(sig, "signature")).decode("ascii")
        for key in keys:
            if verify(key, raw, message):
                return body, fingerprint(key)
    hints = ", ".join(str(e.get("keyid") or "(no keyid)") for e in signatures if isinstance(e, Mapping))
    raise EnvelopeProblem(f"no signature verifies under a trusted key (signed by {hints})")


def statement(subjects: Iterable[tuple[str, Mapping[str, str]]], predicate_type: str,
              predicate: Mapping[str, Any]) -> dict[str, Any]:
    """An in-toto Statement v1: `subjects` are (name, digest set such as {"sha256": hex})."""
    subject = [{"name": name, "digest": dict(digest)} for name, digest in subjects]
    if not subject or any(not s["digest"] for s in subject):
        raise ValueError("an in-toto statement needs at least one subject, each with a digest")
    return {"_type": STATEMENT_TYPE, "subject": subject, "predicateType": predicate_type,
            "predicate": dict(predicate)}


def sign_statement(stmt: Mapping[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """The statement as canonical JSON in a DSSE envelope signed by `key`."""
    return sign_envelope(canonical_json(dict(stmt)), IN_TOTO_PAYLOAD_TYPE, key)


def open_statement(envelope: object, trusted: Iterable[Ed25519PublicKey],
                   predicate_type: str | None = None) -> tuple[dict[str, Any], str]:
    """(statement, signer fingerprint) of a verified envelope; EnvelopeProblem when the signature
    fails or the payload is not an in-toto Statement v1 (of `predicate_type`, when given)."""
    body, signer = open_envelope(envelope, trusted)
    try:
        stmt = json.loads(body)
    except ValueError:
        raise EnvelopeProblem("signed payload is not JSON") from None
    if not isinstance(stmt, dict) or stmt.get("_type") != STATEMENT_TYPE:
        raise EnvelopeProblem(f"signed payload is not an in-toto Statement v1 (_type {STATEMENT_TYPE})")
    subjects = stmt.get("subject")
    if not isinstance(subjects, list) or not subjects or not all(
            isinstance(s, dict) and isinstance(s.get("digest"), dict) and s["digest"] for s in subjects):
        raise EnvelopeProblem("statement has no subject with a digest")
    if predicate_type is not None and stmt.get("predicateType") != predicate_type:
        raise EnvelopeProblem(f"statement predicateType is {stmt.get('predicateType')!r}, expected {predicate_type!r}")
    if not isinstance(stmt.get("predicate"), dict):
        raise EnvelopeProblem("statement has no predicate object")
    return stmt, signer
