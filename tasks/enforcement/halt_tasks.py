"""The halt composition's steps as Prefect tasks, so a halt flow run shows each one.

    record-halt   tasks.enforcement.halting.record_halt (retried: a locked SQLite ledger
                  is worth a second try; opening is idempotent per cause)
    apply-halt    tasks.enforcement.apply.apply_halt (retries inside, never raises for
                  Prefect being down)

`PREFECT_STEPS` hands both to `open_and_enforce`. Imported by flows only: this module
imports Prefect at the top, which the CLI must not pay for at start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.enforcement.apply import ApplyReport, apply_halt
from tasks.enforcement.halting import HaltRequest, HaltSteps, RecordedHalt, record_halt

if TYPE_CHECKING:
    from policy.schema import Policy
    from tasks.ledger import Ledger


# NO_CACHE: the ledger is a live adapter, not an input to hash, and a halt must never be served from a cache.
@task(name="record-halt", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def record_halt_task(request: HaltRequest, *, ledger: Ledger, policy: Policy | str | None = None) -> RecordedHalt:
    """Write halt.opened (or find the halt this cause already opened)."""
    return record_halt(request, ledger=ledger, policy=policy)


@task(name="apply-halt", cache_policy=NO_CACHE)
def apply_halt_task(halt_id: str, *, ledger: Ledger, api_url: str | None, scaling_tag: str | None) -> ApplyReport:
    """Pause scaling deployments and cancel their runs. Never raises for Prefect being down:
    the report says applied=False and the ledger records halt.apply_failed."""
    return apply_halt(halt_id, ledger=ledger, api_url=api_url, scaling_tag=scaling_tag)


PREFECT_STEPS = HaltSteps(record=record_halt_task, apply=apply_halt_task)

__all__ = ["PREFECT_STEPS", "apply_halt_task", "record_halt_task"]
