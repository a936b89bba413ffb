"""Importers: Inspect logs (written by Inspect in the test) and lm-eval `--log_samples` files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from policy.results import SampleTable
from policy.schema import Benchmark
from tasks.benchmarks import CheckpointInfo, RunnerError, run_benchmark
from tasks.benchmarks.importers import score_to_float, table_from_inspect_log, table_from_lm_eval_samples


def bench(bid: str, runner: dict[str, Any] | None = None, *, attempts: int = 1, version: str = "1") -> Benchmark:
    # The proxy tasks declare version "1" (their dataset version), as the shipped policies do.
    return Benchmark(id=bid, name=bid, version=version, domain="cbrn", description="test benchmark",
                     attempts=attempts, chance_score=0.25, runner=runner)


CKPT = CheckpointInfo("run-i", 40, 2e25, "sha256:import", {"kind": "simulated", "error_rate": 0.1})


def rows(table: SampleTable) -> list[dict[str, Any]]:
    return sorted(table.rows(), key=lambda r: (r["sample_id"], r["attempt"]))


@pytest.fixture(scope="module")
def inspect_logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One simulated run written as .eval and the same run as .json, by Inspect itself."""
    root = tmp_path_factory.mktemp("inspect-logs")
    b_eval = bench("wmdp-bio-proxy", attempts=2)
    b_json = bench("wmdp-bio-proxy", {"type": "inspect", "log_format": "json"}, attempts=2)
    ran_eval = run_benchmark(CKPT, b_eval, log_dir=root / "eval", limit=15)
    ran_json = run_benchmark(CKPT, b_json, log_dir=root / "json", limit=15)
    return {"root": root, "ran_eval": ran_eval, "ran_json": ran_json,
            "eval": next((root / "eval").rglob("*.eval")), "json": _json_log(root / "json")}


def _json_log(folder: Path) -> Path:
    # eval_set also writes logs.json and eval-set.json next to the log; the log is the one named after its task.
    [log] = [p for p in folder.rglob("*.json") if "_wmdp-bio-proxy_" in p.name]
    return log


def test_inspect_eval_and_json_logs_import_to_identical_rows(inspect_logs: dict[str, Any]) -> None:
    ran = rows(inspect_logs["ran_eval"])
    assert len(ran) == 30 and any(r["error"] for r in ran)  # error rows survive the round trip
    from_eval = table_from_inspect_log(inspect_logs["eval"], "wmdp-bio-proxy", "1")
    from_json = table_from_inspect_log(inspect_logs["json"], "wmdp-bio-proxy", "1")
    assert rows(from_eval) == ran
    assert rows(from_json) == ran
    assert rows(inspect_logs["ran_json"]) == ran  # the format changes nothing


def test_inspect_log_runner_type_with_placeholders_and_directories(inspect_logs: dict[str, Any]) -> None:
    root: Path = inspect_logs["root"]
    as_file = bench("wmdp-bio-proxy", {"type": "inspect-log", "path": str(inspect_logs["eval"])})
    assert rows(run_benchmark(CKPT, as_file, log_dir=root / "x")) == rows(inspect_logs["ran_eval"])
    # A directory (with checkpoint placeholders): the newest log for the named task in it.
    as_dir = bench("wmdp-bio-proxy", {"type": "inspect-log", "path": str(root / "js{missing_key}on"),
                                      "task": "wmdp-bio-proxy"})
    with pytest.raises(RunnerError, match="bad placeholder"):
        run_benchmark(CKPT, as_dir, log_dir=root / "x")
    as_dir = bench("wmdp-bio-proxy", {"type": "inspect-log", "path": str(root / "{benchmark}" / ".." / "json"),
                                      "task": "wmdp-bio-proxy"})
    (root / "wmdp-bio-proxy").mkdir(exist_ok=True)
    assert rows(run_benchmark(CKPT, as_dir, log_dir=root / "x")) == rows(inspect_logs["ran_eval"])
    with pytest.raises(RunnerError, match="no scorer 'nope'"):
        run_benchmark(CKPT, bench("wmdp-bio-proxy", {"type": "inspect-log", "path": str(inspect_logs["eval"]),
                                                     "scorer": "nope"}), log_dir=root / "x")
    with pytest.raises(RunnerError, match="no Inspect log for task other"):
        run_benchmark(CKPT, bench("wmdp-bio-proxy", {"type": "inspect-log", "path": str(root / "json"),
                                                     "task": "other"}), log_dir=root / "x")
    with pytest.raises(RunnerError, match="does not exist"):
        run_benchmark(CKPT, bench("b", {"type": "inspect-log", "path": str(root / "{run_id}.eval")}),
                      log_dir=root / "x")


def test_a_log_of_another_task_version_is_refused_not_relabelled(inspect_logs: dict[str, Any]) -> None:
    # The proxy task declares version "1"; a policy that declares "2" asked for another benchmark.
    assert set(table_from_inspect_log(inspect_logs["eval"], "wmdp-bio-proxy", "2").version.tolist()) == {"1"}
    v2 = bench("wmdp-bio-proxy", {"type": "inspect-log", "path": str(inspect_logs["eval"])}, version="2")
    with pytest.raises(RunnerError, match="rows of version.s. 1, the policy expects 2"):
        run_benchmark(CKPT, v2, log_dir=inspect_logs["root"] / "x")
    # Running the task under that policy is refused the same way.
    with pytest.raises(RunnerError, match="rows of version.s. 1, the policy expects 2"):
        run_benchmark(CKPT, bench("wmdp-bio-proxy", attempts=2, version="2"), log_dir=inspect_logs["root"] / "v2",
                      limit=3)


def test_a_failed_inspect_log_is_not_imported(tmp_path: Path) -> None:
    from inspect_ai import eval as inspect_eval

    from tasks.benchmarks.proxies import proxy_task

    # Every sample fails and fail_on_error stays on: Inspect writes a log with status "error".
    [log] = inspect_eval(proxy_task("wmdp-chem-proxy"), model="rsp-sim/broken", limit=3, display="none",
                         model_args={"benchmark": "wmdp-chem-proxy", "error_rate": 1.0}, log_dir=str(tmp_path))
    assert log.status == "error"
    with pytest.raises(RunnerError, match="status 'error'"):
        table_from_inspect_log(log.location, "wmdp-chem-proxy")


@pytest.mark.parametrize("limit_kind,log_format", [("message", "eval"), ("token", "json")])
def test_samples_that_hit_an_inspect_limit_are_errors_not_zeros(tmp_path: Path, limit_kind: str,
                                                                 log_format: str) -> None:
    from inspect_ai import eval as inspect_eval
    from inspect_ai.log import read_eval_log_sample_summaries

    from tasks.benchmarks.proxies import proxy_task

    # A real log written by Inspect, every sample stopped by a tiny limit. Inspect still scores
    # each one (as wrong): that score measures the limit, not the model.
    limits = {"message_limit": 1} if limit_kind == "message" else {"token_limit": 1}
    [log] = inspect_eval(proxy_task("wmdp-chem-proxy"), model="rsp-sim/limited", limit=4, epochs=2,
                         display="none", model_args={"benchmark": "wmdp-chem-proxy", "effective_compute": 1e29},
                         log_dir=str(tmp_path), log_format=log_format, **limits)  # type: ignore[arg-type]
    assert log.status == "success"
    summaries = read_eval_log_sample_summaries(log.location)
    assert len(summaries) == 8 and all(s.limit == limit_kind and s.scores and not s.error for s in summaries)

    table = table_from_inspect_log(log.location, "wmdp-chem-proxy", "1")
    assert len(table) == 8 and np.isnan(table.score).all()
    assert all(e.startswith(f"hit Inspect's {limit_kind} limit") for e in table.error.tolist())
    # The same through the importer runner type.
    imported = run_benchmark(CKPT, bench("wmdp-chem-proxy", {"type": "inspect-log", "path": str(tmp_path)}),
                             log_dir=tmp_path / "x")
    assert rows(imported) == rows(table)


# --------------------------------------------------------------------------- lm-eval


def lm_eval_record(doc_id: int, *, filt: str, metric: str, value: Any, target: str = "B") -> dict[str, Any]:
    """One line of lm-eval's samples_<task>_<date>.jsonl, as its evaluator writes it (v0.4)."""
    return {
        "doc_id": doc_id,
        "doc": {"question": f"placeholder question {doc_id}", "choices": ["a", "b", "c", "d"], "answer": 1},
        "target": target,
        "arguments": {"gen_args_0": {"arg_0": f"Question {doc_id}?", "arg_1": {"until": ["\n"]}}},
        "resps": [[f"The answer is {target}"]],
        "filtered_resps": [target if value else "C"],
        "filter": filt,
        "metrics": [metric],
        "doc_hash": f"{doc_id:064x}",
        "prompt_hash": f"{doc_id + 1:064x}",
        "target_hash": f"{doc_id + 2:064x}",
        metric: value,
    }


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_lm_eval_samples_with_one_filter(tmp_path: Path) -> None:
    recs = [lm_eval_record(i, filt="none", metric="acc", value=float(i % 3 == 0)) for i in range(12)]
    path = write_jsonl(tmp_path / "out" / "model__x" / "samples_wmdp_bio_2026-11-23T10-00-00.123456.jsonl", recs)
    table = table_from_lm_eval_samples(path, "wmdp-bio-proxy", "2", metric="acc")
    assert len(table) == 12 and set(table.attempt.tolist()) == {0}
    assert table.sample_id.tolist() == [str(i) for i in range(12)]
    assert table.score.tolist() == [float(i % 3 == 0) for i in range(12)]
    with pytest.raises(RunnerError, match="no metric 'exact_match'"):
        table_from_lm_eval_samples(path, "wmdp-bio-proxy", metric="exact_match")

    # As a runner type, pointed at the output folder: the newest file of exactly that task wins.
    write_jsonl(tmp_path / "out" / "model__x" / "samples_wmdp_bio_2026-11-22T10-00-00.000000.jsonl", recs[:3])
    write_jsonl(tmp_path / "out" / "model__x" / "samples_wmdp_bio_extra_2026-11-24T10-00-00.000000.jsonl", recs[:2])
    b = bench("wmdp-bio-proxy", {"type": "lm-eval", "path": str(tmp_path / "out"), "task": "wmdp_bio",
                                 "metric": "acc"})
    assert len(run_benchmark(CKPT, b, log_dir=tmp_path / "logs")) == 12


def test_lm_eval_samples_with_several_filters_and_bad_values(tmp_path: Path) -> None:
    recs = []
    for i in range(6):
        recs.append(lm_eval_record(i, filt="strict-match", metric="exact_match", value=0.0))
        recs.append(lm_eval_record(i, filt="flexible-extract", metric="exact_match", value=1.0))
    path = write_jsonl(tmp_path / "samples_gsm8k_2026-11-23T10-00-00.jsonl", recs)
    with pytest.raises(RunnerError, match="several filters"):
        table_from_lm_eval_samples(path, "g", metric="exact_match")
    strict = table_from_lm_eval_samples(path, "g", metric="exact_match", filter="strict-match")
    flexible = table_from_lm_eval_samples(path, "g", metric="exact_match", filter="flexible-extract")
    assert len(strict) == len(flexible) == 6 and strict.score.sum() == 0 and flexible.score.sum() == 6
    with pytest.raises(RunnerError, match="no filter 'none'"):
        table_from_lm_eval_samples(path, "g", metric="exact_match", filter="none")

    bad = write_jsonl(tmp_path / "samples_bleu_2026.jsonl",
                      [lm_eval_record(0, filt="none", metric="bleu", value=[["ref"], ["hyp"]])])
    with pytest.raises(RunnerError, match="metric 'bleu'"):
        table_from_lm_eval_samples(bad, "b", metric="bleu")
    out_of_range = write_jsonl(tmp_path / "samples_ppl_2026.jsonl",
                               [lm_eval_record(0, filt="none", metric="ppl", value=12.5)])
    with pytest.raises(Exception, match=r"outside \[0, 1\]"):
        table_from_lm_eval_samples(out_of_range, "b", metric="ppl")
    (tmp_path / "samples_junk_2026.jsonl").write_text("{not json\n")
    with pytest.raises(RunnerError, match="line 1: not JSON"):
        table_from_lm_eval_samples(tmp_path / "samples_junk_2026.jsonl", "b")


def test_score_values() -> None:
    assert [score_to_float(v) for v in ("C", "I", "P", "N", True, False, 1, 0.25, "0.5", "yes")] == \
        [1.0, 0.0, 0.5, 0.0, 1.0, 0.0, 1.0, 0.25, 0.5, 1.0]
    assert score_to_float({"acc": 1, "f1": 0.5}, score_key="f1") == 0.5
    for bad in ({"acc": 1}, [1, 0], "maybe", None):
        with pytest.raises(ValueError):
            score_to_float(bad)
    assert np.isclose(score_to_float(np.float64(0.3)), 0.3)
