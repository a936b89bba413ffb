"""A real, long-lived Dask cluster on 127.0.0.1 for the session: `dask scheduler` and two
`dask worker` processes (one thread each), as production runs it, connected to by address.

Workers start after the session's Prefect server, so they inherit its PREFECT_API_URL and report
their task runs to it; they run from the repository root with it on PYTHONPATH so the project's
tasks import there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _workers_connected(address: str, n: int) -> bool:
    from distributed import Client

    with Client(address, timeout=5) as client:
        return len(client.scheduler_info(n_workers=-1)["workers"]) >= n


@pytest.fixture(scope="session")
def dask_address(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """tcp://127.0.0.1:PORT of a scheduler with two connected workers; all stopped at session end."""
    pytest.importorskip("distributed")
    pytest.importorskip("prefect_dask")
    # Imported here: importing a sibling plugin at module level stops pytest rewriting its asserts.
    from tests.plugins.prefect_server import _quiet_env, _terminate, free_port, wait_for

    logs = tmp_path_factory.mktemp("dask")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, **_quiet_env(), "PREFECT_API_URL": prefect_server,
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    dask = str(Path(sys.executable).with_name("dask"))
    procs: list[subprocess.Popen[Any]] = []

    def start(name: str, *args: str) -> None:
        out = (logs / f"{name}.log").open("wb")
        procs.append(subprocess.Popen([dask, *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True))

    try:
        start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard")
        for i in range(2):
            start(f"worker-{i}", "worker", address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
                  "--name", f"rsp-test-{i}", "--local-directory", str(logs / f"w{i}"))
        wait_for(lambda: _workers_connected(address, 2), timeout=90, interval=1.0,
                 what=f"2 dask workers at {address} (logs in {logs})")
        yield address
    finally:
        for proc in reversed(procs):
            _terminate(proc)
