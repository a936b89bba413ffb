"""`rsp init`: create the ledger (and say which one it is); the ledger lookup every other command shares.

    rsp init [--ledger URL] [--json]      create the ledger at the configured URL, print its identity

Only `rsp init` and the first `rsp watch` / `rsp serve` create a ledger. Every other
command opens the existing one and, when there is none, says which ledger it looked for
and exits 2: an empty ledger created by a typo would read as "no halts", and a halt or a
vote written to it would be lost. Pin the identity `rsp init` prints in the scaling
deployments' environment (RSP_LEDGER_ID) and their gates refuse any other ledger.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from rsp.console import die as _die

if TYPE_CHECKING:
    from tasks.ledger import Ledger

LedgerOpt = Annotated[
    str | None,
    typer.Option("--ledger", help="SQLAlchemy URL of the ledger; default: settings (RSP_LEDGER_URL or <home>/ledger.db)."),
]


def resolve_url(command: str, url: str | None) -> tuple[str, str]:
    """(the ledger URL, where it came from) for `--ledger URL` or the settings."""
    if url:
        return url, "--ledger"
    from pydantic import ValidationError

    from tasks.settings import get_settings

    try:
        settings = get_settings()
    except ValidationError as exc:
        _die(command, f"invalid settings: {exc}")
    if settings.ledger_url:
        return settings.ledger_url, "RSP_LEDGER_URL"
    return settings.resolved_ledger_url, f"the default under RSP_HOME={settings.home}"


def open_ledger(command: str, url: str | None) -> Ledger:
    """The existing ledger `command` works on; exit 2 naming the ledger it looked for when there is
    none (never creates one) or it cannot be opened."""
    from tasks.ledger import Ledger, LedgerError, LedgerNotFound

    target, source = resolve_url(command, url)
    try:
        return Ledger(target, create=False)
    except LedgerNotFound as exc:
        _die(command, f"{exc} (looked for it at {source}). No ledger has been created there: run `rsp init` "
                      "(or start `rsp watch` / `rsp serve`), or point --ledger / RSP_LEDGER_URL / RSP_HOME at the "
                      "ledger in use")
    except (LedgerError, OSError, ValueError) as exc:
        _die(command, exc)


def ledger_line(url: str, ledger_id: str | None) -> str:
    """`ledger: URL (id …)`: how a command that reads the ledger says which one it read."""
    return f"ledger: {url} (id {ledger_id or 'none recorded: run `rsp init`'})"


def init(ledger: LedgerOpt = None, as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
         = False) -> None:
    """Create the ledger (idempotent) and print its identity; pin it with RSP_LEDGER_ID."""
    from tasks.ledger import Ledger, LedgerError, LedgerNotFound

    target, source = resolve_url("init", ledger)
    try:
        try:
            store, created = Ledger(target, create=False), False
        except LedgerNotFound:
            store, created = Ledger(target, create=True), True
        found = store.identity()
        if found is None or found.origin == "genesis":
            store.close()
            store = Ledger(target, create=True)  # an older ledger: record its identity now
        identity = store.identity()
        head = store.head()[0]
    except (LedgerError, OSError, ValueError) as exc:
        _die("init", exc)
    assert identity is not None
    data = {"ledger": store.url, "source": source, "created": created, "ledger_id": identity.ledger_id,
            "origin": identity.origin, "created_at": identity.created_at, "events": head}
    if as_json:
        typer.echo(json.dumps(data))
        return
    typer.echo(f"{'created' if created else 'exists:'} ledger {store.url} ({head} events)")
    typer.echo(f"ledger id: {identity.ledger_id}"
               + ("" if identity.origin == "created" else " (derived from its first event)"))
    typer.echo(f"pin it for scaling deployments and gates: RSP_LEDGER_ID={identity.ledger_id}")


def sign_head(ledger: LedgerOpt = None, as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
              = False) -> None:
    """Sign the ledger's head with the gate key; keep it under the heads folder and publish it to
    RSP_HEAD_PUBLISH_URI (an S3 bucket with Object Lock) when that is set."""
    from tasks.ledger import LedgerError

    with open_ledger("ledger sign-head", ledger) as store:
        try:
            from tasks.ledger.heads import sign_and_keep

            head = sign_and_keep(store)
        except (LedgerError, OSError, ValueError) as exc:
            _die("ledger sign-head", exc, code=1)
    if as_json:
        typer.echo(json.dumps(head.to_dict()))
        return
    typer.echo(f"signed head of ledger {head.ledger_id}: seq {head.seq}, hash {head.hash[:12]}, by {head.signer}"
               + (f"; published to {head.published}" if head.published else ""))


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    group = typer.Typer(name="ledger", help="The ledger's signed heads.", no_args_is_help=True,
                        add_completion=False)
    group.command("sign-head")(sign_head)
    app.add_typer(group, name="ledger")
