"""End to end: the README's demo at small size, against its own real Prefect server process.

A 2-step training run under the Anthropic policy with the simulated model: step 1 (1e23 FLOP)
stays at ASL-2; step 2 (1e25 FLOP) can no longer rule out CBRN-3, requires ASL-3 safeguards
the demo has not all attested, and halts. Asserts the halt happens at that first checkpoint
whose determination needs unmet safeguards, the training deployment is paused, no checkpoint
follows the halt, the ledger verifies, and the reports exist and are non-trivial.
"""

from __future__ import annotations

import json
import os

import pytest

pytestmark = pytest.mark.integration


def test_demo_small(tmp_path, monkeypatch, capsys):
    from rsp import demo
    from tasks.settings import get_settings

    for var in list(os.environ):
        if var.startswith(("RSP_", "PREFECT_")):
            monkeypatch.delenv(var, raising=False)
    home = tmp_path / "demo"
    code = demo.main(["--home", str(home), "--steps", "2", "--growth", "100", "--no-keep-server",
                      "--port", "0", "--timeout", "600"])
    out = capsys.readouterr().out
    get_settings.cache_clear()
    assert code == 0, out[-3000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["crossing_step"] == 2

    from tasks.ledger import Ledger

    ledger = Ledger(f"sqlite:///{home / 'ledger.db'}")
    dets = sorted(ledger.determinations("demo-run"), key=lambda d: d["checkpoint"]["step"])
    assert [(d["checkpoint"]["step"], d["decision"]) for d in dets] == [(1, "proceed"), (2, "halt")]
    assert dets[0]["required_level"] == "ASL-2" and dets[1]["required_level"] == "ASL-3"
    unmet = [s["id"] for s in dets[1]["safeguards"] if s["state"] != "met"]
    assert unmet, "the halting determination must name unmet safeguards"
    [halt] = ledger.open_halts()
    assert halt["halt_id"] == result["halt_id"]
    assert ledger.verify().ok
    assert "Deployment train-demo: PAUSED" in out
    assert "none after the halted step 2" in out
    steps_on_disk = sorted(p.name for p in (home / "checkpoints" / "demo-run").iterdir())
    assert steps_on_disk == ["step-000000001", "step-000000002"]
    report = home / "runs" / "demo-run" / "report.html"
    assert report.stat().st_size > 50_000 and "first escalation: step 2" in report.read_text()
    assert (home / "runs" / "demo-run" / "step-000000002" / "report.md").read_text().count("|") > 50
    assert f"approve {result['halt_id']} --as riley" in out
