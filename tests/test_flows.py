"""The watch → evaluate chain against a real Prefect server, on a local folder and on S3 over HTTP.

Benchmarks run through the `command` runner with tests/data/fake_runner.py (deterministic,
fast); Inspect itself is exercised in test_runners.py and test_pipeline_inspect.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture
def attested_baseline(rsp_home: Path) -> None:
    """The tiny policy's baseline safeguard, attested by a CISO on the roster."""
    from tasks.safeguards import new_attestation, open_evidence_store
    from tasks.trust.keys import generate_key_files, load_private_key

    rsp_home.mkdir(parents=True, exist_ok=True)
    key, line = generate_key_files(rsp_home / "keys", "carol")  # a throwaway key: attestations are signed
    (rsp_home / "roster.yaml").write_text(f"people:\n  carol: {{roles: [ciso], public_keys: ['{line}']}}\n")
    open_evidence_store().write(new_attestation("sg-base", "carol", "ciso", "baseline audit 2026-11",
                                                key=load_private_key(key)))


def ledger():
    from tasks.ledger import Ledger
    from tasks.settings import get_settings

    return Ledger(get_settings().resolved_ledger_url)


def run_watch(policy: Path, store: str | None = None, **kw):
    from flows.watch import watch

    return watch(store=store, policy=str(policy), **kw)


def test_watch_evaluates_each_complete_checkpoint_once(prefect_server, rsp_home, pipeline_policy,
                                                      write_checkpoints, attested_baseline):
    store = str(rsp_home / "checkpoints")
    write_checkpoints(store, "run-a", [(100, 1e21), (200, 4e21), (300, 2e22)])
    first = run_watch(pipeline_policy, store)
    assert first.new == 3 and len(first.evaluated) == 3
    assert [r.decision for r in first.evaluated] == ["proceed"] * 3
    assert [r.required_level for r in first.evaluated] == ["L2"] * 3
    # cadence: first comprehensive, 4x compute → comprehensive, 5x → comprehensive again
    assert [r.assessment for r in first.evaluated] == ["comprehensive", "comprehensive", "comprehensive"]
    second = run_watch(pipeline_policy, store)
    assert second.new == 0 and second.evaluated == []
    dets = ledger().determinations("run-a")
    assert sorted(d["checkpoint"]["step"] for d in dets) == [100, 200, 300]
    assert ledger().verify().ok
    folder = rsp_home / "runs" / "run-a" / "step-000000300"
    assert (folder / "report.md").read_text().startswith("# Capability report: run-a step 300")
    assert len((folder / "results.jsonl").read_text().splitlines()) == 60 + 60 + 60 * 3 + 60  # bio chem swe ctf


def test_preliminary_assessment_below_factor_and_carry_forward(prefect_server, rsp_home, pipeline_policy,
                                                              write_checkpoints, attested_baseline):
    store = str(rsp_home / "checkpoints")
    write_checkpoints(store, "run-p", [(100, 1e21), (200, 1.5e21)])
    res = run_watch(pipeline_policy, store).evaluated
    assert [r.assessment for r in res] == ["comprehensive", "preliminary"]
    det = ledger().previous_determination("run-p")
    assert det["checkpoint"]["step"] == 200
    carried = {t["id"]: t["carried_from"] for t in det["thresholds"]}
    assert carried["CYBER-MON"] == "previous comprehensive" and carried["CBRN-3"] is None


def test_half_written_checkpoint_ignored_until_manifest_lands(prefect_server, rsp_home, pipeline_policy,
                                                              write_checkpoints, attested_baseline):
    from tasks.manifest import manifest_bytes, new_manifest

    store = rsp_home / "checkpoints"
    partial = store / "run-h" / "step-000000100"
    partial.mkdir(parents=True)
    (partial / "weights.bin").write_bytes(b"half")
    assert run_watch(pipeline_policy, str(store)).listed == 0
    (partial / "checkpoint.json").write_bytes(manifest_bytes(new_manifest("run-h", 100, 1e21)))
    res = run_watch(pipeline_policy, str(store), full_scan=True)
    assert res.new == 1 and res.evaluated[0].step == 100


def test_hostile_manifests_rejected_once_and_watcher_goes_on(prefect_server, rsp_home, pipeline_policy,
                                                            write_checkpoints, attested_baseline):
    store = rsp_home / "checkpoints"
    write_checkpoints(str(store), "run-x", [(100, 1e21)])
    bad = {"run-x/step-000000050": b'{"run_id": "run-x", "step": 50, "effective_compute": "lots"}',
           "run-x/step-000000060": b'{"run_id": "run-x", "step": 60, "effective_compute": 1e21, '
                                   b'"created_at": "2026-01-01T00:00:00Z", "model": {"kind": "huggingface", '
                                   b'"path": "../../etc"}}',
           "run-x/step-000000070": b"x" * 70_000}
    for key, raw in bad.items():
        (store / key).mkdir(parents=True)
        (store / key / "checkpoint.json").write_bytes(raw)
    res = run_watch(pipeline_policy, str(store))
    assert len(res.evaluated) == 1 and res.evaluated[0].step == 100
    # How a deployment run of this tick would end: Failed, "Rejected", naming every rejected key.
    from flows.watch import _final_state
    from tasks.outcomes import WatchSummary

    assert _final_state(res) is res  # a direct call (the CLI, this test) gets the summary itself
    assert res.newly_rejected == 3
    settled = WatchSummary.model_validate({**res.model_dump(), "newly_rejected": 0})
    assert _final_state(settled) is settled
    reasons = {r.key: r.reason for r in res.rejected}
    assert set(reasons) == set(bad)
    assert "effective_compute" in reasons["run-x/step-000000050"]
    assert "'..'" in reasons["run-x/step-000000060"]
    assert "64 KiB" in reasons["run-x/step-000000070"] or "65536" in reasons["run-x/step-000000070"]
    again = run_watch(pipeline_policy, str(store), full_scan=True)
    assert again.newly_rejected == 0 and len(again.rejected) == 3  # reported by the tick that found them
    assert len(ledger().events(kind="checkpoint.rejected")) == 3  # recorded once, not every tick


def test_an_unreadable_checkpoint_is_rejected_and_recorded(prefect_server, rsp_home,
                                                                               pipeline_policy):
    from flows.evaluate import evaluate

    missing = (rsp_home / "checkpoints" / "run-z" / "step-000000100").as_uri() + "/"
    outcome = evaluate(missing, policy=str(pipeline_policy))  # a direct call gets the outcome itself
    assert outcome.status == "rejected" and outcome.reason
    (event,) = ledger().events(kind="checkpoint.rejected")
    assert event.payload["reason"] == outcome.reason


def test_watch_hands_its_policy_and_loaded_checkpoints_to_evaluate(prefect_server, rsp_home, pipeline_policy,
                                                                   write_checkpoints, attested_baseline,
                                                                   monkeypatch):
    import flows.evaluate

    def not_again(what):
        def fail(*args, **kwargs):
            raise AssertionError(f"evaluate under watch read the {what} again")
        return fail

    monkeypatch.setattr(flows.evaluate, "load_checkpoint", not_again("manifest"))
    monkeypatch.setattr(flows.evaluate, "policy_in_force", not_again("policy"))
    store = str(rsp_home / "checkpoints")
    write_checkpoints(store, "run-a", [(100, 1e21), (200, 4e21)])
    write_checkpoints(store, "run-b", [(100, 1e21)])
    res = run_watch(pipeline_policy, store)
    assert [(r.run_id, r.step, r.status) for r in sorted(res.evaluated, key=lambda r: (r.run_id, r.step))] == [
        ("run-a", 100, "evaluated"), ("run-a", 200, "evaluated"), ("run-b", 100, "evaluated")]


def test_claim_of_a_dead_evaluation_is_retried_after_its_lease(prefect_server, rsp_home, pipeline_policy,
                                                               write_checkpoints, attested_baseline):
    from flows.evaluate import evaluation_key
    from tasks.inputs import read_policy

    store = str(rsp_home / "checkpoints")
    [ck] = write_checkpoints(store, "run-c", [(100, 1e21)])
    key = evaluation_key(ck.uri, read_policy(pipeline_policy))
    assert ledger().claim(key, "crashed-worker", lease_s=1.0)  # claimed, then the process died
    assert run_watch(pipeline_policy, store).evaluated == []  # lease still held
    time.sleep(1.2)
    res = run_watch(pipeline_policy, store, full_scan=True)
    assert [r.step for r in res.evaluated] == [100]
    claim = ledger().get_claim(key)
    assert claim.state == "completed" and claim.attempts == 2


def test_crossing_checkpoint_halts_and_ledger_verifies(prefect_server, rsp_home, pipeline_policy,
                                                       write_checkpoints, attested_baseline):
    store = str(rsp_home / "checkpoints")
    write_checkpoints(store, "run-z", [(100, 1e21), (200, 1e25)])
    res = run_watch(pipeline_policy, store).evaluated
    assert [(r.required_level, r.decision) for r in res] == [("L2", "proceed"), ("L3", "halt")]
    assert res[1].halt.halt_id
    det = ledger().previous_determination("run-z")
    cbrn3 = next(t for t in det["thresholds"] if t["id"] == "CBRN-3")
    assert cbrn3["status"] == "crossed"
    states = {s["id"]: s["state"] for s in det["safeguards"]}
    assert states == {"sg-base": "met", "sg-sec3": "unknown", "sg-dep3": "unknown"}
    assert [h["halt_id"] for h in ledger().open_halts()] == [res[1].halt.halt_id]
    from typer.testing import CliRunner

    from rsp.cli import app

    out = CliRunner().invoke(app, ["audit", "verify"])
    assert out.exit_code == 0 and out.output.startswith("ledger ok:")
    report = rsp_home / "runs" / "run-z" / "report.html"
    text = report.read_text()
    assert "first escalation: step 200 → L3 (CBRN-3 crossed → L3)" in text
    assert "data:image/png;base64," in text and (rsp_home / "runs" / "run-z" / "scores.png").stat().st_size > 10_000
    report.unlink()
    out = CliRunner().invoke(app, ["report", "run-z"])
    assert out.exit_code == 0 and report.exists()


def test_crashed_benchmark_is_undetermined_never_absent(prefect_server, rsp_home, pipeline_policy,
                                                        write_checkpoints, attested_baseline, monkeypatch):
    from flows.evaluate import evaluate

    monkeypatch.setenv("FAKE_FAIL", '["chem"]')
    [ck] = write_checkpoints(str(rsp_home / "checkpoints"), "run-f", [(100, 1e21)])
    res = evaluate(ck.uri, policy=str(pipeline_policy))
    assert res.required_level == "L3" and res.decision == "halt"
    det = ledger().previous_determination("run-f")
    assert det["run_failures"][0]["benchmark"] == "chem" and det["run_failures"][0]["kind"] == "crashed"
    cbrn3 = next(t for t in det["thresholds"] if t["id"] == "CBRN-3")
    assert cbrn3["status"] == "undetermined" and "benchmark crashed" in cbrn3["reason"]


def test_benchmark_past_its_timeout_is_timed_out_and_undetermined(prefect_server, rsp_home, pipeline_policy,
                                                                  write_checkpoints, attested_baseline,
                                                                  monkeypatch, tmp_path):
    import yaml

    from flows.evaluate import evaluate

    data = yaml.safe_load(pipeline_policy.read_text())
    for b in data["benchmarks"]:
        if b["id"] == "chem":
            b["timeout_s"] = 1.0
    slow = tmp_path / "slow.yaml"
    slow.write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.setenv("FAKE_SLEEP", '{"chem": 30}')
    [ck] = write_checkpoints(str(rsp_home / "checkpoints"), "run-t", [(100, 1e21)])
    started = time.monotonic()
    res = evaluate(ck.uri, policy=str(slow))
    assert time.monotonic() - started < 25  # the slow benchmark did not hold the determination back
    assert res.decision == "halt" and res.required_level == "L3"
    det = ledger().previous_determination("run-t")
    [failure] = det["run_failures"]
    assert failure["benchmark"] == "chem" and failure["kind"] == "timed_out"
    cbrn3 = next(t for t in det["thresholds"] if t["id"] == "CBRN-3")
    assert cbrn3["status"] == "undetermined" and "benchmark timed out" in cbrn3["reason"]


def test_a_stage_that_raises_leaves_a_fail_closed_determination(prefect_server, rsp_home, pipeline_policy,
                                                                 attested_baseline, s3_endpoint, s3_bucket,
                                                                 monkeypatch):
    from flows.evaluate import evaluate
    from tasks.manifest import new_manifest
    from tasks.settings import get_settings
    from tasks.stores.base import from_uri

    monkeypatch.setenv("RSP_S3_ENDPOINT_URL", s3_endpoint)
    get_settings.cache_clear()
    store = from_uri(f"s3://{s3_bucket}/ck")
    # Hugging Face weights on S3 must be synced to a local path first: preparing the model raises.
    ck = store.put_checkpoint("run-e/step-000000100", {"hf/config.json": b"{}"},
                              new_manifest("run-e", 100, 1e21, {"kind": "huggingface", "path": "hf"}))
    res = evaluate(ck.uri, policy=str(pipeline_policy))
    assert res.status == "failed_closed" and res.decision == "halt"
    assert "local or mounted path" in res.error
    det = ledger().previous_determination("run-e")
    assert det["required_level"] == "L4"  # every threshold undetermined → the highest triggered level
    assert all(t["status"] == "undetermined" for t in det["thresholds"])
    assert det["stage_error"] == res.error


def test_rerun_under_changed_policy_reuses_benchmark_results_force_recomputes(
        prefect_server, rsp_home, pipeline_policy, write_checkpoints, attested_baseline, tmp_path, monkeypatch):
    from flows.evaluate import evaluate

    counter = tmp_path / "runs.log"
    monkeypatch.setenv("FAKE_COUNTER", str(counter))
    [ck] = write_checkpoints(str(rsp_home / "checkpoints"), "run-k", [(100, 1e21)])
    first = evaluate(ck.uri, policy=str(pipeline_policy))
    runs_after_first = len(counter.read_text().splitlines())
    assert first.status == "evaluated" and runs_after_first == 4
    again = evaluate(ck.uri, policy=str(pipeline_policy))
    assert again.status == "already_evaluated"
    stricter = tmp_path / "stricter.yaml"
    stricter.write_text(pipeline_policy.read_text().replace("threshold: 0.6", "threshold: 0.55"))
    res = evaluate(ck.uri, policy=str(stricter))
    assert res.status == "evaluated"
    assert len(counter.read_text().splitlines()) == runs_after_first  # every benchmark from the cache
    folder = rsp_home / "runs" / "run-k" / "step-000000100"
    earlier_logs = sorted(p.relative_to(folder) for p in (folder / "logs").rglob("*"))
    forced = evaluate(ck.uri, policy=str(stricter), force=True)
    assert forced.status == "evaluated"
    assert len(counter.read_text().splitlines()) == runs_after_first + 4
    # A forced run logs into a fresh folder (Inspect's eval_set would reuse a completed log), and
    # the earlier logs are kept.
    (fresh,) = (folder / "forced").iterdir()
    assert sorted(p.name for p in (fresh / "logs").iterdir()) == sorted(p.name for p in (folder / "logs").iterdir())
    assert earlier_logs and sorted(p.relative_to(folder) for p in (folder / "logs").rglob("*")) == earlier_logs


def test_two_concurrent_watchers_evaluate_each_checkpoint_once(prefect_server, rsp_home, pipeline_policy,
                                                              write_checkpoints, attested_baseline):
    store = str(rsp_home / "checkpoints")
    # Two runs of four: both watchers list all eight and race for every claim (16 took 75 s in CI).
    write_checkpoints(store, "run-m", [(100 * i, 1e21 * (1 + i / 10)) for i in range(1, 5)])
    write_checkpoints(store, "run-n", [(100 * i, 1e21 * (1 + i / 10)) for i in range(1, 5)])
    env = {**os.environ, "RSP_HOME": str(rsp_home)}
    cmd = [sys.executable, "-m", "rsp.cli", "watch", "--once", "--json", "--store", store,
           "--policy", str(pipeline_policy)]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    evaluated = [r for out, _ in outs for r in json.loads(out)["evaluated"]]
    keys = [(r["run_id"], r["step"]) for r in evaluated]
    assert len(keys) == 8 and len(set(keys)) == 8
    assert len(ledger().determinations()) == 8


def test_watch_on_s3_over_http(prefect_server, rsp_home, pipeline_policy, s3_endpoint, s3_bucket,
                               attested_baseline, monkeypatch):
    from tasks.manifest import new_manifest
    from tasks.settings import get_settings
    from tasks.stores.base import checkpoint_key, from_uri

    monkeypatch.setenv("RSP_S3_ENDPOINT_URL", s3_endpoint)
    get_settings.cache_clear()
    uri = f"s3://{s3_bucket}/ckpts"
    store = from_uri(uri)
    for step, c in [(100, 1e21), (200, 3e21)]:
        store.put_checkpoint(checkpoint_key("run-s3", step), {"weights.bin": b"w"}, new_manifest("run-s3", step, c))
    res = run_watch(pipeline_policy, uri)
    assert [r.step for r in res.evaluated] == [100, 200]
    assert res.evaluated[0].checkpoint == f"s3://{s3_bucket}/ckpts/run-s3/step-000000100/"
    assert run_watch(pipeline_policy, uri).evaluated == []


def test_unreadable_policy_halts_all_scaling_and_is_recorded(prefect_server, rsp_home, tmp_path,
                                                            write_checkpoints):
    """No policy, no determination: the evaluation halts training and deployment for every run,
    records why, and fails (it once raised on the record before the halt was opened)."""
    from flows.evaluate import evaluate
    from tasks.gate import ScalingGate

    store = str(rsp_home / "checkpoints")
    (ck,) = write_checkpoints(store, "run-u", [(100, 1e21)])
    broken = tmp_path / "broken-policy.yaml"
    broken.write_text("framework: [not, a, policy\n")
    with pytest.raises(Exception, match="broken-policy.yaml"):
        evaluate(ck.uri, policy=str(broken))
    (halt,) = ledger().open_halts()
    assert "policy-unreadable" in halt["cause_key"] and ck.uri in halt["cause_key"]
    (event,) = ledger().events(kind="policy.unreadable")
    assert event.subject == ck.uri and event.payload["policy"] == str(broken)
    assert "broken-policy.yaml" in event.payload["error"]
    gate = ScalingGate()
    assert not gate.is_open("run-u", "training") and not gate.is_open("any-other-run", "deployment")
