"""Signed votes and signed attestations: only what a rostered key signed counts.

Real components: an SQLite ledger, a roster file with throwaway ed25519 keys
(`generate_key_files`), the tiny policy, an evidence folder, the `rsp` CLI. The forgeries are
the ones a person with shell access can make: `--as` someone else, their own key for another
person, a statement for another halt, a statement used twice, an edited record."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from policy.loading import parse_policy
from tasks.approvals import VoteRequest, record_vote, try_lift
from tasks.safeguards import LocalEvidenceStore, RosterError, VerificationContext, new_attestation, parse_roster
from tasks.safeguards.verifiers import verify_safeguard
from tasks.trust.keys import fingerprint, generate_key_files, load_private_key
from tasks.trust.votes import VOTE_TYPE, VerifiedVote, VoteRefusal, verify_vote
from tests.plugins.policies import TINY_POLICY
from tests.plugins.slack_api import ApprovalWorld


def rsp(*args: str) -> Any:
    from rsp.cli import app

    return CliRunner().invoke(app, list(args))


def fp(w: ApprovalWorld, person: str) -> str:
    return fingerprint(load_private_key(w.keys[person]).public_key())


# -- votes -----------------------------------------------------------------------------------------------


def test_forged_unsigned_votes_do_not_count_and_signed_ones_lift(approval_world: ApprovalWorld) -> None:
    w = approval_world
    hid = w.open_halt().halt_id
    w.attest("sg-base")
    # Anyone at the shell can claim to be the RSO and the CEO: recorded, flagged, not counted.
    for person in ("alice", "bob"):
        forged = rsp("approve", hid, "--as", person, "-j", "trust me")
        assert forged.exit_code == 0, forged.output
        assert "UNSIGNED" in forged.output and "UNVERIFIED and does not count" in forged.output
    assert w.ledger.halt(hid).is_open
    refused = try_lift(hid, ledger=w.ledger, notify=False)
    assert refused.status == "refused" and "0/2 approvals" in refused.message
    assert "not counted, unsigned: alice, bob" in refused.message
    unsigned = w.ledger.events(kind="vote.recorded", subject=hid)
    assert [(e.payload["channel"], e.payload["verified"]) for e in unsigned] == [("cli-unsigned", False)] * 2

    first = rsp("approve", hid, "--as", "alice", "--key", str(w.keys["alice"]), "-j", "reviewed")
    assert first.exit_code == 0, first.output
    assert f"signed by {fp(w, 'alice')}" in first.output and "1/2 approvals (alice)" in first.output
    second = rsp("approve", hid, "--as", "bob", "--key", str(w.keys["bob"]), "-j", "agreed")
    assert second.exit_code == 0, second.output
    assert "LIFTED" in second.output
    signed = w.ledger.events(kind="vote.recorded", subject=hid)[2:]
    assert [(e.payload["person"], e.payload["channel"], e.payload["verified"], e.payload["key_fingerprint"],
             e.payload["role"]) for e in signed] == [("alice", "cli-signed", True, fp(w, "alice"), "rso"),
                                                     ("bob", "cli-signed", True, fp(w, "bob"), "ceo")]
    statement = signed[0].payload["statement"]
    assert statement["_type"] == VOTE_TYPE and statement["halt_id"] == hid
    assert statement["ledger_id"] == w.ledger.identity().ledger_id
    # A third party re-verifies the recorded vote from the ledger alone, with the roster.
    again = verify_vote(statement, signed[0].payload["signature"], w.roster(), hid)
    assert isinstance(again, VerifiedVote) and again.key_fingerprint == fp(w, "alice")
    assert w.ledger.halt(hid).lift_payload["approvers"] == ["alice", "bob"]
    assert w.ledger.verify().ok


def test_bad_signed_votes_are_refused_and_recorded(approval_world: ApprovalWorld, tmp_path: Path) -> None:
    w = approval_world
    hid = w.open_halt().halt_id
    from tasks.enforcement import open_manual_halt

    other = open_manual_halt("operator stop", ledger=w.ledger)[0].halt_id
    assert other != hid
    outsider, _ = generate_key_files(tmp_path / "outside", "mallory")  # a key on no roster
    w.keys["outsider"] = outsider

    def code(req: VoteRequest) -> str:
        out = record_vote(req, ledger=w.ledger, roster=w.roster())
        assert not out.ok or out.code == "recorded", out.message
        return out.code

    assert code(w.signed(hid, "alice", key_of="outsider")) == "bad_signature"
    assert code(w.signed(hid, "alice", key_of="bob")) == "wrong_key"
    for_other = w.signed(other, "alice")
    assert code(VoteRequest(**{**for_other.__dict__, "halt_id": hid})) == "wrong_halt"
    tampered = w.signed(hid, "alice")
    tampered.statement["at"] = "2020-01-01T00:00:00+00:00"  # edited after signing
    assert code(tampered) == "bad_signature"
    assert code(w.signed(hid, "alice", role="ceo")) == "role_not_held"
    good = w.signed(hid, "alice")
    assert code(good) == "recorded"
    assert code(good) == "replayed"  # the same signed statement again

    refusals = w.ledger.events(kind="vote.refused", subject=hid)
    assert [e.payload["code"] for e in refusals] == ["bad_signature", "wrong_key", "wrong_halt", "bad_signature",
                                                     "role_not_held", "replayed"]
    assert "bob's key" in refusals[1].payload["reason"] and refusals[1].payload["statement"]["person"] == "alice"
    assert refusals[5].payload["key_fingerprint"] == fp(w, "alice")
    state = [e.payload["tally"]["approvers"] for e in w.ledger.events(kind="vote.recorded", subject=hid)]
    assert state == [["alice"]]  # only the one good vote counted, once

    # The CLI: another person's key is refused with one line and a non-zero exit, and recorded.
    wrong = rsp("approve", hid, "--as", "bob", "--key", str(w.keys["alice"]), "-j", "x")
    assert wrong.exit_code == 1 and "vote refused (wrong_key)" in wrong.output
    assert len(wrong.output.strip().splitlines()) == 1
    assert w.ledger.events(kind="vote.refused", subject=hid)[-1].payload["code"] == "wrong_key"


def test_verify_vote_is_pure_and_names_the_problem(approval_world: ApprovalWorld) -> None:
    w = approval_world
    req = w.signed("halt-x", "bob")
    roster = w.roster()
    ok = verify_vote(req.statement, req.signature, roster, "halt-x")
    assert isinstance(ok, VerifiedVote) and (ok.person, ok.role, ok.decision) == ("bob", "ceo", "approve")
    bad = verify_vote({**req.statement, "_type": "other"}, req.signature, roster, "halt-x")
    assert isinstance(bad, VoteRefusal) and bad.code == "bad_statement"
    future = w.signed("halt-x", "bob", at="2999-01-01T00:00:00+00:00")
    late = verify_vote(future.statement, future.signature, roster, "halt-x")
    assert isinstance(late, VoteRefusal) and "in the future" in late.reason
    elsewhere = w.signed("halt-x", "bob", ledger_id="another-ledger")
    moved = verify_vote(elsewhere.statement, elsewhere.signature, roster, "halt-x", expected_ledger_id="this")
    assert isinstance(moved, VoteRefusal) and moved.code == "wrong_ledger"


def test_ui_vote_counts_only_where_the_policy_trusts_prefect_ui(approval_world: ApprovalWorld) -> None:
    w = approval_world

    def ui(halt_id: str, person: str) -> Any:
        return record_vote(VoteRequest(halt_id, "approve", person, "from the form", "prefect-ui", "fr-1"),
                           ledger=w.ledger, roster=w.roster())

    strict = w.open_halt(safeguards=()).halt_id
    assert ui(strict, "alice").counted is False and ui(strict, "bob").counted is False
    assert try_lift(strict, ledger=w.ledger, notify=False).status == "refused"

    w.trusting({"rso": ["prefect-ui"]})  # the RSO's form counts; the CEO must still sign
    trusting = w.open_halt(safeguards=(), run_id="run-t").halt_id
    alice, bob = ui(trusting, "alice"), ui(trusting, "bob")
    assert (alice.counted, alice.verified, bob.counted) == (True, False, False)
    assert bob.tally.approvers == ("alice",) and bob.tally.unverified == ("bob",)
    assert try_lift(trusting, ledger=w.ledger, notify=False).status == "refused"
    assert record_vote(w.signed(trusting, "bob"), ledger=w.ledger, roster=w.roster()).tally.satisfied
    assert try_lift(trusting, ledger=w.ledger, notify=False).status == "lifted"


# -- attestations ----------------------------------------------------------------------------------------


def check(w: ApprovalWorld, store: LocalEvidenceStore, policy: Any = None) -> Any:
    ctx = VerificationContext(now=dt.datetime.now(dt.UTC), evidence_store=store, roster_path=w.home / "roster.yaml")
    return verify_safeguard((policy or w.policy).safeguard("sg-base"), ctx)


def test_attestations_count_only_when_the_attester_signed_them(approval_world: ApprovalWorld) -> None:
    w = approval_world
    store = LocalEvidenceStore(w.home / "ev-signed")
    path = Path(store.write(new_attestation("sg-base", "carol", "ciso", "SOC2",
                                            key=load_private_key(w.keys["carol"]))))
    met = check(w, store)
    assert met.state == "met" and f"signed by {fp(w, 'carol')}" in met.evidence

    # Edited, digest recomputed so the store reads it: the signature no longer verifies.
    data = json.loads(path.read_text())
    data["evidence"] = "SOC2 (scope: everything)"
    from tasks.safeguards.evidence import Attestation

    edited = Attestation.model_validate({k: v for k, v in data.items() if k != "digest"})
    path.unlink()
    path.write_text(json.dumps({**data, "digest": edited.body_digest()}))
    tampered = check(w, store)
    assert tampered.state == "unmet" and "altered after it was signed" in tampered.evidence

    mine = LocalEvidenceStore(w.home / "ev-other-key")  # carol's record, signed with alice's key
    mine.write(new_attestation("sg-base", "carol", "ciso", "SOC2", key=load_private_key(w.keys["alice"])))
    borrowed = check(w, mine)
    assert borrowed.state == "unmet" and f"signed with alice's key {fp(w, 'alice')}, not carol's" in borrowed.evidence


def test_unsigned_attestation_counts_only_where_the_policy_trusts_it(approval_world: ApprovalWorld) -> None:
    w = approval_world
    store = LocalEvidenceStore(w.home / "ev-unsigned")
    store.write(new_attestation("sg-base", "carol", "ciso", "SOC2"))
    strict = check(w, store)
    assert strict.state == "unmet" and "unsigned attestation by carol as ciso" in strict.evidence
    text = TINY_POLICY.read_text().replace("roles: [ciso], max_age_days: 365",
                                           "roles: [ciso], max_age_days: 365, trusted_unsigned_channels: "
                                           "{ciso: [unsigned]}", 1)
    assert text != TINY_POLICY.read_text()
    trusting = parse_policy(text, "trusting")
    lenient = check(w, store, trusting)
    assert lenient.state == "met" and "unsigned (the policy trusts unsigned attestations by ciso)" in lenient.evidence


# -- roster and policy -----------------------------------------------------------------------------------


def test_one_key_for_two_people_is_a_roster_error(tmp_path: Path) -> None:
    _, line = generate_key_files(tmp_path, "shared")
    with pytest.raises(RosterError, match="one key must never count as two people"):
        parse_roster(f"people:\n  a: {{roles: [rso], public_keys: ['{line}']}}\n"
                     f"  b: {{roles: [ceo], public_keys: ['{line}']}}\n")
    with pytest.raises(RosterError, match=r"people.a.public_keys.*OpenSSH ed25519"):
        parse_roster("people:\n  a: {roles: [rso], public_keys: ['ssh-rsa AAAAB3Nza x']}\n")


def test_trusting_an_unsigned_channel_is_a_loosening() -> None:
    from policy.diff import diff_policies
    from policy.errors import PolicyError
    from policy.identity import policy_sha256

    base_text = TINY_POLICY.read_text()
    base = parse_policy(base_text, "tiny")
    rule = "  must_include: [rso]\n"
    trusting = parse_policy(base_text.replace(rule, rule + "  trusted_unsigned_channels: {ceo: [prefect-ui]}\n"), "t")
    empty = parse_policy(base_text.replace(rule, rule + "  trusted_unsigned_channels: {}\n"), "e")
    assert policy_sha256(empty) == policy_sha256(base)  # not stating it keeps every existing policy's hash
    [loosen] = diff_policies(base, trusting)
    assert loosen.path == "approvals.trusted_unsigned_channels" and loosen.loosens
    assert "prefect-ui for ceo" in loosen.why
    [tighten] = diff_policies(trusting, base)
    assert not tighten.loosens
    with pytest.raises(PolicyError, match="not among approvals.roles"):
        parse_policy(base_text.replace(rule, rule + "  trusted_unsigned_channels: {ciso: [prefect-ui]}\n"), "x")
    with pytest.raises(PolicyError, match="trusted_unsigned_channels"):
        parse_policy(base_text.replace(rule, rule + "  trusted_unsigned_channels: {ceo: [email]}\n"), "x")
