"""Fixtures for pipeline tests: an isolated RSP_HOME, a fast policy, and a checkpoint writer.

`rsp_home` (function) -> Path: RSP_HOME in a temp dir, settings cache cleared.
`pipeline_policy` (function) -> Path: tests/data/tiny-policy.yaml with every benchmark run by
    tests/data/fake_runner.py through the `command` runner (no Inspect, ~0.1 s a benchmark).
`write_checkpoints` -> callable(store_uri, run_id, [(step, compute), ...]) writing complete checkpoints.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

DATA = Path(__file__).resolve().parent.parent / "data"


@pytest.fixture
def rsp_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    from tasks.settings import get_settings

    home = tmp_path / "rsp-home"
    monkeypatch.setenv("RSP_HOME", str(home))
    for var in ("RSP_LEDGER_URL", "RSP_CHECKPOINT_STORE", "RSP_EVIDENCE_STORE", "RSP_RUNS_DIR"):
        monkeypatch.delenv(var, raising=False)
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


@pytest.fixture
def pipeline_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = yaml.safe_load((DATA / "tiny-policy.yaml").read_text())
    cmd = f"{shlex.quote(sys.executable)} {shlex.quote(str(DATA / 'fake_runner.py'))}"
    for b in data["benchmarks"]:
        b["runner"] = {"type": "command", "command": cmd}
        b["timeout_s"] = 60.0
    path = tmp_path / "pipeline-policy.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    # Bio crosses CBRN-3 around 1e24 FLOP; everything else stays far below in these tests.
    monkeypatch.setenv("FAKE_MIDPOINTS", '{"bio": 24.0, "chem": 30, "swe": 30, "ctf": 30}')
    monkeypatch.setenv("FAKE_ROWS", "60")
    return path


@pytest.fixture
def write_checkpoints() -> Callable[..., list]:
    from tasks.manifest import new_manifest
    from tasks.stores.base import checkpoint_key, from_uri

    def write(store_uri: str, run_id: str, points: list[tuple[int, float]]) -> list:
        store = from_uri(store_uri, create=True)
        return [store.put_checkpoint(checkpoint_key(run_id, step), {"weights.bin": f"{run_id}-{step}".encode()},
                                     new_manifest(run_id, step, compute)) for step, compute in points]

    return write
