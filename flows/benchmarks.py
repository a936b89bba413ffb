"""The benchmark fan-out: one Prefect task per benchmark on a configurable task runner; and the
noise-injection sandbagging probe on checkpoints with real weights."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import get_run_logger

from policy.determination import Anomaly, RunFailure
from policy.results import SampleTable
from policy.sandbagging import NoiseProbeResult
from policy.schema import Benchmark, Policy
from tasks.benchmarks.base import CheckpointInfo, RunnerTimeout
from tasks.evaluation import run_benchmark_task
from tasks.ledger import Ledger
from tasks.ledger.events import NoiseProbeFlagged


def make_task_runner(spec: str) -> Any:
    """The task runner named by `spec`:

    - "auto": the Dask scheduler at RSP_DASK_ADDRESS when set, else "processes";
    - "processes" / "processes:N": a local process pool (one benchmark per process: Inspect runs one
      evaluation per process, so threads serialise them);
    - "threads" / "threads:N": a thread pool in this process;
    - "dask://host:port" or "tcp://host:port": a long-lived Dask cluster, connected to by address (the
      way to fan out across machines); "dask": a throwaway local cluster per flow run (2-4 s each).
    """
    if spec == "auto":
        from tasks.settings import get_settings

        address = get_settings().dask_address
        return make_task_runner(address if address else "processes")
    if spec == "threads" or spec.startswith("threads:"):
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=_workers(spec))
    if spec == "processes" or spec.startswith("processes:"):
        from prefect.task_runners import ProcessPoolTaskRunner

        return ProcessPoolTaskRunner(max_workers=_workers(spec))
    if spec == "dask" or spec.startswith(("dask://", "tcp://")):
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError as exc:
            raise ValueError("task runner 'dask' needs prefect-dask: pip install 'rsp-gate[dask]'") from exc
        if spec == "dask":
            return DaskTaskRunner(cluster_kwargs={"n_workers": 2, "threads_per_worker": 1, "processes": False})
        return DaskTaskRunner(address=spec.replace("dask://", "tcp://", 1))
    raise ValueError(f"unknown task runner {spec!r}: use auto, processes[:N], threads[:N], dask or dask://host:port")


def _workers(spec: str) -> int | None:
    if ":" not in spec:
        return None  # Prefect's default: the CPU count for processes
    n = spec.split(":", 1)[1]
    if not n.isdigit() or int(n) < 1:
        raise ValueError(f"task runner {spec!r}: the worker count must be a positive integer")
    return int(n)


def run_benchmarks(
    info: CheckpointInfo, benchmarks: list[Benchmark], run_dir: str, force: bool = False, limit: int | None = None,
    task_runner: str = "threads",
) -> tuple[SampleTable, list[RunFailure]]:
    """Run each benchmark as its own task run and collect the rows; a benchmark that crashes or runs
    past its timeout is a `RunFailure` (its thresholds become undetermined), never missing rows.

    Called inside the evaluate flow run, on a task runner of its own: not a subflow, because every
    flow run ends by joining Prefect's heartbeat thread, which wakes once a second (0.5-1 s per flow
    run, plus its API calls), twice per escalated evaluation on the way to the determination.

    Args:
        info: the checkpoint under evaluation, as the runners need it.
        benchmarks: the policy's benchmarks to run.
        run_dir: the checkpoint's run folder; each benchmark logs under logs/<benchmark id>.
        force: recompute every benchmark instead of reusing cached rows.
        limit: run at most this many samples per benchmark (smoke tests).
        task_runner: where the task runs go (`make_task_runner`).
    """
    with make_task_runner(task_runner) as runner:
        return _collect(runner, info, benchmarks, run_dir, force, limit)


def _collect(runner: Any, info: CheckpointInfo, benchmarks: list[Benchmark], run_dir: str, force: bool,
             limit: int | None) -> tuple[SampleTable, list[RunFailure]]:
    logger = get_run_logger()
    futures = []
    started = time.monotonic()
    # force recomputes every benchmark; otherwise the cache (same checkpoint, version, runner) answers.
    task = run_benchmark_task.with_options(refresh_cache=True) if force else run_benchmark_task
    for b in benchmarks:
        futures.append((b, runner.submit(task, parameters={"info": info, "benchmark": b,
                                                           "log_dir": str(Path(run_dir) / "logs" / b.id),
                                                           "limit": limit})))
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


def noise_probes(policy: Policy, info: CheckpointInfo, benchmark_ids: list[str]) -> list[NoiseProbeResult]:
    """Run the noise-injection probe on the multiple-choice benchmarks among `benchmark_ids`, for a
    checkpoint with real weights (`kind: huggingface`); nothing for simulated or served models, or
    when the policy's `noise_levels` is empty. A probe that cannot run is a result with its error,
    which flags the benchmark (fail closed), never a silent skip."""
    cfg = policy.anomaly_checks.noise_probe()
    if info.model.get("kind") != "huggingface" or not cfg.levels:
        return []
    from tasks.benchmarks.noise_probe import probe_folder, proxy_questions, subset

    chosen = {}
    for bid in benchmark_ids:
        questions = proxy_questions(bid)
        if questions is not None:  # free-text benchmarks have no choices to score
            chosen[bid] = subset(questions, cfg.subset, cfg.seed)
    if not chosen:
        return []
    try:
        counts = probe_folder(str(info.model["path"]), chosen, cfg.levels, cfg.scale, cfg.seed,
                              device=str(info.model.get("device", "cpu")))
    except Exception as exc:  # noqa: BLE001 - a probe that cannot run flags every benchmark it covers
        error = f"{type(exc).__name__}: {exc}"
        get_run_logger().warning("noise probe failed: %s", error)
        return [NoiseProbeResult(bid, 0, 0, {}, error=error) for bid in sorted(chosen)]
    return [NoiseProbeResult(bid, c.n, c.clean_correct, c.noised_correct) for bid, c in sorted(counts.items())]


def record_noise_flags(ledger: Ledger, checkpoint_uri: str, info: CheckpointInfo, policy: Policy,
                       probes: list[NoiseProbeResult], anomalies: list[Anomaly]) -> None:
    """One `noise_probe.flagged` event per benchmark the probe flagged, before the determination."""
    by_id = {p.benchmark: p for p in probes}
    scale = policy.anomaly_checks.noise_probe().scale
    for a in anomalies:
        p = by_id.get(a.benchmark)
        if p is None or not a.message.startswith("noise probe"):
            continue
        get_run_logger().warning("%s: %s", a.benchmark, a.message)
        ledger.record(NoiseProbeFlagged(checkpoint=checkpoint_uri, run_id=info.run_id, step=info.step,
                                        benchmark=a.benchmark, message=a.message, n=p.n, clean=p.clean_correct,
                                        noised={f"{k:g}": v for k, v in sorted(p.noised_correct.items())},
                                        scale=scale, error=p.error), checkpoint_uri)
