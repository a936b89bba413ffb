"""One ledger, pinned: a ledger has an identity, the gate is configured with the ledger it must use,
and nothing but `rsp init` (or the first watch / serve) creates one. Identity and pinning run on
both databases (a SQLite file, a PostgreSQL database on the session server).

Before this, `train_demo` called from another folder with RSP_HOME unset trained through an open
halt: its gate created an empty ledger at the default location and read "no halts" from it. CLI
read commands created empty ledgers the same way."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from rsp.cli import app
from tasks.enforcement import open_manual_halt
from tasks.gate import GateUnavailable, ScalingGate, ScalingHalted
from tasks.ledger import Ledger

runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    from tasks.settings import get_settings

    home = tmp_path / "home"
    monkeypatch.setenv("RSP_HOME", str(home))
    monkeypatch.setenv("RSP_CONFIG", str(tmp_path / "no-config.yaml"))
    for var in ("RSP_LEDGER_URL", "RSP_LEDGER_ID", "RSP_POLICY", "PREFECT_API_URL"):
        monkeypatch.delenv(var, raising=False)
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


def url_of(path: Path) -> str:
    return f"sqlite:///{path}"


def drop_identity(url: str) -> None:
    """Make a ledger look as one created before identities existed."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE ledger_identity"))
    engine.dispose()


# -- identity ---------------------------------------------------------------------------------------------------


def test_a_new_ledger_has_a_random_identity_that_stays(new_ledger_url: Callable[[str], str]) -> None:
    url_a, url_b = new_ledger_url("a"), new_ledger_url("b")
    with Ledger(url_a, create=True) as a, Ledger(url_b, create=True) as b:
        ident = a.identity()
        assert ident is not None and re.fullmatch(r"ledger-[0-9a-f]{32}", ident.ledger_id)
        assert ident.origin == "created" and a.ledger_id != b.ledger_id
        a.append("test.event", "s", {})
    with Ledger(url_a, create=False) as again:
        assert again.identity() == ident
        assert again.verify().ok and again.head()[0] == 1, "the identity is not an event"


def test_an_older_ledger_opens_and_takes_its_identity_from_its_first_event(
    new_ledger_url: Callable[[str], str],
) -> None:
    url = new_ledger_url("old")
    with Ledger(url, create=True) as store:
        first = store.append("test.event", "s", {"i": 1})
        store.append("test.event", "s", {"i": 2})
    drop_identity(url)
    with Ledger(url, create=False) as old:
        derived = old.identity()
        assert derived is not None and derived.ledger_id == f"genesis-{first.hash[:32]}"
        assert derived.origin == "genesis" and old.verify().ok
    with Ledger(url, create=True) as opened_by_init:  # what `rsp init` / watch / serve do
        recorded = opened_by_init.identity()
        assert recorded is not None and recorded.ledger_id == derived.ledger_id  # pinned gates see no change
        assert recorded.origin == "derived_from_genesis"


def test_an_older_empty_ledger_has_no_identity_until_rsp_init(new_ledger_url: Callable[[str], str], home: Path) -> None:
    url = new_ledger_url("empty")
    Ledger(url, create=True).close()
    drop_identity(url)
    with Ledger(url, create=False) as store:
        assert store.identity() is None
    out = runner.invoke(app, ["init", "--ledger", url, "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["created"] is False and data["ledger_id"].startswith("ledger-")
    with Ledger(url, create=False) as store:
        assert store.ledger_id == data["ledger_id"]


# -- the gate: no ledger, or another one, closes it -----------------------------------------------------------------


def test_the_gate_pinned_to_a_ledger_refuses_any_other(new_ledger_url: Callable[[str], str], home: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.settings import get_settings

    mine, other = new_ledger_url("mine"), new_ledger_url("other")
    with Ledger(mine, create=True) as a, Ledger(other, create=True) as b:
        pin, wrong = a.ledger_id, b.ledger_id
    assert pin is not None and wrong is not None
    ScalingGate(mine, ledger_id=pin).check("run-a")
    with pytest.raises(GateUnavailable, match=f"is {wrong}, not {pin}"):
        ScalingGate(other, ledger_id=pin).check("run-a")
    monkeypatch.setenv("RSP_LEDGER_ID", pin)  # the deployment's configuration
    get_settings.cache_clear()
    ScalingGate(mine).check("run-a")
    with pytest.raises(GateUnavailable, match="RSP_LEDGER_ID"):
        ScalingGate(other).check("run-a")
    with pytest.raises(GateUnavailable):
        ScalingGate(ledger=Ledger(other, create=False)).is_open("run-a")


def test_a_trainer_started_elsewhere_never_trains_against_an_empty_new_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reproduction of finding 8: the halt is in the lab's ledger; the trainer is started from
    another folder with RSP_HOME unset and finds no ledger at the default location."""
    from flows.train_demo import train_demo
    from tasks.settings import get_settings

    lab = tmp_path / "lab"
    with Ledger(url_of(lab / "ledger.db"), create=True) as ledger:
        open_manual_halt("incident", ["training"], ledger=ledger)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for var in ("RSP_HOME", "RSP_LEDGER_URL", "RSP_LEDGER_ID", "RSP_POLICY", "RSP_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    get_settings.cache_clear()
    try:
        with pytest.raises(GateUnavailable, match="no ledger at"):
            train_demo.fn(run_id="run-x", steps=3, step_seconds=0, checkpoint_store=str(elsewhere / "ck"))
        assert not (elsewhere / ".rsp" / "ledger.db").exists(), "the gate created no ledger"
        assert not (elsewhere / "ck").exists() or not any((elsewhere / "ck").rglob("checkpoint.json"))
        # Pointed at the lab's ledger, it meets the halt.
        with pytest.raises(ScalingHalted, match="incident"):
            train_demo.fn(run_id="run-x", steps=3, step_seconds=0, checkpoint_store=str(elsewhere / "ck"),
                          ledger_url=url_of(lab / "ledger.db"))
    finally:
        get_settings.cache_clear()


# -- only `rsp init` (and the first watch / serve) creates a ledger ------------------------------------------------------


READ_COMMANDS = [
    ["status", "--api-url", "http://127.0.0.1:9/api"],
    ["halt", "list"],
    ["halt", "open", "--reason", "x", "--no-apply"],
    ["halt", "reconcile"],
    ["audit", "verify"],
    ["audit", "export", "--out", "x.jsonl"],
    ["report", "run-a"],
    ["approve", "halt-x", "--as", "alice", "-j", "ok"],
    ["reject", "halt-x", "--as", "alice", "-j", "no"],
    ["resume", "halt-x"],
    ["notify", "retry"],
    ["evaluate", "/nowhere/run-a/step-000000001"],
]


@pytest.mark.parametrize("argv", READ_COMMANDS, ids=[" ".join(a[:2]) for a in READ_COMMANDS])
def test_other_commands_say_which_ledger_they_looked_for_and_create_none(argv: list[str], home: Path) -> None:
    out = runner.invoke(app, argv)
    assert out.exit_code == 2, out.output
    assert str(home / "ledger.db") in out.stderr and "rsp init" in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (home / "ledger.db").exists()


def test_gate_commands_fail_closed_without_a_ledger(home: Path) -> None:
    check = runner.invoke(app, ["gate", "check", "run-a"])
    assert check.exit_code == 2 and "no ledger at" in check.stderr
    report = runner.invoke(app, ["gate", "checkpoint", "run-a", "3"])
    assert report.exit_code == 2
    assert not (home / "ledger.db").exists()


def test_rsp_init_creates_the_ledger_prints_its_identity_and_is_idempotent(home: Path) -> None:
    first = runner.invoke(app, ["init"])
    assert first.exit_code == 0, first.output
    ledger_id = re.search(r"RSP_LEDGER_ID=(ledger-[0-9a-f]{32})", first.stdout)
    assert ledger_id and "created ledger" in first.stdout
    again = runner.invoke(app, ["init", "--json"])
    data = json.loads(again.stdout)
    assert again.exit_code == 0 and data["created"] is False and data["ledger_id"] == ledger_id.group(1)
    assert runner.invoke(app, ["halt", "list"]).exit_code == 0
    assert runner.invoke(app, ["audit", "verify"]).exit_code == 0


def test_rsp_status_shows_each_runs_evaluation_lag(home: Path) -> None:
    assert runner.invoke(app, ["init"]).exit_code == 0
    with Ledger(url_of(home / "ledger.db"), create=False) as ledger:
        gate = ScalingGate(ledger=ledger)
        gate.checkpoint_written("run-a", 1)
        ledger.append("determination.recorded", "file:///ck/run-a/step-000000001/",
                      {"checkpoint": {"run_id": "run-a", "step": 1}})
        gate.checkpoint_written("run-a", 2)
        gate.checkpoint_written("run-b", 1)
        gate.checkpoint_written("run-b", 2)
        with pytest.raises(ScalingHalted):
            gate.check("run-b")
    out = runner.invoke(app, ["status", "--api-url", "http://127.0.0.1:9/api"])
    assert "at most 2 checkpoint(s) without a determination, none older than 6h" in out.stdout, out.stdout
    assert re.search(r"run-a +newest checkpoint step 2, determined through step 1: 1 without a determination",
                     out.stdout), out.stdout
    assert re.search(r"run-b .*2 without a determination.*OVERDUE.*halted by halt-", out.stdout), out.stdout
    data = json.loads(runner.invoke(app, ["status", "--json", "--api-url", "http://127.0.0.1:9/api"]).stdout)
    runs = {r["run_id"]: r for r in data["evaluation_lag"]["runs"]}
    assert runs["run-a"]["unevaluated"] == 1 and not runs["run-a"]["overdue"]
    assert runs["run-b"]["overdue"] and runs["run-b"]["overdue_halt"]
    assert data["ledger_id"].startswith("ledger-")
