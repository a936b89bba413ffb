"""`rsp evidence attest | list`: the safeguard evidence registry as the people who attest use it.

    rsp evidence attest SAFEGUARD --by PERSON --role ROLE --key PATH --evidence TEXT [--expires ISO]
    rsp evidence list [--safeguard ID] [--roster PATH] [--json]

`attest` signs the record with the attester's ed25519 key (`--key`, or $RSP_SIGNING_KEY)
and refuses (exit 2) what verification would reject anyway: a safeguard the policy does
not define or does not verify by attestation, a role the policy does not allow for it, a
person the roster does not give that role, a key the roster does not list for that person,
or no key where the policy does not trust unsigned attestations for the role. The record is
timestamped now; it cannot be backdated. `list` shows whether each record's signature
verifies against the roster, and exits 1 when the store holds records it cannot use, so a
broken record is seen before it halts a run.

Store, policy and roster default to the settings (RSP_EVIDENCE_STORE, RSP_POLICY,
RSP_ROSTER or <home>/roster.yaml). boto3 is imported only for an s3:// store.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Annotated, Any

import typer

from rsp.console import EXIT_PROBLEM, fail, print_json

evidence_app = typer.Typer(help="Record and list safeguard attestations.", no_args_is_help=True,
                           add_completion=False)

StoreOpt = Annotated[
    str | None, typer.Option("--store", help="Folder or s3://bucket/prefix; default: settings' evidence store.")
]


def register(app: typer.Typer) -> None:
    app.add_typer(evidence_app, name="evidence")


def _settings(command: str) -> Any:
    from pydantic import ValidationError

    from tasks.settings import get_settings

    try:
        return get_settings()
    except ValidationError as exc:
        fail(f"evidence {command}: invalid settings: {' '.join(str(exc).split())}")


def _store(command: str, uri: str | None) -> Any:
    from tasks.safeguards.evidence import open_evidence_store

    # Settings are only needed for the default store or an S3 endpoint; a local --store works without them.
    settings = _settings(command) if uri is None or uri.startswith("s3://") else None
    try:
        return open_evidence_store(uri, settings=settings)
    except ValueError as exc:
        fail(f"evidence {command}: {exc}")


def _parse_time(option: str, value: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        fail(f"evidence attest: {option} {value!r} is not an ISO 8601 date-time (e.g. 2026-06-30T00:00:00Z)")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        fail(f"evidence attest: {option} {value!r} has no timezone; add Z or an offset such as +00:00")
    return parsed


@evidence_app.command("attest")
def attest(
    safeguard: Annotated[str, typer.Argument(help="Safeguard id from the policy.")],
    by: Annotated[str, typer.Option("--by", help="Person id of the attester, as in the roster.")],
    role: Annotated[str, typer.Option("--role", help="Role the person attests in (must be allowed by the policy).")],
    evidence: Annotated[str, typer.Option("--evidence", help="What shows the safeguard is in place (text or URI).")],
    expires: Annotated[
        str | None, typer.Option("--expires", help="ISO date-time with timezone after which the record lapses.")
    ] = None,
    store: StoreOpt = None,
    policy: Annotated[
        str | None, typer.Option("--policy", "-p", help="Policy file or bundled id; default: settings' policy.")
    ] = None,
    roster: Annotated[
        str | None, typer.Option("--roster", help="Roster YAML; default: RSP_ROSTER or <home>/roster.yaml.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the written record as JSON.")] = False,
    key: Annotated[str | None, typer.Option(
        "--key", envvar="RSP_SIGNING_KEY",
        help="The attester's ed25519 private key file (OpenSSH or PEM); its public key must be in the roster.")] = None,
) -> None:
    """Record that SAFEGUARD is in place, attested and signed by a person in a role. Exit 2 on bad input."""
    from pydantic import ValidationError

    from policy.errors import PolicyError
    from policy.schema import AttestationVerification
    from tasks.inputs import InputError, read_policy
    from tasks.safeguards._text import describe_validation
    from tasks.safeguards.evidence import EvidenceStoreError, new_attestation
    from tasks.safeguards.roster import RosterError, default_roster_path, load_roster
    from tasks.trust.keys import KeyProblem, fingerprint, load_private_key

    expires_at = _parse_time("--expires", expires) if expires is not None else None
    now = dt.datetime.now(dt.UTC)
    if expires_at is not None and expires_at <= now:
        fail(f"evidence attest: --expires {expires} is not in the future")
    try:
        private = None if not key else load_private_key(key, passphrase=os.environ.get("RSP_SIGNING_KEY_PASSPHRASE"))
    except KeyProblem as exc:
        fail(f"evidence attest: --key: {exc}")
    try:
        record = new_attestation(safeguard, by, role, evidence, attested_at=now, expires_at=expires_at, key=private)
    except ValidationError as exc:
        fail(f"evidence attest: {describe_validation(exc)}")

    settings = None if policy and roster else _settings("attest")
    policy_ref = policy or getattr(settings, "policy", None) or ""
    try:
        p = read_policy(policy_ref)
    except (PolicyError, InputError) as exc:
        fail(f"evidence attest: {' '.join(str(exc).split())}")
    try:
        sg = p.safeguard(safeguard)
    except KeyError:
        fail(f"evidence attest: safeguard {safeguard!r} is not defined in policy {p.framework.id} "
             f"(known: {', '.join(s.id for s in p.safeguards) or 'none'})")
    if not isinstance(sg.verification, AttestationVerification):
        fail(f"evidence attest: safeguard {safeguard!r} is verified by automated check "
             f"'{sg.verification.check}', not by attestation")
    if role not in sg.verification.roles:
        fail(f"evidence attest: role {role!r} may not attest {safeguard!r}; the policy allows "
             f"{', '.join(sg.verification.roles)}")
    roster_path = roster or default_roster_path(settings)
    try:
        people = load_roster(roster_path)
    except RosterError as exc:
        fail(f"evidence attest: {exc}")
    if not people.holds(by, role):
        held = ", ".join(sorted(people.roles_of(by))) or "none"
        on = "is not on the roster" if people.person(by) is None else f"does not hold role {role!r} (holds {held})"
        fail(f"evidence attest: {by!r} {on} in {roster_path}")
    if private is None and "unsigned" not in sg.verification.trusted_unsigned_channels.get(role, []):
        fail(f"evidence attest: an unsigned attestation would not count for {role!r}; sign it with --key PATH "
             f"(or $RSP_SIGNING_KEY)")
    if private is not None and fingerprint(private.public_key()) not in people.keys_of(by):
        fail(f"evidence attest: key {fingerprint(private.public_key())} is not listed for {by!r} in {roster_path}")

    target = _store("attest", store)
    try:
        location = target.write(record)
    except EvidenceStoreError as exc:
        fail(f"evidence attest: {exc}")
    if json_out:
        print_json({**record.model_dump(mode="json", exclude_none=True), "source": location})
    else:
        typer.echo(f"recorded {safeguard} attested by {by} as {role} at {record.attested_at.isoformat()}: {location}")


@evidence_app.command("list")
def list_records(
    store: StoreOpt = None,
    safeguard: Annotated[str | None, typer.Option("--safeguard", help="Only records of this safeguard.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print records and problems as JSON.")] = False,
    roster: Annotated[
        str | None, typer.Option("--roster", help="Roster YAML to check signatures against; default: RSP_ROSTER "
                                                  "or <home>/roster.yaml.")
    ] = None,
) -> None:
    """List attestation records, newest first, whether each signature verifies, and every unusable file.
    Exit 1 if any file is unusable."""
    from tasks.safeguards.attestation import signature_problem
    from tasks.safeguards.evidence import EvidenceStoreError, format_records
    from tasks.safeguards.roster import RosterError, default_roster_path, load_roster

    target = _store("list", store)
    try:
        snap = target.read()
    except EvidenceStoreError as exc:
        fail(f"evidence list: {exc}")
    try:
        people: Any = load_roster(roster or default_roster_path(None if roster else _settings("list")))
    except RosterError as exc:
        people = None
        roster_problem = f"signature not checked: roster unreadable: {exc}"

    def signed(rec: Any) -> str:
        if people is None:
            return roster_problem
        problem = signature_problem(rec, people)
        return f"signed by {rec.key_fingerprint}" if problem is None else f"NOT VERIFIED: {problem}"

    ids = [safeguard] if safeguard else sorted({s.record.safeguard for s in snap.records})
    problems = snap.problems_for(safeguard) if safeguard else list(snap.problems)
    if json_out:
        print_json({
            "store": snap.store,
            "records": {sid: [{**row, "signature_check": signed(s.record)}
                              for row, s in zip(format_records(snap.history(sid)), snap.history(sid), strict=True)]
                        for sid in ids},
            "latest": {sid: (snap.latest(sid).source if snap.latest(sid) else None) for sid in ids},
            "problems": [{"source": p.source, "message": p.message, "safeguards": sorted(p.safeguards)}
                         for p in problems],
        })
    else:
        typer.echo(f"evidence store {snap.store}")
        shown = 0
        for sid in ids:
            for i, s in enumerate(snap.history(sid)):
                r = s.record
                mark = "*" if i == 0 else " "  # the newest record is the one verification uses
                expiry = f" expires {r.expires_at.isoformat()}" if r.expires_at else ""
                typer.echo(f"{mark} {r.safeguard}  {r.attested_at.isoformat()}  {r.attested_by} ({r.role}){expiry}  "
                           f"{' '.join(r.evidence.split())}  [{s.source}]  {signed(r)}")
                shown += 1
        if not shown:
            typer.echo("no records" + (f" for {safeguard}" if safeguard else ""))
        for p in problems:
            typer.echo(f"PROBLEM {p}")
    if problems:
        raise typer.Exit(EXIT_PROBLEM)
