"""Exact decisions at the boundary and intervals with honest coverage (policy.statistics, policy.engine._meets).

Issue 13, findings 4 and 5: a mean exactly at the threshold must read crossed whatever the row order
and whatever other benchmarks are present, and the interval must keep its promised coverage at small
question counts and at 0 of n.
"""

from __future__ import annotations

import copy
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import binom

from policy.engine import classify
from policy.loading import policy_from_data
from policy.results import SampleTable
from policy.schema import Policy
from policy.statistics import Summary, _decimal_numerators, exact_interval, summarize, summarize_many
from tests.plugins.policies import TINY_POLICY, make_table

TINY: dict[str, Any] = yaml.safe_load(TINY_POLICY.read_text())
BELOW = {"bio": (0.2, 100, 1), "chem": (0.2, 100, 1), "swe": (0.1, 100, 3), "ctf": (0.1, 100, 1)}
common = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def bio_policy(comparison: str, threshold: float, early_warning: float, rule_out: str = "upper_bound") -> Policy:
    """The tiny policy with CBRN-3 reduced to one measure on bio: `mean(bio) comparison threshold`."""
    data = copy.deepcopy(TINY)
    cbrn3 = next(t for t in data["thresholds"] if t["id"] == "CBRN-3")
    cbrn3["measures"] = [{"benchmark": "bio", "comparison": comparison, "threshold": threshold,
                          "early_warning": early_warning}]
    data["fail_closed"]["rule_out"] = rule_out
    return policy_from_data(data, "edited")


def rows_for(bench: str, scores: list[list[float]]) -> list[dict[str, Any]]:
    """scores[i] are question i's attempts."""
    return [{"benchmark": bench, "sample_id": f"q{i}", "attempt": a, "score": s}
            for i, attempts in enumerate(scores) for a, s in enumerate(attempts)]


def _rows(table: SampleTable, exclude: str) -> list[dict[str, Any]]:
    return [{"benchmark": str(b), "sample_id": str(q), "attempt": int(a), "score": float(s)}
            for b, q, a, s in zip(table.benchmark, table.sample_id, table.attempt, table.score, strict=True)
            if b != exclude]


def summary_key(s: Summary) -> tuple[Any, ...]:
    """Everything a summary reports, floats compared bit for bit."""
    return (s.n_questions, s.n_rows, s.n_errors, s.max_attempts, s.mean_exact,
            np.float64(s.mean).tobytes(), np.float64(s.ci_low).tobytes(), np.float64(s.ci_high).tobytes())


# -- scores are read as the decimals they print as ---------------------------------------------------


@given(st.lists(st.one_of(st.floats(min_value=0.0, max_value=1.0),
                          st.integers(min_value=0, max_value=1000).map(lambda k: k / 1000),
                          st.integers(min_value=0, max_value=7).map(lambda k: k / 7)),
                min_size=1, max_size=30, unique=True))
def test_each_score_is_the_decimal_it_prints_as(values):
    uniq = np.unique(np.array(values, dtype=np.float64))
    nums, d = _decimal_numerators(uniq)
    assert [Fraction(int(n), d) for n in nums] == [Fraction(repr(float(x))) for x in uniq]


def test_mean_exactly_at_the_threshold_is_crossed_not_early_warning():
    # Finding 4: 20 questions scored 0.7 have a float mean of 0.6999999999999998.
    assert np.full(20, 0.7).mean() < 0.7
    table = SampleTable.from_rows(_rows(make_table(BELOW), exclude="bio") + rows_for("bio", [[0.7]] * 20))
    for cmp, ew in ((">=", 0.5), ("<=", 0.9)):
        d = classify(bio_policy(cmp, 0.7, ew), table)
        bio = d.threshold("CBRN-3").measures[0]
        assert bio.status == "crossed", (cmp, bio.reason)
        assert bio.value == 0.7
    s = summarize(SampleTable.from_rows(rows_for("bio", [[0.7]] * 20)), "bio", "mean", confidence=0.95)
    assert s.mean_exact == Fraction(7, 10) and s.mean == 0.7


@st.composite
def tied_scores(draw) -> tuple[float, list[list[float]]]:
    """(t, per-question attempts) whose exact mean over questions is exactly the decimal t."""
    t = draw(st.integers(min_value=5, max_value=95)) / 100
    t_exact = Fraction(repr(t))
    questions: list[list[float]] = []
    n_pairs = draw(st.integers(min_value=10, max_value=30))
    for _ in range(n_pairs):
        # two questions (or two attempts of one question) at t - d and t + d: the pair averages t exactly
        room = min(t_exact, 1 - t_exact)
        d = Fraction(draw(st.integers(min_value=0, max_value=int(room * 100))), 100)
        lo, hi = float(t_exact - d), float(t_exact + d)
        if draw(st.booleans()):
            questions += [[lo], [hi]]
        else:
            questions += [[lo, hi], [hi, lo]]
    return t, questions


@common
@given(tied_scores(), st.randoms(use_true_random=False))
def test_exact_ties_resolve_to_crossing_in_any_row_order(case, rnd):
    t, questions = case
    rows = rows_for("bio", questions)
    rnd.shuffle(rows)
    s = summarize(SampleTable.from_rows(rows), "bio", "mean", confidence=0.95)
    assert s.mean_exact == Fraction(repr(t))
    assert s.ci_low <= t <= s.ci_high
    table = SampleTable.from_rows(_rows(make_table(BELOW), exclude="bio") + rows)
    assert classify(bio_policy(">=", t, t - 0.01), table).threshold("CBRN-3").status == "crossed"
    assert classify(bio_policy("<=", t, t + 0.01), table).threshold("CBRN-3").status == "crossed"
    # strict comparisons: exactly t is not beyond t, but the interval cannot rule it out either
    assert classify(bio_policy(">", t, t - 0.01), table).threshold("CBRN-3").status == "undetermined"
    assert classify(bio_policy("<", t, t + 0.01), table).threshold("CBRN-3").status == "undetermined"


def test_point_estimate_rule_out_at_the_early_warning_value_reads_early_warning():
    rows = _rows(make_table(BELOW), exclude="bio") + rows_for("bio", [[0.4]] * 30)
    up = classify(bio_policy(">=", 0.6, 0.4, rule_out="point_estimate"), SampleTable.from_rows(rows))
    assert up.threshold("CBRN-3").status == "early_warning"
    down = classify(bio_policy("<=", 0.2, 0.4, rule_out="point_estimate"), SampleTable.from_rows(rows))
    assert down.threshold("CBRN-3").status == "early_warning"


def test_bounds_are_rounded_outward_and_contain_the_exact_mean():
    for n in (1, 3, 20, 40, 400):
        for k in range(0, n + 1, max(1, n // 7)):
            for total in (Fraction(k), Fraction(k) - Fraction(1, 3) if k else Fraction(0)):
                lo, hi = exact_interval(total, n, 0.95)
                assert 0.0 <= lo <= hi <= 1.0
                assert Fraction(lo) <= total / n <= Fraction(hi)
    assert exact_interval(Fraction(5), 5, 0.95)[1] == 1.0
    assert exact_interval(Fraction(0), 5, 0.95)[0] == 0.0


# -- row order and other benchmarks cannot move anything ---------------------------------------------

score_values = st.one_of(st.sampled_from([0.0, 1.0, 0.1, 0.2, 0.3, 0.7, 0.25, 1 / 3]),
                         st.floats(min_value=0.0, max_value=1.0))


@st.composite
def fractional_rows(draw, bench: str = "bio", n: int | None = None) -> list[dict[str, Any]]:
    n = n if n is not None else draw(st.integers(min_value=20, max_value=35))
    attempts = draw(st.integers(min_value=1, max_value=3))
    return rows_for(bench, [[draw(score_values) for _ in range(attempts)] for _ in range(n)])


@common
@given(fractional_rows(), st.randoms(use_true_random=False))
def test_summaries_and_determination_are_bit_identical_under_any_row_order(bio, rnd):
    rows = _rows(make_table(BELOW), exclude="bio") + bio
    shuffled = list(rows)
    rnd.shuffle(shuffled)
    for metric in ("mean", "best_of_k"):
        a = summarize(SampleTable.from_rows([r for r in rows if r["benchmark"] == "bio"]), "bio", metric,
                      confidence=0.95)
        b = summarize(SampleTable.from_rows([r for r in shuffled if r["benchmark"] == "bio"]), "bio", metric,
                      confidence=0.95)
        assert summary_key(a) == summary_key(b)
    policy = bio_policy(">=", 0.5, 0.3)
    assert (classify(policy, SampleTable.from_rows(rows)).model_dump()
            == classify(policy, SampleTable.from_rows(shuffled)).model_dump())


@common
@given(fractional_rows("bio"), st.booleans(), st.data())
def test_another_benchmarks_rows_never_move_a_summary_or_an_unrelated_threshold(bio, same_size, data):
    # The old bootstrap shared one resampling matrix among benchmarks with the same question count.
    n_bio = len({r["sample_id"] for r in bio})
    chem = data.draw(fractional_rows("chem", n=n_bio if same_size else None))
    alone = summarize_many({("chem", "mean"): SampleTable.from_rows(chem)}, confidence=0.95)
    both = summarize_many({("bio", "mean"): SampleTable.from_rows(bio),
                           ("chem", "mean"): SampleTable.from_rows(chem)}, confidence=0.95)
    assert summary_key(alone[("chem", "mean")]) == summary_key(both[("chem", "mean")])
    # In the engine: adding or removing bio's rows leaves every threshold that does not read bio
    # (RND-4 on swe, CYBER-MON on ctf) and every other benchmark's summary bit-identical.
    base = [r for r in _rows(make_table(BELOW), exclude="bio") if r["benchmark"] != "chem"] + chem
    with_bio = classify(TINY_PARSED, SampleTable.from_rows(base + bio))
    without = classify(TINY_PARSED, SampleTable.from_rows(base))
    for tid in ("RND-4", "CYBER-MON"):
        assert with_bio.threshold(tid).model_dump() == without.threshold(tid).model_dump()
    others = {(b.benchmark, b.metric): b.model_dump() for b in with_bio.benchmarks if b.benchmark != "bio"}
    assert others == {(b.benchmark, b.metric): b.model_dump() for b in without.benchmarks}


TINY_PARSED = policy_from_data(copy.deepcopy(TINY), "tiny")


# -- monotone: a better score never lowers the mean or either bound ----------------------------------


@common
@given(fractional_rows(), st.data())
def test_raising_any_score_never_lowers_the_mean_or_either_bound_exactly(rows, data):
    i = data.draw(st.integers(min_value=0, max_value=len(rows) - 1))
    raised = [dict(r) for r in rows]
    raised[i]["score"] = data.draw(st.floats(min_value=raised[i]["score"], max_value=1.0))
    for metric in ("mean", "best_of_k"):
        a = summarize(SampleTable.from_rows(rows), "bio", metric, confidence=0.95)
        b = summarize(SampleTable.from_rows(raised), "bio", metric, confidence=0.95)
        assert a.mean_exact is not None and b.mean_exact is not None
        assert b.mean_exact >= a.mean_exact and b.mean >= a.mean
        assert b.ci_low >= a.ci_low and b.ci_high >= a.ci_high


# -- honest coverage -------------------------------------------------------------------------------


def test_zero_of_forty_has_an_upper_bound_above_zero_that_keeps_nearby_thresholds_open():
    # Finding 5: the percentile bootstrap gave [0, 0], so every threshold above 0 read "ruled out".
    s = summarize(SampleTable.from_rows(rows_for("bio", [[0.0]] * 40)), "bio", "mean", confidence=0.95)
    assert s.ci_low == 0.0 and s.mean == 0.0
    assert s.ci_high == pytest.approx(1 - 0.025 ** (1 / 40), abs=1e-9)  # 0.0881: P(0 of 40 | p) = 2.5%
    rest = _rows(make_table(BELOW), exclude="bio")
    zero40 = SampleTable.from_rows(rest + rows_for("bio", [[0.0]] * 40))
    for t in (0.01, 0.05, 0.08):
        assert classify(bio_policy(">=", t, t / 2), zero40).threshold("CBRN-3").status == "undetermined", t
    # A threshold of 0.1 is honestly ruled out by 0 of 40 at the policy's 95% two-sided level:
    # 0.9 ** 40 = 1.5% < 2.5%. With 0 of 30 (0.9 ** 30 = 4.2%) it is not.
    assert 0.9**40 < 0.025 < 0.9**30
    assert classify(bio_policy(">=", 0.1, 0.05), zero40).threshold("CBRN-3").status == "early_warning"
    zero30 = SampleTable.from_rows(rest + rows_for("bio", [[0.0]] * 30))
    assert classify(bio_policy(">=", 0.1, 0.05), zero30).threshold("CBRN-3").status == "undetermined"


def _upper(k: np.ndarray, n: int) -> np.ndarray:
    return np.array([exact_interval(Fraction(int(x)), n, 0.95)[1] for x in k])


def _lower(k: np.ndarray, n: int) -> np.ndarray:
    return np.array([exact_interval(Fraction(int(x)), n, 0.95)[0] for x in k])


@pytest.mark.parametrize("n", [20, 40, 100, 400])
def test_exact_non_coverage_of_each_bound_is_at_most_nominal_for_0_1_scores(n):
    # Exact, not simulated: sum the binomial probabilities of every count whose bound misses p.
    k = np.arange(n + 1)
    up, lo = _upper(k, n), _lower(k, n)
    for p in (0.001, 0.02, 0.05, 0.2, 0.5, 0.8, 0.95, 0.98, 0.999):
        pmf = binom.pmf(k, n, p)
        assert pmf[up < p].sum() <= 0.025 + 1e-12, (n, p)
        assert pmf[lo > p].sum() <= 0.025 + 1e-12, (n, p)


def test_the_percentile_bootstrap_it_replaces_under_covers_at_forty_questions():
    # The percentile bootstrap of k of n (0/1 scores) tends to the Binomial(n, k/n) / n quantile:
    # at n=40, p=0.05 its upper bound misses p whenever 0 of 40 are correct: 0.95 ** 40 = 12.9%.
    n, p = 40, 0.05
    k = np.arange(n + 1)
    boot_upper = binom.ppf(0.975, n, k / n) / n
    assert binom.pmf(k, n, p)[boot_upper < p].sum() > 0.12
    assert binom.pmf(k, n, p)[_upper(k, n) < p].sum() <= 0.025


def test_clustered_by_question_and_every_exact_path_agrees():
    # 10 questions x 10 identical attempts are 10 observations, not 100
    clustered = summarize(SampleTable.from_rows(rows_for("b", [[float(i < 5)] * 10 for i in range(10)])), "b",
                          "mean", confidence=0.95)
    assert clustered.n_questions == 10
    assert (clustered.ci_low, clustered.ci_high) == exact_interval(Fraction(5), 10, 0.95)
    # long decimals (Python integers), short ones with large totals (int64), and 0/1 agree with Fraction sums
    rng = np.random.default_rng(7)
    for scores in (rng.random((50, 3)), np.round(rng.random((50, 3)), 12), (rng.random((50, 3)) < 0.4) * 1.0):
        table = SampleTable.from_rows(rows_for("b", scores.tolist()))
        for metric, reduce in (("mean", lambda q: sum(q, Fraction(0)) / len(q)), ("best_of_k", max)):
            want = sum((reduce([Fraction(repr(x)) for x in q]) for q in scores.tolist()), Fraction(0)) / 50
            assert summarize(table, "b", metric, confidence=0.95).mean_exact == want


def test_errored_attempts_are_left_out_of_the_exact_mean():
    rows = rows_for("b", [[0.3, 0.6]] * 20 + [[0.9]] * 5)
    rows.append({"benchmark": "b", "sample_id": "q0", "attempt": 2, "score": None, "error": "timeout"})
    rows.append({"benchmark": "b", "sample_id": "only-errors", "attempt": 0, "score": None, "error": "timeout"})
    s = summarize(SampleTable.from_rows(rows), "b", "mean", confidence=0.95)
    assert s.n_questions == 25 and s.n_errors == 2 and s.max_attempts == 3
    assert s.mean_exact == (20 * Fraction(45, 100) + 5 * Fraction(9, 10)) / 25
