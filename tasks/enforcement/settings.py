"""Which deployments count as scaling, and where enforcement keeps its own small state.

From rsp settings: `scaling_tag` (RSP_SCALING_TAG, default "scaling"), and a list of
scaling deployment names. Settings has no field for the list yet, so it is read from
`scaling_deployments` when Settings grows one, else from RSP_SCALING_DEPLOYMENTS
(comma-separated "flow/deployment" or "deployment" names).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class EnforcementSettings:
    scaling_tag: str
    names: tuple[str, ...]
    home: Path

    @property
    def state_path(self) -> Path:
        return self.home / "enforcement" / "reconcile.json"


def _split(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def enforcement_settings(
    *, scaling_tag: str | None = None, names: Sequence[str] | None = None, home: Path | None = None
) -> EnforcementSettings:
    from rsp.settings import get_settings

    s = get_settings()
    if names is None:
        configured = getattr(s, "scaling_deployments", None)
        if isinstance(configured, str):
            names = _split(configured)
        elif configured:
            names = tuple(configured)
        else:
            names = _split(os.environ.get("RSP_SCALING_DEPLOYMENTS", ""))
    return EnforcementSettings(
        scaling_tag=scaling_tag or s.scaling_tag, names=tuple(names), home=Path(home or s.home)
    )


__all__ = ["EnforcementSettings", "enforcement_settings"]
