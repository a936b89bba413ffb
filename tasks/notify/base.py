"""The notifier interface, the notification value, and the registry of backends.

A `Notification` is plain data about one step of one halt (opened, applied, a vote, lifted,
refused...). Every backend renders the same value its own way: Slack as Block Kit with
approve/reject buttons, the console as a few lines of text, the JSONL file as one object
per line. The dispatcher (`tasks.notify.dispatch`) decides whether to send at all
(idempotency against the ledger), and what to do when sending fails (record and retry).

Idempotency key: (halt_id, event_key, channel). `event_key` is the event kind for events
that happen once per halt (`halt.opened`, `halt.lifted`) and the kind plus a discriminator
for those that repeat (`vote.recorded:<ledger seq>`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from tasks.registry import Registry, UnknownPlugin


class NotifyError(RuntimeError):
    """A backend could not deliver a notification. The message is one line, secret-free."""


@dataclass(frozen=True)
class Notification:
    halt_id: str
    event: str  # the kind of step: halt.opened, halt.applied, vote.recorded, halt.lifted, ...
    event_key: str  # unique per halt: event, or event:<discriminator> for repeating events
    title: str
    text: str  # plain text body: console, file, and Slack's notification fallback
    facts: dict[str, Any] = field(default_factory=dict)  # structured content for rich renderers
    actions: bool = False  # offer Approve / Reject (Slack buttons)
    severity: str = "info"  # info | warning | critical

    def key(self, channel: str) -> str:
        return f"{self.halt_id}|{self.event_key}|{channel}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Notification:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


class Notifier(ABC):
    """One backend. `send` delivers or raises NotifyError; it returns a small reference to what
    was delivered (Slack: channel and ts), recorded in the ledger with `notification.sent`."""

    name: str = "notifier"
    threads: bool = False  # True: follow-ups are posted as replies to the halt.opened message

    @abstractmethod
    def send(self, notification: Notification, parent: dict[str, Any] | None = None) -> dict[str, Any]:
        """Deliver; `parent` is the reference returned when this halt's halt.opened was sent."""

    def update_parent(self, parent: dict[str, Any], notification: Notification) -> None:
        """Refresh the original halt message (Slack: chat.update). Default: nothing to refresh."""


NotifierFactory = Callable[[Any], Notifier]  # (NotifyConfig) -> Notifier

# Built-ins by module path: registering must not import slack_sdk for a file-only setup.
NOTIFIERS: Registry[NotifierFactory] = Registry(
    "notifier",
    entry_point_group="rsp_gate.notifiers",
    builtins={"console": "tasks.notify.console", "file": "tasks.notify.jsonl", "slack": "tasks.notify.slack"},
)


def build_notifier(name: str, config: Any) -> Notifier:
    try:
        factory = NOTIFIERS.get(name)
    except UnknownPlugin as exc:
        raise ValueError(f"unknown notifier {name!r} in RSP_NOTIFY; known: {', '.join(exc.known)}") from None
    return factory(config)


__all__ = [
    "NOTIFIERS",
    "Notification",
    "Notifier",
    "NotifierFactory",
    "NotifyError",
    "build_notifier",
]
