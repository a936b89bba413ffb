"""`rsp audit`: check and export the ledger.

    rsp audit verify [--ledger URL] [--json]     recompute the hash chain (exit 1 names the first bad event)
    rsp audit verify --file ledger.jsonl          check an export instead of the database
    rsp audit verify --bundle DIR --trust KEYS    a third party's audit: chain, signed heads, signed and
                                                  replayed determinations; nothing but the bundle and keys
    rsp audit export --out FILE | s3://bucket/key
    rsp audit export --bundle DIR                 events, signed heads, public keys, cited policy and rows

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
    bundle: Annotated[
        Path | None,
        typer.Option("--bundle", help="Verify an audit bundle (rsp audit export --bundle) alone: needs --trust."),
    ] = None,
    trust: Annotated[
        Path | None,
        typer.Option("--trust", help="With --bundle: your trusted gate keys (OpenSSH lines, or a folder of *.pub, "
                                     "and roster.yaml for votes; else the bundle's roster is used)."),
    ] = None,
    accept_channel: Annotated[
        list[str] | None,
        typer.Option("--accept-channel", help="With --bundle: accept unsigned votes through this channel (e.g. "
                                              "slack) on your own trust; listed, not failed. Repeatable."),
    ] = None,
) -> None:
    """Recompute every hash and link of the ledger; exit 0 if intact, 1 naming the first bad event.

    With --bundle: also every signed head against the chain, every determination's signature, and a
    replay of every determination from its policy and sample rows; exit 1 naming the first problem."""
    if bundle is not None or trust is not None:
        _verify_bundle(bundle, trust, as_json, frozenset(accept_channel or ()))
        return
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


def _verify_bundle(bundle: Path | None, trust: Path | None, as_json: bool,
                   accept_channels: frozenset[str] = frozenset()) -> None:
    """Settings, the ledger and the network are never touched: only the bundle and the trusted keys."""
    if bundle is None or trust is None:
        _die("verify", "--bundle DIR and --trust KEYS go together")
    from tasks.trust.bundle import BundleError, load_roster_for, load_trusted_keys, verify_bundle

    try:
        report = verify_bundle(bundle, load_trusted_keys(trust), load_roster_for(bundle, trust), accept_channels)
    except BundleError as exc:
        _die("verify", " ".join(str(exc).split()))
    if as_json:
        typer.echo(json.dumps({"bundle": str(bundle), **report.to_dict()}, sort_keys=True))
    elif report.ok:
        typer.echo(f"bundle ok: {report.events} events, {report.heads} signed heads consistent with the chain, "
                   f"{report.determinations} determinations signed and replayed, every counted vote signed"
                   + (f" or accepted by channel ({len(report.accepted_unsigned)} unsigned: "
                      f"{', '.join(sorted(accept_channels))})" if report.accepted_unsigned else ""))
    else:
        more = f" (and {len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
        typer.echo(f"bundle FAILED: {report.problems[0]}{more}")
    if not report.ok:
        raise typer.Exit(1)


def export(
    out: Annotated[str | None, typer.Option("--out", help="Target: a file path or s3://bucket/key.")] = None,
    ledger: LedgerOpt = None,
    bundle: Annotated[
        Path | None,
        typer.Option("--bundle", help="Write an audit bundle to this (new or empty) folder instead."),
    ] = None,
) -> None:
    """Write every event as JSON Lines (one canonical JSON object per line) to a file or S3, or, with
    --bundle, everything a third party needs to audit the ledger alone."""
    if (out is None) == (bundle is None):
        _die("export", "give exactly one of --out FILE|s3://bucket/key and --bundle DIR")
    if bundle is not None:
        _export_bundle(bundle, ledger)
        return
    assert out is not None
    from sqlalchemy.exc import SQLAlchemyError

    from rsp.commands.ledger import open_ledger
    from tasks.ledger import LedgerError, export_to

    try:
        with open_ledger("audit export", ledger) as store:
            result = export_to(store, out)
    except (LedgerError, SQLAlchemyError, OSError, ValueError) as exc:
        _die("export", " ".join(str(exc).split()) or type(exc).__name__)
    typer.echo(f"exported {result.count} events to {result.target} (head {result.head_hash[:12]})")


def _export_bundle(folder: Path, ledger: str | None) -> None:
    from sqlalchemy.exc import SQLAlchemyError

    from rsp.commands.ledger import open_ledger
    from tasks.ledger import LedgerError
    from tasks.ledger.export import export_bundle

    try:
        with open_ledger("audit export", ledger) as store:
            result = export_bundle(store, folder)
    except (LedgerError, SQLAlchemyError, OSError, ValueError) as exc:
        _die("export", " ".join(str(exc).split()) or type(exc).__name__)
    typer.echo(f"bundle {result.folder}: {result.count} events (head {result.head_hash[:12]}), {result.heads} "
               f"signed heads, {result.inputs} policy and row files")
    if result.missing:
        typer.echo(f"rsp audit export: {len(result.missing)} cited input(s) not found, first: {result.missing[0]}",
                   err=True)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    audit = typer.Typer(
        name="audit", help="Check and export the audit ledger.", no_args_is_help=True, add_completion=False
    )
    audit.command("verify")(verify)
    audit.command("export")(export)
    app.add_typer(audit, name="audit")
