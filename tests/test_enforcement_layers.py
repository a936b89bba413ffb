"""Every attempt on record, every layer restored (issue 13, finding 7), against a REAL Prefect server.

- A run of a halted scaling deployment, however it was stopped (the halt-guard automation
  before it started, an apply, a reconcile; the gate at flow start records its own), is
  recorded once in the ledger with who or what started it, as Prefect reports it.
- A halt-guard automation that was installed comes back when it is deleted, disabled or
  edited: `rsp halt reconcile` (and every reconcile pass) puts it back and records that it did.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from typer.testing import CliRunner

from tasks.enforcement import apply_halt, automation_name, ensure_halt_automation, open_manual_halt, reconcile
from tasks.ledger import Ledger
from tasks.ledger.events import HaltGuardInstalled, HaltGuardRestored, ScalingRunBlocked, ScalingRunCancelled
from tests.plugins.prefect_server import wait_for

BY_HAND = "deployment run started by hand (UI, API or CLI)"


@pytest.fixture
def ledger(tmp_path: Path, rsp_home: Path) -> Ledger:
    return Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")


def register(name: str, tags: list[str]) -> str:
    from flows.train_demo import train_demo

    deployment: Any = train_demo.to_deployment(name=name, tags=tags, parameters={"run_id": f"run-{name}"})
    return str(deployment.apply())


def client() -> Any:
    from prefect import get_client

    return get_client(sync_client=True)


def create_run(dep_id: str, *, later_minutes: int | None = None) -> str:
    import datetime as dt

    from prefect.states import Scheduled

    with client() as c:
        if later_minutes is None:
            return str(c.create_flow_run_from_deployment(UUID(dep_id)).id)
        when = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=later_minutes)
        return str(c.create_flow_run_from_deployment(UUID(dep_id), state=Scheduled(scheduled_time=when)).id)


def run_state(flow_run_id: str) -> str:
    with client() as c:
        state = c.read_flow_run(UUID(flow_run_id)).state
        return state.type.value if state else "UNKNOWN"


def cancelled_records(ledger: Ledger) -> dict[str, dict[str, Any]]:
    return {e.subject: e.payload for e in ledger.events(kind=ScalingRunCancelled.KIND)}


def guard(tag: str) -> Any:
    with client() as c:
        found = c.read_automations_by_name(automation_name(tag))
    assert len(found) <= 1
    return found[0] if found else None


# -- every attempt on record ----------------------------------------------------------------------


@pytest.mark.integration
def test_a_run_the_automation_cancelled_is_recorded_once_with_who_started_it(
    prefect_server: str, ledger: Ledger, unique_scaling_tag: str, tmp_path: Path
) -> None:
    from tasks.enforcement.prefect_api import automation_targets, prefect_client

    tag = unique_scaling_tag
    dep_id = register(f"attempt-{uuid.uuid4().hex[:8]}", [tag])
    assert ensure_halt_automation(ledger=ledger, scaling_tag=tag)["change"] == "created"
    halt, _ = open_manual_halt("attempts on record", ["training"], ledger=ledger)
    assert apply_halt(halt.halt_id, ledger=ledger, scaling_tag=tag).applied
    auto = guard(tag)
    assert auto.enabled

    # Someone starts the paused deployment by hand: nothing serves it; the automation cancels it
    # before it starts, which leaves a plain Cancelled state and nothing in the ledger by itself.
    attempt = create_run(dep_id)
    wait_for(lambda: run_state(attempt) == "CANCELLED", 60, what="the automation to cancel the run")
    import datetime as dt

    since = dt.datetime.fromisoformat(halt.opened_at)
    with prefect_client(prefect_server) as c:  # Prefect's event log says the automation did it (lands async)
        wait_for(lambda: attempt in automation_targets(c, str(auto.id), since), 60,
                 what="the automation's action event")
    assert cancelled_records(ledger) == {}

    state = tmp_path / "reconcile.json"
    report = reconcile(ledger=ledger, scaling_tag=tag, state_path=state)
    assert report.ok and report.runs_recorded == [attempt], report
    assert ScalingRunCancelled.KIND in report.events
    assert "1 stopped run(s) of halted deployments recorded" in report.summary()
    record = cancelled_records(ledger)[attempt]
    assert record["halt_id"] == halt.halt_id and record["halts"] == [halt.halt_id]
    assert record["stopped_by"] == "halt-guard automation" and record["automation_id"] == str(auto.id)
    assert record["started_by"] == BY_HAND and record["created_by"] is None and record["auto_scheduled"] is False
    assert record["deployment_id"] == dep_id and record["deployment"].startswith("train-demo/")
    assert record["flow_run_id"] == attempt and record["state"] == "CANCELLED" and record["run_id"]

    # Once: later passes (every watch tick) write nothing more.
    head = ledger.head()
    again = reconcile(ledger=ledger, scaling_tag=tag, state_path=state)
    assert again.ok and again.runs_recorded == [] and again.events == [] and ledger.head() == head

    # And a halt lifted between two passes does not hide what was tried under it.
    late = create_run(dep_id)
    wait_for(lambda: run_state(late) == "CANCELLED", 60, what="the automation to cancel the second run")
    ledger.append("halt.lifted", halt.halt_id, {"halt_id": halt.halt_id})
    after_lift = reconcile(ledger=ledger, scaling_tag=tag, state_path=state)
    assert after_lift.runs_recorded == [late], after_lift
    assert cancelled_records(ledger)[late]["halt_id"] == halt.halt_id
    assert not guard(tag).enabled  # and the automation is off again


@pytest.mark.integration
def test_runs_cancelled_by_apply_and_by_reconcile_are_recorded_once_and_gate_records_are_not_repeated(
    prefect_server: str, ledger: Ledger, unique_scaling_tag: str, tmp_path: Path
) -> None:
    from tasks.enforcement.prefect_api import cancel_flow_run, prefect_client

    tag = unique_scaling_tag
    dep_id = register(f"own-{uuid.uuid4().hex[:8]}", [tag])
    queued = create_run(dep_id, later_minutes=30)
    halt, _ = open_manual_halt("cancel on record", ["training"], ledger=ledger)

    applied = apply_halt(halt.halt_id, ledger=ledger, scaling_tag=tag)
    assert applied.applied and [c["id"] for c in applied.cancelled] == [queued]
    assert applied.runs_recorded == [queued]
    by_apply = cancelled_records(ledger)[queued]
    assert by_apply["stopped_by"] == "apply" and by_apply["started_by"] == BY_HAND
    assert by_apply["halt_id"] == halt.halt_id and by_apply["deployment_id"] == dep_id

    # A run the gate refused at start (recorded as scaling.run_blocked, as guard_flow_start writes
    # it) and then found cancelled is not recorded a second time.
    blocked = create_run(dep_id, later_minutes=30)
    ledger.record(ScalingRunBlocked(halt_id=halt.halt_id, run_id="run-x", activity="training",
                                    started_by=BY_HAND, flow_run_id=blocked, deployment_id=dep_id), halt.halt_id)
    with prefect_client(prefect_server) as c:
        cancel_flow_run(c, blocked, "cancelled by hand")
    # Drift: the deployment resumed and a run queued behind the ledger's back.
    with client() as c:
        c.resume_deployment(UUID(dep_id))
    drift = create_run(dep_id, later_minutes=30)

    state = tmp_path / "reconcile.json"
    report = reconcile(ledger=ledger, scaling_tag=tag, state_path=state)
    assert report.ok and report.changed and [c["id"] for c in report.cancelled] == [drift]
    assert report.runs_recorded == [drift], report
    records = cancelled_records(ledger)
    assert set(records) == {queued, drift}  # `blocked` stays recorded once, as scaling.run_blocked
    assert records[drift]["stopped_by"] == "reconcile"
    assert [e.payload["flow_run_id"] for e in ledger.events(kind=ScalingRunBlocked.KIND)] == [blocked]

    head = ledger.head()
    assert reconcile(ledger=ledger, scaling_tag=tag, state_path=state).runs_recorded == []
    assert ledger.head() == head


def test_the_gate_does_not_record_a_flow_run_already_on_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tasks.gate as gate_module
    from tasks.gate import ScalingGate, ScalingHalted, guard_flow_start

    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    halt, _ = open_manual_halt("race", ["training"], ledger=ledger)
    origin = {"started_by": BY_HAND, "flow_run_id": "fr-race", "flow_run_name": "n", "deployment_id": "d",
              "auto_scheduled": False, "created_by": None, "tags": []}
    monkeypatch.setattr(gate_module, "flow_run_origin", lambda: dict(origin))
    # A reconcile recorded the run as cancelled while it was starting; its gate then refuses it.
    ledger.record(ScalingRunCancelled(halt_id=halt.halt_id, flow_run_id="fr-race", stopped_by="reconcile"), "fr-race")
    with pytest.raises(ScalingHalted, match=halt.halt_id):
        guard_flow_start("run-a", gate=ScalingGate(ledger=ledger))
    assert ledger.events(kind=ScalingRunBlocked.KIND) == []
    # Any other run is recorded by the gate as before.
    origin["flow_run_id"] = "fr-other"
    with pytest.raises(ScalingHalted):
        guard_flow_start("run-a", gate=ScalingGate(ledger=ledger))
    assert [e.payload["flow_run_id"] for e in ledger.events(kind=ScalingRunBlocked.KIND)] == ["fr-other"]


# -- every layer restored ---------------------------------------------------------------------------


@pytest.mark.integration
def test_a_deleted_disabled_or_edited_halt_guard_is_restored_and_recorded(
    prefect_server: str, ledger: Ledger, unique_scaling_tag: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.events.actions import DoNothing

    from rsp.cli import app
    from tasks.enforcement.automation import desired_automation
    from tasks.settings import get_settings

    tag = unique_scaling_tag
    dep_id = register(f"guard-{uuid.uuid4().hex[:8]}", [tag])
    installed = ensure_halt_automation(ledger=ledger, scaling_tag=tag)
    assert installed["change"] == "created" and installed["state"]["present"]
    assert [e.subject for e in ledger.events(kind=HaltGuardInstalled.KIND)] == [automation_name(tag)]
    halt, _ = open_manual_halt("guard", ["training"], ledger=ledger)
    state = tmp_path / "reconcile.json"
    first = reconcile(ledger=ledger, scaling_tag=tag, state_path=state)
    assert first.automation == "updated" and not first.automation_state["restored"]  # type: ignore[index]
    assert guard(tag).enabled

    # Deleted in Prefect: `rsp halt reconcile` recreates it and says so.
    with client() as c:
        c.delete_automation(guard(tag).id)
    monkeypatch.setenv("RSP_SCALING_TAG", tag)
    monkeypatch.setenv("RSP_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        out = runner.invoke(app, ["halt", "reconcile", "--ledger", ledger.url])
        assert out.exit_code == 0, out.output
        assert "nothing changed" not in out.output
        assert "halt-guard automation RESTORED (was missing: created)" in out.output
        status = runner.invoke(app, ["status", "--json", "--ledger", ledger.url])
        shown = json.loads(status.output)["reconcile"]["automation"]
        assert shown["present"] and shown["enabled"] and shown["restored"] and shown["deployments"] == [dep_id]
    finally:
        get_settings.cache_clear()
    auto = guard(tag)
    assert auto is not None and auto.enabled
    (restored,) = ledger.events(kind=HaltGuardRestored.KIND)
    assert restored.subject == automation_name(tag)
    assert (restored.payload["found"], restored.payload["change"]) == ("missing", "created")
    assert restored.payload["halts"] == [halt.halt_id] and restored.payload["deployments"] == [dep_id]

    # Disabled in Prefect while the halt is open: re-enabled.
    with client() as c:
        c.pause_automation(auto.id)
    assert not guard(tag).enabled
    back = reconcile(ledger=ledger, scaling_tag=tag, state_path=state)
    assert back.changed and back.automation == "enabled" and guard(tag).enabled
    assert "nothing changed" not in back.summary() and "RESTORED (was disabled" in back.summary()

    # Its action switched to "do nothing": put back.
    edited = desired_automation(tag, [dep_id]).model_copy(update={"actions": [DoNothing(type="do-nothing")]})
    with client() as c:
        c.update_automation(guard(tag).id, edited)
    assert [a.type for a in guard(tag).actions] == ["do-nothing"]
    fixed = reconcile(ledger=ledger, scaling_tag=tag, state_path=state)
    assert fixed.automation == "updated" and [a.type for a in guard(tag).actions] == ["cancel-flow-run"]
    found = [(e.payload["found"], e.payload["change"]) for e in ledger.events(kind=HaltGuardRestored.KIND)]
    assert found == [("missing", "created"), ("disabled", "enabled"), ("edited", "updated")]

    # In line again: nothing is written.
    head = ledger.head()
    quiet = reconcile(ledger=ledger, scaling_tag=tag, state_path=state)
    assert not quiet.changed and quiet.events == [] and ledger.head() == head
    assert "halt-guard automation enabled for 1 deployment(s)" in quiet.summary()

    # Deleted while no halt is open: recreated (off), so the next halt has it at once.
    ledger.append("halt.lifted", halt.halt_id, {"halt_id": halt.halt_id})
    reconcile(ledger=ledger, scaling_tag=tag, state_path=state)
    with client() as c:
        c.delete_automation(guard(tag).id)
    idle = reconcile(ledger=ledger, scaling_tag=tag, state_path=state)
    assert idle.automation == "created" and guard(tag) is not None and not guard(tag).enabled


@pytest.mark.integration
def test_a_halt_guard_never_installed_is_not_created_by_reconcile(
    prefect_server: str, ledger: Ledger, unique_scaling_tag: str, tmp_path: Path
) -> None:
    register(f"noguard-{uuid.uuid4().hex[:8]}", [unique_scaling_tag])
    open_manual_halt("no guard here", ["training"], ledger=ledger)
    report = reconcile(ledger=ledger, scaling_tag=unique_scaling_tag, state_path=tmp_path / "r.json")
    assert report.ok and report.automation == "absent"
    assert report.automation_state is not None and report.automation_state["installed"] is False
    assert guard(unique_scaling_tag) is None
    assert ledger.events(kind=HaltGuardRestored.KIND) == [] and ledger.events(kind=HaltGuardInstalled.KIND) == []
