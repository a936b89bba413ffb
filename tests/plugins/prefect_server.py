"""A real Prefect server, and real `serve` processes, for integration tests.

Fixtures
--------
`prefect_server` (session scope) -> str
    The API URL ("http://127.0.0.1:<port>/api") of ONE real `prefect server start` subprocess
    shared by the whole test session: free port on 127.0.0.1, PREFECT_HOME and a SQLite
    database in a temp dir, analytics off (PREFECT_SERVER_ANALYTICS_ENABLED=false,
    DO_NOT_TRACK=1), UI off. Started on first use (a fresh database answers /api/health
    after ~9-30 s here), terminated at session end. While it runs, PREFECT_API_URL is set
    in os.environ (so subprocesses inherit it) and in Prefect's settings context (so this
    process's flows and clients use it). Tests share the server: isolate with unique names,
    e.g. a per-test scaling tag (`unique_scaling_tag`), never by resetting it.

`prefect_server_control` (session scope) -> PrefectServerProcess
    The same server, with `.restart()` (same port, same database: state survives),
    `.stop()` / `.start()` (for "server down" tests; always `.start()` again before the test
    ends), `.url`, `.env()`.

`serve_process_factory` (function scope) -> Callable[..., ServeProcess]
    `start(deployments=[{"name": ..., "parameters": {...}}], scaling_tag=..., ledger_url=...,
    home=..., reconcile_every=30.0, automation=False)` starts a REAL serve process: a
    subprocess running `tasks.enforcement.serve_scaling` over train-demo deployments tagged
    as scaling flows. `ServeProcess.wait_ready()` waits for its start-up reconcile,
    `.sigterm()` stops it the way an operator would, `.restart()` starts it again with the
    same configuration. Every process (and its flow-run children) is killed at test end.

`prefect_server_pg` (session scope) -> PrefectServerProcess
    A SECOND `prefect server start`, on PostgreSQL: its database is a fresh one on the session's
    PostgreSQL server (tests/plugins/postgres.py), reached with
    PREFECT_API_DATABASE_CONNECTION_URL=postgresql+asyncpg://... (what the README's production
    set-up runs). Started on first use; it does not change the session's PREFECT_API_URL.

`on_prefect_pg` (function scope) -> PrefectServerProcess
    Points this test at `prefect_server_pg`: PREFECT_API_URL in os.environ and in Prefect's
    settings context for the test's duration, so the same helpers and flows run against it.

`pg_serve_process_factory` (function scope)
    `serve_process_factory`, with the serve processes talking to `prefect_server_pg`.

`unique_scaling_tag` (function scope) -> str
    A scaling tag no other test uses ("scaling-<hex>").

Helpers: `wait_for(predicate, timeout, what=...)` polls instead of sleeping fixed times.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 300.0  # 2 shared cores and other suites starting servers too: be generous, poll anyway
T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T | None], timeout: float = 30.0, *, interval: float = 0.2, what: str = "condition"
) -> T:
    """Poll `predicate` until it returns something truthy; return it. AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - keep polling; report the last error on timeout
            last_exc = exc
        if time.monotonic() > deadline:
            extra = f" (last error: {last_exc!r})" if last_exc else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{extra}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def closed_port_url() -> str:
    """An API URL on which nothing listens (for 'server down' tests)."""
    return f"http://127.0.0.1:{free_port()}/api"


def _quiet_env() -> dict[str, str]:
    return {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_CLI_PROMPT": "false",
        "PYTHONUNBUFFERED": "1",
    }


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _terminate(proc: subprocess.Popen[Any], timeout: float = 15.0, *, group: bool = True) -> None:
    if proc.poll() is not None:
        return
    try:
        if group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.terminate()
        proc.wait(timeout=timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


class PrefectServerProcess:
    """One `prefect server start` subprocess with its own home, on SQLite in `root` unless `db_url`
    names another database (`postgresql+asyncpg://...`)."""

    def __init__(self, root: Path, port: int | None = None, *, db_url: str | None = None) -> None:
        self.root = root
        self.port = port or free_port()
        self.home = root / "prefect-home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.db_url = db_url or f"sqlite+aiosqlite:///{root / 'prefect.db'}"
        self.log_path = root / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def backend(self) -> str:
        return "postgresql" if self.db_url.startswith("postgresql") else "sqlite"

    def env(self) -> dict[str, str]:
        """Environment for processes that talk to this server (serve processes, CLIs)."""
        return {**_quiet_env(), "PREFECT_API_URL": self.url, "PREFECT_HOME": str(self.home)}

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        env = {**os.environ, **self.env(), "PREFECT_API_DATABASE_CONNECTION_URL": self.db_url}
        env.pop("PREFECT_API_URL", None)  # the server itself must not think it is a client of another
        prefect = Path(sys.executable).parent / "prefect"
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the subprocess for its lifetime
        self.proc = subprocess.Popen(
            [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True,
        )
        log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        while not _healthy(self.url):
            if self.proc.poll() is not None:
                raise RuntimeError(f"prefect server exited with {self.proc.returncode}; log: {self.tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"prefect server not healthy after {timeout:.0f} s; log: {self.tail()}")
            time.sleep(0.25)

    def stop(self) -> None:
        if self.proc is not None:
            _terminate(self.proc, timeout=20)
        self.proc = None

    def restart(self, timeout: float = START_TIMEOUT_S) -> None:
        """Stop and start on the same port with the same database (state survives)."""
        self.stop()
        self.start(timeout)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"


SERVE_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    cfg = json.loads(os.environ["RSP_TEST_SERVE_CONFIG"])
    from flows.train_demo import scaling_deployment
    from tasks.enforcement import serve_scaling
    from tasks.ledger import Ledger

    deployments = [
        scaling_deployment(d["name"], parameters=d.get("parameters") or {}, scaling_tag=cfg["scaling_tag"])
        for d in cfg["deployments"]
    ]

    def ready(report):
        print("RSP_SERVE_READY " + json.dumps(report.to_dict(), default=str), flush=True)

    serve_scaling(
        *deployments,
        reconcile_every=cfg["reconcile_every"],
        ledger=Ledger(cfg["ledger_url"]),
        scaling_tag=cfg["scaling_tag"],
        ensure_automation=cfg["automation"],
        on_ready=ready,
    )
    """
)


class ServeProcess:
    """A real serve process for train-demo deployments, started with `python <script>`."""

    def __init__(self, server: PrefectServerProcess, workdir: Path, config: dict[str, Any], env: dict[str, str]):
        self.server = server
        self.workdir = workdir
        self.config = config
        self.extra_env = env
        self.script = workdir / "serve_train_demo.py"
        self.script.write_text(SERVE_SCRIPT)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self.starts = 0

    def start(self) -> ServeProcess:
        self.starts += 1
        self.log_path = self.workdir / f"serve-{self.starts}.log"
        env = {**os.environ, **self.server.env(), **self.extra_env,
               "RSP_TEST_SERVE_CONFIG": json.dumps(self.config),
               "PREFECT_RUNNER_POLL_FREQUENCY": "1",  # pick up a new run within a second, not ten
               "PYTHONPATH": str(REPO_ROOT)}
        log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, str(self.script)], cwd=REPO_ROOT, env=env, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        return self

    def log(self) -> str:
        if self.log_path is None:
            return ""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def ready_report(self) -> dict[str, Any] | None:
        for line in self.log().splitlines():
            if line.startswith("RSP_SERVE_READY "):
                return json.loads(line.split(" ", 1)[1])
        return None

    def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"serve process exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            return self.ready_report()

        try:
            report: dict[str, Any] = wait_for(ready, timeout, interval=0.2, what="the serve process to start")
            return report
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- serve log ---\n{self.log()[-3000:]}") from None

    def sigterm(self, timeout: float = 30.0) -> int | None:
        """SIGTERM the serve process only (as an operator or a deploy would); wait for it to exit."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def restart(self) -> ServeProcess:
        self.sigterm()
        return self.start()

    def kill(self) -> None:
        """Kill the whole process group: the serve process and any flow runs it started."""
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


def _drain_prefect_workers() -> None:
    # Send queued flow-run logs and events while the server is still up; otherwise they are
    # sent at interpreter exit, fail, and print "Error logging to API" after the test report.
    try:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=5)
        EventsWorker.drain_all(timeout=5)
    except Exception as exc:  # noqa: BLE001 - best effort at teardown
        print(f"prefect_server: could not drain log/event workers: {exc!r}")


@pytest.fixture(scope="session")
def prefect_server_control() -> Iterator[PrefectServerProcess]:
    root = Path(tempfile.mkdtemp(prefix="rsp-prefect-"))
    server = PrefectServerProcess(root)
    server.start()
    saved = {k: os.environ.get(k) for k in ("PREFECT_API_URL",)}
    os.environ["PREFECT_API_URL"] = server.url
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # Prefect read its settings at import; the context override makes this process's clients follow.
    with temporary_settings(updates={PREFECT_API_URL: server.url}):
        try:
            yield server
        finally:
            _drain_prefect_workers()
            server.stop()
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


@pytest.fixture(scope="session")
def prefect_server(prefect_server_control: PrefectServerProcess) -> str:
    return prefect_server_control.url


def _no_watcher_policy(folder: Path) -> Path:
    """The bundled policy with an evaluation lag bound these trainers never reach: they run with no
    watcher by design (the halts under test are manual), where the real bound would stop them after
    two checkpoints (tests/test_lag.py tests that)."""
    import yaml

    path = folder / "no-watcher-policy.yaml"
    if not path.exists():
        data = yaml.safe_load((REPO_ROOT / "policy" / "frameworks" / "anthropic-rsp.yaml").read_text())
        data["cadence"].update(max_unevaluated_checkpoints=10_000, max_evaluation_lag="366d")
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def unique_scaling_tag() -> str:
    return f"scaling-{uuid.uuid4().hex[:10]}"


def _serve_processes(server: PrefectServerProcess, tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    started: list[ServeProcess] = []

    def start(
        *,
        deployments: list[dict[str, Any]],
        scaling_tag: str,
        ledger_url: str,
        home: Path | None = None,
        reconcile_every: float = 30.0,
        automation: bool = False,
    ) -> ServeProcess:
        workdir = tmp_path / f"serve-{len(started)}"
        workdir.mkdir()
        config = {"deployments": deployments, "scaling_tag": scaling_tag, "ledger_url": ledger_url,
                  "reconcile_every": reconcile_every, "automation": automation}
        env = {"RSP_HOME": str(home or workdir / "rsp-home"), "RSP_LEDGER_URL": ledger_url,
               "RSP_SCALING_TAG": scaling_tag, "RSP_POLICY": str(_no_watcher_policy(tmp_path))}
        proc = ServeProcess(server, workdir, config, env).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.sigterm(timeout=10)
        proc.kill()


@pytest.fixture
def serve_process_factory(
    prefect_server_control: PrefectServerProcess, tmp_path: Path
) -> Iterator[Callable[..., ServeProcess]]:
    yield from _serve_processes(prefect_server_control, tmp_path)


@pytest.fixture(scope="session")
def prefect_server_pg(postgres_server: Any) -> Iterator[PrefectServerProcess]:
    root = Path(tempfile.mkdtemp(prefix="rsp-prefect-pg-"))
    database = postgres_server.new_database("prefect")
    server = PrefectServerProcess(root, db_url=postgres_server.url(database.rsplit("/", 1)[1], driver="asyncpg"))
    # Prefect migrates a fresh PostgreSQL database at start-up: 60-85 s measured here under load, past
    # START_TIMEOUT_S; a slow start is not a failure worth a red run.
    try:
        server.start(timeout=4 * START_TIMEOUT_S)
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def on_prefect_pg(prefect_server_pg: PrefectServerProcess, monkeypatch: pytest.MonkeyPatch
                  ) -> Iterator[PrefectServerProcess]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.setenv("PREFECT_API_URL", prefect_server_pg.url)
    with temporary_settings(updates={PREFECT_API_URL: prefect_server_pg.url}):
        try:
            yield prefect_server_pg
        finally:
            _drain_prefect_workers()


@pytest.fixture
def pg_serve_process_factory(
    on_prefect_pg: PrefectServerProcess, tmp_path: Path
) -> Iterator[Callable[..., ServeProcess]]:
    yield from _serve_processes(on_prefect_pg, tmp_path)


__all__ = [
    "PrefectServerProcess",
    "ServeProcess",
    "closed_port_url",
    "free_port",
    "wait_for",
]
