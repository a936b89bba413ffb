"""DSSE envelopes with in-toto statements (tasks/trust/dsse.py) and signed ledger heads (tasks/ledger/heads.py)."""

from __future__ import annotations

import base64
import copy
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tasks.ledger.heads import HeadProblem, key_hash, parse_head, sign_head_note, verify_head
from tasks.trust.dsse import (
    IN_TOTO_PAYLOAD_TYPE,
    STATEMENT_TYPE,
    EnvelopeProblem,
    open_envelope,
    open_statement,
    pae,
    sign_envelope,
    sign_statement,
    statement,
)
from tasks.trust.keys import fingerprint

KEY = Ed25519PrivateKey.generate()
OTHER = Ed25519PrivateKey.generate()
PRED = "https://example.com/predicate/v1"


def stmt() -> dict:
    return statement([("file:///ck/run-a/step-000000001/", {"sha256": "ab" * 32})], PRED,
                     {"decision": "halt", "level": "ASL-3"})


def test_pae_is_the_published_encoding() -> None:
    # The example of secure-systems-lab/dsse protocol.md.
    assert pae("http://example.com/HelloWorld", b"hello world") == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    assert pae("t", b"") == b"DSSEv1 1 t 0 "
    assert pae("\u00e9", b"x") == "DSSEv1 2 \u00e9 1 x".encode()  # LEN counts bytes, not characters


def test_statement_round_trip_in_an_envelope() -> None:
    env = sign_statement(stmt(), KEY)
    assert set(env) == {"payload", "payloadType", "signatures"}
    assert env["payloadType"] == IN_TOTO_PAYLOAD_TYPE
    assert env["signatures"][0]["keyid"] == fingerprint(KEY.public_key())
    body = base64.b64decode(env["payload"])
    assert json.loads(body)["_type"] == STATEMENT_TYPE
    opened, signer = open_statement(json.loads(json.dumps(env)), [OTHER.public_key(), KEY.public_key()], PRED)
    assert opened == stmt() and signer == fingerprint(KEY.public_key())


def test_one_changed_byte_anywhere_fails() -> None:
    env = sign_statement(stmt(), KEY)
    body = bytearray(base64.b64decode(env["payload"]))
    for i in (0, len(body) // 2, len(body) - 1):
        forged = copy.deepcopy(env)
        changed = bytearray(body)
        changed[i] ^= 0x01
        forged["payload"] = base64.b64encode(bytes(changed)).decode()
        with pytest.raises(EnvelopeProblem, match="no signature verifies"):
            open_envelope(forged, [KEY.public_key()])
    sig = bytearray(base64.b64decode(env["signatures"][0]["sig"]))
    sig[5] ^= 0x80
    forged = copy.deepcopy(env)
    forged["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    with pytest.raises(EnvelopeProblem, match="no signature verifies"):
        open_envelope(forged, [KEY.public_key()])


def test_type_key_and_shape_are_checked() -> None:
    env = sign_statement(stmt(), KEY)
    with pytest.raises(EnvelopeProblem, match="no signature verifies"):
        open_envelope(env, [OTHER.public_key()])  # an untrusted signer, whatever keyid it claims
    retyped = {**env, "payloadType": "application/json"}
    with pytest.raises(EnvelopeProblem, match="payloadType"):
        open_envelope(retyped, [KEY.public_key()])
    # The type is authenticated too: a body signed under another type does not verify as in-toto.
    other_type = sign_envelope(base64.b64decode(env["payload"]), "application/vnd.other+json", KEY)
    with pytest.raises(EnvelopeProblem, match="no signature verifies"):
        open_envelope({**other_type, "payloadType": IN_TOTO_PAYLOAD_TYPE}, [KEY.public_key()])
    with pytest.raises(EnvelopeProblem, match="predicateType"):
        open_statement(env, [KEY.public_key()], "https://example.com/other/v1")
    with pytest.raises(EnvelopeProblem, match="no signatures"):
        open_envelope({**env, "signatures": []}, [KEY.public_key()])
    not_statement = sign_envelope(b'{"_type": "x"}', IN_TOTO_PAYLOAD_TYPE, KEY)
    with pytest.raises(EnvelopeProblem, match="in-toto Statement v1"):
        open_statement(not_statement, [KEY.public_key()])
    with pytest.raises(ValueError, match="subject"):
        statement([("x", {})], PRED, {})


def test_url_safe_base64_is_read() -> None:
    env = sign_statement(stmt(), KEY)
    urlsafe = {**env, "payload": base64.urlsafe_b64encode(base64.b64decode(env["payload"])).decode().rstrip("=")}
    assert open_statement(urlsafe, [KEY.public_key()])[0] == stmt()


def test_signed_head_is_a_c2sp_signed_note() -> None:
    head = sign_head_note(KEY, "ledger-1", 42, "cd" * 32)
    body, sig_line = head.note.split("\n\n")
    lines = body.split("\n")
    assert lines[:3] == ["rsp-gate.dev/ledger/ledger-1", "42", base64.b64encode(bytes.fromhex("cd" * 32)).decode()]
    assert lines[3].startswith("time ") and sig_line.startswith("\u2014 rsp-gate ")
    raw = base64.b64decode(sig_line.split()[2])
    assert raw[:4] == key_hash(KEY.public_key()) and len(raw) == 4 + 64
    verified = verify_head(head.note, [OTHER.public_key(), KEY.public_key()])
    assert (verified.ledger_id, verified.seq, verified.hash) == ("ledger-1", 42, "cd" * 32)
    assert verified.signer == fingerprint(KEY.public_key())
    with pytest.raises(HeadProblem, match="no signature valid"):
        verify_head(head.note.replace("\n42\n", "\n43\n"), [KEY.public_key()])
    with pytest.raises(HeadProblem, match="no signature valid"):
        verify_head(head.note, [OTHER.public_key()])
    with pytest.raises(HeadProblem, match="origin"):
        parse_head("example.org/log\n1\nAA==\n\n\u2014 x AAAAAAA=\n")
