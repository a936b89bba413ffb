"""Benchmark runners: (checkpoint, benchmark) -> sample rows.

    from tasks.benchmarks import CheckpointInfo, run_benchmark
    table = run_benchmark(checkpoint, policy.benchmark("wmdp-bio-proxy"), log_dir=run_dir / "logs")

Runner types: `inspect` (Inspect AI task; the default), `inspect-log` and `lm-eval`
(importers), `command` (any program printing JSON Lines rows). Importing this
package does not import Inspect, torch or Prefect.
"""

from tasks.benchmarks.base import (
    RUNNERS,
    BenchmarkRunner,
    CheckpointInfo,
    RunnerError,
    check_rows,
    get_runner,
    register_runner,
    run_benchmark,
    runner_config,
    runner_types,
)

__all__ = [
    "RUNNERS",
    "BenchmarkRunner",
    "CheckpointInfo",
    "RunnerError",
    "check_rows",
    "get_runner",
    "register_runner",
    "run_benchmark",
    "runner_config",
    "runner_types",
]
