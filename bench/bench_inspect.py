"""Inspect throughput with the simulated model (`rsp-sim`): how much of a benchmark run is Inspect itself.

    python bench/bench_inspect.py [--repeats 3]

Rows: 100 samples (wmdp-bio-proxy) and 500 samples (the five WMDP-schema proxies
in one dataset), with and without `log_samples` (and with samples logged but
Inspect's realtime sample buffer off), through `inspect_ai.eval`; then
the full runner path (`eval_set` + reading rows back from the log), which must log
samples. Every run writes to a fresh log dir; the median of the repeats is shown.
The first eval in a process (imports, registry) is a warm-up and not counted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WMDP_SCHEMA = ["wmdp-bio-proxy", "wmdp-chem-proxy", "virology-troubleshooting-proxy", "persuasion-proxy",
               "sandbagging-probe-proxy"]
MODEL_ARGS = {"run_id": "bench", "step": 1, "effective_compute": 1e25, "digest": "sha256:bench",
              "benchmark": "wmdp-bio-proxy", "chance": 0.25}


def task_of(n: int) -> Any:
    from inspect_ai import Task
    from inspect_ai.dataset import MemoryDataset

    from tasks.benchmarks.proxies import proxy_task

    if n == 100:
        return proxy_task("wmdp-bio-proxy")
    base = proxy_task("wmdp-bio-proxy")
    samples = [s for bid in WMDP_SCHEMA for s in proxy_task(bid).dataset]
    return Task(dataset=MemoryDataset(samples[:n]), solver=base.solver, scorer=base.scorer, name=f"wmdp-schema-{n}")


def time_eval(n: int, log_samples: bool, realtime: bool = True) -> tuple[float, int]:
    from inspect_ai import eval as inspect_eval

    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        [log] = inspect_eval(task_of(n), model="rsp-sim/bench", model_args=MODEL_ARGS, log_dir=d, display="none",
                             log_samples=log_samples, log_realtime=realtime, score_display=False)
        dt = time.perf_counter() - t0
        assert log.status == "success", log.error
        size = sum(p.stat().st_size for p in Path(d).rglob("*.eval"))
    return dt, size


def time_runner(n: int) -> tuple[float, int]:
    from policy.schema import Benchmark
    from tasks.benchmarks import CheckpointInfo, run_benchmark

    # n = 100 samples x attempts: one proxy with `attempts` epochs gives n rows.
    b = Benchmark(id="wmdp-bio-proxy", name="bench", version="1", domain="cbrn", description="bench",
                  attempts=n // 100, chance_score=0.25)
    ck = CheckpointInfo("bench", 1, 1e25, f"sha256:{time.time_ns()}", {"kind": "simulated"})
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        table = run_benchmark(ck, b, log_dir=Path(d))
        dt = time.perf_counter() - t0
        assert len(table) == n
        size = sum(p.stat().st_size for p in Path(d).rglob("*.eval"))
    return dt, size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    t0 = time.perf_counter()
    import inspect_ai  # noqa: F401

    import tasks.benchmarks.proxies  # noqa: F401
    import_s = time.perf_counter() - t0
    time_eval(100, False)  # warm-up

    rows: list[tuple[str, int, str, float, int]] = []
    for n in (100, 500):
        for label, log_samples, realtime in (("inspect eval", True, True), ("inspect eval, no realtime", True, False),
                                             ("inspect eval", False, True)):
            runs = [time_eval(n, log_samples, realtime) for _ in range(args.repeats)]
            rows.append((label, n, "yes" if log_samples else "no", statistics.median(r[0] for r in runs),
                         runs[0][1]))
    for n in (100, 500):
        runs = [time_runner(n) for _ in range(args.repeats)]
        rows.append(("runner: eval_set + rows", n, "yes", statistics.median(r[0] for r in runs), runs[0][1]))

    print(f"import inspect_ai + proxies: {import_s:.2f} s (once per process)\n")
    print("| path                      | samples | log_samples | wall s | samples/s | log size |")
    print("| ------------------------- | ------- | ----------- | ------ | --------- | -------- |")
    for path, n, ls, dt, size in rows:
        print(f"| {path:<25} | {n:>7} | {ls:<11} | {dt:6.2f} | {n / dt:9.0f} | {size / 1024:5.0f} KB |")
    print("\nrunner rows: 500 samples = wmdp-bio-proxy with attempts=5 (epochs); the runner turns Inspect's\n"
          "realtime sample buffer off for simulated checkpoints.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
