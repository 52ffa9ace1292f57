"""The worker's feed: a checked group that waits too long for a place is checked again, and a
job claimed again while held is not fed twice."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from app.delivery import feed as feed_module
from app.delivery.feed import Feed
from app.store.jobs import Job
from tests.unit.test_worker import T0


def job(i: int, user: str) -> Job:
    return Job(i, user, "OKTA", f"WS-{i}", "okta", 1, "running", 0, False, T0, T0)


class Checker:
    """Calls nothing off until told to; counts what it was asked about."""

    def __init__(self) -> None:
        self.asked: list[list[int]] = []
        self.called_off: set[int] = set()

    async def __call__(self, groups: list[list[Job]]) -> list[list[Job]]:
        self.asked.append([j.id for g in groups for j in g])
        kept = ([j for j in g if j.id not in self.called_off] for g in groups)
        return [g for g in kept if g]


async def test_a_group_checked_too_long_ago_is_checked_again_before_it_is_sent(monkeypatch):
    monkeypatch.setattr(feed_module, "FRESH_SECONDS", 0.05)
    check = Checker()
    feed = Feed(check, check_ahead=8)
    feed.put([[job(1, "ann")], [job(2, "bob")]])
    first = await feed.take()
    assert first is not None and [j.id for j in first] == [1]
    assert check.asked == [[1, 2]]  # both checked at once; bob waits for a place
    check.called_off.add(2)  # a re-grant of bob's workspace is taken in meanwhile
    await asyncio.sleep(0.1)
    feed.close()
    assert await feed.take() is None  # checked again: called off, not sent
    assert check.asked == [[1, 2], [2]]
    assert feed.held == {1}  # bob's job is no longer held (it ends cancelled)


async def test_a_fresh_check_is_not_repeated():
    check = Checker()
    feed = Feed(check, check_ahead=8)
    feed.put([[job(1, "ann")], [job(2, "bob")]])
    assert [[j.id for j in (await feed.take()) or []] for _ in range(2)] == [[1], [2]]
    assert check.asked == [[1, 2]]


async def test_a_job_claimed_again_while_held_is_not_fed_twice():
    check = Checker()
    feed = Feed(check, check_ahead=8)
    feed.put([[job(1, "ann")]])
    feed.put([[job(1, "ann"), job(3, "ann")]])  # its lease lapsed; the same worker took it again
    feed.close()
    sent = []
    while (group := await feed.take()) is not None:
        sent += [j.id for j in group]
    assert sorted(sent) == [1, 3]


async def test_the_next_groups_are_checked_while_the_last_checked_ones_are_taken():
    check = Checker()
    feed = Feed(check, check_ahead=2)
    feed.put([[job(i, f"user{i}")] for i in range(1, 6)])
    first = await feed.take()
    assert first is not None and [j.id for j in first] == [1]
    await asyncio.sleep(0.01)  # no sender asked yet: 3 and 4 are checked ahead all the same
    assert check.asked == [[1, 2], [3, 4]]
    feed.close()
    sent = [[j.id for j in g] for g in [await feed.take() for _ in range(4)] if g]
    assert sent == [[2], [3], [4], [5]]
    assert await feed.take() is None


async def test_a_check_ahead_that_fails_is_logged_and_gives_up_its_claims():
    check = Checker()

    async def failing(groups: list[list[Job]]) -> list[list[Job]]:
        if len(check.asked) == 1:
            check.asked.append([j.id for g in groups for j in g])
            raise RuntimeError("database gone")
        return await check(groups)

    feed = Feed(failing, check_ahead=2)
    feed.put([[job(i, f"user{i}")] for i in range(1, 5)])
    with capture_logs() as logs:
        assert [j.id for j in await feed.take() or []] == [1]
        await asyncio.sleep(0.01)
    assert check.asked == [[1, 2], [3, 4]]
    assert feed.held == {1, 2}  # 3 and 4 are given up: their lease lapses, they go again
    assert [e["event"] for e in logs] == ["detach_check_failed"]
    assert [j.id for j in await feed.take() or []] == [2]


async def test_closing_the_feed_ends_a_check_ahead_under_way():
    """The worker stops (its task group cancelled): a check ahead still running is cancelled
    and awaited, so it neither outlives the worker nor keeps its jobs' claims."""
    started, check = asyncio.Event(), Checker()

    async def slow(groups: list[list[Job]]) -> list[list[Job]]:
        if check.asked:
            started.set()
            await asyncio.sleep(60)
        return await check(groups)

    feed = Feed(slow, check_ahead=2)
    feed.put([[job(i, f"user{i}")] for i in range(1, 5)])
    assert [j.id for j in await feed.take() or []] == [1]
    await asyncio.wait_for(started.wait(), 1)
    await asyncio.wait_for(feed.aclose(), 1)
    assert feed.held == {1, 2}
