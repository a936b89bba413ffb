"""evaluate(checkpoint, policy): cadence → benchmarks → data quality → sandbagging checks →
classify → verify safeguards → record → halt when obligations are unmet.

Every path ends in a determination in the ledger. A stage that raises leaves a
fail-closed determination (every threshold undetermined → the highest level →
halt), never a silent pass.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from policy.cadence import LastComprehensive, assessment_depth, escalates
from policy.determination import CheckpointRef, Determination, RunFailure, ThresholdResult
from policy.engine import apply_safeguard_checks, classify, fail_closed_determination
from policy.results import SampleTable
from policy.sandbagging import PastScore, detect_anomalies
from policy.schema import Policy
from policy.statistics import question_values


def evaluation_key(checkpoint_uri: str, policy: Policy) -> str:
    """Exactly once per (checkpoint, policy): a changed policy re-decides a checkpoint, and its
    benchmark results come from the cache unless `force`."""
    return f"{checkpoint_uri}@policy:{_sha(policy)[:16]}"


def _owner() -> str:
    from prefect.runtime import flow_run

    return f"{socket.gethostname()}:{os.getpid()}:{flow_run.id or 'local'}"


def _current_scores(policy: Policy, table: SampleTable) -> tuple[dict[str, float], dict[str, float]]:
    means, best = {}, {}
    for bid, rows in table.split_by_benchmark().items():
        values, *_ = question_values(rows, "mean")
        if values.size:
            means[bid] = float(values.mean())
        if policy.benchmark(bid).attempts > 1:
            bvalues, *_ = question_values(rows, "best_of_k")
            if bvalues.size:
                best[bid] = float(bvalues.mean())
    return means, best


def _history(ledger: Any, run_id: str, step: int) -> dict[str, list[PastScore]]:
    """Earlier checkpoints' mean scores, from the determinations the ledger holds."""
    out: dict[str, list[PastScore]] = {}
    for payload in ledger.determinations(run_id):
        ck = payload.get("checkpoint") or {}
        if ck.get("step") is None or ck["step"] >= step:
            continue
        for s in payload.get("scores", {}).get("mean", {}).items():
            out.setdefault(s[0], []).append(PastScore(step=ck["step"], effective_compute=ck["effective_compute"],
                                                      mean=s[1]))
    return out


def _assess(policy: Policy, info: Any, ref: CheckpointRef, ledger: Any, folder: Path, *, force: bool,
            task_runner: str, limit: int | None, now: dt.datetime) -> tuple[Determination, SampleTable, dict]:
    from flows.benchmarks import make_task_runner, run_benchmarks
    from tasks.evaluation import quality_task
    from tasks.run_folder import write_results

    logger = get_run_logger()
    last_event = ledger.last_comprehensive_event(ref.run_id, before_step=ref.step)
    last = None
    carried: dict[str, ThresholdResult] | None = None
    if last_event is not None:
        ck = last_event.payload.get("checkpoint") or {}
        last = LastComprehensive(effective_compute=float(ck.get("effective_compute") or 0.0),
                                 assessed_at=dt.datetime.fromisoformat(last_event.ts), step=ck.get("step"))
        if last_event.payload.get("policy", {}).get("sha256") == _sha(policy):
            carried = {t["id"]: ThresholdResult.model_validate(t) for t in last_event.payload.get("thresholds", [])}
    cadence = assessment_depth(policy.cadence, ref.effective_compute, now, last)
    logger.info("assessment: %s (%s)", cadence.assessment, cadence.reason)
    all_ids = [b.id for b in policy.benchmarks]
    first_ids = all_ids if cadence.assessment == "comprehensive" else (
        list(policy.cadence.preliminary_benchmarks) or all_ids)
    runner = run_benchmarks.with_options(task_runner=make_task_runner(task_runner))

    def run(ids: list[str]) -> tuple[SampleTable, list[RunFailure]]:
        return runner(info, [policy.benchmark(i) for i in ids], str(folder), force, limit)

    table, failures = run(first_ids)
    assessment, reason, ran = cadence.assessment, cadence.reason, list(first_ids)
    det, scores = _classify(policy, table, failures, ran, ref, ledger, folder, assessment, reason, carried,
                            quality_task)
    if assessment == "preliminary":
        fresh = [t.status for t in det.thresholds if t.carried_from is None and t.gating]
        if escalates(policy.cadence, fresh):
            rest = [i for i in all_ids if i not in ran]
            logger.info("preliminary result in the early-warning zone: escalating to comprehensive (%d more)",
                        len(rest))
            more, more_failures = run(rest)
            table, failures = table.concat(more), failures + more_failures
            ran = all_ids
            assessment = "comprehensive"
            reason = f"escalated from preliminary ({cadence.reason}): a threshold reached early warning or worse"
            det, scores = _classify(policy, table, failures, ran, ref, ledger, folder, assessment, reason, None,
                                    quality_task)
    write_results(folder, table)
    return det, table, scores


def _sha(policy: Policy) -> str:
    from policy.identity import policy_sha256

    return policy_sha256(policy)


def _classify(policy, table, failures, ran, ref, ledger, folder, assessment, reason, carried, quality_task):
    """Quality gate, sandbagging checks and classification; also the per-benchmark scores that
    later checkpoints of the run compare against (recorded with the determination)."""
    quality = quality_task(table, policy, ran, str(folder / "quality")).to_verdict()
    means, best = _current_scores(policy, table)
    anomalies = detect_anomalies(policy, ref.effective_compute, means, _history(ledger, ref.run_id, ref.step),
                                 best)
    det = classify(policy, table, checkpoint=ref, assessment=assessment, assessment_reason=reason,
                   benchmarks_run=ran, quality=quality, anomalies=anomalies, run_failures=failures,
                   carried=carried)
    return det, {"mean": means, "best_of_k": best}


@flow(name="evaluate", log_prints=True)
def evaluate(
    checkpoint_uri: str,
    policy: str = "anthropic-rsp",
    force: bool = False,
    task_runner: str = "threads",
    limit: int | None = None,
    claim_owner: str | None = None,
) -> dict[str, Any]:
    """Evaluate one checkpoint against a policy and record the determination.

    checkpoint_uri: the checkpoint folder (file:///…/run/step-…/ or s3://bucket/…/run/step-…/).
    policy: a bundled framework id (anthropic-rsp, openai-preparedness, gdm-fsf) or a policy file path.
    force: re-evaluate even if this checkpoint was evaluated before, recomputing every benchmark.
    task_runner: threads (default), threads:N, dask, or dask://scheduler:8786.
    limit: run at most this many samples per benchmark (smoke tests; thresholds may become undetermined).
    claim_owner: set by the watch flow, which has already claimed the checkpoint.
    """
    from rsp.settings import get_settings
    from tasks.checkpoint_uri import checkpoint_info, load_checkpoint
    from tasks.inputs import read_policy
    from tasks.ledger import Ledger
    from tasks.manifest import ManifestRejected
    from tasks.run_folder import run_folder, write_json

    logger = get_run_logger()
    settings = get_settings()
    ledger = Ledger(settings.resolved_ledger_url)
    try:
        _store, ckpt = load_checkpoint(checkpoint_uri)
    except (ManifestRejected, ValueError) as exc:
        ledger.append("checkpoint.rejected", checkpoint_uri, {"uri": checkpoint_uri, "reason": str(exc)})
        logger.error("checkpoint rejected: %s", exc)
        return {"status": "rejected", "checkpoint": checkpoint_uri, "reason": str(exc)}

    try:
        pol: Policy = read_policy(policy)
    except Exception as exc:  # no policy, no determination: halt everything until someone fixes it
        error = f"{type(exc).__name__}: {exc}"
        logger.error("policy %s unreadable, halting all scaling: %s", policy, error)
        ledger.append("evaluation.failed", ckpt.uri, {"checkpoint": ckpt.uri, "error": error, "policy": policy})
        _enforce_unreadable_policy(ckpt.uri, error)
        raise
    key = evaluation_key(ckpt.uri, pol)
    owner = claim_owner
    if owner is None and not force:
        if ledger.is_done(key):
            logger.info("%s was already evaluated under this policy; pass force=True to re-evaluate", ckpt.uri)
            prev = ledger.previous_determination(ckpt.run_id, before_step=ckpt.step + 1) or {}
            return {"status": "already_evaluated", "checkpoint": ckpt.uri, "decision": prev.get("decision"),
                    "required_level": prev.get("required_level")}
        owner = _owner()
        if not ledger.claim(key, owner, settings.claim_lease_s):
            logger.info("%s is being evaluated elsewhere", ckpt.uri)
            return {"status": "claimed_elsewhere", "checkpoint": ckpt.uri}

    ref = CheckpointRef(run_id=ckpt.run_id, step=ckpt.step, effective_compute=ckpt.effective_compute,
                        uri=ckpt.uri, digest=ckpt.digest)
    folder = run_folder(settings.resolved_runs_dir, ckpt.run_id, ckpt.step)
    now = dt.datetime.now(dt.timezone.utc)
    scores: dict[str, Any] = {}
    stage_error = None
    try:
        info = checkpoint_info(ckpt)
        det, _table, scores = _assess(pol, info, ref, ledger, folder, force=force, task_runner=task_runner,
                                      limit=limit, now=now)
        from tasks.evaluation import verify_safeguards_task

        det = apply_safeguard_checks(det, verify_safeguards_task(pol, list(det.required_safeguards), ckpt.uri))
    except Exception as exc:  # fail closed: the checkpoint is recorded as a halt, with the reason
        stage_error = f"{type(exc).__name__}: {exc}"
        logger.error("evaluation failed, recording a fail-closed determination: %s", stage_error)
        det = fail_closed_determination(pol, f"evaluation failed: {stage_error}", checkpoint=ref)

    payload = det.model_dump(mode="json") | {"scores": scores, "stage_error": stage_error, "forced": force,
                                             "policy_ref": policy}
    event = ledger.append("determination.recorded", ckpt.uri, payload)
    write_json(folder / "determination.json", payload | {"ledger_seq": event.seq, "ledger_hash": event.hash})
    logger.info("determination recorded at ledger seq %d: level %s, decision %s", event.seq, det.required_level,
                det.decision)
    halt = None
    if det.decision == "halt":
        halt = _enforce(det, event, policy)
    from tasks.report import publish_report

    publish_report(det, folder, ledger_seq=event.seq)
    _run_report(ledger, settings.resolved_runs_dir, ref.run_id)
    if owner and claim_owner is None:
        ledger.complete(key, owner, {"decision": det.decision, "required_level": det.required_level,
                                     "determination_seq": event.seq})
    return {
        "status": "evaluated" if stage_error is None else "failed_closed",
        "checkpoint": ckpt.uri,
        "run_id": ref.run_id,
        "step": ref.step,
        "assessment": det.assessment,
        "required_level": det.required_level,
        "decision": det.decision,
        "halts": list(det.halts),
        "determination_seq": event.seq,
        "halt": halt,
        "error": stage_error,
    }


def _run_report(ledger: Any, runs_dir: Path, run_id: str) -> None:
    from tasks.run_report import write_run_report

    try:
        write_run_report(ledger, runs_dir, run_id)
    except Exception as exc:  # the determination is recorded; a plot failing must not fail the evaluation
        get_run_logger().warning("run report not written: %s", exc)


def _enforce(det: Determination, event: Any, policy_ref: str) -> dict[str, Any]:
    """Open (idempotently), apply and announce the halt this determination calls for."""
    from flows.halt import halt

    out = halt(determination=det.model_dump(mode="json"), determination_seq=event.seq,
               determination_subject=event.subject, policy=policy_ref, opened_by="evaluate")
    h, applied = out["halt"], out.get("apply") or {}
    return {"halt_id": h["halt_id"], "created": h["created"], "applied": applied.get("applied"),
            "apply_error": applied.get("error")}


def _enforce_unreadable_policy(where: str, error: str) -> None:
    """No policy, no determination: halt all scaling, once per place the policy failed to load."""
    from flows.halt import halt

    halt(reason=f"policy unreadable while evaluating {where}: {error}", activities=["training", "deployment"],
         cause=f"policy-unreadable:{where}", opened_by="evaluate")
