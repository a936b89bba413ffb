"""Halt records, idempotent opening, and enforcement against a REAL Prefect server (no mocks).

Deployments here are registered with `RunnerDeployment.apply()` (no serve process needed to
pause them or cancel their scheduled runs); tests/test_halt_holds.py covers served runs."""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from typer.testing import CliRunner

from policy.determination import (
    CheckpointRef,
    Determination,
    PolicyRef,
    QualityVerdict,
    SafeguardCheck,
    SafeguardRequirement,
)
from policy.halts import HaltScope, scope_of
from tasks.enforcement import apply_halt, open_halt, open_manual_halt, reconcile
from tasks.enforcement.enforce import plan
from tasks.enforcement.prefect_api import FlowRunInfo, ScalingDeployment, activities_of
from tasks.ledger import Ledger
from tests.plugins.prefect_server import closed_port_url, wait_for

POLICY_SHA = "a" * 64


def determination(
    run_id: str = "run-a",
    step: int = 100,
    unmet: tuple[str, ...] = ("asl3-security-controls",),
    halts: tuple[str, ...] = ("training", "deployment"),
    level: str = "ASL-3",
    sha: str = POLICY_SHA,
) -> Determination:
    reqs = tuple(
        SafeguardRequirement(id=s, name=s, kind="security", halts=halts, required_by=(level,))  # type: ignore[arg-type]
        for s in (*unmet, "asl3-safeguards-report")
    )
    checks = tuple(SafeguardCheck(id=s, state="unmet", evidence="none") for s in unmet) + (
        SafeguardCheck(id="asl3-safeguards-report", state="met", evidence="attested"),
    )
    return Determination(
        policy=PolicyRef(id="anthropic-rsp", name="RSP", version="2.2", sha256=sha),
        checkpoint=CheckpointRef(run_id=run_id, step=step, effective_compute=1e24),
        benchmarks=(), thresholds=(), required_level=level, required_level_rank=1, level_reasons=("test",),
        required_safeguards=reqs, quality=QualityVerdict(status="passed"), safeguards=checks,
        obligations_met=False, decision="halt", halts=halts,  # type: ignore[arg-type]
        decision_reasons=tuple(f"{s} is unmet" for s in unmet),
    )


@pytest.fixture
def ledger(tmp_path: Path, rsp_home: Path) -> Ledger:
    # rsp_home isolates everything else a halt touches (notification outbox and file, reconcile state).
    return Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")


def lift(ledger: Ledger, halt_id: str) -> None:
    ledger.append("halt.lifted", halt_id, {"halt_id": halt_id})


# -- halt records and idempotency (ledger only) -------------------------------------------------------------


def test_halt_record_says_what_why_and_what_lifts_it(ledger: Ledger) -> None:
    from policy.identity import policy_sha256
    from tasks.inputs import read_policy

    policy = read_policy("anthropic-rsp")
    det = determination(sha=policy_sha256(policy))
    halt, created = open_halt(det, ledger=ledger, seq=7, subject="det-run-a-100", policy=policy)
    assert created and halt.is_open
    p = halt.payload
    assert p["what"] == {"activities": ["training", "deployment"], "runs": ["*"]}
    assert p["why"]["determination"]["seq"] == 7
    assert p["why"]["determination"]["required_level"] == "ASL-3"
    assert p["why"]["reasons"] == ["asl3-security-controls is unmet"]
    assert p["lifts_when"]["safeguards"] == ["asl3-security-controls"]  # the met one is not listed
    assert p["lifts_when"]["approvals"] == {
        "roles": ["responsible_scaling_officer", "ceo"], "quorum": 2, "must_include": ["responsible_scaling_officer"]
    }
    assert halt.cause_key and halt.cause_key.startswith("det:")


def test_approvals_from_another_policy_version_are_not_recorded(ledger: Ledger) -> None:
    from tasks.inputs import read_policy

    halt, _ = open_halt(determination(sha="b" * 64), ledger=ledger, policy=read_policy("anthropic-rsp"))
    assert halt.payload["lifts_when"]["approvals"] is None
    assert halt.payload["lifts_when"]["policy_sha256"] == "b" * 64


def test_same_cause_opens_one_halt(ledger: Ledger) -> None:
    first, created = open_halt(determination(step=100), ledger=ledger)
    again, created_again = open_halt(determination(step=100), ledger=ledger)
    later_ckpt, created_later = open_halt(determination(step=200), ledger=ledger)
    assert created and not created_again and not created_later
    assert again.halt_id == first.halt_id == later_ckpt.halt_id
    assert len(ledger.events(kind="halt.opened")) == 1


def test_different_unmet_safeguards_are_a_different_cause(ledger: Ledger) -> None:
    a, _ = open_halt(determination(unmet=("asl3-security-controls",)), ledger=ledger)
    b, created = open_halt(determination(unmet=("asl3-security-audit",)), ledger=ledger)
    assert created and a.halt_id != b.halt_id


def test_cause_returning_after_lift_opens_a_new_halt_but_a_replay_does_not(ledger: Ledger) -> None:
    first, _ = open_halt(determination(step=100), ledger=ledger, seq=10)
    lift(ledger, first.halt_id)
    replay, created = open_halt(determination(step=100), ledger=ledger, seq=10)
    assert not created and replay.halt_id == first.halt_id and not replay.is_open
    second, created = open_halt(determination(step=300), ledger=ledger, seq=20)
    assert created and second.is_open and second.halt_id != first.halt_id


def test_racing_processes_open_one_halt(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'race.db'}"
    Ledger(url).close()
    results: list[tuple[str, bool]] = []
    barrier = threading.Barrier(4)

    def racer() -> None:
        with Ledger(url) as own:  # each its own engine, as separate processes would have
            barrier.wait()
            halt, created = open_halt(determination(), ledger=own)
            results.append((halt.halt_id, created))

    threads = [threading.Thread(target=racer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({h for h, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert len(Ledger(url).events(kind="halt.opened")) == 1


def test_proceed_determination_opens_nothing(ledger: Ledger) -> None:
    det = determination().model_copy(update={"decision": "proceed", "halts": (), "obligations_met": True})
    with pytest.raises(ValueError, match="nothing to halt"):
        open_halt(det, ledger=ledger)
    assert ledger.events() == []


def test_halt_without_activities_fails_closed_to_both(ledger: Ledger) -> None:
    det = determination().model_copy(update={"halts": ()})
    halt, _ = open_halt(det, ledger=ledger)
    assert scope_of(halt.payload).activities == ("training", "deployment")


# -- planning (pure) -----------------------------------------------------------------------------------------


def dep(name: str, tags: tuple[str, ...], paused: bool = False, run_id: str | None = None) -> ScalingDeployment:
    return ScalingDeployment(id=name, name=name, flow_id="f", tags=tags, paused=paused,
                             activities=activities_of(tags), default_run_id=run_id)


def run(rid: str, deployment: str, state: str = "RUNNING", run_id: str | None = None) -> FlowRunInfo:
    return FlowRunInfo(id=rid, name=rid, deployment_id=deployment, state_type=state, state_name=state, run_id=run_id)


def test_plan_pauses_by_activity_and_untagged_scaling_counts_as_training() -> None:
    from tasks.enforcement.enforce import HaltTarget

    deps = [dep("train", ("scaling",)), dep("serve-model", ("scaling", "deployment")),
            dep("both", ("scaling", "training", "deployment"), paused=True)]
    runs = [run("r1", "train"), run("r2", "serve-model", "SCHEDULED"), run("r3", "train", "CANCELLING"),
            run("r4", "train", "COMPLETED")]
    training_halt = [HaltTarget("h1", HaltScope(activities=("training",)))]
    p = plan(deps, runs, training_halt)
    assert [d.name for d in p.to_pause] == ["train"]  # "both" is already paused
    assert [r.id for r, _ in p.to_cancel] == ["r1"]
    assert [r.id for r, _ in p.cancelling] == ["r3"]
    assert not p.agrees
    deploy_halt = [HaltTarget("h2", HaltScope(activities=("deployment",)))]
    assert [d.name for d in plan(deps, runs, deploy_halt).to_pause] == ["serve-model"]


def test_plan_for_run_scoped_halt_cancels_only_that_runs_flow_runs() -> None:
    from tasks.enforcement.enforce import HaltTarget

    deps = [dep("shared", ("scaling",)), dep("b-only", ("scaling",), run_id="run-b")]
    runs = [run("x", "shared", run_id="run-a"), run("y", "shared", run_id="run-b"), run("z", "b-only")]
    p = plan(deps, runs, [HaltTarget("h", HaltScope(activities=("training",), runs=("run-b",)))])
    assert [d.name for d in p.to_pause] == ["b-only"]
    assert sorted(r.id for r, _ in p.to_cancel) == ["y", "z"]


def test_plan_agrees_when_nothing_to_do() -> None:
    from tasks.enforcement.enforce import HaltTarget

    p = plan([dep("t", ("scaling",), paused=True)], [run("c", "t", "CANCELLED")],
             [HaltTarget("h", HaltScope(activities=("training",)))])
    assert p.agrees


# -- against a real Prefect server -------------------------------------------------------------------------


def register(name: str, tags: list[str], parameters: dict[str, Any] | None = None) -> str:
    from flows.train_demo import train_demo

    deployment: Any = train_demo.to_deployment(name=name, tags=tags, parameters=parameters or {})
    return str(deployment.apply())


def scheduled_run(deployment_id: str, minutes: int = 30) -> str:
    from prefect import get_client
    from prefect.states import Scheduled

    with get_client(sync_client=True) as client:
        later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes)
        return str(client.create_flow_run_from_deployment(UUID(deployment_id), state=Scheduled(scheduled_time=later)).id)


def run_state(flow_run_id: str) -> str:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(UUID(flow_run_id)).state
        return state.type.value if state else "UNKNOWN"


def deployment_paused(deployment_id: str) -> bool:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return bool(client.read_deployment(UUID(deployment_id)).paused)


def resume(deployment_id: str) -> None:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        client.resume_deployment(UUID(deployment_id))


@pytest.mark.integration
def test_apply_pauses_tagged_and_named_deployments_and_cancels_their_runs(
    prefect_server: str, ledger: Ledger, unique_scaling_tag: str
) -> None:
    tag = unique_scaling_tag
    suffix = uuid.uuid4().hex[:8]
    tagged = register(f"tagged-{suffix}", [tag])
    deploy_only = register(f"deploy-{suffix}", [tag, "deployment"])
    named = register(f"named-{suffix}", ["other"])
    unrelated = register(f"unrelated-{suffix}", ["other"])
    runs = {d: scheduled_run(d) for d in (tagged, deploy_only, named, unrelated)}
    halt, _ = open_manual_halt("test", ["training"], ledger=ledger)

    report = apply_halt(halt.halt_id, ledger=ledger, scaling_tag=tag, names=[f"train-demo/named-{suffix}"])

    assert report.applied, report.error
    assert report.gate_closed
    assert {p["id"] for p in report.paused} == {tagged, named}
    assert deployment_paused(tagged) and deployment_paused(named)
    assert not deployment_paused(deploy_only) and not deployment_paused(unrelated)
    # A pause deletes only auto-scheduled runs; this hand-made one must be cancelled explicitly.
    wait_for(lambda: run_state(runs[tagged]) == "CANCELLED", 15, what="scheduled run cancelled")
    wait_for(lambda: run_state(runs[named]) == "CANCELLED", 15, what="scheduled run cancelled")
    assert run_state(runs[deploy_only]) == "SCHEDULED"
    assert run_state(runs[unrelated]) == "SCHEDULED"
    assert [e.kind for e in ledger.events(subject=halt.halt_id)] == ["halt.opened", "halt.applied"]


@pytest.mark.integration
def test_applying_twice_is_one_halt_and_one_application(
    prefect_server: str, ledger: Ledger, unique_scaling_tag: str
) -> None:
    dep_id = register(f"twice-{uuid.uuid4().hex[:8]}", [unique_scaling_tag])
    first, created = open_halt(determination(), ledger=ledger)
    second, created_again = open_halt(determination(step=999), ledger=ledger)
    r1 = apply_halt(first.halt_id, ledger=ledger, scaling_tag=unique_scaling_tag)
    r2 = apply_halt(second.halt_id, ledger=ledger, scaling_tag=unique_scaling_tag)
    assert created and not created_again and first.halt_id == second.halt_id
    assert r1.applied and r2.applied
    assert [p["id"] for p in r1.paused] == [dep_id] and r2.paused == []
    assert r2.event is None  # Prefect already agreed: nothing new to record
    assert [e.kind for e in ledger.events()] == ["halt.opened", "halt.applied"]


@pytest.mark.integration
def test_server_down_during_apply_is_retried_then_reported_not_applied(
    prefect_server: str, ledger: Ledger, unique_scaling_tag: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dep_id = register(f"down-{uuid.uuid4().hex[:8]}", [unique_scaling_tag])
    halt, _ = open_manual_halt("test", ["training"], ledger=ledger)
    down = closed_port_url()

    report = apply_halt(halt.halt_id, ledger=ledger, api_url=down, scaling_tag=unique_scaling_tag, backoff_s=0.05)

    assert not report.applied and report.attempts == 3
    assert "ConnectError" in (report.error or "")
    assert report.gate_closed  # the halt is in force regardless
    events = ledger.events(subject=halt.halt_id)
    assert [e.kind for e in events] == ["halt.opened", "halt.apply_failed"]
    assert events[-1].payload["attempts"] == 3
    assert not deployment_paused(dep_id)

    # rsp status says so, and shows the drift once Prefect is reachable again.
    from rsp.cli import app

    monkeypatch.setenv("RSP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RSP_SCALING_TAG", unique_scaling_tag)
    from tasks.settings import get_settings

    get_settings.cache_clear()
    try:
        runner = CliRunner()
        url = ledger.url
        out = runner.invoke(app, ["status", "--json", "--ledger", url, "--api-url", down])
        assert out.exit_code == 1
        data = json.loads(out.output)
        (h,) = data["open_halts"]
        assert h["enforcement"]["event"] == "halt.apply_failed" and h["prefect"] is None
        assert data["prefect"]["reachable"] is False
        text = runner.invoke(app, ["status", "--ledger", url, "--api-url", down]).output
        assert "NOT APPLIED" in text and "UNREACHABLE" in text
        live = json.loads(runner.invoke(app, ["status", "--json", "--ledger", url]).output)
        assert live["open_halts"][0]["prefect"]["not_paused"] and not live["ok"]
        fixed = runner.invoke(app, ["halt", "reconcile", "--ledger", url])
        assert fixed.exit_code == 0, fixed.output
        after = runner.invoke(app, ["status", "--json", "--ledger", url])
        assert after.exit_code == 0, after.output
        after_data = json.loads(after.output)
        assert after_data["open_halts"][0]["prefect"]["agrees"]
        assert after_data["reconcile"]["ok"] and after_data["reconcile"]["changed"]
    finally:
        get_settings.cache_clear()
    assert deployment_paused(dep_id)


@pytest.mark.integration
def test_reconcile_with_nothing_to_do_writes_nothing(
    prefect_server: str, ledger: Ledger, unique_scaling_tag: str, tmp_path: Path
) -> None:
    dep_id = register(f"idem-{uuid.uuid4().hex[:8]}", [unique_scaling_tag])
    halt, _ = open_manual_halt("test", ["training"], ledger=ledger)
    state = tmp_path / "reconcile.json"
    first = reconcile(ledger=ledger, scaling_tag=unique_scaling_tag, state_path=state)
    assert first.ok and first.changed and first.events == ["halt.reconciled"]
    head = ledger.head()
    second = reconcile(ledger=ledger, scaling_tag=unique_scaling_tag, state_path=state)
    third = reconcile(ledger=ledger, scaling_tag=unique_scaling_tag, state_path=state)
    assert second.ok and not second.changed and second.events == [] and third.events == []
    assert ledger.head() == head
    assert json.loads(state.read_text())["checked_at"] == third.checked_at

    resume(dep_id)  # drift: someone resumes the deployment in the UI
    fixed = reconcile(ledger=ledger, scaling_tag=unique_scaling_tag, state_path=state)
    assert fixed.changed and [p["id"] for p in fixed.paused] == [dep_id]
    (event,) = ledger.events(kind="halt.reconciled", after_seq=head[0])
    assert event.subject == halt.halt_id and event.payload["paused"]


@pytest.mark.integration
def test_reconcile_failure_is_recorded_once_per_outage(
    prefect_server: str, ledger: Ledger, unique_scaling_tag: str, tmp_path: Path
) -> None:
    open_manual_halt("test", ["training"], ledger=ledger)
    state = tmp_path / "reconcile.json"
    down = closed_port_url()
    r1 = reconcile(ledger=ledger, api_url=down, scaling_tag=unique_scaling_tag, state_path=state, backoff_s=0.05)
    r2 = reconcile(ledger=ledger, api_url=down, scaling_tag=unique_scaling_tag, state_path=state, backoff_s=0.05)
    assert not r1.ok and not r2.ok
    assert r1.events == ["halt.reconcile_failed"] and r2.events == []
    back = reconcile(ledger=ledger, scaling_tag=unique_scaling_tag, state_path=state)
    assert back.ok


@pytest.mark.integration
def test_automation_cancels_new_run_of_halted_deployment_and_is_disabled_after_lift(
    prefect_server: str, ledger: Ledger, unique_scaling_tag: str, tmp_path: Path
) -> None:
    from prefect import get_client

    from tasks.enforcement import automation_name, ensure_halt_automation

    dep_id = register(f"auto-{uuid.uuid4().hex[:8]}", [unique_scaling_tag])
    created = ensure_halt_automation(ledger=ledger, scaling_tag=unique_scaling_tag)
    assert created["change"] == "created" and created["halted_deployments"] == []
    halt, _ = open_manual_halt("test", ["training"], ledger=ledger)
    report = apply_halt(halt.halt_id, ledger=ledger, scaling_tag=unique_scaling_tag)
    assert report.automation == "updated"

    with get_client(sync_client=True) as client:
        (auto,) = client.read_automations_by_name(automation_name(unique_scaling_tag))
        assert auto.enabled
        # A hand-started run of the paused deployment: nothing serves it, so only the automation acts.
        flow_run = client.create_flow_run_from_deployment(UUID(dep_id))
    wait_for(lambda: run_state(str(flow_run.id)) in ("CANCELLING", "CANCELLED"), 30,
             what="the automation to cancel the new run")

    lift(ledger, halt.halt_id)
    after = reconcile(ledger=ledger, scaling_tag=unique_scaling_tag, state_path=tmp_path / "r.json")
    assert after.ok and after.automation == "updated"
    with get_client(sync_client=True) as client:
        (auto,) = client.read_automations_by_name(automation_name(unique_scaling_tag))
        assert not auto.enabled


@pytest.mark.integration
def test_halt_flow_records_applies_and_is_idempotent(
    prefect_server: str, ledger: Ledger, unique_scaling_tag: str
) -> None:
    from flows.halt import halt as halt_flow

    dep_id = register(f"flow-{uuid.uuid4().hex[:8]}", [unique_scaling_tag])
    det = determination().model_dump(mode="json")
    first = halt_flow(determination=det, determination_seq=3, ledger_url=ledger.url,
                      scaling_tag=unique_scaling_tag)
    second = halt_flow(determination=det, determination_seq=3, ledger_url=ledger.url,
                       scaling_tag=unique_scaling_tag)
    assert first.apply is not None and second.apply is not None
    assert first.halt.created and not second.halt.created
    assert first.apply.applied and second.apply.applied
    assert deployment_paused(dep_id)
    kinds = [e.kind for e in ledger.events()]
    # one halt, applied once; only the run that created it announced it (the second did not re-notify)
    assert kinds[:2] == ["halt.opened", "halt.applied"] and set(kinds[2:]) == {"notification.sent"}
    sent = [e for e in ledger.events(kind="notification.sent")]
    assert len({e.payload.get("key") or e.subject for e in sent}) == len(sent)  # nothing sent twice


@pytest.mark.integration
def test_rsp_halt_open_notifies_exactly_like_the_halt_flow(
    prefect_server: str, ledger: Ledger, rsp_home: Path, unique_scaling_tag: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.halt import halt as halt_flow
    from rsp.cli import app
    from tasks.notify.jsonl import read_notifications
    from tasks.settings import get_settings

    monkeypatch.setenv("RSP_NOTIFY", "file")
    monkeypatch.setenv("RSP_SCALING_TAG", unique_scaling_tag)
    get_settings.cache_clear()
    dep_id = register(f"manual-{uuid.uuid4().hex[:8]}", [unique_scaling_tag])
    reason = "incident: eval infrastructure compromised"

    by_flow = halt_flow(reason=reason, activities=["training"], opened_by="operator", ledger_url=ledger.url)
    flow_id = by_flow.halt.halt_id
    assert by_flow.notified and deployment_paused(dep_id)
    resume(dep_id)  # so the CLI's halt finds Prefect in the same state the flow's did
    out = CliRunner().invoke(app, ["halt", "open", "--reason", reason, "--activities", "training", "--by", "operator",
                                   "--ledger", ledger.url, "--json"])
    assert out.exit_code == 0, out.output
    cli = json.loads(out.output)
    cli_id = cli["halt"]["halt_id"]
    assert cli["created"] and cli["notified"] and cli_id != flow_id and deployment_paused(dep_id)

    lines = read_notifications(rsp_home / "notifications.jsonl")
    flow_lines = [ln for ln in lines if ln["halt_id"] == flow_id]
    cli_lines = [ln for ln in lines if ln["halt_id"] == cli_id]
    assert len(flow_lines) + len(cli_lines) == len(lines)

    def comparable(line: dict[str, Any], halt_id: str) -> dict[str, Any]:
        # Only the halt id, when it opened, and the link to the halt flow's own run (the CLI has no
        # run to link to) may differ; the apply report's timing stays in facts of halt.applied.
        text = "\n".join(t for t in line["text"].splitlines() if not t.startswith("Flow run: "))
        facts = {k: v for k, v in line["facts"].items() if k not in ("halt_id", "opened_at", "links", "apply")}
        same = {"event": line["event"], "event_key": line["event_key"], "title": line["title"], "text": text,
                "facts": facts, "actions": line["actions"], "severity": line["severity"]}
        return json.loads(json.dumps(same).replace(halt_id, "HALT"))

    assert [ln["event"] for ln in cli_lines] == ["halt.opened", "halt.applied"]
    assert [comparable(ln, cli_id) for ln in cli_lines] == [comparable(ln, flow_id) for ln in flow_lines]
    assert "Cause: manual halt: incident: eval infrastructure compromised" in cli_lines[0]["text"]
    assert "applied: 1 deployment(s) paused" in cli_lines[0]["text"]
