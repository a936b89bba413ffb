"""Approvals: the pure quorum rule, recording votes in the ledger, lifting, and `rsp approve/reject/resume`.

Real components: an SQLite ledger, a roster file, the tiny policy, an evidence folder. No
Prefect here (these halts paused no deployments); tests/test_approval_service.py and
tests/test_resume.py cover the Prefect side."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from typer.testing import CliRunner

from policy.approvals import ApprovalRules, Ballot, match_required_roles, tally, voter_problem
from tasks.approvals import VoteRequest, record_vote, try_lift
from tasks.ledger import Ledger
from tests.plugins.slack_api import ApprovalWorld

RULES = ApprovalRules(roles=("rso", "ceo"), quorum=2, must_include=("rso",))


def b(person: str, decision: str = "approve", *roles: str) -> Ballot:
    return Ballot(person=person, decision=decision, roles=frozenset(roles))  # type: ignore[arg-type]


# -- the pure rule ------------------------------------------------------------------------------------------


def test_same_person_twice_counts_once() -> None:
    t = tally(RULES, [b("alice", "approve", "rso"), b("alice", "approve", "rso")])
    assert t.approvers == ("alice",) and not t.satisfied and t.needed == 1


def test_quorum_needs_the_must_include_role() -> None:
    two_ceos = tally(RULES, [b("bob", "approve", "ceo"), b("erin", "approve", "ceo")])
    assert not two_ceos.satisfied and two_ceos.missing_roles == ("rso",) and two_ceos.needed == 1
    with_rso = tally(RULES, [b("bob", "approve", "ceo"), b("alice", "approve", "rso")])
    assert with_rso.satisfied and with_rso.assignment == {"rso": "alice"} and with_rso.needed == 0


def test_one_person_cannot_fill_two_required_roles() -> None:
    rules = ApprovalRules(roles=("sag", "ceo"), quorum=2, must_include=("sag", "ceo"))
    both = b("zed", "approve", "sag", "ceo")
    assert not tally(rules, [both]).satisfied
    t = tally(rules, [both, b("ceo2", "approve", "ceo")])
    assert t.satisfied and t.assignment == {"sag": "zed", "ceo": "ceo2"}  # augmenting path reassigns zed
    assert match_required_roles(["sag", "ceo"], {"a": frozenset({"sag", "ceo"})}) in ({"sag": "a"}, {"ceo": "a"})


def test_rejection_ends_the_round_and_later_votes_do_not_count() -> None:
    t = tally(RULES, [b("alice", "approve", "rso"), b("bob", "reject", "ceo"), b("erin", "approve", "ceo")])
    assert t.rejected and t.rejected_by == "bob" and not t.satisfied and t.ignored_after_rejection == 1
    assert t.needed == 0


def test_ineligible_votes_are_ignored_even_rejections() -> None:
    t = tally(RULES, [b("carol", "reject", "ciso"), b("alice", "approve", "rso"), b("bob", "approve", "ceo")])
    assert t.satisfied and t.ineligible == ("carol",)
    assert voter_problem(RULES, "carol", {"ciso"}) is not None and voter_problem(RULES, "bob", {"ceo"}) is None


def test_rules_validate_and_come_from_a_policy(approval_world: ApprovalWorld) -> None:
    assert ApprovalRules.of(approval_world.policy.approvals) == RULES
    with pytest.raises(ValueError, match="must_include"):
        ApprovalRules(roles=("ceo",), quorum=1, must_include=("rso",))


# -- recording votes ----------------------------------------------------------------------------------------


def vote(world: ApprovalWorld, halt_id: str, person: str | None, decision: str = "approve",
         new_round: bool = False) -> Any:
    """A vote signed with the person's roster key; unsigned for someone who has none (not on the roster)."""
    req = (world.signed(halt_id, person, decision, new_round=new_round) if person in world.keys else
           VoteRequest(halt_id=halt_id, decision=decision, person=person, justification="checked",
                       channel="cli-unsigned", new_round=new_round))
    return record_vote(req, ledger=world.ledger, roster=world.roster())


def kinds(ledger: Ledger, subject: str) -> list[str]:
    return [e.kind for e in ledger.events(subject=subject)]


def test_refusals_are_recorded_and_change_nothing_else(approval_world: ApprovalWorld) -> None:
    w = approval_world
    halt = w.open_halt()
    unknown = vote(w, halt.halt_id, "mallory")
    unauthorised = vote(w, halt.halt_id, "carol")
    missing = vote(w, "halt-doesnotexist", "alice")
    bad = vote(w, halt.halt_id, "alice", decision="maybe")
    assert (unknown.code, unknown.http_status, unknown.exit_code) == ("unknown_user", 403, 1)
    assert (unauthorised.code, unauthorised.http_status) == ("unauthorised", 403)
    assert "ciso" in unauthorised.message and "rso, ceo" in unauthorised.message
    assert (missing.code, missing.http_status, missing.exit_code) == ("no_such_halt", 404, 2)
    assert (bad.code, bad.exit_code) == ("bad_input", 2)
    assert kinds(w.ledger, halt.halt_id) == ["halt.opened", "vote.refused", "vote.refused"]
    assert [e.payload["code"] for e in w.ledger.events(kind="vote.refused")] == [
        "unknown_user", "unauthorised", "no_such_halt"]
    assert w.ledger.halt(halt.halt_id).is_open


def test_distinct_approvers_and_rounds(approval_world: ApprovalWorld) -> None:
    w = approval_world
    halt = w.open_halt()
    first = vote(w, halt.halt_id, "bob")
    again = vote(w, halt.halt_id, "bob")
    assert first.code == "recorded" and again.code == "duplicate"
    assert again.tally.approvers == ("bob",) and again.tally.needed == 1 and again.tally.missing_roles == ("rso",)
    rejected = vote(w, halt.halt_id, "erin", "reject")
    assert rejected.ok and rejected.tally.rejected_by == "erin"
    late = vote(w, halt.halt_id, "alice")
    assert late.code == "round_rejected" and late.http_status == 409
    reopened = vote(w, halt.halt_id, "alice", new_round=True)
    assert reopened.ok and reopened.round == 2 and reopened.tally.approvers == ("alice",)
    kinds_now = kinds(w.ledger, halt.halt_id)
    assert kinds_now.count("approval.round_closed") == 1 and kinds_now.count("approval.round_opened") == 1
    assert w.ledger.verify().ok


def test_lift_refused_names_missing_safeguard_then_lifts_once_attested(approval_world: ApprovalWorld) -> None:
    from tasks.gate import ScalingGate

    w = approval_world
    halt = w.open_halt()
    gate = ScalingGate(ledger=w.ledger)
    assert not gate.is_open("run-a")
    not_ready = try_lift(halt.halt_id, ledger=w.ledger)
    assert not_ready.status == "refused" and "2 more needed" in not_ready.message
    vote(w, halt.halt_id, "alice")
    outcome = vote(w, halt.halt_id, "bob")
    assert outcome.tally.satisfied
    refused = try_lift(halt.halt_id, ledger=w.ledger)
    assert refused.status == "refused" and [m["id"] for m in refused.missing] == ["sg-base"]
    event = w.ledger.events(kind="halt.lift_refused", subject=halt.halt_id)[-1]
    assert "sg-base" in event.payload["reason"] and event.payload["missing"][0]["state"] == "unmet"
    assert not gate.is_open("run-a")

    w.attest("sg-base")
    lifted = try_lift(halt.halt_id, ledger=w.ledger)
    assert lifted.status == "lifted", lifted.message
    payload = w.ledger.halt(halt.halt_id).lift_payload
    assert payload["approvers"] == ["alice", "bob"] and payload["verification"]["sg-base"]["state"] == "met"
    assert [v["person"] for v in payload["votes"]] == ["alice", "bob"]
    assert gate.is_open("run-a")
    assert try_lift(halt.halt_id, ledger=w.ledger).status == "already_lifted"
    assert vote(w, halt.halt_id, "erin").code == "halt_lifted"


def test_concurrent_quorum_completions_lift_once(approval_world: ApprovalWorld) -> None:
    w = approval_world
    halt = w.open_halt()
    w.attest("sg-base")
    vote(w, halt.halt_id, "alice")
    vote(w, halt.halt_id, "bob")
    results: list[str] = []
    barrier = threading.Barrier(4)

    def go() -> None:
        own = Ledger(w.ledger.url.replace("***", ""))  # a separate engine, as another process would have
        barrier.wait()
        results.append(try_lift(halt.halt_id, ledger=own, notify=False).status)

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results).count("lifted") == 1 and len(results) == 4
    assert len(w.ledger.events(kind="halt.lifted")) == 1


def test_roles_lost_after_voting_no_longer_count(approval_world: ApprovalWorld) -> None:
    w = approval_world
    halt = w.open_halt(safeguards=())
    vote(w, halt.halt_id, "alice")
    vote(w, halt.halt_id, "bob")
    (w.home / "roster.yaml").write_text((w.home / "roster.yaml").read_text().replace("roles: [ceo], slack_user_id: U0BOB",
                                                                                     "roles: [], slack_user_id: U0BOB"))
    refused = try_lift(halt.halt_id, ledger=w.ledger)
    assert refused.status == "refused" and "1 more needed" in refused.message


def test_halt_without_findable_policy_refuses_votes(approval_world: ApprovalWorld) -> None:
    from tasks.enforcement import open_halt

    w = approval_world
    det = w.determination().model_copy(update={"policy": w.determination().policy.model_copy(
        update={"sha256": "f" * 64})})
    halt, _ = open_halt(det, ledger=w.ledger)  # no policy given: no approver rules in the record
    outcome = vote(w, halt.halt_id, "alice")
    assert outcome.code == "no_rules" and "RSP_POLICY" in outcome.message


def test_manual_halt_takes_rules_from_configured_policy(approval_world: ApprovalWorld) -> None:
    from tasks.enforcement import open_manual_halt

    w = approval_world
    halt, _ = open_manual_halt("operator stop", ledger=w.ledger)
    vote(w, halt.halt_id, "alice")
    assert vote(w, halt.halt_id, "bob").tally.satisfied
    assert try_lift(halt.halt_id, ledger=w.ledger).status == "lifted"  # no safeguards required


# -- the CLI ------------------------------------------------------------------------------------------------


def rsp(*args: str) -> Any:
    from rsp.cli import app

    return CliRunner().invoke(app, list(args))


def test_cli_approve_reject_and_resume(approval_world: ApprovalWorld) -> None:
    w = approval_world
    halt = w.open_halt()
    hid = halt.halt_id

    key = {p: str(path) for p, path in w.keys.items()}
    first = rsp("approve", hid, "--as", "bob", "--key", key["bob"], "--justification", "reviewed the evals")
    assert first.exit_code == 0, first.output
    assert "1 more approval(s) needed, including a distinct approver holding rso" in first.output
    assert "safeguards still missing: sg-base (unmet" in first.output

    assert rsp("approve", hid, "--as", "carol", "--key", key["carol"], "-j", "x").exit_code == 1  # no approver role
    assert rsp("approve", hid, "--as", "mallory", "-j", "x").exit_code == 1  # not on the roster
    assert rsp("approve", hid, "--as", "alice", "--key", key["alice"], "-j", "  ").exit_code == 2  # empty justification
    missing = rsp("approve", "halt-nope", "--as", "alice", "--key", key["alice"], "-j", "x")
    assert missing.exit_code == 2 and "no halt" in missing.output

    second = rsp("approve", hid, "--as", "alice", "--key", key["alice"], "-j", "safeguards planned")
    assert second.exit_code == 1, second.output  # quorum reached, lift refused: the halt stays (as resume exits)
    assert "NOT lifted" in second.output and "missing: sg-base (unmet" in second.output

    w.attest("sg-base")
    resumed = rsp("resume", hid)
    assert resumed.exit_code == 0, resumed.output
    assert "LIFTED" in resumed.output
    after = rsp("reject", hid, "--as", "erin", "--key", key["erin"], "-j", "too late")
    assert after.exit_code == 1 and "already lifted" in after.output


def test_cli_reject_closes_round_and_new_round_reopens(approval_world: ApprovalWorld) -> None:
    w = approval_world
    hid = w.open_halt().halt_id
    key = {p: str(path) for p, path in w.keys.items()}
    rejected = rsp("reject", hid, "--as", "bob", "--key", key["bob"], "-j", "not convinced")
    assert rejected.exit_code == 0 and "round 1 is closed" in rejected.output
    assert rsp("approve", hid, "--as", "alice", "--key", key["alice"], "-j", "please").exit_code == 1
    reopened = rsp("approve", hid, "--as", "alice", "--key", key["alice"], "-j", "new evidence", "--new-round",
                   "--json")
    assert reopened.exit_code == 0, reopened.output
    assert '"round": 2' in reopened.output


def test_cli_notify_retry_and_serve_without_secret(approval_world: ApprovalWorld,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.notify import notify_halt_opened

    w = approval_world
    halt = w.open_halt()
    blocked = w.home / "blocked"
    blocked.mkdir()
    monkeypatch.setenv("RSP_NOTIFY_FILE", str(blocked))  # a folder: appending fails
    out = notify_halt_opened({"halt_id": halt.halt_id}, None, ledger=w.ledger)
    assert out["halt.opened"]["results"][0]["status"] == "failed"
    still = rsp("notify", "retry", "--force")
    assert still.exit_code == 1 and "1 still failing" in still.output
    monkeypatch.setenv("RSP_NOTIFY_FILE", str(w.home / "n.jsonl"))
    fixed = rsp("notify", "retry", "--force")
    assert fixed.exit_code == 0 and "1 delivered" in fixed.output
    assert rsp("notify", "retry", "--force").output.startswith("notify retry: 0 delivered")

    monkeypatch.delenv("RSP_SLACK_SIGNING_SECRET")
    serve = rsp("serve-approvals", "--port", "1")
    assert serve.exit_code == 2 and "RSP_SLACK_SIGNING_SECRET" in serve.output
