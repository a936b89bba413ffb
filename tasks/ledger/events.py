"""Every kind of ledger event, one small pydantic model each, collected in one union.

The ledger stores `(kind, payload)`; this module says what each kind's payload holds.
Writers build a model and hand it to `Ledger.record(event, subject)`; readers call
`Event.typed()` and get the model back. `append(kind, subject, dict)` still works: a
payload for a kind listed here is checked against its model before it is written, so a
missing or mistyped field is refused with the kind and the field in the message.

Compatibility is the constraint that shapes the models (existing ledgers must verify and
read back; a hash covers the exact payload):

- A model writes exactly the fields its writer set (`exclude_unset`), never a default it
  was not given, and never `kind` (that is the event's column, not its payload). So an
  event written through a model has the same canonical JSON, hence the same hash, as the
  dict the writer used to pass.
- Models are strict: a value is never coerced (`"5"` is not an int, `60` does not become
  `60.0`), so what a model holds is what the ledger holds, and numbers that may be either
  are typed `int | float`.
- Every model allows extra fields: writers add fields over time and the ledger is
  append-only, so an unknown field is never a reason to refuse or misread a record.
- Payloads carry no version key (adding one would change every hash). Versioning is by
  rule instead: a kind's required fields never change; new fields are optional. A changed
  meaning is a new kind. The database's own layout is versioned in `ledger_head`.
- A kind not listed here (older, newer or a test's) reads back as a `GenericEvent`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Self, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from tasks.ledger.errors import InvalidEvent

if TYPE_CHECKING:
    from policy.determination import Determination

ClaimState = Literal["claimed", "completed", "released", "failed"]
Number = int | float  # not `float`: pydantic would turn 60 into 60.0 and change the hash


class LedgerEventModel(BaseModel):
    """One ledger event's kind and payload. `KIND` is set from the `kind` field's literal."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    KIND: ClassVar[str]
    kind: str

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        default = cls.model_fields["kind"].default
        if isinstance(default, str):
            cls.KIND = default

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], subject: str | None = None) -> Self:
        """This kind's event from a payload dict; InvalidEvent naming the kind and the field at fault."""
        head = f"{cls.KIND} event" + ("" if subject is None else f" for {subject!r}")
        if "kind" in payload:
            raise InvalidEvent(f"{head}: payload has a 'kind' field; the kind is the event's, not the payload's")
        try:
            return cls.model_validate({**payload, "kind": cls.KIND})
        except ValidationError as exc:
            raise InvalidEvent(_describe(head, exc)) from None

    def to_payload(self) -> dict[str, Any]:
        """The payload as the writer gave it: the fields that were set, extras included. Python
        mode, not JSON: a value that is not JSON reaches the ledger's canonical encoder and is
        refused there, as in a dict, instead of being quietly turned into a string."""
        return self.model_dump(exclude_unset=True, exclude={"kind"})


class GenericEvent(LedgerEventModel):
    """An event of a kind this module does not list: its payload, untyped."""

    payload: dict[str, Any] = Field(default_factory=dict)

    def to_payload(self) -> dict[str, Any]:
        return dict(self.payload)


# -- checkpoints and determinations ---------------------------------------------------------------


class CheckpointRejected(LedgerEventModel):
    """A checkpoint whose manifest was refused. Subject: the store key (watch) or URI (evaluate)."""

    kind: Literal["checkpoint.rejected"] = "checkpoint.rejected"
    reason: str
    key: str | None = None
    uri: str | None = None


class CheckpointChanged(LedgerEventModel):
    """The digest found at a checkpoint URI differs from the one the ledger last saw there (its
    determination's, or the previous change's): the weights changed after they were decided on. The
    run is halted (`cause`, the halt's cause) before this is written, and the new content is
    evaluated under a key of its own. Subject: the checkpoint URI."""

    kind: Literal["checkpoint.changed"] = "checkpoint.changed"
    uri: str
    run_id: str
    step: int
    old_digest: str
    new_digest: str
    cause: str | None = None


class CheckpointDuplicate(LedgerEventModel):
    """A checkpoint was evaluated for a (run, step) that checkpoints at other URIs (`others`) also
    claim. Each is evaluated into its own run folder; this flags that the run's history is ambiguous.
    Subject: the checkpoint URI."""

    kind: Literal["checkpoint.duplicate"] = "checkpoint.duplicate"
    uri: str
    run_id: str
    step: int
    others: list[str]


class CheckpointWritten(LedgerEventModel):
    """A trainer's own report that it wrote a checkpoint (`ScalingGate.checkpoint_written`): what the
    evaluation lag bound counts, so the gate can close when nobody evaluates them, the watcher
    included. Subject: the run id."""

    kind: Literal["checkpoint.written"] = "checkpoint.written"
    run_id: str
    step: int
    uri: str | None = None
    effective_compute: Number | None = None


class PolicyUnreadable(LedgerEventModel):
    """The policy an evaluation was asked to use could not be loaded: no determination is possible, so
    all scaling halts (the halt records itself). Subject: the checkpoint URI."""

    kind: Literal["policy.unreadable"] = "policy.unreadable"
    checkpoint: str
    policy: str
    error: str


# -- policy versions: which version is in force, changes held for the approvers (tasks/policy_versions.py)


class PolicyAdopted(LedgerEventModel):
    """A policy version put in force for its policy id: the first one a ledger sees, a change that
    loosens nothing, or a loosening its proposal's quorum approved (`reason`). `text` is the policy
    file as it was, so the version stays usable when the file on disk changes. Subject: the policy id."""

    kind: Literal["policy.adopted"] = "policy.adopted"
    policy_id: str
    sha256: str
    reason: str
    text: str
    version: str | None = None
    source: str | None = None
    previous_sha256: str | None = None
    changes: list[str] | None = None
    proposal_id: str | None = None
    approvers: list[str] | None = None


class PolicyChangeProposed(LedgerEventModel):
    """A policy version that loosens the one in force, held until the in-force approver rules (`rules`)
    are met by signed votes; the version in force stays meanwhile. Subject: the proposal id."""

    kind: Literal["policy.change_proposed"] = "policy.change_proposed"
    proposal_id: str
    policy_id: str
    sha256: str
    in_force_sha256: str
    loosening: list[str]
    text: str
    rules: dict[str, Any]
    changes: list[str] | None = None
    version: str | None = None
    source: str | None = None


class PolicyChangeVoted(LedgerEventModel):
    """A signed vote on a policy change proposal (tasks/trust/votes.py `change_vote_statement`); counted
    only after its signature verifies against the roster. Subject: the proposal id."""

    kind: Literal["policy.change_voted"] = "policy.change_voted"
    proposal_id: str
    person: str
    decision: str
    role: str
    statement: dict[str, Any]
    signature: str
    key_fingerprint: str | None = None
    justification: str | None = None


class PolicyChangeVoteRefused(LedgerEventModel):
    """A vote on a policy change that does not count, and why (`code`). Subject: the proposal id as given."""

    kind: Literal["policy.change_vote_refused"] = "policy.change_vote_refused"
    proposal_id: str
    code: str
    reason: str
    person: str | None = None
    statement: dict[str, Any] | None = None
    signature: str | None = None


class DeterminationCheckpoint(BaseModel):
    """`checkpoint` of a determination: `policy.determination.CheckpointRef` as recorded."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    run_id: str | None = None
    step: int | None = None
    effective_compute: Number | None = None
    uri: str | None = None
    digest: str | None = None


class DeterminationRecorded(LedgerEventModel):
    """A `policy.determination.Determination` dump plus the evaluation's extras. Subject: the
    checkpoint URI. Only the fields the ledger and its readers use are declared; the rest of
    the determination travels as extra fields (see `determination()` for all of it, typed)."""

    kind: Literal["determination.recorded"] = "determination.recorded"
    checkpoint: DeterminationCheckpoint | None = None
    assessment: str | None = None  # a str, not the Assessment literal: the projection has always taken any
    decision: Literal["proceed", "halt"] | None = None
    required_level: str | None = None
    scores: dict[str, Any] | None = None
    stage_error: str | None = None
    forced: bool | None = None
    policy_ref: str | None = None
    # The gate's signed in-toto statement of this determination (tasks/trust/attest.py), a DSSE
    # envelope; or why it could not be signed (the determination is recorded all the same).
    attestation: dict[str, Any] | None = None
    attestation_error: str | None = None

    @classmethod
    def of(cls, determination: Determination, **extras: Any) -> DeterminationRecorded:
        """The event for `determination`, with evaluation extras (scores, stage_error, ...)."""
        return cls.model_validate(determination.model_dump(mode="json") | extras)

    def determination(self) -> Determination:
        """The recorded determination, typed (the extras left out)."""
        from policy.determination import Determination

        data = self.to_payload()
        return Determination.model_validate({k: v for k, v in data.items() if k in Determination.model_fields})


class GateKeyRecorded(LedgerEventModel):
    """The public key the gate signs determinations and ledger heads with, recorded once per key the
    first time it signs. A third party compares the fingerprint with the key it was given out of
    band; the ledger's copy alone proves nothing (whoever rewrites the ledger can rewrite it).
    Subject: the key's fingerprint."""

    kind: Literal["gate.key"] = "gate.key"
    public_key: str
    fingerprint: str
    path: str | None = None


class ForecastWarning(LedgerEventModel):
    """The forecast of a measure (`policy.forecast`) says its threshold may be crossed before the
    cadence's next comprehensive assessment: `earliest` (FLOP, where the band's upper edge crosses)
    is at or below `next_comprehensive`. Written when the evaluation of `step` is planned (and
    escalated to comprehensive), before any crossing is measured; `crossing` is the point forecast,
    `latest` the band's other end (None: the curve may level off first), `steps` the checkpoints the
    curve was fitted on. Subject: the run id."""

    kind: Literal["forecast.warning"] = "forecast.warning"
    run_id: str
    threshold_id: str
    benchmark: str
    metric: str
    threshold: Number
    earliest: Number
    next_comprehensive: Number
    steps: list[int]
    step: int | None = None
    comparison: str | None = None
    crossing: Number | None = None
    latest: Number | None = None
    band: Number | None = None
    checkpoints: int | None = None
    message: str | None = None


class NoiseProbeFlagged(LedgerEventModel):
    """The noise-injection sandbagging probe (`policy.sandbagging.noise_probe_anomalies`) flagged a
    benchmark of a checkpoint with real weights: `noised` (sigma → correct answers out of `n`) rose
    above `clean` beyond the interval, or the probe could not run (`error`). The benchmark's
    thresholds are undetermined in the determination recorded next. Subject: the checkpoint URI."""

    kind: Literal["noise_probe.flagged"] = "noise_probe.flagged"
    checkpoint: str
    run_id: str
    step: int
    benchmark: str
    message: str
    n: int
    clean: int
    noised: dict[str, int]
    scale: str
    error: str | None = None


# -- claims (tasks/ledger/claims.py) --------------------------------------------------------------


class _ClaimEvent(LedgerEventModel):
    """Subject: the claim key."""

    key: str
    owner: str
    attempt: int


class EvaluationClaimed(_ClaimEvent):
    kind: Literal["evaluation.claimed"] = "evaluation.claimed"
    lease_expires_at: str
    lease_s: Number | None = None
    previous_owner: str | None = None
    previous_state: ClaimState | None = None


class EvaluationCompleted(_ClaimEvent):
    kind: Literal["evaluation.completed"] = "evaluation.completed"
    outcome: dict[str, Any] | None = None


class EvaluationReleased(_ClaimEvent):
    kind: Literal["evaluation.released"] = "evaluation.released"
    reason: str


class EvaluationFailed(_ClaimEvent):
    kind: Literal["evaluation.failed"] = "evaluation.failed"
    error: str


# -- halts: opened, applied to Prefect, lifted, resumed -------------------------------------------


class _HaltEvent(LedgerEventModel):
    """Subject: the halt id."""

    halt_id: str


class HaltOpened(_HaltEvent):
    """The halt record (`policy.halts.HaltRecord`). `what`, `why` and `lifts_when`
    stay untyped here on purpose: that module reads them fail-closed (a record it cannot
    understand covers everything), so the ledger records whatever shape it is given."""

    kind: Literal["halt.opened"] = "halt.opened"
    cause_key: str | None = None
    what: Any = None
    why: Any = None
    lifts_when: Any = None
    opened_by: str | None = None


class HaltApplied(_HaltEvent):
    kind: Literal["halt.applied"] = "halt.applied"
    api_url: str | None = None
    paused: list[str] | None = None
    already_paused: list[str] | None = None
    cancelled: list[str] | None = None
    attempts: int | None = None
    paused_queues: list[str] | None = None  # scaling work queues ("pool/queue") this apply paused
    already_paused_queues: list[str] | None = None


class HaltApplyFailed(_HaltEvent):
    kind: Literal["halt.apply_failed"] = "halt.apply_failed"
    api_url: str | None = None
    attempts: int | None = None
    error: str | None = None
    errors: list[dict[str, Any]] | None = None
    paused: list[str] | None = None
    cancelled: list[str] | None = None
    paused_queues: list[str] | None = None


class HaltReconciled(_HaltEvent):
    """Drift corrected for an open halt; or (`resumed_queues`) a scaling work queue it had paused
    resumed once no open halt covered it (tasks/enforcement/queues.py)."""

    kind: Literal["halt.reconciled"] = "halt.reconciled"
    api_url: str | None = None
    paused: list[str] | None = None
    cancelled: list[str] | None = None
    paused_queues: list[str] | None = None
    resumed_queues: list[str] | None = None
    by: str | None = None  # reconcile | lift (evaluation caught up)


class HaltReconcileFailed(_HaltEvent):
    kind: Literal["halt.reconcile_failed"] = "halt.reconcile_failed"
    api_url: str | None = None
    error: str | None = None


class HaltLiftRefused(_HaltEvent):
    kind: Literal["halt.lift_refused"] = "halt.lift_refused"
    reason: str
    missing: list[dict[str, Any]] | None = None
    tally: dict[str, Any] | None = None
    round: int | None = None
    trigger: str | None = None


class HaltLifted(_HaltEvent):
    kind: Literal["halt.lifted"] = "halt.lifted"
    round: int | None = None
    approvers: list[str] | None = None
    assignment: dict[str, str] | None = None
    rules: dict[str, Any] | None = None
    rules_source: str | None = None
    votes: list[dict[str, Any]] | None = None
    verification: dict[str, dict[str, Any]] | None = None
    trigger: str | None = None


class HaltDeploymentsResumed(_HaltEvent):
    kind: Literal["halt.deployments_resumed"] = "halt.deployments_resumed"
    resumed: list[str] | None = None
    kept_paused: list[dict[str, Any]] | None = None
    not_paused: list[str] | None = None
    not_found: list[str] | None = None


class HaltResumeFailed(_HaltEvent):
    kind: Literal["halt.resume_failed"] = "halt.resume_failed"
    error: str


class EvaluationCaughtUp(_HaltEvent):
    """Why an `evaluation_overdue` halt lifted with no approval: every checkpoint the run reported
    has a determination again. Written in one transaction with that halt's `halt.lifted` (trigger
    "evaluation caught up"); no other cause lifts this way. Subject: the halt id."""

    kind: Literal["evaluation.caught_up"] = "evaluation.caught_up"
    run_id: str
    last_determined_step: int | None = None
    newest_step: int | None = None
    unevaluated: int | None = None
    checked_by: str | None = None


class ScalingRunBlocked(_HaltEvent):
    """A scaling flow run stopped at start by an open halt, and who or what started it."""

    kind: Literal["scaling.run_blocked"] = "scaling.run_blocked"
    run_id: str
    activity: str
    started_by: str | None = None
    flow_run_id: str | None = None
    flow_run_name: str | None = None
    deployment_id: str | None = None
    auto_scheduled: bool | None = None
    created_by: dict[str, Any] | None = None
    tags: list[str] | None = None


class ScalingRunCancelled(LedgerEventModel):
    """A flow run of a halted scaling deployment that was cancelled instead of refused at its gate:
    by the halt-guard automation before it started, by a reconcile or an apply, or found cancelled
    while a halt covered it. Who or what started it is as Prefect reports it (`created_by`: an
    automation, a user; `auto_scheduled`; a deployment run). One record per flow run, ever: a run
    with a `scaling.run_blocked` record is not recorded again. Subject: the flow run id."""

    kind: Literal["scaling.run_cancelled"] = "scaling.run_cancelled"
    halt_id: str  # the oldest halt covering it
    flow_run_id: str
    stopped_by: str  # halt-guard automation | reconcile | apply | found cancelled while halted
    halts: list[str] | None = None
    started_by: str | None = None
    flow_run_name: str | None = None
    deployment_id: str | None = None
    deployment: str | None = None
    run_id: str | None = None
    auto_scheduled: bool | None = None
    created_by: dict[str, Any] | None = None
    created: str | None = None
    stopped_at: str | None = None
    state: str | None = None
    state_message: str | None = None
    automation_id: str | None = None
    api_url: str | None = None


class _HaltGuardEvent(LedgerEventModel):
    """The halt-guard automation (tasks/enforcement/automation.py). Subject: its name."""

    automation: str
    scaling_tag: str
    api_url: str | None = None
    automation_id: str | None = None


class HaltGuardInstalled(_HaltGuardEvent):
    """The halt-guard automation was set up (or first found) in Prefect. From then on the reconciler
    puts it back whenever it is deleted, disabled or edited."""

    kind: Literal["halt_guard.installed"] = "halt_guard.installed"
    by: str | None = None


class HaltGuardRestored(_HaltGuardEvent):
    """The halt-guard automation was found deleted (`found` "missing"), disabled while covering
    halted deployments ("disabled") or with its trigger or action changed ("edited"), and was put
    back (`change`: created, enabled, updated)."""

    kind: Literal["halt_guard.restored"] = "halt_guard.restored"
    found: str
    change: str
    by: str | None = None
    halts: list[str] | None = None
    deployments: list[str] | None = None


# -- approvals: votes and rounds -------------------------------------------------------------------


class VoteRecorded(_HaltEvent):
    kind: Literal["vote.recorded"] = "vote.recorded"
    person: str
    decision: str
    round: int | None = None
    roles: list[str] | None = None
    justification: str | None = None
    channel: str | None = None
    channel_ref: str | None = None
    duplicate: bool | None = None
    tally: dict[str, Any] | None = None
    # tasks/trust/votes.py: the signed statement, its signature and the roster key that verified it;
    # `verified` false: an unsigned channel (counts only where the policy trusts it). Absent: written
    # before votes were signed.
    statement: dict[str, Any] | None = None
    signature: str | None = None
    key_fingerprint: str | None = None
    verified: bool | None = None
    role: str | None = None


class VoteRefused(_HaltEvent):
    """Subject: the halt id as given (clipped), "(none)" when there was none."""

    kind: Literal["vote.refused"] = "vote.refused"
    code: str
    reason: str | None = None
    person: str | None = None
    decision: str | None = None
    channel: str | None = None
    channel_ref: str | None = None
    statement: dict[str, Any] | None = None
    signature: str | None = None
    key_fingerprint: str | None = None


class ApprovalRoundOpened(_HaltEvent):
    kind: Literal["approval.round_opened"] = "approval.round_opened"
    round: int
    by: str | None = None
    channel: str | None = None
    justification: str | None = None


class ApprovalRoundClosed(_HaltEvent):
    kind: Literal["approval.round_closed"] = "approval.round_closed"
    round: int
    outcome: str
    by: str | None = None
    justification: str | None = None


class ApprovalWaitStarted(_HaltEvent):
    kind: Literal["approval.wait_started"] = "approval.wait_started"
    flow_run_id: str | None = None
    timeout_s: Number | None = None


class ApprovalWaitEnded(_HaltEvent):
    kind: Literal["approval.wait_ended"] = "approval.wait_ended"
    outcome: str
    flow_run_id: str | None = None
    votes: int | None = None


class ApprovalWaitTimedOut(_HaltEvent):
    kind: Literal["approval.wait_timed_out"] = "approval.wait_timed_out"
    flow_run_id: str | None = None
    waited_s: Number | None = None
    note: str | None = None


# -- notifications (tasks/notify/dispatch.py) ------------------------------------------------------


class NotificationSent(_HaltEvent):
    kind: Literal["notification.sent"] = "notification.sent"
    key: str
    channel: str
    event: str | None = None
    event_key: str | None = None
    ref: dict[str, Any] | None = None
    links: dict[str, Any] | None = None


class NotificationFailed(_HaltEvent):
    kind: Literal["notification.failed"] = "notification.failed"
    key: str
    channel: str
    error: str
    event: str | None = None
    event_key: str | None = None
    attempts: int | None = None
    next_attempt_at: Number | None = None


LedgerEvent = Annotated[
    (  # one line per kind, as Prefect's events/actions.py lists its actions
        CheckpointRejected
        | CheckpointChanged
        | CheckpointDuplicate
        | CheckpointWritten
        | PolicyUnreadable
        | PolicyAdopted
        | PolicyChangeProposed
        | PolicyChangeVoted
        | PolicyChangeVoteRefused
        | DeterminationRecorded
        | GateKeyRecorded
        | ForecastWarning
        | EvaluationClaimed
        | EvaluationCompleted
        | EvaluationReleased
        | EvaluationFailed
        | HaltOpened
        | HaltApplied
        | HaltApplyFailed
        | HaltReconciled
        | HaltReconcileFailed
        | HaltLiftRefused
        | HaltLifted
        | HaltDeploymentsResumed
        | HaltResumeFailed
        | EvaluationCaughtUp
        | ScalingRunBlocked
        | ScalingRunCancelled
        | HaltGuardInstalled
        | HaltGuardRestored
        | VoteRecorded
        | VoteRefused
        | ApprovalRoundOpened
        | ApprovalRoundClosed
        | ApprovalWaitStarted
        | ApprovalWaitEnded
        | ApprovalWaitTimedOut
        | NotificationSent
        | NotificationFailed
        | NoiseProbeFlagged
    ),
    Field(discriminator="kind"),
]
"""Every event kind the code writes. Parse `{"kind": ..., **payload}` with `LEDGER_EVENT`."""

LEDGER_EVENT: TypeAdapter[LedgerEvent] = TypeAdapter(LedgerEvent)

MODELS: dict[str, type[LedgerEventModel]] = {m.KIND: m for m in get_args(get_args(LedgerEvent)[0])}
"""Event kind -> its model."""


def _where(loc: tuple[int | str, ...]) -> str:
    return "payload" + "".join(f"[{part!r}]" for part in loc)


def _describe(head: str, exc: ValidationError) -> str:
    """One line: the kind, the subject, the first field at fault and what was wrong with it."""
    errors = exc.errors(include_url=False)
    loc = errors[0]["loc"]
    # A union reports one error per member (the loc then ends in the member's name): name the field once.
    mine = [e for e in errors if e["loc"][:1] == loc[:1]]
    for e in mine:
        n = 0
        while n < min(len(loc), len(e["loc"])) and loc[n] == e["loc"][n]:
            n += 1
        loc = loc[:n]
    if errors[0]["type"] == "missing":
        return f"{head}: {_where(loc)} is required and missing"
    problems = "; ".join(dict.fromkeys(e["msg"] for e in mine))
    more = len({e["loc"][:1] for e in errors}) - 1
    tail = f" (and {more} more field(s) at fault)" if more else ""
    return f"{head}: {_where(loc)} is not valid: {problems}, got {errors[0]['input']!r:.80}{tail}"


def parse_event(kind: str, payload: Mapping[str, Any], subject: str | None = None) -> LedgerEventModel:
    """The typed event for a stored `(kind, payload)`: its model, or a `GenericEvent` for a kind
    not listed here. InvalidEvent, naming the kind and the field, if the payload does not fit."""
    model = MODELS.get(kind)
    if model is None:
        return GenericEvent(kind=kind, payload=dict(payload))
    return model.from_payload(payload, subject)


__all__ = [
    "LEDGER_EVENT",
    "MODELS",
    "ApprovalRoundClosed",
    "ApprovalRoundOpened",
    "ApprovalWaitEnded",
    "ApprovalWaitStarted",
    "ApprovalWaitTimedOut",
    "CheckpointChanged",
    "CheckpointDuplicate",
    "CheckpointRejected",
    "CheckpointWritten",
    "ClaimState",
    "DeterminationCheckpoint",
    "DeterminationRecorded",
    "EvaluationCaughtUp",
    "EvaluationClaimed",
    "EvaluationCompleted",
    "EvaluationFailed",
    "EvaluationReleased",
    "ForecastWarning",
    "GateKeyRecorded",
    "GenericEvent",
    "HaltApplied",
    "HaltApplyFailed",
    "HaltDeploymentsResumed",
    "HaltGuardInstalled",
    "HaltGuardRestored",
    "HaltLiftRefused",
    "HaltLifted",
    "HaltOpened",
    "HaltReconcileFailed",
    "HaltReconciled",
    "HaltResumeFailed",
    "LedgerEvent",
    "LedgerEventModel",
    "NotificationFailed",
    "NotificationSent",
    "PolicyAdopted",
    "PolicyChangeProposed",
    "PolicyChangeVoteRefused",
    "PolicyChangeVoted",
    "ScalingRunBlocked",
    "ScalingRunCancelled",
    "VoteRecorded",
    "VoteRefused",
    "parse_event",
]
