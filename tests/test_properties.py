"""Properties the fail-closed design promises, checked with hypothesis."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy.engine import classify
from policy.loading import parse_policy
from policy.results import SampleTable
from tests.plugins.policies import TINY_POLICY

POLICY = parse_policy(TINY_POLICY.read_text(), "tiny")
BENCH = {"bio": 1, "chem": 1, "swe": 3, "ctf": 1}


@st.composite
def result_sets(draw):
    rows = []
    for bench, attempts in BENCH.items():
        n = draw(st.integers(min_value=15, max_value=40))
        p = draw(st.floats(min_value=0.0, max_value=1.0))
        seed = draw(st.integers(min_value=0, max_value=10_000))
        rng = np.random.default_rng(seed)
        for i in range(n):
            for a in range(attempts):
                rows.append({"benchmark": bench, "sample_id": f"q{i}", "attempt": a,
                             "score": float(rng.random() < p)})
    return rows


def level(rows) -> int:
    return classify(POLICY, SampleTable.from_rows(rows)).required_level_rank


common = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@common
@given(result_sets(), st.data())
def test_raising_any_score_never_lowers_the_level(rows, data):
    i = data.draw(st.integers(min_value=0, max_value=len(rows) - 1))
    raised = [dict(r) for r in rows]
    raised[i]["score"] = data.draw(st.floats(min_value=raised[i]["score"], max_value=1.0))
    before = classify(POLICY, SampleTable.from_rows(rows))
    after = classify(POLICY, SampleTable.from_rows(raised))
    assert after.required_level_rank >= before.required_level_rank
    for b, a in zip(before.thresholds, after.thresholds):
        for mb, ma in zip(b.measures, a.measures):
            assert ma.value >= mb.value - 1e-12 and ma.ci_high >= mb.ci_high - 1e-12


@common
@given(result_sets(), st.sampled_from(sorted(BENCH)))
def test_removing_a_benchmarks_results_never_lowers_the_level(rows, bench):
    fewer = [r for r in rows if r["benchmark"] != bench]
    assert level(fewer) >= level(rows)


@common
@given(result_sets(), st.randoms(use_true_random=False))
def test_determination_does_not_depend_on_row_order(rows, rnd):
    shuffled = list(rows)
    rnd.shuffle(shuffled)
    a = classify(POLICY, SampleTable.from_rows(rows))
    b = classify(POLICY, SampleTable.from_rows(shuffled))
    assert a.model_dump() == b.model_dump()
