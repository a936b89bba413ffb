"""Served runs start warm (flows/warm.py): forked from a process that imported the heavy modules, each
run still its own process, with the environment the runner hands it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.plugins.prefect_server import REPO_ROOT

pytestmark = pytest.mark.integration

SCRIPT = """
import json, os, sys
from flows.warm import warm_served_runs
from prefect.flow_engine import run_flow_in_subprocess
from tests.data import warm_probe

warm = sys.argv[2] == "warm"
if warm:
    messages = []
    assert warm_served_runs(["tests.data.warm_marker"], wait=True, on_ready=messages.append) is not None
    assert messages and messages[0].startswith("runs start warm"), messages
os.environ["RSP_WARM_PROBE"] = "set after the warm process started"
process = run_flow_in_subprocess(warm_probe.report, parameters={"path": sys.argv[1]})
process.join(120)
assert process.exitcode == 0, process.exitcode
print(json.dumps({"parent": os.getpid(), "process": type(process).__name__}))
"""


def _run(tmp_path: Path, prefect_server: str, mode: str) -> tuple[dict, dict]:
    out = tmp_path / f"{mode}.json"
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(out), mode], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), json.loads(out.read_text())


def test_a_warm_run_is_forked_from_the_process_that_imported_its_modules(tmp_path: Path, prefect_server: str) -> None:
    parent, child = _run(tmp_path, prefect_server, "warm")
    assert parent["process"] == "ForkServerProcess"
    # Its own process, yet the probe module was imported before it existed: in the forkserver.
    assert child["pid"] not in (parent["parent"], child["imported_in"])
    assert child["imported_in"] != parent["parent"]
    # The environment is the runner's at the run's start, not the forkserver's from before.
    assert child["env"] == "set after the warm process started"


def test_a_cold_run_imports_its_modules_itself(tmp_path: Path, prefect_server: str) -> None:
    parent, child = _run(tmp_path, prefect_server, "cold")
    assert parent["process"] == "SpawnProcess"
    assert child["imported_in"] == child["pid"]
    assert child["env"] == "set after the warm process started"


def test_the_warm_modules_start_no_thread_when_imported() -> None:
    """The forkserver forks after importing them: a thread it started would not exist in the child,
    and a lock it held would stay locked there."""
    code = ("import threading; from flows.warm import WARM_MODULES\n"
            "for m in WARM_MODULES: __import__(m)\n"
            "print(sorted(t.name for t in threading.enumerate()))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300, check=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert done.stdout.strip() == "['MainThread']"


BY_REFERENCE = """
import uuid
import cloudpickle
from prefect.runner import Runner
from flows.evaluate import evaluate
from flows.warm import start_from_memory

# The same flow, but not its module's attribute: cloudpickle copies its function by value, with the
# ContextVar among its globals.
copy = evaluate.with_options(name="evaluate-copy")
try:
    cloudpickle.dumps(copy)
    raise SystemExit("a copy of the evaluate flow pickled by value: the test no longer shows why")
except TypeError as exc:
    assert "ContextVar" in str(exc), exc
assert cloudpickle.loads(cloudpickle.dumps(evaluate)) is evaluate  # registered when flows.evaluate loads

runner, deployment_id, other = Runner(), uuid.uuid4(), uuid.uuid4()
assert start_from_memory(runner, deployment_id, evaluate)
assert runner._deployment_registry.get_flow(deployment_id) is evaluate
assert not start_from_memory(runner, other, copy)
assert runner._deployment_registry.get_flow(other) is None
print("ok")
"""


def test_a_served_flow_reaches_its_run_by_reference_or_stays_cold() -> None:
    """The evaluate flow's globals cannot be pickled by value (a run or task run sent that way crashes
    before it starts); it pickles by reference. A flow that is not its module's attribute cannot: a
    deployment of it is not started from memory, and its runs stay cold (python -m prefect.engine)."""
    done = subprocess.run([sys.executable, "-c", BY_REFERENCE], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300, check=False, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
