"""Policy changes go through the gate: a loosening is not used until the IN-FORCE approvers sign it.

Real components: an SQLite ledger, a roster with throwaway ed25519 keys (`approval_world`), the
`rsp` CLI, the file notifier; the last test runs real evaluations (the command runner's fake
benchmarks, a Prefect test server) to show which thresholds and which sha a determination used."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from policy.approvals import Ballot
from policy.change import decide_change, proposal_id
from policy.identity import policy_sha256
from policy.loading import policy_from_data
from tasks.ledger.events import PolicyAdopted, PolicyChangeProposed, PolicyChangeVoted, PolicyChangeVoteRefused
from tasks.notify.jsonl import read_notifications
from tasks.policy_versions import policy_in_force
from tasks.trust.keys import load_private_key
from tasks.trust.votes import change_vote_statement, new_nonce, now_iso, sign_vote
from tests.plugins.policies import TINY_POLICY
from tests.plugins.slack_api import ApprovalWorld


def rsp(*args: str) -> Any:
    from rsp.cli import app

    return CliRunner().invoke(app, list(args))


def edited(data: dict[str, Any], *, cbrn3: float | None = None, quorum: int | None = None) -> dict[str, Any]:
    """A copy of policy data with CBRN-3's measure thresholds and/or the approver quorum changed."""
    out = json.loads(json.dumps(data, default=str))
    if cbrn3 is not None:
        for m in next(t for t in out["thresholds"] if t["id"] == "CBRN-3")["measures"]:
            m["threshold"] = cbrn3
    if quorum is not None:
        out["approvals"]["quorum"] = quorum
    return out


def write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def cbrn3_thresholds(det: dict[str, Any]) -> set[float]:
    return {m["threshold"] for t in det["thresholds"] if t["id"] == "CBRN-3" for m in t["measures"]}


# -- the pure decision ------------------------------------------------------------------------------------------


def test_the_decision_adopts_tightening_holds_loosening_and_counts_only_the_in_force_rules(tiny_data):
    old = policy_from_data(tiny_data, "old")
    tighter = policy_from_data(edited(tiny_data, cbrn3=0.55), "tighter")
    looser = policy_from_data(edited(tiny_data, cbrn3=0.7, quorum=1), "looser")
    assert decide_change(None, old).outcome == "first"
    assert decide_change(old, policy_from_data(tiny_data, "same")).outcome == "unchanged"
    tightening = decide_change(old, tighter)
    assert tightening.adopt and tightening.outcome == "no_loosening" and tightening.changes
    held = decide_change(old, looser)
    assert not held.adopt and held.outcome == "held"
    assert {c.path.split(".")[0] for c in held.loosening} == {"approvals", "thresholds[CBRN-3]"}
    assert held.proposal == proposal_id("tiny", policy_sha256(old), policy_sha256(looser))
    alice = Ballot("alice", "approve", frozenset({"rso"}))
    # The proposed policy asks for one approver; the one in force for two, an RSO among them: one is not enough.
    assert decide_change(old, looser, [alice]).outcome == "held"
    assert decide_change(old, looser, [alice, Ballot("bob", "approve", frozenset({"ceo"}))]).outcome == "approved"
    # Unverified ballots never count here, whatever channel the in-force policy trusts for halts.
    unsigned = Ballot("bob", "approve", frozenset({"ceo"}), verified=False, channel="prefect-ui")
    assert decide_change(old, looser, [alice, unsigned]).outcome == "held"


# -- the ledger, the votes, the CLI -----------------------------------------------------------------------------


def forged_vote(w: ApprovalWorld, proposal: str, person: str, role: str, signer: str) -> PolicyChangeVoted:
    """A vote written straight into the ledger: `person`'s statement signed with `signer`'s key."""
    statement = change_vote_statement(proposal, "approve", person, role, at=now_iso(), nonce=new_nonce(),
                                      ledger_id=w.ledger.ledger_id)
    return PolicyChangeVoted(proposal_id=proposal, person=person, decision="approve", role=role, statement=statement,
                             signature=sign_vote(statement, load_private_key(w.keys[signer])))


def test_a_loosening_waits_for_the_in_force_quorum_of_signed_votes(approval_world: ApprovalWorld, tmp_path, tiny_data):
    w = approval_world
    path = write(tmp_path / "policy.yaml", tiny_data)
    first = policy_in_force(w.ledger, str(path))
    old_sha, old_text = first.sha256, path.read_text()
    assert first.decision.outcome == "first" and first.ref == str(path)
    # The file on disk is replaced by a looser version (a higher CBRN-3 bar, a smaller quorum).
    write(path, edited(tiny_data, cbrn3=0.7, quorum=1))
    for _ in range(2):  # every evaluation meanwhile: the version in force, from the ledger's copy
        held = policy_in_force(w.ledger, str(path))
        assert held.held and held.sha256 == old_sha and policy_sha256(held.policy) == old_sha
        assert Path(held.ref).read_text() == old_text and Path(held.ref).parent == w.home / "policies"
    proposal = held.proposal
    assert proposal is not None
    (proposed,) = w.ledger.events(kind=PolicyChangeProposed.KIND)  # recorded once
    assert proposed.subject == proposal and proposed.payload["in_force_sha256"] == old_sha
    assert any("LOOSENS" in line and "quorum" in line for line in proposed.payload["loosening"])
    assert proposed.payload["rules"]["quorum"] == 2  # the rules in force, not the proposal's own
    sent = [n for n in read_notifications(w.home / "notifications.jsonl") if n["halt_id"] == proposal]
    assert [n["event"] for n in sent] == [PolicyChangeProposed.KIND]
    # Even the stored copy deleted: it is written again from the ledger.
    Path(held.ref).unlink()
    assert Path(policy_in_force(w.ledger, str(path)).ref).read_text() == old_text

    # Forged votes written into the ledger would make the quorum (an RSO and a CEO) if they counted: alice's
    # statement signed with bob's key, bob's with erin's, and one with no valid signature at all.
    w.ledger.record(forged_vote(w, proposal, "alice", "rso", "bob"), proposal)
    w.ledger.record(forged_vote(w, proposal, "bob", "ceo", "erin"), proposal)
    unsigned = forged_vote(w, proposal, "bob", "ceo", "bob").model_copy(update={"signature": "bm90IGEgc2lnbmF0dXJl"})
    w.ledger.record(unsigned, proposal)
    assert policy_in_force(w.ledger, str(path)).held

    # Refused on the CLI, and recorded: no approver role under the rules in force; a key held by no one.
    carol = rsp("policy", "approve-change", proposal, "--key", str(w.keys["carol"]))
    assert carol.exit_code == 1 and "unauthorised" in carol.output
    dave = rsp("policy", "approve-change", proposal, "--key", str(w.keys["alice"]), "--as", "dave", "--role", "rso")
    assert dave.exit_code == 1 and "wrong_key" in dave.output
    assert [e.payload["code"] for e in w.ledger.events(kind=PolicyChangeVoteRefused.KIND)] == ["unauthorised",
                                                                                               "wrong_key"]
    assert rsp("policy", "approve-change", "pc-nope", "--key", str(w.keys["alice"])).exit_code == 2

    alice = rsp("policy", "approve-change", proposal, "--key", str(w.keys["alice"]), "-j", "reviewed")
    assert alice.exit_code == 0 and "1/2 approvals" in alice.output, alice.output
    assert policy_in_force(w.ledger, str(path)).held  # the new file's quorum of 1 does not apply
    status = rsp("policy", "status", "--json")
    assert status.exit_code == 0, status.output
    shown = json.loads(status.output)
    assert shown["in_force"]["tiny"]["sha256"] == old_sha
    [pending] = shown["proposals"]
    assert (pending["status"], pending["tally"]["approvers"]) == ("pending", ["alice"])

    bob = rsp("policy", "approve-change", proposal, "--key", str(w.keys["bob"]))
    assert bob.exit_code == 0 and "quorum reached" in bob.output
    adopted = policy_in_force(w.ledger, str(path))
    assert not adopted.held and adopted.ref == str(path) and adopted.sha256 != old_sha
    last = w.ledger.events(kind=PolicyAdopted.KIND)[-1].payload
    assert (last["reason"], last["proposal_id"], last["approvers"], last["previous_sha256"]) == (
        "approved", proposal, ["alice", "bob"], old_sha)
    assert rsp("policy", "approve-change", proposal, "--key", str(w.keys["erin"])).exit_code == 1  # settled
    text = rsp("policy", "status")
    assert "adopted" in text.output and adopted.sha256[:16] in text.output


def test_a_stored_version_that_no_longer_verifies_fails_closed(approval_world: ApprovalWorld, tmp_path, tiny_data):
    from policy.errors import PolicyError

    w = approval_world
    path = write(tmp_path / "policy.yaml", tiny_data)
    policy_in_force(w.ledger, str(path))
    (event,) = w.ledger.events(kind=PolicyAdopted.KIND)
    bad = {**event.payload, "text": TINY_POLICY.read_text().replace("quorum: 2", "quorum: 1")}
    w.ledger.record(PolicyAdopted.from_payload(bad), "tiny")  # a text that is not the sha it claims
    write(path, edited(tiny_data, cbrn3=0.7))
    with pytest.raises(PolicyError, match="hashes to"):
        policy_in_force(w.ledger, str(path))


def test_the_scaling_gate_keeps_the_lag_bound_in_force(approval_world: ApprovalWorld, tmp_path, tiny_data):
    from tasks.gate import ScalingGate

    w = approval_world
    path = write(tmp_path / "policy.yaml", {**tiny_data, "cadence": {**tiny_data["cadence"],
                                                                     "max_unevaluated_checkpoints": 3}})
    policy_in_force(w.ledger, str(path))
    stretched = {**tiny_data, "cadence": {**tiny_data["cadence"], "max_unevaluated_checkpoints": 9}}
    write(path, stretched)  # a longer leash, never approved
    assert ScalingGate(ledger=w.ledger, policy=str(path)).lag_bound().max_unevaluated_checkpoints == 3
    write(path, {**tiny_data, "cadence": {**tiny_data["cadence"], "max_unevaluated_checkpoints": 1}})
    assert ScalingGate(ledger=w.ledger, policy=str(path)).lag_bound().max_unevaluated_checkpoints == 1  # tighter


# -- evaluations ------------------------------------------------------------------------------------------------


@pytest.fixture
def voters(rsp_home: Path) -> dict[str, Path]:
    """A roster: carol (ciso) attests the baseline; alice (rso) and bob (ceo) approve."""
    from tasks.safeguards import new_attestation, open_evidence_store
    from tasks.trust.keys import generate_key_files

    rsp_home.mkdir(parents=True, exist_ok=True)
    keys, lines = {}, []
    for person, role in (("carol", "ciso"), ("alice", "rso"), ("bob", "ceo")):
        keys[person], line = generate_key_files(rsp_home / "keys", person)
        lines.append(f"  {person}: {{roles: [{role}], public_keys: ['{line}']}}")
    (rsp_home / "roster.yaml").write_text("people:\n" + "\n".join(lines) + "\n")
    open_evidence_store().write(new_attestation("sg-base", "carol", "ciso", "baseline audit",
                                                key=load_private_key(keys["carol"])))
    return keys


@pytest.mark.integration
def test_determinations_use_and_record_the_version_in_force(prefect_server, rsp_home, pipeline_policy,
                                                            write_checkpoints, voters, monkeypatch):
    from flows.evaluate import evaluate
    from tasks.ledger import Ledger
    from tasks.settings import get_settings

    monkeypatch.setenv("RSP_NOTIFY", "file")
    get_settings.cache_clear()
    data = yaml.safe_load(pipeline_policy.read_text())
    # bio scores about 0.63 at 1.5e24 FLOP: CBRN-3 (0.6) fires; with the bar at 0.89 it does not cross.
    ck1, ck2 = write_checkpoints(str(rsp_home / "checkpoints"), "run-p", [(100, 1.5e24), (200, 1.6e24)])
    ledger = Ledger(get_settings().resolved_ledger_url)

    def det_of(step: int) -> dict[str, Any]:
        return [d for d in ledger.determinations("run-p") if d["checkpoint"]["step"] == step][-1]

    assert evaluate(ck1.uri, policy=str(pipeline_policy)).required_level == "L3"
    old_sha = det_of(100)["policy"]["sha256"]
    write(pipeline_policy, edited(data, cbrn3=0.89, quorum=1))  # the file replaced by a looser version

    held = evaluate(ck2.uri, policy=str(pipeline_policy))
    det = det_of(200)
    assert (held.required_level, det["policy"]["sha256"], cbrn3_thresholds(det)) == ("L3", old_sha, {0.6})
    assert det["policy_ref"] == str(rsp_home / "policies" / f"{old_sha}.yaml")
    assert det.get("attestation") and not det.get("attestation_error")  # signed, citing the stored copy
    (proposed,) = ledger.events(kind=PolicyChangeProposed.KIND)
    proposal = proposed.subject

    for person in ("alice", "bob"):
        assert rsp("policy", "approve-change", proposal, "--key", str(voters[person])).exit_code == 0
    approved = evaluate(ck2.uri, policy=str(pipeline_policy))  # a new policy sha: decided again
    det = det_of(200)
    assert approved.status == "evaluated"
    assert det["policy"]["sha256"] != old_sha and cbrn3_thresholds(det) == {0.89}
    assert next(t for t in det["thresholds"] if t["id"] == "CBRN-3")["status"] != "crossed"
    assert det["policy_ref"] == str(pipeline_policy)

    write(pipeline_policy, edited(data, cbrn3=0.8, quorum=1))  # tightening: used at once, no vote
    tightened = evaluate(ck2.uri, policy=str(pipeline_policy))
    assert tightened.status == "evaluated" and cbrn3_thresholds(det_of(200)) == {0.8}
    reasons = [e.payload["reason"] for e in ledger.events(kind=PolicyAdopted.KIND)]
    assert reasons == ["first", "approved", "no_loosening"]
