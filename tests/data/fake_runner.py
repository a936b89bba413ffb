"""A benchmark program for pipeline tests, run by the `command` runner.

Capability follows a logistic curve in log10(effective compute) whose midpoint is
set per benchmark by FAKE_MIDPOINTS (JSON: benchmark -> log10 FLOP); outcomes are
deterministic per (checkpoint digest, benchmark, sample, attempt). FAKE_FAIL names
benchmarks that crash, FAKE_ROWS the number of questions.
"""

import hashlib
import json
import math
import os
import sys
import time

bench = os.environ["RSP_BENCHMARK_ID"]
if os.environ.get("FAKE_COUNTER"):
    with open(os.environ["FAKE_COUNTER"], "a") as f:
        f.write(f"{bench} {os.environ['RSP_STEP']}\n")
if bench in json.loads(os.environ.get("FAKE_FAIL", "[]")):
    print(f"{bench}: simulated crash", file=sys.stderr)
    sys.exit(3)
time.sleep(json.loads(os.environ.get("FAKE_SLEEP", "{}")).get(bench, 0))
mid = json.loads(os.environ.get("FAKE_MIDPOINTS", "{}")).get(bench, 25.0)
compute = float(os.environ["RSP_EFFECTIVE_COMPUTE"])
p = 1.0 / (1.0 + math.exp(-3.0 * (math.log10(compute) - mid)))
n = int(os.environ.get("FAKE_ROWS", "60"))
for q in range(n):
    for a in range(int(os.environ.get("RSP_ATTEMPTS", "1"))):
        h = hashlib.sha256(f"{os.environ['RSP_CHECKPOINT_DIGEST']}|{bench}|{q}|{a}".encode()).digest()
        u = int.from_bytes(h[:8], "big") / 2**64
        print(json.dumps({"sample_id": f"q{q}", "attempt": a, "score": 1.0 if u < p else 0.0}))
