"""Serving scaling deployments so that a halt survives a serve restart.

Prefect's `serve` pauses its deployments on SIGTERM and un-pauses them when it starts
again, including one a halt paused (PITFALLS.md). `serve_scaling` therefore does what
`prefect.serve` does, with two additions:

1. after the runner has registered (and so un-paused) the deployments and before it polls
   for a single run, it reconciles: every open halt is re-applied from the ledger;
2. a daemon thread reconciles again every `reconcile_every` seconds while serving, which
   also catches someone resuming a deployment in the UI.

Runs the runner picks up in the window before (1) completes cannot slip through either:
the scaling flow's own gate check refuses to start them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

    from tasks.enforcement.reconcile import ReconcileReport
    from tasks.ledger import Ledger

log = logging.getLogger("rsp.enforcement.serve")


def _reconcile_loop(stop: threading.Event, every: float, run_once: Callable[[], Any]) -> None:
    while not stop.wait(every):
        try:
            run_once()
        except Exception:
            log.exception("periodic reconcile failed")


def start_missing_approvals(ledger: Ledger, api_url: str | None = None) -> list[str]:
    """Start an approval run (deployment await-approval/approval, named `approve-<halt id>`) for every
    open halt that has none scheduled, pending, running or paused; returns the halt ids started for.
    Each is a run of the deployment in its own right (not a subflow), so the UI lists it under the
    approval deployment, by its halt. Best effort: votes also arrive by Slack and `rsp approve`."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterName,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tasks.enforcement.halting import APPROVAL_DEPLOYMENT, approval_run_name
    from tasks.enforcement.prefect_api import resolve_api_url

    live = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.PAUSED]
    started = []
    with temporary_settings(updates={PREFECT_API_URL: resolve_api_url(api_url)}), \
            get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(APPROVAL_DEPLOYMENT)
        for halt in ledger.halts("open"):
            name = approval_run_name(halt.halt_id)
            waiting = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                name=FlowRunFilterName(any_=[name]), state=FlowRunFilterState(type=FlowRunFilterStateType(any_=live))))
            if any(r.deployment_id == deployment.id for r in waiting):
                continue
            run_deployment(APPROVAL_DEPLOYMENT, parameters={"halt_id": halt.halt_id}, flow_run_name=name,
                           timeout=0, as_subflow=False)
            started.append(halt.halt_id)
    return started


def serve_scaling(
    *deployments: RunnerDeployment,
    reconcile_every: float = 30.0,
    ledger: Ledger | None = None,
    api_url: str | None = None,
    scaling_tag: str | None = None,
    names: Sequence[str] | None = None,
    limit: int | None = None,
    ensure_automation: bool = True,
    on_ready: Callable[[ReconcileReport], None] | None = None,
    after_add: Callable[[Any, Any, RunnerDeployment], None] | None = None,
    **runner_kwargs: Any,
) -> None:
    """Serve `deployments` (blocks, like `prefect.serve`), reconciling open halts at start-up
    and every `reconcile_every` seconds. `on_ready` is called with the start-up reconcile
    report once the deployments are registered and the halts re-applied. `ledger` None: the
    configured ledger (opened once, used by every reconcile pass), created if there is none yet:
    the first `serve` is one of the commands that may create the ledger. `after_add(runner,
    deployment_id, deployment)` is called for each deployment once the runner has it (`rsp serve`
    registers the gate's flows there to start their runs warm, flows/warm.py)."""
    import asyncio

    from prefect.exceptions import TerminationSignal
    from prefect.runner import Runner

    from tasks.enforcement.automation import ensure_halt_automation
    from tasks.enforcement.halting import APPROVAL_DEPLOYMENT
    from tasks.enforcement.prefect_api import resolve_api_url, short_error
    from tasks.enforcement.reconcile import reconcile
    from tasks.ledger import Ledger

    url = resolve_api_url(api_url)
    store = ledger if ledger is not None else Ledger(create=True)

    def run_once() -> ReconcileReport:
        report = reconcile(ledger=store, api_url=url, scaling_tag=scaling_tag, names=names)
        log.info(report.summary())
        return report

    runner = Runner(pause_on_shutdown=True, limit=limit, **runner_kwargs)
    for deployment in deployments:
        deployment.work_pool_name = None  # served deployments run here, not in a work pool
        deployment_id = runner.add_deployment(deployment)  # registers with the API, un-pausing it
        if after_add is not None:
            after_add(runner, deployment_id, deployment)
    first = run_once()
    if any(d.name == APPROVAL_DEPLOYMENT.split("/")[1] for d in deployments):
        try:
            opened = start_missing_approvals(store, url)
            if opened:
                log.info("approval runs started for open halts: %s", ", ".join(opened))
        except Exception as exc:  # noqa: BLE001 - best effort: Slack and `rsp approve` still take votes
            log.warning("approval runs for open halts not started: %s", short_error(exc))
    if ensure_automation:
        try:
            ensure_halt_automation(api_url=url, ledger=store, scaling_tag=scaling_tag, names=names)
        except Exception as exc:  # noqa: BLE001 - best effort by design; the gate is the guarantee
            log.warning("halt automation not set up: %s", short_error(exc))
    stop = threading.Event()
    loop = threading.Thread(target=_reconcile_loop, args=(stop, reconcile_every, run_once),
                            name="rsp-reconcile", daemon=True)
    loop.start()
    if on_ready is not None:
        on_ready(first)
    try:
        asyncio.run(runner.start())
    except (KeyboardInterrupt, TerminationSignal) as exc:
        log.info("received %s, shutting down", type(exc).__name__)
    finally:
        stop.set()


__all__ = ["serve_scaling", "start_missing_approvals"]
