"""Ed25519 keys for people and for the gate: load, sign, verify, fingerprint, generate.

Every primitive is `cryptography`'s; this module only fixes the formats we accept so
that one concept (a key and what it signed) has one home:

- public keys are OpenSSH lines (`ssh-ed25519 AAAA… comment`), the format people already
  paste into `authorized_keys` and rosters;
- private keys are files in OpenSSH (`ssh-keygen -t ed25519`) or PKCS#8 PEM format,
  optionally passphrase-protected;
- a key is named by its fingerprint, `SHA256:<base64>` exactly as `ssh-keygen -lf` prints it,
  so an operator can compare what the gate reports with what their own tools say;
- what is signed is always bytes; structured statements are turned into bytes by
  `canonical_json` (sorted keys, no whitespace, UTF-8) so signer and verifier agree byte for byte.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

MAX_KEY_FILE_BYTES = 64 * 1024


class KeyProblem(ValueError):
    """A key that cannot be used; the message is one line naming what is wrong."""


def canonical_json(value: Any) -> bytes:
    """The bytes a structured statement is signed as (same rule as the ledger's hashes)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def parse_public_key(line: str) -> Ed25519PublicKey:
    """An OpenSSH `ssh-ed25519 AAAA… [comment]` line → a public key. Other key types are refused."""
    text = line.strip()
    if not text.startswith("ssh-ed25519 "):
        raise KeyProblem("public key must be an OpenSSH ed25519 line ('ssh-ed25519 AAAA…')")
    try:
        key = serialization.load_ssh_public_key(text.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise KeyProblem(f"public key is not a valid OpenSSH ed25519 line: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):  # pragma: no cover - the prefix check above rules it out
        raise KeyProblem("public key is not ed25519")
    return key


def public_key_line(key: Ed25519PublicKey, comment: str = "") -> str:
    raw = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode("ascii")
    return f"{raw} {comment}".strip()


def fingerprint(key: Ed25519PublicKey) -> str:
    """`SHA256:<unpadded base64>` of the SSH wire-format key, as `ssh-keygen -lf` prints it."""
    blob = base64.b64decode(public_key_line(key).split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")


def load_private_key(path: str | Path, passphrase: str | None = None) -> Ed25519PrivateKey:
    """A private key file (OpenSSH or PKCS#8 PEM) → an ed25519 private key, with one-line errors."""
    p = Path(path).expanduser()
    try:
        if p.stat().st_size > MAX_KEY_FILE_BYTES:
            raise KeyProblem(f"{p}: too large to be a key file")
        data = p.read_bytes()
    except FileNotFoundError:
        raise KeyProblem(f"{p}: no such key file") from None
    except OSError as exc:
        raise KeyProblem(f"{p}: cannot read key file ({exc.strerror or exc})") from None
    password = passphrase.encode() if passphrase else None
    key: object  # the loaders return different unions of key types; only ed25519 is accepted below
    try:
        if data.lstrip().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----"):
            key = serialization.load_ssh_private_key(data, password=password)
        else:
            key = serialization.load_pem_private_key(data, password=password)
    except TypeError as exc:  # passphrase missing or given for an unencrypted key
        raise KeyProblem(f"{p}: {exc}") from None
    except ValueError as exc:
        raise KeyProblem(f"{p}: not a readable private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyProblem(f"{p}: not an ed25519 key (only ed25519 keys are accepted)")
    return key


def sign(key: Ed25519PrivateKey, data: bytes) -> str:
    """Base64 of the ed25519 signature over `data`."""
    return base64.b64encode(key.sign(data)).decode("ascii")


def verify(key: Ed25519PublicKey, signature_b64: str, data: bytes) -> bool:
    """True only when `signature_b64` is a valid signature by `key` over exactly `data`."""
    try:
        raw = base64.b64decode(signature_b64, validate=True)
    except (ValueError, TypeError):
        return False
    try:
        key.verify(raw, data)
    except InvalidSignature:
        return False
    return True


def generate_key_files(folder: str | Path, name: str) -> tuple[Path, str]:
    """Write `<folder>/<name>` (OpenSSH private key, mode 0600) and `<name>.pub`; return (path, public line).

    For throwaway keys (the demo, tests); people bring their own from `ssh-keygen -t ed25519`.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    path = out / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private)
    line = public_key_line(key.public_key(), comment=name)
    (out / f"{name}.pub").write_text(line + "\n")
    return path, line
