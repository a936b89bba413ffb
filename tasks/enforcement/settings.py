"""Which deployments count as scaling, and where enforcement keeps its own small state.

Read from `tasks.settings.Settings`: `scaling_tag` (RSP_SCALING_TAG, default "scaling") and
`scaling_deployments` (RSP_SCALING_DEPLOYMENTS, comma-separated "flow/deployment" or
"deployment" names, a list in rsp.yaml).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tasks.settings import Settings, get_settings


@dataclass(frozen=True)
class EnforcementSettings:
    scaling_tag: str
    names: tuple[str, ...]
    home: Path

    @property
    def state_path(self) -> Path:
        return self.home / "enforcement" / "reconcile.json"


def enforcement_settings(
    *,
    scaling_tag: str | None = None,
    names: Sequence[str] | None = None,
    home: Path | None = None,
    settings: Settings | None = None,
) -> EnforcementSettings:
    s = settings or get_settings()
    return EnforcementSettings(
        scaling_tag=scaling_tag or s.scaling_tag,
        names=tuple(s.scaling_deployments if names is None else names),
        home=Path(home or s.home),
    )


__all__ = ["EnforcementSettings", "enforcement_settings"]
