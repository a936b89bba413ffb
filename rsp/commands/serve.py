"""`rsp serve`: run the pipeline's deployments from one process (no work pool needed).

The deployments are those of deployments/prefect.yaml (flows/deployments.py reads it), so a
served gate and a worker-run one are the same deployments. Serves `watch` (on an interval, and on every `rsp.checkpoint.arrived` event), `evaluate`
(fill in a checkpoint URI in the Prefect UI to rerun one), `halt`, and optionally the demo
training flow as a scaling deployment. Open halts are re-applied from the ledger before
anything runs and every `--reconcile-every` seconds (a restarted serve process un-pauses
its deployments; this puts the halts back), and the halt-guard automation is created.
"""

from __future__ import annotations

from collections.abc import Mapping

import typer

from rsp.console import POLICY_HELP, configured_policy, fail


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


SERVED = ["watch", "evaluate", "halt", "approval", "resume"]

# Prefect's runner polls every 10 s: an event-triggered watch run waited up to that long before it
# started, most of the gap between a checkpoint's arrival and its halt (issue 14 measured 28 s
# checkpoint-to-halt against 17.5 s of benchmarks). A poll is one small API request.
DEFAULT_POLL_S = 2.0


def build_deployments(policy: str, interval: float, store: str | None, with_demo: bool) -> list:
    """The deployments of deployments/prefect.yaml (the one definition), with this command's options applied."""
    from flows.deployments import build_deployments as from_file
    from tasks.settings import get_settings

    watch_params = {"policy": policy, **({"store": store} if store else {})}
    return from_file(
        names=[*SERVED, *(["train-demo"] if with_demo else [])],
        parameters={"watch": watch_params, "evaluate": {"policy": policy}},
        interval=interval,
        scaling_tag=get_settings().scaling_tag,
    )


def serve(
    policy: str = typer.Option(None, "--policy", "-p", help=POLICY_HELP, show_default=False),
    interval: float = typer.Option(60.0, "--interval", help="Seconds between scheduled watch ticks."),
    store: str = typer.Option(None, "--store", help="Checkpoint store (default: configured)."),
    demo: bool = typer.Option(False, "--demo", help="Also serve the demo training flow (a scaling deployment)."),
    reconcile_every: float = typer.Option(30.0, "--reconcile-every", help="Seconds between halt reconciles."),
    poll_seconds: float = typer.Option(
        None, "--poll-seconds", min=0.2, show_default=False,
        help=f"Seconds between polls for runs to start (default: PREFECT_RUNNER_POLL_FREQUENCY, else {DEFAULT_POLL_S:g})."),
    warm: bool = typer.Option(
        True, "--warm/--cold",
        help="Start the gate's runs from a process that has the heavy modules imported (--cold: a fresh "
             "interpreter per run, Prefect's default; 15-20 s more per run on 2 cores)."),
) -> None:
    """Serve watch, evaluate, halt (and the demo trainer) against PREFECT_API_URL. Blocks; Ctrl-C stops."""
    import os

    if not os.environ.get("PREFECT_API_URL"):
        fail("set PREFECT_API_URL to a running Prefect server (e.g. `prefect server start`, then "
             "PREFECT_API_URL=http://127.0.0.1:4200/api)")
    from tasks.enforcement import serve_scaling
    from tasks.inputs import read_policy

    policy = configured_policy(policy)
    try:
        read_policy(policy)
    except Exception as exc:  # noqa: BLE001 - any unreadable policy: one line and exit 2 before serving
        fail(str(exc))
    deployments = build_deployments(policy, interval, store, demo)
    after_add = None
    if warm:
        from flows.deployments import deployment_flows
        from flows.warm import start_from_memory, warm_served_runs

        # The gate's own flows; the demo trainer (a scaling run the halt cancels) keeps Prefect's start.
        warm_flows = deployment_flows(SERVED)

        def after_add(runner: object, deployment_id: object, deployment: object) -> None:
            flow = warm_flows.get(getattr(deployment, "name", ""))
            if flow is not None:
                start_from_memory(runner, deployment_id, flow)

        # Imports in the background; runs start cold until it is ready.
        warm_served_runs(on_ready=lambda line: typer.echo(f"rsp serve: {line}"))

    def ready(report: object) -> None:
        typer.echo(startup_message(os.environ["PREFECT_API_URL"], deployments, interval))

    serve_scaling(*deployments, reconcile_every=reconcile_every, on_ready=ready,
                  query_seconds=runner_poll_seconds(poll_seconds, os.environ), after_add=after_add)


def runner_poll_seconds(option: float | None, environ: Mapping[str, str]) -> float:
    """--poll-seconds, else PREFECT_RUNNER_POLL_FREQUENCY when set, else DEFAULT_POLL_S."""
    if option is not None:
        return float(option)
    configured = environ.get("PREFECT_RUNNER_POLL_FREQUENCY")
    return float(configured) if configured else DEFAULT_POLL_S


def startup_message(api_url: str, deployments: list, interval: float) -> str:
    """What `rsp serve` serves and where: the Prefect UI, each deployment, the approval service."""
    import os

    from tasks.report import DEFAULT_REPORTS_URL, REPORTS_URL_ENV

    ui = api_url.rstrip("/").removesuffix("/api")
    reports = os.environ.get(REPORTS_URL_ENV) or DEFAULT_REPORTS_URL
    lines = [f"rsp serve: Prefect UI {ui} (API {api_url})"]
    for d in deployments:
        flow_name = getattr(d, "flow_name", None) or "?"
        extra = f", every {interval:g} s and on rsp.checkpoint.arrived" if d.name == "watch" else ""
        lines.append(f"  deployment {flow_name}/{d.name}{extra}: {ui}/deployments?search={d.name}")
    lines.append(f"  approval service (Slack votes, report links): {reports.removesuffix('/reports')} "
                 "(start it with `rsp serve-approvals`)")
    return "\n".join(lines)
