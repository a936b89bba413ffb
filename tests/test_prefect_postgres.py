"""The production set-up the README describes, end to end: a Prefect server on PostgreSQL
(`PREFECT_API_DATABASE_CONNECTION_URL=postgresql+asyncpg://...`) and the ledger on PostgreSQL
(`postgresql+psycopg://...`), both on the session's real PostgreSQL server.

The key scenarios of tests/test_halt_holds.py, tests/test_enforcement.py and tests/test_resume.py,
run again on it: a halt stops a running served deployment and nothing more is written; a serve
restart (which un-pauses) is undone by the start-up reconcile and a run queued meanwhile is
cancelled; the Prefect UI approval form (flow-run input, stored in Prefect's database) records
votes, the quorum lifts the halt and the resume un-pauses what the halt paused."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from tasks.approvals import try_lift
from tasks.enforcement import apply_halt, open_manual_halt
from tasks.ledger import Ledger
from tests.plugins.prefect_server import PrefectServerProcess, wait_for
from tests.plugins.slack_api import ApprovalWorld
from tests.test_halt_holds import FINAL, checkpoints, create_run, deployment_id, deployment_params, paused, run_state
from tests.test_resume import in_thread

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_ledger_url(postgres_server: Any) -> Any:
    url = postgres_server.new_database("prefect_ledger")
    Ledger(url).close()
    yield url
    postgres_server.drop_database(url)


def test_the_server_under_test_is_on_postgresql(on_prefect_pg: PrefectServerProcess) -> None:
    from prefect import get_client

    assert on_prefect_pg.db_url.startswith("postgresql+asyncpg://")
    with get_client(sync_client=True) as client:
        assert str(client.api_url).rstrip("/") == on_prefect_pg.url  # these tests talk to it, not the SQLite one
    engine_url = on_prefect_pg.db_url.replace("+asyncpg", "+psycopg")
    from sqlalchemy import create_engine, text

    engine = create_engine(engine_url)
    try:
        with engine.connect() as conn:  # Prefect's own tables are there: its migrations ran on PostgreSQL
            assert conn.execute(text("SELECT count(*) FROM deployment")).scalar() is not None
    finally:
        engine.dispose()


def test_halt_and_reconcile_hold_on_postgresql(
    pg_serve_process_factory: Any, pg_ledger_url: str, unique_scaling_tag: str, tmp_path: Path
) -> None:
    from flows.halt import halt as halt_flow

    store, name = tmp_path / "checkpoints", f"pg-{uuid.uuid4().hex[:8]}"
    serve = pg_serve_process_factory(
        deployments=[{"name": name, "parameters": deployment_params("run-pg", store, pg_ledger_url)}],
        scaling_tag=unique_scaling_tag, ledger_url=pg_ledger_url, reconcile_every=600,
    )
    serve.wait_ready()
    dep_id = deployment_id(name)
    assert not paused(dep_id)
    flow_run = create_run(dep_id)
    wait_for(lambda: len(checkpoints(store, "run-pg")) >= 2, 90, what="the served run to write 2 checkpoints")

    # The halt: recorded in the PostgreSQL ledger, the deployment paused, the running run stopped.
    result = halt_flow(reason="pg: obligations unmet", activities=["training"], ledger_url=pg_ledger_url,
                       scaling_tag=unique_scaling_tag)
    ledger = Ledger(pg_ledger_url)
    halt = ledger.halt(result.halt.halt_id)
    assert halt is not None and halt.is_open
    assert result.apply is not None and result.apply.applied, result.apply
    assert [p["id"] for p in result.apply.paused] == [dep_id] and paused(dep_id)
    final = wait_for(lambda: (s := run_state(flow_run)) in FINAL and s, 60, what="the running flow run to stop")
    assert final in ("CANCELLED", "FAILED")
    opened = dt.datetime.fromisoformat(halt.opened_at)
    written = checkpoints(store, "run-pg")
    assert len([c for c in written if c["created"] > opened]) <= 1, "checkpoints written after the gate closed"

    # A serve restart un-pauses; its start-up reconcile pauses again and cancels what was queued.
    assert serve.sigterm() is not None
    waiting = create_run(dep_id)
    serve.start()
    report = serve.wait_ready()
    assert report["changed"] and [p["id"] for p in report["paused"]] == [dep_id], report
    assert paused(dep_id)
    assert "halt.reconciled" in [e.kind for e in ledger.events(subject=halt.halt_id)]
    final = wait_for(lambda: (s := run_state(waiting)) in FINAL and s, 60, what="the queued run to end")
    assert final in ("CANCELLED", "FAILED")
    time.sleep(1.0)  # > 3 step lengths: proving that nothing more is written needs some wait
    assert checkpoints(store, "run-pg") == written
    report_verify = ledger.verify()
    assert report_verify.ok and report_verify.checked == ledger.head()[0]
    ledger.close()


def test_ui_approvals_lift_and_resume_on_postgresql(
    on_prefect_pg: PrefectServerProcess, approval_world: ApprovalWorld, unique_scaling_tag: str
) -> None:
    from prefect.flow_runs import resume_flow_run

    from flows.approval import await_approval
    from flows.train_demo import train_demo

    w = approval_world
    w.trusting({"rso": ["prefect-ui"], "ceo": ["prefect-ui"]})
    name = f"pgres-{uuid.uuid4().hex[:8]}"
    deployment: Any = train_demo.to_deployment(name=name, tags=[unique_scaling_tag, "training"])
    dep_id = str(deployment.apply())
    halt = w.open_halt()
    second, _ = open_manual_halt("a second, unrelated halt", ["deployment"], ledger=w.ledger)
    assert apply_halt(halt.halt_id, ledger=w.ledger, scaling_tag=unique_scaling_tag).applied
    assert paused(dep_id)
    w.attest("sg-base")

    thread, out = in_thread(await_approval, halt.halt_id, timeout_s=120, poll_interval_s=1,
                            scaling_tag=unique_scaling_tag)
    started = wait_for(lambda: w.ledger.events(kind="approval.wait_started", subject=halt.halt_id), 60,
                       what="the approval flow to start")
    run_id = started[0].payload["flow_run_id"]
    wait_for(lambda: run_state(run_id) == "PAUSED", 30, what="the flow run to pause for input")
    resume_flow_run(UUID(run_id), run_input={"approver": "alice", "decision": "approve",
                                              "justification": "sg-base attested by the CISO"})
    wait_for(lambda: w.ledger.events(kind="vote.recorded") and run_state(run_id) == "PAUSED", 30,
             what="alice's vote and the run pausing again")
    assert w.ledger.halt(halt.halt_id).is_open  # one vote is not a quorum
    resume_flow_run(UUID(run_id), run_input={"approver": "bob", "decision": "approve", "justification": "agreed"})
    thread.join(60)
    assert "error" not in out, out.get("error")
    assert out["result"]["outcome"] == "lifted"
    votes = w.ledger.events(kind="vote.recorded", subject=halt.halt_id)
    assert [(v.payload["person"], v.payload["channel"]) for v in votes] == [("alice", "prefect-ui"),
                                                                           ("bob", "prefect-ui")]
    assert not w.ledger.halt(halt.halt_id).is_open and w.ledger.halt(second.halt_id).is_open
    # The lift resumed what this halt paused (the other halt covers deployment, not training).
    wait_for(lambda: not paused(dep_id), 30, what="the deployment to be resumed")
    again = try_lift(halt.halt_id, ledger=w.ledger, scaling_tag=unique_scaling_tag)
    assert again.status == "already_lifted" and again.resumed == []
    wait_for(lambda: run_state(run_id) == "COMPLETED", 30, what="the approval run to complete")
