"""The engine: SQLite (WAL, durable commits) or PostgreSQL; the lock migrations run under."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Table, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url

from app.errors import ConfigError
from app.store.migrate import upgrade_schema

T = TypeVar("T")

# Keys of PostgreSQL advisory locks (held until the transaction ends).
_MIGRATE_LOCK = 727274
_INTAKE_LOCK = 727275
_READ_ONLY = "cor_bridge_read_only"


def serialize_intake(conn: Connection) -> None:
    """Wait until no other transaction is in intake; a no-op on SQLite, which already waits.

    Intake reads what it knows of a user (memberships, pending jobs) and writes on what it
    read. SQLite runs one writer at a time (BEGIN IMMEDIATE); PostgreSQL at READ COMMITTED
    would let two removals of one user from two groups each see the other group as still
    granting a workspace, and nobody would detach it. Anything else that looks for an open
    job and then makes one pending (a replay) takes the same turn. Take it before any row
    lock of the transaction (GroupCommit's `first`): a transaction that holds a row and then
    waits for the turn deadlocks with one that holds the turn and waits for that row.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _INTAKE_LOCK})


def lock_migrations(conn: Connection) -> None:
    """Wait until no other process is migrating; held until this transaction ends.

    On SQLite the transaction's BEGIN IMMEDIATE already holds the database's write lock.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATE_LOCK})


def insert_ignoring_conflicts(conn: Connection, table: Table) -> Any:
    """An INSERT that can take `.on_conflict_do_nothing(...)` on either engine."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def chunked(values: Sequence[T], size: int = 1000) -> Iterator[Sequence[T]]:
    """`values` in slices of `size`: an IN list stays far below either engine's bound limit."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _sqlite_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when a transaction begins.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before we answer an IdP 2xx.
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Take the write lock up front so two writers never deadlock on an upgrade; a
        # transaction that only reads (Database.read) reads its WAL snapshot and waits for none.
        read_only = conn.get_execution_options().get(_READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def _postgres_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=10)


class Database:
    """One engine for the process; callers own their transactions via `begin()`."""

    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("sqlite"):
            self.engine = _sqlite_engine(url)
        elif url.startswith(("postgresql", "postgres")):
            self.engine = _postgres_engine(url)
        else:
            raise ConfigError("BRIDGE_DATABASE_URL must start with sqlite:/// or postgresql://")
        self.dialect = self.engine.dialect.name
        self._disposed = False
        event.listen(self.engine, "checkin", self._close_if_disposed)

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A transaction: commits when the block ends, rolls back on an exception."""
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A transaction for reads only: on SQLite it does not wait for, or hold, the write lock."""
        with self.engine.connect() as conn:
            conn.execution_options(**{_READ_ONLY: True})
            with conn.begin():
                yield conn

    def migrate(self) -> str:
        """Create or upgrade the schema; returns the revision now in force.

        Several replicas may start at once: one migrates, the others wait for its commit.
        """
        with self.begin() as conn:
            lock_migrations(conn)
            return upgrade_schema(conn)

    def dispose(self) -> None:
        """Close every pooled connection, and each one still in use once it is returned."""
        self._disposed = True
        self.engine.dispose()

    def _close_if_disposed(self, dbapi_conn: Any, _record: Any) -> None:
        # engine.dispose() only closes what is in the pool; a transaction still running in a
        # thread (a worker round cut short by shutdown) returns its connection afterwards,
        # into a pool nobody will close. psycopg warns when such a connection is collected.
        if self._disposed:
            dbapi_conn.close()
