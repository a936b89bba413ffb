"""Approval settings, and the roster as a long-running service reads it.

| setting                    | env                          | default                                  |
| -------------------------- | ---------------------------- | ---------------------------------------- |
| roster                     | RSP_ROSTER                   | <home>/roster.yaml                       |
| approvals_state_url        | RSP_APPROVALS_STATE_URL      | sqlite:///<home>/approvals/state.db (replay guard) |
| approvals_max_body_bytes   | RSP_APPROVALS_MAX_BODY_BYTES | 65536                                    |
| (secret, env only)         | RSP_SLACK_SIGNING_SECRET     | none: the service refuses to start       |
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.notify.config import SIGNING_SECRET_ENV, configured, read_secret

REPLAY_WINDOW_S = 300  # Slack's own rule: a request older than five minutes is refused


@dataclass(frozen=True)
class ApprovalConfig:
    home: Path
    roster_path: Path
    state_url: str
    max_body_bytes: int = 64 * 1024
    replay_window_s: int = REPLAY_WINDOW_S
    signing_secret: str | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: Any = None, **overrides: Any) -> ApprovalConfig:
        if settings is None:
            from tasks.settings import get_settings

            settings = get_settings()
        from tasks.safeguards.roster import default_roster_path

        home = Path(getattr(settings, "home", None) or ".rsp")
        raw_max = configured(settings, "approvals_max_body_bytes", 64 * 1024)
        try:
            max_body = int(raw_max)
        except (TypeError, ValueError):
            raise ValueError(f"approvals_max_body_bytes (RSP_APPROVALS_MAX_BODY_BYTES): not an integer: {raw_max!r}"
                             ) from None
        values: dict[str, Any] = {
            "home": home,
            "roster_path": default_roster_path(settings),
            "state_url": configured(settings, "approvals_state_url",
                                    f"sqlite:///{(home / 'approvals' / 'state.db').resolve()}"),
            "max_body_bytes": max_body,
            "signing_secret": read_secret(SIGNING_SECRET_ENV),
        }
        values.update(overrides)
        return cls(**values)


class RosterCache:
    """The roster, re-read when its file changes (mtime or size), so a long-running service
    sees a role change without a restart. A roster that cannot be read raises RosterError:
    nobody is mapped, nobody votes (fail closed)."""

    def __init__(self, path: str | Path | None = None, roster: Any = None) -> None:
        self.path = None if path is None else Path(path)
        self._fixed = roster
        self._lock = threading.Lock()
        self._key: tuple[int, int] | None = None
        self._roster: Any = None

    def get(self) -> Any:
        from tasks.safeguards.roster import RosterError, load_roster

        if self._fixed is not None:
            return self._fixed
        if self.path is None:
            raise RosterError("no roster configured (RSP_ROSTER)")
        try:
            st = self.path.stat()
        except OSError:
            raise RosterError(f"{self.path}: no such roster file") from None
        key = (st.st_mtime_ns, st.st_size)
        with self._lock:
            if self._key != key:
                self._roster, self._key = load_roster(self.path), key
            return self._roster


__all__ = ["REPLAY_WINDOW_S", "ApprovalConfig", "RosterCache"]
