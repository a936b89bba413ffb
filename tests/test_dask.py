"""Fan-out on a local Dask cluster gives the same determination as the thread pool."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_dask_and_threads_agree(prefect_server, rsp_home, pipeline_policy, write_checkpoints, tmp_path):
    pytest.importorskip("prefect_dask")
    from flows.evaluate import evaluate
    from tasks.ledger import Ledger
    from tasks.settings import get_settings

    [ck] = write_checkpoints(str(rsp_home / "checkpoints"), "run-d", [(100, 3e24)])
    threads = evaluate(ck.uri, policy=str(pipeline_policy), task_runner="threads")
    stricter = tmp_path / "same-rules-new-id.yaml"
    # Same rules under another policy id: a second, independent evaluation of the same checkpoint.
    stricter.write_text(pipeline_policy.read_text().replace("id: tiny", "id: tiny-dask"))
    dask = evaluate(ck.uri, policy=str(stricter), task_runner="dask", force=True)
    assert threads.status == dask.status == "evaluated"
    dets = Ledger(get_settings().resolved_ledger_url).determinations("run-d")
    assert len(dets) == 2
    a, b = dets

    def essence(d):
        return (d["required_level"], d["decision"],
                [(t["id"], t["status"], [(m["value"], m["ci_low"], m["ci_high"]) for m in t["measures"]])
                 for t in d["thresholds"]])

    assert essence(a) == essence(b)
    assert a["required_level"] == "L3"  # bio crosses at 3e24 FLOP in the fake runner
