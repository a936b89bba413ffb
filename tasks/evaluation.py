"""Prefect tasks of the evaluate flow: thin shells over the core and the adapters.

Imported only by flows (it imports Prefect); the CLI imports flows lazily.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from policy.results import SampleTable
from policy.schema import Benchmark
from tasks.benchmarks.base import CheckpointInfo, RunnerError, run_benchmark, runner_config


def benchmark_cache_key(info: CheckpointInfo, benchmark: Benchmark, limit: int | None) -> str:
    """Same checkpoint, benchmark version and runner configuration → same rows. Run and step are
    part of the key because simulated and served models may answer per checkpoint identity."""
    config = {"runner": runner_config(benchmark), "model": dict(info.model), "limit": limit,
              "attempts": benchmark.attempts, "run": info.run_id, "step": info.step}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return f"bench-{info.digest.removeprefix('sha256:')[:32]}-{benchmark.id}-v{benchmark.version}-{digest}"


def _transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry what may succeed next time (network, OS, timeouts inside the runner); a RunnerError
    (bad rows, unknown runner, a program that exits non-zero) will fail the same way again."""
    try:
        state.result()
    except RunnerError as exc:
        cause = exc.__cause__
        return isinstance(cause, (ConnectionError, OSError)) and not isinstance(cause, FileNotFoundError)
    except (ConnectionError, OSError):
        return True
    except Exception:
        return False
    return False


@task(
    name="run-benchmark",
    task_run_name="{benchmark.id}",
    retries=2,
    retry_delay_seconds=[1, 5],
    retry_condition_fn=_transient,
    cache_key_fn=lambda ctx, p: benchmark_cache_key(p["info"], p["benchmark"], p.get("limit")),
    persist_result=True,
)
def run_benchmark_task(info: CheckpointInfo, benchmark: Benchmark, log_dir: str, limit: int | None = None
                       ) -> SampleTable:
    return run_benchmark(info, benchmark, log_dir=Path(log_dir), limit=limit)


@task(name="data-quality", cache_policy=NO_CACHE)
def quality_task(table: SampleTable, policy: Any, required: list[str], docs_dir: str) -> Any:
    from tasks.quality import check_quality

    report = check_quality(table, policy, required, docs_dir=Path(docs_dir))
    if report.docs_path:
        from prefect.artifacts import create_link_artifact

        create_link_artifact(Path(report.docs_path).resolve().as_uri(), link_text="great-expectations Data Docs",
                             description=f"Data-quality validation: {'passed' if report.passed else 'FAILED'}")
    return report


@task(name="verify-safeguards", cache_policy=NO_CACHE)
def verify_safeguards_task(policy: Any, requirements: Any, checkpoint_uri: str) -> Any:
    from tasks.safeguards import VerificationContext, verify_safeguards

    return verify_safeguards(policy, requirements, VerificationContext.from_settings())
