"""The evaluation lag rule (the gate's dead-man's switch), as a pure function.

A scaling run may get only so far ahead of its last determination. The policy states how
far (`cadence.max_unevaluated_checkpoints`, `cadence.max_evaluation_lag`; defaults in
`policy.schema` where it is silent). The facts are the checkpoints the trainer reports
having written (step and time) and the highest step that has a determination:

- a checkpoint is *unevaluated* when its step is above the run's last determined step (a
  determination of a later checkpoint covers the earlier ones: it is the run's frontier);
- the run is **overdue** when it holds `max_unevaluated_checkpoints` or more unevaluated
  checkpoints (so it may not start the step that would write one more), or when its oldest
  unevaluated checkpoint was written longer than `max_evaluation_lag` ago;
- it has **caught up** when no checkpoint is unevaluated. An overdue halt lifts only then,
  not at the first determination below the bound, so a slow evaluator cannot make the
  halt open and lift at every step.

Nothing here reads a clock or a ledger: the caller passes `now` and the facts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from policy.schema import Policy


@dataclass(frozen=True)
class LagBound:
    max_unevaluated_checkpoints: int
    max_evaluation_lag: dt.timedelta
    stated: bool  # False: the policy is silent and the defaults apply

    @classmethod
    def of(cls, policy: Policy) -> LagBound:
        checkpoints, lag = policy.cadence.lag_bound()
        stated = (policy.cadence.max_unevaluated_checkpoints is not None
                  or policy.cadence.max_evaluation_lag is not None)
        return cls(checkpoints, lag, stated)

    def describe(self) -> str:
        return (f"at most {self.max_unevaluated_checkpoints} checkpoint(s) without a determination, none older "
                f"than {format_duration(self.max_evaluation_lag)}"
                + ("" if self.stated else " (defaults: the policy states no bound)"))


@dataclass(frozen=True)
class WrittenCheckpoint:
    step: int
    written_at: dt.datetime  # timezone-aware


@dataclass(frozen=True)
class LagVerdict:
    run_id: str
    bound: LagBound
    last_determined_step: int | None
    newest_step: int | None  # newest checkpoint the trainer reported
    unevaluated: int
    oldest_unevaluated_step: int | None
    oldest_unevaluated_at: dt.datetime | None
    lag: dt.timedelta  # age of the oldest unevaluated checkpoint; zero when none is
    overdue: bool
    reasons: tuple[str, ...]

    @property
    def caught_up(self) -> bool:
        return self.unevaluated == 0

    def summary(self) -> str:
        frontier = "none yet" if self.last_determined_step is None else f"step {self.last_determined_step}"
        if self.caught_up:
            return f"run {self.run_id}: every reported checkpoint has a determination (last: {frontier})"
        state = "OVERDUE: " + "; ".join(self.reasons) if self.overdue else "within the bound"
        return (f"run {self.run_id}: {self.unevaluated} checkpoint(s) without a determination (oldest step "
                f"{self.oldest_unevaluated_step}, {format_duration(self.lag)} ago; last determination: {frontier}); "
                f"{state}")


def format_duration(value: dt.timedelta) -> str:
    seconds = max(0, int(value.total_seconds()))
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")) if n]
    return "".join(parts) or "0s"


def assess_lag(
    run_id: str,
    bound: LagBound,
    written: Iterable[WrittenCheckpoint],
    last_determined_step: int | None,
    now: dt.datetime,
    determined: Collection[int] | None = None,
) -> LagVerdict:
    """How far `run_id` is ahead of its last determination, and whether that is past the bound.

    `determined`, when given, is the set of the run's steps that have a determination: a reported
    checkpoint is pending unless its own step is in it (the gate passes it). Without it, every step
    up to `last_determined_step` counts as determined."""
    by_step: dict[int, dt.datetime] = {}
    for ck in written:
        # A step reported twice (a retried write) counts once, at its first report.
        if ck.step not in by_step or ck.written_at < by_step[ck.step]:
            by_step[ck.step] = ck.written_at
    newest = max(by_step) if by_step else None
    if determined is not None:
        pending = sorted(s for s in by_step if s not in determined)
    else:
        pending = sorted(s for s in by_step if last_determined_step is None or s > last_determined_step)
    oldest_step = pending[0] if pending else None
    oldest_at = by_step[oldest_step] if oldest_step is not None else None
    # The oldest unevaluated checkpoint by time, not only by step: a resumed run may rewrite a low step late.
    if pending:
        oldest_at = min(by_step[s] for s in pending)
    lag = max(dt.timedelta(0), now - oldest_at) if oldest_at is not None else dt.timedelta(0)
    reasons = []
    if len(pending) >= bound.max_unevaluated_checkpoints:
        reasons.append(f"{len(pending)} checkpoint(s) without a determination; the policy allows at most "
                       f"{bound.max_unevaluated_checkpoints}, so no further step may start")
    if pending and lag > bound.max_evaluation_lag:
        reasons.append(f"the oldest checkpoint without a determination (step {oldest_step}) was written "
                       f"{format_duration(lag)} ago, the policy allows {format_duration(bound.max_evaluation_lag)}")
    return LagVerdict(run_id=run_id, bound=bound, last_determined_step=last_determined_step, newest_step=newest,
                      unevaluated=len(pending), oldest_unevaluated_step=oldest_step, oldest_unevaluated_at=oldest_at,
                      lag=lag, overdue=bool(reasons), reasons=tuple(reasons))


__all__ = ["LagBound", "LagVerdict", "WrittenCheckpoint", "assess_lag", "format_duration"]
