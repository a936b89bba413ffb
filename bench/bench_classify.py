"""Classify cost: a policy with 100 thresholds over 1,000,000 sample rows, exact intervals included,
against a plain NumPy mean over the same rows; and `rsp policy validate` start-up against `python -c pass`.

Run: python bench/bench_classify.py [--rows N] [--thresholds K] [--repeat R]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from policy.engine import classify
from policy.loading import policy_from_data
from policy.results import SampleTable

TINY = Path(__file__).resolve().parent.parent / "tests" / "data" / "tiny-policy.yaml"


def big_policy(k: int) -> dict:
    import yaml

    data = yaml.safe_load(TINY.read_text())
    data["benchmarks"] = [
        {"id": f"b{i}", "name": f"B{i}", "version": "1", "domain": "cbrn", "description": "synthetic",
         "min_samples": 50} for i in range(k)
    ]
    data["thresholds"] = [
        {"id": f"T{i}", "name": f"T{i}", "domain": "cbrn", "description": "synthetic",
         "triggers_level": "L3" if i % 2 else "L4",
         "measures": [{"benchmark": f"b{i}", "threshold": 0.8, "early_warning": 0.6}]} for i in range(k)
    ]
    data["cadence"]["preliminary_benchmarks"] = ["b0"]
    data["fail_closed"]["bootstrap_resamples"] = 1000
    return data


def table(rows: int, k: int) -> SampleTable:
    rng = np.random.default_rng(0)
    per = rows // k
    bench = np.repeat(np.array([f"b{i}" for i in range(k)], dtype=str), per)
    sample = np.tile(np.array([f"q{j}" for j in range(per)], dtype=str), k)
    score = (rng.random(per * k) < 0.3).astype(float)
    empty = np.full(per * k, "", dtype=str)
    return SampleTable(bench, empty, sample, np.zeros(per * k, dtype=np.int64), score, empty.copy())


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def startup(cmd: list[str], repeat: int) -> float:
    return timed(lambda: subprocess.run(cmd, check=True, capture_output=True), repeat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--thresholds", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    policy = policy_from_data(big_policy(args.thresholds), "bench")
    t = table(args.rows, args.thresholds)
    mean_s = timed(lambda: [t.score[t.benchmark == f"b{i}"].mean() for i in range(args.thresholds)], args.repeat)
    flat_s = timed(lambda: t.score.mean(), args.repeat)
    classify_s = timed(lambda: classify(policy, t), args.repeat)
    det = classify(policy, t)
    rsp = str(Path(sys.executable).parent / "rsp")
    py_s = startup([sys.executable, "-c", "pass"], 5)
    val_s = startup([rsp, "policy", "validate", str(TINY)], 5)

    rows = [
        ("plain NumPy mean, all rows", flat_s, flat_s),
        (f"NumPy mean per benchmark ({args.thresholds} masks)", mean_s, flat_s),
        (f"classify: {args.thresholds} thresholds, exact intervals",
         classify_s, flat_s),
    ]
    print(f"rows={len(t):,}  thresholds={args.thresholds}  level={det.required_level}  (median of {args.repeat})")
    print(f"{'what':<58} {'seconds':>9} {'x flat mean':>12}")
    for name, s, base in rows:
        print(f"{name:<58} {s:>9.4f} {s / base:>12.1f}")
    print()
    print(f"{'start-up':<58} {'seconds':>9} {'x python':>12}")
    print(f"{'python -c pass':<58} {py_s:>9.3f} {1.0:>12.1f}")
    print(f"{'rsp policy validate tiny-policy.yaml':<58} {val_s:>9.3f} {val_s / py_s:>12.1f}")


if __name__ == "__main__":
    main()
