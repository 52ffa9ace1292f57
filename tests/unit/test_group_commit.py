"""Group commit: pieces that arrive together share a transaction, each as if alone."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from app.store import Database
from app.store.batch import GroupCommit
from app.store.schema import schema_version


def count(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(schema_version)).scalar_one())


def insert(version: int):
    def work(conn):
        conn.execute(schema_version.insert().values(version=version))
        return version

    return work


def insert_then_fail(conn):
    conn.execute(schema_version.insert().values(version=99))
    raise ValueError("refused")


async def test_pieces_commit_together_and_a_failing_one_takes_only_itself_back(db):
    commits = GroupCommit(db)
    before = count(db)
    results = await asyncio.gather(
        *(commits.run(insert(v)) for v in (10, 11)),
        commits.run(insert_then_fail),
        commits.run(insert(12)),
        return_exceptions=True,
    )
    assert results[:2] == [10, 11] and results[3] == 12
    assert isinstance(results[2], ValueError)
    assert count(db) == before + 3


async def test_a_lone_piece_that_fails_keeps_nothing(db):
    commits = GroupCommit(db)
    before = count(db)
    with pytest.raises(ValueError, match="refused"):
        await commits.run(insert_then_fail)
    assert count(db) == before
    assert await commits.run(insert(5)) == 5
    assert count(db) == before + 1


async def test_batches_stay_within_their_weight(db):
    commits = GroupCommit(db, max_weight=3)
    sizes: list[int] = []
    original = commits._commit

    def spy(works):
        sizes.append(len(works))
        return original(works)

    commits._commit = spy
    await asyncio.gather(*(commits.run(insert(20 + i), weight=2) for i in range(3)))
    await commits.run(insert(30), weight=10)  # heavier than a batch: goes alone
    assert sizes == [1, 1, 1, 1]
    light = [commits.run(insert(40 + i)) for i in range(3)]
    await asyncio.gather(*light)
    assert sizes[4:] == [3]


async def test_first_runs_once_per_transaction_before_any_piece_and_outlives_a_rollback(db):
    """Intake's turn is taken before any piece's row locks: taken by a later piece, it would
    come after an earlier piece's row locks, and two replicas could deadlock (seen: a SCIM
    PATCH holding its group's row waited for the turn held by a transaction that waited for
    that row)."""
    seen: list[str] = []

    def first(conn, keys) -> None:
        seen.append("first")
        if db.dialect == "postgresql":
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(4242)")

    def held(conn) -> bool:
        if db.dialect != "postgresql":
            return True
        found = conn.exec_driver_sql(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242"
            " AND pid = pg_backend_pid()"
        )
        return bool(found.scalar_one())

    def piece(name: str, fail: bool = False):
        def work(conn):
            seen.append(name)
            assert held(conn), f"{name}: the lock taken first is gone"
            if fail:
                raise ValueError("refused")
            return name

        return work

    commits = GroupCommit(db, first=first)
    results = await asyncio.gather(
        commits.run(piece("a")),
        commits.run(piece("b", fail=True)),
        commits.run(piece("c")),
        return_exceptions=True,
    )
    assert results[0] == "a" and results[2] == "c"
    assert isinstance(results[1], ValueError)
    assert seen[0] == "first" and seen.count("first") <= 2  # one per shared transaction
    assert [s for s in seen if s != "first"] == ["a", "b", "c"]
