"""The evaluation lag bound (the gate's dead-man's switch): the policy says how far a scaling run may
get ahead of its last determination, and the gate a trainer checks before every step closes past
it, with no watcher, evaluator or Prefect server needed. The halt it opens is recorded, applied and
notified like any other, and lifts by itself, recorded as such, when the determinations catch up.

Before this, a trainer whose watcher had died (or whose evaluations all failed) trained on with its
gate open: nothing bounded how far it could get ahead of its last determination."""

from __future__ import annotations

import copy
import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from policy.halts import overdue_run
from policy.identity import policy_sha256
from policy.lag import LagBound, WrittenCheckpoint, assess_lag
from policy.loading import parse_policy
from policy.schema import DEFAULT_MAX_EVALUATION_LAG, DEFAULT_MAX_UNEVALUATED_CHECKPOINTS
from tasks.enforcement import open_manual_halt
from tasks.gate import GateUnavailable, ScalingGate, ScalingHalted
from tasks.ledger import Ledger
from tests.plugins.policies import policy_with

ROOT = Path(__file__).resolve().parent.parent
ANTHROPIC = ROOT / "policy" / "frameworks" / "anthropic-rsp.yaml"
T0 = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self, at: dt.datetime = T0) -> None:
        self.at = at

    def __call__(self) -> dt.datetime:
        return self.at

    def advance(self, **delta: float) -> None:
        self.at += dt.timedelta(**delta)


def policy_file(folder: Path, **cadence: Any) -> Path:
    data = yaml.safe_load(ANTHROPIC.read_text())
    for key in ("max_unevaluated_checkpoints", "max_evaluation_lag"):
        data["cadence"].pop(key, None)
    data["cadence"].update(cadence)
    path = folder / f"policy-{len(list(folder.glob('policy-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    from tasks.settings import get_settings

    home = tmp_path / "home"
    monkeypatch.setenv("RSP_HOME", str(home))
    monkeypatch.setenv("RSP_NOTIFY", "file")
    for var in ("RSP_LEDGER_URL", "RSP_LEDGER_ID", "RSP_POLICY", "RSP_CONFIG", "PREFECT_API_URL"):
        monkeypatch.delenv(var, raising=False)
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(home: Path, clock: Clock) -> Ledger:
    return Ledger(f"sqlite:///{home / 'ledger.db'}", create=True, clock=clock)


def determine(ledger: Ledger, run_id: str, step: int) -> None:
    uri = f"file:///ck/{run_id}/step-{step:09d}/"
    ledger.append("determination.recorded", uri, {"checkpoint": {"run_id": run_id, "step": step, "uri": uri},
                                                  "decision": "proceed", "assessment": "preliminary"})


def kinds(ledger: Ledger, subject: str) -> list[str]:
    return [e.kind for e in ledger.events(subject=subject)]


# -- the rule (pure) ---------------------------------------------------------------------------------------------


BOUND = LagBound(max_unevaluated_checkpoints=2, max_evaluation_lag=dt.timedelta(hours=6), stated=True)


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def test_a_run_holding_the_allowed_number_of_unevaluated_checkpoints_may_not_start_another_step() -> None:
    one = assess_lag("r", BOUND, [WrittenCheckpoint(1, at(0))], None, at(1))
    assert (one.unevaluated, one.overdue) == (1, False)
    two = assess_lag("r", BOUND, [WrittenCheckpoint(1, at(0)), WrittenCheckpoint(2, at(1))], None, at(2))
    assert (two.unevaluated, two.overdue) == (2, True)
    assert "at most 2" in two.reasons[0]


def test_a_later_determination_covers_earlier_checkpoints_and_caught_up_means_none_left() -> None:
    written = [WrittenCheckpoint(s, at(s)) for s in (1, 2, 3)]
    v = assess_lag("r", BOUND, written, 2, at(10))
    assert (v.unevaluated, v.oldest_unevaluated_step, v.overdue, v.caught_up) == (1, 3, False, False)
    done = assess_lag("r", BOUND, written, 3, at(10))
    assert done.caught_up and not done.overdue and done.lag == dt.timedelta(0)


def test_the_oldest_unevaluated_checkpoint_past_the_time_bound_is_overdue() -> None:
    v = assess_lag("r", BOUND, [WrittenCheckpoint(7, at(0))], 6, at(6 * 60 + 1))
    assert v.overdue and v.unevaluated == 1 and "step 7" in v.reasons[0] and "6h1m" in v.reasons[0]
    assert not assess_lag("r", BOUND, [WrittenCheckpoint(7, at(0))], 6, at(6 * 60)).overdue


def test_lag_fields_parse_as_durations_and_default_when_omitted(tiny_data: dict[str, Any]) -> None:
    silent = policy_with(tiny_data)
    assert silent.cadence.lag_bound() == (DEFAULT_MAX_UNEVALUATED_CHECKPOINTS, DEFAULT_MAX_EVALUATION_LAG)
    assert not LagBound.of(silent).stated
    # Omitted fields stay out of the canonical form: the policy keeps the sha256 it had before they existed.
    assert "max_evaluation_lag" not in silent.model_dump(mode="json")["cadence"]
    stated = copy.deepcopy(tiny_data)
    stated["cadence"].update(max_unevaluated_checkpoints=5, max_evaluation_lag="1d12h")
    p = policy_with(stated)
    assert p.cadence.lag_bound() == (5, dt.timedelta(days=1, hours=12))
    assert p.model_dump(mode="json")["cadence"]["max_evaluation_lag"] == "P1DT12H"
    assert policy_sha256(p) != policy_sha256(silent)
    same = copy.deepcopy(stated)
    same["cadence"]["max_evaluation_lag"] = "36h"  # meaning, not spelling, is hashed
    assert policy_sha256(policy_with(same)) == policy_sha256(p)


@pytest.mark.parametrize(("value", "why"), [("6", "not a duration"), (6, "text with a unit"),
                                            ("0s", "between 1s and 366d"), ("400d", "between 1s and 366d")])
def test_a_lag_that_is_not_a_clear_duration_is_refused(tiny_data: dict[str, Any], value: Any, why: str) -> None:
    from policy.errors import PolicyError

    d = copy.deepcopy(tiny_data)
    d["cadence"]["max_evaluation_lag"] = value
    with pytest.raises(PolicyError) as info:
        policy_with(d)
    assert any(p.startswith("cadence.max_evaluation_lag") and why in p for p in info.value.problems)


def test_the_bundled_frameworks_state_their_bound() -> None:
    for name in ("anthropic-rsp", "openai-preparedness", "gdm-fsf"):
        path = ROOT / "policy" / "frameworks" / f"{name}.yaml"
        bound = LagBound.of(parse_policy(path.read_text(), str(path)))
        assert bound.stated and (bound.max_unevaluated_checkpoints, bound.max_evaluation_lag) == (
            2, dt.timedelta(hours=6))


# -- the gate closes past the bound, with its own halt -------------------------------------------------------------


def test_the_gate_closes_with_an_evaluation_overdue_halt_recorded_and_notified(
    ledger: Ledger, home: Path, clock: Clock
) -> None:
    gate = ScalingGate(ledger=ledger, now=clock)
    gate.check("run-a")
    gate.checkpoint_written("run-a", 1, uri="file:///ck/run-a/step-000000001/")
    gate.check("run-a")
    gate.checkpoint_written("run-a", 2)
    with pytest.raises(ScalingHalted) as caught:
        gate.check("run-a")
    assert "evaluation overdue for run run-a" in str(caught.value) and "no approval needed" in str(caught.value)
    (halt,) = ledger.halts("open")
    assert caught.value.halt_id == halt.halt_id and overdue_run(halt.payload) == "run-a"
    assert halt.payload["what"] == {"activities": ["training"], "runs": ["run-a"]}
    assert halt.payload["why"]["overdue"]["unevaluated"] == 2
    # Recorded, applied (or, with no Prefect server reachable, recorded as not applied: whether one is
    # depends on which tests ran before in this session), notified, like any halt.
    opened, applied = kinds(ledger, halt.halt_id)[:2]
    assert opened == "halt.opened" and applied in ("halt.applied", "halt.apply_failed")
    assert "notification.sent" in kinds(ledger, halt.halt_id)
    sent = [json.loads(line) for line in (home / "notifications.jsonl").read_text().splitlines()]
    assert any(n["halt_id"] == halt.halt_id and n["event"] == "halt.opened" for n in sent)
    # Idempotent: checking again finds the open halt and opens nothing more.
    assert not gate.is_open("run-a")
    assert len(ledger.events(kind="halt.opened")) == 1
    # Only that run's training: another run, and deployment of this one, are not its business.
    assert gate.is_open("run-b") and gate.is_open("run-a", "deployment")


def test_the_halt_lifts_by_itself_when_the_determinations_catch_up(ledger: Ledger, clock: Clock) -> None:
    gate = ScalingGate(ledger=ledger, now=clock)
    for step in (1, 2):
        gate.checkpoint_written("run-a", step)
    assert not gate.is_open("run-a")
    (halt,) = ledger.halts("open")
    determine(ledger, "run-a", 1)
    assert not gate.is_open("run-a"), "below the bound is not caught up: no flapping"
    determine(ledger, "run-a", 2)
    gate.check("run-a")
    lifted = ledger.halt(halt.halt_id)
    assert lifted is not None and not lifted.is_open
    events = ledger.events(subject=halt.halt_id)
    caught_up, lift = [e for e in events if e.kind in ("evaluation.caught_up", "halt.lifted")]
    assert lift.seq == caught_up.seq + 1, "the reason and the lift are written together"
    assert caught_up.payload["run_id"] == "run-a" and caught_up.payload["last_determined_step"] == 2
    assert lift.payload["automatic"] is True and lift.payload["approvers"] == []
    assert "evaluation caught up" in lift.payload["trigger"]
    assert "vote.recorded" not in kinds(ledger, halt.halt_id)
    # Overdue again later: a new halt (the cause's next epoch), not the lifted one reopened.
    for step in (3, 4):
        gate.checkpoint_written("run-a", step)
    with pytest.raises(ScalingHalted) as again:
        gate.check("run-a")
    assert again.value.halt_id != halt.halt_id


def test_the_time_bound_closes_the_gate(home: Path, clock: Clock) -> None:
    ledger = Ledger(f"sqlite:///{home / 'ledger.db'}", create=True, clock=clock)
    gate = ScalingGate(ledger=ledger, now=clock,
                       policy=str(policy_file(home.parent, max_unevaluated_checkpoints=100, max_evaluation_lag="1h")))
    gate.checkpoint_written("run-t", 1)
    clock.advance(minutes=59)
    gate.check("run-t")
    clock.advance(minutes=2)
    with pytest.raises(ScalingHalted, match=r"written 1h1m ago, the policy allows 1h"):
        gate.check("run-t")


def test_only_an_overdue_halt_lifts_without_approvals(ledger: Ledger) -> None:
    from tasks.enforcement.overdue import RunLagTracker, lift_caught_up

    manual, _ = open_manual_halt("incident", ["training"], runs=["run-a"], ledger=ledger)
    tracker = RunLagTracker("run-a")
    tracker.refresh(ledger)
    assert tracker.caught_up
    with pytest.raises(ValueError, match="only that cause lifts without approvals"):
        lift_caught_up(ledger, manual, tracker, checked_by="test")
    gate = ScalingGate(ledger=ledger)
    assert not gate.is_open("run-a") and ledger.halt(manual.halt_id).is_open  # type: ignore[union-attr]


def test_a_reconcile_pass_lifts_it_when_the_trainer_is_gone(ledger: Ledger, clock: Clock, tmp_path: Path) -> None:
    from tasks.enforcement import reconcile

    gate = ScalingGate(ledger=ledger, now=clock)
    for step in (1, 2):
        gate.checkpoint_written("run-a", step)
    assert not gate.is_open("run-a")
    (halt,) = ledger.halts("open")
    report = reconcile(ledger=ledger, state_path=tmp_path / "reconcile.json")
    assert report.lifted == [] and report.halts == [halt.halt_id]  # not caught up yet
    determine(ledger, "run-a", 2)
    report = reconcile(ledger=ledger, state_path=tmp_path / "reconcile.json")
    assert report.lifted == [], "step 2's determination does not cover step 1"
    determine(ledger, "run-a", 1)
    report = reconcile(ledger=ledger, state_path=tmp_path / "reconcile.json")
    assert report.lifted == [halt.halt_id] and report.halts == []
    assert ledger.events(kind="evaluation.caught_up")[0].payload["checked_by"] == "reconcile"


def test_an_unreadable_policy_closes_the_gate(ledger: Ledger, tmp_path: Path) -> None:
    gate = ScalingGate(ledger=ledger, policy=str(tmp_path / "missing-policy.yaml"))
    with pytest.raises(GateUnavailable, match="cannot read the policy that bounds evaluation lag"):
        gate.check("run-a")


# -- the demo trainer, called directly, with no watcher ----------------------------------------------------------


def test_a_demo_run_with_no_watcher_stops_at_its_gate_within_the_checkpoint_bound(
    ledger: Ledger, home: Path
) -> None:
    from flows.train_demo import train_demo

    store = home.parent / "checkpoints"
    with pytest.raises(ScalingHalted) as caught:
        train_demo.fn(run_id="run-demo", steps=20, step_seconds=0.01, checkpoint_store=str(store),
                      ledger_url=ledger.url.replace("***", ""))
    written = sorted(p.name for p in (store / "run-demo").iterdir())
    assert written == ["step-000000001", "step-000000002"]  # anthropic-rsp: at most 2 without a determination
    halt = ledger.halt(caught.value.halt_id or "")
    assert halt is not None and halt.payload["why"]["kind"] == "evaluation_overdue"
    assert [e.payload["step"] for e in ledger.events(kind="checkpoint.written")] == [1, 2]
    # A new run of the same training run meets the same halt at its start, and says so.
    with pytest.raises(ScalingHalted, match="Run blocked at start"):
        train_demo.fn(run_id="run-demo", steps=1, step_seconds=0, checkpoint_store=str(store),
                      ledger_url=ledger.url.replace("***", ""))
    assert len(list((store / "run-demo").iterdir())) == 2


def test_a_demo_run_with_no_watcher_stops_within_the_time_bound(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.train_demo import train_demo
    from tasks.settings import get_settings

    url = f"sqlite:///{home / 'ledger.db'}"
    Ledger(url, create=True).close()
    monkeypatch.setenv("RSP_POLICY", str(policy_file(home.parent, max_unevaluated_checkpoints=1000,
                                                     max_evaluation_lag="2s")))
    get_settings.cache_clear()
    store = home.parent / "checkpoints"
    started = time.monotonic()
    with pytest.raises(ScalingHalted, match="evaluation overdue"):
        train_demo.fn(run_id="run-slow", steps=200, step_seconds=0.25, checkpoint_store=str(store), ledger_url=url)
    elapsed = time.monotonic() - started
    with Ledger(url, create=False) as ledger:
        times = [dt.datetime.fromisoformat(e.ts) for e in ledger.events(kind="checkpoint.written")]
        (halt,) = ledger.halts("open")
    opened = dt.datetime.fromisoformat(halt.opened_at)
    # Closed at the first gate check past the bound: within one step of it, far short of 200 steps.
    assert dt.timedelta(seconds=2) < opened - times[0] < dt.timedelta(seconds=2 + 3 * 0.25 + 2), (times, opened)
    assert 3 <= len(times) < 40 and elapsed < 60


def test_a_determination_at_a_step_nobody_reported_does_not_cover_the_run(ledger: Ledger, clock: Clock) -> None:
    """A stray manifest at step 10**6 (anyone who can write to the bucket can place one) gets a
    determination; that must not make the trainer's own unevaluated checkpoints look evaluated."""
    gate = ScalingGate(ledger=ledger, now=clock)
    gate.checkpoint_written("run-a", 1)
    determine(ledger, "run-a", 1_000_000)
    gate.checkpoint_written("run-a", 2)
    with pytest.raises(ScalingHalted):
        gate.check("run-a")
    determine(ledger, "run-a", 1)
    assert not gate.is_open("run-a"), "step 2 is still without a determination of its own"
    determine(ledger, "run-a", 2)
    gate.check("run-a")


def test_only_the_steps_determined_count_when_the_set_is_given() -> None:
    written = [WrittenCheckpoint(s, at(s)) for s in (1, 2, 3)]
    v = assess_lag("r", BOUND, written, 10**6, at(10), determined={10**6, 2})
    assert (v.unevaluated, v.oldest_unevaluated_step, v.overdue) == (2, 1, True)
