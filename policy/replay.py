"""Replaying a recorded determination from its policy and its sample rows: the audit's re-derivation.

The engine is pure, so what it concluded can be recomputed by anyone holding the same policy
file and the same rows. What a replay recomputes: every benchmark summary and interval, every
measure and threshold status, the required level, the required safeguards, the decision and the
activities halted. What it takes as recorded (inputs the engine receives from stages that are
not pure): the assessment depth and its reason, the data-quality verdict (great-expectations),
the sandbagging anomalies (which compare with earlier checkpoints), the run failures, and the
safeguard checks (evidence stores, probes). The thresholds a preliminary assessment carries come
from the run's previous comprehensive determination, as the pipeline takes them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from policy.assessment import PriorComprehensive, carried_thresholds
from policy.cadence import CadenceDecision
from policy.determination import Determination
from policy.engine import apply_safeguard_checks, classify
from policy.identity import policy_sha256
from policy.results import SampleTable
from policy.schema import Policy


def replay(policy: Policy, rows: SampleTable, recorded: Determination,
           prior_comprehensive: Mapping[str, Any] | None = None) -> Determination:
    """The determination the engine makes from `policy` and `rows` with `recorded`'s non-pure inputs."""
    from policy.assessment import first_benchmarks

    ran: tuple[str, ...] | None = None
    carried = None
    if recorded.assessment is not None:
        ran = first_benchmarks(policy, CadenceDecision(recorded.assessment, recorded.assessment_reason or ""))
        if recorded.assessment == "preliminary" and prior_comprehensive is not None:
            prior = PriorComprehensive(payload=prior_comprehensive, recorded_at=dt.datetime.now(dt.UTC))
            carried = carried_thresholds(prior, policy_sha256(policy))
    det = classify(policy, rows, checkpoint=recorded.checkpoint, assessment=recorded.assessment,
                   assessment_reason=recorded.assessment_reason, benchmarks_run=ran, quality=recorded.quality,
                   anomalies=recorded.anomalies, run_failures=recorded.run_failures, carried=carried)
    if recorded.safeguards is not None:
        det = apply_safeguard_checks(det, {c.id: c for c in recorded.safeguards})
    return det


def first_difference(a: Any, b: Any, path: str = "") -> str | None:
    """Where two JSON values first differ (`thresholds[2].status: 'crossed' != 'below'`), or None."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for key in sorted(set(a) | set(b)):
            found = first_difference(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))
            if found:
                return found
        return None
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            return f"{path}: {len(a)} entries != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if a == b else f"{path}: {a!r:.60} != {b!r:.60}"
