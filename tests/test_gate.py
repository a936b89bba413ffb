"""The scaling gate over a real SQLite ledger: open/closed, scope, lifting, fail-closed, cost.

No Prefect server here: the gate is plain Python and must work without one."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tasks.enforcement import open_manual_halt
from tasks.gate import GateUnavailable, ScalingGate, ScalingHalted, guard_flow_start
from tasks.ledger import Ledger


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    Ledger(url).close()
    return url


@pytest.fixture
def ledger(ledger_url: str) -> Ledger:
    return Ledger(ledger_url)


def lift(ledger: Ledger, halt_id: str) -> None:
    ledger.append("halt.lifted", halt_id, {"halt_id": halt_id, "reason": "test"})


def test_gate_is_open_without_halts(ledger_url: str) -> None:
    gate = ScalingGate(ledger_url)
    gate.check("run-a")
    assert gate.is_open("run-a", "deployment")


def test_halt_closes_gate_only_for_its_activities(ledger_url: str, ledger: Ledger) -> None:
    gate = ScalingGate(ledger_url)
    halt, _ = open_manual_halt("incident", ["training"], ledger=ledger)
    with pytest.raises(ScalingHalted) as caught:
        gate.check("run-a", "training")
    assert caught.value.halt_id == halt.halt_id
    assert gate.is_open("run-a", "deployment")


def test_run_scoped_halt_covers_only_its_runs(ledger_url: str, ledger: Ledger) -> None:
    open_manual_halt("bad run", ["training", "deployment"], runs=["run-b"], ledger=ledger)
    gate = ScalingGate(ledger_url)
    assert gate.is_open("run-a")
    assert not gate.is_open("run-b")
    assert not gate.is_open("run-b", "deployment")


def test_lifted_halt_reopens_the_same_gate(ledger_url: str, ledger: Ledger) -> None:
    gate = ScalingGate(ledger_url)
    halt, _ = open_manual_halt("incident", ["training"], ledger=ledger)
    assert not gate.is_open("run-a")
    lift(ledger, halt.halt_id)
    assert gate.is_open("run-a")


def test_gate_sees_halt_written_through_another_connection(ledger_url: str) -> None:
    gate = ScalingGate(ledger_url)
    assert gate.is_open("run-a")  # warms the cache
    with Ledger(ledger_url) as other:  # another writer, as another process would be
        open_manual_halt("from elsewhere", ["training"], ledger=other)
    assert not gate.is_open("run-a")


def test_stale_cache_only_within_max_staleness(ledger_url: str, ledger: Ledger) -> None:
    now = [0.0]
    gate = ScalingGate(ledger_url, max_staleness_s=5.0, clock=lambda: now[0])
    assert gate.is_open("run-a")
    open_manual_halt("incident", ["training"], ledger=ledger)
    assert gate.is_open("run-a")  # within the allowed staleness
    now[0] = 5.1
    assert not gate.is_open("run-a")


def test_message_names_halt_cause_lift_and_the_approve_hint(ledger_url: str, ledger: Ledger) -> None:
    halt, _ = open_manual_halt("evals found uplift", ["training"], ledger=ledger)
    with pytest.raises(ScalingHalted) as caught:
        ScalingGate(ledger_url).check("run-a")
    text = str(caught.value)
    assert halt.halt_id in text and "evals found uplift" in text
    assert "Lifts when" in text and f"rsp approve {halt.halt_id}" in text


def test_missing_configured_ledger_fails_closed(tmp_path: Path) -> None:
    gate = ScalingGate(f"sqlite:///{tmp_path / 'typo.db'}")
    with pytest.raises(GateUnavailable, match="cannot open the ledger"):
        gate.check("run-a")
    assert not (tmp_path / "typo.db").exists()


def test_unreadable_ledger_fails_closed(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-db.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(GateUnavailable):
        ScalingGate(f"sqlite:///{bad}").check("run-a")


def test_halt_payload_the_gate_cannot_read_covers_everything(ledger_url: str, ledger: Ledger) -> None:
    # A halt written by hand or by an older version, without a readable scope.
    ledger.open_halt({"halt_id": "halt-odd", "cause_key": "odd", "what": {"activities": "everything"}})
    gate = ScalingGate(ledger_url)
    assert not gate.is_open("any-run", "training")
    assert not gate.is_open("any-run", "deployment")


def test_guard_flow_start_outside_prefect_records_a_direct_call(ledger: Ledger) -> None:
    guard_flow_start("run-a", ledger=ledger)  # open: returns quietly, records nothing
    assert ledger.events(kind="scaling.run_blocked") == []
    halt, _ = open_manual_halt("incident", ["training"], ledger=ledger)
    with pytest.raises(ScalingHalted, match="Run blocked at start"):
        guard_flow_start("run-a", ledger=ledger)
    (event,) = ledger.events(kind="scaling.run_blocked")
    assert event.subject == halt.halt_id
    assert event.payload["run_id"] == "run-a"
    assert event.payload["started_by"].startswith("direct call")


def test_gate_is_thread_safe(ledger_url: str, ledger: Ledger) -> None:
    gate = ScalingGate(ledger_url)
    errors: list[BaseException] = []

    def hammer() -> None:
        try:
            for _ in range(200):
                gate.is_open("run-a")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    open_manual_halt("mid-flight", ["training"], ledger=ledger)
    for t in threads:
        t.join()
    assert not errors
    assert not gate.is_open("run-a")


def test_gate_check_is_cheap_enough_for_every_step(ledger_url: str, ledger: Ledger) -> None:
    for i in range(20):  # a ledger with some history and an unrelated open halt
        ledger.append("checkpoint.seen", f"k{i}", {"i": i})
    open_manual_halt("other run", ["training"], runs=["run-z"], ledger=ledger)
    gate = ScalingGate(ledger_url)
    gate.check("run-a")
    n = 500
    start = time.perf_counter()
    for _ in range(n):
        gate.check("run-a")
    per_call = (time.perf_counter() - start) / n
    # Measured ~0.1-0.3 ms on this machine; a training step takes seconds. Generous bound for shared CI.
    assert per_call < 0.005, f"gate.check took {per_call * 1e3:.2f} ms per call"


def test_importing_gate_and_enforcement_does_not_import_prefect() -> None:
    code = ("import sys, tasks.gate, tasks.enforcement, rsp.commands.halt; "
            "bad = [m for m in ('prefect', 'sqlalchemy.orm', 'httpx') if m in sys.modules]; "
            "assert not [m for m in bad if m == 'prefect'], bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_rsp_gate_check_exit_codes(ledger_url: str, ledger: Ledger, tmp_path: Path) -> None:
    from rsp.cli import app

    runner = CliRunner()
    opened = runner.invoke(app, ["gate", "check", "run-a", "--ledger", ledger_url])
    assert opened.exit_code == 0, opened.output
    assert "OPEN" in opened.output
    halt, _ = open_manual_halt("incident", ["training"], ledger=ledger)
    closed = runner.invoke(app, ["gate", "check", "run-a", "--ledger", ledger_url])
    assert closed.exit_code == 1
    assert halt.halt_id in closed.output
    other = runner.invoke(app, ["gate", "check", "run-a", "--activity", "deployment", "--ledger", ledger_url])
    assert other.exit_code == 0
    broken = runner.invoke(app, ["gate", "check", "run-a", "--ledger", f"sqlite:///{tmp_path / 'missing.db'}"])
    assert broken.exit_code == 2
    bad_activity = runner.invoke(app, ["gate", "check", "run-a", "--activity", "eval", "--ledger", ledger_url])
    assert bad_activity.exit_code == 2


def decide(ledger: Ledger, run_id: str, step: int, decision: str, halts: list[str]) -> None:
    uri = f"file:///ck/{run_id}/step-{step:09d}/"
    ledger.append("determination.recorded", uri, {"checkpoint": {"run_id": run_id, "step": step, "uri": uri},
                                                  "decision": decision, "halts": halts,
                                                  "assessment": "comprehensive"})


def test_a_halt_decided_but_not_yet_opened_already_stops_the_run(ledger_url: str, ledger: Ledger) -> None:
    """The evaluation records HALT, then opens the halt: a trainer checking in between must not pass
    (seen under load: the next checkpoint slipped through), nor when the evaluation died in between."""
    gate = ScalingGate(ledger_url)
    decide(ledger, "run-a", 1, "proceed", [])
    assert gate.is_open("run-a")
    decide(ledger, "run-a", 2, "halt", ["training", "deployment"])
    with pytest.raises(ScalingHalted) as caught:
        gate.check("run-a")
    assert "step 2" in str(caught.value) and "decided HALT" in str(caught.value)
    assert gate.is_open("run-b")  # another run's determination is not this run's business
    halt, _ = open_manual_halt("the halt the evaluation opens", ["training", "deployment"], runs=["run-a"],
                               ledger=ledger)
    with pytest.raises(ScalingHalted) as caught:
        gate.check("run-a")
    assert caught.value.halt_id == halt.halt_id  # the real halt, with its cause and how to lift it
    lift(ledger, halt.halt_id)
    assert gate.is_open("run-a")  # lifted after the decision: the decision was considered
    decide(ledger, "run-a", 3, "halt", ["deployment"])
    assert gate.is_open("run-a", "training") and not gate.is_open("run-a", "deployment")
