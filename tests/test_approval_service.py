"""The approval service over real HTTP: uvicorn on a free loopback port, signed Slack payloads.

Bad input of every kind is refused with the right status and changes nothing but the audit
record; the full loop (halt -> Slack message with buttons -> two distinct approvals ->
safeguards verified -> halt lifted, deployment resumed, gate open) runs against a real
Prefect server and the Slack stand-in; so does the loop with a safeguard still missing."""

from __future__ import annotations

import io
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import httpx
import pytest

from tasks.approval_service import ServiceConfig, create_app
from tasks.ledger import export_jsonl
from tasks.notify import notify_halt_opened
from tests.plugins.prefect_server import free_port, wait_for
from tests.plugins.slack_api import (
    CHANNEL,
    TEST_SIGNING_SECRET,
    ApprovalWorld,
    FakeSlack,
    block_actions_body,
    sign,
)


@contextmanager
def running_service(config: ServiceConfig | None = None) -> Iterator[str]:
    import uvicorn

    app = create_app(config or ServiceConfig.from_settings())
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="approval-service", daemon=True)
    thread.start()
    wait_for(lambda: server.started, 15, what="the approval service to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def click(url: str, user: str, halt_id: str, action: str = "rsp_approve", *, secret: str = TEST_SIGNING_SECRET,
          timestamp: int | None = None, body: bytes | None = None) -> httpx.Response:
    body = body if body is not None else block_actions_body(user, action, halt_id)
    return httpx.post(f"{url}/slack/interactions", content=body, headers=sign(secret, body, timestamp), timeout=10)


def refused_codes(world: ApprovalWorld) -> list[str]:
    return [e.payload["code"] for e in world.ledger.events(kind="vote.refused")]


def test_bad_input_is_refused_and_changes_nothing_but_the_audit(approval_world: ApprovalWorld,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    w = approval_world
    halt = w.open_halt()
    lifted = w.open_halt(safeguards=("sg-sec4",), step=200, runs=["run-z"])
    w.ledger.append("halt.lifted", lifted.halt_id, {"halt_id": lifted.halt_id})
    head_before = w.ledger.head()[0]
    with running_service() as url:
        assert httpx.get(f"{url}/healthz").json()["ok"] is True

        forged = click(url, "U0BOB00001", halt.halt_id, secret="not-the-secret")
        stale = click(url, "U0BOB00001", halt.halt_id, timestamp=int(time.time()) - 400)
        unsigned = httpx.post(f"{url}/slack/interactions", content=block_actions_body("U0BOB00001", "rsp_approve",
                                                                                      halt.halt_id))
        tampered_body = block_actions_body("U0BOB00001", "rsp_approve", halt.halt_id)
        headers = sign(TEST_SIGNING_SECRET, tampered_body)
        tampered = httpx.post(f"{url}/slack/interactions", content=tampered_body.replace(b"U0BOB", b"U0ALI"),
                              headers=headers)
        big = b"payload=" + b"x" * (70 * 1024)
        oversized = httpx.post(f"{url}/slack/interactions", content=big, headers=sign(TEST_SIGNING_SECRET, big))
        not_json = click(url, "", "", body=b"payload=%7Bnot-json")
        no_payload = click(url, "", "", body=b"other=1")
        wrong_type = click(url, "", "", body=b"payload=%7B%22type%22%3A%22view_submission%22%7D")
        assert [r.status_code for r in (forged, stale, unsigned, tampered)] == [401, 401, 401, 401]
        assert forged.json()["error"] == "bad_signature" and stale.json()["error"] == "stale"
        assert oversized.status_code == 413
        assert [r.status_code for r in (not_json, no_payload, wrong_type)] == [400, 400, 400]
        assert w.ledger.head()[0] == head_before  # none of that touched the ledger

        unknown = click(url, "U0MALLORY1", halt.halt_id)
        unauthorised = click(url, "U0CAROL001", halt.halt_id)
        no_role = click(url, "U0DAVE0001", halt.halt_id)
        missing = click(url, "U0BOB00001", "halt-doesnotexist")
        gone = click(url, "U0BOB00001", lifted.halt_id)
        assert [r.status_code for r in (unknown, unauthorised, no_role, missing, gone)] == [403, 403, 403, 404, 409]
        assert refused_codes(w) == ["unknown_user", "unauthorised", "unauthorised", "no_such_halt", "halt_lifted"]

        body = block_actions_body("U0BOB00001", "rsp_approve", halt.halt_id)
        headers = sign(TEST_SIGNING_SECRET, body)
        first = httpx.post(f"{url}/slack/interactions", content=body, headers=headers)
        replay = httpx.post(f"{url}/slack/interactions", content=body, headers=headers)
        assert first.status_code == 200 and first.json()["tally"]["approvers"] == ["bob"]
        assert replay.status_code == 409 and replay.json()["error"] == "replay"

    votes = w.ledger.events(kind="vote.recorded")
    assert [(v.payload["person"], v.payload["channel"], v.payload["channel_ref"]) for v in votes] == [
        ("bob", "slack", "U0BOB00001")]
    assert w.ledger.halt(halt.halt_id).is_open
    assert w.ledger.verify().ok
    assert "refused a Slack request whose signature does not verify" in caplog.text
    export = io.StringIO()
    export_jsonl(w.ledger, export)
    assert TEST_SIGNING_SECRET not in caplog.text and TEST_SIGNING_SECRET not in export.getvalue()


def test_replay_is_remembered_across_a_restart(approval_world: ApprovalWorld) -> None:
    w = approval_world
    halt = w.open_halt()
    body = block_actions_body("U0BOB00001", "rsp_approve", halt.halt_id)
    headers = sign(TEST_SIGNING_SECRET, body)
    with running_service() as url:
        assert httpx.post(f"{url}/slack/interactions", content=body, headers=headers).status_code == 200
    with running_service() as url:  # a new process would read the same table
        assert httpx.post(f"{url}/slack/interactions", content=body, headers=headers).status_code == 409
    assert len(w.ledger.events(kind="vote.recorded")) == 1


def test_rejection_from_slack_closes_the_round(approval_world: ApprovalWorld, slack_api: FakeSlack) -> None:
    w = approval_world
    halt = w.open_halt()
    notify_halt_opened({"halt_id": halt.halt_id}, None, ledger=w.ledger)
    with running_service() as url:
        assert click(url, "U0ALICE001", halt.halt_id).status_code == 200
        assert click(url, "U0BOB00001", halt.halt_id, "rsp_reject").status_code == 200
        after = click(url, "U0ERIN0001", halt.halt_id)
        assert after.status_code == 409 and after.json()["error"] == "round_rejected"
        wait_for(lambda: len(slack_api.posts()) >= 3, 10, what="vote follow-ups")
        wait_for(lambda: any("rejected by bob" in str(u["blocks"]) for u in slack_api.updates()), 10,
                 what="the halt message to show the rejection")
    assert w.ledger.halt(halt.halt_id).is_open
    last_update = slack_api.updates()[-1]["blocks"]
    assert not any(b["type"] == "actions" for b in last_update)  # no buttons on a rejected round


# -- the full loop, against a real Prefect server -------------------------------------------------------------


def register(tag: str) -> str:
    from flows.train_demo import train_demo

    deployment: Any = train_demo.to_deployment(name=f"svc-{uuid.uuid4().hex[:8]}", tags=[tag, "training"])
    return str(deployment.apply())


def paused(deployment_id: str) -> bool:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return bool(client.read_deployment(UUID(deployment_id)).paused)


def halt_and_notify(w: ApprovalWorld, tag: str) -> tuple[Any, str]:
    from tasks.enforcement import apply_halt

    dep = register(tag)
    halt = w.open_halt()
    report = apply_halt(halt.halt_id, ledger=w.ledger, scaling_tag=tag)
    assert report.applied and paused(dep), report.error
    notify_halt_opened({"halt_id": halt.halt_id}, report.to_dict(), ledger=w.ledger)
    return halt, dep


@pytest.mark.integration
def test_full_loop_two_slack_approvals_lift_and_resume(
    prefect_server: str, approval_world: ApprovalWorld, slack_api: FakeSlack, unique_scaling_tag: str
) -> None:
    from tasks.gate import ScalingGate

    w = approval_world
    halt, dep = halt_and_notify(w, unique_scaling_tag)
    message = slack_api.posts(CHANNEL)[0]
    buttons = next(b for b in message["blocks"] if b["type"] == "actions")["elements"]
    assert {e["value"] for e in buttons} == {halt.halt_id}
    gate = ScalingGate(ledger=w.ledger)
    assert not gate.is_open("run-a")
    w.attest("sg-base")  # the CISO attests the missing safeguard

    with running_service(ServiceConfig.from_settings(scaling_tag=unique_scaling_tag)) as url:
        for user in ("U0BOB00001", "U0BOB00001", "U0ALICE001"):  # bob twice: counts once
            started = time.monotonic()
            resp = click(url, user, halt.halt_id)
            assert resp.status_code == 200, resp.text
            assert time.monotonic() - started < 3.0  # Slack's deadline
        wait_for(lambda: any(e.kind == "halt.deployments_resumed" for e in w.ledger.events(subject=halt.halt_id)),
                 30, what="the halt to be lifted and its deployment resumed")

    h = w.ledger.halt(halt.halt_id)
    assert not h.is_open and h.lift_payload["approvers"] == ["bob", "alice"]
    assert h.lift_payload["verification"]["sg-base"]["state"] == "met"
    assert not paused(dep)
    assert gate.is_open("run-a")
    resumed = w.ledger.events(kind="halt.deployments_resumed", subject=halt.halt_id)[0].payload
    assert len(resumed["resumed"]) == 1
    kinds = [e.kind for e in w.ledger.events(subject=halt.halt_id)]
    assert kinds.count("vote.recorded") == 3 and kinds.count("halt.lifted") == 1
    root_ts = slack_api.messages[CHANNEL][0]["ts"]
    wait_for(lambda: any("LIFTED" in (p.get("text") or "") for p in slack_api.posts()), 10, what="lifted reply")
    replies = [p for p in slack_api.posts() if p.get("thread_ts") == root_ts]
    assert any("LIFTED" in p["text"] for p in replies) and sum("Vote on" in p["text"] for p in replies) == 3
    wait_for(lambda: any("LIFTED at" in str(u["blocks"]) for u in slack_api.updates()), 10, what="message refresh")


@pytest.mark.integration
def test_full_loop_with_safeguard_missing_is_refused(
    prefect_server: str, approval_world: ApprovalWorld, slack_api: FakeSlack, unique_scaling_tag: str
) -> None:
    from tasks.gate import ScalingGate

    w = approval_world
    halt, dep = halt_and_notify(w, unique_scaling_tag)
    with running_service(ServiceConfig.from_settings(scaling_tag=unique_scaling_tag)) as url:
        assert click(url, "U0ALICE001", halt.halt_id).status_code == 200
        assert click(url, "U0ERIN0001", halt.halt_id).status_code == 200
        wait_for(lambda: w.ledger.events(kind="halt.lift_refused", subject=halt.halt_id), 30,
                 what="the lift to be refused")
    refused = w.ledger.events(kind="halt.lift_refused", subject=halt.halt_id)[0].payload
    assert [m["id"] for m in refused["missing"]] == ["sg-base"] and "sg-base" in refused["reason"]
    assert w.ledger.halt(halt.halt_id).is_open
    assert paused(dep) and not ScalingGate(ledger=w.ledger).is_open("run-a")
    wait_for(lambda: any("NOT lifted" in (p.get("text") or "") for p in slack_api.posts()), 10, what="refusal reply")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_undecodable_bodies_are_400_when_signed_401_when_not_and_never_a_500(approval_world: ApprovalWorld) -> None:
    """Non-UTF-8 bytes, bad form encoding, a payload that is not JSON (or nests too deeply, or
    holds a lone surrogate), a timestamp or signature header that is not ASCII: a refusal, with
    no traceback in any log, and nothing written to the ledger."""
    from urllib.parse import quote

    w = approval_world
    halt = w.open_halt()
    click_payload = block_actions_body("U0BOB00001", "rsp_approve", halt.halt_id)
    surrogate = b"payload=" + quote('{"type": "block_actions", "user": {"id": "\\ud800"}, "actions": '
                                    '[{"action_id": "rsp_approve", "value": "' + halt.halt_id + '"}]}').encode()
    bodies = {
        "raw non-UTF-8": b"payload=\xff\xfe\x00{",
        "latin-1 text": "payload=caf\xe9".encode("latin-1"),
        "lone continuation bytes": b"\x80\x81\x82",
        "truncated UTF-8 in a valid click": click_payload[:-1] + b"\xe2\x82",
        "percent-encoded non-UTF-8": b"payload=%ff%fe",
        "not a form": b"payload&&==&",
        "not JSON": b"payload=%7B%22type%22%3A",
        "JSON nested too deeply": b"payload=" + b"[" * 60_000,
        "lone surrogate in JSON": surrogate,
    }
    errors = _Records()
    loggers = [logging.getLogger(n) for n in ("uvicorn.error", "uvicorn", "rsp", "")]
    for lg in loggers:
        lg.addHandler(errors)
    head_before = w.ledger.head()
    try:
        with running_service() as url:
            for what, body in bodies.items():
                signed = click(url, "", "", body=body)
                assert signed.status_code == 400, (what, signed.status_code, signed.text)
                assert signed.json()["error"] == "bad_request", what
                forged = click(url, "", "", body=body, secret="not-the-secret")
                assert forged.status_code == 401, (what, forged.status_code, forged.text)
                unsigned = httpx.post(f"{url}/slack/interactions", content=body, timeout=10)
                assert unsigned.status_code == 401, (what, unsigned.status_code)
            # Headers Starlette decodes as latin-1: a non-ASCII signature or timestamp, or one that
            # is not a plain count of seconds (too long to subtract from the clock, signed, with `_`).
            good = sign(TEST_SIGNING_SECRET, click_payload)
            odd_headers: list[dict[str, Any]] = [
                {**good, "X-Slack-Signature": b"v0=\xff" + good["X-Slack-Signature"][3:].encode()},
                {**good, "X-Slack-Request-Timestamp": b"17\xb2"},
                sign(TEST_SIGNING_SECRET, click_payload, timestamp=int("9" * 400)),
                {**good, "X-Slack-Request-Timestamp": f"{good['X-Slack-Request-Timestamp'][:1]}_"
                                                      f"{good['X-Slack-Request-Timestamp'][1:]}"},
                {**good, "X-Slack-Request-Timestamp": f"+{good['X-Slack-Request-Timestamp']}"},
            ]
            for headers in odd_headers:
                r = httpx.post(f"{url}/slack/interactions", content=click_payload, headers=headers, timeout=10)
                assert r.status_code == 401, (headers, r.status_code, r.text)
    finally:
        for lg in loggers:
            lg.removeHandler(errors)
    assert w.ledger.head() == head_before  # refusals before a verified user leave no record
    tracebacks = [r.getMessage() for r in errors.records if r.exc_info or r.levelno >= logging.ERROR]
    assert tracebacks == []
