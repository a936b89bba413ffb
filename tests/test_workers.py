"""Scaling deployments run by workers in a work pool, deployed from deployments/prefect.yaml.

The halt tests in test_halt_holds.py serve deployments with `serve`; a lab runs them with
`prefect deploy` and `prefect worker start`. Here the file is deployed with `prefect deploy
--all` against the session's real Prefect server, and the scaling deployment is run by a real
`prefect worker start --pool rsp-scaling --type process`. The fifth layer under test: a halt
pauses the scaling work queue, so no worker is handed a run, however it was created; the
reconciler puts the pause back; a lift resumes the queue; a worker's SIGTERM and restart and a
Prefect server restart leave the pauses in force. The proof, as in test_halt_holds.py,
is the checkpoint folder: a halted run writes no checkpoint.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from typer.testing import CliRunner

from policy.halts import HaltScope
from tasks.enforcement import apply_halt, open_manual_halt, reconcile
from tasks.enforcement.enforce import HaltTarget, halt_agreement, halts_covering_queue, plan, summarize_queues
from tasks.enforcement.prefect_api import ScalingDeployment, ScalingQueue
from tasks.enforcement.settings import DEFAULT_SCALING_QUEUES, scaling_queues
from tasks.ledger import Ledger
from tests.plugins.prefect_server import REPO_ROOT, wait_for
from tests.plugins.workers import WorkerDeployments, queue_state, set_queue_paused
from tests.test_halt_holds import FINAL, checkpoints, paused, run_state

SCALING_TAG = "scaling"  # the tag deployments/prefect.yaml gives the scaling deployment


# -- the queue layer's rule (pure) ------------------------------------------------------------------------------


def dep(name: str, queue: str | None, activities: tuple[str, ...] = ("training",), run_id: str | None = None,
        paused: bool = False) -> ScalingDeployment:
    pool, _, q = (queue or "").partition("/")
    return ScalingDeployment(id=name, name=name, flow_id="f", tags=("scaling", *activities), paused=paused,
                             activities=activities, default_run_id=run_id, work_pool=pool or None,
                             work_queue=q or None)


def target(halt_id: str, activities: tuple[str, ...] = ("training",), runs: tuple[str, ...] = ("*",)) -> HaltTarget:
    return HaltTarget(halt_id, HaltScope(activities=activities, runs=runs))


def test_a_halt_pauses_the_queue_only_when_it_pauses_every_scaling_deployment_on_it() -> None:
    q = ScalingQueue("rsp-scaling", "scaling", "q-1", paused=False)
    train_a = dep("a", "rsp-scaling/scaling", run_id="run-a")
    train_b = dep("b", "rsp-scaling/scaling", run_id="run-b")
    served = dep("served", None)
    all_training, run_a_only = target("h-all"), target("h-a", runs=("run-a",))
    ship_only = target("h-ship", activities=("deployment",))

    assert halts_covering_queue(q, [train_a, train_b, served], [all_training, run_a_only, ship_only]) == ["h-all"]
    # A halt of one run leaves the shared queue alone: the other run's work must still be handed out.
    assert halts_covering_queue(q, [train_a, train_b], [run_a_only]) == []
    assert halts_covering_queue(q, [train_a], [run_a_only]) == ["h-a"]
    # No scaling deployment on it (served deployments only), or no such queue: nothing to pause.
    assert halts_covering_queue(q, [served], [all_training]) == []
    absent = ScalingQueue("rsp-scaling", "scaling", None, paused=False)
    assert halts_covering_queue(absent, [train_a], [all_training]) == []

    p = plan([train_a, train_b], [], [all_training], [q])
    assert [x.full_name for x in p.queues_to_pause] == ["rsp-scaling/scaling"] and not p.agrees
    (row,) = summarize_queues(p)
    assert row["drift"] == ["not paused"] and row["deployments"] == ["a", "b"] and row["halts"] == ["h-all"]
    agreement = halt_agreement(p, "h-all")
    assert agreement["not_paused_queues"] == ["rsp-scaling/scaling"] and not agreement["agrees"]
    done = plan([dep("a", "rsp-scaling/scaling", paused=True)], [], [all_training],
                [ScalingQueue("rsp-scaling", "scaling", "q-1", paused=True)])
    assert done.agrees and halt_agreement(done, "h-all")["agrees"]


def test_scaling_queues_come_from_the_environment_with_the_file_as_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RSP_SCALING_QUEUES", raising=False)
    assert scaling_queues() == DEFAULT_SCALING_QUEUES == ("rsp-scaling/scaling",)
    monkeypatch.setenv("RSP_SCALING_QUEUES", " gpu/train , gpu/train,tpu/big ")
    assert scaling_queues() == ("gpu/train", "tpu/big")
    monkeypatch.setenv("RSP_SCALING_QUEUES", "")
    assert scaling_queues() == ()  # the queue layer switched off, explicitly


# -- workers in a work pool, against the real server -------------------------------------------------------------


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    Ledger(url).close()
    return url


def params(run_id: str, store: Path, ledger_url: str, **extra: Any) -> dict[str, Any]:
    return {"run_id": run_id, "steps": 500, "step_seconds": 0.3, "checkpoint_store": str(store),
            "ledger_url": ledger_url, **extra}


def cli_run(name: str, parameters: dict[str, Any]) -> str:
    """`prefect deployment run`, as an operator types it; the new flow run's id."""
    prefect = str(Path(sys.executable).parent / "prefect")
    out = subprocess.run([prefect, "deployment", "run", name, "--params", json.dumps(parameters)],
                         check=False, cwd=REPO_ROOT, env={**os.environ, "PREFECT_CLI_PROMPT": "false"}, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    found = re.search(r"UUID:\s*([0-9a-f-]{36})", out.stdout)
    assert found, out.stdout
    return found.group(1)


def polled_since(pool: str, queue: str, since: dt.datetime) -> bool:
    """The worker has polled this queue since `since` (a paused queue is polled too, and hands out nothing)."""
    _, _, last = queue_state(pool, queue)
    return last is not None and last > since


def status_json(ledger_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, dict[str, Any]]:
    from rsp.cli import app
    from tasks.settings import get_settings

    monkeypatch.setenv("RSP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RSP_SCALING_TAG", SCALING_TAG)
    get_settings.cache_clear()
    try:
        out = CliRunner().invoke(app, ["status", "--json", "--ledger", ledger_url])
    finally:
        get_settings.cache_clear()
    return out.exit_code, json.loads(out.output)


@pytest.mark.integration
def test_worker_run_deployment_is_halted_and_the_paused_queue_hands_out_nothing(
    worker_deployments: WorkerDeployments, worker_factory: Any, ledger_url: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wd = worker_deployments
    pool, queue, full = wd.scaling_pool, wd.scaling_queue, wd.scaling_queue_full
    assert full in DEFAULT_SCALING_QUEUES  # what a halt pauses by default is where the file puts scaling
    assert set(wd.ids) == set(wd.queues), wd.ids  # `prefect deploy --all` created every deployment in the file
    dep_id = wd.ids["train-demo"]
    store, state = tmp_path / "checkpoints", tmp_path / "reconcile.json"
    ledger = Ledger(ledger_url)
    worker = worker_factory(pool=pool, ledger_url=ledger_url)
    worker.wait_ready()
    assert not queue_state(pool, queue)[1] and not paused(dep_id)

    # The worker runs the scaling deployment from the file.
    training = _create(dep_id, params("run-w", store, ledger_url))
    wait_for(lambda: len(checkpoints(store, "run-w")) >= 2, 120, what="the worker's run to write 2 checkpoints")

    halt, _ = open_manual_halt("worker e2e: obligations unmet", ["training"], ledger=ledger)
    report = apply_halt(halt.halt_id, ledger=ledger, scaling_tag=SCALING_TAG)
    assert report.applied, report.error
    assert [q["name"] for q in report.paused_queues] == [full] and queue_state(pool, queue)[1]
    assert dep_id in [p["id"] for p in report.paused] and paused(dep_id)
    (applied,) = ledger.events(kind="halt.applied", subject=halt.halt_id)
    assert applied.payload["paused_queues"] == [full]
    final = wait_for(lambda: (s := run_state(training)) in FINAL and s, 60, what="the worker's run to stop")
    assert final in ("CANCELLED", "FAILED")
    opened = dt.datetime.fromisoformat(halt.opened_at)
    written = checkpoints(store, "run-w")
    assert len([c for c in written if c["created"] > opened]) <= 1, "checkpoints written after the halt"

    # Runs started by hand while halted: through the API the UI uses, and `prefect deployment run`.
    asked = dt.datetime.now(dt.UTC)
    by_api = _create(dep_id, params("run-api", store, ledger_url))
    by_cli = cli_run("train-demo/train-demo", params("run-cli", store, ledger_url))
    # The worker keeps polling the paused queue (twice, after both runs existed) and is handed neither.
    wait_for(lambda: polled_since(pool, queue, asked + dt.timedelta(seconds=2)), 30, what="the worker to poll")
    assert run_state(by_api) == run_state(by_cli) == "SCHEDULED"
    assert checkpoints(store, "run-api") == checkpoints(store, "run-cli") == []
    code, data = status_json(ledger_url, tmp_path, monkeypatch)
    (row,) = [q for q in data["prefect"]["queues"] if q["name"] == full]
    assert row["paused"] and row["halts"] == [halt.halt_id] and row["deployments"] == ["train-demo/train-demo"]
    assert code == 1 and set(data["open_halts"][0]["prefect"]["active_runs"]) >= {by_api, by_cli}

    # The reconciler cancels them, and each is on record with who started it.
    fixed = reconcile(ledger=ledger, scaling_tag=SCALING_TAG, state_path=state)
    assert fixed.ok and {by_api, by_cli} <= {c["id"] for c in fixed.cancelled}, fixed.summary()
    stopped = {e.payload["flow_run_id"]: e.payload for e in ledger.events(kind="scaling.run_cancelled")}
    assert stopped[by_api]["started_by"] == stopped[by_cli]["started_by"] == "deployment run started by hand (UI, API or CLI)"

    # Someone resumes the queue in the UI during the halt: the reconciler pauses it again, on record.
    set_queue_paused(pool, queue, False)
    code, data = status_json(ledger_url, tmp_path, monkeypatch)
    assert code == 1 and data["open_halts"][0]["prefect"]["not_paused_queues"] == [full]
    again = reconcile(ledger=ledger, scaling_tag=SCALING_TAG, state_path=state)
    assert [q["name"] for q in again.paused_queues] == [full] and queue_state(pool, queue)[1]
    (restored,) = [e for e in ledger.events(kind="halt.reconciled", subject=halt.halt_id)
                   if e.payload.get("paused_queues")]
    assert restored.payload["paused_queues"] == [full]
    code, data = status_json(ledger_url, tmp_path, monkeypatch)
    assert code == 0 and data["open_halts"][0]["prefect"]["agrees"], data["open_halts"]
    assert checkpoints(store, "run-api") == checkpoints(store, "run-cli") == []
    assert len(checkpoints(store, "run-w")) == len(written)


@pytest.mark.integration
def test_worker_restart_keeps_the_halt_the_gate_stops_a_run_and_a_lift_resumes_the_queue(
    worker_deployments: WorkerDeployments, worker_factory: Any, ledger_url: str, tmp_path: Path,
    prefect_server_control: Any,
) -> None:
    wd = worker_deployments
    pool, queue, full = wd.scaling_pool, wd.scaling_queue, wd.scaling_queue_full
    dep_id = wd.ids["train-demo"]
    store, state = tmp_path / "checkpoints", tmp_path / "reconcile.json"
    ledger = Ledger(ledger_url)
    worker = worker_factory(pool=pool, ledger_url=ledger_url)
    worker.wait_ready()
    halt, _ = open_manual_halt("halt across worker restarts", ["training"], ledger=ledger)
    assert apply_halt(halt.halt_id, ledger=ledger, scaling_tag=SCALING_TAG).applied
    assert queue_state(pool, queue)[1] and paused(dep_id)

    # SIGTERM the worker; a run is started while none polls; the worker comes back.
    assert worker.sigterm() is not None
    waiting = _create(dep_id, params("run-restart", store, ledger_url))
    worker.start()
    back = worker.wait_ready()
    # Unlike `serve`, a worker un-pauses nothing: deployment and queue stay paused, the run stays queued.
    wait_for(lambda: polled_since(pool, queue, back + dt.timedelta(seconds=2)), 30, what="the worker to poll")
    assert queue_state(pool, queue)[1] and paused(dep_id)
    assert run_state(waiting) == "SCHEDULED" and checkpoints(store, "run-restart") == []

    # The Prefect server restarts (same database). The pauses are the server's state and survive it. A
    # worker that gave up polling while the server was away is started again, as its supervisor would;
    # either way it polls the restarted server and is handed nothing.
    prefect_server_control.restart()
    if worker.proc is None or worker.proc.poll() is not None:
        worker.start()
    again = dt.datetime.now(dt.UTC)
    wait_for(lambda: polled_since(pool, queue, again + dt.timedelta(seconds=2)), 60,
             what="the worker to poll the restarted server")
    assert queue_state(pool, queue)[1] and paused(dep_id)
    assert run_state(waiting) == "SCHEDULED" and checkpoints(store, "run-restart") == []

    # An operator resumes the queue and the deployment, and no reconcile runs: the worker starts the
    # run, and the gate at the flow's start ends it before its first step, on record.
    set_queue_paused(pool, queue, False)
    with _client() as client:
        client.resume_deployment(UUID(dep_id))
    final = wait_for(lambda: (s := run_state(waiting)) in FINAL and s, 90, what="the gate to end the run")
    assert final == "FAILED" and checkpoints(store, "run-restart") == []
    (blocked,) = [e.payload for e in ledger.events(kind="scaling.run_blocked") if e.payload["flow_run_id"] == waiting]
    assert blocked["halt_id"] == halt.halt_id and blocked["deployment_id"] == dep_id

    fixed = reconcile(ledger=ledger, scaling_tag=SCALING_TAG, state_path=state)
    assert [q["name"] for q in fixed.paused_queues] == [full] and queue_state(pool, queue)[1] and paused(dep_id)

    # Lifted: the next reconcile resumes the queue it paused (recorded) and the worker trains again.
    ledger.append("halt.lifted", halt.halt_id, {"halt_id": halt.halt_id})
    with _client() as client:
        client.resume_deployment(UUID(dep_id))  # what the lift does for deployments (tasks/approvals/lift.py)
    lifted = reconcile(ledger=ledger, scaling_tag=SCALING_TAG, state_path=state)
    assert lifted.resumed_queues == [{"name": full, "halt_id": halt.halt_id}] and not queue_state(pool, queue)[1]
    assert [e.payload.get("resumed_queues") for e in ledger.events(kind="halt.reconciled", subject=halt.halt_id)
            if e.payload.get("resumed_queues")] == [[full]]
    assert reconcile(ledger=ledger, scaling_tag=SCALING_TAG, state_path=state).resumed_queues == []  # once
    after = _create(dep_id, params("run-after", store, ledger_url, steps=2, step_seconds=0))
    assert wait_for(lambda: (s := run_state(after)) in FINAL and s, 90, what="the run after the lift") == "COMPLETED"
    assert [c["step"] for c in checkpoints(store, "run-after")] == [1, 2]


def _client() -> Any:
    from prefect import get_client

    return get_client(sync_client=True)


def _create(dep_id: str, parameters: dict[str, Any]) -> str:
    """A flow run of the deployment, as the UI's Run button makes it (POST /deployments/{id}/create_flow_run)."""
    with _client() as client:
        return str(client.create_flow_run_from_deployment(UUID(dep_id), parameters=parameters).id)
