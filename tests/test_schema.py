"""Each validation rule of the policy schema, with the error a policy author sees."""

from __future__ import annotations

import copy

import pytest

from policy.errors import PolicyError
from policy.loading import parse_policy
from tests.plugins.policies import policy_with


def problems(data) -> list[str]:
    with pytest.raises(PolicyError) as info:
        policy_with(data)
    return info.value.problems


def test_tiny_policy_validates(tiny_policy):
    assert tiny_policy.framework.id == "tiny"
    assert [lv.id for lv in tiny_policy.levels] == ["L2", "L3", "L4"]
    assert tiny_policy.baseline_level == "L2"


def test_early_warning_must_be_below_threshold(tiny_data):
    d = copy.deepcopy(tiny_data)
    d["thresholds"][2]["measures"][0]["early_warning"] = 0.8
    assert problems(d) == [
        "thresholds[2].measures[0]: early_warning (0.8) must be below threshold (0.7) when the comparison is '>='"
    ]


def test_lower_is_more_capable_needs_early_warning_above(tiny_data):
    d = copy.deepcopy(tiny_data)
    d["thresholds"][2]["measures"][0].update(comparison="<=", threshold=0.3, early_warning=0.2)
    assert "must be above threshold" in problems(d)[0]


def test_unknown_benchmark_reference_named_with_path(tiny_data):
    d = copy.deepcopy(tiny_data)
    d["thresholds"][1]["measures"][0]["benchmark"] = "nope"
    assert problems(d) == ["thresholds[1].measures[0].benchmark: unknown benchmark 'nope'"]


def test_unknown_level_safeguard_role_domain(tiny_data):
    d = copy.deepcopy(tiny_data)
    d["thresholds"][0]["triggers_level"] = "L9"
    d["levels"][0]["requires"] = ["sg-base", "sg-ghost"]
    d["safeguards"][0]["verification"]["roles"] = ["janitor"]
    d["benchmarks"][0]["domain"] = "astrology"
    got = problems(d)
    assert "thresholds[0].triggers_level: unknown level 'L9'" in got
    assert "levels[0].requires[1]: unknown safeguard 'sg-ghost'" in got
    assert "safeguards[0].verification.roles[0]: unknown role 'janitor'" in got
    assert "benchmarks[0].domain: unknown domain 'astrology'" in got


def test_duplicate_ids_rejected(tiny_data):
    d = copy.deepcopy(tiny_data)
    d["benchmarks"].append(copy.deepcopy(d["benchmarks"][0]))
    assert problems(d) == ["benchmarks: duplicate id 'bio' (items 0 and 4)"]


def test_non_monotone_levels_rejected(tiny_data):
    d = copy.deepcopy(tiny_data)
    d["levels"][2]["requires"] = ["sg-base", "sg-sec4"]
    assert problems(d) == [
        "levels[2].requires: level 'L4' must require at least the safeguards of 'L3', but lacks sg-dep3, sg-sec3"
    ]


def test_threshold_out_of_range_and_wrong_types(tiny_data):
    d = copy.deepcopy(tiny_data)
    d["thresholds"][0]["measures"][0]["threshold"] = 1.5
    d["benchmarks"][0]["min_samples"] = "many"
    d["cadence"]["escalate_on_early_warning"] = "yes"
    got = problems(d)
    assert "thresholds[0].measures[0].threshold: Input should be less than or equal to 1" in got
    assert "benchmarks[0].min_samples: Input should be a valid integer" in got
    assert "cadence.escalate_on_early_warning: Input should be a valid boolean" in got


def test_unknown_field_rejected(tiny_data):
    d = copy.deepcopy(tiny_data)
    d["thresholds"][0]["treshold"] = 0.5
    assert problems(d) == ["thresholds[0].treshold: unknown field"]


def test_fail_closed_cannot_be_switched_off(tiny_data):
    d = copy.deepcopy(tiny_data)
    d["fail_closed"]["undetermined_counts_as_crossed"] = False
    assert problems(d)[0].startswith("fail_closed.undetermined_counts_as_crossed: Input should be True")


def test_tracked_domain_threshold_needs_level_monitored_must_not(tiny_data):
    d = copy.deepcopy(tiny_data)
    d["thresholds"][0]["triggers_level"] = None
    d["thresholds"][3]["triggers_level"] = "L3"
    got = problems(d)
    assert "thresholds[0].triggers_level: required in tracked domain 'cbrn'" in got
    assert "thresholds[3].triggers_level: must be null in monitored domain 'cyber'" in got


def test_best_of_k_needs_attempts(tiny_data):
    d = copy.deepcopy(tiny_data)
    d["thresholds"][0]["measures"][0]["metric"] = "best_of_k"
    assert problems(d) == [
        "thresholds[0].measures[0].metric: best_of_k needs a benchmark with attempts >= 2, 'bio' has 1"
    ]


def test_quorum_and_required_roles(tiny_data):
    d = copy.deepcopy(tiny_data)
    d["approvals"]["must_include"] = ["ciso"]
    assert problems(d) == ["approvals.must_include[0]: role 'ciso' is not among approvals.roles"]
    d = copy.deepcopy(tiny_data)
    d["approvals"]["quorum"] = 0
    assert problems(d)[0].startswith("approvals.quorum: Input should be greater than or equal to 1")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", "empty document"),
        ("framework: [unclosed", "malformed YAML"),
        ("- a\n- b\n", "expected a mapping at the top level, got list"),
        ("a: 1\na: 2\n", "duplicate key 'a'"),
    ],
)
def test_bad_documents_give_one_line(text, expected):
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "bad.yaml")
    msg = str(info.value)
    assert msg.startswith("bad.yaml: ") and expected in msg and "\n" not in msg
