"""The audit ledger on both databases it supports, each a real one: a SQLite file and the session's
PostgreSQL server (tests/plugins/postgres.py). Chain, tamper detection, concurrent writers (threads
and processes), claims and leases under contention, queries, export.

Tampering is done the way an attacker or a careless operator would: with plain SQL straight on
the database, bypassing the ledger's API.
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
import json
import multiprocessing as mp
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, insert, text, update

from tasks.ledger import (
    GENESIS_HASH,
    ClaimConflict,
    Event,
    HaltConflict,
    InvalidEvent,
    Ledger,
    LedgerError,
    LedgerNotFound,
    event_hash,
    export_jsonl,
    read_jsonl,
    schema,
    verify_events,
    verify_jsonl,
)
from tasks.ledger.chain import canonical


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture
def db(backend_ledger_url: str) -> str:
    """The URL of a ledger not created yet: a SQLite file, or an empty PostgreSQL database."""
    return backend_ledger_url


@pytest.fixture
def ledger(db: str) -> Any:
    with Ledger(db) as store:
        yield store


def _fill(ledger: Ledger, n: int) -> list[Event]:
    return [ledger.append("test.event", f"subject-{i % 7}", {"i": i, "x": [i, str(i)]}) for i in range(n)]


def _sql(db: str, statement: str, **params: Any) -> list[Any]:
    """Run SQL straight on the database, outside the ledger's API (and its lock)."""
    engine = create_engine(db)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return list(result.all()) if result.returns_rows else []
    finally:
        engine.dispose()


# -- chain ------------------------------------------------------------------------------------


def test_chain_verifies_after_many_appends(ledger: Ledger) -> None:
    written = _fill(ledger, 250)
    assert [e.seq for e in written] == list(range(1, 251))
    assert written[0].prev_hash == GENESIS_HASH
    for before, after in itertools.pairwise(written):
        assert after.prev_hash == before.hash
    for e in written:
        assert e.hash == event_hash(e.seq, e.ts, e.kind, e.subject, e.payload, e.prev_hash)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", e.ts)
    report = ledger.verify()
    assert (report.ok, report.checked, report.first_bad_seq, report.reason) == (True, 250, None, None)
    assert (report.head_seq, report.head_hash) == ledger.head() == (250, written[-1].hash)
    assert ledger.events() == written


def test_sqlite_parent_folders_are_created(tmp_path: Path) -> None:
    db = tmp_path / "state" / "ledger.db"
    with Ledger(_url(db)) as store:
        store.append("test.event", "s", {})
    assert db.is_file()


def test_payload_is_stored_as_canonical_json(ledger: Ledger, db: str) -> None:
    event = ledger.append("test.event", "s", {"b": 1, "a": {"z": 0.5, "y": "é"}, "c": (1, 2)})
    stored = _sql(db, "SELECT payload FROM ledger_events WHERE seq = 1")[0][0]
    assert stored == '{"a":{"y":"é","z":0.5},"b":1,"c":[1,2]}'
    assert event.payload == {"a": {"y": "é", "z": 0.5}, "b": 1, "c": [1, 2]}  # what the hash covers


def test_empty_ledger_verifies(ledger: Ledger) -> None:
    assert ledger.verify().ok and ledger.verify().checked == 0
    assert ledger.head() == (0, GENESIS_HASH)


@pytest.mark.parametrize(
    ("kind", "subject", "payload", "fragment"),
    [
        ("Halt Opened", "s", {}, "kind"),
        ("halt", "s", {}, "kind"),
        ("test.event", 7, {}, "subject"),
        ("test.event", "s", [1, 2], "JSON object"),
        ("test.event", "s", {"x": float("nan")}, "not JSON"),
        ("test.event", "s", {"x": object()}, "not JSON"),
        ("halt.opened", "h1", {"cause_key": "c"}, "halt_id"),
        ("halt.opened", "other", {"halt_id": "h1"}, "subject"),
        ("determination.recorded", "k", {"checkpoint": {"run_id": 3}}, "run_id"),
    ],
)
def test_invalid_events_are_refused_and_nothing_is_written(
    ledger: Ledger, kind: Any, subject: Any, payload: Any, fragment: str
) -> None:
    ledger.append("test.event", "before", {})
    with pytest.raises(InvalidEvent, match=fragment):
        ledger.append(kind, subject, payload)
    assert ledger.head()[0] == 1 and ledger.verify().ok


def test_no_update_or_delete_api() -> None:
    public = {name for name in dir(Ledger) if not name.startswith("_")}
    assert not {n for n in public if re.search(r"update|delete|remove|edit|truncate", n)}


# -- tamper detection -------------------------------------------------------------------------


def test_edited_payload_names_that_event(ledger: Ledger, db: str) -> None:
    _fill(ledger, 60)
    _sql(db, "UPDATE ledger_events SET payload = :p WHERE seq = 37", p='{"i":999,"x":[36,"36"]}')
    report = ledger.verify()
    assert not report.ok
    assert report.first_bad_seq == 37
    assert "payload changed: hash mismatch" in (report.reason or "")
    assert report.head_seq == 36  # last good event


def test_edited_kind_is_caught_too(ledger: Ledger, db: str) -> None:
    _fill(ledger, 10)
    _sql(db, "UPDATE ledger_events SET kind = 'halt.lifted' WHERE seq = 4")
    assert ledger.verify().first_bad_seq == 4


def test_deleted_row_names_the_gap(ledger: Ledger, db: str) -> None:
    _fill(ledger, 60)
    _sql(db, "DELETE FROM ledger_events WHERE seq = 50")
    report = ledger.verify()
    assert (report.ok, report.first_bad_seq) == (False, 50)
    assert report.reason is not None and report.reason.startswith("sequence gap after 49")


def test_deleted_first_row(ledger: Ledger, db: str) -> None:
    _fill(ledger, 5)
    _sql(db, "DELETE FROM ledger_events WHERE seq = 1")
    report = ledger.verify()
    assert report.first_bad_seq == 1 and "sequence gap after 0" in (report.reason or "")


def test_deleted_tail_is_caught_by_the_head_record(ledger: Ledger, db: str) -> None:
    _fill(ledger, 20)
    _sql(db, "DELETE FROM ledger_events WHERE seq >= 18")
    report = ledger.verify()
    assert (report.ok, report.first_bad_seq) == (False, 18)
    assert "events deleted" in (report.reason or "")


def test_rewritten_hash_and_payload_break_the_next_link(ledger: Ledger, db: str) -> None:
    written = _fill(ledger, 40)
    old = written[19]
    forged = {"i": -1, "x": []}
    new_hash = event_hash(old.seq, old.ts, old.kind, old.subject, forged, old.prev_hash)
    _sql(db, "UPDATE ledger_events SET payload = :p, hash = :h WHERE seq = 20", p=canonical(forged), h=new_hash)
    report = ledger.verify()
    assert (report.ok, report.first_bad_seq) == (False, 21)
    assert report.reason == "prev_hash does not match event 20"


def test_verify_streams_100k_events(db: str) -> None:
    """100,000 events (written straight to the database: appending them one by one would dominate the
    test) verify in a fresh process whose peak memory grows far less than loading them all."""
    Ledger(db).close()
    prev, rows = GENESIS_HASH, []
    for seq in range(1, 100_001):
        ts = f"2026-01-01T00:00:00.{seq % 1_000_000:06d}+00:00"
        payload = {"i": seq, "note": "padding to make rows realistic " * 2}
        digest = event_hash(seq, ts, "test.bulk", f"s{seq % 100}", payload, prev)
        rows.append({"seq": seq, "ts": ts, "kind": "test.bulk", "subject": f"s{seq % 100}",
                     "payload": canonical(payload), "prev_hash": prev, "hash": digest})
        prev = digest
    engine = create_engine(db)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # COPY: a third of the time of multi-row INSERTs for 100k rows here.
            columns = list(rows[0])
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            with cursor.copy(f"COPY ledger_events ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row([row[c] for c in columns])
        else:
            conn.execute(insert(schema.events), rows)
        conn.execute(update(schema.head).where(schema.head.c.id == 1).values(seq=100_000, hash=prev))
    engine.dispose()
    del rows

    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        report, grown_mb = pool.apply(_verify_and_measure, (db,))
    assert report["ok"] and report["checked"] == 100_000 and report["head_hash"] == prev
    # Holding 100k Event objects costs ~90 MB here; streaming in batches stays within a few.
    assert grown_mb < 40, f"verify grew the process by {grown_mb:.0f} MB"


def _verify_and_measure(url: str) -> tuple[dict[str, Any], float]:
    import gc
    import resource

    with Ledger(url, create=False) as store:
        store.events(limit=10)  # warm imports, pool and caches before the baseline
        gc.collect()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        report = store.verify()
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return report.to_dict(), (after - before) / 1024


# -- several processes ------------------------------------------------------------------------


def _append_worker(url: str, name: str, n: int, start: Any) -> None:
    with Ledger(url) as store:
        start.wait(timeout=120)  # both opened: now race
        for i in range(n):
            store.append("test.concurrent", name, {"writer": name, "i": i})


def test_two_processes_append_concurrently(db: str) -> None:
    """Both processes also race to create the ledger (its tables, head and identity) on first use."""
    url = db
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(2)
    procs = [ctx.Process(target=_append_worker, args=(url, name, 200, start)) for name in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0
    with Ledger(url) as store:
        events = store.events()
        assert [e.seq for e in events] == list(range(1, 401))
        for name in ("a", "b"):
            assert [e.payload["i"] for e in events if e.subject == name] == list(range(200))
        # No assertion that the writers interleave: SQLite's busy handler is not fair, and one writer
        # may legitimately finish first. What must hold is the chain: gapless, linear, valid.
        report = store.verify()
        assert report.ok and report.checked == 400
        assert store.identity() is not None and store.identity().origin == "created"  # type: ignore[union-attr]


def test_threads_sharing_one_ledger_append_concurrently(ledger: Ledger) -> None:
    """Eight threads on one Ledger (one engine, its connection pool), each appending one at a time
    and in batches: every event lands once, seq gapless, each writer's own order kept."""
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            start.wait(timeout=60)
            for i in range(0, 40, 4):
                ledger.append("test.threaded", name, {"writer": name, "i": i})
                ledger.append_many([("test.threaded", name, {"writer": name, "i": i + k}) for k in (1, 2, 3)])
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f"t{n}",)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    events = ledger.events()
    assert [e.seq for e in events] == list(range(1, 321))
    for n in range(8):
        assert [e.payload["i"] for e in events if e.subject == f"t{n}"] == list(range(40))
    report = ledger.verify()
    assert report.ok and report.checked == 320 and (report.head_seq, report.head_hash) == ledger.head()


def _claim_worker(url: str, owner: str, keys: list[str], start: Any) -> list[str]:
    with Ledger(url) as store:
        start.wait(timeout=120)
        return [key for key in keys if store.claim(key, owner, lease_s=600)]


def test_claim_race_each_key_claimed_exactly_once(db: str) -> None:
    url = db
    Ledger(url).close()
    keys = [f"run/ckpt-{i:05d}" for i in range(400)]
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        start = manager.Barrier(2)
        with ctx.Pool(2) as pool:
            # Opposite orders make the two meet in the middle and contend on every key there.
            jobs = [
                pool.apply_async(_claim_worker, (url, "w1", keys, start)),
                pool.apply_async(_claim_worker, (url, "w2", keys[::-1], start)),
            ]
            won = [set(job.get(timeout=300)) for job in jobs]
    # No assertion that both won keys: SQLite's busy handler is not fair, and on a loaded machine one
    # worker may claim all 400 before the other's first claim commits. What must hold: never twice.
    assert won[0].isdisjoint(won[1])
    assert won[0] | won[1] == set(keys)
    with Ledger(url) as store:
        claimed = store.events(kind="evaluation.claimed")
        assert len(claimed) == 400 and len({e.subject for e in claimed}) == 400
        assert store.verify().ok


# -- claims -----------------------------------------------------------------------------------


def test_expired_lease_is_reclaimed_unexpired_is_not(ledger: Ledger) -> None:
    assert ledger.claim("ck/1", "a", lease_s=0.3)
    assert ledger.claim("ck/2", "a", lease_s=600)
    assert not ledger.claim("ck/1", "b", lease_s=60), "lease still live"
    assert ledger.claim("ck/1", "a", lease_s=0.3), "the holder asking again is not refused"
    time.sleep(0.45)
    assert [c.key for c in ledger.pending_expired()] == ["ck/1"]
    assert not ledger.claim("ck/2", "b", lease_s=60), "unexpired lease is not reclaimed"
    assert ledger.claim("ck/1", "b", lease_s=60)
    claim = ledger.get_claim("ck/1")
    assert claim is not None and (claim.owner, claim.state, claim.attempts) == ("b", "claimed", 2)
    assert ledger.pending_expired() == []
    with pytest.raises(ClaimConflict, match="'a' cannot mark 'ck/1' completed"):
        ledger.complete("ck/1", "a", {"decision": "proceed"})
    ledger.complete("ck/1", "b", {"decision": "proceed"})
    assert ledger.complete("ck/1", "b", {"decision": "proceed"}) is None, "a retried completion is a no-op"
    assert ledger.is_done("ck/1") and not ledger.is_done("ck/2") and not ledger.is_done("ck/none")
    assert not ledger.claim("ck/1", "c", lease_s=60), "completed keys are never claimed again"
    kinds = [(e.kind, e.payload["owner"]) for e in ledger.events(subject="ck/1")]
    assert kinds == [("evaluation.claimed", "a"), ("evaluation.claimed", "b"), ("evaluation.completed", "b")]
    done = ledger.get_claim("ck/1")
    assert done is not None and done.outcome == {"decision": "proceed"}


def test_threads_racing_for_an_expired_lease_one_wins(ledger: Ledger) -> None:
    """A worker died holding a key: eight workers see its lease expire and claim at once. Exactly one
    gets it, as attempt 2; the losers are refused without a write."""
    assert ledger.claim("ck/dead", "dead-worker", lease_s=0.2)
    time.sleep(0.3)
    start = threading.Barrier(8)
    won: dict[str, bool] = {}

    def worker(owner: str) -> None:
        start.wait(timeout=60)
        won[owner] = ledger.claim("ck/dead", owner, lease_s=600)

    threads = [threading.Thread(target=worker, args=(f"w{n}",)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    winners = [owner for owner, ok in won.items() if ok]
    assert len(won) == 8 and len(winners) == 1, won
    claim = ledger.get_claim("ck/dead")
    assert claim is not None and (claim.owner, claim.state, claim.attempts) == (winners[0], "claimed", 2)
    assert [e.payload["owner"] for e in ledger.events(kind="evaluation.claimed")] == ["dead-worker", winners[0]]
    assert ledger.verify().ok


def test_release_and_fail_make_a_key_claimable(ledger: Ledger) -> None:
    assert ledger.claim("k", "a", 600)
    ledger.release("k", "a", reason="shutting down")
    assert ledger.claim("k", "b", 600)
    ledger.fail("k", "b", error="benchmark runner crashed")
    assert ledger.get_claim("k").outcome == "benchmark runner crashed"  # type: ignore[union-attr]
    assert not ledger.claim("k", "c", 600, max_attempts=2), "out of attempts"
    assert ledger.claim("k", "c", 600, max_attempts=3)
    assert ledger.get_claim("k").attempts == 3  # type: ignore[union-attr]
    with pytest.raises(ClaimConflict):
        ledger.release("k", "a")
    with pytest.raises(ClaimConflict, match="not claimed"):
        ledger.complete("unknown", "a")
    with pytest.raises(InvalidEvent, match="lease"):
        ledger.claim("k2", "a", lease_s=0)


# -- halts ------------------------------------------------------------------------------------


def test_open_halts_after_open_and_lift(ledger: Ledger) -> None:
    ledger.append(
        "halt.opened", "h1", {"halt_id": "h1", "cause_key": "run/100:pol@sha", "halts": ["training"]}
    )
    ledger.append("halt.opened", "h2", {"halt_id": "h2", "cause_key": "run/200:pol@sha"})
    ledger.append("halt.applied", "h1", {"halt_id": "h1", "paused": ["demo-training"]})
    assert [h["halt_id"] for h in ledger.open_halts()] == ["h1", "h2"]
    assert ledger.open_halts()[0] == {"halt_id": "h1", "cause_key": "run/100:pol@sha", "halts": ["training"]}
    lift = ledger.append("halt.lifted", "h1", {"halt_id": "h1", "approvers": ["x", "y"]})
    assert [h["halt_id"] for h in ledger.open_halts()] == ["h2"]
    h1 = ledger.halt("h1")
    assert h1 is not None and h1.status == "lifted" and not h1.is_open
    assert (h1.lifted_seq, h1.lift_payload) == (lift.seq, {"halt_id": "h1", "approvers": ["x", "y"]})
    assert ledger.halt("nope") is None
    assert [h.halt_id for h in ledger.halts("lifted")] == ["h1"]
    with pytest.raises(HaltConflict, match="already lifted"):
        ledger.append("halt.lifted", "h1", {"halt_id": "h1"})
    with pytest.raises(HaltConflict, match="no such halt"):
        ledger.append("halt.lifted", "h9", {"halt_id": "h9"})
    with pytest.raises(HaltConflict, match="already opened"):
        ledger.append("halt.opened", "h2", {"halt_id": "h2"})
    assert ledger.verify().ok


def test_find_halt_by_cause_and_idempotent_open(ledger: Ledger) -> None:
    assert ledger.find_halt_by_cause("cause-1") is None
    halt, created = ledger.open_halt({"halt_id": "h1", "cause_key": "cause-1", "reason": "cbrn crossed"})
    assert created and halt.halt_id == "h1" and halt.is_open
    again, created = ledger.open_halt({"halt_id": "h1-retry", "cause_key": "cause-1"})
    assert not created and again.halt_id == "h1"
    with pytest.raises(HaltConflict, match="cause 'cause-1' already opened halt 'h1'"):
        ledger.append("halt.opened", "h3", {"halt_id": "h3", "cause_key": "cause-1"})
    found = ledger.find_halt_by_cause("cause-1")
    assert found is not None and found.halt_id == "h1" and found.payload["reason"] == "cbrn crossed"
    ledger.append("halt.lifted", "h1", {"halt_id": "h1"})
    lifted, created = ledger.open_halt({"halt_id": "h4", "cause_key": "cause-1"})
    assert not created and lifted.status == "lifted", "a lifted cause does not halt again"
    assert len(ledger.events(kind="halt.opened")) == 1


# -- determinations ---------------------------------------------------------------------------


def _determination(run: str, step: int, assessment: str, decision: str = "proceed") -> dict[str, Any]:
    return {
        "checkpoint": {"run_id": run, "step": step, "effective_compute": step * 1e20},
        "assessment": assessment,
        "decision": decision,
    }


def test_determination_queries(ledger: Ledger) -> None:
    record = [
        _determination("run-a", 1000, "comprehensive"),
        _determination("run-a", 2000, "preliminary"),
        _determination("run-b", 5000, "comprehensive"),
        # Finished after step 2000 was recorded (concurrent evaluation), but it is the furthest trained.
        _determination("run-a", 4000, "comprehensive", "halt"),
        _determination("run-a", 3000, "comprehensive"),
    ]
    for d in record:
        ledger.append("determination.recorded", f"{d['checkpoint']['run_id']}/{d['checkpoint']['step']}", d)
    assert ledger.last_comprehensive("run-a") == record[3]
    assert ledger.last_comprehensive("run-a", before_step=4000) == record[4]
    assert ledger.last_comprehensive("run-a", before_step=1000) is None
    assert ledger.last_comprehensive("run-c") is None
    event = ledger.last_comprehensive_event("run-b")
    assert event is not None and event.payload == record[2] and event.seq == 3
    assert ledger.previous_determination("run-a", before_step=3000) == record[1]
    assert ledger.previous_determination("run-a") == record[3]
    assert ledger.determinations("run-a") == [record[0], record[1], record[3], record[4]]
    assert ledger.determinations() == record


def test_projections_rebuild_from_events(ledger: Ledger, db: str) -> None:
    ledger.append("determination.recorded", "r/1", _determination("r", 1, "comprehensive"))
    ledger.open_halt({"halt_id": "h1", "cause_key": "c1"})
    ledger.open_halt({"halt_id": "h2", "cause_key": "c2"})
    ledger.append("halt.lifted", "h1", {"halt_id": "h1"})
    ledger.claim("k1", "a", 600)
    ledger.claim("k2", "a", 600)
    ledger.complete("k2", "a", {"ok": True})
    before = (
        ledger.open_halts(),
        ledger.halt("h1"),
        ledger.last_comprehensive("r"),
        ledger.get_claim("k1"),
        ledger.get_claim("k2"),
    )
    for table in ("ledger_halts", "ledger_determinations", "ledger_claims"):
        _sql(db, f"DELETE FROM {table}")
    assert ledger.open_halts() == [] and not ledger.is_done("k2")
    assert ledger.rebuild_projections() == 7
    after = (
        ledger.open_halts(),
        ledger.halt("h1"),
        ledger.last_comprehensive("r"),
        ledger.get_claim("k1"),
        ledger.get_claim("k2"),
    )
    assert after == before


# -- export -----------------------------------------------------------------------------------


def test_export_round_trip(ledger: Ledger) -> None:
    _fill(ledger, 30)
    ledger.open_halt({"halt_id": "h", "cause_key": "c", "note": "ünïcode"})
    buffer = io.StringIO()
    assert export_jsonl(ledger, buffer) == 31
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 31
    assert set(json.loads(lines[0])) == {"seq", "ts", "kind", "subject", "payload", "prev_hash", "hash"}
    assert list(read_jsonl(io.StringIO(buffer.getvalue()))) == ledger.events()
    report = verify_jsonl(io.StringIO(buffer.getvalue()))
    assert report.ok and report.checked == 31 and report.head_hash == ledger.head()[1]
    tampered = buffer.getvalue().replace('"i":12,', '"i":13,', 1)
    bad = verify_events(read_jsonl(io.StringIO(tampered)))
    assert (bad.ok, bad.first_bad_seq) == (False, 13)


# -- opening ----------------------------------------------------------------------------------


def test_default_url_comes_from_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.settings import get_settings

    monkeypatch.setenv("RSP_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RSP_LEDGER_URL", raising=False)
    get_settings.cache_clear()
    try:
        with Ledger() as store:
            store.append("test.event", "s", {})
        assert (tmp_path / "home" / "ledger.db").is_file()
    finally:
        get_settings.cache_clear()


def test_open_errors_name_the_input(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="no ledger at .*missing.db"):
        Ledger(_url(tmp_path / "missing.db"), create=False)
    assert not (tmp_path / "missing.db").exists(), "checking does not create"
    with pytest.raises(LedgerError, match="bad ledger URL 'not a url'"):
        Ledger("not a url")
    with pytest.raises(LedgerError, match="no driver .*nonsense"):
        Ledger("nonsense://host/db")
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(LedgerError, match="cannot open ledger"):
        Ledger(_url(tmp_path / "dir.db"))


def test_postgres_open_errors_name_the_database(postgres_server: Any) -> None:
    missing = postgres_server.url("no_such_database")
    with pytest.raises(LedgerError, match=r"cannot open ledger .*no_such_database.*does not exist"):
        Ledger(missing)
    empty = postgres_server.new_database("empty")
    with pytest.raises(LedgerNotFound, match="table ledger_events missing"):
        Ledger(empty, create=False)
    with pytest.raises(LedgerError, match=r"cannot open ledger postgresql\+psycopg://nobody:\*\*\*@"):
        Ledger(f"postgresql+psycopg://nobody:secret@127.0.0.1:{postgres_server.port}/postgres", create=False)


def test_clock_is_injectable_and_ts_is_utc(db: str) -> None:
    fixed = dt.datetime(2026, 5, 1, 12, 0, 0, 5, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    with Ledger(db, clock=lambda: fixed) as store:
        assert store.append("test.event", "s", {}).ts == "2026-05-01T10:00:00.000005+00:00"


