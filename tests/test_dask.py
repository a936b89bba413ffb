"""Fan-out in local processes and on a long-lived Dask cluster (by address) gives the same
determination as the thread pool; "auto" picks the cluster when RSP_DASK_ADDRESS names one."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.integration


def _essence(d):
    return (d["required_level"], d["decision"],
            [(t["id"], t["status"], [(m["value"], m["ci_low"], m["ci_high"]) for m in t["measures"]])
             for t in d["thresholds"]])


def test_processes_and_dask_by_address_agree_with_threads(prefect_server, dask_address, rsp_home, pipeline_policy,
                                                         write_checkpoints, tmp_path, monkeypatch):
    from flows.evaluate import evaluate
    from tasks.ledger import Ledger
    from tasks.settings import get_settings

    [ck] = write_checkpoints(str(rsp_home / "checkpoints"), "run-d", [(100, 3e24)])
    outcomes = {"threads": evaluate(ck.uri, policy=str(pipeline_policy), task_runner="threads")}
    for runner in ("processes", "auto"):
        # Same rules under another policy id: a second, independent evaluation of the same checkpoint.
        same = tmp_path / f"same-rules-{runner}.yaml"
        same.write_text(pipeline_policy.read_text().replace("id: tiny", f"id: tiny-{runner}"))
        if runner == "auto":
            monkeypatch.setenv("RSP_DASK_ADDRESS", dask_address)
            get_settings.cache_clear()
            # The workers are long-lived: they did not inherit this test's fake-runner settings.
            from distributed import Client

            fake = {k: v for k, v in os.environ.items() if k.startswith("FAKE_")}
            with Client(dask_address, timeout=10) as client:
                # A lambda, not `os.environ.update`: that bound method would pickle a copy of the
                # environment mapping and update the copy on the worker.
                client.run(lambda fake=fake: os.environ.update(fake))
        outcomes[runner] = evaluate(ck.uri, policy=str(same), task_runner=runner, force=True)
    assert {k: o.status for k, o in outcomes.items()} == dict.fromkeys(outcomes, "evaluated")
    dets = Ledger(get_settings().resolved_ledger_url).determinations("run-d")
    assert len(dets) == 3
    by_policy = {d["policy"]["id"]: _essence(d) for d in dets}
    assert by_policy["tiny"] == by_policy["tiny-processes"] == by_policy["tiny-auto"], by_policy
    assert by_policy["tiny"][0] == "L3"  # bio crosses at 3e24 FLOP in the fake runner
    # The cluster's workers ran the benchmarks (not this process): they served tasks.
    from distributed import Client

    with Client(dask_address, timeout=10) as client:
        ran = client.run(lambda dask_worker: len(dask_worker.data) + len(dask_worker.state.log))
    assert len(ran) == 2 and all(n > 0 for n in ran.values())


def test_task_runner_specs(monkeypatch):
    from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

    from flows.benchmarks import make_task_runner
    from tasks.settings import get_settings

    monkeypatch.delenv("RSP_DASK_ADDRESS", raising=False)
    get_settings.cache_clear()
    assert isinstance(make_task_runner("auto"), ProcessPoolTaskRunner)
    assert make_task_runner("processes:3")._max_workers == 3
    assert isinstance(make_task_runner("threads:2"), ThreadPoolTaskRunner)
    monkeypatch.setenv("RSP_DASK_ADDRESS", "tcp://10.0.0.5:8786")
    get_settings.cache_clear()
    pytest.importorskip("prefect_dask")
    assert make_task_runner("auto").address == "tcp://10.0.0.5:8786"
    get_settings.cache_clear()
    for bad in ("processes:0", "threads:x", "ray"):
        with pytest.raises(ValueError, match="task runner"):
            make_task_runner(bad)
