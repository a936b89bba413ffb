"""The few Prefect API calls enforcement needs, behind plain dataclasses.

Prefect is imported inside the functions: `import tasks.enforcement` must stay cheap and
Prefect-free (the gate and the CLI's fast commands import it). Every function takes an
open synchronous client from `prefect_client(api_url)`; the URL is explicit, never the
Prefect settings cached at import time, so one process can talk to the server a test or
an operator names.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from policy.halts import ACTIVITIES

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

PAGE = 200  # the server's default and maximum page size
EVENTS_PAGE = 50  # the events API's maximum page size
# SCHEDULED/PENDING/RUNNING can still write checkpoints; PAUSED ones would on resume.
ACTIVE_STATES: tuple[str, ...] = ("SCHEDULED", "PENDING", "RUNNING", "PAUSED")
CANCELLING_STATE = "CANCELLING"
DEFAULT_TIMEOUT_S = 10.0


class PrefectUnavailable(RuntimeError):
    """The Prefect API could not be reached (or answered 5xx) after retries."""


class NoPrefectApi(PrefectUnavailable):
    """No Prefect API URL is configured."""


def resolve_api_url(api_url: str | None = None) -> str:
    """`api_url`, else PREFECT_API_URL from the environment now, else Prefect's own settings."""
    url = api_url or os.environ.get("PREFECT_API_URL")
    if not url:
        from prefect.settings import PREFECT_API_URL

        url = PREFECT_API_URL.value()
    if not url:
        raise NoPrefectApi("no Prefect API URL: set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api)")
    return str(url).rstrip("/")


@contextmanager
def prefect_client(api_url: str | None = None, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[SyncPrefectClient]:
    """A synchronous client bound to `api_url` (not to whatever client context is active)."""
    import httpx
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_KEY

    url = resolve_api_url(api_url)
    # Our own transport: no connection retries inside httpcore (Prefect sets 3, which made an
    # unreachable server cost 1.5 s per request); callers retry whole passes with backoff.
    # On plain HTTP there is no TLS, so skip loading the CA bundle (0.11 s per client, measured).
    plain = url.startswith("http://")
    transport = httpx.HTTPTransport(retries=0, verify=False) if plain else httpx.HTTPTransport(retries=0)
    httpx_settings: dict[str, Any] = {"timeout": timeout_s, "transport": transport}
    if plain:
        httpx_settings["verify"] = False
    client = SyncPrefectClient(
        url,
        auth_string=PREFECT_API_AUTH_STRING.value(),
        api_key=PREFECT_API_KEY.value(),
        httpx_settings=httpx_settings,
    )
    with client:
        yield client


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: the server is unreachable, timed out, or failed (5xx / 429)."""
    import httpx

    if isinstance(exc, PrefectUnavailable) and not isinstance(exc, NoPrefectApi):
        return True
    if isinstance(exc, httpx.TransportError):
        return True
    if isinstance(exc, httpx.HTTPStatusError):
        code = exc.response.status_code
        return code >= 500 or code == 429
    return isinstance(exc, (ConnectionError, TimeoutError))


def short_error(exc: BaseException) -> str:
    import httpx

    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code} from {exc.request.method} {exc.request.url.path}"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]


@dataclass(frozen=True)
class ScalingDeployment:
    id: str
    name: str
    flow_id: str
    tags: tuple[str, ...]
    paused: bool
    activities: tuple[str, ...]
    default_run_id: str | None = None
    flow_name: str | None = None
    work_pool: str | None = None  # None: served (`serve`), not run by workers in a pool
    work_queue: str | None = None

    @property
    def full_name(self) -> str:
        return f"{self.flow_name}/{self.name}" if self.flow_name else self.name

    @property
    def queue_name(self) -> str | None:
        """"pool/queue" its runs wait in for a worker; None for a served deployment."""
        return f"{self.work_pool}/{self.work_queue}" if self.work_pool and self.work_queue else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.full_name,
            "tags": list(self.tags),
            "paused": self.paused,
            "activities": list(self.activities),
            "work_queue": self.queue_name,
        }


@dataclass(frozen=True)
class ScalingQueue:
    """A work queue named in the settings as one scaling deployments run from ("pool/queue").
    `id` None: Prefect has no such queue (or the name is not "pool/queue": `problem` says so)."""

    pool: str
    name: str
    id: str | None
    paused: bool
    problem: str | None = None

    @property
    def full_name(self) -> str:
        return f"{self.pool}/{self.name}"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.full_name, "exists": self.id is not None, "paused": self.paused,
                "problem": self.problem}


@dataclass(frozen=True)
class FlowRunInfo:
    id: str
    name: str
    deployment_id: str | None
    state_type: str
    state_name: str
    run_id: str | None  # the training run it works on (its `run_id` parameter), if any
    auto_scheduled: bool = False
    created_by: dict[str, Any] | None = field(default=None)
    created: str | None = None  # ISO times, as Prefect reports them
    end_time: str | None = None
    state_time: str | None = None  # when it entered its current state
    state_message: str | None = None
    parent_task_run_id: str | None = None
    tags: tuple[str, ...] = ()

    @property
    def started_by(self) -> str:
        """Who or what started it, in the words `scaling.run_blocked` uses (tasks/gate.py)."""
        return describe_start(self.created_by, self.deployment_id, self.auto_scheduled, self.parent_task_run_id)

    @property
    def stopped_at(self) -> str | None:
        """When it ended (cancelled) or, still cancelling, when it started to."""
        return self.end_time or self.state_time

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "deployment_id": self.deployment_id,
            "state": self.state_name or self.state_type,
            "run_id": self.run_id,
        }


def describe_start(created_by: dict[str, Any] | None, deployment_id: str | None, auto_scheduled: bool,
                   parent_task_run_id: str | None = None) -> str:
    """Who or what started a flow run, from what Prefect records on it (`created_by` is set for
    runs an automation or a signed-in user created; a self-hosted server leaves it empty for
    API, CLI and UI runs)."""
    if auto_scheduled:
        return "schedule (auto-scheduled run)"
    if created_by and created_by.get("type"):
        return f"{str(created_by['type']).lower()}: {created_by.get('display_value') or created_by.get('id')}"
    if deployment_id:
        return "deployment run started by hand (UI, API or CLI)"
    if parent_task_run_id:
        return "subflow call"
    return "direct call of the flow function"


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat()


def activities_of(tags: Iterable[str]) -> tuple[str, ...]:
    """Activity tags of a scaling deployment; one with none counts as training."""
    found = tuple(a for a in ACTIVITIES if a in set(tags))
    return found or ("training",)


def _deployment(d: Any, flow_names: dict[str, str]) -> ScalingDeployment:
    params = d.parameters or {}
    run_id = params.get("run_id")
    return ScalingDeployment(
        id=str(d.id),
        name=d.name,
        flow_id=str(d.flow_id),
        tags=tuple(d.tags or ()),
        paused=bool(d.paused),
        activities=activities_of(d.tags or ()),
        default_run_id=run_id if isinstance(run_id, str) else None,
        flow_name=flow_names.get(str(d.flow_id)),
        work_pool=getattr(d, "work_pool_name", None) or None,
        work_queue=getattr(d, "work_queue_name", None) or None,
    )


def _read_all(read: Any, **kwargs: Any) -> list[Any]:
    out: list[Any] = []
    offset = 0
    while True:
        page = read(limit=PAGE, offset=offset, **kwargs)
        out.extend(page)
        if len(page) < PAGE:
            return out
        offset += PAGE


def list_scaling_deployments(
    client: SyncPrefectClient,
    scaling_tag: str,
    names: Sequence[str] = (),
    *,
    with_flow_names: bool = True,
) -> list[ScalingDeployment]:
    """Deployments tagged `scaling_tag`, plus those named in `names` ("flow/deployment" or
    "deployment"), each once, sorted by name."""
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        DeploymentFilterTags,
        FlowFilter,
        FlowFilterId,
    )

    raw = {str(d.id): d for d in _read_all(
        client.read_deployments, deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=[scaling_tag]))
    )}
    wanted = {n.split("/", 1)[-1]: n for n in names}
    if wanted:
        for d in _read_all(client.read_deployments,
                           deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=sorted(wanted)))):
            raw.setdefault(str(d.id), d)
    flow_names: dict[str, str] = {}
    needs_flow_names = with_flow_names or any("/" in n for n in names)
    if raw and needs_flow_names:
        flow_ids = sorted({d.flow_id for d in raw.values()}, key=str)
        for f in client.read_flows(flow_filter=FlowFilter(id=FlowFilterId(any_=flow_ids)), limit=PAGE):
            flow_names[str(f.id)] = f.name
    deployments = [_deployment(d, flow_names) for d in raw.values()]
    if wanted:
        # A configured "flow/name" must match the flow too; tagged ones are kept regardless.
        def keep(dep: ScalingDeployment) -> bool:
            if scaling_tag in dep.tags:
                return True
            full = wanted.get(dep.name)
            return full is not None and ("/" not in full or full == dep.full_name)

        deployments = [d for d in deployments if keep(d)]
    return sorted(deployments, key=lambda d: (d.full_name, d.id))


def _run(r: Any) -> FlowRunInfo:
    params = r.parameters or {}
    run_id = params.get("run_id")
    created_by = r.created_by.model_dump(mode="json") if getattr(r, "created_by", None) else None
    state_type = r.state.type.value if r.state is not None else "UNKNOWN"
    parent = getattr(r, "parent_task_run_id", None)
    return FlowRunInfo(
        id=str(r.id),
        name=r.name,
        deployment_id=None if r.deployment_id is None else str(r.deployment_id),
        state_type=state_type,
        state_name=r.state.name if r.state is not None else "",
        run_id=run_id if isinstance(run_id, str) else None,
        auto_scheduled=bool(getattr(r, "auto_scheduled", False)),
        created_by=created_by,
        created=_iso(getattr(r, "created", None)),
        end_time=_iso(getattr(r, "end_time", None)),
        state_time=_iso(r.state.timestamp) if r.state is not None else None,
        state_message=(r.state.message or None) if r.state is not None else None,
        parent_task_run_id=None if parent is None else str(parent),
        tags=tuple(getattr(r, "tags", None) or ()),
    )


def list_runs(
    client: SyncPrefectClient, deployment_ids: Sequence[str], states: Sequence[str] = (*ACTIVE_STATES, CANCELLING_STATE)
) -> list[FlowRunInfo]:
    """Flow runs of these deployments in these state types (one query per page of 200)."""
    if not deployment_ids:
        return []
    from uuid import UUID

    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    flt = FlowRunFilter(
        deployment_id=FlowRunFilterDeploymentId(any_=[UUID(i) for i in deployment_ids]),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType(s) for s in states])),
    )
    return [_run(r) for r in _read_all(client.read_flow_runs, flow_run_filter=flt)]


def list_stopped_runs(client: SyncPrefectClient, deployment_ids: Sequence[str], since: dt.datetime, *,
                      cancelling: bool = True) -> list[FlowRunInfo]:
    """Flow runs of these deployments cancelled at or after `since`, and (unless `cancelling` is
    False) those still cancelling."""
    if not deployment_ids:
        return []
    from uuid import UUID

    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterEndTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    deps = FlowRunFilterDeploymentId(any_=[UUID(i) for i in deployment_ids])
    cancelled = FlowRunFilter(deployment_id=deps, end_time=FlowRunFilterEndTime(after_=since),
                              state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.CANCELLED])))
    still = FlowRunFilter(deployment_id=deps,
                          state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.CANCELLING])))
    filters = [cancelled, still] if cancelling else [cancelled]
    found = {str(r.id): _run(r) for flt in filters for r in _read_all(client.read_flow_runs, flow_run_filter=flt)}
    return sorted(found.values(), key=lambda r: (r.stopped_at or "", r.id))


def automation_targets(client: SyncPrefectClient, automation_id: str, since: dt.datetime,
                       max_pages: int = 20) -> set[str]:
    """Flow run ids an automation acted on since `since`, from Prefect's own event log
    (each `prefect.automation.action.triggered` event names its target run). A cancel of a run that had
    not started leaves no trace on the run itself: the server turns it straight into a plain
    Cancelled state, so these events are the only record of who stopped it."""
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter

    flt = EventFilter(
        occurred=EventOccurredFilter(since=since, until=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)),
        event=EventNameFilter(name=["prefect.automation.action.triggered"]),
        resource=EventResourceFilter(id=[f"prefect.automation.{automation_id}"]),
    )
    page: Any = client.read_events(filter=flt, limit=EVENTS_PAGE)
    targets: set[str] = set()
    for _ in range(max_pages):
        for event in page.events:
            for rel in event.related:
                if rel.role == "target" and rel.id.startswith("prefect.flow-run."):
                    targets.add(rel.id.removeprefix("prefect.flow-run."))
        if page.next_page is None:
            break
        page = client.read_events_page(str(page.next_page))
    return targets


def pause_deployment(client: SyncPrefectClient, deployment_id: str) -> None:
    client.pause_deployment(deployment_id)


def read_scaling_queues(client: SyncPrefectClient, names: Sequence[str]) -> list[ScalingQueue]:
    """The work queues `names` ("pool/queue") as Prefect has them now; one absent is listed with
    id None (nothing can wait in it), a malformed name with its `problem`."""
    from prefect.exceptions import ObjectNotFound

    out = []
    for full in dict.fromkeys(names):
        pool, _, queue = full.partition("/")
        if not pool or not queue or "/" in queue:
            out.append(ScalingQueue(pool, queue, None, False, problem=f"{full!r} is not 'pool/queue'"))
            continue
        try:
            q = client.read_work_queue_by_name(queue, work_pool_name=pool)
        except ObjectNotFound:
            out.append(ScalingQueue(pool, queue, None, False))
            continue
        out.append(ScalingQueue(pool, queue, str(q.id), bool(q.is_paused)))
    return out


def set_queue_paused(client: SyncPrefectClient, queue_id: str, paused: bool) -> None:
    """Pause (a paused queue hands no run to any worker) or resume a work queue."""
    from uuid import UUID

    client.update_work_queue(UUID(queue_id), is_paused=paused)


def cancel_flow_run(client: SyncPrefectClient, flow_run_id: str, message: str) -> str:
    """Ask for cancellation (Cancelling, as `prefect flow-run cancel` does); the runner that owns
    the run stops it. Returns the state type the server settled on."""
    from uuid import UUID

    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.responses import SetStateStatus
    from prefect.states import Cancelling

    result: Any = client.set_flow_run_state(flow_run_id, Cancelling(message=message))
    if result.status in (SetStateStatus.ACCEPT, SetStateStatus.WAIT):
        return result.state.type.value if result.state is not None else StateType.CANCELLING.value
    # REJECT/ABORT: usually the run finished meanwhile; report what it is now.
    now = client.read_flow_run(UUID(flow_run_id))
    state = now.state.type.value if now.state is not None else "UNKNOWN"
    if state in ACTIVE_STATES:
        reason = getattr(result.details, "reason", None) or result.status.value
        raise RuntimeError(f"server refused to cancel flow run {flow_run_id}: {reason}")
    return state


def read_flow_run(client: SyncPrefectClient, flow_run_id: str) -> FlowRunInfo:
    from uuid import UUID

    return _run(client.read_flow_run(UUID(flow_run_id)))


__all__ = [
    "ACTIVE_STATES",
    "CANCELLING_STATE",
    "FlowRunInfo",
    "NoPrefectApi",
    "PrefectUnavailable",
    "ScalingDeployment",
    "ScalingQueue",
    "activities_of",
    "automation_targets",
    "cancel_flow_run",
    "describe_start",
    "is_transient",
    "list_runs",
    "list_scaling_deployments",
    "list_stopped_runs",
    "pause_deployment",
    "prefect_client",
    "read_scaling_queues",
    "resolve_api_url",
    "set_queue_paused",
    "short_error",
]
