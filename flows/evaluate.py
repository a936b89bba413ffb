"""evaluate(checkpoint, policy): cadence → benchmarks → data quality → sandbagging checks →
classify → verify safeguards → record → halt when obligations are unmet.

Every path ends in a determination in the ledger. A stage that raises leaves a
fail-closed determination (every threshold undetermined → the highest level →
halt), never a silent pass.

The ledger and the policy are built once per evaluation and handed to each stage; a parent
flow in this process (watch) hands down its own, with the checkpoints it already loaded.
The arithmetic (depth, carry-forward, escalation, scores) is `policy.assessment`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.benchmarks import noise_probes, record_noise_flags, run_benchmarks
from flows.by_reference import pickle_by_reference
from flows.forms import PolicyRef, TaskRunnerSpec
from flows.halt import halt as halt_flow
from flows.states import not_a_success
from policy.assessment import (
    CurrentScores,
    PriorComprehensive,
    current_scores,
    escalates_to_comprehensive,
    escalation_reason,
    plan_assessment,
    remaining_benchmarks,
    score_history,
)
from policy.determination import Assessment, Determination, RunFailure, ThresholdResult
from policy.engine import apply_safeguard_checks, classify, fail_closed_determination
from policy.results import SampleTable
from policy.sandbagging import detect_anomalies
from policy.schema import Policy
from tasks.benchmarks.base import CheckpointInfo
from tasks.checkpoint_uri import CheckpointHistory, checkpoint_info, evaluation_key, load_checkpoint
from tasks.evaluation import (
    quality_task,
    record_determination,
    sign_head_quietly,
    verify_safeguards_task,
    write_run_report_quietly,
)
from tasks.ledger import Event, Ledger
from tasks.ledger.events import (
    CheckpointChanged,
    CheckpointDuplicate,
    CheckpointRejected,
    ForecastWarning,
    PolicyUnreadable,
)
from tasks.manifest import Checkpoint, ManifestRejected
from tasks.outcomes import EvaluationOutcome, HaltSummary
from tasks.policy_versions import policy_in_force
from tasks.report import publish_report
from tasks.run_folder import run_folder, write_results
from tasks.settings import get_settings
from tasks.stores.base import printable_key

__all__ = ["HandedDown", "enforce_checkpoint_changed", "enforce_unreadable_policy", "evaluate", "evaluation_key",
           "halt_summary", "handing_down", "observe"]


@dataclass(frozen=True)
class HandedDown:
    """What a parent flow in this process already built, for the evaluate subflows it starts: its
    ledger, the policy it read (and the reference it read it by) and the checkpoints it loaded, by
    URI. Handed down through a context variable, not parameters, so that evaluate's parameters
    stay the ones an operator types in the Prefect UI."""

    ledger: Ledger
    policy_ref: str
    policy: Policy
    checkpoints: Mapping[str, Checkpoint] = field(default_factory=dict)
    # The claim owner of each checkpoint (by URI) the parent claimed before starting us: internal,
    # so never a parameter of the form.
    claims: Mapping[str, str] = field(default_factory=dict)


_HANDED_DOWN: ContextVar[HandedDown | None] = ContextVar("evaluate_handed_down", default=None)


@contextlib.contextmanager
def handing_down(built: HandedDown) -> Iterator[None]:
    """Evaluate subflows started inside this block (and in threads that copy its context) reuse `built`."""
    token = _HANDED_DOWN.set(built)
    try:
        yield
    finally:
        _HANDED_DOWN.reset(token)


@dataclass(frozen=True)
class _Evaluation:
    """One evaluation's fixed inputs, built once and handed to each stage."""

    policy: Policy
    checkpoint: Checkpoint
    ledger: Ledger
    folder: Path
    # Where benchmark logs go: the run folder, or a fresh folder under it when forced (`_log_root`).
    log_root: Path | None = None


@flow(name="evaluate", log_prints=True)
def evaluate(
    checkpoint_uri: str,
    policy: PolicyRef = "anthropic-rsp",
    force: bool = False,
    task_runner: TaskRunnerSpec = "threads",
    limit: int | None = None,
) -> EvaluationOutcome:
    """Evaluate one checkpoint against a policy and record the determination.

    Args:
        checkpoint_uri: The checkpoint folder (file:///…/run/step-…/ or s3://bucket/…/run/step-…/).
        policy: A bundled framework (pick one) or the path of a policy YAML file.
        force: Re-evaluate even if this checkpoint was evaluated before: every benchmark is recomputed,
            with fresh Inspect logs (earlier logs are kept, never reused).
        task_runner: threads (default) or dask; also threads:N, or dask://scheduler:8786 for a cluster.
        limit: Run at most this many samples per benchmark (smoke tests; thresholds may become undetermined).
    """
    settings = get_settings()
    handed = _HANDED_DOWN.get()
    ledger = handed.ledger if handed is not None else Ledger(settings.resolved_ledger_url)
    try:
        ckpt = _checkpoint(checkpoint_uri, handed)
    except (ManifestRejected, ValueError) as exc:
        return _reject(ledger, checkpoint_uri, exc)  # type: ignore[no-any-return]
    # The version in force (tasks/policy_versions.py): a held loosening is not used, nor recorded.
    pol, policy = _policy(ledger, ckpt, policy, handed)
    # Under watch, the watcher observed the checkpoint and claimed its key before starting us, and
    # handed the claim down.
    claim_owner = handed.claims.get(ckpt.uri) if handed is not None else None
    key = observe(ledger, ckpt, pol, policy, opened_by="evaluate") if claim_owner is None else None
    owner, skipped = (claim_owner, None) if key is None or force else _claim(ledger, ckpt, key,
                                                                             settings.claim_lease_s)
    if skipped is not None:
        return skipped
    folder = run_folder(settings.resolved_runs_dir, ckpt.run_id, ckpt.step, ckpt.uri)
    run = _Evaluation(pol, ckpt, ledger, folder, _log_root(folder) if force else folder)
    det, scores, stage_error = _determine(run, force=force, task_runner=task_runner, limit=limit)
    event = record_determination(ledger, ckpt.uri, det, run.folder, {"scores": scores, "stage_error": stage_error,
                                                                     "forced": force, "policy_ref": policy})
    _flag_duplicates(ledger, ckpt)
    halt = _enforce(det, event, policy) if det.decision == "halt" else None
    latest_step = max((d["checkpoint"]["step"] for d in ledger.determinations(ckpt.run_id)), default=ckpt.step)
    publish_report(det, run.folder, ledger_seq=event.seq, latest_step=latest_step)
    write_run_report_quietly(ledger, settings.resolved_runs_dir, ckpt.run_id)
    if owner and key is not None:
        ledger.complete(key, owner, {"decision": det.decision, "required_level": det.required_level,
                                     "determination_seq": event.seq, "digest": ckpt.digest})
    sign_head_quietly(ledger, "evaluation" if halt is None else "evaluation and halt")
    return EvaluationOutcome(
        status="evaluated" if stage_error is None else "failed_closed", checkpoint=ckpt.uri, run_id=ckpt.run_id,
        step=ckpt.step, assessment=det.assessment, required_level=det.required_level, decision=det.decision,
        halts=list(det.halts), determination_seq=event.seq, halt=halt, error=stage_error,
    )


def _checkpoint(checkpoint_uri: str, handed: HandedDown | None) -> Checkpoint:
    """The checkpoint a parent flow loaded and claimed, else its manifest read now (ManifestRejected
    or ValueError when it is missing, invalid or the URI names no checkpoint)."""
    if handed is not None and checkpoint_uri in handed.checkpoints:
        return handed.checkpoints[checkpoint_uri]
    return load_checkpoint(checkpoint_uri)[1]


def _reject(ledger: Ledger, checkpoint_uri: str, exc: Exception) -> Any:
    """Record the rejection; a deployment run ends Failed, named "Rejected", with the reason (never a
    green Completed: nothing was evaluated), holding the outcome (`flows.states`)."""
    # What was typed may hold anything (control characters, broken UTF-8): record it printable.
    uri, reason = (t if t.isprintable() else printable_key(t) for t in (checkpoint_uri, str(exc)))
    ledger.record(CheckpointRejected(uri=uri, reason=reason), uri)
    get_run_logger().error("checkpoint rejected: %s", reason)
    return not_a_success(EvaluationOutcome(status="rejected", checkpoint=uri, reason=reason), name="Rejected",
                         message=f"checkpoint rejected: {reason}")


def _log_root(folder: Path) -> Path:
    """A fresh folder for a forced evaluation's benchmark logs, beside (never replacing) the earlier
    ones: Inspect's `eval_set` reuses any completed log it finds in its log folder."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return folder / "forced" / stamp


def observe(ledger: Ledger, ckpt: Checkpoint, pol: Policy, policy_ref: str, *, opened_by: str) -> str:
    """The evaluation key of the checkpoint's content now. A digest the ledger did not last see at
    this URI is a changed checkpoint: its run is halted first, then the change recorded
    (`checkpoint.changed`), and the new content gets a key of its own, so it is evaluated again."""
    history = CheckpointHistory.read(ledger, ckpt.uri)
    change = history.change_to(ckpt)
    if change is not None:
        enforce_checkpoint_changed(change, policy_ref, opened_by=opened_by)
        ledger.record(change, ckpt.uri)
        history = CheckpointHistory.read(ledger, ckpt.uri)
    return history.evaluation_key(ckpt, pol)


def _flag_duplicates(ledger: Ledger, ckpt: Checkpoint) -> None:
    """Record `checkpoint.duplicate` when checkpoints at other URIs were evaluated for the same run and step."""
    decided = [d.get("checkpoint") or {} for d in ledger.determinations(ckpt.run_id)]
    others = sorted({c["uri"] for c in decided if c.get("step") == ckpt.step and c.get("uri") not in (None, ckpt.uri)})
    if others:
        get_run_logger().warning("%s: run %s step %d is also claimed by %s", ckpt.uri, ckpt.run_id, ckpt.step,
                                 ", ".join(others))
        ledger.record(CheckpointDuplicate(uri=ckpt.uri, run_id=ckpt.run_id, step=ckpt.step, others=others),
                      ckpt.uri)


def _policy(ledger: Ledger, ckpt: Checkpoint, policy_ref: str, handed: HandedDown | None) -> tuple[Policy, str]:
    """The policy version in force and the reference to record for it, read once (or as the parent
    flow read it). A loosening without its approver quorum is held: the version in force is returned,
    with the path of its stored copy. Unreadable: record the failure, halt all scaling, and raise."""
    if handed is not None and handed.policy_ref == policy_ref:
        return handed.policy, policy_ref
    try:
        in_force = policy_in_force(ledger, policy_ref)
        if in_force.held:
            get_run_logger().warning("%s", in_force.message())
        return in_force.policy, in_force.ref
    except Exception as exc:  # no policy, no determination: halt everything until someone fixes it
        error = f"{type(exc).__name__}: {exc}"
        get_run_logger().error("policy %s unreadable, halting all scaling: %s", policy_ref, error)
        # Halt first: the halt is what keeps scaling stopped; the record only says why.
        enforce_unreadable_policy(ckpt.uri, error)
        ledger.record(PolicyUnreadable(checkpoint=ckpt.uri, policy=policy_ref, error=error), ckpt.uri)
        raise


def _owner() -> str:
    from prefect.runtime import flow_run

    return f"{socket.gethostname()}:{os.getpid()}:{flow_run.id or 'local'}"


def _claim(ledger: Ledger, ckpt: Checkpoint, key: str, lease_s: float) -> tuple[str | None, EvaluationOutcome | None]:
    """Claim the evaluation (started on its own; watch claims before it starts us). Returns the
    claim's owner, or the outcome to return instead when it was decided before or is claimed."""
    logger = get_run_logger()
    if ledger.is_done(key):
        logger.info("%s was already evaluated under this policy; pass force=True to re-evaluate", ckpt.uri)
        prev = ledger.previous_determination(ckpt.run_id, before_step=ckpt.step + 1) or {}
        return None, EvaluationOutcome(status="already_evaluated", checkpoint=ckpt.uri,
                                       decision=prev.get("decision"), required_level=prev.get("required_level"))
    owner = _owner()
    if not ledger.claim(key, owner, lease_s):
        logger.info("%s is being evaluated elsewhere", ckpt.uri)
        return None, EvaluationOutcome(status="claimed_elsewhere", checkpoint=ckpt.uri)
    return owner, None


def _determine(run: _Evaluation, *, force: bool, task_runner: str, limit: int | None
               ) -> tuple[Determination, dict[str, Any], str | None]:
    """Assess, then verify the safeguards the assessment requires. A stage that raises leaves a
    fail-closed determination instead (with the scores, when the assessment got that far)."""
    ref = run.checkpoint.ref()
    now = dt.datetime.now(dt.UTC)
    scores: dict[str, Any] = {}
    try:
        info = checkpoint_info(run.checkpoint)
        det, assessed = _assess(run, info, force=force, task_runner=task_runner, limit=limit, now=now)
        scores = assessed.as_payload()
        checks = verify_safeguards_task(run.policy, list(det.required_safeguards), run.checkpoint.uri)
        return apply_safeguard_checks(det, checks), scores, None
    except Exception as exc:  # noqa: BLE001 - fail closed: the checkpoint is recorded as a halt, with the reason
        stage_error = f"{type(exc).__name__}: {exc}"
        get_run_logger().error("evaluation failed, recording a fail-closed determination: %s", stage_error)
        det = fail_closed_determination(run.policy, f"evaluation failed: {stage_error}", checkpoint=ref)
        return det, scores, stage_error


def _assess(run: _Evaluation, info: CheckpointInfo, *, force: bool, task_runner: str, limit: int | None,
            now: dt.datetime) -> tuple[Determination, CurrentScores]:
    """Run what the cadence asks for and classify; a preliminary result in the early-warning zone
    runs the rest and is classified again as comprehensive, carrying nothing."""
    logger = get_run_logger()
    ckpt = run.checkpoint
    plan = plan_assessment(run.policy, ckpt.effective_compute, now, _prior(run),
                           history=run.ledger.determinations(ckpt.run_id))
    logger.info("assessment: %s (%s)", plan.depth.assessment, plan.depth.reason)
    for payload in plan.warning_payloads(ckpt.run_id, ckpt.step):  # forecast to cross before the next comprehensive
        logger.warning("%s", payload["message"])
        run.ledger.record(ForecastWarning.from_payload(payload), ckpt.run_id)
    def run_some(ids: list[str]) -> tuple[SampleTable, list[RunFailure]]:
        return run_benchmarks(info, [run.policy.benchmark(i) for i in ids], str(run.log_root or run.folder), force,
                              limit, task_runner)

    ran = list(plan.first)
    table, failures = run_some(ran)
    det, scores = _classify(run, table, failures, ran, plan.depth.assessment, plan.depth.reason, plan.carried)
    if escalates_to_comprehensive(run.policy, det):
        rest = remaining_benchmarks(run.policy, ran)
        logger.info("preliminary result in the early-warning zone: escalating to comprehensive (%d more)",
                    len(rest))
        more, more_failures = run_some(rest)
        table, failures = table.concat(more), failures + more_failures
        ran = [b.id for b in run.policy.benchmarks]
        det, scores = _classify(run, table, failures, ran, "comprehensive", escalation_reason(plan.depth.reason),
                                None)
    write_results(run.folder, table)
    return det, scores


def _prior(run: _Evaluation) -> PriorComprehensive | None:
    event = run.ledger.last_comprehensive_event(run.checkpoint.run_id, before_step=run.checkpoint.step)
    if event is None:
        return None
    return PriorComprehensive(payload=event.payload, recorded_at=dt.datetime.fromisoformat(event.ts))


def _classify(run: _Evaluation, table: SampleTable, failures: list[RunFailure], ran: list[str],
              assessment: Assessment, reason: str, carried: Mapping[str, ThresholdResult] | None
              ) -> tuple[Determination, CurrentScores]:
    """Quality gate, sandbagging checks against the run's earlier checkpoints, classification; also
    the scores later checkpoints compare against (recorded with the determination)."""
    ckpt = run.checkpoint
    quality = quality_task(table, run.policy, ran, str(run.folder / "quality")).to_verdict()
    scores = current_scores(run.policy, table)
    # Read now, after the benchmarks ran: an earlier step of this run may have been recorded meanwhile.
    history = score_history(run.ledger.determinations(ckpt.run_id), ckpt.step)
    info = checkpoint_info(ckpt)
    probes = noise_probes(run.policy, info, ran)  # real weights only: Gaussian weight noise must not raise a score
    anomalies = detect_anomalies(run.policy, ckpt.effective_compute, scores.mean, history, scores.best_of_k,
                                 noise_probes=probes)
    record_noise_flags(run.ledger, ckpt.uri, info, run.policy, probes, anomalies)
    det = classify(run.policy, table, checkpoint=ckpt.ref(), assessment=assessment, assessment_reason=reason,
                   benchmarks_run=ran, quality=quality, anomalies=anomalies, run_failures=failures, carried=carried)
    return det, scores


def _enforce(det: Determination, event: Event, policy_ref: str) -> HaltSummary:
    """Open (idempotently), apply and announce the halt this determination calls for: the halt flow's
    steps as task runs of this evaluation, not a subflow (a flow run ends by joining Prefect's
    heartbeat thread, up to 1 s; `flows.benchmarks.run_benchmarks`)."""
    out = halt_flow.fn(determination=det, determination_seq=event.seq,
                       determination_subject=event.subject, policy=policy_ref, opened_by="evaluate")
    return halt_summary(out)


def halt_summary(out: Any) -> HaltSummary:
    """The halt flow's result as the evaluation reports it. Reads both the dict the halt flow
    returned so far ({"halt": {...}, "apply": {...} | None}) and a typed outcome with `.halt` and
    `.apply`, while that flow moves to typed values."""

    def get(obj: Any, name: str) -> Any:
        return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)

    recorded, applied = get(out, "halt"), get(out, "apply") or {}
    return HaltSummary(halt_id=get(recorded, "halt_id"), created=get(recorded, "created"),
                       applied=get(applied, "applied"), apply_error=get(applied, "error"))


def enforce_checkpoint_changed(change: CheckpointChanged, policy_ref: str, *, opened_by: str) -> None:
    """Halt the run whose checkpoint changed after its determination (idempotent per change). The new
    content is evaluated next; the halt is lifted like any other, by approval."""
    halt_flow(reason=f"checkpoint {change.uri} changed after its determination ({change.old_digest} -> "
                     f"{change.new_digest}): the weights were not the ones evaluated",
              activities=["training", "deployment"], runs=[change.run_id], cause=change.cause,
              opened_by=opened_by, policy=policy_ref)


def enforce_unreadable_policy(where: str, error: str) -> None:
    """No policy, no determination: halt all scaling, once per place the policy failed to load."""
    halt_flow(reason=f"policy unreadable while evaluating {where}: {error}", activities=["training", "deployment"],
              cause=f"policy-unreadable:{where}", opened_by="evaluate")


# Task runs on process pools and Dask workers carry this flow in their context (flows/by_reference.py).
pickle_by_reference(evaluate)
