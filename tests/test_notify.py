"""Notifications: Slack (over HTTP to a local Slack Web API stand-in), console and JSONL file.

Covers the halt message (level, thresholds with values and intervals, safeguards missing,
flow-run link, Approve/Reject buttons carrying the halt id), threaded follow-ups, 429 and
5xx handling, failures recorded and retried later without double posting, and that no
secret reaches a log, the ledger, the outbox or the notification file."""

from __future__ import annotations

import io
import logging
from typing import Any

import pytest

from tasks.ledger import export_jsonl
from tasks.notify import Dispatcher, notify_halt_opened
from tasks.notify import messages as msgs
from tasks.notify.jsonl import read_notifications
from tests.plugins.slack_api import CHANNEL, TEST_SIGNING_SECRET, ApprovalWorld, FakeSlack

APPLY = {"halt_id": "x", "applied": True, "paused": [{"id": "d1", "name": "train-demo/a"}], "already_paused": [],
         "cancelled": [{"id": "r1"}], "error": None}
LINK = "http://127.0.0.1:4200/runs/flow-run/0000"


def halt_dict(halt: Any) -> dict[str, Any]:
    return {"halt_id": halt.halt_id, "created": True, "opened_seq": halt.opened_seq, "payload": halt.payload,
            "is_open": True}


def all_text(blocks: list[dict[str, Any]]) -> str:
    import json

    return json.dumps(blocks)


def test_halt_message_has_everything_and_followups_thread(approval_world: ApprovalWorld, slack_api: FakeSlack) -> None:
    w = approval_world
    halt = w.open_halt()
    out = notify_halt_opened(halt_dict(halt), {**APPLY, "halt_id": halt.halt_id}, ledger=w.ledger,
                             flow_run_link=LINK)
    assert out["halt.opened"]["ok"] and out["apply"]["ok"]
    first, second = slack_api.posts(CHANNEL)
    blocks = first["blocks"]
    text = all_text(blocks)
    assert blocks[0]["type"] == "header" and "L2" in blocks[0]["text"]["text"]
    assert "CBRN-3" in text and "0.62" in text and "[0.55, 0.69]" in text and "threshold 0.5" in text
    assert "sg-base" in text and "no attestation for sg-base" in text
    assert LINK in text and "rso" in text  # link to the flow run; the lift rule names the roles
    actions = next(b for b in blocks if b["type"] == "actions")
    assert {(e["action_id"], e["value"]) for e in actions["elements"]} == {
        ("rsp_approve", halt.halt_id), ("rsp_reject", halt.halt_id)}
    assert "thread_ts" not in first
    ts = slack_api.messages[CHANNEL][0]["ts"]
    assert second["thread_ts"] == ts and "applied" in second["text"]
    sent = w.ledger.events(kind="notification.sent", subject=halt.halt_id)
    assert {(e.payload["event"], e.payload["channel"]) for e in sent} == {
        ("halt.opened", "slack"), ("halt.opened", "file"), ("halt.applied", "slack"), ("halt.applied", "file")}
    lines = read_notifications(w.home / "notifications.jsonl")
    assert [ln["event"] for ln in lines] == ["halt.opened", "halt.applied"]
    assert lines[0]["facts"]["thresholds"][0]["ci_low"] == 0.55

    # The same event never posts twice, whoever calls again.
    again = notify_halt_opened(halt_dict(halt), {**APPLY, "halt_id": halt.halt_id}, ledger=w.ledger)
    assert {r["status"] for r in again["halt.opened"]["results"]} == {"skipped"}
    assert len(slack_api.posts()) == 2 and len(read_notifications(w.home / "notifications.jsonl")) == 2

    # A later step threads under the halt message and refreshes it (status line, buttons).
    d = Dispatcher(ledger=w.ledger)
    refusal = {"halt_id": halt.halt_id, "reason": "sg-base missing",
               "missing": [{"id": "sg-base", "state": "unmet", "evidence": "none"}]}
    event = w.ledger.append("halt.lift_refused", halt.halt_id, refusal)
    d.send(msgs.lift_refused(halt.halt_id, event.seq, refusal))
    d.refresh_parent(halt.halt_id)
    assert slack_api.posts()[-1]["thread_ts"] == ts
    (update,) = slack_api.updates()
    assert update["ts"] == ts and "Status:" in all_text(update["blocks"])
    assert "Last lift attempt refused: sg-base missing" in all_text(update["blocks"])


def test_429_then_success_posts_once(approval_world: ApprovalWorld, slack_api: FakeSlack) -> None:
    w = approval_world
    halt = w.open_halt()
    slack_api.fail_next(1, status=429, retry_after=1)
    report = Dispatcher(ledger=w.ledger).send(msgs.opened(w.ledger, halt))
    assert report.ok
    assert [c.status for c in slack_api.requests] == [429, 200]
    assert len(slack_api.posts()) == 1
    assert not w.ledger.events(kind="notification.failed")
    # Retry-After: 1 was honoured (the handler waits at least that long).
    assert slack_api.requests[1].at - slack_api.requests[0].at >= 1.0


def test_5xx_is_recorded_failed_retried_later_and_never_posted_twice(
    approval_world: ApprovalWorld, slack_api: FakeSlack
) -> None:
    w = approval_world
    halt = w.open_halt()
    d = Dispatcher(ledger=w.ledger)
    slack_api.fail_next(3, status=500)  # one try + two retries inside the send: all fail
    report = d.send(msgs.opened(w.ledger, halt))
    by_channel = {r.channel: r for r in report.results}
    assert by_channel["slack"].status == "failed" and "500" in (by_channel["slack"].error or "")
    assert by_channel["file"].status == "sent"  # one channel failing does not hold up the others
    assert [c.status for c in slack_api.requests] == [500, 500, 500] and slack_api.posts() == []
    (failed,) = w.ledger.events(kind="notification.failed", subject=halt.halt_id)
    assert failed.payload["channel"] == "slack" and failed.payload["key"] == f"{halt.halt_id}|halt.opened|slack"
    (row,) = [r for r in d.outbox.rows(halt.halt_id) if r.channel == "slack"]
    assert row.state == "failed" and row.attempts == 1

    retried = d.retry_pending(force=True)
    assert [(r.channel, r.status) for r in retried] == [("slack", "sent")]
    assert len(slack_api.posts()) == 1
    assert d.retry_pending(force=True) == []  # nothing left
    assert {r.status for r in d.send(msgs.opened(w.ledger, halt)).results} == {"skipped"}
    assert len(slack_api.posts()) == 1
    final = d.outbox.get(row.key)
    assert final is not None and final.state == "recorded"


def test_missing_token_is_kept_and_delivered_once_configured(
    approval_world: ApprovalWorld, slack_api: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = approval_world
    halt = w.open_halt()
    monkeypatch.delenv("RSP_SLACK_BOT_TOKEN")
    first = Dispatcher(ledger=w.ledger).send(msgs.opened(w.ledger, halt))
    slack = next(r for r in first.results if r.channel == "slack")
    assert slack.status == "failed" and "RSP_SLACK_BOT_TOKEN" in (slack.error or "")
    monkeypatch.setenv("RSP_SLACK_BOT_TOKEN", slack_api.token)
    results = Dispatcher(ledger=w.ledger).retry_pending(force=True)  # a later process, configured now
    assert [(r.channel, r.status) for r in results] == [("slack", "sent")] and len(slack_api.posts()) == 1


def test_retry_respects_backoff_unless_forced(approval_world: ApprovalWorld, slack_api: FakeSlack,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSP_NOTIFY_RETRY_BASE_S", "300")
    w = approval_world
    halt = w.open_halt()
    slack_api.fail_next(3, status=503)
    d = Dispatcher(ledger=w.ledger)
    d.send(msgs.opened(w.ledger, halt))
    assert d.retry_pending() == []  # not due for 5 minutes
    assert [r.status for r in d.retry_pending(force=True)] == ["sent"]


def test_console_and_file_backends(approval_world: ApprovalWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.notify.console import ConsoleNotifier
    from tasks.notify.jsonl import JsonlNotifier

    w = approval_world
    halt = w.open_halt()
    stream = io.StringIO()
    path = w.home / "elsewhere" / "n.jsonl"
    d = Dispatcher(ledger=w.ledger, notifiers=[ConsoleNotifier(stream), JsonlNotifier(path)])
    notify_halt_opened(halt_dict(halt), None, dispatcher=d)
    text = stream.getvalue()
    assert f"Scaling HALTED (L2 required): {halt.halt_id}" in text and "Safeguards missing: sg-base" in text
    assert f"rsp approve {halt.halt_id}" in text
    (line,) = read_notifications(path)
    assert line["key"] == f"{halt.halt_id}|halt.opened|file" and line["actions"] is True


def test_unknown_channel_is_recorded_not_fatal(approval_world: ApprovalWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.settings import get_settings

    monkeypatch.setenv("RSP_NOTIFY", "file,pager")
    get_settings.cache_clear()
    w = approval_world
    halt = w.open_halt()
    report = Dispatcher(ledger=w.ledger).send(msgs.opened(w.ledger, halt))
    assert {r.channel: r.status for r in report.results} == {"file": "sent", "pager": "failed"}
    assert "unknown notifier 'pager'" in w.ledger.events(kind="notification.failed")[0].payload["error"]


def test_secrets_never_reach_logs_ledger_outbox_or_files(
    approval_world: ApprovalWorld, slack_api: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    w = approval_world
    caplog.set_level(logging.DEBUG)
    logging.getLogger("rsp.notify.slack.sdk").setLevel(logging.DEBUG)  # slack-sdk's request/response dumps
    halt = w.open_halt()
    slack_api.fail_next(3, status=500)
    d = Dispatcher(ledger=w.ledger)
    notify_halt_opened(halt_dict(halt), {**APPLY, "halt_id": halt.halt_id}, dispatcher=d)
    d.retry_pending(force=True)
    logging.getLogger("rsp.notify").warning("token is %s", slack_api.token)  # even a careless log line
    assert slack_api.posts()
    export = io.StringIO()
    export_jsonl(w.ledger, export)
    outbox = (w.home / "notify" / "outbox.db").read_bytes()
    files = (w.home / "notifications.jsonl").read_text()
    for secret in (slack_api.token, TEST_SIGNING_SECRET):
        assert secret not in caplog.text
        assert secret not in export.getvalue()
        assert secret.encode() not in outbox
        assert secret not in files
    assert "[redacted]" in caplog.text
    assert any("Sending a request" in r.getMessage() for r in caplog.records)  # the debug dumps did run
