"""Write the example sample-level results for the three bundled frameworks.

    python policy/examples/make_examples.py

Deterministic (NumPy, fixed seed): running it twice writes identical files. Each
file covers every benchmark of its framework with more than `min_samples`
questions, and is designed so that classifying it shows every status. The
script classifies what it wrote with the policy engine and stops with an error
if a status differs from the design below, so a change to a threshold that
breaks an example is caught here.

The numbers are synthetic: they describe no real model.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # run from a checkout without installing

from policy.engine import classify
from policy.loading import parse_policy
from policy.results import SampleTable
from policy.schema import Policy

SEED = 20251123
ERRORS = (
    "sandbox timed out after 3600 s",
    "model API error: 503 Service Unavailable",
    "scorer crashed: unparseable answer",
)


@dataclass(frozen=True)
class Spec:
    """How one benchmark's rows are drawn.

    rate: per-attempt success probability (binary) or mean score (continuous).
    spread: how much questions differ in difficulty (Beta concentration; lower = more spread).
    extra: questions beyond the benchmark's min_samples.
    errors: attempts that fail (score null, error set).
    """

    rate: float
    spread: float = 4.0
    continuous: bool = False
    extra: int = 10
    errors: int = 0


@dataclass(frozen=True)
class Example:
    framework: str  # file stem under policy/frameworks
    output: str
    specs: dict[str, Spec]
    expect_status: dict[str, str]
    expect_level: str


EXAMPLES = (
    Example(
        framework="anthropic-rsp",
        output="results-anthropic.jsonl",
        specs={
            "wmdp-bio-proxy": Spec(0.85, errors=2),
            "wmdp-chem-proxy": Spec(0.48),
            "lab-bench-proxy": Spec(0.40),
            "virology-troubleshooting-proxy": Spec(0.15),
            "cybench-proxy": Spec(0.04, spread=1.0, errors=4),
            "ctf-uplift-proxy": Spec(0.28),
            "swe-bench-proxy": Spec(0.36, spread=2.0),
            "re-bench-proxy": Spec(0.40, spread=6.0, continuous=True, errors=3),
            "mle-bench-proxy": Spec(0.03, spread=1.0),
        },
        expect_status={
            "CBRN-3": "crossed",
            "CBRN-4": "below",
            "AI-RND-4": "early_warning",
            "AI-RND-5": "below",
            "cyber-operations": "below",
        },
        expect_level="ASL-3",
    ),
    Example(
        framework="openai-preparedness",
        output="results-openai.jsonl",
        specs={
            "wmdp-bio-proxy": Spec(0.62, extra=20),
            "wmdp-chem-proxy": Spec(0.38),
            "lab-bench-proxy": Spec(0.33),
            "virology-troubleshooting-proxy": Spec(0.10),
            "cybench-proxy": Spec(0.10, spread=1.0),
            "ctf-uplift-proxy": Spec(0.82, errors=1),
            "swe-bench-proxy": Spec(0.30, spread=2.0, errors=5),
            "re-bench-proxy": Spec(0.12, spread=6.0, continuous=True),
            "mle-bench-proxy": Spec(0.02, spread=1.0),
            "sandbagging-probe-proxy": Spec(0.36),
            "self-replication-proxy": Spec(0.08),
            "nuclear-radiological-proxy": Spec(0.40, errors=1),
        },
        expect_status={
            "bio-chem-high": "early_warning",
            "bio-chem-critical": "below",
            "cyber-high": "crossed",
            "cyber-critical": "below",
            "ai-self-improvement-high": "below",
            "ai-self-improvement-critical": "below",
            "long-range-autonomy-watch": "below",
            "sandbagging-watch": "crossed",
            "autonomous-replication-watch": "below",
            "nuclear-radiological-watch": "below",
        },
        expect_level="high",
    ),
    Example(
        framework="gdm-fsf",
        output="results-gdm.jsonl",
        specs={
            "wmdp-bio-proxy": Spec(0.40),
            "wmdp-chem-proxy": Spec(0.36),
            "lab-bench-proxy": Spec(0.28),
            "virology-troubleshooting-proxy": Spec(0.08),
            "cybench-proxy": Spec(0.09, spread=1.0, errors=3),
            "ctf-uplift-proxy": Spec(0.78),
            "swe-bench-proxy": Spec(0.33, spread=2.0),
            "re-bench-proxy": Spec(0.38, spread=6.0, continuous=True),
            "mle-bench-proxy": Spec(0.03, spread=1.0, errors=2),
            # Point estimate below the CCL, but the upper bound reaches it: cannot be ruled out.
            "persuasion-proxy": Spec(0.43, extra=5, errors=1),
            "stealth-proxy": Spec(0.12),
            "situational-awareness-proxy": Spec(0.33),
        },
        expect_status={
            "cbrn-uplift-1": "below",
            "cyber-uplift-1": "crossed",
            "ml-rnd-acceleration-1": "early_warning",
            "ml-rnd-automation-1": "below",
            "harmful-manipulation-1": "undetermined",
            "instrumental-reasoning-1": "below",
            "instrumental-reasoning-2": "below",
        },
        expect_level="SL-2",
    ),
)


def load_policy(stem: str) -> Policy:
    path = HERE.parent / "frameworks" / f"{stem}.yaml"
    return parse_policy(path.read_text(encoding="utf-8"), str(path))


def benchmark_rows(
    rng: np.random.Generator, bench_id: str, version: str, attempts: int, n: int, spec: Spec
) -> list[dict]:
    # Per-question difficulty from a Beta with the requested mean, so attempts at one
    # question are correlated (as in real evals) and best-of-k sits above the mean.
    a, b = spec.rate * spec.spread, (1.0 - spec.rate) * spec.spread
    p = rng.beta(a, b, size=n)
    if spec.continuous:
        scores = np.clip(p[:, None] + rng.normal(0.0, 0.08, size=(n, attempts)), 0.0, 1.0).round(4)
    else:
        scores = (rng.random((n, attempts)) < p[:, None]).astype(float)
    failed = set(rng.choice(n * attempts, size=spec.errors, replace=False).tolist()) if spec.errors else set()
    rows = []
    for i in range(n):
        for k in range(attempts):
            err = (i * attempts + k) in failed
            rows.append(
                {
                    "benchmark": bench_id,
                    "version": version,
                    "sample_id": f"{bench_id}-{i:04d}",
                    "attempt": k,
                    "score": None if err else float(scores[i, k]),
                    "error": ERRORS[(i + k) % len(ERRORS)] if err else None,
                }
            )
    return rows


def build(example: Example, policy: Policy) -> list[dict]:
    missing = {b.id for b in policy.benchmarks} ^ set(example.specs)
    if missing:
        raise SystemExit(f"{example.framework}: specs and policy benchmarks differ: {sorted(missing)}")
    rng = np.random.default_rng([SEED, sum(map(ord, example.framework))])
    rows: list[dict] = []
    for bench in policy.benchmarks:  # policy order: stable output
        spec = example.specs[bench.id]
        rows += benchmark_rows(
            rng, bench.id, bench.version, bench.attempts, bench.min_samples + spec.extra, spec
        )
    return rows


def check(example: Example, policy: Policy, rows: list[dict]) -> list[str]:
    det = classify(policy, SampleTable.from_rows(rows, example.output))
    problems = []
    print(f"\n{example.framework} → {example.output}: required level {det.required_level}")
    for t in det.thresholds:
        want = example.expect_status[t.id]
        mark = "ok" if t.status == want else f"WANTED {want}"
        vals = ", ".join(
            f"{m.benchmark}/{m.metric} {m.value:.3f} [{m.ci_low:.3f}, {m.ci_high:.3f}] {m.status}"
            for m in t.measures
        )
        print(f"  {t.id:32s} {t.status:14s} {mark:20s} {vals}")
        if t.status != want:
            problems.append(f"{example.framework}: {t.id} is {t.status}, designed {want}")
    if det.required_level != example.expect_level:
        problems.append(f"{example.framework}: level {det.required_level}, designed {example.expect_level}")
    return problems


def main() -> int:
    problems = []
    for example in EXAMPLES:
        policy = load_policy(example.framework)
        rows = build(example, policy)
        text = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows)
        (HERE / example.output).write_text(text, encoding="utf-8")
        problems += check(example, policy, rows)
    if problems:
        print("\n".join(["", "DESIGN NOT MET:", *problems]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
