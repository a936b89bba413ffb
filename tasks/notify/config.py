"""Notification settings, and keeping secrets out of logs.

Secrets come from the environment only, never from the settings file (which is committed
and copied around): RSP_SLACK_BOT_TOKEN and RSP_SLACK_SIGNING_SECRET. Everything else
comes from `tasks.settings.Settings` where the field exists, else from RSP_<NAME>:

| setting                 | env                      | default                                  |
| ----------------------- | ------------------------ | ---------------------------------------- |
| notify                  | RSP_NOTIFY               | "file" (comma list: file, console, slack) |
| slack_channel           | RSP_SLACK_CHANNEL        | none (needed for slack)                  |
| slack_api_url           | RSP_SLACK_API_URL        | https://slack.com/api/                   |
| notify_file             | RSP_NOTIFY_FILE          | <home>/notifications.jsonl               |
| notify_outbox_url       | RSP_NOTIFY_OUTBOX_URL    | sqlite:///<home>/notify/outbox.db        |
| slack_min_interval_s    | RSP_SLACK_MIN_INTERVAL_S | 1.0 (Slack allows ~1 message/s/channel)  |
| slack_max_retries       | RSP_SLACK_MAX_RETRIES    | 2 (per 429 / 5xx, inside one send)       |
| notify_retry_base_s     | RSP_NOTIFY_RETRY_BASE_S  | 30 (outbox backoff: 30 s, 60 s, ... 1 h) |
| PREFECT_UI_URL          | PREFECT_UI_URL           | Prefect's setting (links to flow runs)   |
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TOKEN_ENV = "RSP_SLACK_BOT_TOKEN"
SIGNING_SECRET_ENV = "RSP_SLACK_SIGNING_SECRET"
SECRET_ENVS = (TOKEN_ENV, SIGNING_SECRET_ENV)
REDACTED = "[redacted]"


def read_secret(env: str) -> str | None:
    value = os.environ.get(env, "").strip()
    return value or None


def known_secrets() -> list[str]:
    return [s for s in (read_secret(e) for e in SECRET_ENVS) if s and len(s) >= 4]


def redact(text: str, secrets: list[str] | None = None) -> str:
    for secret in known_secrets() if secrets is None else secrets:
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    return text


class RedactSecrets(logging.Filter):
    """Replace any secret value in a record's message with [redacted]. Installed on our loggers
    and on the logger we hand to slack-sdk's WebClient (which already hides Authorization,
    but a secret can also reach a message through an error text)."""

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = known_secrets()
        if not secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format is not ours to fix; keep it as is
            return True
        cleaned = redact(message, secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def safe_logger(name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    if not any(isinstance(f, RedactSecrets) for f in logger.filters):
        logger.addFilter(RedactSecrets())
    return logger


def configured(settings: Any, name: str, default: Any = None) -> Any:
    """$RSP_<NAME> if set, else `settings.<name>` if set, else `default`.

    The environment is read first, as Settings itself ranks it above the config file, so a
    value changed after the (cached) settings were built still takes effect."""
    env = os.environ.get(f"RSP_{name.upper()}")
    if env:
        return env
    value = getattr(settings, name, None) if settings is not None else None
    return value if value is not None and value != "" else default


def _float(settings: Any, name: str, default: float) -> float:
    raw = configured(settings, name, default)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{name} (RSP_{name.upper()}): not a number: {raw!r}") from None
    if value < 0:
        raise ValueError(f"{name} (RSP_{name.upper()}): must be >= 0, got {value}")
    return value


def prefect_ui_url() -> str | None:
    url = os.environ.get("PREFECT_UI_URL")
    # Only consult Prefect's settings when Prefect is already loaded (a flow run is the only place
    # with a run to link to); importing it costs a second on the CLI's fast path.
    if not url and "prefect" in sys.modules:
        try:
            from prefect.settings import PREFECT_UI_URL

            url = PREFECT_UI_URL.value()
        except Exception:  # noqa: BLE001 - no Prefect, no link
            url = None
    return str(url).rstrip("/") if url else None


@dataclass(frozen=True)
class NotifyConfig:
    channels: tuple[str, ...]
    home: Path
    file_path: Path
    outbox_url: str
    slack_channel: str | None = None
    slack_api_url: str | None = None
    slack_min_interval_s: float = 1.0
    slack_max_retries: int = 2
    retry_base_s: float = 30.0
    ui_url: str | None = None
    # Never printed: repr=False keeps it out of reprs, tracebacks' locals and logs.
    slack_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: Any = None, **overrides: Any) -> NotifyConfig:
        if settings is None:
            from tasks.settings import get_settings

            settings = get_settings()
        home = Path(getattr(settings, "home", None) or ".rsp")
        raw_channels = overrides.pop("channels", None) or configured(settings, "notify", "file")
        channels = tuple(raw_channels) if not isinstance(raw_channels, str) else tuple(
            c.strip().lower() for c in raw_channels.split(",") if c.strip())
        file_path = Path(configured(settings, "notify_file", home / "notifications.jsonl"))
        outbox_default = f"sqlite:///{(home / 'notify' / 'outbox.db').resolve()}"
        values: dict[str, Any] = {
            "channels": channels,
            "home": home,
            "file_path": file_path,
            "outbox_url": configured(settings, "notify_outbox_url", outbox_default),
            "slack_channel": configured(settings, "slack_channel"),
            "slack_api_url": configured(settings, "slack_api_url"),
            "slack_min_interval_s": _float(settings, "slack_min_interval_s", 1.0),
            "slack_max_retries": int(_float(settings, "slack_max_retries", 2)),
            "retry_base_s": _float(settings, "notify_retry_base_s", 30.0),
            "ui_url": prefect_ui_url(),
            "slack_token": read_secret(TOKEN_ENV),
        }
        values.update(overrides)
        return cls(**values)


__all__ = [
    "REDACTED",
    "SIGNING_SECRET_ENV",
    "TOKEN_ENV",
    "NotifyConfig",
    "RedactSecrets",
    "configured",
    "known_secrets",
    "prefect_ui_url",
    "read_secret",
    "redact",
    "safe_logger",
]
