"""Slack notifier: Block Kit messages through slack-sdk's WebClient.

The halt.opened message carries everything a reviewer needs (required level, thresholds
crossed with values and intervals, safeguards missing, what lifts the halt, a link to the
Prefect flow run) and Approve / Reject buttons whose `value` is the halt id; the approval
service receives the clicks. Later steps (applied, each vote, lifted, refused) are replies
in that message's thread (`thread_ts`), and the original message is refreshed with
`chat.update` so its status line and buttons always say where the halt stands.

Transport: retry handlers for 429 (honours Retry-After), 5xx (500/503, backoff) and
connection resets, as PITFALLS.md says the defaults only cover connection errors. Slack
allows about one message per second per channel, so posts to one channel are paced
(`slack_min_interval_s`). The token comes from RSP_SLACK_BOT_TOKEN and the WebClient logs
through a logger that redacts secrets.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from tasks.notify.base import NOTIFIERS, Notification, Notifier, NotifyError
from tasks.notify.config import TOKEN_ENV, redact, safe_logger

APPROVE_ACTION = "rsp_approve"
REJECT_ACTION = "rsp_reject"
ACTIONS_BLOCK = "rsp_halt_actions"
MAX_SECTION = 2900  # Slack's limit is 3000 characters per section text
MAX_HEADER = 150

_pace_lock = threading.Lock()
_last_post: dict[str, float] = {}  # channel -> monotonic time of the last post from this process


def _clip(text: str, limit: int = MAX_SECTION) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text)}}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "n/a" if value is None else str(value)


def threshold_line(t: dict[str, Any]) -> str:
    line = f"• *{t.get('name') or t.get('id')}* (`{t.get('id')}`): *{t.get('status')}*"
    if t.get("benchmark"):
        interval = ""
        if t.get("ci_low") is not None and t.get("ci_high") is not None:
            interval = f" [{_fmt(t['ci_low'])}, {_fmt(t['ci_high'])}]"
        line += (f" — {t['benchmark']} {t.get('metric') or ''} = {_fmt(t.get('value'))}{interval}"
                 f" {t.get('comparison') or 'vs'} threshold {_fmt(t.get('threshold'))}")
    elif t.get("reason"):
        line += f" — {t['reason']}"
    return line


def halt_blocks(n: Notification) -> list[dict[str, Any]]:
    """The halt message: summary, thresholds, safeguards, lift rule, link, status, buttons."""
    f = n.facts
    status = f.get("status_line")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(n.title, MAX_HEADER), "emoji": True}},
    ]
    if status:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(f"*Status:* {status}")}]})
    summary = [f"*Halt* `{n.halt_id}` stops {f.get('scope') or 'scaling'}."]
    if f.get("cause"):
        summary.append(f"*Cause:* {f['cause']}")
    blocks.append(_section("\n".join(summary)))
    fields = []
    for label, key in (("Required level", "required_level"), ("Checkpoint", "checkpoint"), ("Policy", "policy")):
        if f.get(key):
            fields.append({"type": "mrkdwn", "text": _clip(f"*{label}:*\n{f[key]}", 1900)})
    if fields:
        blocks.append({"type": "section", "fields": fields})
    thresholds = f.get("thresholds") or []
    if thresholds:
        blocks.append(_section("*Thresholds crossed*\n" + "\n".join(threshold_line(t) for t in thresholds)))
    missing = f.get("safeguards_missing") or []
    if missing:
        lines = [f"• `{s['id']}` ({s.get('state') or 'unmet'}): {s.get('evidence') or 'not verified'}" for s in missing]
        blocks.append(_section("*Safeguards missing*\n" + "\n".join(lines)))
    if f.get("lifts_when"):
        blocks.append(_section(f"*Lifts when:* {f['lifts_when']}"))
    context = []
    if f.get("enforcement"):
        context.append(f"Enforcement: {f['enforcement']}")
    link = (f.get("links") or {}).get("flow_run")
    if link:
        context.append(f"<{link}|Prefect flow run>")
    if context:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(" · ".join(context))}]})
    if n.actions:
        blocks.append({
            "type": "actions",
            "block_id": ACTIONS_BLOCK,
            "elements": [
                {"type": "button", "action_id": APPROVE_ACTION, "style": "primary", "value": n.halt_id,
                 "text": {"type": "plain_text", "text": "Approve lifting"}},
                {"type": "button", "action_id": REJECT_ACTION, "style": "danger", "value": n.halt_id,
                 "text": {"type": "plain_text", "text": "Reject"},
                 "confirm": {
                     "title": {"type": "plain_text", "text": "Reject lifting?"},
                     "text": {"type": "plain_text",
                              "text": "This ends the current approval round; the halt stays in force."},
                     "confirm": {"type": "plain_text", "text": "Reject"},
                     "deny": {"type": "plain_text", "text": "Cancel"},
                 }},
            ],
        })
    return blocks


def followup_blocks(n: Notification) -> list[dict[str, Any]]:
    return [_section(f"*{n.title}*\n{n.text}")]


def render(n: Notification) -> list[dict[str, Any]]:
    from tasks.ledger.events import HaltOpened

    return halt_blocks(n) if n.event == HaltOpened.KIND else followup_blocks(n)


class SlackNotifier(Notifier):
    name = "slack"
    threads = True

    def __init__(self, token: str | None, channel: str | None, *, base_url: str | None = None,
                 min_interval_s: float = 1.0, max_retries: int = 2, timeout_s: int = 10) -> None:
        self._token = token
        self.channel = channel
        self.base_url = base_url
        self.min_interval_s = min_interval_s
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self._client: Any = None

    def __repr__(self) -> str:
        return f"SlackNotifier(channel={self.channel!r}, base_url={self.base_url!r})"

    @property
    def client(self) -> Any:
        if self._client is None:
            from slack_sdk import WebClient
            from slack_sdk.http_retry.builtin_handlers import (
                ConnectionErrorRetryHandler,
                RateLimitErrorRetryHandler,
                ServerErrorRetryHandler,
            )

            if not self._token:
                raise NotifyError(f"slack: no bot token; set {TOKEN_ENV}")
            kwargs: dict[str, Any] = {}
            if self.base_url:
                kwargs["base_url"] = self.base_url if self.base_url.endswith("/") else self.base_url + "/"
            self._client = WebClient(
                token=self._token, timeout=self.timeout_s, logger=safe_logger("rsp.notify.slack.sdk"),
                retry_handlers=[
                    ConnectionErrorRetryHandler(max_retry_count=1),
                    RateLimitErrorRetryHandler(max_retry_count=self.max_retries),
                    ServerErrorRetryHandler(max_retry_count=self.max_retries),
                ],
                **kwargs,
            )
        return self._client

    def _pace(self, channel: str) -> None:
        # ~1 message/s per channel (Slack's documented limit); 429s are still handled by the retry handler.
        if self.min_interval_s <= 0:
            return
        with _pace_lock:
            wait = _last_post.get(channel, float("-inf")) + self.min_interval_s - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            _last_post[channel] = time.monotonic()

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        from slack_sdk.errors import SlackApiError, SlackClientError

        try:
            return fn(**kwargs)
        except SlackApiError as exc:
            resp = exc.response
            error = resp.get("error") if hasattr(resp, "get") else None
            raise NotifyError(redact(f"slack {what}: HTTP {getattr(resp, 'status_code', '?')}"
                                     f" {error or 'error'}")) from None
        except SlackClientError as exc:
            raise NotifyError(redact(f"slack {what}: {type(exc).__name__}: {exc}")[:300]) from None
        except OSError as exc:  # URLError, timeouts, refused connections
            raise NotifyError(redact(f"slack {what}: {type(exc).__name__}: {exc}")[:300]) from None

    def send(self, notification: Notification, parent: dict[str, Any] | None = None) -> dict[str, Any]:
        from tasks.ledger.events import HaltOpened

        channel = (parent or {}).get("channel") or self.channel
        if not channel:
            raise NotifyError("slack: no channel; set RSP_SLACK_CHANNEL")
        kwargs: dict[str, Any] = {"channel": channel, "text": _clip(f"{notification.title}: {notification.text}", 3000),
                                  "blocks": render(notification), "unfurl_links": False}
        if parent and parent.get("ts") and notification.event != HaltOpened.KIND:
            kwargs["thread_ts"] = parent["ts"]
        client = self.client
        self._pace(channel)
        resp = self._call("chat.postMessage", client.chat_postMessage, **kwargs)
        return {"channel": resp.get("channel") or channel, "ts": resp.get("ts"),
                **({"thread_ts": kwargs["thread_ts"]} if "thread_ts" in kwargs else {})}

    def update_parent(self, parent: dict[str, Any], notification: Notification) -> None:
        if not parent.get("channel") or not parent.get("ts"):
            return
        self._call("chat.update", self.client.chat_update, channel=parent["channel"], ts=parent["ts"],
                   text=_clip(f"{notification.title}: {notification.text}", 3000), blocks=render(notification))


@NOTIFIERS.register("slack")
def _slack(config: Any) -> Notifier:
    return SlackNotifier(config.slack_token, config.slack_channel, base_url=config.slack_api_url,
                         min_interval_s=config.slack_min_interval_s, max_retries=config.slack_max_retries)


__all__ = ["ACTIONS_BLOCK", "APPROVE_ACTION", "REJECT_ACTION", "SlackNotifier", "halt_blocks", "render"]
