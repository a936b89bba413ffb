"""`rsp audit`: check and export the ledger.

    rsp audit verify [--ledger URL] [--json]     recompute the hash chain (exit 1 names the first bad event)
    rsp audit verify --file ledger.jsonl          check an export instead of the database
    rsp audit export --out FILE | s3://bucket/key

SQLAlchemy and boto3 are imported inside the commands so `rsp --help` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, NoReturn

import typer

LedgerOpt = Annotated[
    str | None,
    typer.Option(
        "--ledger",
        help="SQLAlchemy URL of the ledger; default: settings (RSP_LEDGER_URL or <home>/ledger.db).",
    ),
]


def _die(command: str, message: str) -> NoReturn:
    typer.echo(f"rsp audit {command}: {message}", err=True)
    raise typer.Exit(2)


def verify(
    ledger: LedgerOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
    file: Annotated[
        Path | None,
        typer.Option("--file", help="Verify an exported JSON Lines file instead of the database."),
    ] = None,
) -> None:
    """Recompute every hash and link of the ledger; exit 0 if intact, 1 naming the first bad event."""
    from sqlalchemy.exc import SQLAlchemyError

    from rsp.commands.ledger import open_ledger
    from tasks.ledger import LedgerError, verify_jsonl

    ledger_id = None
    try:
        if file is not None:
            source = str(file)
            with file.open(encoding="utf-8") as fp:
                report = verify_jsonl(fp)
        else:
            # The existing ledger, never a new one: exit 2 naming the ledger looked for.
            with open_ledger("audit verify", ledger) as store:
                source = store.url
                report = store.verify()
                ledger_id = store.ledger_id
    except (LedgerError, SQLAlchemyError, OSError, ValueError) as exc:
        _die("verify", " ".join(str(exc).split()) or type(exc).__name__)
    if as_json:
        typer.echo(json.dumps({"ledger": source, "ledger_id": ledger_id, **report.to_dict()}, sort_keys=True))
    elif report.ok:
        typer.echo(f"ledger ok: {report.checked} events, head {report.head_hash[:12]}")
    else:
        typer.echo(
            f"ledger BROKEN at seq {report.first_bad_seq}: {report.reason} "
            f"({report.checked} events read; last good seq {report.head_seq}, head {report.head_hash[:12]})"
        )
    if not report.ok:
        raise typer.Exit(1)


def export(
    out: Annotated[str, typer.Option("--out", help="Target: a file path or s3://bucket/key.")],
    ledger: LedgerOpt = None,
) -> None:
    """Write every event as JSON Lines (one canonical JSON object per line) to a file or S3."""
    from sqlalchemy.exc import SQLAlchemyError

    from rsp.commands.ledger import open_ledger
    from tasks.ledger import LedgerError, export_to

    try:
        with open_ledger("audit export", ledger) as store:
            result = export_to(store, out)
    except (LedgerError, SQLAlchemyError, OSError, ValueError) as exc:
        _die("export", " ".join(str(exc).split()) or type(exc).__name__)
    typer.echo(f"exported {result.count} events to {result.target} (head {result.head_hash[:12]})")


def register(app: typer.Typer) -> None:
    audit = typer.Typer(
        name="audit", help="Check and export the audit ledger.", no_args_is_help=True, add_completion=False
    )
    audit.command("verify")(verify)
    audit.command("export")(export)
    app.add_typer(audit, name="audit")
