"""Deployments from deployments/prefect.yaml in work pools, and real `prefect worker` processes.

Fixtures
--------
`worker_deployments` (module scope) -> WorkerDeployments
    On the session's Prefect server (tests/plugins/prefect_server.py): the file's work pools
    created as process pools, then `prefect --no-prompt deploy --all --prefect-file
    deployments/prefect.yaml` run from the repository root, as an operator does (RSP_REPO_DIR
    set, so each flow run's pull step runs it from this checkout). `.ids` maps deployment
    names to ids; `.scaling_pool` / `.scaling_queue` are where the file puts the scaling
    deployment. At module end the deployments and the pools are deleted again, so no later
    test meets them (they carry the real "scaling" tag, not a per-test one).

`worker_factory` (function scope) -> Callable[..., WorkerProcess]
    `start(pool=..., ledger_url=..., home=...)` starts a REAL `prefect worker start --pool P
    --type process` subprocess polling every second. `WorkerProcess.wait_ready()` waits for
    its first heartbeat, `.sigterm()` stops it the way an operator or a deploy would,
    `.start()` starts it again. Every worker (and the flow runs it started) is killed at test end.

Helpers: `queue_state(pool, queue)` -> (id, paused, last_polled), `set_queue_paused(...)`.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.plugins.prefect_server import REPO_ROOT, PrefectServerProcess, _no_watcher_policy, wait_for

PREFECT_FILE = REPO_ROOT / "deployments" / "prefect.yaml"


def _prefect() -> str:
    return str(Path(sys.executable).parent / "prefect")


def file_pools() -> dict[str, str]:
    """deployment name -> "pool/queue", as deployments/prefect.yaml assigns them."""
    data = yaml.safe_load(PREFECT_FILE.read_text())
    return {d["name"]: f"{d['work_pool']['name']}/{d['work_pool']['work_queue_name']}" for d in data["deployments"]}


@dataclass
class WorkerDeployments:
    ids: dict[str, str]  # deployment name -> id
    queues: dict[str, str]  # deployment name -> "pool/queue"
    deploy_s: float  # wall time of `prefect deploy --all`

    @property
    def scaling_queue_full(self) -> str:
        return self.queues["train-demo"]

    @property
    def scaling_pool(self) -> str:
        return self.scaling_queue_full.split("/", 1)[0]

    @property
    def scaling_queue(self) -> str:
        return self.scaling_queue_full.split("/", 1)[1]


def _run(args: list[str], env: dict[str, str], timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, check=False, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(args[:4])}... exited {done.returncode}:\n{(done.stdout + done.stderr)[-3000:]}")
    return done


@pytest.fixture(scope="module")
def worker_deployments(prefect_server_control: PrefectServerProcess) -> Iterator[WorkerDeployments]:
    import time

    from prefect import get_client

    env = {**os.environ, **prefect_server_control.env(), "RSP_REPO_DIR": str(REPO_ROOT)}
    queues = file_pools()
    pools = sorted({q.split("/", 1)[0] for q in queues.values()})
    for pool in pools:
        _run([_prefect(), "work-pool", "create", pool, "--type", "process", "--overwrite"], env)
    started = time.perf_counter()
    _run([_prefect(), "--no-prompt", "deploy", "--all", "--prefect-file", str(PREFECT_FILE.relative_to(REPO_ROOT))],
         env, timeout=300)
    deploy_s = time.perf_counter() - started
    with get_client(sync_client=True) as client:
        ids = {}
        for d in client.read_deployments():
            if d.work_pool_name in pools and d.name in queues:
                ids[d.name] = str(d.id)
    try:
        yield WorkerDeployments(ids=ids, queues=queues, deploy_s=deploy_s)
    finally:
        if prefect_server_control.running:
            with get_client(sync_client=True) as client:
                for dep_id in ids.values():
                    client.delete_deployment(uuid.UUID(dep_id))
                for pool in pools:
                    client.delete_work_pool(pool)


def queue_state(pool: str, queue: str) -> tuple[str, bool, dt.datetime | None]:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        q = client.read_work_queue_by_name(queue, work_pool_name=pool)
        return str(q.id), bool(q.is_paused), q.last_polled


def set_queue_paused(pool: str, queue: str, paused: bool) -> None:
    """As an operator does from the UI or `prefect work-queue pause|resume`."""
    from prefect import get_client

    with get_client(sync_client=True) as client:
        q = client.read_work_queue_by_name(queue, work_pool_name=pool)
        client.update_work_queue(q.id, is_paused=paused)


class WorkerProcess:
    """One `prefect worker start --pool P --type process` subprocess (own process group)."""

    def __init__(self, server: PrefectServerProcess, pool: str, workdir: Path, env: dict[str, str]) -> None:
        self.server = server
        self.pool = pool
        self.workdir = workdir
        self.extra_env = env
        self.name = f"test-worker-{uuid.uuid4().hex[:8]}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self.starts = 0
        self.started_at: dt.datetime | None = None

    def start(self) -> WorkerProcess:
        self.starts += 1
        self.log_path = self.workdir / f"worker-{self.starts}.log"
        env = {**os.environ, **self.server.env(), **self.extra_env,
               "PREFECT_WORKER_QUERY_SECONDS": "1",  # poll every second, not fifteen
               "PYTHONPATH": str(REPO_ROOT)}
        log = open(self.log_path, "wb")  # noqa: SIM115 - owned by the subprocess for its lifetime
        self.started_at = dt.datetime.now(dt.UTC)
        self.proc = subprocess.Popen(
            [_prefect(), "worker", "start", "--pool", self.pool, "--type", "process", "--name", self.name],
            cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace") if self.log_path else ""
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 60.0) -> dt.datetime:
        """Until the server has this worker's heartbeat from this start; returns its time."""
        from prefect import get_client

        def beat() -> dt.datetime | None:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            with get_client(sync_client=True) as client:
                for w in client.read_workers_for_work_pool(self.pool):
                    seen = w.last_heartbeat_time
                    if w.name == self.name and self.started_at and seen and seen >= self.started_at:
                        return seen
            return None

        try:
            return wait_for(beat, timeout, interval=0.3, what=f"worker {self.name} to heartbeat")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- worker log ---\n{self.log()[-3000:]}") from None

    def sigterm(self, timeout: float = 30.0) -> int | None:
        """SIGTERM the worker process only (as an operator or a deploy would); wait for it to exit."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        """Kill the whole process group: the worker and any flow runs it started."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


@pytest.fixture
def worker_factory(prefect_server_control: PrefectServerProcess, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(*, pool: str, ledger_url: str, home: Path | None = None) -> WorkerProcess:
        workdir = tmp_path / f"worker-{len(started)}"
        workdir.mkdir()
        # What a flow run needs, in the worker's environment (a process worker passes it on): the
        # ledger, and a policy whose lag bound these watcher-less runs never reach.
        env = {"RSP_HOME": str(home or workdir / "rsp-home"), "RSP_LEDGER_URL": ledger_url,
               "RSP_POLICY": str(_no_watcher_policy(tmp_path))}
        worker = WorkerProcess(prefect_server_control, pool, workdir, env).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.sigterm(timeout=10)
        worker.kill()


__all__ = ["WorkerDeployments", "WorkerProcess", "file_pools", "queue_state", "set_queue_paused"]
