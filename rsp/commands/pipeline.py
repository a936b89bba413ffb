"""`rsp watch` and `rsp evaluate`: the pipeline's flows, run from the command line.

Without PREFECT_API_URL, Prefect runs them against a temporary local server; with
it, runs show up in that server's UI like scheduled ones.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import typer

from rsp.console import EXIT_PROBLEM, EXIT_USAGE, POLICY_HELP, configured_policy, die, fail, print_json

if TYPE_CHECKING:
    from tasks.outcomes import EvaluationOutcome


def register(app: typer.Typer) -> None:
    app.command("watch")(watch)
    app.command("evaluate")(evaluate)


def _quiet_prefect_when_json(json_out: bool) -> None:
    import os

    if json_out:
        # Keep stdout pure JSON; Prefect's progress still goes to stderr.
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def _print_eval(res: EvaluationOutcome) -> None:
    status = res.status
    if status in ("evaluated", "failed_closed"):
        extra = f" — halt {res.halt.halt_id}" if res.halt and res.halt.halt_id else ""
        typer.echo(f"{res.run_id} step {res.step}: {res.assessment} assessment, level "
                   f"{res.required_level}, decision {(res.decision or '').upper()}{extra}"
                   + (f" (fail-closed: {res.error})" if res.error else ""))
    else:
        typer.echo(f"{res.checkpoint}: {status}" + (f" ({res.reason})" if res.reason else ""))


def _location_problem(uri: str, what: str, *, checkpoint: bool) -> str | None:
    """Why `uri` cannot be a checkpoint folder (or a checkpoint store), checked before Prefect is imported
    or a server started: a typo costs one line, not a temporary server and a traceback. A local path
    must exist as a folder; an S3 URI must be well formed (whether the prefix exists is the store's
    question, asked inside the flow, where a missing manifest is recorded as a rejection)."""
    from tasks.storage import parse_uri

    try:
        loc = parse_uri(uri, what=what)
    except ValueError as exc:
        return str(exc)
    if loc.is_s3:
        if checkpoint and not loc.key.strip("/"):
            return f"{what} {uri!r}: names a bucket, not a checkpoint folder (s3://bucket/prefix/<run>/<step>/)"
        return None
    assert loc.path is not None
    if not loc.path.exists():
        return f"{what} {uri!r}: no such folder"
    if not loc.path.is_dir():
        return f"{what} {uri!r}: not a folder"
    return None


def evaluate(
    uri: str = typer.Argument(..., help="Checkpoint folder: /path/run/step-000001000 or s3://bucket/prefix/run/step-…"),
    policy: str = typer.Option(None, "--policy", "-p", help=POLICY_HELP, show_default=False),
    force: bool = typer.Option(False, "--force", help="Re-evaluate and recompute every benchmark."),
    task_runner: str = typer.Option("threads", "--task-runner", help="threads, threads:N, dask, dask://host:port"),
    limit: int = typer.Option(None, "--limit", help="At most this many samples per benchmark (smoke tests)."),
    json_out: bool = typer.Option(False, "--json", help="Print the outcome as JSON."),
) -> None:
    """Evaluate one checkpoint: benchmarks, quality gate, classification, safeguards, halt if unmet.

    Exit 0 proceed, 1 halt (or fail-closed), 2 bad input or no ledger (`rsp init` creates it).
    """
    from rsp.commands.ledger import open_ledger

    open_ledger("evaluate", None).close()  # decide into the ledger in use, never into a new empty one
    problem = _location_problem(uri, "checkpoint", checkpoint=True)
    if problem:
        die("evaluate", problem)
    _quiet_prefect_when_json(json_out)
    from flows.evaluate import evaluate as evaluate_flow

    try:
        res = evaluate_flow(uri, policy=configured_policy(policy), force=force, task_runner=task_runner, limit=limit)
    except Exception as exc:  # noqa: BLE001 - the CLI turns any failure into one line and exit 2
        fail(f"evaluate failed: {type(exc).__name__}: {exc}")
    if json_out:
        print_json(res.as_json())
    else:
        _print_eval(res)
    if res.status == "rejected":
        raise typer.Exit(EXIT_USAGE)
    if res.decision == "halt":
        raise typer.Exit(EXIT_PROBLEM)


def watch(
    once: bool = typer.Option(False, "--once", help="Run one tick and exit (for cron and tests)."),
    store: str = typer.Option(None, "--store", help="file:///path or s3://bucket/prefix (default: configured)."),
    policy: str = typer.Option(None, "--policy", "-p", help=POLICY_HELP, show_default=False),
    interval: float = typer.Option(30.0, "--interval", help="Seconds between ticks without --once."),
    max_concurrent: int = typer.Option(2, "--max-concurrent", help="Runs evaluated in parallel."),
    full_scan: bool = typer.Option(False, "--full-scan", help="List the whole store, not just new keys."),
    task_runner: str = typer.Option("threads", "--task-runner", help="threads, threads:N, dask, dask://host:port"),
    limit: int = typer.Option(None, "--limit", help="At most this many samples per benchmark (smoke tests)."),
    json_out: bool = typer.Option(False, "--json", help="Print each tick's summary as JSON."),
) -> None:
    """Detect new complete checkpoints and evaluate each exactly once.

    The first watch creates the ledger if there is none yet (as `rsp init` does).
    Exit 0 when no evaluated checkpoint halted, 1 when one did (with --once).
    """
    problem = store and _location_problem(store, "checkpoint store", checkpoint=False)
    if problem:
        die("watch", problem)
    _quiet_prefect_when_json(json_out)
    from flows.watch import watch as watch_flow

    policy = configured_policy(policy)
    while True:
        try:
            res = watch_flow(store=store, policy=policy, max_concurrent=max_concurrent, full_scan=full_scan,
                             task_runner=task_runner, limit=limit)
        except Exception as exc:  # noqa: BLE001 - the CLI turns any failure into one line and exit 2
            fail(f"watch failed: {type(exc).__name__}: {exc}")
        if json_out:
            print_json(res.as_json())
        else:
            typer.echo(f"listed {res.listed} ({'full' if res.full_scan else 'incremental'}), "
                       f"{res.new} new, {len(res.rejected)} rejected, {len(res.evaluated)} evaluated, "
                       f"{len(res.halted)} halted")
            for r in res.rejected:
                typer.echo(f"  rejected {r.key}: {r.reason}")
            for ev in res.evaluated:
                typer.echo("  ", nl=False)
                _print_eval(ev)
        if once:
            if res.halted:
                raise typer.Exit(EXIT_PROBLEM)
            return
        time.sleep(interval)
