"""Policy change control: every difference is listed, and every loosening is flagged."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, get_args, get_origin

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from policy.diff import _RULES, Change, diff_policies, summarize
from policy.identity import canonical_data, canonical_json, policy_sha256
from policy.loading import parse_policy, policy_from_data
from policy.schema import Policy

POLICY_YAML = """
schema_version: 1
framework:
  id: test-rsp
  name: Test scaling policy
  version: "1.0"
  source: written for tests
  effective_date: 2025-01-01
  operationalisation: numbers invented for tests
roles:
  - {id: rso, name: Responsible Scaling Officer}
  - {id: ceo, name: Chief Executive}
  - {id: board, name: Board}
  - {id: security-lead, name: Security lead}
domains:
  - {id: cbrn, name: CBRN, status: tracked}
  - {id: cyber, name: Cyber, status: tracked}
  - {id: autonomy, name: Autonomy, status: monitored}
levels:
  - id: ASL-2
    name: ASL-2
    description: baseline
    requires: [baseline-security]
  - id: ASL-3
    name: ASL-3
    description: hardened
    requires: [baseline-security, hardened-security, deployment-filters]
  - id: ASL-4
    name: ASL-4
    description: highest
    requires: [baseline-security, hardened-security, deployment-filters, board-review]
benchmarks:
  - {id: bio-qa, name: Bio QA, version: "1", domain: cbrn, description: bio questions,
     attempts: 4, min_samples: 50}
  - {id: cyber-ctf, name: Cyber CTF, version: "2", domain: cyber, description: capture the flag, attempts: 3}
  - {id: agentic-tasks, name: Agentic tasks, version: "1", domain: autonomy, description: long tasks}
thresholds:
  - id: CBRN-3
    name: CBRN uplift
    domain: cbrn
    description: meaningful uplift to novices
    measures:
      - {benchmark: bio-qa, metric: mean, threshold: 0.5, early_warning: 0.4}
      - {benchmark: bio-qa, metric: best_of_k, threshold: 0.7, early_warning: 0.6, min_samples: 60}
    combine: any
    triggers_level: ASL-3
    additional_safeguards: [board-review]
  - id: CYBER-3
    name: Cyber uplift
    domain: cyber
    description: autonomous exploitation
    measures:
      - {benchmark: cyber-ctf, metric: best_of_k, threshold: 0.4, early_warning: 0.3}
    triggers_level: ASL-3
  - id: AUTONOMY-1
    name: Autonomy watch
    domain: autonomy
    description: reported only
    measures:
      - {benchmark: agentic-tasks, comparison: "<=", threshold: 0.2, early_warning: 0.3}
    triggers_level: null
safeguards:
  - id: baseline-security
    name: Baseline security
    kind: security
    standard: SOC 2
    description: access reviews
    verification: {method: automated, check: access-review, max_age_days: 7}
    halts: [training, deployment]
  - id: hardened-security
    name: Hardened security
    kind: security
    standard: RAND SL3
    description: weights hardening
    verification: {method: attestation, roles: [security-lead], max_age_days: 30}
    halts: [training, deployment]
  - id: deployment-filters
    name: Deployment filters
    kind: deployment
    standard: classifier recall
    description: misuse classifiers
    verification: {method: automated, check: classifier-eval, params: {min_recall: 0.9}}
    halts: [deployment]
  - id: board-review
    name: Board review
    kind: governance
    standard: board minutes
    description: board signs off
    verification: {method: attestation, roles: [board, rso], max_age_days: 90}
    halts: [training, deployment]
cadence:
  comprehensive_compute_factor: 4.0
  comprehensive_max_interval_days: 180
  escalate_on_early_warning: true
  preliminary_benchmarks: [bio-qa, cyber-ctf]
approvals:
  roles: [rso, ceo, board]
  quorum: 2
  must_include: [rso]
fail_closed:
  undetermined_counts_as_crossed: true
  rule_out: upper_bound
  confidence: 0.95
  bootstrap_resamples: 2000
  max_error_rate: 0.05
  seed: 0
"""

BASE = parse_policy(POLICY_YAML, "test-policy.yaml")

Edit = Callable[[dict[str, Any]], None]


def edited(*edits: Edit, base: Policy = BASE) -> Policy:
    """The base policy with dict edits applied, re-validated as a file would be."""
    data = copy.deepcopy(canonical_data(base))
    for edit in edits:
        edit(data)
    return policy_from_data(data, "edited")


def by_id(items: list[dict[str, Any]], ident: str) -> dict[str, Any]:
    return next(item for item in items if item["id"] == ident)


def threshold(data: dict[str, Any], ident: str) -> dict[str, Any]:
    return by_id(data["thresholds"], ident)


def measure(data: dict[str, Any], tid: str, bench: str, metric: str) -> dict[str, Any]:
    return next(
        m for m in threshold(data, tid)["measures"] if m["benchmark"] == bench and m["metric"] == metric
    )


def safeguard(data: dict[str, Any], ident: str) -> dict[str, Any]:
    return by_id(data["safeguards"], ident)


def at(changes: list[Change], path: str) -> Change:
    found = [c for c in changes if c.path == path]
    assert len(found) == 1, f"expected one change at {path}, got:\n{summarize(changes)}"
    return found[0]


def setter(*keys: Any, value: Any) -> Edit:
    def edit(data: dict[str, Any]) -> None:
        node: Any = data
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value

    return edit


def remove_from(getter: Callable[[dict[str, Any]], list[Any]], value: Any) -> Edit:
    return lambda data: getter(data).remove(value)


def append_to(getter: Callable[[dict[str, Any]], list[Any]], value: Any) -> Edit:
    return lambda data: getter(data).append(value)


def drop_item(section: str, ident: str) -> Edit:
    return lambda data: data[section].remove(by_id(data[section], ident))


def set_measure(tid: str, bench: str, metric: str, field: str, value: Any) -> Edit:
    return lambda data: measure(data, tid, bench, metric).__setitem__(field, value)


BIO_MEAN = "thresholds[CBRN-3].measures[bio-qa:mean]"
BIO_BEST = "thresholds[CBRN-3].measures[bio-qa:best_of_k]"
AUTONOMY = "thresholds[AUTONOMY-1].measures[agentic-tasks:mean]"

# (name, edits, path, kind, path of the same change when the diff runs backwards)
LOOSENING: list[tuple[str, list[Edit], str, str, str | None]] = [
    (
        "threshold raised (>=)",
        [set_measure("CBRN-3", "bio-qa", "mean", "threshold", 0.6)],
        f"{BIO_MEAN}.threshold",
        "changed",
        None,
    ),
    (
        "threshold lowered (<=)",
        [set_measure("AUTONOMY-1", "agentic-tasks", "mean", "threshold", 0.1)],
        f"{AUTONOMY}.threshold",
        "changed",
        None,
    ),
    (
        "early warning raised (>=)",
        [set_measure("CBRN-3", "bio-qa", "mean", "early_warning", 0.45)],
        f"{BIO_MEAN}.early_warning",
        "changed",
        None,
    ),
    (
        "early warning lowered (<=)",
        [set_measure("AUTONOMY-1", "agentic-tasks", "mean", "early_warning", 0.25)],
        f"{AUTONOMY}.early_warning",
        "changed",
        None,
    ),
    (
        "comparison >= to >",
        [set_measure("CBRN-3", "bio-qa", "mean", "comparison", ">")],
        f"{BIO_MEAN}.comparison",
        "changed",
        None,
    ),
    (
        "comparison <= to <",
        [set_measure("AUTONOMY-1", "agentic-tasks", "mean", "comparison", "<")],
        f"{AUTONOMY}.comparison",
        "changed",
        None,
    ),
    (
        "measure min_samples lowered",
        [set_measure("CBRN-3", "bio-qa", "best_of_k", "min_samples", 40)],
        f"{BIO_BEST}.min_samples",
        "changed",
        None,
    ),
    (
        "measure min_samples unset, benchmark default lower",
        [set_measure("CBRN-3", "bio-qa", "best_of_k", "min_samples", None)],
        f"{BIO_BEST}.min_samples",
        "changed",
        None,
    ),
    (
        "measure removed under combine any",
        [lambda d: threshold(d, "CBRN-3")["measures"].pop(1)],
        BIO_BEST,
        "removed",
        None,
    ),
    (
        "combine any to all",
        [lambda d: threshold(d, "CBRN-3").__setitem__("combine", "all")],
        "thresholds[CBRN-3].combine",
        "changed",
        None,
    ),
    (
        "metric best_of_k to mean",
        [set_measure("CYBER-3", "cyber-ctf", "best_of_k", "metric", "mean")],
        "thresholds[CYBER-3].measures[cyber-ctf:best_of_k].metric",
        "changed",
        "thresholds[CYBER-3].measures[cyber-ctf:mean].metric",
    ),
    ("threshold removed", [drop_item("thresholds", "CYBER-3")], "thresholds[CYBER-3]", "removed", None),
    (
        "triggers_level set to null",
        [lambda d: threshold(d, "CBRN-3").update(domain="autonomy", triggers_level=None)],
        "thresholds[CBRN-3].triggers_level",
        "changed",
        None,
    ),
    (
        "additional safeguard removed",
        [lambda d: threshold(d, "CBRN-3").__setitem__("additional_safeguards", [])],
        "thresholds[CBRN-3].additional_safeguards[board-review]",
        "removed",
        None,
    ),
    (
        "safeguard removed from a level",
        [remove_from(lambda d: by_id(d["levels"], "ASL-4")["requires"], "board-review")],
        "levels[ASL-4].requires[board-review]",
        "removed",
        None,
    ),
    (
        "safeguard removed entirely",
        [
            remove_from(lambda d: by_id(d["levels"], "ASL-3")["requires"], "deployment-filters"),
            remove_from(lambda d: by_id(d["levels"], "ASL-4")["requires"], "deployment-filters"),
            drop_item("safeguards", "deployment-filters"),
        ],
        "safeguards[deployment-filters]",
        "removed",
        None,
    ),
    (
        "halts loses an activity",
        [remove_from(lambda d: safeguard(d, "baseline-security")["halts"], "deployment")],
        "safeguards[baseline-security].halts[deployment]",
        "removed",
        None,
    ),
    (
        "attestation max_age_days raised",
        [setter("safeguards", 1, "verification", "max_age_days", value=90)],
        "safeguards[hardened-security].verification.max_age_days",
        "changed",
        None,
    ),
    (
        "automated max_age_days raised",
        [setter("safeguards", 0, "verification", "max_age_days", value=30)],
        "safeguards[baseline-security].verification.max_age_days",
        "changed",
        None,
    ),
    (
        "attestation role added",
        [append_to(lambda d: safeguard(d, "hardened-security")["verification"]["roles"], "rso")],
        "safeguards[hardened-security].verification.roles[rso]",
        "added",
        None,
    ),
    (
        "automated to attestation",
        [
            lambda d: safeguard(d, "baseline-security").__setitem__(
                "verification", {"method": "attestation", "roles": ["security-lead"], "max_age_days": 7}
            )
        ],
        "safeguards[baseline-security].verification",
        "changed",
        None,
    ),
    ("level removed", [drop_item("levels", "ASL-4")], "levels[ASL-4]", "removed", None),
    ("quorum lowered", [setter("approvals", "quorum", value=1)], "approvals.quorum", "changed", None),
    (
        "approver role added",
        [append_to(lambda d: d["approvals"]["roles"], "security-lead")],
        "approvals.roles[security-lead]",
        "added",
        None,
    ),
    (
        "must_include role removed",
        [setter("approvals", "must_include", value=[])],
        "approvals.must_include[rso]",
        "removed",
        None,
    ),
    (
        "compute factor raised",
        [setter("cadence", "comprehensive_compute_factor", value=8.0)],
        "cadence.comprehensive_compute_factor",
        "changed",
        None,
    ),
    (
        "max interval raised",
        [setter("cadence", "comprehensive_max_interval_days", value=365)],
        "cadence.comprehensive_max_interval_days",
        "changed",
        None,
    ),
    (
        "escalation turned off",
        [setter("cadence", "escalate_on_early_warning", value=False)],
        "cadence.escalate_on_early_warning",
        "changed",
        None,
    ),
    (
        "preliminary benchmark removed",
        [remove_from(lambda d: d["cadence"]["preliminary_benchmarks"], "cyber-ctf")],
        "cadence.preliminary_benchmarks[cyber-ctf]",
        "removed",
        None,
    ),
    (
        "rule_out to point estimate",
        [setter("fail_closed", "rule_out", value="point_estimate")],
        "fail_closed.rule_out",
        "changed",
        None,
    ),
    (
        "confidence lowered",
        [setter("fail_closed", "confidence", value=0.9)],
        "fail_closed.confidence",
        "changed",
        None,
    ),
    (
        "max_error_rate raised",
        [setter("fail_closed", "max_error_rate", value=0.1)],
        "fail_closed.max_error_rate",
        "changed",
        None,
    ),
    (
        "benchmark removed",
        [drop_item("thresholds", "AUTONOMY-1"), drop_item("benchmarks", "agentic-tasks")],
        "benchmarks[agentic-tasks]",
        "removed",
        None,
    ),
    (
        "sandbagging drop tolerance raised",
        [setter("anomaly_checks", "score_drop_tolerance", value=0.2)],
        "anomaly_checks.score_drop_tolerance",
        "changed",
        None,
    ),
    (
        "elicitation gap bound raised",
        [setter("anomaly_checks", "elicitation_gap_bound", value=0.6)],
        "anomaly_checks.elicitation_gap_bound",
        "changed",
        None,
    ),
    (
        "benchmark attempts lowered",
        [lambda d: by_id(d["benchmarks"], "bio-qa").__setitem__("attempts", 2)],
        "benchmarks[bio-qa].attempts",
        "changed",
        None,
    ),
    (
        "benchmark min_samples lowered",
        [lambda d: by_id(d["benchmarks"], "bio-qa").__setitem__("min_samples", 20)],
        "benchmarks[bio-qa].min_samples",
        "changed",
        None,
    ),
]

REVERSED_KIND = {"added": "removed", "removed": "added", "changed": "changed"}
# Loosening whichever way they run: no method of verification is stronger from the policy alone.
LOOSENS_BOTH_WAYS = {"automated to attestation"}


@pytest.mark.parametrize(
    ("edits", "path", "kind"), [pytest.param(e, p, k, id=n) for n, e, p, k, _ in LOOSENING]
)
def test_loosening_is_flagged(edits: list[Edit], path: str, kind: str) -> None:
    change = at(diff_policies(BASE, edited(*edits)), path)
    assert (change.kind, change.loosens) == (kind, True)
    assert change.why and "\n" not in change.why


@pytest.mark.parametrize(
    ("edits", "path", "kind"),
    [pytest.param(e, r or p, k, id=n) for n, e, p, k, r in LOOSENING if n not in LOOSENS_BOTH_WAYS],
)
def test_the_opposite_change_tightens(edits: list[Edit], path: str, kind: str) -> None:
    # Running each loosening diff backwards is its tightening counterpart.
    change = at(diff_policies(edited(*edits), BASE), path)
    assert (change.kind, change.loosens) == (REVERSED_KIND[kind], False)
    assert change.why


@pytest.mark.parametrize(
    ("edits", "path", "kind"),
    [pytest.param(e, r or p, k, id=n) for n, e, p, k, r in LOOSENING if n in LOOSENS_BOTH_WAYS],
)
def test_the_opposite_change_also_loosens(edits: list[Edit], path: str, kind: str) -> None:
    # Attestation -> automated used to read as not loosening; it is as unjudgeable as the reverse.
    change = at(diff_policies(edited(*edits), BASE), path)
    assert (change.kind, change.loosens) == (REVERSED_KIND[kind], True)
    assert change.why


def test_triggers_level_lowered_by_rank_in_new_order() -> None:
    higher = edited(lambda d: threshold(d, "CBRN-3").__setitem__("triggers_level", "ASL-4"))
    lowered = at(diff_policies(higher, BASE), "thresholds[CBRN-3].triggers_level")
    assert (lowered.kind, lowered.old, lowered.new, lowered.loosens) == ("changed", "ASL-4", "ASL-3", True)
    assert at(diff_policies(BASE, higher), "thresholds[CBRN-3].triggers_level").loosens is False


def test_threshold_change_values_and_why() -> None:
    change = at(
        diff_policies(BASE, edited(set_measure("CBRN-3", "bio-qa", "mean", "threshold", 0.6))),
        f"{BIO_MEAN}.threshold",
    )
    assert (change.old, change.new) == (0.5, 0.6)
    assert change.why.startswith("threshold raised from 0.50 to 0.60: a model must score higher")


def test_identical_policies_have_no_diff() -> None:
    assert diff_policies(BASE, parse_policy(POLICY_YAML)) == []
    assert summarize([]) == "no changes"


def _reverse_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _reverse_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reverse_keys(v) for v in value]
    return value


def test_reordered_yaml_keys_change_nothing() -> None:
    text = yaml.safe_dump(_reverse_keys(yaml.safe_load(POLICY_YAML)), sort_keys=False)
    assert text.splitlines()[0] != POLICY_YAML.strip().splitlines()[0]
    reordered = parse_policy(text)
    assert diff_policies(BASE, reordered) == []
    assert policy_sha256(reordered) == policy_sha256(BASE)


def test_descriptive_changes_are_listed_not_loosening() -> None:
    new_framework = BASE.framework.model_copy(update={"version": "1.1", "name": "Renamed policy"})
    new = BASE.model_copy(update={"framework": new_framework})
    changes = diff_policies(BASE, new)
    assert [(c.path, c.kind, c.old, c.new, c.loosens) for c in changes] == [
        ("framework.name", "changed", "Test scaling policy", "Renamed policy", False),
        ("framework.version", "changed", "1.0", "1.1", False),
    ]
    dated = edited(
        setter("framework", "effective_date", value="2026-02-01"),
        lambda d: by_id(d["levels"], "ASL-3").__setitem__("description", "changed text"),
    )
    changes = diff_policies(BASE, dated)
    assert [(c.path, c.loosens) for c in changes] == [
        ("framework.effective_date", False),
        ("levels[ASL-3].description", False),
    ]


def test_measure_removed_under_all_tightens_and_added_loosens() -> None:
    all_of = edited(lambda d: threshold(d, "CBRN-3").__setitem__("combine", "all"))
    fewer = edited(
        lambda d: threshold(d, "CBRN-3").__setitem__("combine", "all"),
        lambda d: threshold(d, "CBRN-3")["measures"].pop(1),
    )
    assert at(diff_policies(all_of, fewer), BIO_BEST).loosens is False
    added = at(diff_policies(fewer, all_of), BIO_BEST)
    assert (added.kind, added.loosens) == ("added", True)


def test_comparison_direction_reversed_counts_as_loosening() -> None:
    flipped = edited(
        lambda d: measure(d, "CBRN-3", "bio-qa", "mean").update(comparison="<=", early_warning=0.6)
    )
    changes = diff_policies(BASE, flipped)
    assert at(changes, f"{BIO_MEAN}.comparison").loosens is True
    assert at(changes, f"{BIO_MEAN}.early_warning").loosens is True


def test_min_samples_to_unset_with_higher_default_is_not_loosening() -> None:
    new = edited(
        set_measure("CBRN-3", "bio-qa", "best_of_k", "min_samples", None),
        lambda d: by_id(d["benchmarks"], "bio-qa").__setitem__("min_samples", 80),
    )
    change = at(diff_policies(BASE, new), f"{BIO_BEST}.min_samples")
    assert (change.old, change.new, change.loosens) == (60, None, False)


def test_attestation_to_automated_with_older_evidence_loosens() -> None:
    new = edited(
        lambda d: safeguard(d, "hardened-security").__setitem__(
            "verification", {"method": "automated", "check": "hsm-audit", "max_age_days": 60}
        )
    )
    change = at(diff_policies(BASE, new), "safeguards[hardened-security].verification")
    assert change.loosens is True and "60 days" in change.why


@pytest.mark.parametrize(
    ("new_verification", "path"),
    [
        pytest.param(
            {"method": "automated", "check": "hsm-audit", "max_age_days": 7},
            "safeguards[hardened-security].verification",
            id="attestation to automated, fresher evidence",
        ),
        pytest.param(
            {"method": "automated", "check": "hsm-audit", "max_age_days": 30},
            "safeguards[hardened-security].verification",
            id="attestation to automated, same evidence age",
        ),
    ],
)
def test_attestation_to_automated_loosens_whatever_the_evidence_age(
    new_verification: dict[str, Any], path: str
) -> None:
    # No accountable person vouches any more; a check's strength cannot be judged from the policy.
    new = edited(lambda d: safeguard(d, "hardened-security").__setitem__("verification", new_verification))
    change = at(diff_policies(BASE, new), path)
    assert (change.kind, change.loosens) == ("changed", True)
    assert "human attestation" in change.why and "hsm-audit" in change.why


def test_every_verification_method_switch_loosens() -> None:
    # Attestation -> automated, automated -> attestation, and one check for another are all flagged.
    to_check = edited(
        lambda d: safeguard(d, "hardened-security").__setitem__(
            "verification", {"method": "automated", "check": "hsm-audit", "max_age_days": 7}
        )
    )
    path = "safeguards[hardened-security].verification"
    assert at(diff_policies(BASE, to_check), path).loosens is True
    assert at(diff_policies(to_check, BASE), path).loosens is True
    other_check = edited(lambda d: safeguard(d, "baseline-security")["verification"].__setitem__("check", "x"))
    assert at(diff_policies(BASE, other_check), "safeguards[baseline-security].verification.check").loosens


def rename_role(old: str, new: str, *, name: str | None = None) -> Edit:
    """Rename a role id in every place the schema lets a policy name a role."""

    def swap(ids: list[str]) -> list[str]:
        return [new if r == old else r for r in ids]

    def edit(data: dict[str, Any]) -> None:
        for role in data["roles"]:
            if role["id"] == old:
                role["id"] = new
                role["name"] = name or role["name"]
        for sg in data["safeguards"]:
            if sg["verification"]["method"] == "attestation":
                sg["verification"]["roles"] = swap(sg["verification"]["roles"])
        data["approvals"]["roles"] = swap(data["approvals"]["roles"])
        data["approvals"]["must_include"] = swap(data["approvals"]["must_include"])

    return edit


def test_consistent_role_rename_is_a_rename_not_loosening() -> None:
    new = edited(rename_role("rso", "cro", name="Chief Risk Officer"))
    changes = diff_policies(BASE, new)
    assert [(c.path, c.kind, c.old, c.new, c.loosens) for c in changes] == [
        ("roles[cro].name", "changed", "Responsible Scaling Officer", "Chief Risk Officer", False),
        ("roles[rso]", "renamed", "rso", "cro", False),
    ]
    why = at(changes, "roles[rso]").why
    for place in ("approvals.roles", "approvals.must_include", "safeguards[board-review].verification.roles"):
        assert place in why
    assert "roster" in why and "\n" not in why
    back = diff_policies(new, BASE)
    assert [(c.path, c.kind, c.old, c.new, c.loosens) for c in back] == [
        ("roles[cro]", "renamed", "cro", "rso", False),
        ("roles[rso].name", "changed", "Chief Risk Officer", "Responsible Scaling Officer", False),
    ]
    assert "LOOSENS" not in summarize(changes)


def test_rename_does_not_hide_other_changes() -> None:
    # Reordering, repeating, and unrelated loosening edits are still listed, in the new names.
    new = edited(
        rename_role("rso", "cro"),
        lambda d: d["approvals"]["roles"].reverse(),
        setter("approvals", "quorum", value=1),
    )
    changes = diff_policies(BASE, new)
    assert at(changes, "roles[rso]").kind == "renamed"
    assert at(changes, "approvals.quorum").loosens is True
    order = at(changes, "approvals.roles")
    assert (order.old, order.new, order.loosens) == (["cro", "ceo", "board"], ["board", "ceo", "cro"], False)


def _quieter_board(d: dict[str, Any]) -> None:
    # A base where ceo and board have the same uses (approver roles only), for the merge case.
    safeguard(d, "board-review")["verification"]["roles"] = ["rso"]


NOT_RENAMES: list[tuple[str, list[Edit], str, Policy]] = [
    (
        "renamed onto an existing role: two roles merged",
        [
            drop_item("roles", "rso"),
            rename_role("rso", "ceo"),
            lambda d: d["approvals"].__setitem__("roles", ["ceo", "board"]),
        ],
        "safeguards[board-review].verification.roles[ceo]",
        BASE,
    ),
    (
        "two roles swapped",
        [rename_role("rso", "tmp"), rename_role("board", "rso"), rename_role("tmp", "board")],
        "approvals.must_include[rso]",
        BASE,
    ),
    (
        "renamed along a chain (rso -> board, board -> trustees)",
        [
            rename_role("board", "trustees"),
            rename_role("rso", "board"),
        ],
        "approvals.must_include[rso]",
        BASE,
    ),
    (
        "a reference left behind on the old role",
        [
            rename_role("rso", "cro"),
            append_to(lambda d: d["roles"], {"id": "rso", "name": "Responsible Scaling Officer"}),
            lambda d: safeguard(d, "board-review")["verification"].__setitem__("roles", ["board", "rso"]),
        ],
        "approvals.roles[cro]",
        BASE,
    ),
    (
        "a use dropped on the way",
        [
            rename_role("rso", "cro"),
            lambda d: safeguard(d, "board-review")["verification"].__setitem__("roles", ["board"]),
        ],
        "approvals.roles[cro]",
        BASE,
    ),
    (
        "a use added on the way",
        [
            rename_role("rso", "cro"),
            lambda d: safeguard(d, "hardened-security")["verification"]["roles"].append("cro"),
        ],
        "safeguards[hardened-security].verification.roles[cro]",
        BASE,
    ),
    (
        "one role split into two new roles with the same uses",
        [
            rename_role("rso", "cro"),
            append_to(lambda d: d["roles"], {"id": "cso", "name": "Chief Safety Officer"}),
            append_to(lambda d: d["approvals"]["roles"], "cso"),
            append_to(lambda d: d["approvals"]["must_include"], "cso"),
            append_to(lambda d: safeguard(d, "board-review")["verification"]["roles"], "cso"),
        ],
        "safeguards[board-review].verification.roles[cro]",
        BASE,
    ),
    (
        "two roles with the same uses folded into one new role",
        [
            drop_item("roles", "ceo"),
            rename_role("board", "execs"),
            lambda d: d["approvals"].__setitem__("roles", ["rso", "execs"]),
        ],
        "approvals.roles[execs]",
        edited(_quieter_board),
    ),
]


@pytest.mark.parametrize(
    ("edits", "path", "base"), [pytest.param(e, p, b, id=n) for n, e, p, b in NOT_RENAMES]
)
def test_inconsistent_role_rename_is_not_a_rename(edits: list[Edit], path: str, base: Policy) -> None:
    changes = diff_policies(base, edited(*edits, base=base))
    assert not [c for c in changes if c.kind == "renamed"], summarize(changes)
    assert at(changes, path).loosens is True


def test_levels_reordered_loosens() -> None:
    # Equal requirements let two levels swap places; the swap changes which rank a rule demands.
    def swap(d: dict[str, Any]) -> None:
        by_id(d["levels"], "ASL-4")["requires"] = list(by_id(d["levels"], "ASL-3")["requires"])
        d["levels"][1], d["levels"][2] = d["levels"][2], d["levels"][1]

    before = edited(
        lambda d: by_id(d["levels"], "ASL-4").__setitem__(
            "requires", list(by_id(d["levels"], "ASL-3")["requires"])
        )
    )
    change = at(diff_policies(before, edited(swap)), "levels")
    assert (change.old, change.new, change.loosens) == (
        ["ASL-2", "ASL-3", "ASL-4"],
        ["ASL-2", "ASL-4", "ASL-3"],
        True,
    )


def test_order_of_an_id_list_is_listed_not_loosening() -> None:
    new = edited(lambda d: d["approvals"]["roles"].reverse())
    change = at(diff_policies(BASE, new), "approvals.roles")
    assert (change.old, change.new, change.loosens) == (
        ["rso", "ceo", "board"],
        ["board", "ceo", "rso"],
        False,
    )


def test_repeated_entry_is_listed() -> None:
    new = edited(append_to(lambda d: safeguard(d, "deployment-filters")["halts"], "deployment"))
    change = at(diff_policies(BASE, new), "safeguards[deployment-filters].halts")
    assert (change.old, change.new, change.loosens) == (["deployment"], ["deployment", "deployment"], False)


def test_measures_without_unique_keys_are_matched_by_index() -> None:
    same_key = edited(set_measure("CBRN-3", "bio-qa", "best_of_k", "metric", "mean"))
    change = at(diff_policies(BASE, same_key), "thresholds[CBRN-3].measures[1].metric")
    assert (change.old, change.new, change.loosens) == ("best_of_k", "mean", True)


def test_unjudgeable_changes_count_as_loosening() -> None:
    new = edited(
        lambda d: by_id(d["benchmarks"], "bio-qa").__setitem__("runner", {"task": "bio_qa_easy"}),
        setter("fail_closed", "seed", value=7),
        lambda d: safeguard(d, "deployment-filters")["verification"].__setitem__(
            "params", {"min_recall": 0.5}
        ),
    )
    changes = diff_policies(BASE, new)
    assert [c.path for c in changes] == [
        "benchmarks[bio-qa].runner",
        "fail_closed.seed",
        "safeguards[deployment-filters].verification.params",
    ]
    assert all(c.loosens for c in changes)
    assert at(changes, "benchmarks[bio-qa].runner").new == {"task": "bio_qa_easy"}


def test_domain_status_tracked_to_monitored_loosens() -> None:
    new = edited(
        lambda d: by_id(d["domains"], "cyber").__setitem__("status", "monitored"),
        lambda d: threshold(d, "CYBER-3").__setitem__("triggers_level", None),
    )
    changes = diff_policies(BASE, new)
    assert at(changes, "domains[cyber].status").loosens is True
    assert at(changes, "thresholds[CYBER-3].triggers_level").loosens is True


def test_order_is_by_path_and_summary_marks_loosening() -> None:
    new = edited(
        setter("approvals", "quorum", value=3),
        setter("fail_closed", "confidence", value=0.9),
        setter("framework", "version", value="2.0"),
        set_measure("CBRN-3", "bio-qa", "mean", "threshold", 0.55),
    )
    changes = diff_policies(BASE, new)
    assert [c.path for c in changes] == sorted(c.path for c in changes)
    lines = summarize(changes).splitlines()
    assert len(lines) == len(changes)
    for line, change in zip(lines, changes, strict=True):
        assert line.startswith("LOOSENS") == change.loosens
        assert change.path in line and change.why in line


def _fields_of(annotation: Any) -> tuple[bool, list[type[BaseModel]]]:
    """Whether a field holds a list, and which models sit inside it."""
    is_list, models, stack = False, [], [annotation]
    while stack:
        tp = stack.pop()
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            models.append(tp)
            continue
        is_list = is_list or get_origin(tp) in (list, tuple)
        stack.extend(get_args(tp))
    return is_list, models


def _schema_patterns(model: type[BaseModel], prefix: str) -> set[str]:
    """Every path pattern the structural diff can reach, read from the schema itself."""
    out: set[str] = set()
    for name, field in model.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        is_list, models = _fields_of(field.annotation)
        # A single nested model is always present, so only its fields can differ; a list can be reordered,
        # and a tagged union is reported whole when its tag changes.
        if is_list or len(models) != 1:
            out.add(path)
        if is_list:
            out.add(f"{path}[*]")
        for inner in models:
            out |= _schema_patterns(inner, f"{path}[*]" if is_list else path)
    return out


def test_every_schema_field_has_a_rule() -> None:
    # A field added to the schema without a rule would still be listed, but judged only as "no rule".
    patterns = _schema_patterns(Policy, "")
    assert "thresholds[*].measures[*].threshold" in patterns
    assert sorted(patterns - set(_RULES)) == []


# --------------------------------------------------------------------------- properties

COMPARISONS = [">=", ">", "<=", "<"]
scores = st.floats(min_value=0.0, max_value=1.0, allow_nan=False).map(lambda x: round(x, 3))


@st.composite
def threshold_edit(draw: st.DrawFn) -> tuple[str, float, float, float]:
    comparison = draw(st.sampled_from(COMPARISONS))
    early = draw(scores)
    up = comparison in (">=", ">")
    valid = scores.filter(lambda t: t > early if up else t < early)
    old, new = draw(valid), draw(valid)
    return comparison, early, old, new


def _with_threshold(comparison: str, early: float, value: float) -> Policy:
    m = (
        BASE.thresholds[0]
        .measures[0]
        .model_copy(update={"comparison": comparison, "early_warning": early, "threshold": value})
    )
    t = BASE.thresholds[0].model_copy(update={"measures": [m, *BASE.thresholds[0].measures[1:]]})
    return BASE.model_copy(update={"thresholds": [t, *BASE.thresholds[1:]]})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(threshold_edit())
def test_threshold_edit_loosens_iff_more_permissive(edit: tuple[str, float, float, float]) -> None:
    comparison, early, old, new = edit
    assume(old != new)
    changes = diff_policies(_with_threshold(comparison, early, old), _with_threshold(comparison, early, new))
    assert len(changes) == 1
    change = changes[0]
    assert change.path == f"{BIO_MEAN}.threshold" and change.kind == "changed"
    more_permissive = new > old if comparison in (">=", ">") else new < old
    assert change.loosens is more_permissive


NUMERIC_EDITS: list[tuple[tuple[Any, ...], st.SearchStrategy[Any]]] = [
    (("approvals", "quorum"), st.integers(2, 3)),
    (("cadence", "comprehensive_compute_factor"), st.sampled_from([2.0, 4.0, 8.0])),
    (("fail_closed", "confidence"), st.sampled_from([0.9, 0.95, 0.99])),
    (("fail_closed", "seed"), st.integers(0, 2)),
    (("benchmarks", 1, "attempts"), st.integers(2, 4)),
    (("thresholds", 0, "measures", 0, "threshold"), st.sampled_from([0.45, 0.5, 0.55])),
    (("approvals", "must_include"), st.sampled_from([[], ["rso"], ["rso", "board"]])),
    (
        ("cadence", "preliminary_benchmarks"),
        st.permutations(["bio-qa", "cyber-ctf", "agentic-tasks"]).map(list),
    ),
]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(range(len(NUMERIC_EDITS))), st.data()), max_size=4))
def test_diff_is_empty_iff_canonical_data_equal(picks: list[tuple[int, st.DataObject]]) -> None:
    edits = [setter(*NUMERIC_EDITS[i][0], value=data.draw(NUMERIC_EDITS[i][1])) for i, data in picks]
    new = edited(*edits)
    changes = diff_policies(BASE, new)
    assert (changes == []) == (canonical_json(BASE) == canonical_json(new))
    assert len({c.path for c in changes}) == len(changes)
    backwards = diff_policies(new, BASE)
    assert [(c.path, REVERSED_KIND[c.kind]) for c in changes] == [(c.path, c.kind) for c in backwards]


def test_evaluation_lag_bound_loosens_only_when_it_grows() -> None:
    """The dead-man's switch: a larger bound (or removing a stated smaller one) is a loosening; stating the
    default changes nothing."""

    def with_cadence(**fields: object) -> Policy:
        data = yaml.safe_load(POLICY_YAML)
        data["cadence"].update(fields)
        return policy_from_data(data, "lag.yaml")

    base = with_cadence()
    stated_default = with_cadence(max_unevaluated_checkpoints=2, max_evaluation_lag="6h")
    assert not any(c.loosens for c in diff_policies(base, stated_default))
    looser = with_cadence(max_unevaluated_checkpoints=5, max_evaluation_lag="1d")
    assert {c.path for c in diff_policies(base, looser) if c.loosens} == {
        "cadence.max_unevaluated_checkpoints", "cadence.max_evaluation_lag"}
    tighter = with_cadence(max_unevaluated_checkpoints=1, max_evaluation_lag="1h")
    assert not any(c.loosens for c in diff_policies(base, tighter))
    assert {c.path for c in diff_policies(tighter, base) if c.loosens} == {  # removing a stricter bound
        "cadence.max_unevaluated_checkpoints", "cadence.max_evaluation_lag"}
