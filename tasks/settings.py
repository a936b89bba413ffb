"""Settings: environment variables (RSP_*) over an optional config file (rsp.yaml) over embedded defaults.

The one configuration model of the gate. It lives here, below every user of it (tasks,
flows, the CLI), so adapters are built from a typed `Settings` and nothing reaches up
into the CLI package for configuration.

With nothing set, everything lives under ./.rsp: a local checkpoint folder, a
SQLite ledger, notifications to a JSON Lines file. Production points the same
fields at S3, PostgreSQL and Slack.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)


def _config_file() -> Path:
    return Path(os.environ.get("RSP_CONFIG", "rsp.yaml"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RSP_", extra="forbid")

    home: Path = Field(Path(".rsp"), description="Folder for embedded-default state (ledger, checkpoints, runs).")
    policy: str = Field("anthropic-rsp", description="A bundled framework id or a path to a policy YAML file.")
    ledger_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite:///<home>/ledger.db.")
    ledger_id: str | None = Field(
        None, description="The identity the ledger must have (`rsp init` prints it); a ledger with another "
                          "identity, or none, closes the scaling gate. Unset: any ledger at ledger_url."
    )
    checkpoint_store: str | None = Field(
        None, description="file:///path or s3://bucket/prefix; default <home>/checkpoints."
    )
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_profile: str | None = None
    evidence_store: str | None = Field(None, description="Folder or s3://bucket/prefix of safeguard evidence.")
    runs_dir: Path | None = Field(None, description="Where per-evaluation folders (logs, reports) go.")
    dask_address: str | None = Field(
        None, description="tcp://host:port of a long-lived Dask scheduler: the 'auto' task runner fans benchmarks "
                          "out to its workers; unset, to local processes.")
    notify: str = Field("file", description="Comma-separated notifiers: file, console, slack.")
    slack_channel: str | None = None
    slack_api_url: str | None = Field(None, description="Override Slack's Web API base URL (tests, proxies).")
    notify_file: Path | None = Field(None, description="JSONL notifications; default <home>/notifications.jsonl.")
    notify_outbox_url: str | None = Field(None, description="Outbox of undelivered notifications (SQLAlchemy URL).")
    notify_retry_base_s: float = Field(30.0, ge=0, description="First retry delay of a failed notification.")
    slack_min_interval_s: float = Field(1.0, ge=0, description="Pacing per Slack channel (Slack allows ~1/s).")
    slack_max_retries: int = Field(2, ge=0, le=10)
    approvals_state_url: str | None = Field(None, description="Replay guard of the approval service.")
    approvals_max_body_bytes: int = Field(65536, ge=1024)
    # Secrets (RSP_SLACK_BOT_TOKEN, RSP_SLACK_SIGNING_SECRET) are read from the environment only,
    # never stored in settings, so they cannot leak into a dumped configuration.
    max_concurrent_evaluations: int = Field(2, ge=1, le=64)
    claim_lease_s: float = Field(900.0, gt=0)
    scaling_tag: str = Field("scaling", description="Prefect deployments with this tag are halted by a halt.")
    # Comma-separated in the environment (RSP_SCALING_DEPLOYMENTS=train/big,ship/api), a list in rsp.yaml.
    scaling_deployments: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Deployment names halted besides those tagged with scaling_tag."
    )
    safeguard_bucket: str | None = Field(
        None, description="Bucket the checkpoint_bucket_hardening check inspects; default: the s3:// checkpoint store's."
    )
    misuse_probe_url: str | None = Field(None, description="Base URL of the deployed misuse classifier to probe.")
    served_base_url: str | None = Field(
        None, description="OpenAI-compatible /v1 URL of the server (vLLM, SGLang) for kind inspect checkpoints "
        "whose manifest names none."
    )
    misuse_probe_timeout_s: float = Field(5.0, gt=0)
    roster: Path | None = Field(None, description="Who holds which role (YAML); default <home>/roster.yaml.")
    gate_key: Path | None = Field(
        None, description="The gate's ed25519 signing key (OpenSSH or PEM); default <home>/keys/gate, created "
                          "on first use (mode 0600) and its public key recorded once in the ledger (gate.key)."
    )
    heads_dir: Path | None = Field(None, description="Signed ledger heads (C2SP-style notes); default <home>/heads.")
    head_publish_uri: str | None = Field(
        None, description="s3://bucket/prefix where each signed head is also written, write-once: the bucket "
                          "must have Object Lock (each head gets COMPLIANCE retention). Unset: kept locally only."
    )
    head_retention_days: int = Field(3650, ge=1, description="Object Lock retention of each published head.")

    @field_validator("scaling_deployments", mode="before")
    @classmethod
    def _split_names(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if _config_file().is_file():
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=_config_file()))
        return tuple(sources)

    @property
    def resolved_ledger_url(self) -> str:
        return self.ledger_url or f"sqlite:///{(self.home / 'ledger.db').resolve()}"

    @property
    def resolved_checkpoint_store(self) -> str:
        return self.checkpoint_store or (self.home / "checkpoints").resolve().as_uri()

    @property
    def resolved_runs_dir(self) -> Path:
        return self.runs_dir or self.home / "runs"

    @property
    def resolved_evidence_store(self) -> str:
        return self.evidence_store or str(self.home / "evidence")

    @property
    def resolved_gate_key(self) -> Path:
        return self.gate_key or self.home / "keys" / "gate"

    @property
    def resolved_heads_dir(self) -> Path:
        return self.heads_dir or self.home / "heads"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
