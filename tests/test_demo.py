"""End to end: the README's demo at small size, both halves, against its own real Prefect server process.

A 3-step training run under the Anthropic policy with the simulated model, x100 compute per step:
step 1 (1e23 FLOP) stays at ASL-2; step 2 (1e25 FLOP) can no longer rule out CBRN-3, requires ASL-3
safeguards the demo has not all in place, and halts (two attestations, a misuse classifier that is not
deployed, a weights bucket that does not exist). The demo then attests the rest (signed), deploys the
classifier, hardens the bucket, approves once through the approval service's Slack endpoint and once
with a signed CLI vote; the lift re-verifies and resumes the deployment, and a new run of the same
training run continues at step 3 (1e27 FLOP), where ASL-4 thresholds halt it again.

Asserts both halts, the votes (one `slack`, one `cli-signed`, both verified), the lift's re-verification,
the checkpoints on disk, the report's story of the halt, the ledger's chain, and that the commands the
summary prints work when copied (the environment line plus `rsp status`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

pytestmark = pytest.mark.integration


# Three evaluations, a lift and a resumed run: a few minutes on two idle cores, far more on a loaded machine.
@pytest.mark.timeout(900)  # ~4-6 min on 2 cores; a hang must not eat the CI budget
def test_demo_halts_lifts_and_resumes(tmp_path, monkeypatch, capsys):
    from rsp import demo
    from tasks.settings import get_settings

    saved = dict(os.environ)
    for var in list(os.environ):
        if var.startswith(("RSP_", "PREFECT_", "AWS_")):
            monkeypatch.delenv(var, raising=False)
    home = tmp_path / "demo"
    try:
        # The server is kept (as `make demo` does) so the printed commands can be run against it below.
        code = demo.main(["--home", str(home), "--steps", "3", "--growth", "100", "--port", "0",
                          "--timeout", "600"])
        out = capsys.readouterr().out
        get_settings.cache_clear()
        assert code == 0, out[-4000:]
        result = json.loads(out.strip().splitlines()[-1])
        assert result["crossing_step"] == 2 and result["lifted"] is True
        assert result["resumed_from_step"] == 2 and result["last_step"] == 3
        assert result["next_halt_step"] == 3 and result["next_halt_id"] != result["halt_id"]

        from tasks.ledger import Ledger

        ledger = Ledger(f"sqlite:///{home / 'ledger.db'}")
        dets = sorted(ledger.determinations("demo-run"), key=lambda d: d["checkpoint"]["step"])
        assert [(d["checkpoint"]["step"], d["required_level"], d["decision"]) for d in dets] == [
            (1, "ASL-2", "proceed"), (2, "ASL-3", "halt"), (3, "ASL-4", "halt")]
        first_unmet = {s["id"]: s["state"] for s in dets[1]["safeguards"] if s["state"] != "met"}
        # Honest first failures: nothing listens at the classifier's URL and the bucket does not exist yet.
        assert first_unmet["asl3-misuse-classifiers"] == "unknown"
        assert first_unmet["asl3-weights-storage-hardening"] == "unknown"
        assert {"asl3-deployment-standard", "asl3-safeguards-report"} <= set(first_unmet)
        # At step 3 every ASL-3 safeguard verifies; only the ASL-4 ones are missing.
        third = {s["id"]: s["state"] for s in dets[2]["safeguards"]}
        assert all(third[i] == "met" for i in first_unmet), third
        # (Which ASL-4 thresholds step 3 crosses varies with the simulated draws: an AI R&D crossing
        # also requires the misalignment affirmative case.)
        third_unmet = {i for i, s in third.items() if s != "met"}
        assert {"asl4-security-standard", "asl4-deployment-standard"} <= third_unmet
        assert third_unmet <= {"asl4-security-standard", "asl4-deployment-standard", "misalignment-affirmative-case"}

        halt = ledger.halt(result["halt_id"])
        assert halt is not None and not halt.is_open
        lift = halt.lift()
        assert lift is not None and set(lift.approvers or []) == {"riley", "casey"}
        assert set(halt.payload["lifts_when"]["safeguards"]) <= set(lift.verification or {})
        assert all(v["state"] == "met" for v in (lift.verification or {}).values()), lift.verification
        votes = demo.votes_on(ledger, halt.halt_id)
        assert sorted((v["person"], v["channel"], v["verified"]) for v in votes) == [
            ("casey", "slack", True), ("riley", "cli-signed", True)]
        assert [h["halt_id"] for h in ledger.open_halts()] == [result["next_halt_id"]]
        assert ledger.verify().ok

        steps_on_disk = sorted(p.name for p in (home / "checkpoints" / "demo-run").iterdir())
        assert steps_on_disk == ["step-000000001", "step-000000002", "step-000000003"]
        assert "Deployment train-demo: PAUSED" in out  # paused again by the ASL-4 halt

        # The summary: each step with its time, the lift's story, copyable commands.
        for step in ("attest asl3-deployment-standard", "put asl3-misuse-classifiers in place",
                     "put asl3-weights-storage-hardening in place", "casey approves in Slack",
                     "riley approves on the CLI", "the ledger records the lift", "resume training from step 3"):
            assert re.search(rf"^\s+\d+\.\d s  {re.escape(step)}", out, re.MULTILINE), step
        assert "approve by casey (ceo) via slack, verified" in out
        assert "approve by riley (responsible_scaling_officer) via cli-signed, verified" in out
        report = (home / "runs" / "demo-run" / "report.html").read_text()
        assert "first escalation: step 2" in report
        assert f"{halt.halt_id}: opened" in report
        assert f"by {', '.join(lift.approvers or [])} (trigger:" in report
        assert report.count(">verified<") >= 2 and ">slack<" in report and ">cli-signed<" in report
        assert f"{result['next_halt_id']}: opened" in report
        assert (home / "runs" / "demo-run" / "step-000000002" / "report.md").read_text().count("|") > 50

        env_line = next(line.strip() for line in out.splitlines() if line.strip().startswith("export RSP_HOME="))
        status_line = next(line.strip() for line in out.splitlines() if re.match(r"\s+\S*rsp status\b", line))
        assert "rsp serve --demo" in out  # how to open the pipeline's deployments in the UI
        clean = {k: v for k, v in saved.items() if not k.startswith(("RSP_", "PREFECT_"))}
        ran = subprocess.run(["bash", "-c", f"{env_line} && {status_line}"], capture_output=True, text=True,
                             env=clean, timeout=300, check=False)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert result["next_halt_id"] in ran.stdout and result["halt_id"] not in ran.stdout
    finally:
        demo.main(["--stop", "--home", str(home)])
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()
