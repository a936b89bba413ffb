"""A real PostgreSQL server for the test session, and ledger URLs on both databases.

Fixtures
--------
`postgres_server` (session scope) -> PostgresServer
    ONE PostgreSQL server for the whole session: `initdb` into a temp data directory, then
    `pg_ctl start` on a free TCP port on 127.0.0.1 (its socket in the temp dir too), trust
    authentication for the superuser `rsp`, fsync off (a test server: durability is not under
    test). `.new_database(prefix)` creates an empty database and returns its SQLAlchemy URL
    (`postgresql+psycopg://rsp@127.0.0.1:<port>/<name>`); `.url(name, driver=...)` names one.
    Stopped, and its directory removed, at session end.

`backend_ledger_url` (function scope, parametrised "sqlite" / "postgresql") -> str
    The URL of a ledger not yet created: a SQLite file under tmp_path, or a fresh, empty
    PostgreSQL database on the session server (dropped after the test). Tests that take it
    run on both databases.

`new_ledger_url` (function scope, parametrised the same way) -> Callable[[str], str]
    For tests that need several ledgers: each call returns the URL of another one not yet created.

The binaries: Debian's `postgresql` package puts them in /usr/lib/postgresql/<ver>/bin, which is
not on PATH; the newest version there is used, else `initdb` on PATH, else $RSP_TEST_PG_BIN.
`initdb` refuses to run as root, and CI runs as root: then the server runs as the unprivileged
`postgres` user the package creates (`runuser -u postgres --`), in a temp dir that user owns.
No PostgreSQL (or no psycopg driver) FAILS the tests that need it with one line saying what to
install (`.ci/run` installs the package; `make test` the driver): it never skips them.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

PG_USER = "rsp"  # the superuser initdb creates (trust auth on 127.0.0.1 only)
RUN_AS = "postgres"  # the unprivileged OS user to run the server as when we are root
INSTALL_HINT = (
    "install PostgreSQL (Debian/Ubuntu: apt-get install -y --no-install-recommends postgresql, "
    "which .ci/run does) or set RSP_TEST_PG_BIN to the folder holding initdb and pg_ctl"
)


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server could be started here; the message says why and what to install."""


def _version_key(path: str) -> tuple[int, ...]:
    match = re.search(r"/postgresql/([\d.]+)/bin", path)
    return tuple(int(p) for p in match.group(1).split(".")) if match else (0,)


def find_pg_bin() -> Path:
    """The folder holding initdb and pg_ctl: $RSP_TEST_PG_BIN, else Debian's newest
    /usr/lib/postgresql/<ver>/bin, else the one on PATH. PostgresUnavailable if none."""
    override = os.environ.get("RSP_TEST_PG_BIN")
    if override:
        folder = Path(override)
        if not (folder / "initdb").is_file():
            raise PostgresUnavailable(f"RSP_TEST_PG_BIN={override} holds no initdb")
        return folder
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key, reverse=True)
    if debian:
        return Path(debian[0]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    raise PostgresUnavailable(f"PostgreSQL not found (no initdb in /usr/lib/postgresql/*/bin or on PATH): "
                              f"{INSTALL_HINT}")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster in its own temp directory, on 127.0.0.1:<port>. A `root` given must be
    reachable by the `postgres` user when running as root (a folder under a root-only temp dir is not)."""

    def __init__(self, root: Path | None = None, *, fsync: bool = False, port: int | None = None) -> None:
        self.bin = find_pg_bin()
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="rsp-postgres-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.log_path = self.root / "postgres.log"
        self.port = port or _free_port()
        self.fsync = fsync
        self._as_user: list[str] = []
        self.started = False
        self._created = 0

    # -- lifecycle ------------------------------------------------------------------------------

    def _prepare_user(self) -> None:
        """initdb refuses root: run as the `postgres` user, owning the temp dir."""
        if os.geteuid() != 0:
            return
        try:
            user = pwd.getpwnam(RUN_AS)
        except KeyError:
            raise PostgresUnavailable(f"running as root and there is no {RUN_AS!r} user to run PostgreSQL as "
                                      f"(initdb refuses root): {INSTALL_HINT}") from None
        runuser = shutil.which("runuser")
        setpriv = shutil.which("setpriv")
        if runuser:
            self._as_user = [runuser, "-u", RUN_AS, "--"]
        elif setpriv:
            self._as_user = [setpriv, f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--"]
        else:
            raise PostgresUnavailable("running as root with neither runuser nor setpriv to drop to the "
                                      f"{RUN_AS!r} user (initdb refuses root)")
        for path in (self.root, self.sockets):
            os.chown(path, user.pw_uid, user.pw_gid)
        # The postgres user must be able to reach the temp dir through its parents (mkdtemp: 0700).
        os.chmod(self.root, 0o700)

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = [*self._as_user, *args]
        done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if done.returncode != 0:
            output = (done.stdout + done.stderr).strip().splitlines()[-5:]
            raise PostgresUnavailable(f"{Path(args[0]).name} failed (exit {done.returncode}): "
                                      + " | ".join(output) + f" (log: {self.tail()})")
        return done

    def start(self) -> PostgresServer:
        if self.started:
            return self
        self.root.mkdir(parents=True, exist_ok=True)
        self.sockets.mkdir(exist_ok=True)
        self._prepare_user()
        if not (self.data / "PG_VERSION").is_file():
            self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", PG_USER, "-A", "trust",
                      "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
        settings = [f"-p {self.port}", "-h 127.0.0.1", f"-k {self.sockets}", "-c max_connections=200"]
        if not self.fsync:
            settings += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log_path), "-w", "-t", "60",
                  "-o", " ".join(settings), "start")
        self.started = True
        return self

    def stop(self, *, mode: str = "fast") -> None:
        """`fast` ends connections and writes a shutdown checkpoint; `immediate` skips the checkpoint
        (what `remove` uses: the data is thrown away, and writing it out took tens of seconds under load)."""
        if self.started:
            subprocess.run([*self._as_user, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w",
                            "stop"], check=False, capture_output=True, timeout=60, cwd=self.root)
            self.started = False

    def remove(self) -> None:
        self.stop(mode="immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def tail(self, chars: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    # -- databases ------------------------------------------------------------------------------

    def url(self, database: str = "postgres", *, driver: str = "psycopg") -> str:
        """SQLAlchemy URL of `database`: driver psycopg (the ledger) or asyncpg (Prefect's server)."""
        return f"postgresql+{driver}://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self, prefix: str = "db") -> str:
        """Create an empty database (a unique name starting with `prefix`); return its psycopg URL."""
        import importlib.util

        if importlib.util.find_spec("psycopg") is None:
            raise PostgresUnavailable("the psycopg driver is not installed: pip install -e '.[postgres]' "
                                      "(make test installs it)")
        self._created += 1
        name = f"{re.sub(r'[^a-z0-9_]', '_', prefix.lower())[:40]}_{os.getpid()}_{self._created}"
        self._admin(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop the database `url` names, ending any connection still open to it."""
        name = url.rsplit("/", 1)[1]
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _admin(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=PG_USER, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(statement)  # type: ignore[call-overload]  # names we built, never outside input


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer().start()
    except PostgresUnavailable as exc:
        pytest.fail(f"PostgreSQL test server unavailable: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture(params=["sqlite", "postgresql"])
def new_ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """`new_ledger_url(name)`: the URL of another ledger not yet created, on the parametrised database
    (a SQLite file `<name>.db` under tmp_path, or a fresh PostgreSQL database)."""
    made: list[str] = []
    server: PostgresServer | None = None
    if request.param == "postgresql":
        server = request.getfixturevalue("postgres_server")

    def make(name: str) -> str:
        if server is None:
            return f"sqlite:///{tmp_path / name}.db"
        try:
            made.append(server.new_database(name))
        except PostgresUnavailable as exc:
            pytest.fail(str(exc), pytrace=False)
        return made[-1]

    yield make
    for url in made:
        assert server is not None
        server.drop_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    try:
        url = server.new_database("ledger")
    except PostgresUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    yield url
    server.drop_database(url)  # its pages never reach the disk: a drop discards them


__all__ = ["PostgresServer", "PostgresUnavailable", "find_pg_bin"]
