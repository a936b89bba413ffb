"""`rsp report RUN`: regenerate a run's HTML report (plot + tables) from the ledger."""

from __future__ import annotations

import typer

from rsp.console import fail


def register(app: typer.Typer) -> None:
    app.command("report")(report)


def report(
    run_id: str = typer.Argument(..., help="The training run id (as in its checkpoint manifests)."),
    ledger: str = typer.Option(None, "--ledger", help="SQLAlchemy URL (default: configured ledger)."),
) -> None:
    """Write <runs_dir>/RUN/report.html and scores.png from every determination of the run.

    Exit 0 written; 2 no ledger, a run with no determinations in it, or a report that cannot be written."""
    from rsp.commands.ledger import ledger_line, open_ledger
    from tasks.run_report import write_run_report
    from tasks.settings import get_settings

    settings = get_settings()
    store = open_ledger("report", ledger)  # the existing ledger, never a new one (exit 2 naming it)
    try:
        path = write_run_report(store, settings.resolved_runs_dir, run_id)
    except Exception as exc:  # noqa: BLE001 - the CLI turns any failure into one line and exit 2
        fail(f"report failed: {type(exc).__name__}: {exc}")
    if path is None:
        fail(f"no determinations for run '{run_id}' in the ledger {store.url}")
    typer.echo(ledger_line(store.url, store.ledger_id))
    typer.echo(f"wrote {path}")
