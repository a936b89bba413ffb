"""Making Prefect agree with a set of open halts: which deployments must be paused and which
flow runs cancelled, and doing it.

`plan` is pure (halts + what Prefect shows -> what is out of line); `observe` reads Prefect;
`enforce` reads, pauses deployments and their scaling work queues, re-reads runs and cancels.
A scaling work queue (settings' `queues`) is paused while a halt pauses every scaling deployment
on it: a paused queue hands no run to any worker, whoever created the run. One pass is idempotent: when Prefect
already agrees it issues no write at all. A transient API failure (unreachable, 5xx)
raises, so the caller can retry the whole pass; a refusal about one item is recorded
against that item and the pass goes on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from policy.halts import HaltScope, scope_of
from tasks.enforcement.prefect_api import (
    ACTIVE_STATES,
    CANCELLING_STATE,
    FlowRunInfo,
    ScalingDeployment,
    ScalingQueue,
    cancel_flow_run,
    is_transient,
    list_runs,
    list_scaling_deployments,
    pause_deployment,
    read_scaling_queues,
    set_queue_paused,
    short_error,
)

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

    from tasks.ledger import Halt

# Sequential by default: against Prefect's SQLite server, parallel writes contend for the database
# lock and 3 pauses took 2-6 s instead of 0.1 s (measured). With PostgreSQL, raise it.
WORKERS = 1


@dataclass(frozen=True)
class HaltTarget:
    halt_id: str
    scope: HaltScope


def targets_of(halts: Iterable[Halt]) -> list[HaltTarget]:
    return [HaltTarget(h.halt_id, scope_of(h.payload)) for h in halts]


def _overlap(activities: Sequence[str], scope: HaltScope) -> bool:
    return bool(set(activities) & set(scope.activities))


def halts_covering_deployment(dep: ScalingDeployment, targets: Sequence[HaltTarget]) -> list[str]:
    """Halts that require this deployment paused. A run-scoped halt pauses a deployment only
    when the deployment's default run is one of its runs (others keep their schedule; their
    runs are still cancelled and gated one by one)."""
    return [
        t.halt_id for t in targets
        if _overlap(dep.activities, t.scope) and (t.scope.all_runs or dep.default_run_id in t.scope.runs)
    ]


def halts_covering_queue(queue: ScalingQueue, deployments: Sequence[ScalingDeployment],
                         targets: Sequence[HaltTarget]) -> list[str]:
    """Halts that require this work queue paused: those that pause every scaling deployment on it.
    A queue with no scaling deployment on it is left alone (nothing of ours to stop there), and so is
    one shared with a deployment the halt does not cover (a run-scoped halt must not stop other runs)."""
    on_queue = [d for d in deployments if d.queue_name == queue.full_name]
    if queue.id is None or not on_queue:
        return []
    covering = [set(halts_covering_deployment(d, targets)) for d in on_queue]
    return [t.halt_id for t in targets if all(t.halt_id in c for c in covering)]


def halts_covering_run(run: FlowRunInfo, dep: ScalingDeployment | None, targets: Sequence[HaltTarget]) -> list[str]:
    activities = dep.activities if dep is not None else ("training",)
    run_id = run.run_id or (dep.default_run_id if dep is not None else None)
    return [
        t.halt_id for t in targets
        if _overlap(activities, t.scope) and (t.scope.all_runs or run_id in t.scope.runs)
    ]


@dataclass
class Plan:
    """Prefect's state against the halts. `agrees` means nothing needs doing."""

    deployments: list[ScalingDeployment]
    runs: list[FlowRunInfo]
    covering: dict[str, list[str]]  # deployment id -> halt ids that need it paused
    to_pause: list[ScalingDeployment] = field(default_factory=list)
    to_cancel: list[tuple[FlowRunInfo, list[str]]] = field(default_factory=list)
    cancelling: list[tuple[FlowRunInfo, list[str]]] = field(default_factory=list)
    queues: list[ScalingQueue] = field(default_factory=list)
    queue_covering: dict[str, list[str]] = field(default_factory=dict)  # "pool/queue" -> halt ids
    queues_to_pause: list[ScalingQueue] = field(default_factory=list)

    @property
    def agrees(self) -> bool:
        return not self.to_pause and not self.to_cancel and not self.queues_to_pause

    def halted_deployment_ids(self) -> list[str]:
        return sorted(d for d, hs in self.covering.items() if hs)


def plan(deployments: Sequence[ScalingDeployment], runs: Sequence[FlowRunInfo], targets: Sequence[HaltTarget],
         queues: Sequence[ScalingQueue] = ()) -> Plan:
    by_id = {d.id: d for d in deployments}
    covering = {d.id: halts_covering_deployment(d, targets) for d in deployments}
    result = Plan(list(deployments), list(runs), covering, queues=list(queues))
    result.to_pause = [d for d in deployments if covering[d.id] and not d.paused]
    result.queue_covering = {q.full_name: halts_covering_queue(q, deployments, targets) for q in queues}
    result.queues_to_pause = [q for q in queues if result.queue_covering[q.full_name] and not q.paused]
    for run in runs:
        halts = halts_covering_run(run, by_id.get(run.deployment_id or ""), targets)
        if not halts:
            continue
        if run.state_type in ACTIVE_STATES:
            result.to_cancel.append((run, halts))
        elif run.state_type == CANCELLING_STATE:
            result.cancelling.append((run, halts))
    return result


def observe(
    client: SyncPrefectClient, targets: Sequence[HaltTarget], *, scaling_tag: str, names: Sequence[str] = (),
    with_flow_names: bool = True, queues: Sequence[str] = (),
) -> Plan:
    """Read-only: what Prefect shows for every scaling deployment and scaling queue, against the halts."""
    deployments = list_scaling_deployments(client, scaling_tag, names, with_flow_names=with_flow_names)
    runs = list_runs(client, [d.id for d in deployments])
    return plan(deployments, runs, targets, read_scaling_queues(client, queues))


@dataclass
class Enforcement:
    """What one pass found and did."""

    plan: Plan
    paused: list[dict[str, Any]] = field(default_factory=list)
    cancelled: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    paused_queues: list[dict[str, Any]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.paused or self.cancelled or self.paused_queues)

    @property
    def ok(self) -> bool:
        return not self.errors

    def fixed_for(self, halt_id: str) -> dict[str, list[Any]]:
        return {
            "paused": [p["name"] for p in self.paused if halt_id in p["halts"]],
            "cancelled": [c["id"] for c in self.cancelled if halt_id in c["halts"]],
            "paused_queues": [q["name"] for q in self.paused_queues if halt_id in q["halts"]],
        }

    def already_paused_queues(self, halt_id: str) -> list[str]:
        """Scaling queues this halt needs paused that were paused before this pass."""
        done = {q["name"] for q in self.paused_queues}
        return [q.full_name for q in self.plan.queues
                if halt_id in self.plan.queue_covering.get(q.full_name, []) and q.paused and q.full_name not in done]


def _parallel(items: Sequence[Any], work: Any, workers: int) -> list[tuple[Any, BaseException | None, Any]]:
    def one(item: Any) -> tuple[Any, BaseException | None, Any]:
        try:
            return item, None, work(item)
        except Exception as exc:  # noqa: BLE001 - sorted into transient (retry the pass) and per-item below
            return item, exc, None

    if len(items) <= 1 or workers <= 1:
        return [one(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items)), thread_name_prefix="rsp-enforce") as pool:
        return list(pool.map(one, items))


def _raise_transient(outcomes: Sequence[tuple[Any, BaseException | None, Any]]) -> None:
    for _, exc, _ in outcomes:
        if exc is not None and is_transient(exc):
            raise exc


def enforce(
    client: SyncPrefectClient,
    targets: Sequence[HaltTarget],
    *,
    scaling_tag: str,
    names: Sequence[str] = (),
    message: str = "halted by rsp-gate",
    workers: int = WORKERS,
    spare_runs: Sequence[str] = (),
    queues: Sequence[str] = (),
) -> Enforcement:
    """Pause every covered deployment and scaling work queue (`queues`, "pool/queue"), then
    cancel every covered active run, except `spare_runs` (flow run ids: the run applying the
    halt, which is stopping itself at its gate).

    Runs are listed after the pauses, so a run created while pausing is still seen. A run
    created after this pass is the gate's (and the next reconcile's) to stop; while the queue
    is paused no worker starts it."""
    deployments = list_scaling_deployments(client, scaling_tag, names)
    found_queues = read_scaling_queues(client, queues)
    first = plan(deployments, [], targets, found_queues)
    result = Enforcement(plan=first)
    outcomes = _parallel(first.to_pause, lambda d: pause_deployment(client, d.id), workers)
    _raise_transient(outcomes)
    for dep, exc, _ in outcomes:
        entry = {"id": dep.id, "name": dep.full_name, "halts": first.covering[dep.id]}
        if exc is None:
            result.paused.append(entry)
        else:
            result.errors.append({**entry, "what": "pause deployment", "error": short_error(exc)})
    _pause_queues(client, first, result, bool(targets))
    runs = list_runs(client, [d.id for d in deployments]) if targets else []
    after = plan(deployments, runs, targets, found_queues)
    after.to_pause = [d for d in first.to_pause if d.id not in {p["id"] for p in result.paused}]
    after.queues_to_pause = [q for q in first.queues_to_pause
                             if q.full_name not in {p["name"] for p in result.paused_queues}]
    result.plan = after
    if spare_runs:
        after.to_cancel = [(run, halts) for run, halts in after.to_cancel if run.id not in set(spare_runs)]
    cancels = _parallel(after.to_cancel, lambda rh: cancel_flow_run(client, rh[0].id, message), workers)
    _raise_transient(cancels)
    for (run, halts), exc, state in cancels:
        entry = {"id": run.id, "name": run.name, "deployment_id": run.deployment_id, "halts": halts,
                 "state_before": run.state_name or run.state_type}
        if exc is None:
            result.cancelled.append({**entry, "state_after": state})
        else:
            result.errors.append({**entry, "what": "cancel flow run", "error": short_error(exc)})
    return result


def _pause_queues(client: SyncPrefectClient, first: Plan, result: Enforcement, enforcing: bool) -> None:
    """The queue layer: pause each covered scaling queue. A queue name that is not "pool/queue" is
    an error while a halt is open (the layer it names cannot be applied), never skipped quietly."""
    if enforcing:
        for q in first.queues:
            if q.problem:
                result.errors.append({"id": None, "name": q.full_name, "halts": [], "what": "pause work queue",
                                      "error": f"scaling queue setting: {q.problem}"})
    for q in first.queues_to_pause:
        assert q.id is not None  # covered queues exist
        entry = {"id": q.id, "name": q.full_name, "halts": first.queue_covering[q.full_name]}
        try:
            set_queue_paused(client, q.id, True)
        except Exception as exc:  # transient: retry the whole pass; otherwise this queue's error
            if is_transient(exc):
                raise
            result.errors.append({**entry, "what": "pause work queue", "error": short_error(exc)})
        else:
            result.paused_queues.append(entry)


def summarize_queues(p: Plan) -> list[dict[str, Any]]:
    """Per configured scaling queue: exists?, paused?, which halts need it paused, the scaling
    deployments on it, and whether it agrees."""
    out = []
    for q in p.queues:
        halts = p.queue_covering.get(q.full_name, [])
        drift = ["not paused"] if halts and not q.paused else []
        out.append({**q.to_dict(), "halts": halts, "agrees": not drift, "drift": drift,
                    "deployments": [d.full_name for d in p.deployments if d.queue_name == q.full_name]})
    return out


def summarize_deployments(p: Plan) -> list[dict[str, Any]]:
    """Per scaling deployment: paused?, which halts cover it, its active/cancelling runs."""
    runs_by_dep: dict[str, list[FlowRunInfo]] = {}
    for r in p.runs:
        runs_by_dep.setdefault(r.deployment_id or "", []).append(r)
    out = []
    for d in p.deployments:
        halts = p.covering.get(d.id, [])
        runs = runs_by_dep.get(d.id, [])
        active = [r.to_dict() for r in runs if r.state_type in ACTIVE_STATES]
        cancelling = [r.to_dict() for r in runs if r.state_type == CANCELLING_STATE]
        drift = []
        if halts and not d.paused:
            drift.append("not paused")
        if halts and active:
            drift.append(f"{len(active)} active run(s)")
        out.append({**d.to_dict(), "halts": halts, "active_runs": active, "cancelling_runs": cancelling,
                    "agrees": not drift, "drift": drift})
    return out


def halt_agreement(p: Plan, halt_id: str) -> dict[str, Any]:
    """Does Prefect agree with one halt: its deployments paused, none of its runs active?"""
    deps = [d for d in summarize_deployments(p) if halt_id in d["halts"]]
    unpaused = [d["name"] for d in deps if not d["paused"]]
    active = [r.id for r, hs in p.to_cancel if halt_id in hs]
    queues = [q for q in p.queues if halt_id in p.queue_covering.get(q.full_name, [])]
    unpaused_queues = [q.full_name for q in queues if not q.paused]
    return {
        "agrees": not unpaused and not active and not unpaused_queues,
        "deployments": len(deps),
        "queues": len(queues),
        "not_paused_queues": unpaused_queues,
        "not_paused": unpaused,
        "active_runs": active,
        "cancelling_runs": [r.id for r, hs in p.cancelling if halt_id in hs],
    }


__all__ = [
    "Enforcement",
    "HaltTarget",
    "Plan",
    "enforce",
    "halt_agreement",
    "halts_covering_deployment",
    "halts_covering_queue",
    "halts_covering_run",
    "observe",
    "plan",
    "summarize_deployments",
    "summarize_queues",
    "targets_of",
]
