"""Sending notifications: once per (halt, event, channel), recorded, and retried until delivered.

For each configured channel the dispatcher:

1. skips the notification if the ledger already holds `notification.sent` for its key
   (idempotent across processes and restarts: the same event never posts twice);
2. claims the key in the outbox (so two processes never deliver it at once);
3. delivers; on success records `notification.sent` (with the backend's reference: Slack's
   channel and ts, which later replies thread under), on failure records
   `notification.failed` and leaves the outbox row `failed` with a backoff;
4. `retry_pending()` (a watch tick, `rsp notify retry`) delivers what is due again.

A channel that is misconfigured (no token, unknown name) fails the same way, so nothing is
lost while someone fixes the configuration. Secrets never reach the ledger, the outbox or
a log: errors are built from status codes and Slack's error names, then redacted.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Self

from tasks.notify.base import Notification, Notifier, NotifyError, build_notifier
from tasks.notify.config import NotifyConfig, redact, safe_logger
from tasks.notify.outbox import Outbox

if TYPE_CHECKING:
    from tasks.ledger import Ledger

log = safe_logger("rsp.notify")


@dataclass
class ChannelResult:
    channel: str
    key: str
    status: str  # sent | skipped | failed | busy
    ref: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class DispatchReport:
    halt_id: str
    event_key: str
    results: list[ChannelResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.status in ("sent", "skipped", "busy") for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {"halt_id": self.halt_id, "event_key": self.event_key, "ok": self.ok,
                "results": [asdict(r) for r in self.results]}


class _Broken(Notifier):
    """Stands in for a channel that cannot be built, so its notifications are kept and retried."""

    def __init__(self, name: str, error: str) -> None:
        self.name, self._error = name, error

    def send(self, notification: Notification, parent: dict[str, Any] | None = None) -> dict[str, Any]:
        raise NotifyError(self._error)


class Dispatcher:
    def __init__(self, *, ledger: Ledger | None = None, settings: Any = None, config: NotifyConfig | None = None,
                 notifiers: list[Notifier] | None = None, outbox: Outbox | None = None) -> None:
        from tasks.ledger import ledger_or_configured

        self.ledger = ledger_or_configured(ledger)
        self.config = config or NotifyConfig.from_settings(settings)
        self._notifiers = notifiers
        self._outbox = outbox
        self._owns_outbox = outbox is None

    def close(self) -> None:
        """Release the outbox connection this dispatcher opened (not one it was given)."""
        if self._owns_outbox and self._outbox is not None:
            self._outbox.close()
            self._outbox = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def outbox(self) -> Outbox:
        if self._outbox is None:
            self._outbox = Outbox(self.config.outbox_url)
        return self._outbox

    @property
    def notifiers(self) -> list[Notifier]:
        if self._notifiers is None:
            built: list[Notifier] = []
            for name in self.config.channels:
                try:
                    built.append(build_notifier(name, self.config))
                except Exception as exc:  # noqa: BLE001 - a broken channel is recorded and retried, never fatal
                    built.append(_Broken(name, redact(f"{name}: cannot be set up: {exc}")))
            self._notifiers = built
        return self._notifiers

    def notifier(self, channel: str) -> Notifier | None:
        return next((n for n in self.notifiers if n.name == channel), None)

    # -- ledger lookups ---------------------------------------------------------------------

    def sent_payloads(self, halt_id: str) -> dict[str, dict[str, Any]]:
        from tasks.ledger.events import NotificationSent

        events = self.ledger.events(kind=NotificationSent.KIND, subject=halt_id)
        return {str(e.payload.get("key")): e.payload for e in events}

    def parent_ref(self, halt_id: str, channel: str) -> dict[str, Any] | None:
        from tasks.ledger.events import HaltOpened

        sent = self.sent_payloads(halt_id).get(f"{halt_id}|{HaltOpened.KIND}|{channel}")
        return None if sent is None else sent.get("ref")

    # -- sending ----------------------------------------------------------------------------

    def send(self, notification: Notification, *, channels: list[str] | None = None) -> DispatchReport:
        report = DispatchReport(notification.halt_id, notification.event_key)
        sent = self.sent_payloads(notification.halt_id)
        for notifier in self.notifiers:
            if channels is not None and notifier.name not in channels:
                continue
            key = notification.key(notifier.name)
            if key in sent:
                report.results.append(ChannelResult(notifier.name, key, "skipped", ref=sent[key].get("ref")))
                continue
            report.results.append(self._deliver(notifier, notification, key))
        return report

    def _deliver(self, notifier: Notifier, n: Notification, key: str, *, force: bool = False) -> ChannelResult:
        if not self.outbox.claim(key, n.halt_id, notifier.name, n.event_key, n.to_dict(), force=force):
            row = self.outbox.get(key)
            if row is not None and row.state == "sent" and row.ref is not None:
                return self._record_sent(notifier.name, n, key, row.ref)  # delivered before a crash: record it
            return ChannelResult(notifier.name, key, "busy" if row and row.state == "sending" else "skipped")
        from tasks.ledger.events import HaltOpened, NotificationFailed

        parent = None
        if notifier.threads and n.event != HaltOpened.KIND:
            parent = self.parent_ref(n.halt_id, notifier.name)
        try:
            ref = notifier.send(n, parent)
        except Exception as exc:  # noqa: BLE001 - any failure is recorded and retried; never lost
            error = redact(str(exc) if isinstance(exc, NotifyError) else f"{type(exc).__name__}: {exc}")[:500]
            row = self.outbox.mark_failed(key, error, self.config.retry_base_s)
            attempts = row.attempts if row else 1
            self.ledger.record(NotificationFailed(
                halt_id=n.halt_id, key=key, event=n.event, event_key=n.event_key,
                channel=notifier.name, error=error, attempts=attempts,
                next_attempt_at=row.next_attempt_at if row else None,
            ), n.halt_id)
            log.warning("notification %s failed (attempt %d), kept in the outbox for retry: %s", key, attempts, error)
            return ChannelResult(notifier.name, key, "failed", error=error)
        self.outbox.mark_sent(key, ref)
        return self._record_sent(notifier.name, n, key, ref)

    def _record_sent(self, channel: str, n: Notification, key: str, ref: dict[str, Any]) -> ChannelResult:
        payload: dict[str, Any] = {"halt_id": n.halt_id, "key": key, "event": n.event, "event_key": n.event_key,
                                   "channel": channel, "ref": ref}
        from tasks.ledger.events import HaltOpened, NotificationSent

        if n.event == HaltOpened.KIND:
            payload["links"] = n.facts.get("links") or {}

        self.ledger.record(NotificationSent.from_payload(payload), n.halt_id)
        self.outbox.mark_recorded(key)
        return ChannelResult(channel, key, "sent", ref=ref)

    def retry_pending(self, *, force: bool = False) -> list[ChannelResult]:
        """Deliver every outbox entry that is due (all of them with `force`); returns what happened."""
        from tasks.ledger.events import HaltOpened

        results: list[ChannelResult] = []
        sent_cache: dict[str, dict[str, dict[str, Any]]] = {}
        for row in self.outbox.pending(force=force):
            sent = sent_cache.setdefault(row.halt_id, self.sent_payloads(row.halt_id))
            if row.key in sent:  # recorded by another process meanwhile
                self.outbox.mark_recorded(row.key)
                results.append(ChannelResult(row.channel, row.key, "skipped"))
                continue
            n = Notification.from_dict(row.notification)
            if row.state == "sent" and row.ref is not None:
                results.append(self._record_sent(row.channel, n, row.key, row.ref))
                continue
            notifier = self.notifier(row.channel) or _Broken(row.channel, f"channel {row.channel!r} is no longer "
                                                                          "configured in RSP_NOTIFY")
            results.append(self._deliver(notifier, n, row.key, force=True))
            if results[-1].status == "sent" and n.event == HaltOpened.KIND:
                sent_cache.pop(row.halt_id, None)  # later rows of this halt can now thread under it
        return results

    def refresh_parent(self, halt_id: str) -> None:
        """Bring the original halt message up to date (status line, buttons). Best effort: the
        threaded follow-ups carry the same news, so a failed refresh is logged, not retried."""
        threading = [n for n in self.notifiers if n.threads]
        if not threading:
            return
        from tasks.ledger.events import HaltOpened
        from tasks.notify import messages

        halt = self.ledger.halt(halt_id)
        if halt is None:
            return
        sent = self.sent_payloads(halt_id)
        for notifier in threading:
            entry = sent.get(f"{halt_id}|{HaltOpened.KIND}|{notifier.name}")
            if not entry or not entry.get("ref"):
                continue
            link = (entry.get("links") or {}).get("flow_run")
            try:
                n = messages.opened(self.ledger, halt, flow_run_link=link, with_status=True)
                notifier.update_parent(entry["ref"], n)
            except Exception as exc:  # noqa: BLE001 - best effort, see docstring
                log.warning("could not refresh the halt message for %s on %s: %s", halt_id, notifier.name,
                            redact(str(exc))[:300])


# -- module-level entry points ------------------------------------------------------------------


def _current_flow_run_link(ui_url: str | None) -> str | None:
    if "prefect" not in sys.modules:
        return None
    try:
        from prefect.context import FlowRunContext

        ctx = FlowRunContext.get()
        run_id = getattr(getattr(ctx, "flow_run", None), "id", None)
    except Exception:  # noqa: BLE001 - no context, no link
        return None
    if run_id is None or not ui_url:
        return None
    return f"{ui_url}/runs/flow-run/{run_id}"


def notify_halt_opened(halt: Mapping[str, Any], apply_report: Mapping[str, Any] | None, *,
                       ledger: Ledger | None = None, settings: Any = None,
                       dispatcher: Dispatcher | None = None, flow_run_link: str | None = None) -> dict[str, Any]:
    """Tell people a halt was opened (the message with Approve / Reject) and whether it was applied.

    `halt` is the halt flow's record (`{"halt_id": ..., ...}`) or a halt.opened payload;
    `apply_report` is `ApplyReport.to_dict()`. Idempotent per halt and channel: calling it
    again sends nothing already sent. Never raises for a delivery failure (it is recorded
    and retried); raises KeyError for a halt the ledger does not hold."""
    own = dispatcher is None
    d = dispatcher or Dispatcher(ledger=ledger, settings=settings)
    try:
        halt_id = str(halt["halt_id"])
        record = d.ledger.halt(halt_id)
        if record is None:
            raise KeyError(f"no halt {halt_id!r} in ledger {d.ledger.url}")
        from tasks.ledger.events import HaltOpened
        from tasks.notify import messages

        link = flow_run_link or _current_flow_run_link(d.config.ui_url)
        opened = d.send(messages.opened(d.ledger, record, apply_report=apply_report, flow_run_link=link))
        out: dict[str, Any] = {HaltOpened.KIND: opened.to_dict()}
        if apply_report is not None:
            out["apply"] = d.send(messages.applied(halt_id, apply_report)).to_dict()
        return out
    finally:
        if own:
            d.close()


def notify(notification: Notification, *, ledger: Ledger | None = None, settings: Any = None,
           dispatcher: Dispatcher | None = None, refresh: bool = True) -> DispatchReport:
    """Send one notification on every configured channel; refresh the halt message after."""
    own = dispatcher is None
    d = dispatcher or Dispatcher(ledger=ledger, settings=settings)
    try:
        report = d.send(notification)
        if refresh:
            d.refresh_parent(notification.halt_id)
        return report
    finally:
        if own:
            d.close()


def retry_pending(*, ledger: Ledger | None = None, settings: Any = None, dispatcher: Dispatcher | None = None,
                  force: bool = False) -> list[ChannelResult]:
    """Retry every undelivered notification that is due (call it from a watch tick or a CLI)."""
    if dispatcher is not None:
        return dispatcher.retry_pending(force=force)
    with Dispatcher(ledger=ledger, settings=settings) as d:
        return d.retry_pending(force=force)


__all__ = ["ChannelResult", "DispatchReport", "Dispatcher", "notify", "notify_halt_opened", "retry_pending"]
