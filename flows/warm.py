"""Served flow runs start warm: forked from a process that has already imported the heavy modules.

Prefect's runner starts each run of a served deployment as a fresh interpreter (`python -m
prefect.engine`, or `multiprocessing` "spawn" for a flow it holds in memory). Every run then
re-imports Prefect, our flows, great-expectations, Inspect and matplotlib: 15-20 s per run on 2
cores, most of the gap between a checkpoint's arrival and its halt (issue 14). Here:

- `start_from_memory` has the runner start a deployment's runs from its flow object (the path
  `flow.serve` takes), handed to the run by reference (`flows.by_reference`);
- `warm_served_runs` starts Python's forkserver with the heavy modules imported once and, when a
  test child forked from it has run, has Prefect start those runs from it.

Each run is still its own process (killed on cancel, one Inspect evaluation per process, a crash
takes down only itself); it starts with the imports done.

Why forkserver and not fork: the serve process has threads (the runner's event loop, the
reconcile loop), and forking a threaded process can deadlock (Prefect moved to spawn for that).
The forkserver is single-threaded when it forks: importing these modules starts no thread (a
test checks it). The environment a run sees is the one Prefect hands it (the runner's, applied
in the child), not the forkserver's.

Prefect exposes no option for the start method; `run_flow_in_subprocess` asks `multiprocessing`
for "spawn" in `prefect.flow_engine`. `warm_served_runs` gives that module a `multiprocessing`
whose "spawn" context is the forkserver. When Prefect's code no longer asks that way, or the warm
process cannot start, runs start as before: slower, the same behaviour.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from flows.by_reference import pickle_by_reference

log = logging.getLogger("rsp.serve.warm")

# What a served run imports on the way to a determination: the flows (Prefect, the policy core, the
# ledger), the quality gate, Inspect with its eval machinery and our providers, the report plot. A
# name that cannot be imported here (torch without the extra) is skipped by the forkserver.
WARM_MODULES = (
    "flows.watch",
    "flows.approval",
    "flows.resume",
    "tasks.quality.engine",
    "great_expectations",
    "great_expectations.expectations",
    "inspect_ai",
    "inspect_ai._eval.evalset",
    # What Inspect's first evaluation in a process imports (750 modules, 2-3 s: its OpenAI
    # client, the ACP agent server, hooks), measured by diffing sys.modules around one run.
    "inspect_ai.model._openai",
    "inspect_ai.agent._acp.server",
    "inspect_ai.hooks",
    "inspect_ai.solver._transcript",
    "inspect_ai._control.scoring",
    "tasks.benchmarks.inspect_runner",
    "tasks.benchmarks.inspect_plugin",
    "tasks.benchmarks.proxies",
    "tasks.benchmarks.providers",
    "tasks.benchmarks.importers",
    "tasks.run_report",
    "matplotlib.pyplot",
)

VERIFY_TIMEOUT_S = 300.0  # the preload on a loaded 2-core machine; runs spawn meanwhile


class _SpawnFromWarm:
    """`multiprocessing` for prefect.flow_engine: "spawn" means the warm forkserver; the rest is unchanged."""

    def __init__(self, real: ModuleType, warm: Any) -> None:
        self._real = real
        self._warm = warm

    def get_context(self, method: str | None = None) -> Any:
        return self._warm if method == "spawn" else self._real.get_context(method)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _engine_asks_for_spawn() -> bool:
    """Whether Prefect's subprocess start still goes through `multiprocessing.get_context("spawn")`."""
    import inspect

    from prefect import flow_engine

    try:
        source = inspect.getsource(flow_engine.run_flow_in_subprocess)
    except (AttributeError, OSError, TypeError):
        return False
    return 'multiprocessing.get_context("spawn")' in source and getattr(flow_engine, "multiprocessing", None) \
        is multiprocessing


def _verify_and_install(ctx: Any, preloaded: int, on_ready: Callable[[str], None] | None) -> None:
    from prefect import flow_engine

    started = time.monotonic()
    try:
        child = ctx.Process(target=os.getpid, name="rsp-warm-check")
        child.start()
        child.join(VERIFY_TIMEOUT_S)
        if child.exitcode != 0:
            child.kill()
            raise RuntimeError(f"the check process exited {child.exitcode}")
    except Exception as exc:  # noqa: BLE001 - any failure: runs keep spawning cold, which is correct
        log.warning("served runs start cold (warm process unavailable: %s)", exc)
        return
    flow_engine.multiprocessing = _SpawnFromWarm(multiprocessing, ctx)  # type: ignore[assignment]
    message = f"runs start warm ({preloaded} modules imported once, in {time.monotonic() - started:.1f} s)"
    log.info("%s", message)
    if on_ready is not None:
        on_ready(message)


def start_from_memory(runner: Any, deployment_id: Any, flow: Any) -> bool:
    """Have `runner` start this deployment's runs from `flow` (Prefect's `flow.serve` path, through
    `run_flow_in_subprocess`, which is what starts warm) instead of `python -m prefect.engine`, a
    fresh interpreter that loads the code again. `Runner.add_deployment` registers no flow (only
    `add_flow` does, and it builds its own deployment), so this registers it where `add_flow`
    would. False, and runs stay cold, when the runner keeps no such registry or the flow cannot be
    handed to a run by reference."""
    registry = getattr(runner, "_deployment_registry", None)
    if registry is None or not callable(getattr(registry, "register_flow", None)):
        log.warning("served runs start cold: this Prefect runner cannot start a deployment from its flow")
        return False
    if not pickle_by_reference(flow):
        log.warning("runs of %s start cold: its flow cannot be handed to a run by reference", flow.name)
        return False
    registry.register_flow(deployment_id, flow)
    return True


def warm_served_runs(modules: Sequence[str] = WARM_MODULES, *, wait: bool = False,
                     on_ready: Callable[[str], None] | None = None) -> threading.Thread | None:
    """Start the warm forkserver (it imports `modules` in the background) and, once a child forked
    from it has run, make Prefect's runner start flow runs from it. Returns the thread doing that
    (None when Prefect's code does not start runs the way this expects: they stay cold).
    `wait`: block until it is done (tests). `on_ready` is called with a line to show once runs start warm."""
    if not _engine_asks_for_spawn():
        log.warning("served runs start cold: prefect.flow_engine no longer starts runs the way rsp expects")
        return None
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(modules))
    thread = threading.Thread(target=_verify_and_install, args=(ctx, len(modules), on_ready), name="rsp-warm-start", daemon=True)
    thread.start()
    if wait:
        thread.join()
    return thread
