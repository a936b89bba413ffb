"""Orchestration overhead of the evaluate flow: wall time over the sum of the runners' own compute.

20 benchmarks x 500 samples, each run by the `command` runner (tests/data/fake_runner.py), so
the runners' own cost is measured the same way inside and outside Prefect. The flow runs against
a temporary local Prefect server (started once, not counted) with the thread-pool task runner.

Run: python bench/bench_orchestration.py [--benchmarks 20] [--samples 500]
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def policy_file(folder: Path, k: int) -> Path:
    data = yaml.safe_load((ROOT / "tests" / "data" / "tiny-policy.yaml").read_text())
    cmd = f"{shlex.quote(sys.executable)} {shlex.quote(str(ROOT / 'tests' / 'data' / 'fake_runner.py'))}"
    data["benchmarks"] = [{"id": f"b{i}", "name": f"B{i}", "version": "1", "domain": "cbrn", "description": "bench",
                           "min_samples": 50, "runner": {"type": "command", "command": cmd}} for i in range(k)]
    data["thresholds"] = [{"id": f"T{i}", "name": f"T{i}", "domain": "cbrn", "description": "bench",
                           "triggers_level": "L3",
                           "measures": [{"benchmark": f"b{i}", "threshold": 0.9, "early_warning": 0.8}]}
                          for i in range(k)]
    data["cadence"]["preliminary_benchmarks"] = ["b0"]
    path = folder / "bench-policy.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--benchmarks", type=int, default=20)
    ap.add_argument("--samples", type=int, default=500)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="rsp-bench-"))
    os.environ.update(RSP_HOME=str(tmp / "home"), FAKE_ROWS=str(args.samples), DO_NOT_TRACK="1",
                      PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_HOME=str(tmp / "prefect"),
                      PREFECT_LOGGING_LEVEL="WARNING")
    from prefect.testing.utilities import prefect_test_harness

    from flows.evaluate import evaluate
    from tasks.benchmarks.base import CheckpointInfo, run_benchmark
    from tasks.inputs import read_policy
    from tasks.manifest import new_manifest
    from tasks.stores.base import checkpoint_key, from_uri

    policy_path = policy_file(tmp, args.benchmarks)
    policy = read_policy(policy_path)
    store = from_uri(str(tmp / "home" / "checkpoints"), create=True)
    cks = [store.put_checkpoint(checkpoint_key("bench", s), {"w": b"x"}, new_manifest("bench", s, 1e22))
           for s in (1, 2)]

    info = CheckpointInfo(run_id="bench", step=0, effective_compute=1e22, digest="sha256:" + "0" * 64)
    t0 = time.perf_counter()
    for b in policy.benchmarks:
        run_benchmark(info, b, log_dir=tmp / "direct" / b.id)
    direct = time.perf_counter() - t0

    with prefect_test_harness(server_startup_timeout=120):
        evaluate(cks[0].uri, policy=str(policy_path))  # warm-up: imports, server caches
        t0 = time.perf_counter()
        evaluate(cks[1].uri, policy=str(policy_path))
        flow_s = time.perf_counter() - t0

    rows = args.benchmarks * args.samples
    print(f"{args.benchmarks} benchmarks x {args.samples} samples ({rows:,} rows), command runner, threads")
    print(f"{'what':<52} {'seconds':>8}")
    print(f"{'sum of runners run directly, one after another':<52} {direct:>8.2f}")
    print(f"{'evaluate flow wall time (benchmarks, GX, classify, …)':<52} {flow_s:>8.2f}")
    print(f"{'ratio flow / runners':<52} {flow_s / direct:>8.2f}")


if __name__ == "__main__":
    main()
