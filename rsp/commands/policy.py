"""`rsp policy validate | show | diff | status | approve-change`: the policy file as the safety team
writes it, and which version of it governs the gate.

A version that loosens the one in force (`rsp policy diff` flags it) is not used until the in-force
policy's approvers sign it (tasks/policy_versions.py): `rsp policy status` lists the version in force
per policy id and the changes held, with their tallies; `rsp policy approve-change PROPOSAL --key KEY`
records one signed vote (exit 0 recorded, 1 refused, 2 bad input: no ledger, no such proposal,
unreadable key or roster). The next evaluation adopts a change whose quorum is met.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from rsp.console import EXIT_PROBLEM, EXIT_USAGE, fail, print_json

policy_app = typer.Typer(help="Validate, inspect and compare policy files.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(policy_app, name="policy")


def _load(ref: str):
    from policy.errors import PolicyError
    from tasks.inputs import InputError, read_policy

    try:
        return read_policy(ref)
    except (PolicyError, InputError) as exc:
        fail(str(exc))


@policy_app.command("validate")
def validate(
    files: list[str] = typer.Argument(..., help="Policy files, or bundled framework ids (anthropic-rsp, ...)."),
    json_out: bool = typer.Option(False, "--json", help="Print results as JSON."),
) -> None:
    """Check policy files against the schema. Exit 0 if all are valid, 1 if any is invalid, 2 if any
    cannot be read (missing, a folder, permission denied, empty, too large): a typo in a path is bad
    input, not a policy that failed review."""
    from policy.errors import PolicyError
    from policy.identity import policy_sha256
    from tasks.inputs import InputError, read_policy, resolve_policy_path

    results: list[dict[str, Any]] = []
    for ref in files:
        path = str(resolve_policy_path(ref))
        try:
            p = read_policy(ref)
        except PolicyError as exc:
            results.append({"file": path, "valid": False, "problems": exc.problems})
        except InputError as exc:
            results.append({"file": path, "valid": False, "readable": False, "problems": [str(exc)]})
        else:
            results.append({"file": path, "valid": True, "id": p.framework.id, "version": p.framework.version,
                            "sha256": policy_sha256(p), "thresholds": len(p.thresholds),
                            "safeguards": len(p.safeguards)})
    if json_out:
        print_json(results)
    else:
        for r in results:
            if r["valid"]:
                typer.echo(f"ok       {r['file']}: {r['id']} v{r['version']}, {r['thresholds']} thresholds, "
                           f"{r['safeguards']} safeguards, sha256 {r['sha256'][:16]}")
            else:
                label = "invalid " if r.get("readable", True) else "unread  "
                for problem in r["problems"]:
                    where = "" if problem.startswith(r["file"]) else f"{r['file']}: "
                    typer.echo(f"{label} {where}{problem}")
    if not all(r.get("readable", True) for r in results):
        raise typer.Exit(EXIT_USAGE)
    if not all(r["valid"] for r in results):
        raise typer.Exit(EXIT_PROBLEM)


@policy_app.command("show")
def show(
    file: str = typer.Argument(..., help="Policy file or bundled framework id."),
    json_out: bool = typer.Option(False, "--json", help="Print the canonical policy as JSON."),
) -> None:
    """Print a policy as readable tables: levels, thresholds, safeguards, cadence, approvals."""
    p = _load(file)
    if json_out:
        from policy.identity import canonical_data, policy_sha256

        print_json({"sha256": policy_sha256(p), "policy": canonical_data(p)})
        return
    from rsp.render import render_policy

    render_policy(p)


@policy_app.command("diff")
def diff(
    old: str = typer.Argument(..., help="The policy in force."),
    new: str = typer.Argument(..., help="The proposed policy."),
    fail_on_loosening: bool = typer.Option(
        False, "--fail-on-loosening", help="Exit 1 if any change loosens the policy (for CI on policy repos)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print changes as JSON."),
) -> None:
    """List every change between two policies and flag each one that loosens it."""
    from policy.diff import diff_policies, summarize
    from policy.identity import policy_sha256

    a, b = _load(old), _load(new)
    changes = diff_policies(a, b)
    loosening = [c for c in changes if c.loosens]
    if json_out:
        print_json({
            "old": {"file": old, "sha256": policy_sha256(a)},
            "new": {"file": new, "sha256": policy_sha256(b)},
            "changes": [
                {"path": c.path, "kind": c.kind, "old": c.old, "new": c.new, "loosens": c.loosens, "why": c.why}
                for c in changes
            ],
            "loosening": len(loosening),
        })
    else:
        typer.echo(f"{Path(old).name} ({policy_sha256(a)[:12]}) → {Path(new).name} ({policy_sha256(b)[:12]})")
        typer.echo(summarize(changes) if changes else "no changes")
        typer.echo(f"{len(changes)} change(s), {len(loosening)} loosen the policy")
    if fail_on_loosening and loosening:
        raise typer.Exit(EXIT_PROBLEM)


LedgerOpt = Annotated[
    str | None, typer.Option("--ledger", help="SQLAlchemy URL of the ledger; default: settings (RSP_LEDGER_URL).")
]
RosterOpt = Annotated[str | None, typer.Option("--roster", help="Roster YAML; default: RSP_ROSTER or <home>/roster.yaml.")]


def _roster_at(command: str, path: str | None) -> Any:
    from tasks.approvals.config import ApprovalConfig
    from tasks.safeguards.roster import RosterError, load_roster
    from tasks.settings import get_settings

    try:
        return load_roster(path or ApprovalConfig.from_settings(get_settings()).roster_path)
    except (RosterError, ValueError) as exc:
        from rsp.console import die

        die(command, f"roster: {exc}")


@policy_app.command("status")
def status(
    ledger_url: LedgerOpt = None,
    roster_path: RosterOpt = None,
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """The policy version in force per policy id, and the loosening changes held for approval with
    their tallies (signed votes verified against the roster now)."""
    from rsp.commands.ledger import ledger_line, open_ledger
    from tasks.policy_versions import proposals, versions_in_force

    ledger = open_ledger("policy status", ledger_url)
    roster = _roster_at("policy status", roster_path) if roster_path else _quiet_roster()
    in_force = versions_in_force(ledger)
    states = proposals(ledger, roster)
    if json_out:
        print_json({"ledger": ledger.url, "ledger_id": ledger.ledger_id, "in_force": in_force,
                    "proposals": [s.to_dict() for s in states]})
        return
    typer.echo(ledger_line(ledger.url, ledger.ledger_id))
    if not in_force:
        typer.echo("no policy version in force yet (the first evaluation records one)")
    for pid, v in in_force.items():
        how = v["reason"] + (f", proposal {v['proposal_id']} approved by {', '.join(v['approvers'] or [])}"
                             if v.get("proposal_id") else "")
        typer.echo(f"in force  {pid} v{v['version']}  {str(v['sha256'])[:16]}  since {v['ts']} ({how})")
    pending = [s for s in states if s.status == "pending"]
    for st in states:
        typer.echo(f"{st.status:<9} {st.proposal_id}  {st.policy_id} {st.sha256[:16]} (against "
                   f"{st.in_force_sha256[:16]}): {st.tally.summary()}")
        if st.status == "pending":
            for line in st.loosening:
                typer.echo(f"    {line.strip()}")
    if pending:
        typer.echo(f"approve: rsp policy approve-change {pending[0].proposal_id} --key KEY")
    if roster is None:
        typer.echo("roster unreadable: no vote counted (give --roster)")


def _quiet_roster() -> Any:
    """The configured roster, or None when it cannot be read (then no vote counts)."""
    from tasks.approvals.config import ApprovalConfig
    from tasks.safeguards.roster import RosterError, load_roster
    from tasks.settings import get_settings

    try:
        return load_roster(ApprovalConfig.from_settings(get_settings()).roster_path)
    except (RosterError, ValueError, OSError):
        return None


@policy_app.command("approve-change")
def approve_change(
    proposal: str = typer.Argument(..., help="The proposal id (`rsp policy status`)."),
    key_path: str = typer.Option(..., "--key", envvar="RSP_SIGNING_KEY",
                                 help="Your ed25519 private key file (OpenSSH or PEM); its public key must be in "
                                      "the roster."),
    person: str | None = typer.Option(None, "--as", help="Your person id; default: whoever holds the key in the "
                                                         "roster."),
    role: str | None = typer.Option(None, "--role", help="The approver role you sign as; default: your only "
                                                         "approver role under the rules in force."),
    justification: str | None = typer.Option(None, "--justification", "-j", help="Why (recorded)."),
    reject: bool = typer.Option(False, "--reject", help="Vote against the change instead."),
    ledger_url: LedgerOpt = None,
    roster_path: RosterOpt = None,
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Sign and record a vote on a held policy change. Only the IN-FORCE policy's approver rules count,
    and only signed votes; the next evaluation adopts the change once its quorum is met."""
    import os

    from rsp.commands.ledger import ledger_line, open_ledger
    from rsp.console import die
    from tasks.ledger.events import PolicyChangeProposed
    from tasks.policy_versions import USAGE_REFUSALS, record_change_vote
    from tasks.trust.keys import KeyProblem, fingerprint, load_private_key
    from tasks.trust.votes import change_vote_statement, new_nonce, now_iso, sign_vote

    command = "policy approve-change"
    ledger = open_ledger(command, ledger_url)
    roster = _roster_at(command, roster_path)
    try:
        key = load_private_key(key_path, passphrase=os.environ.get("RSP_SIGNING_KEY_PASSPHRASE"))
    except KeyProblem as exc:
        die(command, f"--key: {exc}")
    found = ledger.events(kind=PolicyChangeProposed.KIND, subject=proposal, limit=1)
    if not found:
        die(command, f"no policy change proposal {proposal!r} in {ledger.url} (see `rsp policy status`)")
    if person is None:
        mine = fingerprint(key.public_key())
        person = roster.owner_of(mine)
        if person is None:
            die(command, f"no one in the roster holds the key {mine}: name yourself with --as", EXIT_PROBLEM)
    if role is None:
        rules_roles = set(found[0].payload.get("rules", {}).get("roles") or [])
        held = sorted(roster.roles_of(person))
        candidates = sorted(set(held) & rules_roles) or held
        if len(candidates) != 1:
            die(command, f"{person} holds {', '.join(candidates) or 'no role'} per the roster: name the role you "
                         "sign as with --role")
        role = candidates[0]
    identity = ledger.identity()
    statement = change_vote_statement(proposal, "reject" if reject else "approve", person, role, at=now_iso(),
                                      nonce=new_nonce(), ledger_id=None if identity is None else identity.ledger_id)
    outcome = record_change_vote(ledger, proposal, statement, sign_vote(statement, key), roster,
                                 justification=" ".join((justification or "").split()) or None)
    if json_out:
        print_json(outcome.to_dict() | {"ledger": ledger.url, "ledger_id": ledger.ledger_id})
    if not outcome.ok:
        die(command, f"vote refused ({outcome.code}): {outcome.message}",
            EXIT_USAGE if outcome.code in USAGE_REFUSALS else EXIT_PROBLEM)
    if not json_out:
        typer.echo(ledger_line(ledger.url, ledger.ledger_id))
        typer.echo(f"vote recorded (ledger seq {outcome.seq}): {outcome.message}")
