"""`rsp forecast RUN`: when each measure is forecast to cross its threshold, from the run's determinations.

    rsp forecast RUN [--json] [--policy P] [--ledger URL]

Fits each measure's scores across the run's checkpoints against log effective compute (see
`policy/forecast.py`) and prints the forecast crossing with its band, and whether the band's
earliest crossing comes before the next comprehensive assessment (the last comprehensive
determination's compute times the policy's factor): a warning. The policy is the one the run's
latest determination names (`--policy` to use another); the measures, chance scores and cadence
come from it.

Exit codes: 0 no warning; 1 a warning is active (a gating measure may cross before the next
comprehensive step); 2 bad usage, an unknown run, or a ledger or policy that cannot be read.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import typer

from rsp.commands.ledger import LedgerOpt
from rsp.console import EXIT_OK, EXIT_PROBLEM, fail, print_json


def register(app: typer.Typer) -> None:
    app.command("forecast")(forecast)


def _flop(value: float | None) -> str:
    return "never" if value is None or not math.isfinite(value) else f"{value:.2e}"


def forecast(
    run_id: Annotated[str, typer.Argument(help="The training run id (as in its checkpoint manifests).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    policy: Annotated[str | None, typer.Option("--policy", "-p", help="Policy file or bundled id; default: the one "
                                                                      "the run's latest determination names.")] = None,
    ledger: LedgerOpt = None,
) -> None:
    """Forecast when each measure crosses its threshold; exit 1 while a warning is active."""
    from policy.errors import PolicyError
    from policy.forecast import forecast_measures, last_comprehensive_compute, next_comprehensive_compute
    from policy.identity import policy_sha256
    from rsp.commands.ledger import ledger_line, open_ledger
    from tasks.inputs import InputError, read_policy
    from tasks.ledger.events import ForecastWarning
    from tasks.settings import get_settings

    store = open_ledger("forecast", ledger)
    dets = store.determinations(run_id)
    if not dets:
        fail(f"no determinations for run '{run_id}' in the ledger ({store.url})")
    dets.sort(key=lambda d: (d.get("checkpoint") or {}).get("step") or 0)
    latest = dets[-1]
    ref = policy or latest.get("policy_ref") or get_settings().policy
    try:
        pol = read_policy(ref)
    except (PolicyError, InputError, OSError) as exc:
        fail(f"policy {ref}: {exc}")
    sha = policy_sha256(pol)
    decided_under = (latest.get("policy") or {}).get("sha256")
    note = None if decided_under in (None, sha) else (
        f"policy {ref} (sha256 {sha[:12]}) is not the one the latest determination was decided under "
        f"({decided_under[:12]}): measures and cadence are taken from {ref}")
    forecasts = forecast_measures(pol, dets)
    next_step = next_comprehensive_compute(pol.cadence, last_comprehensive_compute(dets))
    warned = [f for f in forecasts if f.warns(next_step)]
    recorded = [e.payload for e in store.events(kind=ForecastWarning.KIND, subject=run_id)]
    ck = latest.get("checkpoint") or {}
    if as_json:
        out: dict[str, Any] = {
            "run_id": run_id, "policy": {"ref": ref, "id": pol.framework.id, "sha256": sha},
            "latest_step": ck.get("step"), "latest_compute": ck.get("effective_compute"),
            "next_comprehensive": next_step, "warning": bool(warned),
            "measures": [f.to_dict() | {"warns": f.warns(next_step)} for f in forecasts],
            "recorded_warnings": recorded, "note": note, "ledger": store.url, "ledger_id": store.ledger_id}
        print_json(out)
    else:
        if note:
            typer.echo(f"note: {note}", err=True)
        typer.echo(ledger_line(store.url, store.ledger_id))
        typer.echo(f"run {run_id}: {len(dets)} determinations, latest step {ck.get('step')} at "
                   f"{_flop(ck.get('effective_compute'))} FLOP; next comprehensive step at {_flop(next_step)} FLOP "
                   f"(policy {pol.framework.id})")
        for f in forecasts:
            flag = "WARNING " if f.warns(next_step) else ("crossed " if f.status == "crossed" else "        ")
            gate = "" if f.gating else " (monitored)"
            typer.echo(f"{flag}{f.measure}{gate}: {f.describe()}")
        if recorded:
            typer.echo(f"{len(recorded)} forecast warning(s) recorded for this run; the latest: "
                       f"{recorded[-1].get('message')}")
        typer.echo(f"{len(warned)} warning(s) active" if warned else "no warning active")
    raise typer.Exit(EXIT_PROBLEM if warned else EXIT_OK)
