"""What the store must do alike on SQLite and PostgreSQL (each test runs on both)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from app.changes import ChangeKind, GroupRef, IgnoredEvent, MembershipChange, UserRef
from app.intake import accept_changes
from app.mapping import Mapping
from app.store import Database
from app.store import events as event_store
from app.store import jobs as job_store
from app.store import sessions as session_store
from app.store.schema import admin_sessions

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
ENG = GroupRef(id="00g8mo0l5wuTxmoIC0h7", name="eng-oncall")  # WS-ENG, WS-ONCALL
PLATFORM = GroupRef(id="00gplatform000000000", name="platform")  # WS-ENG
JANE = UserRef(id="00ujane", login="jane@acme.example")


def membership(kind: ChangeKind, group: GroupRef, event_id: str, user: UserRef = JANE):
    return MembershipChange(
        provider="okta", event_id=event_id, occurred_at=NOW, change=kind, user=user, group=group
    )


def pending_workspaces(db: Database) -> list[str]:
    with db.begin() as conn:
        rows = job_store.get_jobs(conn, job_store.select_job_ids(conn, states=["pending"]))
    return sorted(r["workspace"] for r in rows)


def test_values_longer_than_a_column_says_or_with_nul_are_kept(db: Database, mapping: Mapping):
    """SQLite never enforces VARCHAR(n); PostgreSQL must not refuse what SQLite keeps.

    NUL, which PostgreSQL text cannot hold, becomes U+FFFD in identifiers on either engine."""
    long = "x" * 400
    user = UserRef(id=long, login=f"{long}@acme.example")
    group = GroupRef(id="00g9fin0l5wuTxmoIC0h", name=f"finance {long}")
    ignored = IgnoredEvent(
        provider="okta",
        event_id="e" * 200,
        occurred_at=NOW,
        kind="k" * 100,
        reason="nul \x00 inside",
        user=UserRef(id="00u\x00nul"),
    )
    with db.begin() as conn:
        decisions = accept_changes(
            conn, mapping, [membership(ChangeKind.removed, group, "e1", user), ignored], now=NOW
        )
    assert [d.decision for d in decisions] == ["queued", "ignored"]
    with db.begin() as conn:
        [event] = event_store.list_user_events(conn, long)
        assert (event["group_name"], event["user_login"]) == (group.name, user.login)
        [nul] = event_store.list_user_events(conn, "00u\ufffdnul")
        assert nul["kind"] == "k" * 100
    assert pending_workspaces(db) == ["WS-FIN"]


def test_concurrent_removals_from_two_granting_groups_detach_everything(
    db: Database, mapping: Mapping
):
    """Each removal alone keeps WS-ENG (the other group grants it); both together must not."""
    with db.begin() as conn:
        added = [membership(ChangeKind.added, g, f"add-{g.id}") for g in (ENG, PLATFORM)]
        accept_changes(conn, mapping, added, now=NOW)
    second_done = threading.Event()
    errors: list[BaseException] = []

    def remove_from_platform() -> None:
        try:
            with db.begin() as conn:
                accept_changes(
                    conn, mapping, [membership(ChangeKind.removed, PLATFORM, "rm-p")], now=NOW
                )
        except BaseException as exc:
            errors.append(exc)
        finally:
            second_done.set()

    with db.begin() as conn:
        accept_changes(conn, mapping, [membership(ChangeKind.removed, ENG, "rm-e")], now=NOW)
        second = threading.Thread(target=remove_from_platform)
        second.start()
        # Give the second removal time to read memberships while the first is uncommitted
        # (it must wait for this transaction instead).
        assert not second_done.wait(0.3)
    second.join(timeout=30)
    assert not second.is_alive() and not errors
    assert pending_workspaces(db) == ["WS-ENG", "WS-ONCALL"]


def test_a_connection_returned_after_dispose_is_closed(database_url: str):
    """A transaction that outlives dispose() (a worker round at shutdown) leaks nothing."""
    database = Database(database_url)
    database.migrate()
    with database.begin() as conn:
        raw = conn.connection.dbapi_connection
        database.dispose()
        assert conn.scalar(select(1)) == 1
    assert raw is not None
    closed = getattr(raw, "closed", None)
    if isinstance(closed, bool):  # psycopg; sqlite3 connections do not say
        assert closed


def test_admin_sessions_last_until_they_expire_or_end(db: Database):
    hour = timedelta(hours=1)
    with db.begin() as conn:
        session_store.start_session(conn, "old", NOW - 13 * hour, NOW - hour)
        session_store.start_session(conn, "a" * 64, NOW - 13 * hour, NOW - hour)
        assert not session_store.session_active(conn, "old", NOW)
        assert session_store.session_active(conn, "old", NOW - 2 * hour)
        session_store.start_session(conn, "new", NOW, NOW + 12 * hour)  # drops expired ones
        assert conn.execute(select(admin_sessions.c.id)).scalars().all() == ["new"]
        assert session_store.session_active(conn, "new", NOW)
        assert session_store.end_session(conn, "new")
        assert not session_store.end_session(conn, "new")
        assert not session_store.session_active(conn, "new", NOW)
