"""The policy schema: a scaling policy as strict, validated data.

A framework file (Anthropic RSP, OpenAI Preparedness, Google DeepMind FSF, or a
lab's own) is one YAML document that validates into `Policy`. Validation is
strict: unknown keys, wrong types, dangling references, duplicate ids and
non-monotone levels are errors, because a policy that is silently misread is
worse than no policy.

Nothing here does I/O; `policy.loading` turns text into a `Policy`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

Identifier = Annotated[
    str, StringConstraints(strict=True, min_length=1, max_length=80, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
]
Text = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=4000)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_ISO_DURATION: TypeAdapter[dt.timedelta] = TypeAdapter(dt.timedelta)


def parse_duration(value: Any) -> Any:
    """'6h', '90m', '1d12h', '45s' (or ISO 8601, 'PT6H', as a policy's canonical form writes it) to a
    timedelta. A bare number is refused: '6' could be seconds or hours, and a policy must not be misread."""
    if isinstance(value, dt.timedelta):
        return value
    if not isinstance(value, str):
        raise ValueError(f"a duration is text with a unit, e.g. '6h', '90m', '1d', got {value!r}")  # noqa: TRY004 - pydantic reports only ValueError
    text = value.strip()
    if text.upper().startswith("P"):
        try:
            return _ISO_DURATION.validate_python(text)
        except ValidationError:
            raise ValueError(f"'{value}' is not an ISO 8601 duration") from None
    match = _DURATION.match(text)
    if not text or match is None:
        raise ValueError(f"'{value}' is not a duration: use days, hours, minutes, seconds, e.g. '6h', '1d12h', '90m'")
    d, h, m, sec = (int(g or 0) for g in match.groups())
    return dt.timedelta(days=d, hours=h, minutes=m, seconds=sec)


Duration = Annotated[dt.timedelta, BeforeValidator(parse_duration)]

Comparison = Literal[">=", ">", "<=", "<"]
Metric = Literal["mean", "best_of_k"]
Activity = Literal["training", "deployment"]


class _Strict(BaseModel):
    # Strict: a YAML "true" never becomes 1, a quoted "0.5" never becomes a float.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class FrameworkIdentity(_Strict):
    id: Identifier
    name: Text
    version: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=40)]
    source: Text
    # Dates may be quoted or not in YAML; everything else is strict.
    effective_date: Annotated[dt.date, Field(strict=False)]
    # Numeric thresholds are never published by labs; files must say whose numbers they are.
    operationalisation: Text


class Role(_Strict):
    id: Identifier
    name: Text


class Domain(_Strict):
    id: Identifier
    name: Text
    # tracked: thresholds set the required level; monitored/research: reported, never gate.
    status: Literal["tracked", "monitored", "research"]


class SafetyLevel(_Strict):
    id: Identifier
    name: Text
    description: Text
    requires: list[Identifier] = Field(default_factory=list)


class Benchmark(_Strict):
    id: Identifier
    name: Text
    version: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=40)]
    domain: Identifier
    description: Text
    proxy_for: Text | None = None
    attempts: Annotated[int, Field(ge=1, le=100)] = 1
    min_samples: Annotated[int, Field(ge=1)] = 30
    chance_score: Fraction = 0.0
    timeout_s: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1800.0
    # How it runs (Inspect task, command, importer); interpreted by tasks/, opaque to the core.
    runner: dict[str, str | int | float | bool] | None = None

    @field_validator("runner")
    @classmethod
    def _known_scoring(cls, v: dict[str, str | int | float | bool] | None) -> dict[str, Any] | None:
        # `scoring` changes what a score means, so a typo is refused when the policy loads, not mid-run.
        if v is not None and "scoring" in v and v["scoring"] not in ("generate", "loglikelihood"):
            raise ValueError(f"runner.scoring must be 'generate' or 'loglikelihood', got {v['scoring']!r}")
        return v


class Measure(_Strict):
    """One if-then comparison: IF metric(benchmark) <comparison> threshold THEN the rule fires."""

    benchmark: Identifier
    metric: Metric = "mean"
    comparison: Comparison = ">="
    threshold: Fraction
    early_warning: Fraction
    min_samples: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _early_warning_precedes_threshold(self) -> Measure:
        if self.comparison in (">=", ">") and not self.early_warning < self.threshold:
            raise ValueError(
                f"early_warning ({self.early_warning}) must be below threshold ({self.threshold}) "
                f"when the comparison is '{self.comparison}'"
            )
        if self.comparison in ("<=", "<") and not self.early_warning > self.threshold:
            raise ValueError(
                f"early_warning ({self.early_warning}) must be above threshold ({self.threshold}) "
                f"when the comparison is '{self.comparison}'"
            )
        return self


class CapabilityThreshold(_Strict):
    id: Identifier
    name: Text
    domain: Identifier
    description: Text
    measures: Annotated[list[Measure], Field(min_length=1)]
    # any: the rule fires if any measure fires (conservative); all: only if every measure fires.
    combine: Literal["any", "all"] = "any"
    # None only in monitored/research domains: reported, never raises the level.
    triggers_level: Identifier | None
    additional_safeguards: list[Identifier] = Field(default_factory=list)


# Who vouches without a signature (tasks/trust): a vote from the Prefect UI form or `rsp approve --as` without
# `--key`, or an attestation record without a signature, counts for a role only where the policy lists that
# channel for that role. Empty (the default) is strict: only signed votes and attestations (and Slack votes,
# verified by Slack's signing secret) count. Left out of the canonical form when empty, so a policy that does
# not use it keeps the sha256 it had before the field existed.
UnsignedVoteChannel = Literal["prefect-ui", "cli-unsigned"]
UnsignedAttestationChannel = Literal["unsigned"]
_TRUST_FIELD = "trusted_unsigned_channels"


def _omit_empty_trust(data: Any) -> Any:
    if isinstance(data, dict) and not data.get(_TRUST_FIELD):
        data.pop(_TRUST_FIELD, None)
    return data


def _trust_problems(trusted: Mapping[str, Sequence[str]], roles: list[str], where: str) -> list[str]:
    problems = [f"{where}.{_TRUST_FIELD}.{role}: '{role}' is not among {where}.roles" for role in trusted
                if role not in roles]
    problems += [f"{where}.{_TRUST_FIELD}.{role}: lists a channel twice" for role, chans in trusted.items()
                 if len(set(chans)) != len(chans)]
    return problems


class AttestationVerification(_Strict):
    method: Literal["attestation"]
    roles: Annotated[list[Identifier], Field(min_length=1)]
    max_age_days: Annotated[int, Field(ge=1, le=3650)]
    trusted_unsigned_channels: dict[Identifier, list[UnsignedAttestationChannel]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _trusted_roles_attest(self) -> AttestationVerification:
        problems = _trust_problems(self.trusted_unsigned_channels, self.roles, "verification")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_serializer(mode="wrap")
    def _omit_unused_trust(self, handler: SerializerFunctionWrapHandler) -> Any:
        return _omit_empty_trust(handler(self))


class AutomatedVerification(_Strict):
    method: Literal["automated"]
    check: Identifier
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)
    max_age_days: Annotated[int, Field(ge=1, le=3650)] = 1


class Safeguard(_Strict):
    id: Identifier
    name: Text
    kind: Literal["security", "deployment", "governance"]
    standard: Text
    description: Text
    verification: Annotated[AttestationVerification | AutomatedVerification, Field(discriminator="method")]
    # What must stop while this safeguard is required and not verified.
    halts: Annotated[list[Activity], Field(min_length=1)]


# The evaluation lag bound of a policy that does not state one (see `Cadence.lag_bound`).
DEFAULT_MAX_UNEVALUATED_CHECKPOINTS = 2
DEFAULT_MAX_EVALUATION_LAG = dt.timedelta(hours=6)
_LAG_FIELDS = ("max_unevaluated_checkpoints", "max_evaluation_lag")


class Cadence(_Strict):
    comprehensive_compute_factor: Annotated[float, Field(gt=1.0, allow_inf_nan=False)]
    comprehensive_max_interval_days: Annotated[int, Field(ge=1, le=3650)]
    escalate_on_early_warning: bool = True
    # Benchmarks run in a preliminary assessment; a comprehensive one runs every benchmark.
    preliminary_benchmarks: list[Identifier] = Field(default_factory=list)
    # The evaluation lag bound (dead-man's switch): how far a scaling run may get ahead of its last
    # determination. A run holding this many checkpoints without a determination may not start another
    # step; nor may a run whose oldest checkpoint without one is older than max_evaluation_lag. Omitted:
    # the defaults above apply (never "unbounded": a gate whose evaluation stopped must not stay open).
    max_unevaluated_checkpoints: Annotated[int, Field(ge=1, le=10_000)] | None = None
    max_evaluation_lag: Annotated[Duration, Field(strict=False)] | None = None

    @field_validator("max_evaluation_lag")
    @classmethod
    def _positive_lag(cls, value: dt.timedelta | None) -> dt.timedelta | None:
        if value is not None and not dt.timedelta(seconds=1) <= value <= dt.timedelta(days=366):
            raise ValueError("must be between 1s and 366d")
        return value

    @model_serializer(mode="wrap")
    def _omit_unstated_lag(self, handler: SerializerFunctionWrapHandler) -> Any:
        # A lag field the file does not state is left out of the canonical form, so a policy that
        # omits it keeps the sha256 it had before the fields existed.
        data = handler(self)
        if isinstance(data, dict):
            for name in _LAG_FIELDS:
                if data.get(name) is None:
                    data.pop(name, None)
        return data

    def lag_bound(self) -> tuple[int, dt.timedelta]:
        """(max unevaluated checkpoints, max evaluation lag), the defaults where the policy is silent."""
        return (
            DEFAULT_MAX_UNEVALUATED_CHECKPOINTS if self.max_unevaluated_checkpoints is None
            else self.max_unevaluated_checkpoints,
            DEFAULT_MAX_EVALUATION_LAG if self.max_evaluation_lag is None else self.max_evaluation_lag,
        )


class Approvals(_Strict):
    roles: Annotated[list[Identifier], Field(min_length=1)]
    quorum: Annotated[int, Field(ge=1, le=20)]
    must_include: list[Identifier] = Field(default_factory=list)
    trusted_unsigned_channels: dict[Identifier, list[UnsignedVoteChannel]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _trusted_roles_approve(self) -> Approvals:
        problems = _trust_problems(self.trusted_unsigned_channels, self.roles, "approvals")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_serializer(mode="wrap")
    def _omit_unused_trust(self, handler: SerializerFunctionWrapHandler) -> Any:
        return _omit_empty_trust(handler(self))


class FailClosed(_Strict):
    # Written out in every file so a reader sees it; it cannot be switched off.
    undetermined_counts_as_crossed: Literal[True]
    rule_out: Literal["upper_bound", "point_estimate"] = "upper_bound"
    confidence: Annotated[float, Field(ge=0.5, lt=1.0, allow_inf_nan=False)] = 0.95
    # Accepted and unused since intervals became exact (policy/statistics.py); kept so existing files validate.
    bootstrap_resamples: Annotated[int, Field(ge=100, le=100_000)] = 2000
    max_error_rate: Fraction = 0.05
    seed: Annotated[int, Field(ge=0)] = 0


class AnomalyChecks(_Strict):
    """Sandbagging and regression checks across checkpoints of one run (absolute score units)."""

    # A score may fall this much below the run's best earlier score while compute grows.
    score_drop_tolerance: Fraction = 0.10
    # A score within this margin of chance, after an earlier one clearly above it, is a collapse.
    chance_margin: Fraction = 0.05
    # best-of-k above 1-(1-mean)^k (what k independent attempts reach) by more than this suggests
    # capability the model does not show by default.
    elicitation_gap_bound: Fraction = 0.20
    # Noise-injection probe (Tice et al., arXiv 2412.01784), for checkpoints with real weights: a
    # subset of noise_subset questions is re-scored with Gaussian noise on every weight at each of
    # noise_levels (sigma; times each parameter's std when noise_scale is relative); a noised score
    # above the clean score's upper bound plus noise_tolerance flags the benchmark. Unstated fields
    # take the defaults of `noise_probe()` and stay out of the canonical form (the policy's sha256
    # is unchanged); `noise_levels: []` turns the probe off, which the diff reports as loosening.
    noise_levels: list[Annotated[float, Field(gt=0.0, le=100.0, allow_inf_nan=False)]] | None = None
    noise_scale: Literal["relative", "absolute"] | None = None
    noise_subset: Annotated[int, Field(ge=1, le=100_000)] | None = None
    noise_tolerance: Fraction | None = None
    noise_seed: int | None = None

    def noise_probe(self) -> NoiseProbeSettings:
        """The probe's settings with the defaults applied."""
        d = NoiseProbeSettings()
        return NoiseProbeSettings(
            levels=tuple(self.noise_levels) if self.noise_levels is not None else d.levels,
            scale=self.noise_scale or d.scale,
            subset=self.noise_subset if self.noise_subset is not None else d.subset,
            tolerance=self.noise_tolerance if self.noise_tolerance is not None else d.tolerance,
            seed=self.noise_seed if self.noise_seed is not None else d.seed,
        )

    @model_serializer(mode="wrap")
    def _omit_unstated_noise(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for name in _NOISE_FIELDS:
                if data.get(name) is None:
                    data.pop(name, None)
        return data


_NOISE_FIELDS = ("noise_levels", "noise_scale", "noise_subset", "noise_tolerance", "noise_seed")


class NoiseProbeSettings(BaseModel):
    """The noise probe's effective settings (`AnomalyChecks.noise_probe()`)."""

    model_config = ConfigDict(frozen=True)

    levels: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
    scale: Literal["relative", "absolute"] = "relative"
    subset: int = 100
    tolerance: float = 0.05
    seed: int = 0


class Policy(_Strict):
    schema_version: Literal[1]
    framework: FrameworkIdentity
    roles: Annotated[list[Role], Field(min_length=1)]
    domains: Annotated[list[Domain], Field(min_length=1)]
    # Ordered lowest first; the first level is what a model needs when no rule fires.
    levels: Annotated[list[SafetyLevel], Field(min_length=1)]
    benchmarks: Annotated[list[Benchmark], Field(min_length=1)]
    thresholds: Annotated[list[CapabilityThreshold], Field(min_length=1)]
    safeguards: list[Safeguard] = Field(default_factory=list)
    cadence: Cadence
    approvals: Approvals
    fail_closed: FailClosed
    anomaly_checks: AnomalyChecks = Field(default_factory=AnomalyChecks)

    @field_validator("levels", "benchmarks", "thresholds", "safeguards", "roles", "domains")
    @classmethod
    def _unique_ids(cls, items: list[BaseModel]) -> list[BaseModel]:
        seen: dict[str, int] = {}
        for i, item in enumerate(items):
            ident = item.id  # type: ignore[attr-defined]
            if ident in seen:
                raise ValueError(f"duplicate id '{ident}' (items {seen[ident]} and {i})")
            seen[ident] = i
        return items

    @model_validator(mode="after")
    def _references_and_monotonicity(self) -> Policy:
        errors: list[str] = []
        roles = {r.id for r in self.roles}
        domains = {d.id: d for d in self.domains}
        levels = [lv.id for lv in self.levels]
        benchmarks = {b.id: b for b in self.benchmarks}
        safeguards = {s.id for s in self.safeguards}

        def need(kind: str, value: str, known: set[str] | dict, where: str) -> None:
            if value not in known:
                errors.append(f"{where}: unknown {kind} '{value}'")

        for i, b in enumerate(self.benchmarks):
            need("domain", b.domain, domains, f"benchmarks[{i}].domain")
        for i, lv in enumerate(self.levels):
            for j, sg in enumerate(lv.requires):
                need("safeguard", sg, safeguards, f"levels[{i}].requires[{j}]")
            if len(set(lv.requires)) != len(lv.requires):
                errors.append(f"levels[{i}].requires: lists a safeguard twice")
        for i in range(1, len(self.levels)):
            lower, higher = self.levels[i - 1], self.levels[i]
            missing = sorted(set(lower.requires) - set(higher.requires))
            if missing:
                errors.append(
                    f"levels[{i}].requires: level '{higher.id}' must require at least the safeguards of "
                    f"'{lower.id}', but lacks {', '.join(missing)}"
                )
        for i, t in enumerate(self.thresholds):
            where = f"thresholds[{i}]"
            need("domain", t.domain, domains, f"{where}.domain")
            if t.triggers_level is not None:
                need("level", t.triggers_level, set(levels), f"{where}.triggers_level")
                if t.triggers_level == levels[0]:
                    errors.append(f"{where}.triggers_level: '{t.triggers_level}' is the baseline level; a rule "
                                  "that triggers it changes nothing")
            dom = domains.get(t.domain)
            if dom is not None and dom.status == "tracked" and t.triggers_level is None:
                errors.append(f"{where}.triggers_level: required in tracked domain '{t.domain}'")
            if dom is not None and dom.status != "tracked" and t.triggers_level is not None:
                errors.append(f"{where}.triggers_level: must be null in {dom.status} domain '{t.domain}'")
            for j, sg in enumerate(t.additional_safeguards):
                need("safeguard", sg, safeguards, f"{where}.additional_safeguards[{j}]")
            for j, m in enumerate(t.measures):
                need("benchmark", m.benchmark, benchmarks, f"{where}.measures[{j}].benchmark")
                measured = benchmarks.get(m.benchmark)
                if measured is not None and m.metric == "best_of_k" and measured.attempts < 2:
                    errors.append(f"{where}.measures[{j}].metric: best_of_k needs a benchmark with attempts >= 2, "
                                  f"'{measured.id}' has {measured.attempts}")
        for i, s in enumerate(self.safeguards):
            if isinstance(s.verification, AttestationVerification):
                for j, r in enumerate(s.verification.roles):
                    need("role", r, roles, f"safeguards[{i}].verification.roles[{j}]")
        for j, bid in enumerate(self.cadence.preliminary_benchmarks):
            need("benchmark", bid, benchmarks, f"cadence.preliminary_benchmarks[{j}]")
        for j, r in enumerate(self.approvals.roles):
            need("role", r, roles, f"approvals.roles[{j}]")
        for j, r in enumerate(self.approvals.must_include):
            if r not in self.approvals.roles:
                errors.append(f"approvals.must_include[{j}]: role '{r}' is not among approvals.roles")
        if len(self.approvals.must_include) > self.approvals.quorum:
            errors.append("approvals.must_include: more required roles than the quorum can hold")
        if errors:
            raise ValueError("; ".join(errors))
        return self

    # Lookups used by the engine and the shells; cheap enough to rebuild on demand.
    def level_rank(self, level_id: str) -> int:
        for i, lv in enumerate(self.levels):
            if lv.id == level_id:
                return i
        raise KeyError(level_id)

    def benchmark(self, benchmark_id: str) -> Benchmark:
        for b in self.benchmarks:
            if b.id == benchmark_id:
                return b
        raise KeyError(benchmark_id)

    def safeguard(self, safeguard_id: str) -> Safeguard:
        for s in self.safeguards:
            if s.id == safeguard_id:
                return s
        raise KeyError(safeguard_id)

    @property
    def baseline_level(self) -> str:
        return self.levels[0].id
