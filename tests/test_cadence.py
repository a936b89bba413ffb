"""Preliminary vs comprehensive assessment from the policy's cadence."""

from __future__ import annotations

import datetime as dt

from policy.cadence import LastComprehensive, assessment_depth, escalates

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def test_first_assessment_is_comprehensive(tiny_policy):
    d = assessment_depth(tiny_policy.cadence, 1e24, NOW, None)
    assert d.assessment == "comprehensive" and "no earlier comprehensive" in d.reason


def test_compute_growth_past_factor_is_comprehensive(tiny_policy):
    last = LastComprehensive(effective_compute=1e24, assessed_at=NOW - dt.timedelta(days=3), step=1000)
    assert assessment_depth(tiny_policy.cadence, 3.9e24, NOW, last).assessment == "preliminary"
    d = assessment_depth(tiny_policy.cadence, 4e24, NOW, last)
    assert d.assessment == "comprehensive"
    assert d.reason == ("effective compute grew 4.00x since the last comprehensive assessment (step 1000), "
                        "reaching the policy's factor of 4x")


def test_elapsed_time_past_span_is_comprehensive(tiny_policy):
    last = LastComprehensive(effective_compute=1e24, assessed_at=NOW - dt.timedelta(days=182))
    d = assessment_depth(tiny_policy.cadence, 1.1e24, NOW, last)
    assert d.assessment == "comprehensive" and "182 days since" in d.reason
    last = LastComprehensive(effective_compute=1e24, assessed_at=NOW - dt.timedelta(days=181))
    d = assessment_depth(tiny_policy.cadence, 1.1e24, NOW, last)
    assert d.assessment == "preliminary"
    assert d.reason == ("effective compute 1.10x the last comprehensive assessment (< 4x) and 181 of 182 days "
                        "elapsed")


def test_early_warning_escalates(tiny_policy):
    assert escalates(tiny_policy.cadence, ["below", "early_warning"])
    assert not escalates(tiny_policy.cadence, ["below", "below"])
