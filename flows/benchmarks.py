"""The benchmark fan-out: one Prefect task per benchmark on a configurable task runner."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from policy.determination import RunFailure
from policy.results import SampleTable
from policy.schema import Benchmark
from tasks.benchmarks.base import CheckpointInfo, RunnerTimeout
from tasks.evaluation import run_benchmark_task


def make_task_runner(spec: str) -> Any:
    """"threads" (default), "threads:N", "dask" (a local cluster per run) or "dask://host:port"
    (a long-lived cluster: the way to fan out across machines)."""
    if spec == "threads" or spec.startswith("threads:"):
        from prefect.task_runners import ThreadPoolTaskRunner

        workers = int(spec.split(":", 1)[1]) if ":" in spec else None
        return ThreadPoolTaskRunner(max_workers=workers)
    if spec == "dask" or spec.startswith(("dask://", "tcp://")):
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError as exc:
            raise ValueError("task runner 'dask' needs prefect-dask: pip install 'rsp-gate[dask]'") from exc
        if spec == "dask":
            return DaskTaskRunner(cluster_kwargs={"n_workers": 2, "threads_per_worker": 1, "processes": False})
        return DaskTaskRunner(address=spec.replace("dask://", "tcp://", 1))
    raise ValueError(f"unknown task runner {spec!r}: use threads, threads:N, dask or dask://host:port")


@flow(name="run-benchmarks", log_prints=True)
def run_benchmarks(
    info: CheckpointInfo, benchmarks: list[Benchmark], run_dir: str, force: bool = False, limit: int | None = None
) -> tuple[SampleTable, list[RunFailure]]:
    """Run each benchmark as its own task and collect the rows; a benchmark that crashes or runs
    past its timeout is a `RunFailure` (its thresholds become undetermined), never missing rows.

    Args:
        info: the checkpoint under evaluation, as the runners need it.
        benchmarks: the policy's benchmarks to run.
        run_dir: the checkpoint's run folder; each benchmark logs under logs/<benchmark id>.
        force: recompute every benchmark instead of reusing cached rows.
        limit: run at most this many samples per benchmark (smoke tests).
    """
    logger = get_run_logger()
    futures = []
    started = time.monotonic()
    # force recomputes every benchmark; otherwise the cache (same checkpoint, version, runner) answers.
    task = run_benchmark_task.with_options(refresh_cache=True) if force else run_benchmark_task
    for b in benchmarks:
        futures.append((b, task.submit(info, b, str(Path(run_dir) / "logs" / b.id), limit)))
    table = SampleTable.empty()
    failures: list[RunFailure] = []
    for i, (b, fut) in enumerate(futures, start=1):
        try:
            # The deadline is enforced here, not by Prefect: a worker thread cannot be interrupted, but the
            # determination need not wait for it. The command runner also kills its process at timeout_s.
            fut.wait(timeout=max(0.0, started + b.timeout_s - time.monotonic()))
            if fut.state.is_pending() or fut.state.is_running():
                raise TimeoutError(f"still running after {b.timeout_s:g} s")
            rows = fut.result()
        except (TimeoutError, RunnerTimeout) as exc:
            failures.append(RunFailure(benchmark=b.id, kind="timed_out",
                                       message=f"no result within {b.timeout_s:g} s: {exc or 'timeout'}"))
            logger.warning("[%d/%d] %s timed out", i, len(futures), b.id)
            continue
        except Exception as exc:  # noqa: BLE001 - any failure leaves the benchmark undetermined, never absent
            failures.append(RunFailure(benchmark=b.id, kind="crashed", message=f"{type(exc).__name__}: {exc}"))
            logger.warning("[%d/%d] %s failed: %s", i, len(futures), b.id, exc)
            continue
        table = table.concat(rows)
        logger.info("[%d/%d] %s: %d rows", i, len(futures), b.id, len(rows))
    return table, failures
