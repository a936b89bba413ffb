"""JSONL file notifier (the embedded default): one JSON object per notification, appended.

Lines are written whole under an exclusive lock (fcntl where available), so several
processes notifying at once never interleave half-lines. Readers tail the file or load it
with `read_notifications`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tasks.notify.base import NOTIFIERS, Notification, Notifier, NotifyError


@contextmanager
def _locked(fh: Any) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: O_APPEND alone keeps small writes whole
        yield
        return
    fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


class JsonlNotifier(Notifier):
    name = "file"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def send(self, notification: Notification, parent: dict[str, Any] | None = None) -> dict[str, Any]:
        line = {
            "at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            "key": notification.key(self.name),
            **notification.to_dict(),
        }
        text = json.dumps(line, sort_keys=True, ensure_ascii=False, default=str) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh, _locked(fh):
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise NotifyError(f"cannot append to notification file {self.path}: {exc.strerror or exc}") from None
        return {"path": str(self.path)}


def read_notifications(path: str | Path) -> list[dict[str, Any]]:
    """Every notification in the file, oldest first; a torn last line (crash mid-write) is skipped."""
    out: list[dict[str, Any]] = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return out
    for raw in text.splitlines():
        try:
            out.append(json.loads(raw))
        except ValueError:
            continue
    return out


@NOTIFIERS.register("file")
def _file(config: Any) -> Notifier:
    return JsonlNotifier(config.file_path)


__all__ = ["JsonlNotifier", "read_notifications"]
