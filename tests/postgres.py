"""A throwaway PostgreSQL server for the tests: initdb into a temporary folder, start, stop.

The tests start it themselves (nothing need be running beforehand): `find_bindir()` looks
for initdb and pg_ctl, `PostgresServer.start()` makes a cluster tuned for speed over
durability (fsync off) listening on a free loopback port, and `database()` hands out a
fresh database per test, dropped afterwards. initdb refuses to run as root, so as root the
server's programs run as the `postgres` system user (Debian's postgresql packages make it).
"""

from __future__ import annotations

import atexit
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

SUPERUSER = "postgres"
SYSTEM_USER = "postgres"  # who runs the server when the tests run as root
# Speed over durability: a crash loses a throwaway cluster, nothing more.
SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
    "shared_buffers": "32MB",
    "max_wal_size": "1GB",
    "log_min_messages": "warning",
    "log_min_error_statement": "panic",
    "timezone": "'UTC'",
}


def find_bindir() -> Path | None:
    """The folder holding initdb and pg_ctl, or None when PostgreSQL is not installed."""
    candidates: list[str] = []
    if os.environ.get("PG_BINDIR"):
        candidates.append(os.environ["PG_BINDIR"])
    pg_config = shutil.which("pg_config")
    if pg_config:
        found = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if found:
            candidates.append(found)
    # Debian/Ubuntu keep the server programs off PATH, one folder per major version.
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: _version(p), reverse=True
    )
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).resolve().parent))
    for folder in candidates:
        if all((Path(folder) / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return Path(folder)
    return None


def _version(bindir: str) -> int:
    name = Path(bindir).parent.name
    return int(name) if name.isdigit() else 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One cluster in a temporary folder; `start()`, then `database()` per test, `stop()`."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.as_root = os.geteuid() == 0
        self.folder = Path(tempfile.mkdtemp(prefix="cor-bridge-pg-"))
        self.data = self.folder / "data"
        self.sockets = self.folder / "run"
        self.log = self.folder / "server.log"
        self.port = 0
        self._names = itertools.count(1)
        self._started = False

    def start(self) -> PostgresServer:
        """initdb and start; raises RuntimeError with the server's log when that fails."""
        self.sockets.mkdir()
        if self.as_root:
            owner = pwd.getpwnam(SYSTEM_USER)
            for path in (self.folder, self.sockets):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        self._run(
            "initdb",
            "-D", str(self.data),
            "-U", SUPERUSER,
            "-A", "trust",
            "-E", "UTF8",
            "--locale=C",
            "--no-sync",
        )  # fmt: skip
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# cor-bridge tests\n")
            conf.write(f"unix_socket_directories = '{self.sockets}'\n")
            for key, value in SERVER_SETTINGS.items():
                conf.write(f"{key} = {value}\n")
        for _ in range(3):  # a port taken between _free_port() and bind: try another
            self.port = _free_port()
            started = self._run(
                "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                "-o", f"-p {self.port}", "start", check=False,
            )  # fmt: skip
            if started.returncode == 0:
                self._started = True
                atexit.register(self.stop)  # should the session end without its teardown
                return self
            if "address already in use" not in self.log_tail().lower():
                break
        raise RuntimeError(f"PostgreSQL did not start:\n{started.stdout}\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop the server (fast: no waiting for clients) and remove its folder."""
        try:
            if self._started:
                self._started = False
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        """BRIDGE_DATABASE_URL for `database` on this server (loopback TCP, no password)."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    @contextmanager
    def database(self) -> Iterator[str]:
        """A new empty database for one test; dropped (connections and all) afterwards."""
        name = f"t_{os.getpid()}_{next(self._names)}"
        self._admin(f'CREATE DATABASE "{name}"')
        try:
            yield self.url(name)
        finally:
            self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _admin(self, sql: str) -> None:
        dsn = f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname=postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.encode())

    def log_tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return "(no server log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / tool), *args]
        if self.as_root:
            cmd = ["runuser", "-u", SYSTEM_USER, "--", *cmd]
        done = subprocess.run(
            cmd,
            cwd=self.folder,  # the postgres user may not be able to enter ours
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        return done


def why_unavailable(bindir: Path | None) -> str | None:
    """Why a server cannot be started here, or None when it can."""
    if bindir is None:
        return (
            "PostgreSQL server binaries (initdb, pg_ctl) not found in `pg_config --bindir`, "
            "/usr/lib/postgresql/*/bin or PATH; install them (apt-get install postgresql) "
            "or set PG_BINDIR"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            return f"running as root and there is no {SYSTEM_USER!r} user to run initdb as"
        if shutil.which("runuser") is None:
            return "running as root and runuser(1) is missing"
    return None
