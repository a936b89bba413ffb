"""Safeguard verification: required safeguards are checked against evidence, never believed.

    from tasks.safeguards import VerificationContext, verify_safeguards
    ctx = VerificationContext.from_settings()          # or VerificationContext(now=..., ...)
    checks = verify_safeguards(policy, determination.required_safeguards, ctx)
    classify(policy, results, safeguard_checks=checks)

Verifiers: "attestation" (evidence registry + roster) and the automated checks
`checkpoint_bucket_hardening` (S3 bucket controls) and `misuse_classifier_probe`
(HTTP canary). Importing this package registers them; boto3 and httpx are imported
only when a check runs.
"""

from __future__ import annotations

from tasks.safeguards import attestation as _attestation  # noqa: F401 - registers the verifier
from tasks.safeguards import bucket_hardening as _bucket_hardening  # noqa: F401
from tasks.safeguards import probe as _probe  # noqa: F401
from tasks.safeguards.context import VerificationContext
from tasks.safeguards.evidence import (
    Attestation,
    EvidenceProblem,
    EvidenceSnapshot,
    EvidenceStore,
    EvidenceStoreError,
    LocalEvidenceStore,
    S3EvidenceStore,
    StoredAttestation,
    new_attestation,
    open_evidence_store,
)
from tasks.safeguards.roster import Person, Roster, RosterError, load_roster, parse_roster
from tasks.safeguards.verifiers import (
    SafeguardVerifier,
    Verdict,
    register_verifier,
    registered_verifiers,
    unregister_verifier,
    verifier_for,
    verify_safeguard,
    verify_safeguards,
)

__all__ = [
    "Attestation",
    "EvidenceProblem",
    "EvidenceSnapshot",
    "EvidenceStore",
    "EvidenceStoreError",
    "LocalEvidenceStore",
    "Person",
    "Roster",
    "RosterError",
    "S3EvidenceStore",
    "SafeguardVerifier",
    "StoredAttestation",
    "Verdict",
    "VerificationContext",
    "load_roster",
    "new_attestation",
    "open_evidence_store",
    "parse_roster",
    "register_verifier",
    "registered_verifiers",
    "unregister_verifier",
    "verifier_for",
    "verify_safeguard",
    "verify_safeguards",
]
