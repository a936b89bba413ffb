"""The lift as a Prefect task, so a resume flow run shows it.

    try-lift   tasks.approvals.lift.try_lift (no retries: a refused lift is an answer, and a
               second attempt is the next resume run's, after more votes or evidence)

Imported by flows only: this module imports Prefect at the top, which `rsp approve` must
not pay for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.approvals.lift import try_lift

if TYPE_CHECKING:
    from tasks.ledger import Ledger


# NO_CACHE: the ledger is a live adapter, not an input to hash, and a lift must never be served from a cache.
@task(name="try-lift", retries=0, cache_policy=NO_CACHE)
def try_lift_task(halt_id: str, *, ledger: Ledger, api_url: str | None, scaling_tag: str | None,
                  trigger: str) -> dict[str, Any]:
    """Lift `halt_id` if approvals and fresh safeguard checks allow; the LiftOutcome as a dict."""
    return try_lift(halt_id, ledger=ledger, api_url=api_url, scaling_tag=scaling_tag, trigger=trigger).to_dict()


__all__ = ["try_lift_task"]
