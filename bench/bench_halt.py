"""Halt latency and enforcement cost against a real Prefect server (started here, SQLite, 127.0.0.1).

Measures:
  * decision-to-halt: halt recorded in the ledger -> gate closed -> every scaling deployment
    paused (apply_halt, verified by reading each deployment back), for 1 and 50 deployments;
  * reconcile after a serve restart: serve process start -> deployments re-registered (which
    un-pauses them) -> start-up reconcile has paused them again; and that reconcile pass alone;
  * reconcile when nothing drifted (the cost every watch tick pays), 1 and 50 deployments;
  * gate.check per call against a trivial Python function call.

Run: python bench/bench_halt.py [--repeat R] [--many N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.plugins.prefect_server import PrefectServerProcess, ServeProcess


def median_ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1e3:.1f} ms ({min(samples) * 1e3:.0f}-{max(samples) * 1e3:.0f})"


def register(n: int, tag: str, prefix: str) -> list[str]:
    from flows.train_demo import scaling_deployment

    return [str(scaling_deployment(f"{prefix}-{i}", scaling_tag=tag).apply()) for i in range(n)]


def all_paused(ids: list[str]) -> bool:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return all(client.read_deployment(UUID(i)).paused for i in ids)


def resume_all(ids: list[str]) -> None:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        for i in ids:
            client.resume_deployment(UUID(i))


def decision_to_halt(n: int, repeat: int, workdir: Path) -> dict[str, list[float]]:
    import tasks.enforcement.enforce as enforce_module
    from tasks.enforcement import apply_halt, open_manual_halt
    from tasks.gate import ScalingGate
    from tasks.ledger import Ledger

    pauses: list[float] = []
    real_pause = enforce_module.pause_deployment

    def timed_pause(client: Any, deployment_id: str) -> None:
        # Per-request timing, to tell the request's own cost from waits on the server's database lock.
        t = time.perf_counter()
        real_pause(client, deployment_id)
        pauses.append(time.perf_counter() - t)

    enforce_module.pause_deployment = timed_pause  # type: ignore[assignment]

    tag = f"bench-{uuid.uuid4().hex[:8]}"
    ids = register(n, tag, f"lat{n}")
    ledger = Ledger(f"sqlite:///{workdir / f'lat-{n}.db'}")
    gate = ScalingGate(ledger=ledger)
    out: dict[str, list[float]] = {"record": [], "gate": [], "total": [], "pause": pauses}
    for r in range(repeat):
        resume_all(ids)
        # Let the server finish the work the resumes caused (events, scheduler): a decision does
        # not normally land right after 50 resumes, and on SQLite that backlog tripled the pause time.
        time.sleep(3)
        t0 = time.perf_counter()
        halt, _ = open_manual_halt(f"bench {r}", ["training"], ledger=ledger)
        t_record = time.perf_counter()
        assert not gate.is_open("any-run")
        t_gate = time.perf_counter()
        report = apply_halt(halt.halt_id, ledger=ledger, scaling_tag=tag)
        t_done = time.perf_counter()
        assert report.applied and len(report.paused) == n, report.summary()
        assert all_paused(ids)
        out["record"].append(t_record - t0)
        out["gate"].append(t_gate - t0)
        out["total"].append(t_done - t0)
        ledger.append("halt.lifted", halt.halt_id, {"halt_id": halt.halt_id})
    enforce_module.pause_deployment = real_pause  # type: ignore[assignment]
    return out


def reconcile_idle(n: int, repeat: int, workdir: Path) -> list[float]:
    from tasks.enforcement import apply_halt, open_manual_halt, reconcile
    from tasks.ledger import Ledger

    tag = f"bench-{uuid.uuid4().hex[:8]}"
    register(n, tag, f"idle{n}")
    ledger = Ledger(f"sqlite:///{workdir / f'idle-{n}.db'}")
    halt, _ = open_manual_halt("bench idle", ["training"], ledger=ledger)
    assert apply_halt(halt.halt_id, ledger=ledger, scaling_tag=tag).applied
    head = ledger.head()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        report = reconcile(ledger=ledger, scaling_tag=tag, state_path=workdir / "state.json")
        times.append(time.perf_counter() - t0)
        assert report.ok and not report.changed
    assert ledger.head() == head, "an idle reconcile wrote to the ledger"
    return times


def serve_restart(server: PrefectServerProcess, workdir: Path, repeat: int) -> dict[str, list[float]]:
    from tasks.enforcement import apply_halt, open_manual_halt
    from tasks.ledger import Ledger

    tag = f"bench-{uuid.uuid4().hex[:8]}"
    ledger_url = f"sqlite:///{workdir / 'serve.db'}"
    ledger = Ledger(ledger_url)
    name = f"restart-{uuid.uuid4().hex[:6]}"
    config = {"deployments": [{"name": name, "parameters": {"run_id": "bench", "ledger_url": ledger_url}}],
              "scaling_tag": tag, "ledger_url": ledger_url, "reconcile_every": 600.0, "automation": False}
    serve_dir = workdir / "serve"
    serve_dir.mkdir()
    proc = ServeProcess(server, serve_dir, config, {"RSP_HOME": str(workdir / "home"), "RSP_LEDGER_URL": ledger_url,
                                                     "RSP_SCALING_TAG": tag})
    proc.start().wait_ready(120)
    halt, _ = open_manual_halt("bench restart", ["training"], ledger=ledger)
    assert apply_halt(halt.halt_id, ledger=ledger, scaling_tag=tag).applied
    out: dict[str, list[float]] = {"start_to_repaused": [], "reconcile": []}
    try:
        for _ in range(repeat):
            proc.sigterm()
            t0 = time.perf_counter()
            proc.start()
            report = proc.wait_ready(120)
            elapsed = time.perf_counter() - t0
            assert report["changed"] and len(report["paused"]) == 1, report
            out["start_to_repaused"].append(elapsed)
            out["reconcile"].append(float(report["duration_s"]))
    finally:
        proc.sigterm(timeout=10)
        proc.kill()
    return out


def gate_cost(workdir: Path, calls: int) -> tuple[float, float]:
    from tasks.enforcement import open_manual_halt
    from tasks.gate import ScalingGate
    from tasks.ledger import Ledger

    ledger = Ledger(f"sqlite:///{workdir / 'gate.db'}")
    for i in range(100):
        ledger.append("checkpoint.seen", f"k{i}", {"i": i})
    open_manual_halt("another run", ["training"], runs=["other-run"], ledger=ledger)
    gate = ScalingGate(ledger=ledger)

    def trivial(run_id: str, activity: str = "training") -> None:
        return None

    def per_call(fn: Callable[..., Any]) -> float:
        fn("bench-run")
        t0 = time.perf_counter()
        for _ in range(calls):
            fn("bench-run")
        return (time.perf_counter() - t0) / calls

    return per_call(gate.check), per_call(trivial)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--many", type=int, default=50)
    parser.add_argument("--gate-calls", type=int, default=20000)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-halt-"))
    server = PrefectServerProcess(workdir / "prefect")
    t0 = time.perf_counter()
    server.start()
    startup = time.perf_counter() - t0
    os.environ.update({"PREFECT_API_URL": server.url, "DO_NOT_TRACK": "1"})
    from prefect.settings import PREFECT_API_URL, temporary_settings

    rows: list[tuple[str, str]] = [("prefect server start (fresh SQLite) until /api/health", f"{startup:.1f} s")]
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.url}):
            for n in (1, args.many):
                lat = decision_to_halt(n, args.repeat, workdir)
                rows.append((f"decision-to-halt, {n} deployment(s): ledger record", median_ms(lat["record"])))
                rows.append((f"decision-to-halt, {n} deployment(s): gate closed", median_ms(lat["gate"])))
                rows.append((f"decision-to-halt, {n} deployment(s): all paused (apply done)", median_ms(lat["total"])))
                rows.append((f"  one pause request, {n} deployment(s) (median, min-max)", median_ms(lat["pause"])))
            for n in (1, args.many):
                rows.append((f"reconcile, nothing drifted, {n} deployment(s)",
                             median_ms(reconcile_idle(n, args.repeat, workdir))))
            restart = serve_restart(server, workdir, max(2, args.repeat // 2))
            rows.append(("serve restart: process start -> deployment re-paused",
                         f"{statistics.median(restart['start_to_repaused']):.2f} s"))
            rows.append(("serve restart: the start-up reconcile pass itself", median_ms(restart["reconcile"])))
            gate, trivial = gate_cost(workdir, args.gate_calls)
            rows.append(("gate.check per call (open gate, 1 unrelated halt)", f"{gate * 1e6:.1f} us"))
            rows.append(("trivial Python function call", f"{trivial * 1e6:.3f} us"))
            rows.append(("gate.check / trivial call", f"{gate / trivial:,.0f}x"))
    finally:
        server.stop()

    width = max(len(r[0]) for r in rows)
    print(f"bench_halt: median of {args.repeat} runs; Prefect {server.url} (SQLite), 127.0.0.1")
    print(f"| {'measure'.ljust(width)} | value |")
    print(f"| {'-' * width} | ----- |")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value} |")


if __name__ == "__main__":
    main()
