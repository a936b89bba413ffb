"""Signed determinations, signed ledger heads and the third-party audit bundle.

`rsp audit export --bundle DIR` then `rsp audit verify --bundle DIR --trust KEYS`: nothing but the
bundle and the auditor's keys. A ledger rewritten with re-computed hashes passes the plain chain
check and fails against a head signed before the rewrite; a swapped sample-row file and a
determination that does not follow from its rows (even one signed with the gate's own key) fail.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from rsp.cli import app
from tasks.ledger.chain import canonical, event_hash

RUNNER = CliRunner()


def cli(*args: str) -> Any:
    return RUNNER.invoke(app, list(args))


def ledger_url(home: Path) -> str:
    return f"sqlite:///{(home / 'ledger.db').resolve()}"


def rewrite_sqlite(db: Path, seq: int, change: dict[str, Any]) -> None:
    """What whoever controls the database can do: edit an event and recompute every hash after it."""
    con = sqlite3.connect(db)
    rows = con.execute("select seq, ts, kind, subject, payload from ledger_events order by seq").fetchall()
    prev = "0" * 64
    for s, ts, kind, subject, payload in rows:
        data = json.loads(payload)
        if s == seq:
            data.update(change)
        digest = event_hash(s, ts, kind, subject, data, prev)
        con.execute("update ledger_events set payload = ?, prev_hash = ?, hash = ? where seq = ?",
                    (canonical(data), prev, digest, s))
        prev = digest
    con.execute("update ledger_head set hash = ? where id = 1", (prev,))
    con.commit()
    con.close()


def rewrite_jsonl(path: Path, seq: int, payload: dict[str, Any]) -> str:
    """Replace event `seq`'s payload in an exported events.jsonl and recompute the chain; the new head hash."""
    events = [json.loads(line) for line in path.read_text().splitlines()]
    prev = "0" * 64
    for ev in events:
        if ev["seq"] == seq:
            ev["payload"] = payload
        ev["prev_hash"] = prev
        ev["hash"] = prev = event_hash(ev["seq"], ev["ts"], ev["kind"], ev["subject"], ev["payload"], prev)
    path.write_text("".join(canonical(ev) + "\n" for ev in events))
    return prev


def verify(bundle: Path, trust: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    out = cli("audit", "verify", "--bundle", str(bundle), "--trust", str(trust), "--json", *extra)
    return out.exit_code, json.loads(out.output)


# -- the replay itself (pure) -------------------------------------------------------------------------


def test_replay_recomputes_a_determination_from_policy_and_rows_and_sees_a_changed_row() -> None:
    from policy.determination import QualityVerdict, SafeguardCheck
    from policy.engine import apply_safeguard_checks, classify, fail_closed_determination
    from policy.replay import first_difference, replay
    from policy.results import SampleTable
    from tasks.inputs import read_policy
    from tests.plugins.policies import TINY_POLICY, make_table

    policy = read_policy(TINY_POLICY)
    table = make_table({"bio": (0.8, 40, 1), "chem": (0.1, 40, 1), "swe": (0.2, 30, 3), "ctf": (0.1, 40, 1)})
    quality = QualityVerdict(status="passed", summary="all expectations met")
    det = classify(policy, table, assessment="comprehensive", assessment_reason="first", quality=quality)
    det = apply_safeguard_checks(det, {r.id: SafeguardCheck(id=r.id, state="met", evidence="ok")
                                       for r in det.required_safeguards})
    assert replay(policy, table, det) == det
    lowered = make_table({"bio": (0.1, 40, 1), "chem": (0.1, 40, 1), "swe": (0.2, 30, 3), "ctf": (0.1, 40, 1)})
    other = replay(policy, lowered, det)
    assert other.required_level != det.required_level
    assert first_difference(det.model_dump(mode="json"), other.model_dump(mode="json")).startswith(
        "benchmarks[0].ci_high: ")
    # A fail-closed determination (a stage raised) replays from no rows at all.
    failed = fail_closed_determination(policy, "evaluation failed: RuntimeError: boom")
    assert replay(policy, SampleTable.empty(), failed) == failed
    # A preliminary assessment runs the policy's preliminary set and carries the rest from the prior one.
    prelim = classify(policy, make_table({"bio": (0.1, 40, 1), "swe": (0.2, 30, 3)}), assessment="preliminary",
                      assessment_reason="cadence", benchmarks_run=["bio", "swe"], quality=quality,
                      carried={t.id: t for t in det.thresholds})
    prior = det.model_dump(mode="json")
    assert replay(policy, make_table({"bio": (0.1, 40, 1), "swe": (0.2, 30, 3)}), prelim, prior) == prelim
    assert replay(policy, make_table({"bio": (0.1, 40, 1), "swe": (0.2, 30, 3)}), prelim, None) != prelim


# -- signed heads against a rewritten ledger ---------------------------------------------------------


def test_rewrite_with_recomputed_hashes_fails_against_a_head_signed_before(rsp_home: Path, tmp_path: Path) -> None:
    from tasks.ledger import Ledger
    from tasks.ledger.events import CheckpointRejected, GateKeyRecorded

    assert cli("init").exit_code == 0
    with Ledger(ledger_url(rsp_home), create=False) as ledger:
        for i in range(3):
            ledger.record(CheckpointRejected(key=f"bad-{i}", reason="unreadable manifest"), f"bad-{i}")
    signed = cli("ledger", "sign-head", "--json")
    assert signed.exit_code == 0, signed.output
    head = json.loads(signed.output)
    key = rsp_home / "keys" / "gate"
    assert key.stat().st_mode & 0o777 == 0o600
    trust = tmp_path / "trusted.pub"
    shutil.copy(key.with_name("gate.pub"), trust)
    with Ledger(ledger_url(rsp_home), create=False) as ledger:
        recorded = ledger.events(kind=GateKeyRecorded.KIND)
        assert [e.payload["public_key"].split()[:2] for e in recorded] == [trust.read_text().split()[:2]]
        assert head["seq"] == ledger.head()[0] and head["hash"] == ledger.head()[1]
    assert cli("ledger", "sign-head").exit_code == 0  # the key is recorded once, not per signing
    with Ledger(ledger_url(rsp_home), create=False) as ledger:
        assert len(ledger.events(kind=GateKeyRecorded.KIND)) == 1

    before = tmp_path / "before"
    assert cli("audit", "export", "--bundle", str(before)).exit_code == 0
    code, report = verify(before, trust)
    assert code == 0 and report["ok"] and report["heads"] == 2 and report["events"] == head["seq"]

    # The rewrite: the chain still verifies on its own, which is exactly the hole signed heads close.
    rewrite_sqlite(rsp_home / "ledger.db", 2, {"reason": "nothing wrong here"})
    plain = cli("audit", "verify")
    assert plain.exit_code == 0 and plain.output.startswith("ledger ok:")
    after = tmp_path / "after"
    assert cli("audit", "export", "--bundle", str(after)).exit_code == 0
    code, report = verify(after, trust)
    assert code == 1 and report["first_problem"].startswith("history rewritten under a signed head")
    assert f"at seq {head['seq']}" in report["first_problem"]
    text = cli("audit", "verify", "--bundle", str(after), "--trust", str(trust))
    assert text.exit_code == 1 and text.output.count("\n") == 1 and "history rewritten" in text.output

    # Heads signed by a key the auditor does not trust count for nothing.
    from tasks.trust.keys import generate_key_files

    _, stranger = generate_key_files(tmp_path / "other", "stranger")
    (tmp_path / "stranger.pub").write_text(stranger + "\n")
    code, report = verify(before, tmp_path / "stranger.pub")
    assert code == 1 and "no signature valid under a trusted key" in report["first_problem"]
    bad = cli("audit", "verify", "--bundle", str(before), "--trust", str(tmp_path / "nope.pub"))
    assert bad.exit_code == 2 and "nope.pub" in bad.output


# -- publishing heads write-once ---------------------------------------------------------------------


def test_heads_publish_to_an_object_lock_bucket_and_refuse_one_without(
        rsp_home: Path, s3_endpoint: str, s3_client: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.settings import get_settings

    locked = f"{s3_bucket}-lock"
    s3_client.create_bucket(Bucket=locked, ObjectLockEnabledForBucket=True)
    monkeypatch.setenv("RSP_S3_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("RSP_HEAD_PUBLISH_URI", f"s3://{locked}/heads")
    monkeypatch.setenv("RSP_HEAD_RETENTION_DAYS", "30")
    get_settings.cache_clear()
    assert cli("init", "--json").exit_code == 0
    out = cli("ledger", "sign-head", "--json")
    assert out.exit_code == 0, out.output
    head = json.loads(out.output)
    ledger_id = head["ledger_id"]
    assert head["published"].startswith(f"s3://{locked}/heads/{ledger_id}/{head['seq']:012d}-")
    key = head["published"].split("/", 3)[3]
    meta = s3_client.head_object(Bucket=locked, Key=key)
    assert meta["ObjectLockMode"] == "COMPLIANCE"
    until = meta["ObjectLockRetainUntilDate"]
    assert dt.timedelta(days=29) < until - dt.datetime.now(dt.UTC) <= dt.timedelta(days=30)
    body = s3_client.get_object(Bucket=locked, Key=key)["Body"].read().decode()
    local = next((rsp_home / "heads" / ledger_id).glob("*.note")).read_text()
    assert body == local and body.startswith(f"rsp-gate.dev/ledger/{ledger_id}\n")

    monkeypatch.setenv("RSP_HEAD_PUBLISH_URI", f"s3://{s3_bucket}/heads")
    get_settings.cache_clear()
    refused = cli("ledger", "sign-head")
    assert refused.exit_code == 1
    assert refused.output.strip().count("\n") == 0
    assert f"refusing to publish signed heads to s3://{s3_bucket}: the bucket has no Object Lock" in refused.output
    assert s3_client.list_objects_v2(Bucket=s3_bucket).get("KeyCount", 0) == 0


# -- a real evaluation, its bundle, and forgeries of it ----------------------------------------------


@pytest.fixture
def attested_baseline(rsp_home: Path) -> None:
    """The tiny policy's baseline safeguard, attested (and signed) by a CISO on the roster."""
    from tasks.safeguards import new_attestation, open_evidence_store
    from tasks.trust.keys import generate_key_files, load_private_key

    rsp_home.mkdir(parents=True, exist_ok=True)
    key, line = generate_key_files(rsp_home / "people", "carol")
    (rsp_home / "roster.yaml").write_text(f"people:\n  carol: {{roles: [ciso], public_keys: ['{line}']}}\n")
    open_evidence_store().write(new_attestation("sg-base", "carol", "ciso", "baseline audit 2026-11",
                                                key=load_private_key(key)))


@pytest.mark.integration
def test_bundle_of_a_real_evaluation_verifies_and_forgeries_fail(
        prefect_server: str, rsp_home: Path, pipeline_policy: Path, write_checkpoints: Any, attested_baseline: None,
        tmp_path: Path) -> None:
    from flows.watch import watch
    from tasks.ledger import Ledger
    from tasks.ledger.events import DeterminationRecorded
    from tasks.ledger.heads import sign_head_note
    from tasks.trust.dsse import sign_statement
    from tasks.trust.keys import load_private_key

    store = str(rsp_home / "checkpoints")
    # comprehensive, preliminary (carries thresholds forward), then a crossing that halts
    write_checkpoints(store, "run-b", [(100, 1e21), (200, 1.5e21), (300, 1e25)])
    res = watch(store=store, policy=str(pipeline_policy)).evaluated
    assert [(r.assessment, r.decision) for r in res] == [
        ("comprehensive", "proceed"), ("preliminary", "proceed"), ("comprehensive", "halt")]
    with Ledger(ledger_url(rsp_home), create=False) as ledger:
        dets = ledger.events(kind=DeterminationRecorded.KIND)
        assert all("attestation" in d.payload and "attestation_error" not in d.payload for d in dets)
        ledger_id = ledger.ledger_id
    heads = sorted((rsp_home / "heads" / ledger_id).glob("*.note"))
    assert len(heads) == 3  # one after each evaluation (the last one after its halt)

    trust = tmp_path / "keys"
    trust.mkdir()
    shutil.copy(rsp_home / "keys" / "gate.pub", trust / "gate.pub")
    bundle = tmp_path / "bundle"
    exported = cli("audit", "export", "--bundle", str(bundle))
    assert exported.exit_code == 0, exported.output
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["missing"] == [] and manifest["heads"] == 3 and manifest["ledger_id"] == ledger_id
    assert (bundle / "keys" / "roster.yaml").exists() and len(list((bundle / "keys" / "gate").glob("*.pub"))) == 1
    # one policy file (all three cite the same bytes) and three distinct sample-row files
    blobs = sorted((bundle / "blobs" / "sha256").iterdir())
    assert len(blobs) == 4 and all(hashlib.sha256(b.read_bytes()).hexdigest() == b.name for b in blobs)
    assert pipeline_policy.read_bytes() in [b.read_bytes() for b in blobs]

    code, report = verify(bundle, trust)
    assert code == 0, report
    assert (report["determinations"], report["replayed"], report["heads"]) == (3, 3, 3)
    ok = cli("audit", "verify", "--bundle", str(bundle), "--trust", str(trust))
    assert ok.exit_code == 0 and ok.output.startswith("bundle ok:")

    # The statement of the halting determination: subject = its checkpoint, inputs by sha256.
    last = json.loads(bundle.joinpath("events.jsonl").read_text().splitlines()[dets[-1].seq - 1])
    statement = json.loads(base64.b64decode(last["payload"]["attestation"]["payload"]))
    assert statement["subject"] == [{"name": res[2].checkpoint,
                                     "digest": {"sha256": last["payload"]["checkpoint"]["digest"].split(":", 1)[1]}}]
    rows_sha = statement["predicate"]["rows"]["sha256"]
    assert statement["predicate"]["policy"]["sha256"] == hashlib.sha256(pipeline_policy.read_bytes()).hexdigest()

    # 1. A swapped sample-row file.
    swapped = tmp_path / "swapped"
    shutil.copytree(bundle, swapped)
    rows_path = swapped / "blobs" / "sha256" / rows_sha
    rows = [json.loads(line) for line in rows_path.read_text().splitlines()]
    for row in rows:
        if row["benchmark"] == "bio" and row["score"] is not None:
            row["score"] = 0.0
    rows_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, report = verify(swapped, trust)
    assert code == 1 and "sample-row file" in report["first_problem"] and "swapped" in report["first_problem"]
    assert report["first_problem"].startswith(f"determination at seq {dets[-1].seq}")

    # 2. A determination that does not follow from its rows, even one signed with the gate's own key over a
    #    rebuilt chain and a fresh head: the replay finds it. (The low-scoring rows say: no crossing.)
    forged = tmp_path / "forged"
    shutil.copytree(bundle, forged)
    new_rows = "".join(json.dumps(r) + "\n" for r in rows).encode()
    new_sha = hashlib.sha256(new_rows).hexdigest()
    (forged / "blobs" / "sha256" / new_sha).write_bytes(new_rows)
    statement["predicate"]["rows"]["sha256"] = new_sha
    gate = load_private_key(rsp_home / "keys" / "gate")
    payload = dict(last["payload"], attestation=sign_statement(statement, gate))
    head_hash = rewrite_jsonl(forged / "events.jsonl", last["seq"], payload)
    shutil.rmtree(forged / "heads")
    (forged / "heads").mkdir()
    seq = len((forged / "events.jsonl").read_text().splitlines())
    note = sign_head_note(gate, ledger_id, seq, head_hash)
    (forged / "heads" / note.file_name).write_text(note.note)
    code, report = verify(forged, trust)
    assert code == 1, report
    assert len(report["problems"]) == 1  # the chain, the heads and the signature all check out
    assert report["first_problem"].startswith(f"determination at seq {last['seq']} ({res[2].checkpoint}): replay "
                                              "differs from the record at benchmarks[0].ci_high")
    from policy.loading import parse_policy
    from policy.replay import replay
    from tasks.inputs import parse_results_bytes

    halting = DeterminationRecorded.from_payload(last["payload"]).determination()
    replayed = replay(parse_policy(pipeline_policy.read_text(), "p"), parse_results_bytes(new_rows, "r.jsonl"),
                      halting)
    assert (halting.required_level, replayed.required_level) == ("L3", "L2")  # the rows say no crossing

    # 3. The same forgery under the old heads: the rewrite itself is caught too.
    shutil.rmtree(forged / "heads")
    shutil.copytree(bundle / "heads", forged / "heads")
    code, report = verify(forged, trust)
    assert code == 1 and report["first_problem"].startswith("history rewritten under a signed head")


def test_every_vote_counted_toward_a_lift_must_be_signed_by_a_rostered_key_in_its_role(
        rsp_home: Path, tmp_path: Path) -> None:
    from tasks.ledger import Ledger
    from tasks.ledger.events import HaltLifted, HaltOpened, VoteRecorded
    from tasks.trust.keys import generate_key_files, load_private_key
    from tasks.trust.votes import sign_vote, vote_statement

    keys = {p: generate_key_files(tmp_path / "people", p) for p in ("alice", "bob", "mallory")}
    rsp_home.mkdir(parents=True, exist_ok=True)
    (rsp_home / "roster.yaml").write_text(
        "people:\n"
        f"  alice: {{roles: [rso], public_keys: ['{keys['alice'][1]}']}}\n"
        f"  bob: {{roles: [ceo], public_keys: ['{keys['bob'][1]}']}}\n")
    assert cli("init").exit_code == 0
    rules = {"roles": ["rso", "ceo"], "quorum": 2, "must_include": ["rso"]}

    def lift(ledger: Any, halt_id: str, votes: list[tuple[str, str, str | None]]) -> None:
        """Record a halt and its lift counting `votes` (person, role, signer or None for an unsigned vote)."""
        ledger.record(HaltOpened(halt_id=halt_id, cause_key=halt_id, what={"activities": ["training"]},
                                 why={"reason": "test"}), halt_id)
        cast = []
        for person, role, signer in votes:
            fields: dict[str, Any] = {"channel": "ui"}
            if signer is not None:
                stmt = vote_statement(halt_id, "approve", person, role, at="2026-01-01T00:00:00+00:00",
                                      nonce=f"{halt_id}-{person}", ledger_id=ledger.ledger_id)
                fields = {"channel": "cli-signed", "statement": stmt,
                          "signature": sign_vote(stmt, load_private_key(keys[signer][0])), "verified": True}
            ev = ledger.record(VoteRecorded(halt_id=halt_id, person=person, decision="approve", roles=[role],
                                            **fields), halt_id)
            cast.append({"seq": ev.seq, "person": person, "decision": "approve", "roles": [role]})
        ledger.record(HaltLifted(halt_id=halt_id, round=1, approvers=[p for p, _, _ in votes],
                                 assignment={"rso": votes[0][0]}, rules=rules, votes=cast, trigger="approval"),
                      halt_id)

    with Ledger(ledger_url(rsp_home), create=False) as ledger:
        lift(ledger, "halt-ok", [("alice", "rso", "alice"), ("bob", "ceo", "bob")])
    assert cli("ledger", "sign-head").exit_code == 0
    trust = tmp_path / "trust"
    trust.mkdir()
    shutil.copy(rsp_home / "keys" / "gate.pub", trust / "gate.pub")
    good = tmp_path / "good"
    assert cli("audit", "export", "--bundle", str(good)).exit_code == 0
    code, report = verify(good, trust)
    assert code == 0 and report["votes_checked"], report

    with Ledger(ledger_url(rsp_home), create=False) as ledger:
        lift(ledger, "halt-forged", [("alice", "rso", "mallory"), ("bob", "ceo", "bob")])
        lift(ledger, "halt-typed", [("alice", "rso", "alice"), ("bob", "ceo", None)])
        lift(ledger, "halt-role", [("alice", "rso", "alice"), ("bob", "rso", "bob")])  # bob holds ceo, not rso
    assert cli("ledger", "sign-head").exit_code == 0
    bad = tmp_path / "bad"
    assert cli("audit", "export", "--bundle", str(bad)).exit_code == 0
    code, report = verify(bad, trust)
    assert code == 1
    problems = report["problems"]
    assert len(problems) == 3, problems
    assert problems[0].startswith("halt halt-forged lifted at seq") and "bad_signature" in problems[0]
    assert problems[1].startswith("halt halt-typed lifted at seq") and "vote of bob" in problems[1]
    assert "is not signed: a third party cannot verify it" in problems[1]
    assert problems[2].startswith("halt halt-role lifted at seq") and "vote of bob" in problems[2]
    assert "role_not_held: bob signed as rso but holds ceo" in problems[2]
    # An auditor who chooses to trust the typed channel lists that vote instead of failing on it; the
    # forged and wrong-role votes still fail.
    code, report = verify(bad, trust, "--accept-channel", "ui")
    assert code == 1 and len(report["problems"]) == 2, report["problems"]
    assert [a.split(" lifted")[0] for a in report["accepted_unsigned"]] == ["halt halt-typed"]
    # The auditor's own roster wins over the bundle's: one without bob's key refuses his votes.
    (trust / "roster.yaml").write_text(f"people:\n  alice: {{roles: [rso], public_keys: ['{keys['alice'][1]}']}}\n"
                                       "  bob: {roles: [ceo]}\n")
    code, report = verify(good, trust)
    assert code == 1 and "vote of bob" in report["first_problem"] and "bad_signature" in report["first_problem"]
