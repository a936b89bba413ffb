"""`rsp approve | reject | resume | serve-approvals | notify retry`: approvals from the command line.

    rsp approve HALT_ID --as PERSON --key PATH [--role ROLE] --justification TEXT [--new-round] [--no-lift] [--json]
    rsp reject  HALT_ID --as PERSON --key PATH [--role ROLE] --justification TEXT [--json]
    rsp resume  HALT_ID [--json]                  lift now if quorum and safeguards allow
    rsp serve-approvals [--host 127.0.0.1] [--port 8080]   the Slack interactivity service
    rsp notify retry [--force] [--json]           deliver notifications that failed earlier

With `--key` (or $RSP_SIGNING_KEY) the vote is a statement signed with the person's ed25519
key (tasks/trust/votes.py), verified against the roster's public keys before it counts; a
signature that does not verify (a key outside the roster, another person's key, a statement for
another halt or one already used) is refused and recorded. Without a key the vote is recorded
as `cli-unsigned` and counts only where the policy trusts that channel for the role.
Same rules as Slack and the Prefect UI: the person must be on the roster and hold one of the
policy's approver roles; approvals count per distinct person; a rejection closes the round
(`--new-round` opens the next). When an approval completes the quorum, the lift is tried at
once (safeguards re-verified; `--no-lift` leaves it to `rsp resume`).

Exit codes: 0 vote recorded (or halt lifted, for resume); 1 refused (unknown person, no
approver role, halt lifted, round rejected), or the vote completed the quorum and the lift it
triggered was refused (safeguards unmet: the halt stays, as `rsp resume` reports it); 2 bad
input (no such halt, empty justification, no ledger, unreadable roster). Errors are one line on stderr.
"""

from __future__ import annotations

import getpass
import os
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rsp.commands.ledger import ledger_line, open_ledger
from rsp.console import EXIT_PROBLEM, print_json
from rsp.console import die as _die

if TYPE_CHECKING:
    from tasks.ledger import Ledger

LedgerOpt = Annotated[
    str | None, typer.Option("--ledger", help="SQLAlchemy URL of the ledger; default: settings (RSP_LEDGER_URL).")
]
RosterOpt = Annotated[str | None, typer.Option("--roster", help="Roster YAML; default: RSP_ROSTER or <home>/roster.yaml.")]
PolicyOpt = Annotated[
    str | None, typer.Option("--policy", "-p", help="Policy file or bundled id to take approver rules from "
                                                    "when the halt record has none; default: settings' policy.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
AsOpt = Annotated[str, typer.Option("--as", help="Your person id, as in the roster.")]
JustOpt = Annotated[str, typer.Option("--justification", "-j", help="Why (recorded in the audit ledger).")]
KeyOpt = Annotated[str | None, typer.Option(
    "--key", envvar="RSP_SIGNING_KEY",
    help="Your ed25519 private key file (OpenSSH or PEM) to sign the vote with; its public key must be in the "
         "roster. Without it the vote is recorded unsigned and counts only where the policy trusts cli-unsigned.")]
RoleOpt = Annotated[str | None, typer.Option(
    "--role", help="The approver role you sign as; default: your only approver role in the roster.")]


def _settings(command: str) -> Any:
    from pydantic import ValidationError

    from tasks.settings import get_settings

    try:
        return get_settings()
    except ValidationError as exc:
        _die(command, f"invalid settings: {exc}")


def _roster(command: str, path: str | None) -> Any:
    from tasks.approvals.config import ApprovalConfig
    from tasks.safeguards.roster import RosterError, load_roster

    try:
        return load_roster(path or ApprovalConfig.from_settings(_settings(command)).roster_path)
    except (RosterError, ValueError) as exc:
        _die(command, f"roster: {exc}")


def _policy(command: str, ref: str | None) -> Any:
    if ref is None:
        return None
    from tasks.inputs import read_policy

    try:
        return read_policy(ref)
    except Exception as exc:  # noqa: BLE001 - InputError, PolicyError: both one line naming the file
        _die(command, f"policy: {exc}")


def _safeguard_lines(outcome: Any, policy: Any, settings: Any, ledger: Ledger) -> list[str]:
    """What the safeguards the halt needs verify as right now (nothing is recorded)."""
    from tasks.approvals.lift import verify
    from tasks.approvals.state import halt_rules

    halt = ledger.halt(outcome.halt_id)
    if halt is None or not outcome.required_safeguards:
        return ["safeguards: none required to lift this halt"] if halt is not None else []
    hr = halt_rules(ledger, halt, settings=settings, policy=policy)
    checks = verify(hr.policy, hr.required_safeguards, settings=settings, policy_problem=hr.policy_problem)
    missing = {k: v for k, v in checks.items() if v["state"] != "met"}
    if not missing:
        return [f"safeguards: all {len(checks)} verified met now ({', '.join(checks)})"]
    return ["safeguards still missing: " + "; ".join(f"{k} ({v['state']}: {v['evidence']})"
                                                     for k, v in missing.items())]


def _signed(command: str, key_path: str, decision: str, halt_id: str, person: str, role: str | None,
            roster: Any, ledger: Ledger, settings: Any, policy: Any) -> tuple[dict[str, Any], str]:
    """(statement, signature) for this vote, signed with the key at `key_path`."""
    from tasks.approvals.state import halt_rules
    from tasks.trust.keys import KeyProblem, load_private_key
    from tasks.trust.votes import new_nonce, now_iso, sign_vote, vote_statement

    try:
        key = load_private_key(key_path, passphrase=os.environ.get("RSP_SIGNING_KEY_PASSPHRASE"))
    except KeyProblem as exc:
        _die(command, f"--key: {exc}")
    if role is None:
        held = sorted(roster.roles_of(person))
        halt = ledger.halt(halt_id)
        rules = None if halt is None else halt_rules(ledger, halt, settings=settings, policy=policy).rules
        # Their approver roles; failing those, what they hold (the vote is then refused as unauthorised).
        candidates = (sorted(rules.eligible_roles(held)) if rules is not None else []) or held
        if len(candidates) != 1:
            _die(command, f"{person} holds {', '.join(candidates) or 'no role'} per the roster: name the role you "
                          "sign as with --role")
        role = candidates[0]
    identity = ledger.identity()
    statement = vote_statement(halt_id, decision, person, role, at=now_iso(), nonce=new_nonce(),
                               ledger_id=None if identity is None else identity.ledger_id)
    return statement, sign_vote(statement, key)


def _vote(command: str, decision: str, halt_id: str, person: str, justification: str, *, new_round: bool,
          lift: bool, ledger_url: str | None, roster_path: str | None, policy_ref: str | None,
          as_json: bool, key_path: str | None = None, role: str | None = None) -> None:
    from tasks.approvals.lift import handle_recorded_vote
    from tasks.approvals.votes import VoteRequest, record_vote

    if not justification.strip():
        _die(command, "--justification must not be empty")
    if not person.strip():
        _die(command, "--as must name a person on the roster")
    settings = _settings(command)
    ledger = open_ledger(command, ledger_url)
    roster = _roster(command, roster_path)
    policy = _policy(command, policy_ref)
    try:
        os_user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name (containers): the vote still records the person
        os_user = None
    statement, signature = (None, None) if not key_path else _signed(
        command, key_path, decision, halt_id, person.strip(), role, roster, ledger, settings, policy)
    req = VoteRequest(halt_id=halt_id, decision=decision, person=person.strip(), justification=justification,
                      channel="cli-signed" if statement else "cli-unsigned",
                      channel_ref=f"os-user:{os_user}" if os_user else None, new_round=new_round,
                      statement=statement, signature=signature)
    outcome = record_vote(req, ledger=ledger, roster=roster, settings=settings, policy=policy)
    if not outcome.ok:
        if as_json:
            print_json(outcome.to_dict())
        _die(command, f"vote refused ({outcome.code}): {outcome.message}", outcome.exit_code)
    lifted = handle_recorded_vote(outcome, ledger=ledger, settings=settings, policy=policy, roster=roster,
                                  lift=lift)
    # The vote completed the quorum and the lift it set off was refused: the halt stays, so exit as resume does.
    refused = lifted is not None and not lifted.lifted
    if as_json:
        print_json({"vote": outcome.to_dict(), "lift": None if lifted is None else lifted.to_dict(),
                    "ledger": ledger.url, "ledger_id": ledger.ledger_id})
        if refused:
            raise typer.Exit(EXIT_PROBLEM)
        return
    typer.echo(ledger_line(ledger.url, ledger.ledger_id))
    signed = (f"signed by {outcome.payload.get('key_fingerprint')}" if req.statement else "UNSIGNED")
    typer.echo(f"vote recorded (ledger seq {outcome.seq}, {signed}): {outcome.message}")
    tally = outcome.tally
    if tally is not None and not tally.rejected and not tally.satisfied:
        more = f"{tally.needed} more approval(s) needed"
        if tally.missing_roles:
            more += f", including a distinct approver holding {' and '.join(tally.missing_roles)}"
        typer.echo(more)
    if tally is not None and tally.rejected:
        typer.echo(f"round {outcome.round} is closed (rejected by {tally.rejected_by}); the halt stays. "
                   f"A new request: rsp approve {halt_id} --as PERSON --key PATH -j TEXT --new-round")
    if lifted is not None:
        typer.echo(lifted.message)
        for m in lifted.missing:
            typer.echo(f"  missing: {m['id']} ({m['state']}): {m['evidence']}")
    elif not (tally and tally.rejected):
        for line in _safeguard_lines(outcome, policy, settings, ledger):
            typer.echo(line)
    if refused:
        raise typer.Exit(EXIT_PROBLEM)


def approve(
    halt_id: Annotated[str, typer.Argument(help="The halt to approve lifting (see `rsp status`).")],
    person: AsOpt,
    justification: JustOpt,
    new_round: Annotated[bool, typer.Option("--new-round", help="Open a new approval round after a rejection.")] = False,
    no_lift: Annotated[bool, typer.Option("--no-lift", help="Record the vote only; do not try to lift.")] = False,
    ledger: LedgerOpt = None,
    roster: RosterOpt = None,
    policy: PolicyOpt = None,
    as_json: JsonOpt = False,
    key: KeyOpt = None,
    role: RoleOpt = None,
) -> None:
    """Approve lifting a halt (a signed vote counts toward the policy's quorum of distinct approvers)."""
    _vote("approve", "approve", halt_id, person, justification, new_round=new_round, lift=not no_lift,
          ledger_url=ledger, roster_path=roster, policy_ref=policy, as_json=as_json, key_path=key, role=role)


def reject(
    halt_id: Annotated[str, typer.Argument(help="The halt whose lifting you reject.")],
    person: AsOpt,
    justification: JustOpt,
    ledger: LedgerOpt = None,
    roster: RosterOpt = None,
    policy: PolicyOpt = None,
    as_json: JsonOpt = False,
    key: KeyOpt = None,
    role: RoleOpt = None,
) -> None:
    """Reject lifting a halt: a signed rejection closes the current approval round; the halt stays."""
    _vote("reject", "reject", halt_id, person, justification, new_round=False, lift=False,
          ledger_url=ledger, roster_path=roster, policy_ref=policy, as_json=as_json, key_path=key, role=role)


def resume(
    halt_id: Annotated[str, typer.Argument(help="The halt to lift.")],
    ledger: LedgerOpt = None,
    roster: RosterOpt = None,
    policy: PolicyOpt = None,
    api_url: Annotated[str | None, typer.Option("--api-url", help="Prefect API URL; default PREFECT_API_URL.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Lift a halt now if its approvals and a fresh safeguard verification allow it."""
    from tasks.approvals.lift import try_lift

    settings = _settings("resume")
    store = open_ledger("resume", ledger)
    people = _roster("resume", roster)
    outcome = try_lift(halt_id, ledger=store, settings=settings, policy=_policy("resume", policy), roster=people,
                       api_url=api_url, trigger="rsp resume")
    if outcome.status == "no_such_halt":
        _die("resume", f"{outcome.message} {store.url}", outcome.exit_code)
    if as_json:
        print_json({**outcome.to_dict(), "ledger": store.url, "ledger_id": store.ledger_id})
    else:
        typer.echo(ledger_line(store.url, store.ledger_id))
        typer.echo(outcome.message)
        for m in outcome.missing:
            typer.echo(f"  missing: {m['id']} ({m['state']}): {m['evidence']}")
    if outcome.exit_code:
        raise typer.Exit(outcome.exit_code)


def serve_approvals(
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.", min=1, max=65535)] = 8080,
) -> None:
    """Run the approval service (Slack interactivity endpoint) with uvicorn."""
    from tasks.approval_service import ServiceConfig, serve

    settings = _settings("serve-approvals")
    try:
        config = ServiceConfig.from_settings(settings)
        if not config.approvals.signing_secret:
            _die("serve-approvals", "RSP_SLACK_SIGNING_SECRET is not set; Slack requests cannot be verified")
        serve(host, port, config)
    except ValueError as exc:
        _die("serve-approvals", exc)


notify_app = typer.Typer(help="Notification delivery.", no_args_is_help=True, add_completion=False)


@notify_app.command("retry")
def notify_retry(
    force: Annotated[bool, typer.Option("--force", help="Retry every pending notification now, due or not.")] = False,
    ledger: LedgerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Deliver notifications that failed earlier (exit 1 if some still fail)."""
    from tasks.notify.dispatch import Dispatcher

    store = open_ledger("notify retry", ledger)
    try:
        with Dispatcher(ledger=store, settings=_settings("notify retry")) as dispatcher:
            results = dispatcher.retry_pending(force=force)
    except ValueError as exc:
        _die("notify retry", exc)
    failed = [r for r in results if r.status == "failed"]
    if as_json:
        print_json([r.__dict__ for r in results])
    else:
        sent = sum(r.status == "sent" for r in results)
        typer.echo(f"notify retry: {sent} delivered, {len(failed)} still failing, "
                   f"{len(results) - sent - len(failed)} skipped")
        for r in failed:
            typer.echo(f"  {r.key}: {r.error}")
    if failed:
        raise typer.Exit(EXIT_PROBLEM)


def register(app: typer.Typer) -> None:
    app.command("approve")(approve)
    app.command("reject")(reject)
    app.command("resume")(resume)
    app.command("serve-approvals")(serve_approvals)
    app.add_typer(notify_app, name="notify")
