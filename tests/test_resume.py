"""Prefect UI approvals and the resume flow, against a real Prefect server.

The UI path is driven the way the UI drives it: the `await-approval` flow pauses with
`wait_for_input=ApprovalInput`, and `resume_flow_run(flow_run_id, run_input={...})` delivers
a form. Each form becomes a vote in the ledger (or a refusal); a timed-out wait approves
nothing. Resuming deployments touches only what the halt paused and nothing another open
halt still covers; a Prefect outage during resume is recorded and recovered."""

from __future__ import annotations

import contextvars
import threading
import uuid
from typing import Any
from uuid import UUID

import pytest

from tasks.approvals import record_vote, try_lift
from tests.plugins.prefect_server import closed_port_url, wait_for
from tests.plugins.slack_api import ApprovalWorld

pytestmark = pytest.mark.integration


def run_state(flow_run_id: str) -> str:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(UUID(flow_run_id)).state
        return state.type.value if state else "UNKNOWN"


def in_thread(fn: Any, *args: Any, **kwargs: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}
    ctx = contextvars.copy_context()  # Prefect's settings (the test server's URL) live in context vars

    def target() -> None:
        try:
            out["result"] = ctx.run(fn, *args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


def test_prefect_ui_forms_become_votes_and_quorum_lifts(prefect_server: str, approval_world: ApprovalWorld) -> None:
    from prefect.flow_runs import resume_flow_run

    from flows.approval import await_approval

    w = approval_world
    w.trusting({"rso": ["prefect-ui"], "ceo": ["prefect-ui"]})  # the UI form is unsigned: counts only if trusted
    halt = w.open_halt()
    w.attest("sg-base")
    thread, out = in_thread(await_approval, halt.halt_id, timeout_s=120, poll_interval_s=1)
    started = wait_for(lambda: w.ledger.events(kind="approval.wait_started", subject=halt.halt_id), 30,
                       what="the approval flow to start")
    run_id = started[0].payload["flow_run_id"]

    def paused_after(n_events: int) -> bool:
        return len(w.ledger.events(subject=halt.halt_id)) >= n_events and run_state(run_id) == "PAUSED"

    wait_for(lambda: paused_after(2), 30, what="the flow run to pause for input")

    # Invalid input is refused by the server's schema check: nothing reaches the flow or the ledger.
    with pytest.raises(RuntimeError, match="(?i)reason|invalid|input"):
        resume_flow_run(UUID(run_id), run_input={"approver": "alice", "decision": "maybe", "justification": "x"})
    assert run_state(run_id) == "PAUSED"

    resume_flow_run(UUID(run_id), run_input={"approver": "mallory", "decision": "approve", "justification": "hi"})
    wait_for(lambda: paused_after(3), 30, what="an unknown approver to be refused and the run to pause again")
    assert w.ledger.events(kind="vote.refused")[-1].payload["code"] == "unknown_user"

    resume_flow_run(UUID(run_id), run_input={"approver": "alice", "decision": "approve",
                                              "justification": "sg-base attested by the CISO"})
    wait_for(lambda: paused_after(4) and w.ledger.events(kind="vote.recorded"), 30, what="alice's vote")
    assert w.ledger.halt(halt.halt_id).is_open  # one vote is not a quorum

    resume_flow_run(UUID(run_id), run_input={"approver": "bob", "decision": "approve", "justification": "agreed"})
    thread.join(60)
    assert "error" not in out, out.get("error")
    assert out["result"]["outcome"] == "lifted"
    votes = w.ledger.events(kind="vote.recorded", subject=halt.halt_id)
    assert [(v.payload["person"], v.payload["channel"], v.payload["channel_ref"], v.payload["verified"])
            for v in votes] == [("alice", "prefect-ui", run_id, False), ("bob", "prefect-ui", run_id, False)]
    assert not w.ledger.halt(halt.halt_id).is_open
    wait_for(lambda: run_state(run_id) == "COMPLETED", 20, what="the approval run to complete")


def test_timed_out_wait_never_reads_as_approved(prefect_server: str, approval_world: ApprovalWorld) -> None:
    from flows.approval import await_approval

    w = approval_world
    halt = w.open_halt()
    vote = record_vote(w.signed(halt.halt_id, "alice"), ledger=w.ledger, roster=w.roster())
    assert vote.ok
    result = await_approval(halt.halt_id, timeout_s=2, poll_interval_s=1)
    assert result["outcome"] == "timed_out"
    (timed_out,) = w.ledger.events(kind="approval.wait_timed_out", subject=halt.halt_id)
    assert timed_out.payload["flow_run_id"] == result["flow_run_id"]
    assert w.ledger.halt(halt.halt_id).is_open
    assert not w.ledger.events(kind="halt.lifted")


def test_resume_flow_lifts_once_and_reports_what_is_missing(prefect_server: str, approval_world: ApprovalWorld
                                                            ) -> None:
    from flows.resume import resume

    w = approval_world
    halt = w.open_halt()
    for person in ("alice", "erin"):
        assert record_vote(w.signed(halt.halt_id, person), ledger=w.ledger, roster=w.roster()).ok
    refused = resume(halt.halt_id)
    assert not refused["lifted"] and [m["id"] for m in refused["missing"]] == ["sg-base"]
    w.attest("sg-base")
    assert resume(halt.halt_id)["status"] == "lifted"
    assert resume(halt.halt_id)["status"] == "already_lifted"
    assert len(w.ledger.events(kind="halt.lifted")) == 1


def _register(tag: str) -> tuple[str, str]:
    from flows.train_demo import train_demo

    name = f"res-{uuid.uuid4().hex[:8]}"
    deployment: Any = train_demo.to_deployment(name=name, tags=[tag, "training"])
    return str(deployment.apply()), f"train-demo/{name}"


def _paused(deployment_id: str) -> bool:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return bool(client.read_deployment(UUID(deployment_id)).paused)


def _approve_all(w: ApprovalWorld, halt_id: str) -> None:
    for person in ("alice", "bob"):
        assert record_vote(w.signed(halt_id, person), ledger=w.ledger, roster=w.roster()).ok


def test_resume_only_what_this_halt_paused_and_no_other_halt_covers(
    prefect_server: str, approval_world: ApprovalWorld, unique_scaling_tag: str
) -> None:
    from tasks.enforcement import apply_halt, open_manual_halt

    w = approval_world
    tag = unique_scaling_tag
    dep, name = _register(tag)
    first = w.open_halt(safeguards=())
    second, _ = open_manual_halt("second reason", ["training"], ledger=w.ledger)
    assert apply_halt(first.halt_id, ledger=w.ledger, scaling_tag=tag).applied
    assert apply_halt(second.halt_id, ledger=w.ledger, scaling_tag=tag).applied
    assert _paused(dep)

    _approve_all(w, first.halt_id)
    lifted = try_lift(first.halt_id, ledger=w.ledger, scaling_tag=tag)
    assert lifted.status == "lifted" and lifted.resumed == []
    assert lifted.kept_paused == [{"name": name, "halts": [second.halt_id]}]
    assert _paused(dep)  # the second halt still stands

    _approve_all(w, second.halt_id)
    assert try_lift(second.halt_id, ledger=w.ledger, scaling_tag=tag).resumed == []  # it paused nothing itself
    assert _paused(dep)  # only resumed by the halt that paused it; reconcile would not unpause either
    again = try_lift(first.halt_id, ledger=w.ledger, scaling_tag=tag)
    assert again.status == "already_lifted" and again.resumed == []  # its resume already ran and was recorded


def test_prefect_down_during_resume_is_recorded_and_recovered(
    prefect_server: str, approval_world: ApprovalWorld, unique_scaling_tag: str
) -> None:
    from tasks.enforcement import apply_halt

    w = approval_world
    dep, name = _register(unique_scaling_tag)
    halt = w.open_halt(safeguards=())
    assert apply_halt(halt.halt_id, ledger=w.ledger, scaling_tag=unique_scaling_tag).applied
    _approve_all(w, halt.halt_id)
    down = try_lift(halt.halt_id, ledger=w.ledger, scaling_tag=unique_scaling_tag, api_url=closed_port_url())
    assert down.status == "lifted" and down.resume_error and "rsp resume" in down.message
    assert w.ledger.events(kind="halt.resume_failed", subject=halt.halt_id)
    assert _paused(dep)
    recovered = try_lift(halt.halt_id, ledger=w.ledger, scaling_tag=unique_scaling_tag)
    assert recovered.status == "already_lifted" and recovered.resumed == [name]
    assert not _paused(dep)
