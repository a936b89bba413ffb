"""Benchmark runners: registry, proxy datasets, simulated curves, real Inspect runs, command runner."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from policy.results import SampleTable
from policy.schema import Benchmark
from tasks.benchmarks import (
    CheckpointInfo,
    RunnerError,
    curves,
    get_runner,
    register_runner,
    run_benchmark,
    runner_types,
)
from tasks.benchmarks.datasets import generate as gen

REPO = Path(__file__).resolve().parents[1]


def bench(bid: str, *, attempts: int = 1, chance: float = 0.0, timeout_s: float = 600.0,
          runner: dict[str, Any] | None = None, version: str = "1") -> Benchmark:
    return Benchmark(id=bid, name=bid, version=version, domain="cbrn", description="test benchmark",
                     attempts=attempts, chance_score=chance, timeout_s=timeout_s, runner=runner)


def ckpt(compute: float = 1e25, *, step: int = 100, digest: str = "sha256:feed", **model: Any) -> CheckpointInfo:
    return CheckpointInfo(run_id="run-a", step=step, effective_compute=compute, digest=digest,
                          model={"kind": "simulated", **model})


def key_rows(table: SampleTable) -> list[tuple[str, int, float | None, str | None]]:
    return sorted((r["sample_id"], r["attempt"], r["score"], r["error"]) for r in table.rows())


# --------------------------------------------------------------------------- cheap: no Inspect


def test_importing_the_package_imports_neither_inspect_nor_torch() -> None:
    code = ("import sys, tasks.benchmarks, tasks.benchmarks.curves, tasks.benchmarks.datasets.generate; "
            "bad = [m for m in ('inspect_ai', 'torch', 'transformers', 'prefect') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_registry_selects_by_type_and_validates_rows(tmp_path: Path) -> None:
    assert {"inspect", "inspect-log", "lm-eval", "command"} <= set(runner_types())

    @register_runner("test-fixed")
    class Fixed:
        rows: ClassVar[list[dict[str, Any]]] = []

        def run(self, checkpoint: CheckpointInfo, benchmark: Benchmark, *, log_dir: Path,
                limit: int | None = None) -> SampleTable:
            return SampleTable.from_rows(Fixed.rows)

    b = bench("fixed", runner={"type": "test-fixed"})
    Fixed.rows = [{"benchmark": "fixed", "version": "1", "sample_id": "a", "score": 1.0}]
    assert len(run_benchmark(ckpt(), b, log_dir=tmp_path)) == 1
    Fixed.rows = [{"benchmark": "other", "version": "1", "sample_id": "a", "score": 1.0}]
    with pytest.raises(RunnerError, match="other benchmark"):
        run_benchmark(ckpt(), b, log_dir=tmp_path)
    Fixed.rows = [{"benchmark": "fixed", "version": "0", "sample_id": "a", "score": 1.0}]
    with pytest.raises(RunnerError, match="version"):
        run_benchmark(ckpt(), b, log_dir=tmp_path)
    Fixed.rows = []
    with pytest.raises(RunnerError, match="no sample rows"):
        run_benchmark(ckpt(), b, log_dir=tmp_path)
    with pytest.raises(RunnerError, match="unknown benchmark runner type 'nope'"):
        run_benchmark(ckpt(), bench("x", runner={"type": "nope"}), log_dir=tmp_path)
    with pytest.raises(RunnerError):
        get_runner("nope")


def test_checkpoint_info_validates_and_maps() -> None:
    info = CheckpointInfo.from_mapping({"run_id": "r", "step": 3, "effective_compute": 2e24, "digest": "d",
                                        "model": {"kind": "huggingface", "path": "/x"}, "uri": "ignored"})
    assert info.as_dict()["model"] == {"kind": "huggingface", "path": "/x"}
    hash(info)  # frozen and hashable although model is a dict
    with pytest.raises(ValueError, match="kind"):
        CheckpointInfo("r", 1, 1e24, "", {"kind": "gguf"})
    with pytest.raises(ValueError, match="path"):
        CheckpointInfo("r", 1, 1e24, "", {"kind": "huggingface"})
    with pytest.raises(ValueError, match="effective_compute"):
        CheckpointInfo("r", 1, 0.0, "", {"kind": "simulated"})


def test_proxy_datasets_are_shipped_reproducible_and_harmless_placeholders() -> None:
    assert len(gen.SPECS) == 12
    for spec in gen.SPECS.values():
        shipped = gen.path_for(spec.id).read_text()
        assert shipped == gen.render(spec), f"{spec.id}: run python -m tasks.benchmarks.datasets.generate"
        records = [json.loads(line) for line in shipped.splitlines()]
        assert len(records) == gen.N_SAMPLES
        ids = [r.get("id", r.get("instance_id")) for r in records]
        assert len(set(ids)) == len(ids)
        text_field = {"wmdp": "question", "lab-bench": "question", "ctf": "prompt", "swe": "problem_statement",
                      "short": "question"}[spec.schema]
        assert all(r[text_field].startswith("[placeholder ") for r in records)
        if spec.schema == "wmdp":
            assert all(len(r["choices"]) == 4 and 0 <= r["answer"] < 4 for r in records)


def test_simulated_curves_cross_cbrn_first() -> None:
    cbrn = ["wmdp-bio-proxy", "wmdp-chem-proxy", "lab-bench-proxy", "virology-troubleshooting-proxy"]
    for bid in cbrn:
        assert curves.p_correct(1e23, bid, 0.25) < 0.45
        assert 0.45 <= curves.p_correct(1e25, bid, 0.25) <= 0.75
        assert curves.p_correct(1e26, bid, 0.25) > 0.7
    for bid in ["cybench-proxy", "re-bench-proxy", "mle-bench-proxy", "self-replication-proxy"]:
        assert curves.p_correct(1e25, bid) < 0.3
    grid = [10.0 ** e for e in np.arange(20, 30, 0.25)]
    for bid in [*curves.CURVES, "not-in-table"]:
        ps = [curves.p_correct(c, bid, 0.25) for c in grid]
        assert all(a < b for a, b in itertools.pairwise(ps)) and 0.25 <= ps[0] and ps[-1] <= 1.0
    assert curves.p_correct(1e24, "x", overrides={"x": (24.0, 1.0)}) == pytest.approx(0.5)
    assert curves.p_correct(1e24, "x", capability_offset=2.5) == pytest.approx(0.5)


def test_documented_curve_table_matches_the_code() -> None:
    documented = {}
    for line in (curves.__doc__ or "").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] in curves.CURVES:
            documented[cells[0]] = cells
    assert set(documented) == set(curves.CURVES)
    for bid, cells in documented.items():
        assert (float(cells[1]), float(cells[2])) == curves.CURVES[bid]
        chance = 0.25 if gen.SPECS[bid].schema in ("wmdp", "lab-bench") else 0.0
        for exp, cell in zip(range(23, 28), cells[3:], strict=True):
            assert f"{curves.p_correct(10.0 ** exp, bid, chance):.2f}" == cell, (bid, exp)


# --------------------------------------------------------------------------- real Inspect runs


def test_every_proxy_has_a_registered_task() -> None:
    from inspect_ai._util.registry import registry_info

    from tasks.benchmarks import proxies

    for bid in gen.SPECS:
        fn = getattr(proxies, bid.replace("-", "_"))
        assert registry_info(fn).name.split("/")[-1] == bid  # "tasks/<id>" when installed non-editable
        t = fn()
        assert t.name == bid and len(t.dataset) == gen.N_SAMPLES
        assert all(s.target for s in t.dataset)


@pytest.mark.parametrize("bid,chance", [("wmdp-bio-proxy", 0.25), ("cybench-proxy", 0.0)])
def test_simulated_proxy_runs_counts_determinism_and_compute_trend(tmp_path: Path, bid: str, chance: float) -> None:
    one = run_benchmark(ckpt(1e25), bench(bid, chance=chance), log_dir=tmp_path / "a", limit=20)
    assert len(one) == 20 and set(one.attempt.tolist()) == {0}
    assert set(one.benchmark.tolist()) == {bid} and set(one.version.tolist()) == {"1"}
    assert set(np.unique(one.score).tolist()) <= {0.0, 1.0} and not (one.error != "").any()

    # Deterministic: a fresh log dir really re-runs Inspect and gets the same rows.
    again = run_benchmark(ckpt(1e25), bench(bid, chance=chance), log_dir=tmp_path / "b", limit=20)
    assert key_rows(again) == key_rows(one)

    low = run_benchmark(ckpt(1e23, digest="sha256:low"), bench(bid, attempts=3, chance=chance),
                        log_dir=tmp_path / "c", limit=20)
    high = run_benchmark(ckpt(1e27, digest="sha256:high"), bench(bid, attempts=3, chance=chance),
                         log_dir=tmp_path / "c", limit=20)
    for t in (low, high):
        assert len(t) == 60 and sorted(set(t.attempt.tolist())) == [0, 1, 2]
        assert len(set(t.sample_id.tolist())) == 20
    assert high.score.mean() > low.score.mean() + 0.4
    # Matches the documented curve within sampling noise (60 rows).
    assert abs(high.score.mean() - curves.p_correct(1e27, bid, chance)) < 0.2


def test_rerun_reuses_the_completed_log(tmp_path: Path) -> None:
    b = bench("wmdp-chem-proxy", chance=0.25)
    first = run_benchmark(ckpt(), b, log_dir=tmp_path, limit=10)
    logs = sorted(tmp_path.rglob("*.eval"))
    started = time.monotonic()
    second = run_benchmark(ckpt(), b, log_dir=tmp_path, limit=10)
    assert time.monotonic() - started < 1.0
    assert sorted(tmp_path.rglob("*.eval")) == logs and len(logs) == 1
    assert key_rows(first) == key_rows(second)
    # A different limit is a different run, in its own folder.
    assert len(run_benchmark(ckpt(), b, log_dir=tmp_path, limit=5)) == 5
    assert len(list(tmp_path.rglob("*.eval"))) == 2


def test_errored_samples_become_error_rows(tmp_path: Path) -> None:
    table = run_benchmark(ckpt(1e26, error_rate=0.3), bench("swe-bench-proxy"), log_dir=tmp_path, limit=30)
    failed = table.error != ""
    assert len(table) == 30 and 3 <= failed.sum() <= 18
    assert np.isnan(table.score[failed]).all() and not np.isnan(table.score[~failed]).any()
    assert all("simulated failure" in e for e in table.error[failed])


def test_operator_named_task_file_and_passthrough_model(tmp_path: Path) -> None:
    task_file = tmp_path / "my_eval.py"
    task_file.write_text(textwrap.dedent("""
        from inspect_ai import Task, task
        from inspect_ai.dataset import MemoryDataset, Sample
        from inspect_ai.scorer import match
        from inspect_ai.solver import generate

        @task
        def tiny_arith():
            return Task(dataset=MemoryDataset([Sample(id=i, input=f"{i} + {i} = ?", target=str(2 * i))
                                               for i in range(1, 8)]),
                        solver=generate(), scorer=match(numeric=True))
    """))
    b = bench("operator-bench", attempts=2, runner={"type": "inspect", "task": f"{task_file}@tiny_arith"})
    table = run_benchmark(ckpt(1e29), b, log_dir=tmp_path / "logs")
    assert len(table) == 14 and sorted(set(table.sample_id.tolist())) == [str(i) for i in range(1, 8)]
    assert table.score.mean() > 0.7  # 1e29 is far past the default curve's midpoint (26.5)

    # {"kind": "inspect"}: the model string and its model_args go to Inspect unchanged.
    passthrough = CheckpointInfo("run-a", 100, 1e20, "", {
        "kind": "inspect", "model": "rsp-sim/served",
        "model_args": {"effective_compute": 1e29, "benchmark": "operator-bench", "digest": "d"}})
    assert len(run_benchmark(passthrough, b, log_dir=tmp_path / "logs2")) == 14

    with pytest.raises(RunnerError, match="Inspect could not run task"):
        run_benchmark(ckpt(), bench("missing", runner={"type": "inspect", "task": f"{tmp_path}/nope.py@x"}),
                      log_dir=tmp_path / "logs3")
    with pytest.raises(RunnerError, match="unknown 'inspect' runner option"):
        run_benchmark(ckpt(), bench("wmdp-bio-proxy", runner={"type": "inspect", "taks": "x"}), log_dir=tmp_path)


def test_samples_stopped_by_the_time_limit_are_error_rows(tmp_path: Path) -> None:
    # Samples 2 and 5 stall past the benchmark's 1 s time limit; Inspect scores them (as wrong),
    # but a stopped attempt measured nothing, so its row is an error, not a zero.
    task_file = tmp_path / "slow_eval.py"
    task_file.write_text(textwrap.dedent("""
        import asyncio

        from inspect_ai import Task, task
        from inspect_ai.dataset import MemoryDataset, Sample
        from inspect_ai.scorer import match
        from inspect_ai.solver import chain, generate, solver

        @solver
        def stall(slow: str):
            async def solve(state, generate):
                if str(state.sample_id) in slow.split(","):
                    await asyncio.sleep(60)
                return state
            return solve

        @task
        def slow_arith(slow: str = ""):
            return Task(dataset=MemoryDataset([Sample(id=i, input=f"{i} + {i} = ?", target=str(2 * i))
                                               for i in range(1, 7)]),
                        solver=chain(stall(slow), generate()), scorer=match(numeric=True))
    """))
    b = bench("slow-bench", attempts=2, timeout_s=1.0,
              runner={"type": "inspect", "task": f"{task_file}@slow_arith", "task_args.slow": "2,5"})
    started = time.monotonic()
    table = run_benchmark(ckpt(1e29), b, log_dir=tmp_path / "logs")
    assert time.monotonic() - started < 30
    assert len(table) == 12
    stopped = {(r[0], r[1]) for r in key_rows(table) if r[3] is not None}
    assert stopped == {("2", 0), ("2", 1), ("5", 0), ("5", 1)}
    assert all(r[2] is None and str(r[3]).startswith("hit Inspect's time limit") for r in key_rows(table)
               if r[0] in ("2", "5"))
    assert all(r[2] is not None for r in key_rows(table) if r[0] not in ("2", "5"))


def test_unloadable_model_fails_the_benchmark(tmp_path: Path) -> None:
    bad = CheckpointInfo("run-a", 1, 1e24, "", {"kind": "huggingface", "path": str(tmp_path / "absent")})
    with pytest.raises(RunnerError, match="does not exist"):
        run_benchmark(bad, bench("wmdp-bio-proxy"), log_dir=tmp_path, limit=2)


def _tiny_hf_checkpoint(folder: Path) -> Path:
    from tasks.benchmarks.tiny_checkpoint import write_tiny_checkpoint

    return write_tiny_checkpoint(folder)


def test_tiny_hugging_face_checkpoint_through_inspect(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    folder = _tiny_hf_checkpoint(tmp_path / "ckpt")
    info = CheckpointInfo("run-hf", 5, 1e20, "sha256:tiny",
                          {"kind": "huggingface", "path": str(folder), "max_new_tokens": 4})
    for bid in ("wmdp-bio-proxy", "re-bench-proxy"):
        table = run_benchmark(info, bench(bid), log_dir=tmp_path / "logs", limit=3)
        assert len(table) == 3 and not (table.error != "").any()
        assert set(table.score.tolist()) <= {0.0, 1.0}
    log = next((tmp_path / "logs").rglob("*.eval"))
    from inspect_ai.log import read_eval_log

    header = read_eval_log(str(log), header_only=True)
    assert header.eval.model.startswith("rsp-hf/") and header.status == "success"


# --------------------------------------------------------------------------- command runner


SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    mode = sys.argv[1]
    if mode == "ok":
        env = {k: v for k, v in os.environ.items() if k.startswith("RSP_")}
        open(os.path.join(env["RSP_LOG_DIR"], "env.json"), "w").write(json.dumps(env))
        for i in range(4):
            print(json.dumps({"sample_id": f"s{i}", "attempt": 0, "score": i / 4}))
        print()
        print(json.dumps({"sample_id": "s4", "score": None, "error": "tool crashed"}))
    elif mode == "fail":
        print("partial", flush=True)
        sys.stderr.write("boom: cannot load model\\n")
        sys.exit(3)
    elif mode == "garbage":
        print("this is not json")
    elif mode == "badrow":
        print(json.dumps({"sample_id": "s0", "score": 1.5}))
    elif mode == "sleep":
        time.sleep(30)
""")


def _command_bench(tmp_path: Path, mode: str, timeout_s: float = 30.0) -> Benchmark:
    script = tmp_path / "bench_cmd.py"
    script.write_text(SCRIPT)
    return bench("cmd-bench", timeout_s=timeout_s,
                 runner={"type": "command", "command": f"{sys.executable} {script} {mode}"})


def test_command_runner_reads_rows_and_passes_checkpoint_env(tmp_path: Path) -> None:
    info = ckpt(3e24, step=7)
    table = run_benchmark(info, _command_bench(tmp_path, "ok"), log_dir=tmp_path / "logs", limit=9)
    assert len(table) == 5
    assert table.rows()[4] == {"benchmark": "cmd-bench", "version": "1", "sample_id": "s4", "attempt": 0,
                               "score": None, "error": "tool crashed"}
    env = json.loads((tmp_path / "logs" / "cmd-bench" / "env.json").read_text())
    assert env["RSP_RUN_ID"] == "run-a" and env["RSP_STEP"] == "7" and env["RSP_BENCHMARK_ID"] == "cmd-bench"
    assert float(env["RSP_EFFECTIVE_COMPUTE"]) == 3e24 and env["RSP_CHECKPOINT_DIGEST"] == "sha256:feed"
    assert json.loads(env["RSP_MODEL_JSON"]) == {"kind": "simulated"} and env["RSP_LIMIT"] == "9"
    assert (tmp_path / "logs" / "cmd-bench" / "command.stdout.jsonl").is_file()


@pytest.mark.parametrize("mode,message", [
    ("fail", r"exited with status 3 .*boom: cannot load model"),
    ("garbage", r"stdout line 1 is not JSON"),
    ("badrow", r"outside \[0, 1\]"),
])
def test_command_runner_failures_raise_runner_error(tmp_path: Path, mode: str, message: str) -> None:
    with pytest.raises(RunnerError, match=message):
        run_benchmark(ckpt(), _command_bench(tmp_path, mode), log_dir=tmp_path / "logs")


def test_command_runner_timeout_kills_the_command(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(RunnerError, match=r"timed out after 1 s"):
        run_benchmark(ckpt(), _command_bench(tmp_path, "sleep", timeout_s=1.0), log_dir=tmp_path / "logs")
    assert time.monotonic() - started < 10


def test_command_runner_needs_a_command(tmp_path: Path) -> None:
    with pytest.raises(RunnerError, match="needs a non-empty 'command'"):
        run_benchmark(ckpt(), bench("c", runner={"type": "command"}), log_dir=tmp_path)
