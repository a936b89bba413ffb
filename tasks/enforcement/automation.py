"""A Prefect automation that cancels any new flow run of a halted deployment (best effort).

Why: pausing a deployment stops its schedule, but a run started by hand (UI, API,
`create_flow_run_from_deployment`) or by another automation still starts (PrefectHQ/prefect
issue 14529). This automation reacts to such a run's Scheduled/Pending/Running event and
cancels it, usually before the runner picks it up.

Why only best effort: it acts on events, asynchronously, and only on the server that
emitted them; it is disabled while no halt is open, and its deployment list is only as
fresh as the last apply/reconcile. The gate that every scaling flow checks at start and
before every step is what really stops a run; this just keeps halted runs from starting
at all in the common case.

One automation per scaling tag, named `rsp-halt-guard[<tag>]`: `ensure_halt_automation`
creates it (called when serving or setting up deployments); apply and reconcile keep its
deployment list and enabled flag in line with the open halts, but never create it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

    from tasks.ledger import Ledger

EVENTS = ("prefect.flow-run.Scheduled", "prefect.flow-run.Pending", "prefect.flow-run.Running")
NO_DEPLOYMENT = "prefect.deployment.none"  # matches nothing: the list is never empty, so never "match all"


def automation_name(scaling_tag: str) -> str:
    return f"rsp-halt-guard[{scaling_tag}]"


def desired_automation(scaling_tag: str, deployment_ids: Sequence[str]) -> Any:
    from prefect.events.actions import CancelFlowRun
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    ids = sorted(f"prefect.deployment.{d}" for d in deployment_ids) or [NO_DEPLOYMENT]
    return AutomationCore(
        name=automation_name(scaling_tag),
        description=(
            "rsp-gate: cancel any new flow run of a deployment halted by an open halt in the ledger. "
            "Managed by rsp (ensure_halt_automation / reconcile); edits are overwritten."
        ),
        enabled=bool(deployment_ids),
        tags=["rsp-gate", scaling_tag],
        # Every field set explicitly: update_automation sends only fields that were set, and an
        # action whose `type` was left to its default arrives as the server's "do-nothing".
        trigger=EventTrigger(
            type="event",
            expect=set(EVENTS),
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.role": "deployment", "prefect.resource.id": ids},
            for_each={"prefect.resource.id"},
            posture=Posture.Reactive,
            threshold=1,
            within=0,
        ),
        actions=[CancelFlowRun(type="cancel-flow-run")],
    )


def _related_ids(automation: Any) -> list[str]:
    related = automation.trigger.match_related
    specs = related if isinstance(related, list) else [related]
    ids: list[str] = []
    for spec in specs:
        value = spec.root.get("prefect.resource.id") if hasattr(spec, "root") else None
        ids.extend([value] if isinstance(value, str) else list(value or []))
    return sorted(ids)


def sync_halt_automation(
    client: SyncPrefectClient, scaling_tag: str, halted_deployment_ids: Sequence[str], *, create: bool
) -> str | None:
    """Bring the automation in line: enabled for exactly these deployments, or disabled when none.

    Returns what changed ("created", "updated", "enabled", "disabled"), None when it already
    agreed, or "absent" when it does not exist and `create` is False."""
    want = desired_automation(scaling_tag, halted_deployment_ids)
    found = client.read_automations_by_name(want.name)
    if not found:
        if not create:
            return "absent"
        client.create_automation(want)
        return "created"
    current = found[0]
    for extra in found[1:]:
        client.delete_automation(extra.id)  # two set-ups raced; keep one
    same_ids = _related_ids(current) == _related_ids(want)
    same_rest = ([a.type for a in current.actions] == ["cancel-flow-run"]
                 and set(getattr(current.trigger, "expect", ())) == set(EVENTS))
    if same_ids and same_rest and current.enabled == want.enabled:
        return None
    client.update_automation(current.id, want)
    if not (same_ids and same_rest):
        return "updated"
    return "enabled" if want.enabled else "disabled"


def ensure_halt_automation(
    *,
    api_url: str | None = None,
    ledger: Ledger | None = None,
    scaling_tag: str | None = None,
    names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Create (or correct) the halt automation for the open halts in the ledger.

    Call it when serving or deploying scaling flows. Returns {"automation": name, "change":
    ..., "halted_deployments": [...]}; raises on an unreachable API (callers treat it as best
    effort). `ledger` None: the configured ledger."""
    from tasks.enforcement.enforce import observe, targets_of
    from tasks.enforcement.prefect_api import prefect_client
    from tasks.enforcement.settings import enforcement_settings
    from tasks.ledger import ledger_or_configured

    cfg = enforcement_settings(scaling_tag=scaling_tag, names=names)
    store = ledger_or_configured(ledger)
    targets = targets_of(store.halts("open"))
    with prefect_client(api_url) as client:
        observed = observe(client, targets, scaling_tag=cfg.scaling_tag, names=cfg.names, with_flow_names=False)
        halted = observed.halted_deployment_ids()
        change = sync_halt_automation(client, cfg.scaling_tag, halted, create=True)
    return {"automation": automation_name(cfg.scaling_tag), "change": change, "halted_deployments": halted}


__all__ = ["EVENTS", "automation_name", "desired_automation", "ensure_halt_automation", "sync_halt_automation"]
