"""The attestation verifier: a person in an authorised role has recently said the safeguard is in place.

Checked, in order, against the newest valid record for the safeguard:
1. the evidence store is readable and holds no problem record that might concern
   the safeguard (else `unknown`: the unreadable record might be the newer one);
2. a record exists (else `unmet`);
3. its role is one the policy's `verification.roles` allows (else `unmet`);
4. the roster is readable (else `unknown`) and the person holds that role in it
   (else `unmet`, "forged role");
5. it is signed by the attester: its signature verifies over the record's body with the key
   it names, and the roster lists that key for the attester (else `unmet`: unsigned, signed
   with someone else's key, or altered after signing). An unsigned record counts only where
   the policy trusts channel "unsigned" for its role (`verification.trusted_unsigned_channels`);
   a signature that does not verify never counts;
6. it is not dated in the future beyond a small clock skew (else `unmet`);
7. it is not past `expires_at` and not older than `max_age_days` (else `expired`).
"""

from __future__ import annotations

import datetime as dt

from policy.schema import AttestationVerification, Safeguard
from tasks.safeguards.context import VerificationContext
from tasks.safeguards.evidence import Attestation, EvidenceStoreError
from tasks.safeguards.roster import Roster, RosterError
from tasks.safeguards.verifiers import Verdict, register_verifier

# Clocks of the attesting machine and this one disagree a little; more than this is not skew.
CLOCK_SKEW = dt.timedelta(minutes=5)


UNSIGNED = "unsigned"  # the trusted-unsigned channel name for attestations (policy.schema)


def signature_problem(rec: Attestation, roster: Roster) -> str | None:
    """Why the record's signature does not vouch for its attester, or None when it does."""
    from tasks.trust.keys import canonical_json, verify

    if rec.signature is None:
        return "unsigned"
    fp = rec.key_fingerprint
    if fp is None:
        return "signed, but names no key fingerprint"
    key = roster.keys_of(rec.attested_by).get(fp)
    if key is None:
        owner = roster.owner_of(fp)
        return (f"signed with {owner}'s key {fp}, not {rec.attested_by}'s" if owner is not None
                else f"signed with key {fp}, which the roster does not list for {rec.attested_by}")
    if not verify(key, rec.signature, canonical_json(rec.signed_body())):
        return f"signature by {fp} does not verify: the record was altered after it was signed"
    return None


def _age(delta: dt.timedelta) -> str:
    days = delta.total_seconds() / 86400
    return f"{days:.1f} days" if days >= 1 else f"{delta.total_seconds() / 3600:.1f} hours"


@register_verifier("attestation")
def verify_attestation(safeguard: Safeguard, ctx: VerificationContext) -> Verdict:
    rules = safeguard.verification
    if not isinstance(rules, AttestationVerification):
        return Verdict.unknown(f"{safeguard.id}: verification method is {rules.method}, not attestation")
    try:
        snapshot = ctx.evidence()
    except EvidenceStoreError as exc:
        return Verdict.unknown(f"evidence store unreadable: {exc}")
    problems = snapshot.problems_for(safeguard.id)
    if problems:
        shown = "; ".join(str(p) for p in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        return Verdict.unknown(f"{len(problems)} unreadable or invalid evidence record(s) may concern "
                               f"{safeguard.id}: {shown}{more}")
    latest = snapshot.latest(safeguard.id)
    if latest is None:
        return Verdict.unmet(f"no attestation for {safeguard.id} in {snapshot.store}")
    rec, src = latest.record, latest.source
    who = f"{rec.attested_by} as {rec.role}"
    if rec.role not in rules.roles:
        return Verdict.unmet(f"attestation by {who} ({src}): role '{rec.role}' may not attest {safeguard.id}; "
                             f"the policy allows {', '.join(rules.roles)}")
    try:
        roster = ctx.get_roster()
    except RosterError as exc:
        return Verdict.unknown(f"attestation by {who} ({src}) cannot be checked: roster unreadable: {exc}")
    person = roster.person(rec.attested_by)
    if person is None:
        return Verdict.unmet(f"forged role: {rec.attested_by} is not on the roster ({src})")
    if rec.role not in person.roles:
        held = ", ".join(person.roles) or "no roles"
        return Verdict.unmet(f"forged role: {rec.attested_by} does not hold role '{rec.role}' per the roster "
                             f"(holds {held}) ({src})")
    unsigned_note = ""
    problem = signature_problem(rec, roster)
    if problem == UNSIGNED and UNSIGNED in rules.trusted_unsigned_channels.get(rec.role, ()):
        unsigned_note = f", unsigned (the policy trusts unsigned attestations by {rec.role})"
    elif problem == UNSIGNED:
        return Verdict.unmet(f"unsigned attestation by {who} ({src}): only signed attestations count for "
                             f"{rec.role} (rsp evidence attest ... --key PATH)")
    elif problem is not None:
        return Verdict.unmet(f"attestation by {who} ({src}) does not verify: {problem}")
    now = ctx.now
    if rec.attested_at > now + CLOCK_SKEW:
        return Verdict.unmet(f"attestation by {who} is dated {rec.attested_at.isoformat()}, in the future "
                             f"(now {now.isoformat()}) ({src})")
    if rec.expires_at is not None and rec.expires_at <= now:
        return Verdict.expired(f"attestation by {who} expired at {rec.expires_at.isoformat()} ({src})")
    age = now - rec.attested_at
    max_age = dt.timedelta(days=rules.max_age_days)
    if age > max_age:
        return Verdict.expired(f"attestation by {who} is {_age(age)} old, older than the policy's "
                               f"{rules.max_age_days} days ({rec.attested_at.isoformat()}) ({src})")
    expiry = f", expires {rec.expires_at.isoformat()}" if rec.expires_at else ""
    signed = f", signed by {rec.key_fingerprint}" if not unsigned_note else unsigned_note
    return Verdict.met(f"attested by {who} at {rec.attested_at.isoformat()} ({_age(max(age, dt.timedelta()))} "
                       f"old, max {rules.max_age_days} days{expiry}{signed}): {rec.evidence} ({src})")
