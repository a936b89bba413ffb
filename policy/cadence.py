"""Assessment depth: preliminary or comprehensive, from the policy's cadence rules."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from policy.determination import Assessment
from policy.schema import Cadence


@dataclass(frozen=True)
class LastComprehensive:
    effective_compute: float
    assessed_at: dt.datetime
    step: int | None = None


@dataclass(frozen=True)
class CadenceDecision:
    assessment: Assessment
    reason: str


def assessment_depth(
    cadence: Cadence, effective_compute: float, now: dt.datetime, last: LastComprehensive | None
) -> CadenceDecision:
    """Comprehensive when there is no comprehensive assessment yet, when effective compute has
    grown by the policy's factor since the last one, or when the policy's time span has passed."""
    if last is None:
        return CadenceDecision("comprehensive", "no earlier comprehensive assessment of this run")
    if last.effective_compute <= 0:
        return CadenceDecision("comprehensive", "earlier comprehensive assessment has no usable compute figure")
    growth = effective_compute / last.effective_compute
    where = f" (step {last.step})" if last.step is not None else ""
    if growth >= cadence.comprehensive_compute_factor:
        return CadenceDecision(
            "comprehensive",
            f"effective compute grew {growth:.2f}x since the last comprehensive assessment{where}, "
            f"reaching the policy's factor of {cadence.comprehensive_compute_factor:g}x",
        )
    elapsed = now - last.assessed_at
    span = dt.timedelta(days=cadence.comprehensive_max_interval_days)
    if elapsed >= span:
        return CadenceDecision(
            "comprehensive",
            f"{elapsed.days} days since the last comprehensive assessment{where}, "
            f"the policy allows {cadence.comprehensive_max_interval_days}",
        )
    return CadenceDecision(
        "preliminary",
        f"effective compute {growth:.2f}x the last comprehensive assessment{where} "
        f"(< {cadence.comprehensive_compute_factor:g}x) and {elapsed.days} of "
        f"{cadence.comprehensive_max_interval_days} days elapsed",
    )


def escalates(cadence: Cadence, statuses: list[str]) -> bool:
    """A preliminary result in the early-warning zone (or worse) escalates to comprehensive."""
    return cadence.escalate_on_early_warning and any(s != "below" for s in statuses)
