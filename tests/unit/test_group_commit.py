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
