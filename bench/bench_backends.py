"""SQLite against PostgreSQL, for the two databases the gate uses: Prefect's and the ledger's.

Measures, each on a Prefect server on SQLite and on one on PostgreSQL (both started here, 127.0.0.1;
PostgreSQL with fsync on, as in production):
  * decision-to-halt: halt recorded in the ledger -> every scaling deployment paused (apply_halt,
    verified by reading each back), for 1 and N deployments, pausing one at a time (the default)
    and with W concurrent pause requests (enforce(..., workers=W));
  * ledger append rate: one writer appending one event per transaction, and 4 threads sharing one
    Ledger, on a SQLite file and on a PostgreSQL database.

Run: python bench/bench_backends.py [--repeat R] [--many N] [--workers W] [--appends A]
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_halt import all_paused, register, resume_all
from tests.plugins.postgres import PostgresServer
from tests.plugins.prefect_server import PrefectServerProcess


def median_ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1e3:.0f} ms"


def decision_to_halt(n: int, repeat: int, ledger_url: str, workers: int) -> list[float]:
    """Seconds from the decision to every deployment paused (apply done), `repeat` times."""
    import tasks.enforcement.enforce as enforce_module
    from tasks.enforcement import apply_halt, open_manual_halt
    from tasks.ledger import Ledger

    tag = f"bench-{uuid.uuid4().hex[:8]}"
    ids = register(n, tag, f"b{n}w{workers}-{uuid.uuid4().hex[:4]}")
    ledger = Ledger(ledger_url)
    real = enforce_module.enforce
    # apply_halt imports enforce at call time: this is how a caller would pass workers through.
    enforce_module.enforce = functools.partial(real, workers=workers)  # type: ignore[assignment]
    totals = []
    try:
        for r in range(repeat):
            resume_all(ids)
            time.sleep(3)  # let the server settle after the resumes (see bench_halt.py)
            t0 = time.perf_counter()
            halt, _ = open_manual_halt(f"bench {r}", ["training"], ledger=ledger)
            report = apply_halt(halt.halt_id, ledger=ledger, scaling_tag=tag)
            totals.append(time.perf_counter() - t0)
            assert report.applied and len(report.paused) == n, report.summary()
            assert all_paused(ids)
            ledger.append("halt.lifted", halt.halt_id, {"halt_id": halt.halt_id})
    finally:
        enforce_module.enforce = real  # type: ignore[assignment]
        ledger.close()
    return totals


def append_rate(url: str, n: int, threads: int) -> float:
    """Events per second: `threads` threads sharing one Ledger, n events in all, one per transaction."""
    from tasks.ledger import Ledger

    with Ledger(url) as ledger:
        ledger.append("bench.warm", "w", {})
        per = n // threads

        def writer(name: str) -> None:
            for i in range(per):
                ledger.append("bench.append", name, {"i": i, "note": "a realistic small payload"})

        workers = [threading.Thread(target=writer, args=(f"t{k}",)) for k in range(threads)]
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - t0
        assert ledger.verify().ok
    return per * threads / elapsed


def prefect_rows(server: PrefectServerProcess, label: str, args: argparse.Namespace, ledger_url: str
                 ) -> list[tuple[str, str]]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    t0 = time.perf_counter()
    server.start(timeout=300)  # a fresh database migrates first; generous on a busy machine
    rows = [(f"{label}: prefect server start (fresh database) until /api/health", f"{time.perf_counter() - t0:.1f} s")]
    os.environ["PREFECT_API_URL"] = server.url
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.url}):
            for n in (1, args.many):
                for workers in (1, args.workers) if n > 1 else (1,):
                    times = decision_to_halt(n, args.repeat, ledger_url, workers)
                    how = "one at a time" if workers == 1 else f"{workers} concurrent"
                    rows.append((f"{label}: decision-to-halt, {n} deployment(s), pauses {how}", median_ms(times)))
    finally:
        server.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--many", type=int, default=50)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--appends", type=int, default=400)
    args = parser.parse_args()
    os.environ.setdefault("DO_NOT_TRACK", "1")

    workdir = Path(tempfile.mkdtemp(prefix="bench-backends-"))
    pg = PostgresServer(fsync=True).start()  # its own temp dir, which the postgres user can reach
    rows: list[tuple[str, str]] = []
    try:
        sqlite_ledger = f"sqlite:///{workdir / 'ledger.db'}"
        pg_ledger = pg.new_database("bench_ledger")
        for label, url in (("SQLite", f"sqlite:///{workdir / 'rate.db'}"), ("PostgreSQL", pg.new_database("rate"))):
            for threads in (1, 4):
                rate = append_rate(url, args.appends, threads)
                rows.append((f"ledger append rate, {label}, {threads} thread(s)", f"{rate:,.0f} events/s"))
        rows += prefect_rows(PrefectServerProcess(workdir / "prefect-sqlite"), "SQLite", args, sqlite_ledger)
        prefect_db = pg.new_database("prefect").rsplit("/", 1)[1]
        pg_prefect = PrefectServerProcess(workdir / "prefect-pg", db_url=pg.url(prefect_db, driver="asyncpg"))
        rows += prefect_rows(pg_prefect, "PostgreSQL", args, pg_ledger)
    finally:
        pg.remove()

    width = max(len(r[0]) for r in rows)
    print(f"bench_backends: median of {args.repeat} runs; Prefect and ledger on SQLite vs PostgreSQL, 127.0.0.1")
    print(f"| {'measure'.ljust(width)} | value |")
    print(f"| {'-' * width} | ----- |")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value} |")


if __name__ == "__main__":
    main()
