"""`rsp serve` against a real Prefect server: the watch schedule and the checkpoint-arrived trigger
create runs by themselves, and an open halt gets its approval run.

One serve process for the whole test (the deployments of deployments/prefect.yaml, watch every
15 s). The test never creates a watch run itself: the ones it sees are the scheduler's
(`auto_scheduled`, spaced by the interval) and the event trigger's. SQLAlchemy 2.1 once gave zero
scheduled runs here (PITFALLS.md), which is what this guards.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.plugins.prefect_server import REPO_ROOT, PrefectServerProcess, _terminate, wait_for

pytestmark = pytest.mark.integration

INTERVAL_S = 15  # short, yet long enough that ticks do not pile up on 2 busy cores
WAIT_S = 600  # a fail-safe, not a timing assert: every served run starts a new Python process


def _watch_runs(deployment_id: Any) -> list[Any]:
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        return list(client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))))


def _deployment_id(name: str) -> Any:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return client.read_deployment_by_name(name).id


def _start(name: str, parameters: dict[str, Any]) -> Any:
    from prefect.deployments import run_deployment

    return run_deployment(name, parameters=parameters, timeout=0, as_subflow=False).id


def _final(flow_run_id: Any) -> Any:
    from prefect import get_client

    def state() -> Any:
        with get_client(sync_client=True) as client:
            current = client.read_flow_run(flow_run_id).state
        return current if current is not None and current.is_final() else None

    return wait_for(state, WAIT_S, interval=1, what=f"flow run {flow_run_id} to finish")


@pytest.mark.timeout(900)  # the session's server may start inside this test; every served run is a new process
def test_served_watch_runs_on_its_schedule_and_on_the_event(
    prefect_server_control: PrefectServerProcess, rsp_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rsp.cli import app
    from tasks.ledger import Ledger
    from tasks.settings import get_settings

    tag = f"scaling-{uuid.uuid4().hex[:10]}"  # this test's halt pauses nobody else's deployments
    monkeypatch.setenv("RSP_SCALING_TAG", tag)
    get_settings.cache_clear()
    ledger_url = get_settings().resolved_ledger_url
    Ledger(ledger_url).close()
    opened = CliRunner().invoke(app, ["halt", "open", "--reason", "opened before rsp serve started",
                                      "--activities", "training", "--by", "operator", "--ledger", ledger_url,
                                      "--json"])
    assert opened.exit_code == 0, opened.output
    halt_id = json.loads(opened.output)["halt"]["halt_id"]

    env = {**os.environ, **prefect_server_control.env(), "RSP_HOME": str(rsp_home), "RSP_SCALING_TAG": tag,
           "PREFECT_RUNNER_POLL_FREQUENCY": "1", "PYTHONPATH": str(REPO_ROOT), "RSP_REPO_DIR": str(REPO_ROOT)}
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "rsp"), "serve", "--interval", str(INTERVAL_S),
                                 "--reconcile-every", "600"], cwd=REPO_ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)

    def serve_log() -> str:
        return log_path.read_text(errors="replace")

    try:
        def started() -> bool:
            assert proc.poll() is None, f"rsp serve exited {proc.returncode}:\n{serve_log()[-3000:]}"
            return "rsp serve: Prefect UI" in serve_log()

        wait_for(started, WAIT_S, what="rsp serve to start")
        banner = serve_log()
        assert f"{prefect_server_control.url.removesuffix('/api')}" in banner
        for name in ("watch/watch", "evaluate/evaluate", "halt/halt", "await-approval/approval", "resume/resume"):
            assert f"deployment {name}" in banner, banner
        watch_id = _deployment_id("watch/watch")
        # Started now so that they run while the schedule ticks (each run is a new process: slow on 2 cores).
        missing = (rsp_home / "checkpoints" / "run-z" / "step-000000001").as_uri() + "/"
        rejected_run = _start("evaluate/evaluate", {"checkpoint_uri": missing})
        refused_run = _start("resume/resume", {"halt_id": halt_id})

        # 1. The schedule: the scheduler (not this test) created runs one interval apart, and they run.
        def scheduled() -> list[Any]:
            runs = [r for r in _watch_runs(watch_id) if r.auto_scheduled]
            return runs if len(runs) >= 2 else []

        starts = sorted(r.expected_start_time for r in wait_for(scheduled, WAIT_S, interval=1, what="scheduled runs"))
        assert {(b - a).total_seconds() for a, b in itertools.pairwise(starts[:3])} == {INTERVAL_S}

        def scheduled_and_done() -> list[Any]:
            return [r for r in _watch_runs(watch_id) if r.auto_scheduled and r.state and r.state.is_completed()]

        done = wait_for(scheduled_and_done, WAIT_S, interval=1, what="a scheduled watch run to complete")
        assert done[0].state.name == "Completed"  # an empty store: nothing rejected, nothing failed

        # 2. The trigger: a checkpoint-arrived event starts a watch run with the trigger's parameters.
        before = {r.id for r in _watch_runs(watch_id)}
        # Emitted by another process, as a trainer host would: this process's Prefect events client is a
        # singleton bound to the first server it met (under xdist, the demo's own server, since stopped).
        emitter = ("from prefect.events import emit_event; from prefect.events.worker import EventsWorker; "
                   "emit_event('rsp.checkpoint.arrived', "
                   f"resource={{'prefect.resource.id': 'rsp.checkpoint.{uuid.uuid4().hex}'}}); "
                   "EventsWorker.drain_all(timeout=60)")
        subprocess.run([sys.executable, "-c", emitter], env=env, check=True, timeout=120)

        def triggered() -> list[Any]:
            return [r for r in _watch_runs(watch_id) if r.id not in before and not r.auto_scheduled]

        (run,) = wait_for(triggered, WAIT_S, interval=1, what="a watch run triggered by the event")
        assert run.parameters.get("full_scan") is False

        # 3. The halt opened before serve started has its approval run, named after it, paused for the form.
        approval_id = _deployment_id("await-approval/approval")

        def approval_paused() -> list[Any]:
            return [r for r in _watch_runs(approval_id) if r.name == f"approve-{halt_id}" and r.state
                    and r.state.is_paused()]

        (approval,) = wait_for(approval_paused, WAIT_S, interval=1, what="the approval run to pause for its form")
        assert approval.parent_task_run_id is None  # its own deployment run, not a hidden subflow

        # 4. Non-successes show as such: a rejected checkpoint and a refused lift end Failed, named, with why.
        rejected = _final(rejected_run)
        assert (rejected.type.value, rejected.name) == ("FAILED", "Rejected")
        assert rejected.message.startswith("checkpoint rejected: ")
        refused = _final(refused_run)
        assert (refused.type.value, refused.name) == ("FAILED", "Refused") and "lift refused" in refused.message
        assert Ledger(ledger_url).halt(halt_id).is_open
        # 5. Runs started warm (flows/warm.py) once the forkserver had its imports; all the above held.
        wait_for(lambda: "rsp serve: runs start warm" in serve_log(), WAIT_S, what="warm runs")
    finally:
        _terminate(proc, timeout=20)
