"""The queue layer's other half: resuming a scaling work queue once no open halt needs it paused.

Pausing is part of every enforcement pass (tasks/enforcement/enforce.py): a halt pauses a scaling
queue while it pauses every scaling deployment on it, and the pause is recorded in that halt's
`halt.applied` / `halt.reconciled` (`paused_queues`). Resuming follows the ledger too: a queue is
resumed only when the ledger says rsp paused it (a `paused_queues` record not yet followed by a
`resumed_queues` one) and no open halt covers it now. A queue an operator paused by hand is never
resumed by rsp. Runs on every reconcile pass and when an `evaluation_overdue` halt lifts itself; the
resume is recorded as `halt.reconciled` (`resumed_queues`) under the halt that paused it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

    from tasks.enforcement.enforce import HaltTarget
    from tasks.ledger import Ledger


def paused_by_halts(store: Ledger) -> dict[str, str]:
    """Scaling queues ("pool/queue") that the ledger says rsp paused and has not resumed since,
    each with the halt whose record paused it last."""
    from tasks.ledger.events import HaltApplied, HaltReconciled

    records = sorted((*store.iter_events(kind=HaltApplied.KIND), *store.iter_events(kind=HaltReconciled.KIND)),
                     key=lambda e: e.seq)
    held: dict[str, str] = {}
    for ev in records:
        for name in ev.payload.get("paused_queues") or []:
            held[str(name)] = str(ev.payload.get("halt_id") or ev.subject)
        for name in ev.payload.get("resumed_queues") or []:
            held.pop(str(name), None)
    return held


def release_queues(client: SyncPrefectClient, store: Ledger, *, scaling_tag: str, names: Sequence[str],
                   queues: Sequence[str], targets: Sequence[HaltTarget], api_url: str | None,
                   by: str, record: bool = True) -> list[dict[str, Any]]:
    """Resume every scaling queue rsp paused that no open halt (`targets`) covers now; each resume
    recorded under the halt that paused it. Returns [{name, halt_id}] of the queues resumed. Reads
    the ledger only when a paused queue is uncovered (rare), so an idle pass stays cheap."""
    from tasks.enforcement.enforce import halts_covering_queue
    from tasks.enforcement.prefect_api import list_scaling_deployments, read_scaling_queues, set_queue_paused
    from tasks.ledger.events import HaltReconciled

    found = [q for q in read_scaling_queues(client, queues) if q.id is not None and q.paused]
    if not found:
        return []
    deployments = list_scaling_deployments(client, scaling_tag, names, with_flow_names=False)
    uncovered = [q for q in found if not halts_covering_queue(q, deployments, targets)]
    held = paused_by_halts(store) if uncovered else {}
    resumed = []
    for q in uncovered:
        halt_id = held.get(q.full_name)
        if halt_id is None or q.id is None:
            continue  # paused by someone else: theirs to resume
        set_queue_paused(client, q.id, False)
        resumed.append({"name": q.full_name, "halt_id": halt_id})
        if record:
            store.record(HaltReconciled(halt_id=halt_id, api_url=api_url, resumed_queues=[q.full_name], by=by),
                         halt_id)
    return resumed


def resume_released_queues(store: Ledger, *, api_url: str | None = None, scaling_tag: str | None = None,
                           names: Sequence[str] | None = None, by: str = "lift") -> list[dict[str, Any]]:
    """After a halt lifts: resume the scaling queues rsp paused that no open halt covers now. Never
    raises: a queue left paused errs on the safe side, and the next reconcile pass tries again."""
    import logging

    from tasks.enforcement.enforce import targets_of
    from tasks.enforcement.prefect_api import prefect_client, short_error
    from tasks.enforcement.settings import enforcement_settings

    cfg = enforcement_settings(scaling_tag=scaling_tag, names=names)
    if not cfg.queues:
        return []
    try:
        with prefect_client(api_url) as client:
            return release_queues(client, store, scaling_tag=cfg.scaling_tag, names=cfg.names, queues=cfg.queues,
                                  targets=targets_of(store.halts("open")), api_url=api_url, by=by)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        logging.getLogger("rsp.enforcement.queues").warning(
            "scaling work queues not resumed (the next reconcile retries): %s", short_error(exc))
        return []


__all__ = ["paused_by_halts", "release_queues", "resume_released_queues"]
