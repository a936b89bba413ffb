"""Benchmarks in parallel: a comprehensive assessment's 12 proxy benchmarks (as the bundled
frameworks declare them; simulated checkpoint, Inspect) fanned out serially (one thread), in local processes, and on a
long-lived Dask cluster reached by address (a scheduler and 2 workers started here, once, not
counted). Each row is the wall time of the `run-benchmarks` flow (force: no cache) and its ratio
to the slowest single benchmark run alone in this process (the floor any fan-out can reach).

Run: python bench/bench_parallel.py [--workers 4] [--limit 0]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def start_dask(tmp: Path, workers: int) -> tuple[str, list[subprocess.Popen[bytes]]]:
    import socket

    from distributed import Client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    dask = str(Path(sys.executable).with_name("dask"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    for i in range(workers):
        procs.append(subprocess.Popen([dask, "worker", address, "--nthreads", "1", "--no-dashboard",
                                       "--local-directory", str(tmp / f"w{i}")], cwd=ROOT, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with Client(address, timeout=5) as c:
                if len(c.scheduler_info(n_workers=-1)["workers"]) >= workers:
                    return address, procs
        except OSError:
            pass
        time.sleep(1)
    raise SystemExit(f"dask workers did not connect to {address}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workers", type=int, default=4, help="processes and Dask workers")
    ap.add_argument("--limit", type=int, default=0, help="samples per benchmark (0: all)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-parallel-"))
    os.environ.update(RSP_HOME=str(tmp / "home"), DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    from prefect import flow
    from prefect.testing.utilities import prefect_test_harness

    from flows.benchmarks import run_benchmarks
    from tasks.benchmarks.base import CheckpointInfo, run_benchmark
    from tasks.benchmarks.datasets.generate import SPECS
    from tasks.inputs import read_policy

    # The 12 proxy suites shipped under tasks/benchmarks/datasets, as the bundled frameworks declare them.
    found = {b.id: b for f in ("anthropic-rsp", "openai-preparedness", "gdm-fsf")
             for b in read_policy(f).benchmarks if b.id in SPECS}
    benches = [found[i] for i in sorted(found)]
    info = CheckpointInfo("bench-run", 1, 1e25, "sha256:" + "0" * 64, {"kind": "simulated"})
    limit = args.limit or None
    single: dict[str, float] = {}
    for b in benches:
        run_benchmark(info, b, log_dir=tmp / "warm" / b.id, limit=limit)  # imports and dataset caches
        t = time.perf_counter()
        run_benchmark(info, b, log_dir=tmp / "alone" / b.id, limit=limit)
        single[b.id] = time.perf_counter() - t
    slowest = max(single.values())
    rows = []
    procs: list[subprocess.Popen[bytes]] = []
    try:
        address, procs = start_dask(tmp, args.workers)
        with prefect_test_harness(server_startup_timeout=120):
            for name, spec in (("serial (threads:1)", "threads:1"), (f"processes:{args.workers}",
                                                                      f"processes:{args.workers}"),
                               (f"dask by address ({args.workers} workers)", address)):
                fan_out = flow(name="bench-parallel")(run_benchmarks)  # as inside the evaluate flow run
                t = time.perf_counter()
                table, failures = fan_out(info, benches, str(tmp / "runs" / spec.replace("/", "_")), True, limit, spec)
                wall = time.perf_counter() - t
                if failures:
                    raise SystemExit(f"{name}: {failures}")
                rows.append((name, wall, len(table)))
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)
    print(f"12 proxy benchmarks, {os.cpu_count()} CPU cores; slowest single benchmark alone: {slowest:.2f} s "
          f"({max(single, key=single.__getitem__)}); sum of all alone: {sum(single.values()):.2f} s\n")
    print(f"| {'fan-out':<32} | {'wall s':>7} | {'rows':>5} | {'x slowest single':>16} |")
    print(f"|{'-' * 34}|{'-' * 9}|{'-' * 7}|{'-' * 18}|")
    for name, wall, n in rows:
        print(f"| {name:<32} | {wall:7.2f} | {n:5d} | {wall / slowest:16.2f} |")


if __name__ == "__main__":
    main()
