"""Safeguard verification: evidence registry, roster, attestation verifier, registry, CLI, end to end.

The bucket and probe verifiers have their own files (test_bucket_hardening.py, test_probe.py);
the end-to-end test here reuses their real servers.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError
from typer.testing import CliRunner

from policy.engine import classify
from policy.schema import Policy
from rsp.cli import app
from tasks.safeguards import (
    Attestation,
    EvidenceStoreError,
    LocalEvidenceStore,
    RosterError,
    S3EvidenceStore,
    Verdict,
    VerificationContext,
    load_roster,
    new_attestation,
    open_evidence_store,
    parse_roster,
    register_verifier,
    unregister_verifier,
    verify_safeguard,
    verify_safeguards,
)
from tasks.safeguards.roster import default_roster_path
from tasks.storage import s3_client
from tasks.trust.keys import fingerprint, public_key_line
from tests.plugins.policies import TINY_POLICY, make_table, policy_with
from tests.test_bucket_hardening import closed_port, make_bucket
from tests.test_probe import FakeClassifier, classifier  # noqa: F401 - fixture

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)

# Throwaway signing keys, in memory; mallory's is on no roster.
KEYS = {p: Ed25519PrivateKey.generate() for p in ("alice", "bob", "carol", "mallory")}
PUB = {p: public_key_line(k.public_key(), p) for p, k in KEYS.items()}

ROSTER_YAML = f"""\
people:
  alice: {{roles: [ciso], slack_user_id: U0ALICE, name: Alice, public_keys: ['{PUB["alice"]}']}}
  bob: {{roles: [rso, ceo], slack_user_id: U0BOB, public_keys: ['{PUB["bob"]}']}}
  carol: {{roles: [], public_keys: ['{PUB["carol"]}']}}
"""


def key_file(folder: Path, person: str) -> str:
    """`person`'s key as an OpenSSH private key file, for the CLI's --key."""
    path = folder / f"{person}.key"
    path.write_bytes(KEYS[person].private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                                serialization.NoEncryption()))
    return str(path)


@pytest.fixture
def roster_file(tmp_path: Path) -> Path:
    path = tmp_path / "roster.yaml"
    path.write_text(ROSTER_YAML)
    return path


@pytest.fixture
def store(tmp_path: Path) -> LocalEvidenceStore:
    return LocalEvidenceStore(tmp_path / "evidence")


def ctx_with(store: Any, roster_file: Path | None, now: dt.datetime = NOW, **kw: Any) -> VerificationContext:
    return VerificationContext(now=now, evidence_store=store, roster_path=roster_file, **kw)


def attest(store: Any, safeguard: str = "sg-base", by: str = "alice", role: str = "ciso",
           at: dt.datetime = NOW - 10 * DAY, expires: dt.datetime | None = None, evidence: str = "SOC2 report v3",
           signer: str | None = ""):
    """Write a record signed with `signer`'s key (default: the attester's own; None: unsigned)."""
    key = None if signer is None else KEYS[signer or by]
    return store.write(new_attestation(safeguard, by, role, evidence, attested_at=at, expires_at=expires, key=key))


# --- roster -----------------------------------------------------------------------------------------


def test_roster_parses_and_answers(roster_file: Path) -> None:
    roster = load_roster(roster_file)
    assert roster.holds("alice", "ciso") and not roster.holds("alice", "rso")
    assert roster.roles_of("bob") == {"rso", "ceo"} and roster.roles_of("nobody") == frozenset()
    assert roster.people_with_role("ceo") == ["bob"]
    assert roster.by_slack_user_id("U0BOB") == "bob" and roster.by_slack_user_id("U0X") is None
    assert roster.person("carol") is not None and roster.person("carol").roles == []


@pytest.mark.parametrize("text, message", [
    ("people:\n  alice: {roles: [ciso]}\n  alice: {roles: [rso]}\n", "duplicate key 'alice'"),
    ("people:\n  alice: {roles: [ciso], shoe_size: 9}\n", "people.alice.shoe_size: unknown field"),
    ("people:\n  alice: {roles: [ciso, ciso]}\n", "lists a role twice"),
    ("people:\n  a: {roles: [x], slack_user_id: U0SAME}\n  b: {roles: [y], slack_user_id: U0SAME}\n",
     "one Slack user must map to one person"),
    ("people:\n  alice: {roles: ciso}\n", "people.alice.roles"),
    ("- alice\n", "expected a mapping"),
    ("", "empty roster"),
    ("people: [\n", "malformed YAML"),
])
def test_roster_rejects(text: str, message: str) -> None:
    with pytest.raises(RosterError) as err:
        parse_roster(text, "r.yaml")
    assert str(err.value).startswith("r.yaml: ") and message in str(err.value)
    assert "\n" not in str(err.value)


def test_roster_file_errors_and_default_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RosterError, match="no such roster file"):
        load_roster(tmp_path / "missing.yaml")
    with pytest.raises(RosterError, match="is a folder"):
        load_roster(tmp_path)
    monkeypatch.delenv("RSP_ROSTER", raising=False)
    assert default_roster_path(SimpleNamespace(home=tmp_path)) == tmp_path / "roster.yaml"
    monkeypatch.setenv("RSP_ROSTER", "/etc/rsp/roster.yaml")
    assert default_roster_path(SimpleNamespace(home=tmp_path)) == Path("/etc/rsp/roster.yaml")
    assert default_roster_path(SimpleNamespace(home=tmp_path, roster="/x.yaml")) == Path("/x.yaml")


# --- evidence records and stores ----------------------------------------------------------------------


def test_record_is_strict() -> None:
    rec = new_attestation("sg-base", "alice", "ciso", "report", attested_at=NOW, expires_at=NOW + DAY)
    assert rec.digest == rec.body_digest() and len(rec.digest) == 64
    with pytest.raises(ValidationError, match="timezone"):
        new_attestation("sg-base", "alice", "ciso", "report", attested_at=dt.datetime(2026, 1, 1))
    with pytest.raises(ValidationError, match="must be after attested_at"):
        new_attestation("sg-base", "alice", "ciso", "report", attested_at=NOW, expires_at=NOW)
    with pytest.raises(ValidationError):
        new_attestation("sg base", "alice", "ciso", "report", attested_at=NOW)
    with pytest.raises(ValidationError):
        Attestation.model_validate({**json.loads(rec.to_json()), "approved": True})
    with pytest.raises(ValidationError):
        Attestation.model_validate({**json.loads(rec.to_json()), "attested_by": 7})


def test_local_store_round_trip_latest_wins(store: LocalEvidenceStore) -> None:
    assert store.read().records == ()  # a store nobody wrote to yet
    older = attest(store, at=NOW - 30 * DAY, evidence="old report")
    newer = attest(store, at=NOW - 2 * DAY, evidence="new report")
    attest(store, safeguard="sg-affirmative", by="bob", role="rso")
    snap = store.read()
    assert snap.problems == ()
    assert snap.latest("sg-base").source == newer and snap.latest("sg-base").record.evidence == "new report"
    assert [s.source for s in snap.history("sg-base")] == [newer, older]
    assert snap.latest("sg-sec4") is None
    # Append-only: the same record cannot be written twice, and nothing is left behind.
    with pytest.raises(EvidenceStoreError, match="already exists"):
        store.write(snap.latest("sg-base").record)
    assert not [p for p in store.folder.iterdir() if p.name.startswith(".")]


def test_local_store_reports_every_unusable_file(store: LocalEvidenceStore) -> None:
    good = attest(store)
    folder = store.folder
    (folder / "sg-sec4@20260101T000000000000Z@alice@000000000000.json").write_text("{not json")
    edited = Path(attest(store, safeguard="sg-affirmative", by="bob", role="rso"))
    edited.write_text(edited.read_text().replace("SOC2 report v3", "something else"))
    (folder / "notes.txt").write_text("hello")
    (folder / "stray.json").write_text(json.dumps({"safeguard": "sg-base", "attested_by": "alice"}))
    (folder / "sub").mkdir()
    (folder / ".partial.tmp").write_text("x")  # writer temporaries are not records
    snap = store.read()
    assert [s.source for s in snap.records] == [good]
    by_source = {Path(p.source).name: p for p in snap.problems}
    assert set(by_source) == {"sg-sec4@20260101T000000000000Z@alice@000000000000.json", edited.name, "notes.txt",
                              "stray.json", "sub"}
    assert "malformed YAML/JSON" in by_source[next(n for n in by_source if n.startswith("sg-sec4"))].message
    assert by_source[edited.name].message.startswith("digest mismatch")
    assert by_source[edited.name].safeguards == {"sg-affirmative"}
    assert "invalid attestation" in by_source["stray.json"].message
    assert by_source["stray.json"].safeguards == {"sg-base"}  # attributed by content
    assert by_source["notes.txt"].safeguards == frozenset()  # cannot tell: concerns every safeguard
    assert {p.source for p in snap.problems_for("sg-sec3")} == {str(folder / "notes.txt"), str(folder / "sub")}


def test_hand_written_yaml_record_is_accepted(store: LocalEvidenceStore) -> None:
    store.folder.mkdir(parents=True)
    (store.folder / "sg-base@manual.yaml").write_text(
        "safeguard: sg-base\nattested_by: alice\nrole: ciso\nattested_at: 2026-02-20T09:00:00+00:00\n"
        "evidence: https://wiki.example/sec/baseline\n")
    snap = store.read()
    assert snap.problems == () and snap.latest("sg-base").record.digest is None


def test_open_evidence_store(tmp_path: Path) -> None:
    assert isinstance(open_evidence_store(str(tmp_path)), LocalEvidenceStore)
    assert open_evidence_store(tmp_path.as_uri()).folder == tmp_path
    s3 = open_evidence_store("s3://evidence-bucket/a/b", settings=SimpleNamespace(s3_endpoint_url="http://x:1",
                                                                                  s3_region=None, s3_profile=None))
    assert isinstance(s3, S3EvidenceStore) and s3.uri == "s3://evidence-bucket/a/b/"
    for bad in ("s3://", "http://host/x", "s3://Bad_Bucket/x"):
        with pytest.raises(ValueError, match="evidence store"):
            open_evidence_store(bad, settings=SimpleNamespace())


@pytest.mark.integration
def test_s3_store_round_trip(s3_endpoint: str, s3_bucket: str, s3_client: Any) -> None:
    store = open_evidence_store(f"s3://{s3_bucket}/evidence", settings=SimpleNamespace(
        s3_endpoint_url=s3_endpoint, s3_region="us-east-1", s3_profile=None))
    assert store.read().records == ()
    first = attest(store, at=NOW - 5 * DAY)
    second = attest(store, at=NOW - 1 * DAY, evidence="pen test 2026-02")
    assert first.startswith(f"s3://{s3_bucket}/evidence/sg-base@")
    with pytest.raises(EvidenceStoreError, match="already exists"):
        store.write(store.read().latest("sg-base").record)
    s3_client.put_object(Bucket=s3_bucket, Key="evidence/sg-sec4@x.json", Body=b"[1, 2")
    s3_client.put_object(Bucket=s3_bucket, Key="evidence/README.md", Body=b"hi")
    s3_client.put_object(Bucket=s3_bucket, Key="evidence/", Body=b"")  # console folder marker
    s3_client.put_object(Bucket=s3_bucket, Key="other/sg-base@y.json", Body=b"{}")  # outside the prefix
    snap = store.read()
    assert snap.latest("sg-base").source == second
    assert snap.latest("sg-base").record.evidence == "pen test 2026-02"
    assert sorted(p.source.rsplit("/", 1)[1] for p in snap.problems) == ["README.md", "sg-sec4@x.json"]
    assert [p.safeguards for p in snap.problems if p.source.endswith(".json")] == [{"sg-sec4"}]


@pytest.mark.integration
def test_s3_store_unreachable_makes_attestation_unknown(tiny_policy: Policy, s3_endpoint: str,
                                                        roster_file: Path) -> None:
    # One attempt: the point is the outcome, not botocore's backoff between retries.
    client = s3_client(endpoint_url=f"http://127.0.0.1:{closed_port()}", region="us-east-1", max_attempts=1)
    store = S3EvidenceStore("evidence-bucket", "x", client=client)
    with pytest.raises(EvidenceStoreError, match="cannot list"):
        store.read()
    check = verify_safeguard(tiny_policy.safeguard("sg-base"), ctx_with(store, roster_file))
    assert check.state == "unknown" and "evidence store unreadable" in check.evidence


# --- the attestation verifier ----------------------------------------------------------------------


def test_attestation_met(tiny_policy: Policy, store: LocalEvidenceStore, roster_file: Path) -> None:
    src = attest(store, expires=NOW + 30 * DAY)
    check = verify_safeguard(tiny_policy.safeguard("sg-base"), ctx_with(store, roster_file))
    assert check.state == "met", check.evidence
    assert check.checked_at == NOW.isoformat()
    assert "attested by alice as ciso" in check.evidence and "SOC2 report v3" in check.evidence and src in check.evidence


@pytest.mark.parametrize("arrange, state, reason", [
    ({}, "unmet", "no attestation for sg-base"),
    ({"at": NOW - 400 * DAY}, "expired", "older than the policy's 365 days"),
    ({"at": NOW - 20 * DAY, "expires": NOW - DAY}, "expired", "expired at 2026-02-28"),
    ({"by": "carol"}, "unmet", "forged role: carol does not hold role 'ciso' per the roster (holds no roles)"),
    ({"by": "bob"}, "unmet", "forged role: bob does not hold role 'ciso' per the roster (holds rso, ceo)"),
    ({"by": "mallory"}, "unmet", "forged role: mallory is not on the roster"),
    ({"by": "bob", "role": "rso"}, "unmet", "role 'rso' may not attest sg-base; the policy allows ciso"),
    ({"at": NOW + DAY}, "unmet", "in the future"),
])
def test_attestation_failures(tiny_policy: Policy, store: LocalEvidenceStore, roster_file: Path,
                              arrange: dict, state: str, reason: str) -> None:
    if arrange:
        attest(store, **arrange)
    check = verify_safeguard(tiny_policy.safeguard("sg-base"), ctx_with(store, roster_file))
    assert check.state == state
    assert reason in check.evidence


def test_latest_record_decides_even_when_worse(tiny_policy: Policy, store: LocalEvidenceStore,
                                               roster_file: Path) -> None:
    attest(store, at=NOW - 20 * DAY)
    attest(store, by="bob", at=NOW - DAY)  # newer, but bob is not a CISO
    check = verify_safeguard(tiny_policy.safeguard("sg-base"), ctx_with(store, roster_file))
    assert check.state == "unmet" and "forged role: bob" in check.evidence


def test_malformed_record_makes_its_safeguard_unknown(tiny_policy: Policy, store: LocalEvidenceStore,
                                                      roster_file: Path) -> None:
    attest(store)
    attest(store, safeguard="sg-affirmative", by="bob", role="rso")
    bad = store.folder / "sg-base@20260228T000000000000Z@alice@ffffffffffff.json"
    bad.write_text('{"safeguard": "sg-base", "attested_by": "alice"')
    ctx = ctx_with(store, roster_file)
    check = verify_safeguard(tiny_policy.safeguard("sg-base"), ctx)
    assert check.state == "unknown"
    assert str(bad) in check.evidence and "malformed YAML/JSON" in check.evidence
    # Attributed by file name: other safeguards are not affected.
    assert verify_safeguard(tiny_policy.safeguard("sg-affirmative"), ctx).state == "met"
    # A file nobody can attribute concerns every attested safeguard.
    (store.folder / "junk.bin").write_bytes(b"\x00\x01")
    ctx = ctx_with(store, roster_file)
    other = verify_safeguard(tiny_policy.safeguard("sg-affirmative"), ctx)
    assert other.state == "unknown" and "junk.bin: not a record file" in other.evidence


def test_unreadable_roster_is_unknown(tiny_policy: Policy, store: LocalEvidenceStore, tmp_path: Path) -> None:
    attest(store)
    check = verify_safeguard(tiny_policy.safeguard("sg-base"), ctx_with(store, tmp_path / "missing.yaml"))
    assert check.state == "unknown" and "roster unreadable" in check.evidence and "no such roster file" in check.evidence
    bad = tmp_path / "bad.yaml"
    bad.write_text("people:\n  alice: {roles: [ciso]}\n  alice: {roles: [ciso]}\n")
    check = verify_safeguard(tiny_policy.safeguard("sg-base"), ctx_with(store, bad))
    assert check.state == "unknown" and "duplicate key 'alice'" in check.evidence


def test_no_evidence_store_is_unknown(tiny_policy: Policy, roster_file: Path) -> None:
    check = verify_safeguard(tiny_policy.safeguard("sg-base"), ctx_with(None, roster_file))
    assert check.state == "unknown" and "no evidence store configured" in check.evidence


# --- the registry and the fail-closed round --------------------------------------------------------------


def _policy_with_check(tiny_data: dict, check: str) -> Policy:
    for sg in tiny_data["safeguards"]:
        if sg["id"] == "sg-dep3":
            sg["verification"]["check"] = check
    return policy_with(tiny_data)


def test_unknown_check_name_is_unknown(tiny_data: dict) -> None:
    policy = _policy_with_check(tiny_data, "retina_scan")
    check = verify_safeguard(policy.safeguard("sg-dep3"), VerificationContext(now=NOW))
    assert check.state == "unknown" and check.evidence == "no verifier registered for check 'retina_scan'"
    # An automated check named "attestation" does not reach the attestation verifier.
    policy = _policy_with_check(tiny_data, "attestation")
    assert verify_safeguard(policy.safeguard("sg-dep3"), VerificationContext(now=NOW)).state == "unknown"


def test_verifier_failures_fail_closed(tiny_data: dict) -> None:
    policy = _policy_with_check(tiny_data, "test_exploding_check")

    @register_verifier("test_exploding_check")
    def explode(safeguard: Any, ctx: Any) -> Verdict:
        raise RuntimeError("wires crossed")

    try:
        check = verify_safeguard(policy.safeguard("sg-dep3"), VerificationContext(now=NOW))
        assert check.state == "unknown"
        assert check.evidence == "verifier for automated 'test_exploding_check' failed: RuntimeError: wires crossed"
        with pytest.raises(ValueError, match="already registered"):
            register_verifier("test_exploding_check")(lambda s, c: Verdict.met("x"))
        register_verifier("test_exploding_check", replace=True)(lambda s, c: "met")  # not a Verdict
        check = verify_safeguard(policy.safeguard("sg-dep3"), VerificationContext(now=NOW))
        assert check.state == "unknown" and "not a Verdict" in check.evidence
        register_verifier("test_exploding_check", replace=True)(lambda s, c: Verdict("approved", "x"))  # type: ignore
        assert verify_safeguard(policy.safeguard("sg-dep3"), VerificationContext(now=NOW)).state == "unknown"
    finally:
        unregister_verifier("test_exploding_check")


def test_verify_safeguards_covers_every_requirement(tiny_policy: Policy, store: LocalEvidenceStore,
                                                    roster_file: Path) -> None:
    attest(store)
    ctx = ctx_with(store, roster_file)  # no bucket, no probe URL configured
    checks = verify_safeguards(tiny_policy, ["sg-base", "sg-sec3", "sg-dep3", "sg-base", "sg-ghost"], ctx)
    assert {k: v.state for k, v in checks.items()} == {
        "sg-base": "met", "sg-sec3": "unknown", "sg-dep3": "unknown", "sg-ghost": "unknown"}
    assert "not defined in policy tiny" in checks["sg-ghost"].evidence
    assert all(c.checked_at == NOW.isoformat() for c in checks.values())


def test_context_validation_and_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        VerificationContext(now=dt.datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="probe_timeout_s"):
        VerificationContext(now=NOW, probe_timeout_s=0)
    from tasks.settings import Settings

    for name in ("RSP_SAFEGUARD_BUCKET", "RSP_MISUSE_PROBE_URL", "RSP_MISUSE_PROBE_TIMEOUT_S", "RSP_ROSTER"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(home=tmp_path, checkpoint_store="s3://ckpt-bucket/runs", s3_endpoint_url="http://s3:9000")
    ctx = VerificationContext.from_settings(settings, now=NOW)
    assert ctx.bucket == "ckpt-bucket" and ctx.s3_endpoint_url == "http://s3:9000" and ctx.probe_url is None
    assert ctx.roster_path == tmp_path / "roster.yaml"
    assert isinstance(ctx.evidence_store, LocalEvidenceStore) and ctx.evidence_store.folder == tmp_path / "evidence"
    monkeypatch.setenv("RSP_SAFEGUARD_BUCKET", "weights-bucket")
    monkeypatch.setenv("RSP_MISUSE_PROBE_URL", "http://classifier:8080")
    monkeypatch.setenv("RSP_MISUSE_PROBE_TIMEOUT_S", "2.5")
    settings = Settings(home=tmp_path, checkpoint_store="s3://ckpt-bucket/runs", s3_endpoint_url="http://s3:9000")
    ctx = VerificationContext.from_settings(settings, now=NOW)
    assert (ctx.bucket, ctx.probe_url, ctx.probe_timeout_s) == ("weights-bucket", "http://classifier:8080", 2.5)
    ctx = VerificationContext.from_settings(settings, now=NOW, probe_timeout_s=1.0)
    assert ctx.probe_timeout_s == 1.0
    # The settings validate the environment: a bad value is refused before any check runs.
    monkeypatch.setenv("RSP_MISUSE_PROBE_TIMEOUT_S", "soon")
    with pytest.raises(ValueError, match="misuse_probe_timeout_s"):
        Settings(home=tmp_path)
    monkeypatch.delenv("RSP_MISUSE_PROBE_TIMEOUT_S")
    # A bad evidence store URI does not stop the round: attestations read unknown.
    ctx = VerificationContext.from_settings(Settings(home=tmp_path, evidence_store="ftp://x/y"), now=NOW,
                                            probe_timeout_s=1.0)
    with pytest.raises(EvidenceStoreError, match="ftp://x/y"):
        ctx.evidence()


# --- end to end: verification feeds the engine ------------------------------------------------------------


@pytest.mark.integration
def test_end_to_end_with_classify(tiny_policy: Policy, store: LocalEvidenceStore, roster_file: Path,
                                  s3_endpoint: str, s3_client: Any, classifier: FakeClassifier) -> None:  # noqa: F811
    # bio crosses CBRN-3 → L3, which needs sg-base (attested), sg-sec3 (bucket) and sg-dep3 (probe).
    results = make_table({"bio": (0.75, 100, 1), "chem": (0.2, 100, 1), "swe": (0.1, 50, 3), "ctf": (0.1, 50, 1)})
    unverified = classify(tiny_policy, results)
    assert unverified.required_level == "L3" and unverified.decision == "halt"
    required = unverified.required_safeguards
    assert [r.id for r in required] == ["sg-base", "sg-dep3", "sg-sec3"]

    attest(store)
    hardened = make_bucket(s3_client)

    def run(bucket: str, probe_url: str):
        ctx = ctx_with(store, roster_file, bucket=bucket, s3_endpoint_url=s3_endpoint, s3_region="us-east-1",
                       probe_url=probe_url, probe_timeout_s=2.0)
        return classify(tiny_policy, results, safeguard_checks=verify_safeguards(tiny_policy, required, ctx))

    ok = run(hardened, classifier.url)
    assert ok.decision == "proceed" and ok.obligations_met and ok.halts == ()
    assert {c.id: c.state for c in ok.safeguards} == {"sg-base": "met", "sg-dep3": "met", "sg-sec3": "met"}

    # The classifier goes away: its check is unknown, and only deployment halts (sg-dep3 halts deployment).
    down = run(hardened, f"http://127.0.0.1:{closed_port()}")
    assert down.decision == "halt" and not down.obligations_met
    assert down.halts == ("deployment",)
    assert len(down.decision_reasons) == 1 and down.decision_reasons[0].startswith("sg-dep3 is unknown (")

    # An unhardened bucket halts training too.
    plain = make_bucket(s3_client, skip=frozenset({"access_logging"}))
    soft = run(plain, classifier.url)
    assert soft.decision == "halt" and soft.halts == ("training", "deployment")
    assert soft.decision_reasons[0].startswith("sg-sec3 is unmet (") and "access_logging" in soft.decision_reasons[0]


# --- CLI ----------------------------------------------------------------------------------------------

runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, ["evidence", *args], catch_exceptions=False)


def test_cli_attest_and_list(tmp_path: Path, roster_file: Path, tiny_policy: Policy) -> None:
    ev = tmp_path / "ev"
    common = ["--store", str(ev), "--policy", str(TINY_POLICY), "--roster", str(roster_file)]
    r = cli("attest", "sg-base", "--by", "alice", "--role", "ciso", "--evidence", "SOC2 2026",
            "--key", key_file(tmp_path, "alice"), *common)
    assert r.exit_code == 0, r.output
    assert r.output.startswith("recorded sg-base attested by alice as ciso at ")
    r = cli("attest", "sg-affirmative", "--by", "bob", "--role", "rso", "--evidence", "safety case v2",
            "--expires", "2099-01-01T00:00:00Z", "--json", "--key", key_file(tmp_path, "bob"), *common)
    assert r.exit_code == 0, r.output
    written = json.loads(r.output)
    assert written["expires_at"].startswith("2099-01-01") and Path(written["source"]).is_file()
    r = cli("list", "--store", str(ev), "--roster", str(roster_file))
    assert r.exit_code == 0, r.output
    assert f"signed by {fingerprint(KEYS['alice'].public_key())}" in r.output
    assert "* sg-base" in r.output and "alice (ciso)" in r.output and "SOC2 2026" in r.output
    assert "* sg-affirmative" in r.output and "expires 2099-01-01T00:00:00+00:00" in r.output
    r = cli("list", "--store", str(ev), "--json", "--safeguard", "sg-base", "--roster", str(roster_file))
    data = json.loads(r.output)
    assert list(data["records"]) == ["sg-base"] and data["records"]["sg-base"][0]["attested_by"] == "alice"
    assert data["problems"] == []
    # The record the CLI wrote verifies.
    check = verify_safeguard(tiny_policy.safeguard("sg-base"),
                             VerificationContext(now=dt.datetime.now(dt.UTC),
                                                 evidence_store=LocalEvidenceStore(ev), roster_path=roster_file))
    assert check.state == "met", check.evidence


@pytest.mark.parametrize("args, message", [
    (["sg-base", "--by", "bob", "--role", "ciso"], "'bob' does not hold role 'ciso' (holds ceo, rso)"),
    (["sg-base", "--by", "mallory", "--role", "ciso"], "'mallory' is not on the roster"),
    (["sg-base", "--by", "bob", "--role", "rso"], "role 'rso' may not attest 'sg-base'; the policy allows ciso"),
    (["sg-nope", "--by", "alice", "--role", "ciso"], "safeguard 'sg-nope' is not defined in policy tiny"),
    (["sg-sec3", "--by", "alice", "--role", "ciso"], "verified by automated check 'checkpoint_bucket_hardening'"),
    (["sg-base", "--by", "alice", "--role", "ciso", "--expires", "tomorrow"], "is not an ISO 8601 date-time"),
    (["sg-base", "--by", "alice", "--role", "ciso", "--expires", "2099-01-01T00:00:00"], "has no timezone"),
    (["sg-base", "--by", "alice", "--role", "ciso", "--expires", "2001-01-01T00:00:00Z"], "is not in the future"),
    (["sg-base", "--by", "al ice", "--role", "ciso"], "attested_by"),
    (["sg-base", "--by", "alice", "--role", "ciso"], "an unsigned attestation would not count for 'ciso'"),
    (["sg-base", "--by", "alice", "--role", "ciso", "--key", "bob"], "is not listed for 'alice'"),
    (["sg-base", "--by", "alice", "--role", "ciso", "--key", "nokey"], "no such key file"),
])
def test_cli_attest_rejects(tmp_path: Path, roster_file: Path, args: list[str], message: str) -> None:
    ev = tmp_path / "ev"
    if "--key" in args:
        at = args.index("--key") + 1
        args = [*args[:at], key_file(tmp_path, args[at]) if args[at] in KEYS else str(tmp_path / args[at]),
                *args[at + 1:]]
    r = runner.invoke(app, ["evidence", "attest", *args, "--evidence", "x", "--store", str(ev),
                            "--policy", str(TINY_POLICY), "--roster", str(roster_file)])
    assert r.exit_code == 2, r.output
    assert message in r.output and r.output.startswith("error: evidence attest: ")
    assert len(r.output.strip().splitlines()) == 1
    assert not ev.exists()  # nothing written


def test_cli_list_reports_problems(tmp_path: Path) -> None:
    ev = tmp_path / "ev"
    ev.mkdir()
    (ev / "sg-base@x.json").write_text("{")
    r = cli("list", "--store", str(ev))
    assert r.exit_code == 1
    assert "no records" in r.output and f"PROBLEM {ev / 'sg-base@x.json'}: " in r.output
    r = cli("list", "--store", "s3://")
    assert r.exit_code == 2 and "expected s3://bucket/prefix" in r.output


@pytest.mark.integration
def test_cli_with_s3_store_from_settings(tmp_path: Path, roster_file: Path, s3_endpoint: str, s3_bucket: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.settings import get_settings

    monkeypatch.setenv("RSP_EVIDENCE_STORE", f"s3://{s3_bucket}/evidence")
    monkeypatch.setenv("RSP_S3_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("RSP_ROSTER", str(roster_file))
    monkeypatch.setenv("RSP_POLICY", str(TINY_POLICY))
    monkeypatch.setenv("RSP_CONFIG", os.devnull)
    get_settings.cache_clear()
    try:
        r = cli("attest", "sg-sec4", "--by", "alice", "--role", "ciso", "--evidence", "red team report",
                "--key", key_file(tmp_path, "alice"))
        assert r.exit_code == 0, r.output
        assert f"s3://{s3_bucket}/evidence/sg-sec4@" in r.output
        r = cli("list")
        assert r.exit_code == 0 and "* sg-sec4" in r.output and f"s3://{s3_bucket}/evidence/" in r.output
    finally:
        get_settings.cache_clear()
