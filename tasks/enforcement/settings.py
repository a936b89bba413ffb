"""Which deployments and work queues count as scaling, and where enforcement keeps its own small state.

Read from `tasks.settings.Settings`: `scaling_tag` (RSP_SCALING_TAG, default "scaling") and
`scaling_deployments` (RSP_SCALING_DEPLOYMENTS, comma-separated "flow/deployment" or
"deployment" names, a list in rsp.yaml).

`queues`: the work queues scaling deployments run from, as "pool/queue", comma-separated in
RSP_SCALING_QUEUES (empty: no queue layer). The default is the queue deployments/prefect.yaml puts
them on (tests/test_deployments.py checks the two agree). A halt pauses such a queue while it
pauses every scaling deployment on it (tasks/enforcement/queues.py).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tasks.settings import Settings, get_settings

QUEUES_ENV = "RSP_SCALING_QUEUES"
DEFAULT_SCALING_QUEUES: tuple[str, ...] = ("rsp-scaling/scaling",)  # deployments/prefect.yaml's scaling_pool


@dataclass(frozen=True)
class EnforcementSettings:
    scaling_tag: str
    names: tuple[str, ...]
    home: Path
    queues: tuple[str, ...] = DEFAULT_SCALING_QUEUES

    @property
    def state_path(self) -> Path:
        return self.home / "enforcement" / "reconcile.json"


def scaling_queues(value: str | None = None) -> tuple[str, ...]:
    """The configured scaling work queues: `value`, else RSP_SCALING_QUEUES, else the default.
    Read from the environment at each call (not cached), as Prefect's API URL is."""
    raw = os.environ.get(QUEUES_ENV) if value is None else value
    if raw is None:
        return DEFAULT_SCALING_QUEUES
    return tuple(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))


def enforcement_settings(
    *,
    scaling_tag: str | None = None,
    names: Sequence[str] | None = None,
    home: Path | None = None,
    settings: Settings | None = None,
    queues: Sequence[str] | None = None,
) -> EnforcementSettings:
    s = settings or get_settings()
    return EnforcementSettings(
        scaling_tag=scaling_tag or s.scaling_tag,
        names=tuple(s.scaling_deployments if names is None else names),
        home=Path(home or s.home),
        queues=scaling_queues() if queues is None else tuple(queues),
    )


__all__ = ["DEFAULT_SCALING_QUEUES", "QUEUES_ENV", "EnforcementSettings", "enforcement_settings", "scaling_queues"]
