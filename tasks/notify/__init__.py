"""Notifications: people hear about a halt at once, and about every step after it.

One interface (`Notifier`), three backends registered by name: `slack` (Block Kit with
Approve / Reject buttons, threaded follow-ups, through slack-sdk), `console` (stderr) and
`file` (JSONL under <home>, the embedded default). Which ones run: settings `notify`
(RSP_NOTIFY="file,console,slack").

    from tasks.notify import notify_halt_opened, notify, retry_pending
    notify_halt_opened(halt, apply_report)      # the halt flow's hook
    retry_pending()                             # watch tick / `rsp notify retry`

Each (halt, event, channel) is delivered once: the ledger's `notification.sent` events are
the record, an outbox (<home>/notify/outbox.db) coordinates delivery and keeps failures
(`notification.failed`) for retry. slack_sdk is imported only when Slack is used.
"""

from tasks.notify.base import NOTIFIERS, Notification, Notifier, NotifyError
from tasks.notify.config import NotifyConfig
from tasks.notify.dispatch import (
    ChannelResult,
    Dispatcher,
    DispatchReport,
    notify,
    notify_halt_opened,
    retry_pending,
)

__all__ = [
    "NOTIFIERS",
    "ChannelResult",
    "DispatchReport",
    "Dispatcher",
    "Notification",
    "Notifier",
    "NotifyConfig",
    "NotifyError",
    "notify",
    "notify_halt_opened",
    "retry_pending",
]
