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
creates it (called when serving or setting up deployments) and records `halt_guard.installed`
in the ledger. From then on it is a layer of every halt, and apply and reconcile (`keep_guard`)
keep it there: its deployment list and enabled flag follow the open halts, and when it is
found deleted, disabled while covering halted deployments, or with its trigger or action
changed, they put it back and record `halt_guard.restored`. Where it was never installed
(the ledger has no `halt_guard.installed` for it) they leave Prefect without one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
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


@dataclass
class GuardSync:
    """The halt-guard automation after one sync: what was found, what changed, what it is now.

    `found`: "missing" (no such automation), "edited" (its trigger or action is not ours),
    "disabled" (switched off while it should cover halted deployments), "stale" (its deployment
    list or enabled flag lags the open halts: normal after a halt opens or lifts), None (agreed).
    `change`: created | updated | enabled | disabled | None (nothing written) | "absent" (missing
    and not created)."""

    name: str
    change: str | None = None
    found: str | None = None
    present: bool = False
    enabled: bool | None = None
    deployments: list[str] = field(default_factory=list)
    automation_id: str | None = None
    installed: bool | None = None  # the ledger records it as installed (None: not asked)
    restored: bool = False  # put back after being deleted, disabled or edited (recorded)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _deployment_ids(resource_ids: Sequence[str]) -> list[str]:
    return [r.removeprefix("prefect.deployment.") for r in resource_ids if r != NO_DEPLOYMENT]


def sync_guard(
    client: SyncPrefectClient, scaling_tag: str, halted_deployment_ids: Sequence[str], *, create: bool
) -> GuardSync:
    """Bring the automation in line: enabled for exactly these deployments, or disabled when none.
    Creates it when missing only if `create`."""
    want = desired_automation(scaling_tag, halted_deployment_ids)
    wanted_ids = _related_ids(want)
    result = GuardSync(name=want.name)
    found = client.read_automations_by_name(want.name)
    if not found:
        result.found = "missing"
        if not create:
            result.change = "absent"
            return result
        result.automation_id = str(client.create_automation(want))
        result.change, result.present, result.enabled = "created", True, want.enabled
        result.deployments = _deployment_ids(wanted_ids)
        return result
    current = found[0]
    for extra in found[1:]:
        client.delete_automation(extra.id)  # two set-ups raced; keep one
    current_ids = _related_ids(current)
    same_ids = current_ids == wanted_ids
    same_rest = ([a.type for a in current.actions] == ["cancel-flow-run"]
                 and set(getattr(current.trigger, "expect", ())) == set(EVENTS))
    result.automation_id, result.present = str(current.id), True
    if not same_rest:
        result.found = "edited"
    elif want.enabled and not current.enabled and current_ids != [NO_DEPLOYMENT]:
        result.found = "disabled"  # we never leave it off while it names halted deployments
    elif not same_ids or current.enabled != want.enabled:
        result.found = "stale"
    result.enabled, result.deployments = want.enabled, _deployment_ids(wanted_ids)
    if result.found is None:
        result.enabled, result.deployments = bool(current.enabled), _deployment_ids(current_ids)
        return result
    client.update_automation(current.id, want)
    if not (same_ids and same_rest):
        result.change = "updated"
    else:
        result.change = "enabled" if want.enabled else "disabled"
    return result


def sync_halt_automation(
    client: SyncPrefectClient, scaling_tag: str, halted_deployment_ids: Sequence[str], *, create: bool
) -> str | None:
    """Bring the automation in line: enabled for exactly these deployments, or disabled when none.

    Returns what changed ("created", "updated", "enabled", "disabled"), None when it already
    agreed, or "absent" when it does not exist and `create` is False."""
    return sync_guard(client, scaling_tag, halted_deployment_ids, create=create).change


def guard_installed(store: Ledger, scaling_tag: str) -> bool:
    """Whether the ledger records this tag's halt-guard automation as installed (one indexed read)."""
    from tasks.ledger.events import HaltGuardInstalled

    return bool(store.events(kind=HaltGuardInstalled.KIND, subject=automation_name(scaling_tag), limit=1))


def _record_installed(store: Ledger, sync: GuardSync, scaling_tag: str, api_url: str | None, by: str) -> bool:
    from tasks.ledger.events import HaltGuardInstalled

    if not sync.present or guard_installed(store, scaling_tag):
        return False
    store.record(HaltGuardInstalled(automation=sync.name, scaling_tag=scaling_tag, api_url=api_url,
                                    automation_id=sync.automation_id, by=by), sync.name)
    return True


def keep_guard(
    client: SyncPrefectClient,
    store: Ledger,
    scaling_tag: str,
    halted_deployment_ids: Sequence[str],
    *,
    api_url: str | None,
    halts: Sequence[str] = (),
    by: str,
    record: bool = True,
) -> tuple[GuardSync, list[str]]:
    """Apply's and reconcile's sync: recreate the automation when the ledger says it was installed
    (a deleted one comes back), and record what was put back. An automation found in Prefect
    but not yet on record is recorded as installed (so it is restored from then on).
    Returns (the sync, the ledger event kinds written)."""
    from tasks.ledger.events import HaltGuardInstalled, HaltGuardRestored

    installed = guard_installed(store, scaling_tag)
    sync = sync_guard(client, scaling_tag, halted_deployment_ids, create=installed)
    sync.installed = installed
    written: list[str] = []
    if not record:
        return sync, written
    if not installed and _record_installed(store, sync, scaling_tag, api_url, f"{by} (found in Prefect)"):
        sync.installed = True
        written.append(HaltGuardInstalled.KIND)
    if installed and sync.change is not None and sync.found in ("missing", "disabled", "edited"):
        sync.restored = True
        store.record(HaltGuardRestored(
            automation=sync.name, scaling_tag=scaling_tag, api_url=api_url, automation_id=sync.automation_id,
            found=sync.found, change=sync.change, by=by, halts=list(halts), deployments=sync.deployments,
        ), sync.name)
        written.append(HaltGuardRestored.KIND)
    return sync, written


def _sync_to_open_halts(store: Ledger, api_url: str, scaling_tag: str, names: Sequence[str], *,
                        create: bool) -> tuple[GuardSync, list[str]]:
    """Set the guard to exactly the deployments the ledger's open halts cover (disabled when none);
    `create` False leaves a missing guard missing. Returns the sync and those deployments' ids."""
    from tasks.enforcement.enforce import observe, targets_of
    from tasks.enforcement.prefect_api import prefect_client

    with prefect_client(api_url) as client:
        observed = observe(client, targets_of(store.halts("open")), scaling_tag=scaling_tag, names=names,
                           with_flow_names=False)
        halted = observed.halted_deployment_ids()
        return sync_guard(client, scaling_tag, halted, create=create), halted


def ensure_halt_automation(
    *,
    api_url: str | None = None,
    ledger: Ledger | None = None,
    scaling_tag: str | None = None,
    names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Create (or correct) the halt automation for the open halts in the ledger, and record it as
    installed (`halt_guard.installed`, once), so apply and reconcile restore it from then on.

    Call it when serving or deploying scaling flows. Returns {"automation": name, "change":
    ..., "halted_deployments": [...], "state": {...}}; raises on an unreachable API (callers
    treat it as best effort). `ledger` None: the configured ledger."""
    from tasks.enforcement.prefect_api import resolve_api_url
    from tasks.enforcement.settings import enforcement_settings
    from tasks.ledger import ledger_or_configured

    cfg = enforcement_settings(scaling_tag=scaling_tag, names=names)
    store = ledger_or_configured(ledger)
    url = resolve_api_url(api_url)
    sync, halted = _sync_to_open_halts(store, url, cfg.scaling_tag, cfg.names, create=True)
    _record_installed(store, sync, cfg.scaling_tag, url, "ensure_halt_automation")
    sync.installed = True
    return {"automation": automation_name(cfg.scaling_tag), "change": sync.change, "halted_deployments": halted,
            "state": sync.to_dict()}


def release_guard(
    store: Ledger,
    *,
    api_url: str | None = None,
    scaling_tag: str | None = None,
    names: Sequence[str] | None = None,
) -> str | None:
    """After a lift, before the deployments resume: narrow the guard to what the halts still open
    cover (disabled when none). Otherwise it keeps cancelling new runs of the lifted deployments
    until the next reconcile pass, and a run started right after the lift is cancelled (seen in the
    demo). Creates nothing where the guard was never installed. Returns the change, None when
    nothing changed or it could not be done (never raises: reconcile narrows it later)."""
    import logging

    from tasks.enforcement.prefect_api import resolve_api_url, short_error
    from tasks.enforcement.settings import enforcement_settings

    cfg = enforcement_settings(scaling_tag=scaling_tag, names=names)
    if not guard_installed(store, cfg.scaling_tag):
        return None
    try:
        sync, _ = _sync_to_open_halts(store, resolve_api_url(api_url), cfg.scaling_tag, cfg.names, create=False)
        return sync.change
    except Exception as exc:  # noqa: BLE001 - best effort: the next reconcile narrows it
        logging.getLogger("rsp.enforcement").warning("halt guard not narrowed after the lift: %s",
                                                     short_error(exc))
        return None


__all__ = [
    "EVENTS",
    "GuardSync",
    "automation_name",
    "desired_automation",
    "ensure_halt_automation",
    "guard_installed",
    "keep_guard",
    "release_guard",
    "sync_guard",
    "sync_halt_automation",
]
