"""The assessment arithmetic on plain values: depth and first benchmarks, what a preliminary
assessment carries forward, when it escalates, and the scores and history sandbagging checks use."""

from __future__ import annotations

import datetime as dt

import pytest

from policy.assessment import (
    PriorComprehensive,
    carried_thresholds,
    current_scores,
    escalates_to_comprehensive,
    escalation_reason,
    last_comprehensive,
    plan_assessment,
    remaining_benchmarks,
    score_history,
)
from policy.determination import CheckpointRef, Determination, ThresholdResult
from policy.engine import classify
from policy.identity import policy_sha256
from policy.sandbagging import PastScore
from policy.schema import Policy
from tests.plugins.policies import make_table, policy_with

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ALL = ("bio", "chem", "swe", "ctf")


def recorded(policy: Policy, step: int, compute: float, *, sha: str | None = None, scores: dict | None = None
             ) -> dict:
    """A determination payload as the ledger holds it (the flow adds `scores`)."""
    det = classify(policy, make_table({b: (0.2, 20, 1 if b != "swe" else 3) for b in ALL}), assessment="comprehensive",
                   checkpoint=CheckpointRef(run_id="run-a", step=step, effective_compute=compute))
    payload = det.model_dump(mode="json") | {"scores": scores or {}}
    if sha is not None:
        payload["policy"]["sha256"] = sha
    return payload


def prior(policy: Policy, step: int, compute: float, days_ago: float = 1, **kw) -> PriorComprehensive:
    return PriorComprehensive(payload=recorded(policy, step, compute, **kw),
                              recorded_at=NOW - dt.timedelta(days=days_ago))


def with_thresholds(det: Determination, assessment: str, *changes: tuple[str, str, str | None]) -> Determination:
    """`det` with the given (threshold id, status, carried_from) and the assessment set."""
    by_id = {tid: (status, carried) for tid, status, carried in changes}
    thresholds = tuple(t.model_copy(update={"status": by_id[t.id][0], "carried_from": by_id[t.id][1]})
                       if t.id in by_id else t for t in det.thresholds)
    return det.model_copy(update={"thresholds": thresholds, "assessment": assessment})


@pytest.fixture
def below(tiny_policy: Policy) -> Determination:
    # 1 of 20 (not 2 of 20): the exact 95% upper bound of 2/20 is 0.317, at the 0.3 early-warning value.
    det = classify(tiny_policy, make_table({b: (0.05, 20, 1 if b != "swe" else 3) for b in ALL}))
    assert {t.status for t in det.thresholds} == {"below"}
    return det


# -- depth, first benchmarks, carry-forward -------------------------------------------------------------


def test_first_assessment_of_a_run_is_comprehensive_runs_everything_carries_nothing(tiny_policy):
    plan = plan_assessment(tiny_policy, 1e24, NOW, None)
    assert plan.depth.assessment == "comprehensive"
    assert plan.first == ALL
    assert plan.carried is None


def test_small_growth_is_preliminary_runs_the_policys_preliminary_set_and_carries_its_thresholds(tiny_policy):
    last = prior(tiny_policy, 100, 1e24)
    plan = plan_assessment(tiny_policy, 1.5e24, NOW, last)
    assert plan.depth.assessment == "preliminary" and "(step 100)" in plan.depth.reason
    assert plan.first == ("bio", "swe")
    assert plan.carried is not None
    assert set(plan.carried) == {"CBRN-3", "CBRN-4", "RND-4", "CYBER-MON"}
    assert all(isinstance(t, ThresholdResult) for t in plan.carried.values())
    assert plan.carried["CYBER-MON"].model_dump(mode="json") == next(
        t for t in last.payload["thresholds"] if t["id"] == "CYBER-MON")


def test_growth_past_the_factor_is_comprehensive_and_still_offers_what_it_could_carry(tiny_policy):
    plan = plan_assessment(tiny_policy, 4e24, NOW, prior(tiny_policy, 100, 1e24))
    assert plan.depth.assessment == "comprehensive" and plan.first == ALL
    assert plan.carried is not None  # unused by classify when every benchmark ran


def test_a_result_under_another_policy_is_never_carried(tiny_policy):
    other = prior(tiny_policy, 100, 1e24, sha="0" * 64)
    assert carried_thresholds(other, policy_sha256(tiny_policy)) is None
    assert plan_assessment(tiny_policy, 1.5e24, NOW, other).carried is None
    same = prior(tiny_policy, 100, 1e24)
    assert carried_thresholds(same, policy_sha256(tiny_policy)) is not None
    # A caller that has the sha already passes it; the answer follows that sha.
    assert plan_assessment(tiny_policy, 1.5e24, NOW, same, policy_sha="f" * 64).carried is None


def test_last_comprehensive_reads_compute_step_and_recording_time(tiny_policy):
    last = last_comprehensive(prior(tiny_policy, 300, 2e24, days_ago=3))
    assert (last.effective_compute, last.step, last.assessed_at) == (2e24, 300, NOW - dt.timedelta(days=3))


def test_a_prior_without_a_compute_figure_means_comprehensive(tiny_policy):
    p = PriorComprehensive(payload={"checkpoint": {"step": 100}}, recorded_at=NOW)
    assert last_comprehensive(p).effective_compute == 0.0
    plan = plan_assessment(tiny_policy, 1e24, NOW, p)
    assert plan.depth.assessment == "comprehensive" and plan.first == ALL


def test_a_policy_without_a_preliminary_set_runs_everything_preliminarily(tiny_data):
    tiny_data["cadence"]["preliminary_benchmarks"] = []
    policy = policy_with(tiny_data)
    plan = plan_assessment(policy, 1.5e24, NOW, prior(policy, 100, 1e24))
    assert plan.depth.assessment == "preliminary" and plan.first == ALL


# -- escalation ---------------------------------------------------------------------------------------------


def test_fresh_early_warning_on_a_gating_threshold_escalates(tiny_policy, below):
    det = with_thresholds(below, "preliminary", ("CBRN-3", "early_warning", None))
    assert escalates_to_comprehensive(tiny_policy, det)
    assert escalates_to_comprehensive(tiny_policy, with_thresholds(below, "preliminary", ("RND-4", "undetermined",
                                                                                           None)))


def test_all_below_does_not_escalate(tiny_policy, below):
    assert not escalates_to_comprehensive(tiny_policy, with_thresholds(below, "preliminary"))


def test_carried_or_monitored_results_do_not_escalate(tiny_policy, below):
    carried = with_thresholds(below, "preliminary", ("CBRN-3", "crossed", "previous comprehensive"))
    assert not escalates_to_comprehensive(tiny_policy, carried)
    monitored = with_thresholds(below, "preliminary", ("CYBER-MON", "crossed", None))
    assert not next(t for t in monitored.thresholds if t.id == "CYBER-MON").gating
    assert not escalates_to_comprehensive(tiny_policy, monitored)


def test_a_comprehensive_result_never_escalates(tiny_policy, below):
    assert not escalates_to_comprehensive(tiny_policy, with_thresholds(below, "comprehensive",
                                                                       ("CBRN-3", "crossed", None)))


def test_escalation_can_be_switched_off_by_the_policy(tiny_data, below):
    tiny_data["cadence"]["escalate_on_early_warning"] = False
    policy = policy_with(tiny_data)
    assert not escalates_to_comprehensive(policy, with_thresholds(below, "preliminary",
                                                                  ("CBRN-3", "early_warning", None)))


def test_escalation_runs_the_rest_in_policy_order_and_says_why(tiny_policy):
    assert remaining_benchmarks(tiny_policy, ["swe", "bio"]) == ["chem", "ctf"]
    assert remaining_benchmarks(tiny_policy, ALL) == []
    assert escalation_reason("effective compute 1.50x") == (
        "escalated from preliminary (effective compute 1.50x): a threshold reached early warning or worse")


# -- scores and history -------------------------------------------------------------------------------------


def test_current_scores_are_question_means_with_best_of_k_only_for_several_attempts(tiny_policy):
    scores = current_scores(tiny_policy, make_table({"bio": (0.5, 20, 1), "swe": (0.3, 20, 3)}))
    assert scores.mean == pytest.approx({"bio": 0.5, "swe": 0.3})
    assert set(scores.best_of_k) == {"swe"} and scores.best_of_k["swe"] >= scores.mean["swe"]
    assert scores.as_payload() == {"mean": scores.mean, "best_of_k": scores.best_of_k}


def test_history_keeps_earlier_steps_in_recorded_order(tiny_policy):
    dets = [recorded(tiny_policy, 200, 2e23, scores={"mean": {"bio": 0.5, "chem": 0.4}}),
            recorded(tiny_policy, 100, 1e23, scores={"mean": {"bio": 0.45}}),
            recorded(tiny_policy, 300, 3e23, scores={"mean": {"bio": 0.6}}),  # this step: not history
            recorded(tiny_policy, 400, 4e23, scores={"mean": {"bio": 0.7}})]  # later (a re-run): not history
    assert score_history(dets, 300) == {
        "bio": [PastScore(step=200, effective_compute=2e23, mean=0.5),
                PastScore(step=100, effective_compute=1e23, mean=0.45)],
        "chem": [PastScore(step=200, effective_compute=2e23, mean=0.4)],
    }


def test_history_skips_payloads_without_a_step_or_scores(tiny_policy):
    dets = [{"checkpoint": None, "scores": {"mean": {"bio": 0.9}}},
            {"checkpoint": {"run_id": "run-a", "step": None}, "scores": {"mean": {"bio": 0.9}}},
            recorded(tiny_policy, 100, 1e23),  # failed closed: no scores recorded
            {"checkpoint": {"step": 50, "effective_compute": 5e22}}]
    assert score_history(dets, 300) == {}
