"""`rsp approve | reject | resume | serve-approvals | notify retry`: approvals from the command line.

    rsp approve HALT_ID --as PERSON --justification TEXT [--new-round] [--no-lift] [--json]
    rsp reject  HALT_ID --as PERSON --justification TEXT [--json]
    rsp resume  HALT_ID [--json]                  lift now if quorum and safeguards allow
    rsp serve-approvals [--host 127.0.0.1] [--port 8080]   the Slack interactivity service
    rsp notify retry [--force] [--json]           deliver notifications that failed earlier

Same rules as Slack and the Prefect UI: the person must be on the roster and hold one of the
policy's approver roles; approvals count per distinct person; a rejection closes the round
(`--new-round` opens the next). When an approval completes the quorum, the lift is tried at
once (safeguards re-verified; `--no-lift` leaves it to `rsp resume`).

Exit codes: 0 vote recorded (or halt lifted, for resume); 1 refused (unknown person, no
approver role, halt lifted, round rejected, lift not allowed); 2 bad input (no such halt,
empty justification, unreadable ledger or roster). Errors are one line on stderr.
"""

from __future__ import annotations

import getpass
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from rsp.console import EXIT_PROBLEM, EXIT_USAGE, print_json

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


def _die(command: str, message: object, code: int = EXIT_USAGE) -> NoReturn:
    typer.echo(f"rsp {command}: {' '.join(str(message).split())}", err=True)
    raise typer.Exit(code)


def _settings(command: str) -> Any:
    from pydantic import ValidationError

    from tasks.settings import get_settings

    try:
        return get_settings()
    except ValidationError as exc:
        _die(command, f"invalid settings: {exc}")


def _ledger(command: str, url: str | None) -> Ledger:
    # The existing ledger, never a new one: exit 2 naming the ledger looked for (rsp/commands/ledger.py).
    from rsp.commands.ledger import open_ledger

    return open_ledger(command, url)


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


def _vote(command: str, decision: str, halt_id: str, person: str, justification: str, *, new_round: bool,
          lift: bool, ledger_url: str | None, roster_path: str | None, policy_ref: str | None,
          as_json: bool) -> None:
    from tasks.approvals.lift import handle_recorded_vote
    from tasks.approvals.votes import VoteRequest, record_vote

    if not justification.strip():
        _die(command, "--justification must not be empty")
    if not person.strip():
        _die(command, "--as must name a person on the roster")
    settings = _settings(command)
    ledger = _ledger(command, ledger_url)
    roster = _roster(command, roster_path)
    policy = _policy(command, policy_ref)
    try:
        os_user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name (containers): the vote still records the person
        os_user = None
    req = VoteRequest(halt_id=halt_id, decision=decision, person=person.strip(), justification=justification,
                      channel="cli", channel_ref=f"os-user:{os_user}" if os_user else None, new_round=new_round)
    outcome = record_vote(req, ledger=ledger, roster=roster, settings=settings, policy=policy)
    if not outcome.ok:
        if as_json:
            print_json(outcome.to_dict())
        _die(command, f"vote refused ({outcome.code}): {outcome.message}", outcome.exit_code)
    lifted = handle_recorded_vote(outcome, ledger=ledger, settings=settings, policy=policy, roster=roster,
                                  lift=lift)
    if as_json:
        print_json({"vote": outcome.to_dict(), "lift": None if lifted is None else lifted.to_dict()})
        return
    typer.echo(f"vote recorded (ledger seq {outcome.seq}): {outcome.message}")
    tally = outcome.tally
    if tally is not None and not tally.rejected and not tally.satisfied:
        more = f"{tally.needed} more approval(s) needed"
        if tally.missing_roles:
            more += f", including a distinct approver holding {' and '.join(tally.missing_roles)}"
        typer.echo(more)
    if tally is not None and tally.rejected:
        typer.echo(f"round {outcome.round} is closed (rejected by {tally.rejected_by}); the halt stays. "
                   f"A new request: rsp approve {halt_id} --as PERSON -j TEXT --new-round")
    if lifted is not None:
        typer.echo(lifted.message)
        for m in lifted.missing:
            typer.echo(f"  missing: {m['id']} ({m['state']}): {m['evidence']}")
    elif not (tally and tally.rejected):
        for line in _safeguard_lines(outcome, policy, settings, ledger):
            typer.echo(line)


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
) -> None:
    """Approve lifting a halt (counts toward the policy's quorum of distinct approvers)."""
    _vote("approve", "approve", halt_id, person, justification, new_round=new_round, lift=not no_lift,
          ledger_url=ledger, roster_path=roster, policy_ref=policy, as_json=as_json)


def reject(
    halt_id: Annotated[str, typer.Argument(help="The halt whose lifting you reject.")],
    person: AsOpt,
    justification: JustOpt,
    ledger: LedgerOpt = None,
    roster: RosterOpt = None,
    policy: PolicyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Reject lifting a halt: closes the current approval round; the halt stays."""
    _vote("reject", "reject", halt_id, person, justification, new_round=False, lift=False,
          ledger_url=ledger, roster_path=roster, policy_ref=policy, as_json=as_json)


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
    store = _ledger("resume", ledger)
    people = _roster("resume", roster)
    outcome = try_lift(halt_id, ledger=store, settings=settings, policy=_policy("resume", policy), roster=people,
                       api_url=api_url, trigger="rsp resume")
    if as_json:
        print_json(outcome.to_dict())
    else:
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

    store = _ledger("notify retry", ledger)
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
