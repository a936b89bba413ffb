"""Typed ledger events (tasks/ledger/events.py) keep the ledger byte-compatible.

An event written through its model has exactly the payload, hence the hash, that today's
writer produces with `append(kind, subject, dict)`; a ledger written the old way verifies
and reads back typed; a payload missing a required field is refused, naming the kind and
the field, and nothing is written.
"""

from __future__ import annotations

import ast
import datetime as dt
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from policy.determination import (
    CheckpointRef,
    Determination,
    PolicyRef,
    QualityVerdict,
    SafeguardCheck,
    SafeguardRequirement,
)
from policy.halts import HaltRecord, record_for_determination
from tasks.ledger import GENESIS_HASH, GenericEvent, InvalidEvent, Ledger, event_hash
from tasks.ledger.chain import canonical, utc_iso
from tasks.ledger.events import (
    LEDGER_EVENT,
    MODELS,
    ApprovalRoundClosed,
    ApprovalRoundOpened,
    ApprovalWaitEnded,
    ApprovalWaitStarted,
    ApprovalWaitTimedOut,
    CheckpointChanged,
    CheckpointDuplicate,
    CheckpointRejected,
    CheckpointWritten,
    DeterminationRecorded,
    EvaluationCaughtUp,
    EvaluationClaimed,
    EvaluationCompleted,
    EvaluationFailed,
    EvaluationReleased,
    ForecastWarning,
    GateKeyRecorded,
    HaltApplied,
    HaltApplyFailed,
    HaltDeploymentsResumed,
    HaltGuardInstalled,
    HaltGuardRestored,
    HaltLifted,
    HaltLiftRefused,
    HaltOpened,
    HaltReconciled,
    HaltReconcileFailed,
    HaltResumeFailed,
    LedgerEventModel,
    NoiseProbeFlagged,
    NotificationFailed,
    NotificationSent,
    PolicyAdopted,
    PolicyChangeProposed,
    PolicyChangeVoted,
    PolicyChangeVoteRefused,
    PolicyUnreadable,
    ScalingRunBlocked,
    ScalingRunCancelled,
    VoteRecorded,
    VoteRefused,
    parse_event,
)

ROOT = Path(__file__).resolve().parent.parent
NOW = dt.datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)
# The head hash of `dict_events()` appended with the clock at NOW, computed by the ledger code
# as it was before typed events (commit 4eb949e): the on-disk format has not moved by a byte.
GOLDEN_HEAD = (32, "9c72c437788dd762b556f89e61b7f9c9785938b4c6dcc32cc055d36166f2466f")

URI = "file:///ckpts/run-a/step-100/"
KEY = f"eval:{URI}:sha"
KEY2 = "eval:file:///ckpts/run-a/step-200/:sha"
HALT = "halt-0123456789abcdef"
API = "http://127.0.0.1:4200/api"
TALLY: dict[str, Any] = {"satisfied": False, "rejected_by": None, "approvers": ["bob"], "quorum": 2, "assignment": {},
         "ineligible": []}


def determination() -> Determination:
    return Determination(
        policy=PolicyRef(id="anthropic-rsp", name="RSP", version="2.2", sha256="a" * 64),
        checkpoint=CheckpointRef(run_id="run-a", step=100, effective_compute=1e24, uri=URI, digest="sha256:00"),
        assessment="comprehensive", assessment_reason="first checkpoint",
        benchmarks=(), thresholds=(), required_level="ASL-3", required_level_rank=1, level_reasons=("test",),
        required_safeguards=(
            SafeguardRequirement(id="sg-sec", name="security", kind="security", halts=("training",),
                                 required_by=("ASL-3",)),
        ),
        quality=QualityVerdict(status="passed"),
        safeguards=(SafeguardCheck(id="sg-sec", state="unmet", evidence="none"),),
        obligations_met=False, decision="halt", halts=("training",), decision_reasons=("sg-sec is unmet",),
    )


def halt_record() -> HaltRecord:
    return record_for_determination(determination(), key="det:0123#0", seq=4, subject=URI)


def dict_events() -> list[tuple[str, str, dict[str, Any]]]:
    """One of every kind (two where writers differ), each payload built the way its writer
    builds it today, in an order the projections accept."""
    lease = utc_iso(NOW + dt.timedelta(seconds=600))
    det = determination().model_dump(mode="json") | {
        "scores": {"bio": {"mean": 0.5, "n": 40}}, "stage_error": None, "forced": False, "policy_ref": "anthropic-rsp",
    }
    verification = {"sg-sec": {"state": "met", "evidence": "attested", "checked_at": "2025-01-02T00:00:00+00:00"}}
    return [
        # flows/watch.py and flows/evaluate.py
        ("checkpoint.rejected", "run-a/step-050", {"key": "run-a/step-050", "reason": "manifest: step: missing"}),
        ("checkpoint.rejected", "file:///x/", {"uri": "file:///x/", "reason": "no checkpoint.json"}),
        # tasks/ledger/claims.py
        ("evaluation.claimed", KEY, {"key": KEY, "owner": "host:1", "attempt": 1, "lease_s": 600,
                                     "lease_expires_at": lease, "previous_owner": None, "previous_state": None}),
        ("determination.recorded", URI, det),
        ("evaluation.completed", KEY, {"key": KEY, "owner": "host:1", "attempt": 1,
                                       "outcome": {"decision": "halt", "required_level": "ASL-3"}}),
        # tasks/enforcement
        ("halt.opened", HALT, halt_record().model_dump(mode="json") | {"halt_id": HALT}),
        ("halt.applied", HALT, {"halt_id": HALT, "api_url": API, "paused": ["train/scaling"], "already_paused": [],
                                "cancelled": ["run-1"], "attempts": 1}),
        ("halt.apply_failed", HALT, {"halt_id": HALT, "api_url": API, "attempts": 3, "error": "pause x: 503",
                                     "errors": [{"what": "pause", "name": "x", "error": "503"}], "paused": [],
                                     "cancelled": []}),
        ("halt.reconciled", HALT, {"halt_id": HALT, "api_url": API, "paused": ["train/scaling"], "cancelled": []}),
        ("halt.reconcile_failed", HALT, {"halt_id": HALT, "api_url": None, "error": "no Prefect API"}),
        # tasks/gate.py, inside and outside a Prefect flow run
        ("scaling.run_blocked", HALT, {"halt_id": HALT, "run_id": "run-a", "activity": "training",
                                       "started_by": "deployment run started by hand (UI, API or CLI)",
                                       "flow_run_id": "fr-1", "flow_run_name": "brave-fox", "deployment_id": "d-1",
                                       "auto_scheduled": False, "created_by": None, "tags": ["scaling"]}),
        ("scaling.run_blocked", HALT, {"halt_id": HALT, "run_id": "run-b", "activity": "deployment",
                                       "started_by": "direct call (no Prefect)"}),
        # tasks/notify/dispatch.py
        ("notification.sent", HALT, {"halt_id": HALT, "key": f"{HALT}|halt.opened|slack", "event": "halt.opened",
                                     "event_key": "halt.opened", "channel": "slack",
                                     "ref": {"channel": "C1", "ts": "1.2"}, "links": {}}),
        ("notification.sent", HALT, {"halt_id": HALT, "key": f"{HALT}|halt.applied|file", "event": "halt.applied",
                                     "event_key": "halt.applied", "channel": "file", "ref": {"path": "/n.jsonl"}}),
        ("notification.failed", HALT, {"halt_id": HALT, "key": f"{HALT}|halt.applied|slack", "event": "halt.applied",
                                       "event_key": "halt.applied", "channel": "slack", "error": "HTTP 500",
                                       "attempts": 1, "next_attempt_at": 1735787045.5}),
        # flows/approval.py and tasks/approvals/votes.py
        ("approval.wait_started", HALT, {"halt_id": HALT, "flow_run_id": "fr-2", "timeout_s": 3600}),
        ("vote.refused", HALT, {"halt_id": HALT, "code": "unknown_user", "reason": "U9 is not on the roster",
                                "person": None, "decision": "approve", "channel": "slack", "channel_ref": "U9"}),
        ("vote.refused", HALT, {"halt_id": HALT, "code": "bad_input", "channel": "prefect-ui", "channel_ref": "fr-2",
                                "reason": "unreadable input: x"}),
        ("vote.recorded", HALT, {"halt_id": HALT, "round": 1, "person": "alice", "decision": "reject",
                                 "roles": ["security"], "justification": "not yet", "channel": "cli",
                                 "channel_ref": "alice", "duplicate": False, "tally": TALLY}),
        ("approval.round_closed", HALT, {"halt_id": HALT, "round": 1, "outcome": "rejected", "by": "alice",
                                         "justification": "not yet"}),
        ("approval.round_opened", HALT, {"halt_id": HALT, "round": 2, "by": "bob", "channel": "slack",
                                         "justification": "fixed"}),
        ("vote.recorded", HALT, {"halt_id": HALT, "round": 2, "person": "bob", "decision": "approve",
                                 "roles": ["security", "research"], "justification": "fixed", "channel": "slack",
                                 "channel_ref": None, "duplicate": False, "tally": TALLY}),
        # tasks/approvals/lift.py
        ("halt.lift_refused", HALT, {"halt_id": HALT, "reason": "approvals: 1 of 2", "missing": [], "tally": TALLY,
                                     "round": 2, "trigger": "vote 21 via slack"}),
        ("approval.wait_timed_out", HALT, {"halt_id": HALT, "flow_run_id": "fr-2", "waited_s": 3600.2,
                                           "note": "a timed-out wait approves nothing"}),
        ("approval.wait_ended", HALT, {"halt_id": HALT, "flow_run_id": "fr-2", "outcome": "timed_out", "votes": 2}),
        ("halt.lifted", HALT, {"halt_id": HALT, "round": 2, "approvers": ["bob", "carol"],
                               "assignment": {"security": "bob"}, "rules": {"roles": ["security"], "quorum": 2,
                                                                           "must_include": ["security"]},
                               "rules_source": "the halt record",
                               "votes": [{"seq": 22, "person": "bob", "decision": "approve", "roles": ["security"],
                                          "channel": "slack", "justification": "fixed"}],
                               "verification": verification, "trigger": "approval"}),
        ("halt.resume_failed", HALT, {"halt_id": HALT, "error": "ConnectError: refused"}),
        ("halt.deployments_resumed", HALT, {"halt_id": HALT, "resumed": ["train/scaling"],
                                            "kept_paused": [{"name": "serve/x", "halts": ["halt-other"]}],
                                            "not_paused": [], "not_found": []}),
        # tasks/ledger/claims.py: release, then a second attempt that fails
        ("evaluation.claimed", KEY2, {"key": KEY2, "owner": "host:1", "attempt": 1, "lease_s": 0.5,
                                      "lease_expires_at": lease, "previous_owner": None, "previous_state": None}),
        ("evaluation.released", KEY2, {"key": KEY2, "owner": "host:1", "attempt": 1, "reason": "shutting down"}),
        ("evaluation.claimed", KEY2, {"key": KEY2, "owner": "host:2", "attempt": 2, "lease_s": 600,
                                      "lease_expires_at": lease, "previous_owner": "host:1",
                                      "previous_state": "released"}),
        ("evaluation.failed", KEY2, {"key": KEY2, "owner": "host:2", "attempt": 2, "error": "RuntimeError: boom"}),
    ]
# -- end of dict_events


def model_events() -> list[tuple[LedgerEventModel, str]]:
    """The same events, written the new way: the model each writer now builds."""
    lease = utc_iso(NOW + dt.timedelta(seconds=600))
    verification = {"sg-sec": {"state": "met", "evidence": "attested", "checked_at": "2025-01-02T00:00:00+00:00"}}
    record = halt_record().model_dump(mode="json") | {"halt_id": HALT}
    return [
        (CheckpointRejected(key="run-a/step-050", reason="manifest: step: missing"), "run-a/step-050"),
        (CheckpointRejected(uri="file:///x/", reason="no checkpoint.json"), "file:///x/"),
        (EvaluationClaimed(key=KEY, owner="host:1", attempt=1, lease_s=600, lease_expires_at=lease,
                           previous_owner=None, previous_state=None), KEY),
        (DeterminationRecorded.of(determination(), scores={"bio": {"mean": 0.5, "n": 40}}, stage_error=None,
                                  forced=False, policy_ref="anthropic-rsp"), URI),
        (EvaluationCompleted(key=KEY, owner="host:1", attempt=1,
                             outcome={"decision": "halt", "required_level": "ASL-3"}), KEY),
        (HaltOpened.from_payload(record), HALT),
        (HaltApplied(halt_id=HALT, api_url=API, paused=["train/scaling"], already_paused=[], cancelled=["run-1"],
                     attempts=1), HALT),
        (HaltApplyFailed(halt_id=HALT, api_url=API, attempts=3, error="pause x: 503",
                         errors=[{"what": "pause", "name": "x", "error": "503"}], paused=[], cancelled=[]), HALT),
        (HaltReconciled(halt_id=HALT, api_url=API, paused=["train/scaling"], cancelled=[]), HALT),
        (HaltReconcileFailed(halt_id=HALT, api_url=None, error="no Prefect API"), HALT),
        (ScalingRunBlocked(halt_id=HALT, run_id="run-a", activity="training",
                           started_by="deployment run started by hand (UI, API or CLI)", flow_run_id="fr-1",
                           flow_run_name="brave-fox", deployment_id="d-1", auto_scheduled=False, created_by=None,
                           tags=["scaling"]), HALT),
        (ScalingRunBlocked(halt_id=HALT, run_id="run-b", activity="deployment",
                           started_by="direct call (no Prefect)"), HALT),
        (NotificationSent.from_payload({"halt_id": HALT, "key": f"{HALT}|halt.opened|slack", "event": "halt.opened",
                                        "event_key": "halt.opened", "channel": "slack",
                                        "ref": {"channel": "C1", "ts": "1.2"}, "links": {}}), HALT),
        (NotificationSent.from_payload({"halt_id": HALT, "key": f"{HALT}|halt.applied|file", "event": "halt.applied",
                                        "event_key": "halt.applied", "channel": "file",
                                        "ref": {"path": "/n.jsonl"}}), HALT),
        (NotificationFailed(halt_id=HALT, key=f"{HALT}|halt.applied|slack", event="halt.applied",
                            event_key="halt.applied", channel="slack", error="HTTP 500", attempts=1,
                            next_attempt_at=1735787045.5), HALT),
        (ApprovalWaitStarted(halt_id=HALT, flow_run_id="fr-2", timeout_s=3600), HALT),
        (VoteRefused(halt_id=HALT, code="unknown_user", reason="U9 is not on the roster", person=None,
                     decision="approve", channel="slack", channel_ref="U9"), HALT),
        (VoteRefused(halt_id=HALT, code="bad_input", channel="prefect-ui", channel_ref="fr-2",
                     reason="unreadable input: x"), HALT),
        (VoteRecorded.from_payload({"halt_id": HALT, "round": 1, "person": "alice", "decision": "reject",
                                    "roles": ["security"], "justification": "not yet", "channel": "cli",
                                    "channel_ref": "alice", "duplicate": False, "tally": TALLY}), HALT),
        (ApprovalRoundClosed(halt_id=HALT, round=1, outcome="rejected", by="alice", justification="not yet"), HALT),
        (ApprovalRoundOpened(halt_id=HALT, round=2, by="bob", channel="slack", justification="fixed"), HALT),
        (VoteRecorded.from_payload({"halt_id": HALT, "round": 2, "person": "bob", "decision": "approve",
                                    "roles": ["security", "research"], "justification": "fixed", "channel": "slack",
                                    "channel_ref": None, "duplicate": False, "tally": TALLY}), HALT),
        (HaltLiftRefused.from_payload({"halt_id": HALT, "reason": "approvals: 1 of 2", "missing": [], "tally": TALLY,
                                       "round": 2, "trigger": "vote 21 via slack"}), HALT),
        (ApprovalWaitTimedOut(halt_id=HALT, flow_run_id="fr-2", waited_s=3600.2,
                              note="a timed-out wait approves nothing"), HALT),
        (ApprovalWaitEnded(halt_id=HALT, flow_run_id="fr-2", outcome="timed_out", votes=2), HALT),
        (HaltLifted.from_payload({"halt_id": HALT, "round": 2, "approvers": ["bob", "carol"],
                                  "assignment": {"security": "bob"},
                                  "rules": {"roles": ["security"], "quorum": 2, "must_include": ["security"]},
                                  "rules_source": "the halt record",
                                  "votes": [{"seq": 22, "person": "bob", "decision": "approve",
                                             "roles": ["security"], "channel": "slack", "justification": "fixed"}],
                                  "verification": verification, "trigger": "approval"}), HALT),
        (HaltResumeFailed(halt_id=HALT, error="ConnectError: refused"), HALT),
        (HaltDeploymentsResumed(halt_id=HALT, resumed=["train/scaling"],
                                kept_paused=[{"name": "serve/x", "halts": ["halt-other"]}], not_paused=[],
                                not_found=[]), HALT),
        (EvaluationClaimed(key=KEY2, owner="host:1", attempt=1, lease_s=0.5, lease_expires_at=lease,
                           previous_owner=None, previous_state=None), KEY2),
        (EvaluationReleased(key=KEY2, owner="host:1", attempt=1, reason="shutting down"), KEY2),
        (EvaluationClaimed(key=KEY2, owner="host:2", attempt=2, lease_s=600, lease_expires_at=lease,
                           previous_owner="host:1", previous_state="released"), KEY2),
        (EvaluationFailed(key=KEY2, owner="host:2", attempt=2, error="RuntimeError: boom"), KEY2),
    ]


# Kinds added after the golden ledger above was written: the same pairing, outside its sequence.
NEWER_PAIRS: list[tuple[tuple[str, str, dict[str, Any]], tuple[LedgerEventModel, str]]] = [
    (("policy.unreadable", "file:///ck/run-a/step-000000100/",
      {"checkpoint": "file:///ck/run-a/step-000000100/", "policy": "p.yaml", "error": "PolicyError: bad"}),
     (PolicyUnreadable(checkpoint="file:///ck/run-a/step-000000100/", policy="p.yaml", error="PolicyError: bad"),
      "file:///ck/run-a/step-000000100/")),
    (("checkpoint.changed", "file:///ck/run-a/step-000000100/",
      {"uri": "file:///ck/run-a/step-000000100/", "run_id": "run-a", "step": 100, "old_digest": "sha256:" + "a" * 64,
       "new_digest": "sha256:" + "b" * 64, "cause": "checkpoint-changed:file:///ck/run-a/step-000000100/#x@0"}),
     (CheckpointChanged(uri="file:///ck/run-a/step-000000100/", run_id="run-a", step=100,
                        old_digest="sha256:" + "a" * 64, new_digest="sha256:" + "b" * 64,
                        cause="checkpoint-changed:file:///ck/run-a/step-000000100/#x@0"),
      "file:///ck/run-a/step-000000100/")),
    (("checkpoint.duplicate", "file:///ck/run-a/step-000000100.retry/",
      {"uri": "file:///ck/run-a/step-000000100.retry/", "run_id": "run-a", "step": 100,
       "others": ["file:///ck/run-a/step-000000100/"]}),
     (CheckpointDuplicate(uri="file:///ck/run-a/step-000000100.retry/", run_id="run-a", step=100,
                          others=["file:///ck/run-a/step-000000100/"]), "file:///ck/run-a/step-000000100.retry/")),
]
# tasks/enforcement: every stopped run on record, and the halt guard put back (issue 13).
GUARD = "rsp-halt-guard[scaling]"
NEWER_PAIRS += [
    (("scaling.run_cancelled", "fr-9",
      {"halt_id": HALT, "flow_run_id": "fr-9", "stopped_by": "halt-guard automation", "halts": [HALT],
       "started_by": "deployment run started by hand (UI, API or CLI)", "flow_run_name": "quiet-owl",
       "deployment_id": "d-1", "deployment": "train-demo/scaling", "run_id": "run-a", "auto_scheduled": False,
       "created_by": None, "created": "2025-01-02T03:04:05+00:00", "stopped_at": "2025-01-02T03:04:06+00:00",
       "state": "CANCELLED", "state_message": None, "automation_id": "a-1", "api_url": API}),
     (ScalingRunCancelled(halt_id=HALT, flow_run_id="fr-9", stopped_by="halt-guard automation", halts=[HALT],
                          started_by="deployment run started by hand (UI, API or CLI)", flow_run_name="quiet-owl",
                          deployment_id="d-1", deployment="train-demo/scaling", run_id="run-a", auto_scheduled=False,
                          created_by=None, created="2025-01-02T03:04:05+00:00",
                          stopped_at="2025-01-02T03:04:06+00:00", state="CANCELLED", state_message=None,
                          automation_id="a-1", api_url=API), "fr-9")),
    (("halt_guard.installed", GUARD,
      {"automation": GUARD, "scaling_tag": "scaling", "api_url": API, "automation_id": "a-1",
       "by": "ensure_halt_automation"}),
     (HaltGuardInstalled(automation=GUARD, scaling_tag="scaling", api_url=API, automation_id="a-1",
                         by="ensure_halt_automation"), GUARD)),
    (("halt_guard.restored", GUARD,
      {"automation": GUARD, "scaling_tag": "scaling", "api_url": API, "automation_id": "a-2", "found": "missing",
       "change": "created", "by": "reconcile", "halts": [HALT], "deployments": ["d-1"]}),
     (HaltGuardRestored(automation=GUARD, scaling_tag="scaling", api_url=API, automation_id="a-2", found="missing",
                        change="created", by="reconcile", halts=[HALT], deployments=["d-1"]), GUARD)),
]
# The evaluation lag bound (issue 13): a trainer's checkpoint report, and why an overdue halt lifted by itself.
NEWER_PAIRS += [
    (("checkpoint.written", "run-a",
      {"run_id": "run-a", "step": 3, "uri": "file:///ck/run-a/step-000000003/", "effective_compute": 4e21}),
     (CheckpointWritten(run_id="run-a", step=3, uri="file:///ck/run-a/step-000000003/", effective_compute=4e21),
      "run-a")),
    (("evaluation.caught_up", HALT,
      {"halt_id": HALT, "run_id": "run-a", "last_determined_step": 3, "newest_step": 3, "unevaluated": 0,
       "checked_by": "reconcile"}),
     (EvaluationCaughtUp(halt_id=HALT, run_id="run-a", last_determined_step=3, newest_step=3, unevaluated=0,
                         checked_by="reconcile"), HALT)),
]
# Predictive early warning (issue 17): a measure forecast to cross before the next comprehensive step.
NEWER_PAIRS += [
    (("forecast.warning", "run-a",
      {"run_id": "run-a", "step": 5, "threshold_id": "CBRN-3", "benchmark": "bio", "metric": "mean",
       "comparison": ">=", "threshold": 0.6, "crossing": 3.1e23, "earliest": 1.2e23, "latest": None, "band": 0.8,
       "next_comprehensive": 2.56e23, "steps": [0, 1, 2, 3, 4], "checkpoints": 5, "message": "forecast warning"}),
     (ForecastWarning(run_id="run-a", step=5, threshold_id="CBRN-3", benchmark="bio", metric="mean", comparison=">=",
                      threshold=0.6, crossing=3.1e23, earliest=1.2e23, latest=None, band=0.8,
                      next_comprehensive=2.56e23, steps=[0, 1, 2, 3, 4], checkpoints=5, message="forecast warning"),
      "run-a")),
]
# Signed determinations (issue 15): the gate's public key, recorded once per key.
GATE_FP = "SHA256:" + "k" * 43
NEWER_PAIRS += [
    (("gate.key", GATE_FP, {"public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB gate", "fingerprint": GATE_FP,
                             "path": "/home/rsp/keys/gate"}),
     (GateKeyRecorded(public_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB gate", fingerprint=GATE_FP,
                      path="/home/rsp/keys/gate"), GATE_FP)),
]
# The noise-injection sandbagging probe's flag (issue 14).
NEWER_PAIRS += [
    (("noise_probe.flagged", "file:///ck/run-a/step-000000100/",
      {"checkpoint": "file:///ck/run-a/step-000000100/", "run_id": "run-a", "step": 100,
       "benchmark": "wmdp-bio-proxy", "message": "noise probe: 12/32", "n": 32, "clean": 0,
       "noised": {"0.1": 12}, "scale": "absolute", "error": None}),
     (NoiseProbeFlagged(checkpoint="file:///ck/run-a/step-000000100/", run_id="run-a", step=100,
                        benchmark="wmdp-bio-proxy", message="noise probe: 12/32", n=32, clean=0,
                        noised={"0.1": 12}, scale="absolute", error=None), "file:///ck/run-a/step-000000100/")),
]
# Policy versions (issue 15, part C): the version in force, a loosening held, votes on it.
PC = "pc-0123456789abcdef"
CHANGE_STATEMENT = {"_type": "rsp.policy-change-vote/v1", "proposal_id": PC, "decision": "approve", "person": "alice",
                    "role": "rso", "at": "2025-01-02T03:04:05+00:00", "nonce": "n1"}
NEWER_PAIRS += [
    (("policy.adopted", "tiny", {"policy_id": "tiny", "sha256": "a" * 64, "reason": "approved", "text": "framework: x",
                                 "version": "1.1", "source": "p.yaml", "previous_sha256": "b" * 64,
                                 "changes": ["LOOSENS changed approvals.quorum"], "proposal_id": PC,
                                 "approvers": ["alice", "bob"]}),
     (PolicyAdopted(policy_id="tiny", sha256="a" * 64, reason="approved", text="framework: x", version="1.1",
                    source="p.yaml", previous_sha256="b" * 64, changes=["LOOSENS changed approvals.quorum"],
                    proposal_id=PC, approvers=["alice", "bob"]), "tiny")),
    (("policy.change_proposed", PC, {"proposal_id": PC, "policy_id": "tiny", "sha256": "a" * 64,
                                     "in_force_sha256": "b" * 64, "loosening": ["LOOSENS changed approvals.quorum"],
                                     "text": "framework: x", "rules": {"roles": ["rso"], "quorum": 2}}),
     (PolicyChangeProposed(proposal_id=PC, policy_id="tiny", sha256="a" * 64, in_force_sha256="b" * 64,
                           loosening=["LOOSENS changed approvals.quorum"], text="framework: x",
                           rules={"roles": ["rso"], "quorum": 2}), PC)),
    (("policy.change_voted", PC, {"proposal_id": PC, "person": "alice", "decision": "approve", "role": "rso",
                                  "statement": CHANGE_STATEMENT, "signature": "c2ln", "key_fingerprint": GATE_FP}),
     (PolicyChangeVoted(proposal_id=PC, person="alice", decision="approve", role="rso", statement=CHANGE_STATEMENT,
                        signature="c2ln", key_fingerprint=GATE_FP), PC)),
    (("policy.change_vote_refused", PC, {"proposal_id": PC, "code": "wrong_key", "reason": "signed with bob's key",
                                         "person": "alice"}),
     (PolicyChangeVoteRefused(proposal_id=PC, code="wrong_key", reason="signed with bob's key", person="alice"), PC)),
]
PAIRS = list(zip(dict_events(), model_events(), strict=True)) + NEWER_PAIRS


def _ledger(tmp_path: Path, name: str) -> Ledger:
    return Ledger(f"sqlite:///{tmp_path / name}", clock=lambda: NOW)


def _ledger_at(url: str) -> Ledger:
    return Ledger(url, clock=lambda: NOW)


# -- the same bytes, written either way ---------------------------------------------------------


@pytest.mark.parametrize(("old", "new"), PAIRS, ids=[f"{i}-{old[0]}" for i, (old, _) in enumerate(PAIRS)])
def test_a_model_writes_the_payload_and_hash_of_the_dict_it_replaces(
    old: tuple[str, str, dict[str, Any]], new: tuple[LedgerEventModel, str]
) -> None:
    kind, subject, payload = old
    event, new_subject = new
    assert (event.kind, type(event).KIND, new_subject) == (kind, kind, subject)
    assert canonical(event.to_payload()) == canonical(payload)
    ts = utc_iso(NOW)
    assert event_hash(1, ts, kind, subject, json.loads(canonical(event.to_payload())), GENESIS_HASH) == event_hash(
        1, ts, kind, subject, json.loads(canonical(payload)), GENESIS_HASH
    )


def test_every_listed_kind_has_a_case_here() -> None:
    assert {kind for (kind, _, _), _ in PAIRS} == set(MODELS)


def test_a_ledger_written_with_models_is_the_ledger_written_with_dicts(new_ledger_url: Callable[[str], str]) -> None:
    # On SQLite and PostgreSQL alike: the same bytes, the same golden head.
    with _ledger_at(new_ledger_url("old")) as old, _ledger_at(new_ledger_url("new")) as new:
        by_dict = old.append_many(dict_events())
        by_model = [new.record(event, subject) for event, subject in model_events()]
        assert [e.to_dict() for e in by_model] == [e.to_dict() for e in by_dict]
        assert old.head() == new.head() == GOLDEN_HEAD
        assert new.verify().ok


def test_the_claim_methods_write_what_they_wrote_before(new_ledger_url: Callable[[str], str]) -> None:
    with _ledger_at(new_ledger_url("old")) as old, _ledger_at(new_ledger_url("new")) as new:
        old.append("evaluation.claimed", KEY, dict_events()[2][2])
        old.append("evaluation.completed", KEY, dict_events()[4][2])
        assert new.claim(KEY, "host:1", 600)
        assert new.complete(KEY, "host:1", {"decision": "halt", "required_level": "ASL-3"}) is not None
        assert new.head() == old.head()


def test_a_determination_round_trips_through_its_event() -> None:
    det = determination()
    event = DeterminationRecorded.of(det, scores={}, forced=True)
    assert event.checkpoint is not None and (event.checkpoint.run_id, event.checkpoint.step) == ("run-a", 100)
    assert event.decision == "halt" and event.forced is True and event.stage_error is None
    assert event.to_payload() == det.model_dump(mode="json") | {"scores": {}, "forced": True}
    assert event.determination() == det


def test_a_halt_record_is_written_as_given(new_ledger_url: Callable[[str], str]) -> None:
    record = halt_record()
    with _ledger_at(new_ledger_url("l")) as ledger:
        halt, created = ledger.open_halt(HaltOpened.from_payload(record.model_dump(mode="json")))
        assert created and halt.payload == record.model_dump(mode="json")
        assert halt.record().cause_key == record.cause_key and halt.lift() is None
        ledger.record(HaltLifted(halt_id=record.halt_id, approvers=["x"]), record.halt_id)
        lifted = ledger.halt(record.halt_id)
        assert lifted is not None and lifted.lift() == HaltLifted(halt_id=record.halt_id, approvers=["x"])


# -- old ledgers ------------------------------------------------------------------------------


def test_a_ledger_of_raw_appends_verifies_and_reads_back_typed(new_ledger_url: Callable[[str], str]) -> None:
    with _ledger_at(new_ledger_url("raw")) as ledger:
        for kind, subject, payload in dict_events():
            ledger.append(kind, subject, payload)
        ledger.append("checkpoint.seen", "k1", {"i": 1, "kind": "not the event's"})  # a kind nobody lists
        assert ledger.verify().ok
        assert ledger.rebuild_projections() == len(dict_events()) + 1
        events = ledger.events()
        for stored in events[:-1]:
            typed = stored.typed()
            assert type(typed) is MODELS[stored.kind] and typed.kind == stored.kind
            assert typed.to_payload() == stored.payload
            assert type(LEDGER_EVENT.validate_python({**stored.payload, "kind": stored.kind})) is type(typed)
        unknown = events[-1].typed()
        assert isinstance(unknown, GenericEvent)
        assert (unknown.kind, unknown.to_payload()) == ("checkpoint.seen", {"i": 1, "kind": "not the event's"})


def test_every_kind_the_code_spells_is_listed() -> None:
    """A new kind string in the code without a model here would be written unchecked."""
    prefixes = ("checkpoint", "determination", "evaluation", "halt", "approval", "notification", "scaling", "vote",
                "policy")
    spelled = {
        m.group(1)
        for pkg in ("tasks", "flows", "rsp")
        for path in (ROOT / pkg).rglob("*.py")
        for m in re.finditer(rf'"((?:{"|".join(prefixes)})\.[a-z_]+)"', path.read_text())
    }
    files = {s for s in spelled if s.rsplit(".", 1)[1] in ("json", "jsonl", "yaml", "md", "db", "txt")}
    assert spelled - files - set(MODELS) == set()


NOT_YET_MIGRATED: set[str] = set()


def _docstrings(tree: ast.Module) -> set[int]:
    nodes = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, nodes) and node.body and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }


def test_every_kind_is_spelled_only_in_the_events_module() -> None:
    """Writers and readers name a kind by its model (`HaltOpened.KIND`), never by a string of their own."""
    spelled = []
    for pkg in ("policy", "tasks", "flows", "rsp"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel == "tasks/ledger/events.py" or rel in NOT_YET_MIGRATED:
                continue
            tree = ast.parse(path.read_text(), filename=rel)
            docs = _docstrings(tree)
            spelled += [
                f"{rel}:{node.lineno}: {node.value!r}"
                for node in ast.walk(tree)
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in MODELS
                and id(node) not in docs
            ]
    assert spelled == []


# -- refusals ---------------------------------------------------------------------------------


REQUIRED = [
    (kind, name)
    for kind, model in sorted(MODELS.items())
    for name, field in model.model_fields.items()
    if field.is_required() and name != "kind"
]


@pytest.mark.parametrize(("kind", "name"), REQUIRED, ids=[f"{k}-{n}" for k, n in REQUIRED])
def test_a_payload_missing_a_required_field_is_refused_naming_kind_and_field(
    tmp_path: Path, kind: str, name: str
) -> None:
    kind_, subject, payload = next(old for old, _ in PAIRS if old[0] == kind)
    partial = {k: v for k, v in payload.items() if k != name}
    expected = rf"^{re.escape(kind)} event for {re.escape(repr(subject))}: payload\['{name}'\] is required"
    with _ledger(tmp_path, "l.db") as ledger:
        with pytest.raises(InvalidEvent, match=expected):
            ledger.append(kind_, subject, partial)
        assert ledger.head()[0] == 0, "nothing was written"
    with pytest.raises(InvalidEvent, match=expected):
        MODELS[kind].from_payload(partial, subject)


def test_a_mistyped_field_is_refused_with_what_was_wrong(tmp_path: Path) -> None:
    with _ledger(tmp_path, "l.db") as ledger:
        with pytest.raises(InvalidEvent, match=r"approval.wait_started event for 'h': payload\['timeout_s'\] is not "
                                               r"valid: .*got '60'"):
            ledger.append("approval.wait_started", "h", {"halt_id": "h", "timeout_s": "60"})
        with pytest.raises(InvalidEvent, match=r"payload\['checkpoint'\]\['step'\] is not valid"):
            ledger.append("determination.recorded", "k", {"checkpoint": {"step": True}})
        assert ledger.head()[0] == 0


def test_a_model_of_another_kind_or_a_payload_claiming_a_kind_is_refused(tmp_path: Path) -> None:
    with _ledger(tmp_path, "l.db") as ledger:
        with pytest.raises(InvalidEvent, match="the payload given is a halt.resume_failed event"):
            ledger.append("halt.lifted", "h", HaltResumeFailed(halt_id="h", error="x"))
        with pytest.raises(InvalidEvent, match="payload has a 'kind' field"):
            ledger.append("halt.resume_failed", "h", {"halt_id": "h", "error": "x", "kind": "halt.lifted"})
        with pytest.raises(InvalidEvent, match="halt.opened event for 'h': the payload given is a halt.resume_failed"):
            ledger.open_halt(HaltResumeFailed(halt_id="h", error="x"))
        assert ledger.head()[0] == 0


def test_numbers_are_never_coerced() -> None:
    # 60 -> 60.0 or "60" -> 60 would change the canonical JSON, hence the hash.
    assert ApprovalWaitStarted(halt_id="h", timeout_s=60).to_payload() == {"halt_id": "h", "timeout_s": 60}
    assert isinstance(parse_event("approval.wait_timed_out", {"halt_id": "h", "waited_s": 1}), ApprovalWaitTimedOut)
    with pytest.raises(InvalidEvent, match="attempt"):
        parse_event("evaluation.failed", {"key": "k", "owner": "o", "attempt": "1", "error": "e"})
