"""The benchmark-runner interface, its registry, and the one entry point flows call.

A runner turns (checkpoint, benchmark) into sample rows (`policy.results.SampleTable`).
Which runner runs a benchmark is data: `benchmark.runner["type"]` in the policy file
(`inspect` when the policy says nothing). Adding a runner is one small module:

    @register_runner("my-harness")
    class MyRunner:
        def run(self, checkpoint, benchmark, *, log_dir, limit=None) -> SampleTable: ...

Built-in runner modules are imported on first use, and third-party ones can be
announced through the `rsp_gate.benchmark_runners` entry-point group, so importing
this package stays cheap: nothing here imports Inspect (1.4 s), torch or Prefect.

Failures are exceptions, never "no rows": a runner that cannot produce trustworthy
rows raises `RunnerError`, and the caller records the benchmark as `undetermined`
(fail closed). A single sample that errored is not a runner failure; it is a row
with `score=None` and the error text, and the quality stage judges the error rate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from policy.errors import ResultsError
from policy.results import SampleTable
from policy.schema import Benchmark
from tasks.registry import Registry, UnknownPlugin

ENTRY_POINT_GROUP = "rsp_gate.benchmark_runners"
DEFAULT_RUNNER_TYPE = "inspect"


class RunnerError(RuntimeError):
    """A benchmark run produced no trustworthy rows; the threshold it feeds is undetermined."""


class RunnerTimeout(RunnerError):
    """The benchmark ran past its `timeout_s` and was stopped."""


@dataclass(frozen=True)
class CheckpointInfo:
    """What a runner needs to know about the checkpoint under evaluation.

    `model` says how to load it:
      {"kind": "simulated"}                           -> our `rsp-sim` Inspect provider
      {"kind": "huggingface", "path": "/abs/path"}    -> our `rsp-hf` provider (local folder)
      {"kind": "inspect", "model": "provider/name"}   -> any Inspect model, passed through
    Optional extras are passed on (e.g. "model_args" for the inspect kind, "curves"
    and "capability_offset" for the simulated kind).
    """

    run_id: str
    step: int
    effective_compute: float
    digest: str
    # Not part of the hash: a dict is unhashable, and run/step/digest identify the checkpoint.
    model: Mapping[str, Any] = field(default_factory=lambda: {"kind": "simulated"}, hash=False)

    def __post_init__(self) -> None:
        if not self.run_id:
            raise ValueError("CheckpointInfo.run_id must be non-empty")
        if isinstance(self.step, bool) or not isinstance(self.step, int) or self.step < 0:
            raise ValueError(f"CheckpointInfo.step must be a non-negative integer, got {self.step!r}")
        if not (isinstance(self.effective_compute, (int, float)) and self.effective_compute > 0):
            raise ValueError(f"CheckpointInfo.effective_compute must be a positive FLOP count, "
                             f"got {self.effective_compute!r}")
        kind = self.model.get("kind") if isinstance(self.model, Mapping) else None
        if kind not in ("simulated", "huggingface", "inspect"):
            raise ValueError(f"CheckpointInfo.model.kind must be simulated, huggingface or inspect, got {kind!r}")
        if kind == "huggingface" and not self.model.get("path"):
            raise ValueError("CheckpointInfo.model: kind 'huggingface' needs a 'path'")
        if kind == "inspect" and not self.model.get("model"):
            raise ValueError("CheckpointInfo.model: kind 'inspect' needs a 'model' (provider/name)")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> CheckpointInfo:
        """Build from any mapping with these keys (a manifest's dict); extra keys are ignored."""
        return cls(
            run_id=str(data["run_id"]),
            step=int(data["step"]),
            effective_compute=float(data["effective_compute"]),
            digest=str(data.get("digest") or ""),
            model=dict(data.get("model") or {"kind": "simulated"}),
        )

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "step": self.step, "effective_compute": float(self.effective_compute),
                "digest": self.digest, "model": dict(self.model)}


@runtime_checkable
class BenchmarkRunner(Protocol):
    def run(self, checkpoint: CheckpointInfo, benchmark: Benchmark, *, log_dir: Path,
            limit: int | None = None) -> SampleTable: ...


RunnerFactory = Callable[[], BenchmarkRunner]
_T = TypeVar("_T")

# Runner type -> module whose import registers it. Imported lazily so that
# `import tasks.benchmarks` costs milliseconds.
RUNNERS: Registry[RunnerFactory] = Registry(
    "runner",
    entry_point_group=ENTRY_POINT_GROUP,
    builtins={
        "inspect": "tasks.benchmarks.inspect_runner",
        "inspect-log": "tasks.benchmarks.importers",
        "lm-eval": "tasks.benchmarks.importers",
        "command": "tasks.benchmarks.command",
    },
)


def register_runner(type_name: str) -> Callable[[_T], _T]:
    """Class (or zero-argument factory) decorator: `benchmark.runner["type"] == type_name` selects it."""

    def decorate(factory: _T) -> _T:
        try:
            RUNNERS.add(type_name, factory)  # type: ignore[arg-type]
        except ValueError:
            raise ValueError(f"benchmark runner type '{type_name}' is already registered by "
                             f"{RUNNERS.registered()[type_name]!r}") from None
        return factory

    return decorate


def get_runner(type_name: str) -> BenchmarkRunner:
    try:
        factory = RUNNERS.get(type_name)
    except UnknownPlugin as exc:
        raise RunnerError(f"unknown benchmark runner type '{type_name}'; known: {', '.join(exc.known)}") from None
    return factory()


def runner_types() -> list[str]:
    return RUNNERS.names()


def runner_config(benchmark: Benchmark) -> dict[str, Any]:
    """The benchmark's runner config with defaults: no config means our Inspect task of the same id."""
    cfg: dict[str, Any] = dict(benchmark.runner or {})
    cfg.setdefault("type", DEFAULT_RUNNER_TYPE)
    if cfg["type"] == "inspect":
        cfg.setdefault("task", benchmark.id)
    return cfg


def run_benchmark(checkpoint: CheckpointInfo, benchmark: Benchmark, *, log_dir: Path,
                  limit: int | None = None) -> SampleTable:
    """Run one benchmark on one checkpoint; what a Prefect task calls.

    Raises `RunnerError` for anything that leaves the benchmark without trustworthy
    rows (unknown runner, crash, timeout, rows for another benchmark, no rows at all).
    """
    cfg = runner_config(benchmark)
    runner = get_runner(str(cfg["type"]))
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        table = runner.run(checkpoint, benchmark, log_dir=log_dir, limit=limit)
    except RunnerError:
        raise
    except ResultsError as exc:
        raise RunnerError(f"{benchmark.id}: runner '{cfg['type']}' produced invalid rows: {exc}") from exc
    except Exception as exc:  # a crashed runner is an undetermined benchmark, with its reason kept
        raise RunnerError(f"{benchmark.id}: runner '{cfg['type']}' failed: {type(exc).__name__}: {exc}") from exc
    return check_rows(table, benchmark, source=f"runner '{cfg['type']}'")


def check_rows(table: SampleTable, benchmark: Benchmark, *, source: str) -> SampleTable:
    """Rows must all belong to this benchmark and version; an empty table is a failure, not a zero."""
    if len(table) == 0:
        raise RunnerError(f"{benchmark.id}: {source} returned no sample rows")
    others = sorted(set(table.benchmark.tolist()) - {benchmark.id})
    if others:
        raise RunnerError(f"{benchmark.id}: {source} returned rows for other benchmark(s): {', '.join(others)}")
    versions = sorted(set(table.version.tolist()) - {benchmark.version})
    if versions:
        raise RunnerError(f"{benchmark.id}: {source} returned rows of version(s) {', '.join(versions)}, "
                          f"the policy expects {benchmark.version}")
    return table


def rows_for(benchmark: Benchmark, rows: list[dict[str, Any]], *, source: str) -> SampleTable:
    """Validate plain row dicts into a SampleTable, filling benchmark/version where a source leaves them out."""
    filled = []
    for row in rows:
        r = dict(row)
        r.setdefault("benchmark", benchmark.id)
        if not r.get("version"):
            r["version"] = benchmark.version
        filled.append(r)
    return SampleTable.from_rows(filled, source=source)
