"""Inspect tasks for the proxy suites shipped under `datasets/` (one `@task` per benchmark id).

    proxy_task("wmdp-bio-proxy")                       # a Task object
    inspect eval tasks/benchmarks/proxies.py@wmdp-bio-proxy --model rsp-sim/demo \
        -M effective_compute=1e25 -M benchmark=wmdp-bio-proxy -M chance=0.25

Multiple-choice schemas (WMDP, LAB-Bench style) use `multiple_choice()` + `choice()`;
CTF schemas use `generate()` + `includes()` on the flag; short answers use
`generate()` + `match()` (numeric where the answer is a number). Importing this
module imports Inspect and registers our model providers too; the CLI needs the
`inspect_ai` entry point (tasks/benchmarks/inspect_plugin.py) to know `rsp-sim`
before it reads this file.
"""

from __future__ import annotations

import hashlib
from typing import Any

from inspect_ai import Task, task
from inspect_ai.dataset import Sample, json_dataset
from inspect_ai.scorer import Scorer, choice, includes, match
from inspect_ai.solver import Solver, generate, multiple_choice

import tasks.benchmarks.providers  # noqa: F401  (registers rsp-sim / rsp-hf for CLI use)
from tasks.benchmarks.datasets.generate import DATASET_VERSION, SPECS, ProxySpec, path_for

_SHORT_SUFFIX = "\n\nReply with the answer only."


def _letter(i: int) -> str:
    return chr(ord("A") + i)


def _stable_order(rid: str, options: list[str]) -> list[str]:
    # LAB-Bench keeps the ideal answer apart from distractors; fix their order per item by hash.
    return sorted(options, key=lambda o: hashlib.sha256(f"{rid}\x1f{o}".encode()).hexdigest())


def _record_to_sample(spec: ProxySpec) -> Any:
    meta_base = {"proxy_for": spec.proxy_for, "domain": spec.domain, "placeholder": True}

    def wmdp(r: dict[str, Any]) -> Sample:
        return Sample(id=r["id"], input=r["question"], choices=list(r["choices"]), target=_letter(int(r["answer"])),
                      metadata=meta_base)

    def lab_bench(r: dict[str, Any]) -> Sample:
        options = _stable_order(r["id"], [r["ideal"], *r["distractors"]])
        return Sample(id=r["id"], input=r["question"], choices=options, target=_letter(options.index(r["ideal"])),
                      metadata={**meta_base, "subtask": r["subtask"]})

    def ctf(r: dict[str, Any]) -> Sample:
        return Sample(id=r["id"], input=r["prompt"] + "\n\nReply with the flag only.", target=r["flag"],
                      metadata={**meta_base, "category": r["category"], "difficulty": r["difficulty"]})

    def swe(r: dict[str, Any]) -> Sample:
        return Sample(id=r["instance_id"], input=r["problem_statement"] + _SHORT_SUFFIX, target=r["expected_output"],
                      metadata={**meta_base, "repo": r["repo"]})

    def short(r: dict[str, Any]) -> Sample:
        return Sample(id=r["id"], input=r["question"] + _SHORT_SUFFIX, target=r["answer"],
                      metadata={**meta_base, "task": r["task"], "numeric": r["numeric"]})

    return {"wmdp": wmdp, "lab-bench": lab_bench, "ctf": ctf, "swe": swe, "short": short}[spec.schema]


def _solver_and_scorer(spec: ProxySpec) -> tuple[Solver, Scorer]:
    if spec.schema in ("wmdp", "lab-bench"):
        return multiple_choice(), choice()
    if spec.schema == "ctf":
        return generate(), includes()
    # Every short-answer item of a proxy is either numeric or not (see generate.py).
    numeric = spec.id in ("re-bench-proxy", "mle-bench-proxy", "swe-bench-proxy")
    return generate(), match(numeric=numeric)


def dataset_sha256(benchmark_id: str) -> str:
    return hashlib.sha256(path_for(benchmark_id).read_bytes()).hexdigest()


def proxy_task(benchmark_id: str) -> Task:
    """The Inspect Task for one of our proxy benchmark ids."""
    spec = SPECS.get(benchmark_id)
    if spec is None:
        raise KeyError(f"no proxy task '{benchmark_id}'; known: {', '.join(sorted(SPECS))}")
    solver, scorer = _solver_and_scorer(spec)
    return Task(
        dataset=json_dataset(str(path_for(spec.id)), sample_fields=_record_to_sample(spec), name=spec.id),
        solver=solver,
        scorer=scorer,
        name=spec.id,
        version=DATASET_VERSION,
        metadata={"proxy_for": spec.proxy_for, "domain": spec.domain,
                  "dataset_sha256": dataset_sha256(spec.id)},
    )


def is_proxy(name: str) -> bool:
    return name in SPECS


# One @task per id, written out so that Inspect's CLI finds them by reading this file
# (`inspect list tasks`, `inspect eval tasks/benchmarks/proxies.py@wmdp-bio-proxy`).
# Task names stay the benchmark ids. A test checks this list against SPECS.


@task(name="wmdp-bio-proxy")
def wmdp_bio_proxy() -> Task:
    return proxy_task("wmdp-bio-proxy")


@task(name="wmdp-chem-proxy")
def wmdp_chem_proxy() -> Task:
    return proxy_task("wmdp-chem-proxy")


@task(name="lab-bench-proxy")
def lab_bench_proxy() -> Task:
    return proxy_task("lab-bench-proxy")


@task(name="virology-troubleshooting-proxy")
def virology_troubleshooting_proxy() -> Task:
    return proxy_task("virology-troubleshooting-proxy")


@task(name="cybench-proxy")
def cybench_proxy() -> Task:
    return proxy_task("cybench-proxy")


@task(name="ctf-uplift-proxy")
def ctf_uplift_proxy() -> Task:
    return proxy_task("ctf-uplift-proxy")


@task(name="swe-bench-proxy")
def swe_bench_proxy() -> Task:
    return proxy_task("swe-bench-proxy")


@task(name="re-bench-proxy")
def re_bench_proxy() -> Task:
    return proxy_task("re-bench-proxy")


@task(name="mle-bench-proxy")
def mle_bench_proxy() -> Task:
    return proxy_task("mle-bench-proxy")


@task(name="persuasion-proxy")
def persuasion_proxy() -> Task:
    return proxy_task("persuasion-proxy")


@task(name="sandbagging-probe-proxy")
def sandbagging_probe_proxy() -> Task:
    return proxy_task("sandbagging-probe-proxy")


@task(name="self-replication-proxy")
def self_replication_proxy() -> Task:
    return proxy_task("self-replication-proxy")
