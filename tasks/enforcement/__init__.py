"""Enforcement: turning a halt in the ledger into scaling that has really stopped.

A halt is five things (DESIGN.md, "pausing a Prefect deployment is not a halt"):

1. the record: `open_halt(determination, ...)` / `open_manual_halt(reason, activities)`
   write `halt.opened` to the ledger, idempotently per cause. From that moment the gate
   (`tasks.gate.ScalingGate`), which every scaling flow checks at start and before every
   step, refuses the halted runs;
2. `apply_halt(halt_id)`: pause the scaling deployments and cancel their scheduled,
   pending, running and paused flow runs through Prefect's API, with retries; records
   `halt.applied` or `halt.apply_failed`;
3. the same apply pauses the scaling work queue (settings' `queues`, default
   `rsp-scaling/scaling` from deployments/prefect.yaml) while the halt pauses every scaling
   deployment on it: no worker is handed a run from it, however the run was created;
4. `reconcile()`: re-apply every open halt (watch ticks, serve start-up via
   `serve_scaling`, `rsp halt reconcile`), the queue pause included, and resume a queue the
   halts paused once none covers it (tasks/enforcement/queues.py); silent when Prefect
   already agrees;
5. `ensure_halt_automation()`: a Prefect automation that cancels new runs of halted
   deployments (best effort).

`open_and_enforce(HaltRequest(...), ledger=...)` is the one composition every halt goes
through (the halt flow, `rsp halt open`): record, apply, notify, start the approval wait.

Scaling deployments are those tagged with settings.scaling_tag ("scaling"), plus any
named in RSP_SCALING_DEPLOYMENTS; their activity comes from a "training" or "deployment"
tag (none: training). Prefect is imported only inside the functions that talk to it.
"""

from policy.halts import (
    ACTIVITIES,
    ALL_RUNS,
    HaltRecord,
    HaltScope,
    describe_cause,
    describe_lift,
    scope_covers,
    scope_of,
)
from tasks.enforcement.apply import ApplyReport, apply_halt
from tasks.enforcement.automation import automation_name, ensure_halt_automation
from tasks.enforcement.halting import HaltOutcome, HaltRequest, RecordedHalt, open_and_enforce
from tasks.enforcement.halts import determination_of, open_halt, open_manual_halt, open_record
from tasks.enforcement.reconcile import ReconcileReport, last_reconcile, reconcile
from tasks.enforcement.serve import serve_scaling
from tasks.enforcement.settings import EnforcementSettings, enforcement_settings

__all__ = [
    "ACTIVITIES",
    "ALL_RUNS",
    "ApplyReport",
    "EnforcementSettings",
    "HaltOutcome",
    "HaltRecord",
    "HaltRequest",
    "HaltScope",
    "ReconcileReport",
    "RecordedHalt",
    "apply_halt",
    "automation_name",
    "describe_cause",
    "describe_lift",
    "determination_of",
    "enforcement_settings",
    "ensure_halt_automation",
    "last_reconcile",
    "open_and_enforce",
    "open_halt",
    "open_manual_halt",
    "open_record",
    "reconcile",
    "scope_covers",
    "scope_of",
    "serve_scaling",
]
