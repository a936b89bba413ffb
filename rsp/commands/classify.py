"""`rsp classify`: the pure core on a results file, no pipeline, no network."""

from __future__ import annotations

from pathlib import Path

import typer

from rsp.console import fail, print_json


def register(app: typer.Typer) -> None:
    app.command("classify")(classify)


def classify(
    policy: str = typer.Option(..., "--policy", "-p", help="Policy file or bundled framework id."),
    results: Path = typer.Option(..., "--results", "-r", help="Sample rows: .jsonl, .json or .csv."),
    max_bytes: int = typer.Option(96 * 1024 * 1024, "--max-bytes", help="Refuse results files larger than this."),
    json_out: bool = typer.Option(False, "--json", help="Print the determination as JSON."),
) -> None:
    """Classify benchmark results against a policy and explain the required safety level.

    Safeguards are not verified here (the evaluate flow does that), so the
    decision is HALT whenever the required level needs any safeguard: fail closed.
    Exit 0 when classification ran, 2 on invalid input.
    """
    from policy.engine import classify as run_classify
    from policy.errors import PolicyError, ResultsError
    from tasks.inputs import InputError, read_policy, read_results

    try:
        p = read_policy(policy)
        table = read_results(results, max_bytes=max_bytes)
        det = run_classify(p, table)
    except (PolicyError, ResultsError, InputError) as exc:
        fail(str(exc))
    if json_out:
        print_json(det.model_dump(mode="json"))
        return
    from rsp.render import render_determination

    render_determination(det)
