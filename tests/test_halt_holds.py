"""End to end: a halt really stops scaling, the way an operator would try to break it.

Real `prefect server start` (session fixture), real serve processes running the train-demo
flow as scaling deployments, a real SQLite ledger and checkpoint folder. No mocks of Prefect.
The proof in every test is the checkpoint folder: a halted run writes no checkpoint."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from tasks.enforcement import apply_halt, open_manual_halt, reconcile
from tasks.gate import ScalingGate, ScalingHalted
from tasks.ledger import Ledger
from tests.plugins.prefect_server import PrefectServerProcess, wait_for

pytestmark = pytest.mark.integration
FINAL = {"CANCELLED", "FAILED", "CRASHED", "COMPLETED"}


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    Ledger(url).close()
    return url


def checkpoints(store: Path, run_id: str) -> list[dict[str, Any]]:
    """Complete checkpoints of a run (those with a manifest), oldest step first."""
    found = []
    for manifest in sorted((store / run_id).glob("step-*/checkpoint.json")):
        data = json.loads(manifest.read_text())
        data["created"] = dt.datetime.fromisoformat(data["created_at"])
        found.append(data)
    return found


def deployment_params(run_id: str, store: Path, ledger_url: str, **extra: Any) -> dict[str, Any]:
    return {"run_id": run_id, "steps": 500, "step_seconds": 0.3, "checkpoint_store": str(store),
            "ledger_url": ledger_url, **extra}


def deployment_id(name: str) -> str:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return str(client.read_deployment_by_name(f"train-demo/{name}").id)


def create_run(dep_id: str) -> str:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return str(client.create_flow_run_from_deployment(UUID(dep_id)).id)


def run_state(flow_run_id: str) -> str:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(UUID(flow_run_id)).state
        return state.type.value if state else "UNKNOWN"


def paused(dep_id: str) -> bool:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return bool(client.read_deployment(UUID(dep_id)).paused)


def test_halt_stops_a_running_training_deployment(
    serve_process_factory: Any, ledger_url: str, unique_scaling_tag: str, tmp_path: Path
) -> None:
    from flows.halt import halt as halt_flow

    store, name = tmp_path / "checkpoints", f"e2e-{uuid.uuid4().hex[:8]}"
    serve = serve_process_factory(
        deployments=[{"name": name, "parameters": deployment_params("run-e2e", store, ledger_url)}],
        scaling_tag=unique_scaling_tag, ledger_url=ledger_url,
    )
    serve.wait_ready()
    dep_id = deployment_id(name)
    assert not paused(dep_id)
    flow_run = create_run(dep_id)
    wait_for(lambda: len(checkpoints(store, "run-e2e")) >= 2, 90, what="the served run to write 2 checkpoints")

    result = halt_flow(reason="e2e: obligations unmet", activities=["training"], ledger_url=ledger_url,
                       scaling_tag=unique_scaling_tag)

    ledger = Ledger(ledger_url)
    halt = ledger.halt(result.halt.halt_id)
    assert halt is not None and halt.is_open
    report = result.apply
    assert report is not None
    assert report.applied, report.error
    assert [p["id"] for p in report.paused] == [dep_id] and paused(dep_id)
    # Either apply cancelled the run, or the gate had already ended it at its next step.
    cancelled = flow_run in [c["id"] for c in report.cancelled]
    final = wait_for(lambda: (s := run_state(flow_run)) in FINAL and s, 60, what="the running flow run to stop")
    assert final in ("CANCELLED", "FAILED"), (final, cancelled)
    opened = dt.datetime.fromisoformat(halt.opened_at)
    written = checkpoints(store, "run-e2e")
    after_halt = [c["step"] for c in written if c["created"] > opened]
    assert len(after_halt) <= 1, f"checkpoints written after the gate closed: {after_halt}"
    time.sleep(1.0)  # > 3 step lengths: proving that nothing more is written needs some wait
    assert len(checkpoints(store, "run-e2e")) == len(written)


def test_gate_alone_stops_a_running_flow_when_prefect_was_never_told(
    serve_process_factory: Any, ledger_url: str, unique_scaling_tag: str, tmp_path: Path
) -> None:
    store, name = tmp_path / "checkpoints", f"gate-{uuid.uuid4().hex[:8]}"
    serve = serve_process_factory(
        deployments=[{"name": name, "parameters": deployment_params("run-gate", store, ledger_url)}],
        scaling_tag=unique_scaling_tag, ledger_url=ledger_url, reconcile_every=600,
    )
    serve.wait_ready()
    dep_id = deployment_id(name)
    flow_run = create_run(dep_id)
    wait_for(lambda: len(checkpoints(store, "run-gate")) >= 2, 90, what="the served run to write 2 checkpoints")

    # Record only: no pause, no cancel, as when Prefect is down at decision time.
    halt, _ = open_manual_halt("ledger only", ["training"], ledger=Ledger(ledger_url))

    final = wait_for(lambda: (s := run_state(flow_run)) in FINAL and s, 60, what="the gate to stop the run")
    assert final == "FAILED"
    assert not paused(dep_id)  # Prefect was never told, yet the run stopped
    opened = dt.datetime.fromisoformat(halt.opened_at)
    assert len([c for c in checkpoints(store, "run-gate") if c["created"] > opened]) <= 1


def test_manual_and_direct_runs_while_halted_write_nothing_and_are_named(
    serve_process_factory: Any, ledger_url: str, unique_scaling_tag: str, tmp_path: Path
) -> None:
    from flows.train_demo import train_demo

    store, name = tmp_path / "checkpoints", f"manual-{uuid.uuid4().hex[:8]}"
    # The reconcile loop is slowed down so the gate, not a reconcile, is what meets the run.
    serve = serve_process_factory(
        deployments=[{"name": name, "parameters": deployment_params("run-manual", store, ledger_url)}],
        scaling_tag=unique_scaling_tag, ledger_url=ledger_url, reconcile_every=600,
    )
    serve.wait_ready()
    dep_id = deployment_id(name)
    ledger = Ledger(ledger_url)
    halt, _ = open_manual_halt("halted before the run", ["training"], ledger=ledger)
    assert apply_halt(halt.halt_id, ledger=ledger, scaling_tag=unique_scaling_tag).applied
    assert paused(dep_id)

    # Pausing is not a halt: a run started by hand on a paused deployment still starts...
    flow_run = create_run(dep_id)
    final = wait_for(lambda: (s := run_state(flow_run)) in FINAL and s, 90, what="the manual run to end")
    # ...and the gate ends it before its first step.
    assert final == "FAILED"
    assert checkpoints(store, "run-manual") == []
    blocked = [e.payload for e in ledger.events(kind="scaling.run_blocked")]
    (event,) = [b for b in blocked if b["flow_run_id"] == flow_run]
    assert event["halt_id"] == halt.halt_id and event["deployment_id"] == dep_id
    assert event["started_by"] == "deployment run started by hand (UI, API or CLI)"

    # Calling the flow function directly goes through the same gate.
    with pytest.raises(ScalingHalted, match=halt.halt_id):
        train_demo(run_id="run-direct", steps=3, step_seconds=0, checkpoint_store=str(store), ledger_url=ledger_url)
    assert checkpoints(store, "run-direct") == []
    direct = [e.payload for e in ledger.events(kind="scaling.run_blocked") if e.payload["run_id"] == "run-direct"]
    assert len(direct) == 1 and direct[0]["deployment_id"] is None
    assert direct[0]["started_by"] == "direct call of the flow function"

    # A lifted halt opens the gate again.
    ledger.append("halt.lifted", halt.halt_id, {"halt_id": halt.halt_id})
    out = train_demo(run_id="run-direct", steps=2, step_seconds=0, checkpoint_store=str(store), ledger_url=ledger_url)
    assert len(out["written"]) == 2 and len(checkpoints(store, "run-direct")) == 2


def test_serve_restart_does_not_undo_a_halt(
    serve_process_factory: Any, ledger_url: str, unique_scaling_tag: str, tmp_path: Path
) -> None:
    store, name = tmp_path / "checkpoints", f"restart-{uuid.uuid4().hex[:8]}"
    serve = serve_process_factory(
        deployments=[{"name": name, "parameters": deployment_params("run-restart", store, ledger_url)}],
        scaling_tag=unique_scaling_tag, ledger_url=ledger_url, reconcile_every=600,
    )
    serve.wait_ready()
    dep_id = deployment_id(name)
    ledger = Ledger(ledger_url)
    halt, _ = open_manual_halt("halt across restarts", ["training"], ledger=ledger)
    assert apply_halt(halt.halt_id, ledger=ledger, scaling_tag=unique_scaling_tag).applied

    assert serve.sigterm() is not None
    waiting = create_run(dep_id)  # queued while nothing serves it
    serve.start()
    report = serve.wait_ready()

    # `serve` re-registered (un-paused) the deployment; its start-up reconcile paused it again.
    assert report["changed"] and [p["id"] for p in report["paused"]] == [dep_id], report
    assert paused(dep_id)
    assert "halt.reconciled" in [e.kind for e in ledger.events(subject=halt.halt_id)]
    final = wait_for(lambda: (s := run_state(waiting)) in FINAL and s, 60, what="the queued run to end")
    assert final in ("CANCELLED", "FAILED")
    assert checkpoints(store, "run-restart") == []
    assert paused(dep_id)  # still paused once the runner has been polling for a while


def test_prefect_server_restart_keeps_the_halt_in_force(
    prefect_server_control: PrefectServerProcess, ledger_url: str, unique_scaling_tag: str, tmp_path: Path
) -> None:
    from flows.train_demo import scaling_deployment

    ledger = Ledger(ledger_url)
    name = f"srv-{uuid.uuid4().hex[:8]}"
    dep_id = str(scaling_deployment(name, scaling_tag=unique_scaling_tag).apply())
    first, _ = open_manual_halt("deployment only", ["deployment"], ledger=ledger)
    assert apply_halt(first.halt_id, ledger=ledger, scaling_tag=unique_scaling_tag).applied
    assert not paused(dep_id)  # a deployment halt does not touch a training deployment
    state = tmp_path / "reconcile.json"
    gate = ScalingGate(ledger_url)

    prefect_server_control.stop()
    try:
        second, _ = open_manual_halt("decided while Prefect was down", ["training"], ledger=ledger)
        failed = apply_halt(second.halt_id, ledger=ledger, scaling_tag=unique_scaling_tag, backoff_s=0.05)
        assert not failed.applied and failed.event == "halt.apply_failed"
        assert not gate.is_open("any-run")  # the ledger holds it; Prefect's absence changes nothing
        down = reconcile(ledger=ledger, scaling_tag=unique_scaling_tag, state_path=state, backoff_s=0.05)
        assert not down.ok
    finally:
        prefect_server_control.start()

    back = reconcile(ledger=ledger, scaling_tag=unique_scaling_tag, state_path=state)
    assert back.ok and [p["id"] for p in back.paused] == [dep_id]
    assert paused(dep_id)
    assert {h.halt_id for h in ledger.halts("open")} == {first.halt_id, second.halt_id}
    assert not gate.is_open("any-run") and not gate.is_open("any-run", "deployment")
    head = ledger.head()
    again = reconcile(ledger=ledger, scaling_tag=unique_scaling_tag, state_path=state)
    assert again.ok and not again.changed and ledger.head() == head
