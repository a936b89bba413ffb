"""What a verifier may look at: time, configuration, the evidence store and the roster.

One `VerificationContext` serves one verification round. It reads the evidence
store and the roster at most once per round (and remembers a failure too), so
every safeguard in a round is judged against the same snapshot.

Configuration is read from `tasks.settings.Settings` where the field exists and
from environment variables otherwise (the same names with the RSP_ prefix, which
is what pydantic-settings will read once the fields are added):

| setting (proposed)        | env fallback                 | used by                       |
| ------------------------- | ---------------------------- | ----------------------------- |
| `safeguard_bucket`        | RSP_SAFEGUARD_BUCKET         | checkpoint_bucket_hardening; default: the bucket of an s3:// `checkpoint_store` |
| `misuse_probe_url`        | RSP_MISUSE_PROBE_URL         | misuse_classifier_probe       |
| `misuse_probe_timeout_s`  | RSP_MISUSE_PROBE_TIMEOUT_S   | misuse_classifier_probe (default 5 s) |
| `roster`                  | RSP_ROSTER                   | attestation (default `<home>/roster.yaml`) |
"""

from __future__ import annotations

import datetime as dt
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.safeguards.evidence import EvidenceSnapshot, EvidenceStore, EvidenceStoreError, open_evidence_store
from tasks.safeguards.roster import Roster, RosterError, default_roster_path, load_roster
from tasks.storage import parse_uri

DEFAULT_PROBE_TIMEOUT_S = 5.0


def configured(settings: Any, name: str) -> Any:
    """`settings.<name>` if the field exists and is set, else $RSP_<NAME>, else None."""
    value = getattr(settings, name, None) if settings is not None else None
    if value is not None and value != "":
        return value
    env = os.environ.get(f"RSP_{name.upper()}")
    return env if env else None


def _bucket_of(store: str) -> str | None:
    """The bucket of an s3:// checkpoint store, None when the URI names none."""
    try:
        return parse_uri(store, what="checkpoint_store").bucket or None
    except ValueError:
        return None  # opening the store reports what is wrong with it; here it just names no bucket


class _Failure:
    """A remembered failure: reading again within one round would give a different snapshot."""

    def __init__(self, message: str):
        self.message = message


@dataclass
class VerificationContext:
    now: dt.datetime
    settings: Any = None
    evidence_store: EvidenceStore | None = None
    roster: Roster | None = None
    roster_path: Path | None = None
    bucket: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_profile: str | None = None
    probe_url: str | None = None
    probe_timeout_s: float = DEFAULT_PROBE_TIMEOUT_S
    s3_client: Any = None  # injected client (tests, shared sessions); built from the s3_* fields otherwise
    _evidence: EvidenceSnapshot | _Failure | None = field(default=None, init=False, repr=False)
    _roster: Roster | _Failure | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.now.tzinfo is None or self.now.utcoffset() is None:
            raise ValueError(f"VerificationContext.now must be timezone-aware, got {self.now.isoformat()}")
        if not (isinstance(self.probe_timeout_s, (int, float)) and math.isfinite(self.probe_timeout_s)
                and self.probe_timeout_s > 0):
            raise ValueError(f"probe_timeout_s must be a positive number of seconds, got {self.probe_timeout_s!r}")

    @classmethod
    def from_settings(cls, settings: Any = None, *, now: dt.datetime | None = None, **overrides: Any
                      ) -> VerificationContext:
        """Everything from the settings (default: `get_settings()`), then explicit overrides.

        Raises ValueError naming the setting when a value cannot be used.
        """
        if settings is None:
            from tasks.settings import get_settings

            settings = get_settings()
        values: dict[str, Any] = {
            "now": now or dt.datetime.now(dt.UTC),
            "settings": settings,
            "s3_endpoint_url": getattr(settings, "s3_endpoint_url", None),
            "s3_region": getattr(settings, "s3_region", None),
            "s3_profile": getattr(settings, "s3_profile", None),
            "probe_url": configured(settings, "misuse_probe_url"),
            "roster_path": default_roster_path(settings),
        }
        bucket = configured(settings, "safeguard_bucket")
        if bucket is None:
            store = getattr(settings, "checkpoint_store", None)
            if isinstance(store, str) and store.startswith("s3://"):
                bucket = _bucket_of(store)
        values["bucket"] = bucket
        timeout = None if "probe_timeout_s" in overrides else configured(settings, "misuse_probe_timeout_s")
        if timeout is not None:
            try:
                values["probe_timeout_s"] = float(timeout)
            except ValueError:
                raise ValueError(f"misuse_probe_timeout_s (RSP_MISUSE_PROBE_TIMEOUT_S): not a number: {timeout!r}"
                                 ) from None
        store_problem: str | None = None
        if "evidence_store" not in overrides:
            try:
                values["evidence_store"] = open_evidence_store(settings.resolved_evidence_store, settings=settings)
            except ValueError as exc:
                # Not fatal for the round: attestations read `unknown` with this message, automated checks still run.
                store_problem = str(exc)
        values.update(overrides)
        ctx = cls(**values)
        if store_problem is not None:
            ctx._evidence = _Failure(store_problem)
        return ctx

    @property
    def checked_at(self) -> str:
        return self.now.isoformat()

    def evidence(self) -> EvidenceSnapshot:
        """The evidence store's records and problems, read once per context. Raises EvidenceStoreError."""
        if self._evidence is None:
            if self.evidence_store is None:
                self._evidence = _Failure("no evidence store configured")
            else:
                try:
                    self._evidence = self.evidence_store.read()
                except EvidenceStoreError as exc:
                    self._evidence = _Failure(str(exc))
        if isinstance(self._evidence, _Failure):
            raise EvidenceStoreError(self._evidence.message)
        return self._evidence

    def get_roster(self) -> Roster:
        """The roster given, or loaded from `roster_path` once per context. Raises RosterError."""
        if self.roster is not None:
            return self.roster
        if self._roster is None:
            path = self.roster_path or default_roster_path(self.settings)
            try:
                self._roster = load_roster(path)
            except RosterError as exc:
                self._roster = _Failure(str(exc))
        if isinstance(self._roster, _Failure):
            raise RosterError(self._roster.message)
        return self._roster
