"""The gate's key and what it signs about a determination.

Each determination the gate records carries a DSSE envelope (tasks/trust/dsse.py) around an
in-toto Statement: subject = the checkpoint (its URI, its digest), predicate = the
determination itself, the sha256 of the policy file's bytes, the sha256 of the exact
sample-row file it was computed from, and the ledger it was recorded in. The inputs are kept
content-addressed in the run folder (`inputs/<sha256>`), so a later re-evaluation of the same
checkpoint cannot overwrite what an earlier determination cites; `rsp audit export --bundle`
copies them from there.

The key is `RSP_GATE_KEY` (default `<home>/keys/gate`), created on first use with mode 0600;
its public key is recorded once in the ledger (`gate.key`).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tasks.ledger.events import GateKeyRecorded
from tasks.storage import write_atomic
from tasks.trust.dsse import sign_statement, statement
from tasks.trust.keys import fingerprint, generate_key_files, load_private_key, public_key_line

if TYPE_CHECKING:
    from policy.determination import Determination
    from tasks.ledger.store import Ledger
    from tasks.settings import Settings

PREDICATE_TYPE = "https://rsp-gate.dev/attestation/determination/v1"
INPUTS_DIR = "inputs"
ROWS_FILE = "results.jsonl"


@dataclass(frozen=True)
class GateKey:
    key: Ed25519PrivateKey
    path: Path

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.key.public_key())

    @property
    def public_line(self) -> str:
        return public_key_line(self.key.public_key(), comment="rsp-gate")


def load_or_create_gate_key(path: Path) -> GateKey:
    """The gate's private key at `path`; created (0600, with `<path>.pub`) when there is none. Two
    processes creating it at once end with one key: the new file is linked into place, never
    overwritten."""
    path = Path(path).expanduser()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            made, _ = generate_key_files(tmp, "gate")
            try:
                os.link(made, path)
                os.replace(Path(tmp) / "gate.pub", path.with_name(path.name + ".pub"))
            except FileExistsError:
                pass  # another process made it first: use theirs
    return GateKey(load_private_key(path), path)


def gate_key_for(ledger: Ledger, settings: Settings | None = None) -> GateKey:
    """The configured gate key, its public key recorded in `ledger` when this key has never been."""
    if settings is None:
        from tasks.settings import get_settings

        settings = get_settings()
    gate = load_or_create_gate_key(settings.resolved_gate_key)
    if not ledger.events(kind=GateKeyRecorded.KIND, subject=gate.fingerprint, limit=1):
        ledger.record(GateKeyRecorded(public_key=gate.public_line, fingerprint=gate.fingerprint,
                                      path=str(gate.path)), gate.fingerprint)
    return gate


def digest_set(digest: str | None, fallback: str) -> dict[str, str]:
    """A checkpoint digest (`sha256:<hex>`, or any `alg:value`) as an in-toto digest set; without
    one, the sha256 of `fallback` (the URI) so the statement still names its subject."""
    if digest and ":" in digest:
        alg, value = digest.split(":", 1)
        if alg and value:
            return {alg.lower(): value.lower()}
    if digest:
        return {"sha256": digest.lower()}
    return {"sha256": hashlib.sha256(fallback.encode("utf-8", "surrogateescape")).hexdigest()}


def keep_input(folder: Path, data: bytes) -> str:
    """Store `data` under `<folder>/inputs/<sha256>` (once) and return its sha256."""
    sha = hashlib.sha256(data).hexdigest()
    target = folder / INPUTS_DIR / sha
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            write_atomic(target, data, overwrite=False, mode=0o644)
        except FileExistsError:
            pass
    return sha


def determination_predicate(det: Determination, extra: Mapping[str, Any], folder: Path, runs_dir: Path,
                            ledger_id: str | None) -> dict[str, Any]:
    """What the gate signs about `det`. ValueError (one line) when the inputs it cites cannot be
    pinned: the policy file is gone or no longer the policy decided under, or the rows are missing."""
    from policy.identity import policy_sha256
    from tasks.inputs import read_policy, resolve_policy_path

    ref = str(extra.get("policy_ref") or "")
    if not ref:
        raise ValueError("no policy reference to pin")
    path = resolve_policy_path(ref)
    policy_bytes = path.read_bytes()
    if policy_sha256(read_policy(path)) != det.policy.sha256:
        raise ValueError(f"{path}: the policy file changed since the determination was made")
    stage_error = extra.get("stage_error")
    rows: dict[str, Any] | None = None
    if stage_error is None:  # a failed evaluation is classified on no rows at all (fail_closed_determination)
        data = (folder / ROWS_FILE).read_bytes()
        rows = {"name": ROWS_FILE, "sha256": keep_input(folder, data), "rows": data.count(b"\n")}
    try:
        where = folder.resolve().relative_to(Path(runs_dir).resolve()).as_posix()
    except ValueError:
        where = str(folder)
    return {
        "determination": det.model_dump(mode="json"),
        "ledger_id": ledger_id,
        "policy": {"ref": ref, "name": path.name, "sha256": keep_input(folder, policy_bytes),
                   "canonical_sha256": det.policy.sha256},
        "rows": rows,
        "run_folder": where,
        "stage_error": stage_error,
    }


def attest_determination(ledger: Ledger, det: Determination, extra: Mapping[str, Any], folder: Path,
                         settings: Settings | None = None) -> dict[str, Any]:
    """`{"attestation": envelope}` for the determination event, or `{"attestation_error": why}`:
    a determination that cannot be signed is still recorded (the halt it may carry matters more),
    and the audit reports it as unsigned."""
    if settings is None:
        from tasks.settings import get_settings

        settings = get_settings()
    try:
        gate = gate_key_for(ledger, settings)
        predicate = determination_predicate(det, extra, folder, settings.resolved_runs_dir, ledger.ledger_id)
        uri = det.checkpoint.uri if det.checkpoint is not None and det.checkpoint.uri else "(no checkpoint)"
        digest = det.checkpoint.digest if det.checkpoint is not None else None
        stmt = statement([(uri, digest_set(digest, uri))], PREDICATE_TYPE, predicate)
        return {"attestation": sign_statement(stmt, gate.key)}
    except Exception as exc:  # noqa: BLE001 - never lose the determination for want of a signature
        return {"attestation_error": " ".join(f"{type(exc).__name__}: {exc}".split())[:500]}
