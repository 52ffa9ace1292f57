"""The engine: SQLite (WAL, durable commits) or PostgreSQL; the lock migrations run under."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import anyio
import structlog
from sqlalchemy import Connection, Engine, Table, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url

from app.errors import ConfigError
from app.store.migrate import upgrade_schema

T = TypeVar("T")
log = structlog.get_logger(__name__)

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

    This is the whole turn: it excludes every other intake, whatever users it is about.
    `lock_intake_keys` takes the turn of some users only.
    """
    if conn.dialect.name == "postgresql" and _held(conn) is not _ALL:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _INTAKE_LOCK})
        _set_held(conn, _ALL)


def lock_intake_keys(conn: Connection, keys: Collection[str] | None) -> None:
    """Intake's turn for these keys only (a user's key: see app/intake/locks.py); None: the
    whole turn (`serialize_intake`). A no-op on SQLite.

    PostgreSQL: the whole turn shared, then one advisory lock per key, in sorted order, so
    two transactions never wait for each other's keys in a circle. Intake of other users goes
    on meanwhile; a transaction that takes the whole turn waits for them all and holds them
    all off. Keys already held by this transaction are not taken again. Take them before any
    row lock of the transaction, as the whole turn (GroupCommit's `first`); a transaction whose
    users are known only after its own row locks (a SCIM request: LATE in app/store/batch.py)
    commits alone and takes them last, in intake, which locks no row that is not its users'.
    """
    if keys is None:
        serialize_intake(conn)
        return
    if conn.dialect.name != "postgresql" or not keys:
        return
    held = _held(conn)
    if held is _ALL:
        return
    wanted = sorted({_key(k) for k in keys} - held)
    if not wanted:
        return
    if not held:
        conn.execute(text("SELECT pg_advisory_xact_lock_shared(:key)"), {"key": _INTAKE_LOCK})
    # One round trip; the subquery's ORDER BY fixes the order the locks are taken in.
    conn.execute(_LOCK_KEYS, {"space": _USER_LOCKS, "keys": wanted})
    _set_held(conn, held | set(wanted) | {_SHARED})


_LOCK_KEYS = text(
    "SELECT count(pg_advisory_xact_lock(:space, k)) FROM "
    "(SELECT k FROM unnest(CAST(:keys AS integer[])) AS k ORDER BY k) AS sorted_keys"
)
_USER_LOCKS = 727276  # the two-integer advisory locks (this, key): a key space of their own
_ALL: frozenset[int] = frozenset({-1})
_SHARED = -2


def keys_in_intake(conn: Connection, keys: Collection[str]) -> set[str]:
    """Of these intake keys, those another transaction holds or waits for right now (the
    worker's claim: a user whose removals are being taken in is claimed once they are in).
    Always empty on SQLite, where a claim never runs beside intake."""
    if conn.dialect.name != "postgresql" or not keys:
        return set()
    by_lock = {_key(k) & 0xFFFFFFFF: k for k in keys}  # pg_locks shows the key as an oid
    busy = conn.execute(_KEYS_IN_USE, {"space": _USER_LOCKS}).scalars()
    return {by_lock[int(oid)] for oid in busy if int(oid) in by_lock}


_KEYS_IN_USE = text(
    "SELECT DISTINCT objid::bigint FROM pg_locks WHERE locktype = 'advisory' "
    "AND classid = :space AND objsubid = 2 AND pid <> pg_backend_pid()"
)


def _key(name: str) -> int:
    digest = hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


def _held(conn: Connection) -> frozenset[int]:
    """The intake locks this transaction holds (they end with it)."""
    txn = conn.get_transaction()
    found = conn.info.get(_HELD)
    if found is None or txn is None or found[0] is not txn:
        return frozenset()
    held: frozenset[int] = found[1]
    return held


def _set_held(conn: Connection, held: Collection[int]) -> None:
    conn.info[_HELD] = (conn.get_transaction(), held if held is _ALL else frozenset(held))


_HELD = "cor_bridge_intake_locks"


# Changes committed by one process after which it ANALYZEs intake's tables (Database.grew).
_ANALYZE_AT = (500, 3_000, 15_000)
_ANALYZED = ("events", "memberships", "jobs")


def analyze(conn: Connection) -> None:
    """Fresh planner statistics for intake's tables (PostgreSQL; SQLite plans by its indexes).
    ANALYZE takes no lock that holds back reads or writes."""
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"ANALYZE {', '.join(_ANALYZED)}"))


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
        # 512 KiB of page cache a connection, not SQLite's 2 MiB: the pool holds up to eight,
        # and the OS caches the file for all of them (peak RSS at 100,000 pending: 140 -> 122 MB).
        cur.execute("PRAGMA cache_size=-512")
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
        self._written = 0  # intake's changes committed by this process, for `grew`
        self._analyzing: threading.Thread | None = None
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

    async def run(self, work: Callable[..., T], *args: Any, write: bool = True) -> T:
        """`work(conn, *args)` in one transaction (`read` when not `write`), in a worker
        thread so the event loop goes on answering meanwhile."""

        def run() -> T:
            with self.begin() if write else self.read() as conn:
                return work(conn, *args)

        return await anyio.to_thread.run_sync(run)

    def migrate(self) -> str:
        """Create or upgrade the schema; returns the revision now in force.

        Several replicas may start at once: one migrates, the others wait for its commit.
        """
        with self.begin() as conn:
            lock_migrations(conn)
            revision = upgrade_schema(conn)
            analyze(conn)
        return revision

    def grew(self, changes: int) -> None:
        """Intake committed `changes` more: on PostgreSQL, ANALYZE intake's tables in the
        background as their first few thousand rows come in. Autovacuum analyzes a table only
        a minute or so after it grows; until then the planner has no statistics, takes a
        50-user IN list to match a tenth of the jobs table and scans it (9 ms a delivery at
        25,000 rows, against 0.5 ms after ANALYZE). Later growth is autovacuum's."""
        if self.dialect != "postgresql":
            return
        before, self._written = self._written, self._written + changes
        crossed = any(before < mark <= self._written for mark in _ANALYZE_AT)
        if crossed and (self._analyzing is None or not self._analyzing.is_alive()):
            self._analyzing = threading.Thread(
                target=self._analyze, name="cor-bridge-analyze", daemon=True
            )
            self._analyzing.start()

    def _analyze(self) -> None:
        try:
            with self.begin() as conn:
                analyze(conn)
        except Exception:  # statistics are an optimisation; autovacuum comes anyway
            log.warning("analyze_failed", exc_info=True)

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
