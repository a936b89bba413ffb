"""Runner `inspect`: an Inspect AI task against the checkpoint, rows read back from Inspect's log.

Config: {type: inspect, task: <name>, [scorer: <name>], [score_key: <key>], [retries: 1],
         [log_format: eval|json], [max_samples: <n>], [log_realtime: bool],
         [scoring: generate|loglikelihood], [task_args.<arg>: <value> ...]}

`task` is one of our proxy ids (tasks/benchmarks/proxies.py), else any task Inspect
can resolve: a registry name (`inspect_evals/wmdp_bio`) or `path/to/file.py@task`.
The checkpoint's `model` picks the model: simulated -> `rsp-sim`, huggingface ->
`rsp-hf` (batched greedy generation, hf_model.py), inspect -> the given model string unchanged,
at the manifest's `base_url` or settings' `served_base_url` (required for vllm/ and sglang/).

`scoring: loglikelihood` (multiple-choice proxy tasks on a huggingface checkpoint) does
not generate: the questions are scored by the log-likelihood of each choice in batched
forward passes (loglikelihood.py), outside Inspect, and give the same rows as generate
scoring. It writes no Inspect log, and a re-run scores again (it is deterministic and
fast). A simulated checkpoint ignores `scoring` (its answers are drawn, not decoded);
a served model (kind inspect) with `scoring: loglikelihood` is a runner error.

Runs use `eval_set` in `log_dir/<benchmark id>/<run key>`, where the key hashes
everything that changes the answer (task, task args, model, model args, epochs,
limit). A re-run after a crash reuses the completed log and finishes a partial one
instead of starting over. Epochs = `benchmark.attempts`; each sample's time limit
is `benchmark.timeout_s` (the caller bounds the whole run, e.g. a Prefect task timeout).
A sample stopped by that limit, or by any limit the task sets (message, token, working
time...), is read back as an error row, never as the score Inspect gave the stopped
sample (`importers.table_from_inspect_log`), so a limit counts as an error, not a zero.

`log_realtime` (Inspect's sample buffer, which is what lets a crashed run be
recovered sample by sample) is on for real models and off for simulated ones, where
it costs about a third of the run time and a rerun costs nothing.

Inspect allows one evaluation at a time per process, so runs in one process are
serialised by a lock; fan out across processes (Dask/Ray workers) for parallelism.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from pathlib import Path
from typing import Any

from policy.results import SampleTable
from policy.schema import Benchmark
from tasks.benchmarks.base import CheckpointInfo, RunnerError, register_runner, runner_config
from tasks.storage import fsspec_local_path

_INSPECT_LOCK = threading.Lock()
_SIM_EXTRAS = ("curves", "capability_offset", "error_rate")
# Providers that launch their own server from the weights when no base_url is given.
_SELF_STARTING = frozenset({"vllm", "sglang"})
_HF_EXTRAS = ("device", "max_new_tokens", "dtype", "batch_size", "batch_wait_s")
_RUN_KEYS = {"type", "task", "scorer", "score_key", "retries", "log_format", "max_samples", "log_realtime",
             "scoring"}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"


def inspect_model(checkpoint: CheckpointInfo, benchmark: Benchmark) -> tuple[str, dict[str, Any]]:
    """The Inspect model string and model_args that evaluate this checkpoint on this benchmark."""
    m = dict(checkpoint.model)
    kind = m["kind"]
    if kind == "simulated":
        args: dict[str, Any] = {"run_id": checkpoint.run_id, "step": checkpoint.step,
                                "effective_compute": float(checkpoint.effective_compute),
                                "digest": checkpoint.digest, "benchmark": benchmark.id,
                                "chance": float(benchmark.chance_score)}
        args.update({k: m[k] for k in _SIM_EXTRAS if k in m})
        return f"rsp-sim/{_slug(checkpoint.run_id)}-step{checkpoint.step}", args
    if kind == "huggingface":
        path = Path(str(m["path"]))
        if not path.is_absolute():
            raise RunnerError(f"{benchmark.id}: huggingface checkpoint path must be absolute, got {path}")
        args = {"path": str(path)}
        args.update({k: m[k] for k in _HF_EXTRAS if k in m})
        return f"rsp-hf/{_slug(path.name)}", args
    return str(m["model"]), dict(m.get("model_args") or {})


def served_base_url(checkpoint: CheckpointInfo, model: str, benchmark: Benchmark) -> str | None:
    """Where a served checkpoint (kind inspect) answers: the manifest's `base_url`, else settings'.

    Inspect's `vllm/` and `sglang/` providers start a local server from the weights when given no
    address; a gate must never do that behind the operator's back (it would load weights on the gate's
    machine, or fail minutes later), so for those providers a missing address is a runner error.
    """
    if checkpoint.model.get("kind") != "inspect":
        return None
    url = checkpoint.model.get("base_url")
    if not url:
        from tasks.settings import get_settings

        url = get_settings().served_base_url
    if not url and model.split("/", 1)[0] in _SELF_STARTING:
        raise RunnerError(f"{benchmark.id}: {model} needs the serving endpoint: set model.base_url in the "
                          "checkpoint manifest or RSP_SERVED_BASE_URL (e.g. http://host:8000/v1)")
    return str(url) if url else None


def forget_other_vllm_endpoints(base_url: str | None) -> None:
    """Drop Inspect's shared vLLM server entries that point at another endpoint.

    Inspect's `vllm/` provider keeps one server entry per model name for the whole process and
    binds it to the first base_url it sees; a later checkpoint served under the same name at a new
    address would silently be evaluated at the OLD address, i.e. the wrong model. The gate runs many
    checkpoints per process, so before each run it forgets entries for other external endpoints
    (entries with a process of their own are servers Inspect started, which the gate never asks for).
    If Inspect's internals move, this fails closed rather than risk the wrong endpoint.
    """
    if not base_url:
        return
    try:
        from inspect_ai.model._providers._vllm_lora import _vllm_servers
    except ImportError as exc:
        raise RunnerError(f"cannot make sure Inspect's vllm provider uses {base_url}: {exc}") from None
    for name, server in list(_vllm_servers.items()):
        if server.base_url not in (None, base_url) and getattr(server, "process", None) is None:
            del _vllm_servers[name]


def run_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


@register_runner("inspect")
class InspectRunner:
    def run(self, checkpoint: CheckpointInfo, benchmark: Benchmark, *, log_dir: Path,
            limit: int | None = None) -> SampleTable:
        cfg = runner_config(benchmark)
        task_name = str(cfg["task"])
        task_args = {k.split(".", 1)[1]: v for k, v in cfg.items() if k.startswith("task_args.")}
        unknown = sorted(k for k in cfg if k not in _RUN_KEYS and not k.startswith("task_args."))
        if unknown:
            raise RunnerError(f"{benchmark.id}: unknown 'inspect' runner option(s) {', '.join(unknown)}")
        scoring = str(cfg.get("scoring", "generate"))  # the policy schema allows generate|loglikelihood only
        model, model_args = inspect_model(checkpoint, benchmark)
        kind = checkpoint.model["kind"]
        if scoring == "loglikelihood" and kind == "inspect":
            raise RunnerError(f"{benchmark.id}: scoring 'loglikelihood' needs a checkpoint folder "
                              f"(kind huggingface); {model} is a served model")

        # Heavy imports only now: Inspect (1.4 s) and, through proxies, our providers.
        from inspect_ai import eval_set

        from tasks.benchmarks import proxies
        from tasks.benchmarks.importers import table_from_inspect_log

        if proxies.is_proxy(task_name):
            if task_args:
                raise RunnerError(f"{benchmark.id}: proxy task '{task_name}' takes no task_args")
            task: Any = proxies.proxy_task(task_name)
        else:
            task = task_name  # Inspect resolves registry names and file.py@task itself
        if scoring == "loglikelihood" and kind == "huggingface":
            return _loglikelihood_table(task, task_name, model_args, benchmark, limit)

        base_url = served_base_url(checkpoint, model, benchmark)
        key = run_key({"task": task_name, "task_args": task_args, "model": model, "model_args": model_args,
                       "base_url": base_url,
                       "epochs": benchmark.attempts, "limit": limit, "version": benchmark.version,
                       "time_limit": int(benchmark.timeout_s)})
        run_dir = Path(log_dir) / _slug(benchmark.id) / key
        run_dir.mkdir(parents=True, exist_ok=True)
        options: dict[str, Any] = {}
        if "max_samples" in cfg:
            options["max_samples"] = int(cfg["max_samples"])
        options["log_realtime"] = bool(cfg.get("log_realtime", kind != "simulated"))
        if kind == "huggingface":
            # Inspect's adaptive concurrency starts low and would starve the batches; the
            # provider's max_connections (two batches) is the limit to use.
            options["adaptive_connections"] = False
        with _INSPECT_LOCK:
            if model.startswith("vllm/"):
                forget_other_vllm_endpoints(base_url)
            try:
                _, logs = eval_set(
                    tasks=task,
                    log_dir=str(run_dir),
                    model=model,
                    model_args=model_args,
                    model_base_url=base_url,
                    task_args=task_args,
                    epochs=benchmark.attempts,
                    limit=limit,
                    # A failing sample becomes an error row (the quality stage judges the rate);
                    # only a failure of the whole task makes the benchmark undetermined.
                    fail_on_error=False,
                    retry_attempts=int(cfg.get("retries", 1)),
                    retry_cleanup=False,
                    time_limit=int(benchmark.timeout_s),
                    log_samples=True,  # the rows are read back from the samples
                    log_format=str(cfg.get("log_format", "eval")),  # type: ignore[arg-type]
                    display="none",
                    score_display=False,
                    ctl_server=False,
                    **options,
                )
            except RunnerError:
                raise
            except Exception as exc:
                raise RunnerError(f"{benchmark.id}: Inspect could not run task '{task_name}' on {model}: "
                                  f"{type(exc).__name__}: {exc}") from exc
        if len(logs) != 1:
            raise RunnerError(f"{benchmark.id}: expected one Inspect log, got {len(logs)}")
        location = logs[0].location
        if logs[0].status != "success":
            err = logs[0].error.message if logs[0].error is not None else "no error recorded"
            raise RunnerError(f"{benchmark.id}: Inspect run of '{task_name}' ended '{logs[0].status}': "
                              f"{err.strip().splitlines()[-1] if err.strip() else err} (log: {location})")
        return table_from_inspect_log(fsspec_local_path(location), benchmark.id, benchmark.version,
                                      scorer=cfg.get("scorer"), score_key=cfg.get("score_key"))


def _loglikelihood_table(task: Any, task_name: str, model_args: dict[str, Any], benchmark: Benchmark,
                         limit: int | None) -> SampleTable:
    from tasks.benchmarks.hf_folder import CheckpointLoadError, load_folder
    from tasks.benchmarks.loglikelihood import DEFAULT_BATCH_SIZE, table_for

    if isinstance(task, str):
        raise RunnerError(f"{benchmark.id}: scoring 'loglikelihood' reads its questions from one of our proxy "
                          f"tasks; '{task_name}' is not one")
    try:
        model, tokenizer = load_folder(model_args["path"], str(model_args.get("device", "cpu")),
                                       model_args.get("dtype"))
    except CheckpointLoadError as exc:
        raise RunnerError(f"{benchmark.id}: {exc}") from exc
    return table_for(model, tokenizer, task, benchmark, limit=limit,
                     batch_size=int(model_args.get("batch_size", DEFAULT_BATCH_SIZE)))
