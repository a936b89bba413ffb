"""Console notifier: a few plain lines on stderr (the embedded default alongside the file)."""

from __future__ import annotations

import sys
import threading
from typing import IO, Any

from tasks.notify.base import NOTIFIERS, Notification, Notifier

_LOCK = threading.Lock()  # one notification's lines stay together when threads notify at once
_MARK = {"critical": "!!", "warning": "! ", "info": "  "}


class ConsoleNotifier(Notifier):
    name = "console"

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream

    def send(self, notification: Notification, parent: dict[str, Any] | None = None) -> dict[str, Any]:
        stream = self._stream or sys.stderr  # looked up per call: pytest and daemons swap stderr
        mark = _MARK.get(notification.severity, "  ")
        lines = [f"[rsp {mark}] {notification.title}"]
        lines += [f"    {line}" for line in notification.text.splitlines() if line.strip()]
        with _LOCK:
            stream.write("\n".join(lines) + "\n")
            stream.flush()
        return {}


@NOTIFIERS.register("console")
def _console(config: Any) -> Notifier:
    return ConsoleNotifier()


__all__ = ["ConsoleNotifier"]
