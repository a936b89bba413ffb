"""Safeguard verification: required safeguards are checked against evidence, never believed.

    from tasks.safeguards import VerificationContext, verify_safeguards
    ctx = VerificationContext.from_settings()          # or VerificationContext(now=..., ...)
    checks = verify_safeguards(policy, determination.required_safeguards, ctx)
    classify(policy, results, safeguard_checks=checks)

Verifiers: "attestation" (evidence registry + roster) and the automated checks
`checkpoint_bucket_hardening` (S3 bucket controls) and `misuse_classifier_probe`
(HTTP canary), in the plugin registry `VERIFIERS` (tasks/registry.py): each built-in is
imported when first needed; boto3 and httpx only when a check runs.
"""

from __future__ import annotations

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
    VERIFIERS,
    SafeguardVerifier,
    Verdict,
    register_verifier,
    unregister_verifier,
    verifier_for,
    verify_safeguard,
    verify_safeguards,
)

__all__ = [
    "VERIFIERS",
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
    "unregister_verifier",
    "verifier_for",
    "verify_safeguard",
    "verify_safeguards",
]
