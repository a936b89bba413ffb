"""`rsp serve`: run the pipeline's deployments from one process (no work pool needed).

Serves `watch` (on an interval, and on every `rsp.checkpoint.arrived` event), `evaluate`
(fill in a checkpoint URI in the Prefect UI to rerun one), `halt`, and optionally the demo
training flow as a scaling deployment. Open halts are re-applied from the ledger before
anything runs and every `--reconcile-every` seconds (a restarted serve process un-pauses
its deployments; this puts the halts back), and the halt-guard automation is created.
"""

from __future__ import annotations

import typer

from rsp.console import fail


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def build_deployments(policy: str, interval: float, store: str | None, with_demo: bool) -> list:
    from prefect.events import DeploymentEventTrigger

    from flows.evaluate import evaluate
    from flows.halt import halt
    from flows.watch import watch

    watch_params = {"policy": policy, **({"store": store} if store else {})}
    deployments = [
        watch.to_deployment(
            name="watch", interval=interval, parameters=watch_params, tags=["rsp", "watch"],
            description="Detect new complete checkpoints and evaluate each exactly once.",
            triggers=[DeploymentEventTrigger(expect={"rsp.checkpoint.arrived"},
                                             match={"prefect.resource.id": "rsp.checkpoint.*"},
                                             parameters=watch_params)],
        ),
        evaluate.to_deployment(
            name="evaluate", parameters={"policy": policy, "force": False}, tags=["rsp", "evaluate"],
            description="Rerun one checkpoint: fill in checkpoint_uri (tick force to recompute benchmarks).",
        ),
        halt.to_deployment(name="halt", tags=["rsp", "halt"],
                           description="Open and apply a halt (operators: give a reason and activities)."),
    ]
    try:
        from flows.approval import await_approval

        from flows.resume import resume

        deployments.append(await_approval.to_deployment(
            name="approval", tags=["rsp", "approval"], parameters={"timeout_s": 86400},
            description="Collect approvals for a halt from the Prefect UI (each vote is recorded in the ledger)."))
        deployments.append(resume.to_deployment(
            name="resume", tags=["rsp", "resume"],
            description="Lift a halt once its approvals and a fresh safeguard verification allow it."))
    except ImportError:
        pass
    if with_demo:
        from flows.train_demo import scaling_deployment

        deployments.append(scaling_deployment())
    return deployments


def serve(
    policy: str = typer.Option("anthropic-rsp", "--policy", "-p", help="Bundled framework id or policy file."),
    interval: float = typer.Option(60.0, "--interval", help="Seconds between scheduled watch ticks."),
    store: str = typer.Option(None, "--store", help="Checkpoint store (default: configured)."),
    demo: bool = typer.Option(False, "--demo", help="Also serve the demo training flow (a scaling deployment)."),
    reconcile_every: float = typer.Option(30.0, "--reconcile-every", help="Seconds between halt reconciles."),
) -> None:
    """Serve watch, evaluate, halt (and the demo trainer) against PREFECT_API_URL. Blocks; Ctrl-C stops."""
    import os

    if not os.environ.get("PREFECT_API_URL"):
        fail("set PREFECT_API_URL to a running Prefect server (e.g. `prefect server start`, then "
             "PREFECT_API_URL=http://127.0.0.1:4200/api)")
    from tasks.enforcement import serve_scaling
    from tasks.inputs import read_policy

    try:
        read_policy(policy)
    except Exception as exc:
        fail(str(exc))
    serve_scaling(*build_deployments(policy, interval, store, demo), reconcile_every=reconcile_every)
