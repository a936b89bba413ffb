"""Importers: results other tools already wrote, turned into sample rows.

Runner types registered here:

  {type: inspect-log, path: <file.eval|file.json|dir>, [task: <name>], [scorer: <name>], [score_key: <key>]}
  {type: lm-eval, path: <samples_<task>_<date>.jsonl|dir>, metric: acc, [task: <lm-eval task>], [filter: none]}

`path` may name checkpoint fields, e.g. `/results/{run_id}/step-{step}/logs`
({run_id}, {step}, {digest}, {benchmark}). A directory means: the newest matching log in it.

Inspect logs are read with Inspect's own reader (`inspect_ai.log`): the header for
status and scorer names, the per-sample summaries for (id, epoch, scores, error, limit).
The Inspect runner reads its own logs back with the same function, so an import of
a log it wrote gives identical rows. attempt = epoch - 1. Rows carry the task's own
version when the task declares one (`Task(version=...)`), else the policy's, so a
log of another version is refused (`check_rows`), never relabelled. A sample that
errored, was invalidated, or hit any of Inspect's limits (time, working, token,
message, cost, context, operator, custom) is an error row (score null), never the
score Inspect gave it.

lm-evaluation-harness `--log_samples` files hold one JSON object per (document,
filter): doc_id, doc, target, arguments, resps, filtered_resps, filter, metrics
(names), doc_hash, prompt_hash, target_hash, and one key per metric with its value
(e.g. "acc": 1.0). Rows: sample_id = doc_id, attempt 0, score = the chosen metric.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from policy.results import SampleTable
from policy.schema import Benchmark
from tasks.benchmarks.base import CheckpointInfo, RunnerError, register_runner, runner_config
from tasks.storage import fsspec_local_path

_LETTER_SCORES = {"C": 1.0, "I": 0.0, "P": 0.5, "N": 0.0}
_WORD_SCORES = {"true": 1.0, "yes": 1.0, "correct": 1.0, "false": 0.0, "no": 0.0, "incorrect": 0.0}


def score_to_float(value: Any, *, score_key: str | None = None) -> float:
    """An Inspect score value or lm-eval metric as a float; anything ambiguous is an error.

    Unlike Inspect's `value_to_float`, a list or dict never silently becomes 0.
    """
    if isinstance(value, Mapping):
        if score_key is None:
            raise ValueError(f"score is a dict {sorted(value)}; name the key to use with 'score_key'")
        if score_key not in value:
            raise ValueError(f"score dict has no key '{score_key}' (has {sorted(value)})")
        return score_to_float(value[score_key])
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        v = value.strip()
        if v in _LETTER_SCORES:
            return _LETTER_SCORES[v]
        if v.lower() in _WORD_SCORES:
            return _WORD_SCORES[v.lower()]
        try:
            return float(v)
        except ValueError:
            pass
    raise ValueError(f"score value {value!r} is not a number, a boolean or one of C/I/P/N")


def _format_path(template: str, checkpoint: CheckpointInfo | None, benchmark_id: str) -> Path:
    if checkpoint is None:
        return Path(template)
    try:
        return Path(template.format(run_id=checkpoint.run_id, step=checkpoint.step, digest=checkpoint.digest,
                                    benchmark=benchmark_id))
    except (KeyError, IndexError, ValueError) as exc:
        raise RunnerError(f"{benchmark_id}: bad placeholder in path '{template}': {exc}") from exc


# --------------------------------------------------------------------------- Inspect logs

def _newest_inspect_log(folder: Path, task: str | None) -> Path:
    from inspect_ai.log import list_eval_logs, read_eval_log

    candidates = []
    for info in list_eval_logs(str(folder), recursive=True, descending=True):
        header = read_eval_log(info, header_only=True)
        if task is None or header.eval.task == task or header.eval.task.split("/")[-1] == task:
            candidates.append((info.mtime or 0.0, info.name))
    if not candidates:
        raise RunnerError(f"no Inspect log{' for task ' + task if task else ''} under {folder}")
    return Path(fsspec_local_path(max(candidates)[1]))


def table_from_inspect_log(path: str | Path, benchmark_id: str, version: str = "", *,
                           scorer: str | None = None, score_key: str | None = None,
                           require_success: bool = True) -> SampleTable:
    """Rows from one Inspect log (.eval or .json), one per (sample, epoch)."""
    from inspect_ai.log import read_eval_log, read_eval_log_sample_summaries, read_eval_log_samples

    path = Path(path)
    if not path.is_file():
        raise RunnerError(f"{benchmark_id}: Inspect log {path} does not exist")
    header = read_eval_log(str(path), header_only=True)
    where = f"{benchmark_id}: Inspect log {path.name} (task {header.eval.task})"
    if require_success and header.status != "success":
        detail = f": {header.error.message}" if header.error is not None else ""
        raise RunnerError(f"{where} has status '{header.status}'{detail}")

    score_names = [s.name for s in (header.results.scores if header.results else [])]
    if scorer is not None and score_names and scorer not in score_names:
        raise RunnerError(f"{where}: no scorer '{scorer}' (has {', '.join(score_names)})")
    chosen = scorer or (score_names[0] if score_names else None)
    # A task that declares its version (Inspect's default is 0) labels its rows with it, so rows from
    # another version than the policy declares are caught (check_rows, the engine), never relabelled.
    logged = header.eval.task_version
    if str(logged) not in ("0", ""):
        version = str(logged)

    invalid: dict[tuple[str, int], str] = {}
    if header.invalidated:
        # Only full samples carry invalidation provenance; read them just in this rare case.
        for full in read_eval_log_samples(str(path), all_samples_required=False, exclude_fields={"store", "events"}):
            if full.invalidation is not None:
                invalid[(str(full.id), full.epoch)] = full.invalidation.reason or "no reason given"

    rows: list[dict[str, Any]] = []
    for s in read_eval_log_sample_summaries(str(path)):
        row: dict[str, Any] = {"benchmark": benchmark_id, "version": version, "sample_id": str(s.id),
                               "attempt": int(s.epoch) - 1}
        reason = invalid.get((str(s.id), s.epoch))
        if reason is not None:
            row.update(score=None, error=f"invalidated: {reason}")
        elif s.error:
            row.update(score=None, error=str(s.error) or "sample errored")
        elif s.limit:
            # Inspect scores a sample that a limit stopped (usually as wrong); that score measures the
            # limit, not the model, so the attempt is an error, never a zero (see README, "Fail closed").
            row.update(score=None, error=f"hit Inspect's {s.limit} limit"
                                         + (f": {s.limit_reason}" if s.limit_reason else ""))
        elif not s.scores:
            row.update(score=None, error="no score recorded" + ("" if s.completed else " (sample incomplete)"))
        else:
            name = chosen if chosen is not None else next(iter(s.scores))
            if name not in s.scores:
                row.update(score=None, error=f"no '{name}' score recorded")
            else:
                try:
                    row["score"] = score_to_float(s.scores[name].value, score_key=score_key)
                except ValueError as exc:
                    raise RunnerError(f"{where}: sample {s.id} epoch {s.epoch}: {exc}") from exc
        rows.append(row)
    return SampleTable.from_rows(rows, source=where)


@register_runner("inspect-log")
class InspectLogImporter:
    def run(self, checkpoint: CheckpointInfo, benchmark: Benchmark, *, log_dir: Path,
            limit: int | None = None) -> SampleTable:
        cfg = runner_config(benchmark)
        if "path" not in cfg:
            raise RunnerError(f"{benchmark.id}: runner 'inspect-log' needs a 'path'")
        path = _format_path(str(cfg["path"]), checkpoint, benchmark.id)
        if path.is_dir():
            path = _newest_inspect_log(path, cfg.get("task"))
        return table_from_inspect_log(path, benchmark.id, benchmark.version,
                                      scorer=cfg.get("scorer"), score_key=cfg.get("score_key"))


# --------------------------------------------------------------------------- lm-evaluation-harness

def _newest_lm_eval_samples(folder: Path, task: str | None) -> Path:
    pattern = f"samples_{task}_*.jsonl" if task else "samples_*.jsonl"
    found = sorted(folder.rglob(pattern), key=lambda p: (p.name.rsplit("_", 1)[-1], str(p)))
    if task:
        # "samples_mmlu_*" also matches "samples_mmlu_abstract_algebra_*": keep exact task names only.
        found = [p for p in found if p.name[len("samples_"):].rsplit("_", 1)[0] == task]
    if not found:
        raise RunnerError(f"no lm-eval samples file matching {pattern} under {folder}")
    return found[-1]  # file names end in the run's timestamp; the newest sorts last


def _iter_jsonl(path: Path) -> Iterable[tuple[int, Any]]:
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                try:
                    yield lineno, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise RunnerError(f"{path.name}: line {lineno}: not JSON: {exc.msg}") from exc


def table_from_lm_eval_samples(path: str | Path, benchmark_id: str, version: str = "", *, metric: str = "acc",
                               filter: str | None = None) -> SampleTable:
    """Rows from an lm-eval `samples_<task>_<date>.jsonl` file: one per doc_id, for one filter."""
    path = Path(path)
    if not path.is_file():
        raise RunnerError(f"{benchmark_id}: lm-eval samples file {path} does not exist")
    records = list(_iter_jsonl(path))
    filters = sorted({str(r.get("filter", "none")) for _, r in records if isinstance(r, dict)})
    if filter is None:
        if len(filters) > 1:
            raise RunnerError(f"{benchmark_id}: {path.name} has several filters ({', '.join(filters)}); "
                              "choose one with 'filter'")
        filter = filters[0] if filters else "none"
    elif records and filter not in filters:
        raise RunnerError(f"{benchmark_id}: {path.name} has no filter '{filter}' (has {', '.join(filters)})")

    rows: list[dict[str, Any]] = []
    for lineno, rec in records:
        where = f"{benchmark_id}: {path.name}: line {lineno}"
        if not isinstance(rec, dict) or "doc_id" not in rec:
            raise RunnerError(f"{where}: not an lm-eval sample record (no doc_id)")
        if str(rec.get("filter", "none")) != filter:
            continue
        if metric not in rec:
            names = rec.get("metrics") or sorted(k for k, v in rec.items() if isinstance(v, (int, float))
                                                 and k != "doc_id")
            raise RunnerError(f"{where}: no metric '{metric}' (has {', '.join(map(str, names))})")
        value = rec[metric]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            rows.append({"benchmark": benchmark_id, "version": version, "sample_id": str(rec["doc_id"]),
                         "attempt": 0, "score": None, "error": f"metric '{metric}' is null"})
            continue
        try:
            score = score_to_float(value)
        except ValueError as exc:
            raise RunnerError(f"{where}: metric '{metric}': {exc}") from exc
        rows.append({"benchmark": benchmark_id, "version": version, "sample_id": str(rec["doc_id"]),
                     "attempt": 0, "score": score})
    return SampleTable.from_rows(rows, source=f"{benchmark_id}: {path.name}")


@register_runner("lm-eval")
class LmEvalImporter:
    def run(self, checkpoint: CheckpointInfo, benchmark: Benchmark, *, log_dir: Path,
            limit: int | None = None) -> SampleTable:
        cfg = runner_config(benchmark)
        if "path" not in cfg:
            raise RunnerError(f"{benchmark.id}: runner 'lm-eval' needs a 'path'")
        path = _format_path(str(cfg["path"]), checkpoint, benchmark.id)
        if path.is_dir():
            path = _newest_lm_eval_samples(path, cfg.get("task"))
        return table_from_lm_eval_samples(path, benchmark.id, benchmark.version, metric=str(cfg.get("metric", "acc")),
                                          filter=cfg.get("filter"))

