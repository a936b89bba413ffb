"""Fixtures for the pure core: the tiny test policy as text, data and a validated Policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from policy.loading import parse_policy, policy_from_data
from policy.results import SampleTable
from policy.schema import Policy

TINY_POLICY = Path(__file__).resolve().parent.parent / "data" / "tiny-policy.yaml"


@pytest.fixture
def tiny_text() -> str:
    return TINY_POLICY.read_text()


@pytest.fixture
def tiny_data(tiny_text: str) -> dict[str, Any]:
    return yaml.safe_load(tiny_text)


@pytest.fixture
def tiny_policy(tiny_text: str) -> Policy:
    return parse_policy(tiny_text, "tiny")


def policy_with(data: dict[str, Any]) -> Policy:
    return policy_from_data(data, "edited")


def make_table(spec: dict[str, tuple[float, int, int]], seed: int = 0, errors: dict[str, int] | None = None
               ) -> SampleTable:
    """spec: benchmark -> (fraction correct, questions, attempts). Exact fractions, shuffled by seed."""
    rng = np.random.default_rng(seed)
    rows = []
    for bench, (frac, n, attempts) in spec.items():
        correct = np.zeros(n * attempts)
        correct[: round(frac * n * attempts)] = 1.0
        rng.shuffle(correct)
        n_err = (errors or {}).get(bench, 0)
        for i in range(n):
            for a in range(attempts):
                k = i * attempts + a
                if k < n_err:
                    rows.append({"benchmark": bench, "sample_id": f"q{i}", "attempt": a, "score": None,
                                 "error": "model API timeout"})
                else:
                    rows.append({"benchmark": bench, "sample_id": f"q{i}", "attempt": a,
                                 "score": float(correct[k])})
    return SampleTable.from_rows(rows)
