"""Intake's turn by user on PostgreSQL; submits merged into one intake call; fresh statistics."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from app.changes import ChangeKind, GroupRef, MembershipChange, UserRef
from app.intake.locks import MAX_KEYS, intake_keys
from app.mapping import Mapping
from app.store import Database
from app.store.batch import GroupCommit
from app.store.db import lock_intake_keys, serialize_intake


def removal(user: str, group: str = "00g8mo0l5wuTxmoIC0h7", event: str | None = None):
    return MembershipChange(
        provider="okta",
        event_id=event or f"ev-{user}-{group}",
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        change=ChangeKind.removed,
        user=UserRef(id=f"00u{user}", login=f"{user}@acme.example"),
        group=GroupRef(id=group, name="eng-oncall"),
    )


def test_keys_name_the_idp_and_the_cor_user(mapping: Mapping):
    keys = intake_keys(mapping, [removal("jane"), removal("jane", "00gother")])
    assert keys == {"idp:okta:00ujane", f"cor:{mapping.cor_user_id('okta', removal('jane').user)}"}


def test_too_many_keys_take_the_whole_turn(mapping: Mapping):
    many = [removal(f"u{i}") for i in range(MAX_KEYS)]
    assert intake_keys(mapping, many) is None


def _waits(db: Database, keys) -> bool:
    """Whether taking `keys` (None: the whole turn) waits for another transaction."""
    with db.begin() as conn:
        conn.execute(text("SET LOCAL lock_timeout = '200ms'"))
        try:
            lock_intake_keys(conn, keys)
        except Exception as exc:  # psycopg's LockNotAvailable, wrapped by SQLAlchemy
            assert "lock timeout" in str(exc)
            return True
    return False


def test_users_wait_only_for_their_own_keys(postgres_url: str):
    """A transaction holding Jane's turn holds back Jane and the whole turn, nobody else."""
    db = Database(postgres_url)
    db.migrate()
    try:
        with db.begin() as holder:
            lock_intake_keys(holder, {"idp:okta:jane", "cor:jane@acme.example"})
            assert not _waits(db, {"idp:okta:bob", "cor:bob@acme.example"})
            assert _waits(db, {"idp:okta:bob", "cor:jane@acme.example"})
            assert _waits(db, None)
        with db.begin() as whole:
            serialize_intake(whole)
            assert _waits(db, {"idp:okta:bob"})
        assert not _waits(db, {"idp:okta:jane"})
    finally:
        db.dispose()


def test_keys_already_held_are_not_taken_again(postgres_url: str):
    db = Database(postgres_url)
    db.migrate()
    try:
        with db.begin() as conn:
            lock_intake_keys(conn, {"idp:okta:jane"})
            lock_intake_keys(conn, {"idp:okta:jane", "idp:okta:bob"})
            serialize_intake(conn)
            lock_intake_keys(conn, {"idp:okta:li"})  # under the whole turn: nothing to take
            count = (
                "SELECT count(*) FROM pg_locks"
                " WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
            )
            assert conn.execute(text(count)).scalar_one() == 4  # jane, bob, shared, whole
    finally:
        db.dispose()


async def test_pieces_of_one_merge_key_run_as_one_call_and_fall_back_alone(db: Database):
    calls: list[list[int]] = []

    def merged(conn, payloads):
        calls.append(list(payloads))
        if 13 in payloads:
            raise ValueError("one of them is bad")
        return [p * 10 for p in payloads]

    def alone(value):
        def work(conn):
            if value == 13:
                raise ValueError("bad")
            return value * 10

        return work

    commits = GroupCommit(db)
    ok = await asyncio.gather(*(commits.run(alone(v), merge=("m", merged, v)) for v in (1, 2, 3)))
    assert ok == [10, 20, 30] and calls == [[1, 2, 3]]
    mixed = await asyncio.gather(
        *(commits.run(alone(v), merge=("m", merged, v)) for v in (4, 13, 5)),
        return_exceptions=True,
    )
    assert mixed[0] == 40 and mixed[2] == 50 and isinstance(mixed[1], ValueError)


def test_migrate_and_growth_analyze_intake_tables(postgres_url: str):
    db = Database(postgres_url)
    db.migrate()
    query = text(
        "SELECT count(*) FROM pg_stat_user_tables WHERE relname IN ('events', 'jobs', "
        "'memberships') AND (last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL)"
    )
    try:
        with db.read() as conn:
            assert conn.execute(query).scalar_one() == 3
        with db.begin() as conn:
            conn.execute(text("SELECT pg_stat_reset()"))
        db.grew(499)
        assert db._analyzing is None
        db.grew(1)  # the first mark: analyzed in the background
        assert db._analyzing is not None
        db._analyzing.join(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # statistics reach the view a moment later
            with db.read() as conn:
                if conn.execute(query).scalar_one() == 3:
                    return
            time.sleep(0.2)
        pytest.fail("intake's tables were not analyzed")
    finally:
        db.dispose()
