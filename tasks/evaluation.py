"""Prefect tasks of the evaluate flow, and the steps around them that touch the ledger and the
run folder: thin shells over the core and the adapters.

Imported only by flows (it imports Prefect); the CLI imports flows lazily.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from policy.determination import Determination, SafeguardCheck, SafeguardRequirement
from policy.results import SampleTable
from policy.schema import Benchmark, Policy
from tasks.benchmarks.base import CheckpointInfo, RunnerError, run_benchmark, runner_config
from tasks.ledger import Event, Ledger
from tasks.ledger.events import DeterminationRecorded
from tasks.quality.report import QualityReport
from tasks.run_folder import write_json


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
    except Exception:  # noqa: BLE001 - anything else is a bug or bad input: retrying repeats it
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
def quality_task(table: SampleTable, policy: Policy, required: list[str], docs_dir: str) -> QualityReport:
    from tasks.quality import check_quality

    report = check_quality(table, policy, required, docs_dir=Path(docs_dir))
    if report.docs_path:
        from prefect.artifacts import create_link_artifact, create_markdown_artifact

        from tasks.report import report_url

        # A browser will not open file:// from the UI: link through the approval service's /reports route.
        verdict = f"Data-quality validation: {'passed' if report.passed else 'FAILED'}"
        url = report_url(Path(report.docs_path))
        if url is not None:
            create_link_artifact(url, link_text="great-expectations Data Docs", description=verdict)
        else:
            create_markdown_artifact(f"{verdict}. Data Docs: `{report.docs_path}` (outside the runs folder, "
                                     "so not served)", description=verdict)
    return report


@task(name="verify-safeguards", cache_policy=NO_CACHE)
def verify_safeguards_task(policy: Policy, requirements: Iterable[SafeguardRequirement], checkpoint_uri: str
                           ) -> dict[str, SafeguardCheck]:
    from tasks.safeguards import VerificationContext, verify_safeguards

    return verify_safeguards(policy, requirements, VerificationContext.from_settings())


def record_determination(ledger: Ledger, subject: str, det: Determination, folder: Path,
                         extra: Mapping[str, Any]) -> Event:
    """Append the determination (with `extra`: scores, stage error, forced, policy reference) to the
    ledger, then write it to the run folder with where it sits in the chain. The ledger first: the
    file is a copy for people, the ledger is the record. The gate signs it (an in-toto statement
    citing the policy file's and the sample rows' sha256, tasks/trust/attest.py) first."""
    from tasks.trust.attest import attest_determination

    signed = attest_determination(ledger, det, extra, folder)
    if "attestation_error" in signed:
        get_run_logger().error("determination NOT signed (recorded unsigned): %s", signed["attestation_error"])
    recorded = DeterminationRecorded.of(det, **extra, **signed)
    payload = recorded.to_payload()
    event = ledger.record(recorded, subject)
    write_json(folder / "determination.json", payload | {"ledger_seq": event.seq, "ledger_hash": event.hash})
    get_run_logger().info("determination recorded at ledger seq %d: level %s, decision %s", event.seq,
                          det.required_level, det.decision)
    return event


def sign_head_quietly(ledger: Ledger, why: str) -> None:
    """Sign (and publish, when configured) the ledger's head after an evaluation or a halt. A failure
    is logged as an error, never raised: the determination and any halt are already recorded, and
    the next signing covers this head too."""
    from tasks.ledger.heads import HeadError, sign_and_keep

    try:
        head = sign_and_keep(ledger)
    except (HeadError, OSError) as exc:
        get_run_logger().error("ledger head NOT signed after %s: %s", why, exc)
        return
    get_run_logger().info("ledger head signed after %s: seq %d%s", why, head.seq,
                          f", published to {head.published}" if head.published else "")


def write_run_report_quietly(ledger: Ledger, runs_dir: Path, run_id: str) -> None:
    """Regenerate the run's report across checkpoints; a failure is logged, never raised."""
    from tasks.run_report import write_run_report

    try:
        write_run_report(ledger, runs_dir, run_id)
    except Exception as exc:  # noqa: BLE001 - the determination is recorded; a plot failing must not fail it
        get_run_logger().warning("run report not written: %s", exc)
