"""What the scenarios stand on: the mapping file, durable PostgreSQL, seeded databases."""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert

from app.store import Database
from app.store import scim as scim_store
from app.store.schema import events, jobs
from tests.postgres import PostgresServer, find_bindir, why_unavailable

WORKSPACES = ["WS-ENG", "WS-ONCALL", "WS-FIN", "WS-OPS"]
DRAIN_GROUP = "00g9fin0l5wuTxmoIC0h"
FINANCE_EXTERNAL_ID = "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159"


def coalesce_group(i: int) -> str:
    return f"00gcoal{i:013d}"


def write_mapping(folder: Path, coalesce_groups: int = 200) -> None:
    lines = [
        "providers:",
        "  okta: {cor_source: OKTA, user_id: '{login}'}",
        "  entra: {cor_source: MICROSOFT_DYNAMICS, user_id: '{login}'}",
        "groups:",
        "  - {provider: okta, group_id: 00g8mo0l5wuTxmoIC0h7, workspaces: [WS-ENG, WS-ONCALL]}",
        f"  - {{provider: okta, group_id: {DRAIN_GROUP}, workspaces: [WS-FIN]}}",
        "  - {provider: entra, group_name: Finance, workspaces: [WS-FIN]}",
    ]
    for i in range(coalesce_groups):
        ws = WORKSPACES[i % len(WORKSPACES)]
        lines.append(f"  - {{provider: okta, group_id: {coalesce_group(i)}, workspaces: [{ws}]}}")
    (folder / "mapping.yaml").write_text("\n".join(lines) + "\n")


class Databases:
    """A fresh database per scenario: a SQLite file, or one on a durable PostgreSQL server."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.pg: PostgresServer | None = None
        self._names = itertools.count(1)

    def start_postgres(self) -> str:
        """Start the server (fsync and synchronous_commit on); its version."""
        bindir = find_bindir()
        reason = why_unavailable(bindir)
        if reason:
            raise SystemExit(f"PostgreSQL benchmarks need a server: {reason}")
        assert bindir is not None
        self.pg = PostgresServer(bindir).start()
        # tests/postgres.py tunes for speed; a benchmark of durable acks wants durable commits.
        for setting in ("fsync = on", "synchronous_commit = on", "full_page_writes = on"):
            self.pg._admin(f"ALTER SYSTEM SET {setting}")
        self.pg._admin("SELECT pg_reload_conf()")
        import psycopg

        with psycopg.connect(self.pg.url(), autocommit=True) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"

    def stop(self) -> None:
        if self.pg is not None:
            self.pg.stop()

    @contextmanager
    def fresh(self, kind: str) -> Iterator[str]:
        if kind == "sqlite":
            folder = Path(tempfile.mkdtemp(prefix="db-", dir=self.workdir))
            yield f"sqlite:///{folder}/bridge.db"
            return
        assert self.pg is not None
        with self.pg.database() as url:
            yield url


def migrated(url: str) -> Database:
    db = Database(url)
    db.migrate()
    return db


def seed_pending(url: str, count: int, logins: str, group: str, chunk: int = 5000) -> None:
    """`count` pending detach jobs of WS-FIN, one per user `{logins}{i}@acme.example`, each with
    the event that queued it, written in bulk (what intake would have left behind)."""
    db = migrated(url)
    now = datetime.now(UTC)
    try:
        for start in range(0, count, chunk):
            stop = min(count, start + chunk)
            with db.begin() as conn:
                rows = [_event(i, logins, group, now) for i in range(start, stop)]
                query = insert(events).returning(events.c.id, sort_by_parameter_order=True)
                ids = conn.execute(query, rows).scalars().all()
                batch = zip(ids, range(start, stop), strict=True)
                conn.execute(insert(jobs), [_job(e, i, logins, now) for e, i in batch])
    finally:
        db.dispose()


def _event(i: int, logins: str, group: str, now: datetime) -> dict[str, object]:
    login = f"{logins}{i}@acme.example"
    return {
        "provider": "okta", "source_event_id": f"seed-{logins}-{i}",
        "kind": "removed", "occurred_at": now, "received_at": now, "user_id": f"00u{logins}{i}",
        "user_login": login, "cor_user_id": login, "group_id": group, "group_name": "finance",
        "decision": "queued", "detail": [f"queued: detach WS-FIN from {login}"], "change": None,
    }  # fmt: skip


def _job(event_id: int, i: int, logins: str, now: datetime) -> dict[str, object]:
    return {
        "cor_user_id": f"{logins}{i}@acme.example", "source": "OKTA", "workspace": "WS-FIN",
        "provider": "okta", "event_id": event_id, "state": "pending", "attempts": 0,
        "solo": False, "created_at": now, "updated_at": now, "next_attempt_at": now,
    }  # fmt: skip


def seed_scim_group(url: str, members: int) -> tuple[str, list[str]]:
    """A SCIM group `Finance` with `members` users; (group id, member ids)."""
    db = migrated(url)
    now = datetime.now(UTC)
    user_ids = [f"{i:032x}" for i in range(1, members + 1)]
    try:
        with db.begin() as conn:
            for n, uid in enumerate(user_ids):
                scim_store.insert_resource(conn, scim_store.USERS, uid, _scim_user(n), now)
            group_id = "f" * 32
            group = {
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "displayName": "Finance",
                "externalId": FINANCE_EXTERNAL_ID,
            }
            scim_store.insert_resource(conn, scim_store.GROUPS, group_id, group, now)
            scim_store.set_group_members(conn, group_id, {u: None for u in user_ids})
    finally:
        db.dispose()
    return group_id, user_ids


def _scim_user(n: int) -> dict[str, object]:
    login = f"scim{n}@acme.example"
    return {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": login,
        "externalId": f"scim{n}",
        "active": True,
        "emails": [{"value": login, "primary": True, "type": "work"}],
    }
