"""The worker against real SQLite and a fake COR behind httpx.MockTransport."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from app.changes import ChangeKind, GroupRef, MembershipChange, UserRef
from app.delivery.cor import CorClient
from app.delivery.worker import Worker, coalesce
from app.drain.retry import RetryPolicy
from app.http import StaticToken
from app.intake import accept_changes
from app.mapping import Mapping
from app.store import Database
from app.store import events as event_store
from app.store import jobs as job_store
from app.store.events import NewEvent
from app.store.jobs import NewJob
from tests.builders import load_fixture
from tests.fake_cor import API_URL, Detach, FakeCor, cor_error

T0 = datetime(2026, 3, 3, 20, 0, tzinfo=UTC)
STATIC = "static-SECRET-token"
NO_BACKOFF = RetryPolicy(base_seconds=0)
ENG = GroupRef(id="00g8mo0l5wuTxmoIC0h7", name="eng-oncall")
FIN = GroupRef(id="00g9fin0l5wuTxmoIC0h", name="finance")

_seq = itertools.count(1)


class Clock:
    """Wall-clock time the test moves by hand."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
async def cor_client(cor: FakeCor) -> AsyncIterator[CorClient]:
    """The worker's COR client: a static token the fake COR accepts."""
    cor.valid.add(STATIC)
    async with cor.client() as http:
        yield CorClient(http, API_URL, StaticToken(STATIC))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_worker(db: Database, cor_client: CorClient, clock: Clock):
    def make(policy: RetryPolicy = NO_BACKOFF, **options: Any) -> Worker:
        return Worker(db, cor_client, policy, clock=clock, **options)

    return make


def enqueue(
    db: Database,
    user: str,
    *workspaces: str,
    source: str = "OKTA",
    at: datetime = T0,
    due: datetime | None = None,
) -> list[int]:
    """Queue detach jobs straight into the outbox, with the event row they hang off."""
    with db.begin() as conn:
        new = NewEvent("okta", f"ev-{next(_seq)}", "removed", at, at, user_login=user)
        [event_id] = event_store.record_events(conn, [new])
        queued = [
            NewJob(user, source, ws, "okta", event_id, created_at=at, next_attempt_at=due or at)
            for ws in workspaces
        ]
        # A detach already pending is joined, as intake would: its id comes back.
        return [job_id for job_id, _ in job_store.enqueue(conn, queued)]


def job(db: Database, job_id: int) -> dict[str, Any]:
    with db.begin() as conn:
        [row] = job_store.get_jobs(conn, [job_id])
    return row


def outcomes(db: Database, job_id: int) -> list[str]:
    with db.begin() as conn:
        return [a["outcome"] for a in job_store.get_attempts(conn, job_id)]


def claim_as_another_worker(db: Database, *, now: datetime, lease: timedelta) -> list[int]:
    """Claim every due job for a worker that then crashes."""
    with db.begin() as conn:
        claimed = job_store.claim(conn, now=now, limit=100, worker_id="crashed", lease=lease)
    return [j.id for j in claimed]


def removal(group: GroupRef, login: str) -> MembershipChange:
    return MembershipChange(
        provider="okta",
        event_id=f"ev-{next(_seq)}",
        occurred_at=T0,
        change=ChangeKind.removed,
        user=UserRef(id=f"00u{login}", login=login),
        group=group,
    )


# --- coalescing -------------------------------------------------------------------------


async def test_one_call_per_user_carries_all_their_due_workspaces(db, mapping, cor, make_worker):
    jane, bob = "jane@acme.example", "bob@acme.example"
    with db.begin() as conn:
        decisions = accept_changes(
            conn,
            mapping,
            [removal(ENG, jane), removal(FIN, jane), removal(FIN, bob)],
            now=T0,
        )
    ids = [i for d in decisions for i in d.jobs]
    cor.users = {jane: {"WS-ENG", "WS-ONCALL", "WS-FIN", "WS-OPS"}, bob: {"WS-FIN"}}

    assert await make_worker().run_once() == 4

    calls = {c.user_id: c for c in cor.detaches}
    assert len(cor.detaches) == 2
    assert sorted(calls[jane].workspaces) == ["WS-ENG", "WS-FIN", "WS-ONCALL"]
    assert calls[jane].body["metadata"] == {"source": "OKTA"}
    assert calls[bob].workspaces == ["WS-FIN"]
    rows = {job(db, i)["workspace"] + "/" + job(db, i)["cor_user_id"]: job(db, i) for i in ids}
    assert {r["state"] for r in rows.values()} == {job_store.DONE}
    assert rows[f"WS-ENG/{jane}"]["remaining"] == ["WS-OPS"]
    assert rows[f"WS-FIN/{bob}"]["remaining"] == []
    for i in ids:
        row = job(db, i)
        assert (row["attempts"], row["last_status"], row["lease_until"]) == (1, 200, None)
        assert outcomes(db, i) == ["done"]


async def test_the_same_user_under_two_sources_is_two_calls(db, cor, make_worker):
    enqueue(db, "jane", "WS-ENG", source="OKTA")
    enqueue(db, "jane", "WS-FIN", source="MICROSOFT_DYNAMICS")
    await make_worker().run_once()
    sent = sorted((c.body["metadata"]["source"], tuple(c.workspaces)) for c in cor.detaches)
    assert sent == [("MICROSOFT_DYNAMICS", ("WS-FIN",)), ("OKTA", ("WS-ENG",))]


def test_coalesce_sends_solo_jobs_alone():
    def j(i: int, user: str, ws: str, solo: bool = False) -> job_store.Job:
        return job_store.Job(i, user, "OKTA", ws, "okta", 1, "running", 0, solo, T0, T0)

    groups = coalesce([j(1, "b", "X"), j(2, "a", "X", solo=True), j(3, "a", "Y"), j(4, "a", "Z")])
    assert sorted([job.id for job in g] for g in groups) == [[1], [2], [3, 4]]


async def test_a_batch_bounds_one_round(db, cor, make_worker):
    for user in ("ann", "bob", "cat"):
        enqueue(db, user, "WS-ENG")
    worker = make_worker(batch=2)
    assert [await worker.run_once() for _ in range(3)] == [2, 1, 0]
    assert sorted(c.user_id for c in cor.detaches) == ["ann", "bob", "cat"]


# --- retryable failures -----------------------------------------------------------------


async def test_503_keeps_jobs_pending_then_a_later_round_delivers(db, cor, make_worker, clock):
    ids = enqueue(db, "jane", "WS-ENG", "WS-ONCALL")
    cor.script_detach(cor_error(503, "ZC503", "Service unavailable"))
    worker = make_worker(RetryPolicy(base_seconds=10, max_seconds=900))

    assert await worker.run_once() == 2
    for i in ids:
        row = job(db, i)
        assert row["state"] == job_store.PENDING
        assert row["attempts"] == 1
        assert (row["last_status"], row["last_code"]) == (503, "ZC503")
        assert "Service unavailable" in row["last_message"]
        assert clock.now + timedelta(seconds=5) <= row["next_attempt_at"]
        assert row["next_attempt_at"] <= clock.now + timedelta(seconds=10)
        assert outcomes(db, i) == ["retry"]

    assert await worker.run_once() == 0  # not due yet
    assert len(cor.detaches) == 1

    clock.advance(seconds=10)
    assert await worker.run_once() == 2
    assert len(cor.detaches) == 2
    for i in ids:
        row = job(db, i)
        assert (row["state"], row["attempts"], row["last_status"]) == (job_store.DONE, 2, 200)
        assert outcomes(db, i) == ["retry", "done"]


async def test_retry_after_sets_the_next_attempt(db, cor, make_worker, clock):
    [i] = enqueue(db, "jane", "WS-ENG")
    cor.script_detach(cor_error(429, "ZC429", "Too many requests", {"Retry-After": "30"}))
    await make_worker(RetryPolicy(base_seconds=1)).run_once()
    row = job(db, i)
    assert row["state"] == job_store.PENDING
    assert row["last_status"] == 429
    assert row["next_attempt_at"] == clock.now + timedelta(seconds=30)


async def test_a_network_error_is_retried(db, cor, make_worker):
    [i] = enqueue(db, "jane", "WS-ENG")
    cor.script_detach(httpx.ConnectError("refused"))
    worker = make_worker()
    await worker.run_once()
    assert (job(db, i)["state"], job(db, i)["last_status"]) == (job_store.PENDING, None)
    assert "ConnectError" in job(db, i)["last_message"]
    await worker.run_once()
    assert job(db, i)["state"] == job_store.DONE


async def test_max_attempts_sends_the_job_to_the_dead_letters(db, cor, make_worker):
    [i] = enqueue(db, "jane", "WS-ENG")
    cor.script_detach(503, 503)
    worker = make_worker(RetryPolicy(max_attempts=2, base_seconds=0))
    await worker.run_once()
    assert job(db, i)["state"] == job_store.PENDING
    await worker.run_once()
    row = job(db, i)
    assert row["state"] == job_store.DEAD
    assert row["attempts"] == 2
    assert row["last_message"].startswith("gave up after 2 attempts: COR answered 503")
    assert await worker.run_once() == 0
    assert len(cor.detaches) == 2
    assert outcomes(db, i) == ["retry", "retry"]


async def test_max_age_sends_the_job_to_the_dead_letters(db, cor, make_worker, clock):
    [i] = enqueue(db, "jane", "WS-ENG", at=T0)
    clock.advance(hours=2)
    cor.script_detach(503)
    await make_worker(RetryPolicy(max_age=timedelta(hours=1), base_seconds=0)).run_once()
    row = job(db, i)
    assert (row["state"], row["attempts"]) == (job_store.DEAD, 1)
    assert "gave up after 1 attempts" in row["last_message"]


# --- permanent failures -----------------------------------------------------------------


async def test_a_refused_group_is_split_and_each_job_retried_alone(db, cor, make_worker, clock):
    eng, oncall, fin = enqueue(db, "jane", "WS-ENG", "WS-ONCALL", "WS-FIN")
    cor.users = {"jane": {"WS-ENG", "WS-FIN"}}
    cor.refuse = {"WS-ONCALL"}  # COR does not associate jane with it: 400 ZC001
    worker = make_worker()

    assert await worker.run_once() == 3
    [first] = cor.detaches
    assert sorted(first.workspaces) == ["WS-ENG", "WS-FIN", "WS-ONCALL"]
    for i in (eng, oncall, fin):
        row = job(db, i)
        assert (row["state"], row["solo"], row["attempts"]) == (job_store.PENDING, True, 1)
        assert (row["last_status"], row["last_code"]) == (400, "ZC001")
        assert row["next_attempt_at"] == clock.now  # at once, not after a backoff
        assert outcomes(db, i) == ["split"]

    assert await worker.run_once() == 3  # same instant: the split jobs are due
    assert sorted(c.workspaces for c in cor.detaches[1:]) == [
        ["WS-ENG"],
        ["WS-FIN"],
        ["WS-ONCALL"],
    ]
    assert job(db, eng)["state"] == job(db, fin)["state"] == job_store.DONE
    dead = job(db, oncall)
    assert (dead["state"], dead["last_status"], dead["last_code"]) == (job_store.DEAD, 400, "ZC001")
    assert dead["last_message"] == "COR answered 400 ZC001: Entity is not associated"
    assert outcomes(db, oncall) == ["split", "dead"]

    assert await worker.run_once() == 0
    assert len(cor.detaches) == 4


async def test_a_refused_solo_job_goes_to_the_dead_letters_at_once(db, cor, make_worker):
    [i] = enqueue(db, "ghost", "WS-ENG")
    cor.script_detach(httpx.Response(400, json=load_fixture("cor/error-unknown-user.json")))
    worker = make_worker()
    await worker.run_once()
    row = job(db, i)
    assert (row["state"], row["last_code"], row["attempts"]) == (job_store.DEAD, "ZC001", 1)
    assert "Entity is not associated" in row["last_message"]
    assert outcomes(db, i) == ["dead"]
    assert await worker.run_once() == 0
    assert len(cor.detaches) == 1


@pytest.mark.parametrize("user", [".", ".."])
async def test_a_user_id_that_would_steer_the_call_is_dead_and_never_sent(
    db, cor, make_worker, user
):
    # Intake refuses such ids; a job queued before it did must still never reach COR.
    ids = enqueue(db, user, "WS-ENG", "WS-FIN")
    worker = make_worker()
    while await worker.run_once():
        pass
    for i in ids:
        row = job(db, i)
        assert (row["state"], row["last_status"]) == (job_store.DEAD, None)
        assert f"{user!r} is not a usable identifier in a URL path" in row["last_message"]
    assert cor.requests == []


async def test_a_split_wakes_the_worker(db, cor, make_worker):
    enqueue(db, "jane", "WS-ENG", "WS-ONCALL")
    cor.script_detach(400)
    worker = make_worker()
    await worker.run_once()
    assert worker.rounds._wake.is_set()


# --- claims -----------------------------------------------------------------------------


async def test_jobs_not_yet_due_are_not_claimed(db, cor, make_worker, clock):
    [i] = enqueue(db, "jane", "WS-ENG", due=T0 + timedelta(minutes=10))
    worker = make_worker()
    assert await worker.run_once() == 0
    clock.advance(minutes=9, seconds=59)
    assert await worker.run_once() == 0
    assert cor.detaches == []
    clock.advance(seconds=1)
    assert await worker.run_once() == 1
    assert job(db, i)["state"] == job_store.DONE


async def test_a_lapsed_claim_is_taken_again(db, cor, make_worker, clock):
    [i] = enqueue(db, "jane", "WS-ENG")
    assert claim_as_another_worker(db, now=T0, lease=timedelta(minutes=1)) == [i]
    worker = make_worker()
    clock.advance(seconds=30)
    assert await worker.run_once() == 0  # the other worker's lease still holds
    clock.advance(seconds=31)
    assert await worker.run_once() == 1
    row = job(db, i)
    assert (row["state"], row["claimed_by"], row["lease_until"]) == (job_store.DONE, None, None)
    assert len(cor.detaches) == 1


async def test_a_claim_holds_a_lease_while_the_call_is_in_flight(db, cor, make_worker, clock):
    [i] = enqueue(db, "jane", "WS-ENG")
    seen: list[dict[str, Any]] = []
    cor.on_detach = lambda call: seen.append(job(db, i))
    worker = make_worker(lease=timedelta(seconds=90))
    await worker.run_once()
    [during] = seen
    assert during["state"] == job_store.RUNNING
    assert during["claimed_by"] == worker.worker_id
    assert during["lease_until"] == T0 + timedelta(seconds=90)


async def test_a_slow_batch_keeps_its_claim_past_the_lease(db, cor, make_worker, clock):
    """COR slower than the lease: the worker extends it, so no other replica re-sends."""
    [i] = enqueue(db, "jane", "WS-ENG")
    cor.delay = 0.5
    worker = make_worker(lease=timedelta(seconds=0.15))  # extended every 0.05 s
    delivery = asyncio.create_task(worker.run_once())
    await asyncio.sleep(0.3)  # well past the first lease, the call still in flight
    clock.advance(seconds=0.3)
    await asyncio.sleep(0.1)  # an extension from the moved clock
    assert claim_as_another_worker(db, now=clock(), lease=timedelta(minutes=1)) == []
    assert await delivery == 1
    assert job(db, i)["state"] == job_store.DONE
    assert len(cor.detaches) == 1


async def run_until(worker: Worker, done: Any, timeout: float = 2.0) -> asyncio.Task[None]:
    """Start `worker.run()` and wait until `done()` holds; the task is still running."""
    task = asyncio.create_task(worker.run())
    for _ in range(int(timeout / 0.01)):
        if done():
            return task
        await asyncio.sleep(0.01)
    task.cancel()
    raise AssertionError("the worker never got there")


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_release_on_start_puts_running_jobs_back(db, cor, make_worker):
    [i] = enqueue(db, "jane", "WS-ENG")
    claim_as_another_worker(db, now=T0, lease=timedelta(hours=1))
    assert await make_worker().run_once() == 0  # without release the claim stands

    worker = make_worker(release_on_start=True, poll_seconds=0.01)
    task = await run_until(worker, lambda: job(db, i)["state"] == job_store.DONE)
    await stop(task)
    assert [c.workspaces for c in cor.detaches] == [["WS-ENG"]]


async def test_release_folds_a_crashed_claim_into_its_pending_twin(db, cor, make_worker):
    # A crashed claim with a pending twin: putting it back to pending would break the
    # one-pending-per-detach rule, so it folds into the twin, which is delivered once.
    [crashed] = enqueue(db, "jane", "WS-ENG")
    claim_as_another_worker(db, now=T0, lease=timedelta(hours=1))
    [twin] = enqueue(db, "jane", "WS-ENG")
    worker = make_worker(release_on_start=True, poll_seconds=0.01)
    task = await run_until(worker, lambda: job(db, twin)["state"] == job_store.DONE)
    assert not task.done()
    await stop(task)
    assert job(db, crashed)["state"] == job_store.CANCELLED
    assert "folded" in job(db, crashed)["last_message"]
    assert len(cor.detaches) == 1


async def test_wake_skips_the_poll_wait(db, cor, make_worker):
    worker = make_worker(poll_seconds=60)
    task = await run_until(worker, lambda: worker.last_beat is not None)
    await asyncio.sleep(0.05)  # the first round found nothing: the worker now waits
    [i] = enqueue(db, "jane", "WS-ENG")
    worker.wake()
    try:
        await run_until_state(db, i, job_store.DONE)
    finally:
        await stop(task)


async def run_until_state(db: Database, job_id: int, state: str) -> None:
    for _ in range(200):
        if job(db, job_id)["state"] == state:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"job {job_id} never reached {state}")


async def test_a_failing_round_does_not_stop_the_worker(db, cor_client, cor, clock):
    [i] = enqueue(db, "jane", "WS-ENG")
    broken = iter([True])

    def flaky() -> datetime:
        if next(broken, False):
            raise RuntimeError("database went away")
        return clock()

    worker = Worker(db, cor_client, NO_BACKOFF, clock=flaky, poll_seconds=0.01)
    task = await run_until(worker, lambda: job(db, i)["state"] == job_store.DONE)
    await stop(task)


# --- concurrency ------------------------------------------------------------------------


@pytest.mark.parametrize(("concurrency", "expected"), [(1, 1), (2, 2), (8, 6)])
async def test_concurrency_bounds_calls_in_flight(db, cor, make_worker, concurrency, expected):
    users = [f"user-{n}" for n in range(6)]
    for user in users:
        enqueue(db, user, "WS-ENG")
    cor.delay = 0.3  # longer than a busy machine takes to start the six calls
    assert await make_worker(concurrency=concurrency).run_once() == 6
    assert cor.max_in_flight == expected
    assert sorted(c.user_id for c in cor.detaches) == users


# --- the same detach queued twice -------------------------------------------------------


async def test_a_removal_queued_while_its_twin_is_in_flight_survives_a_503(db, cor, make_worker):
    [first] = enqueue(db, "jane", "WS-ENG")
    second: list[int] = []

    def requeue_during_call(call: Detach) -> None:
        if not second:
            second.extend(enqueue(db, "jane", "WS-ENG", "WS-FIN"))

    cor.on_detach = requeue_during_call
    cor.script_detach(503)
    worker = make_worker()

    await worker.run_once()
    twin, fin = second
    assert job(db, twin)["state"] == job_store.PENDING
    closed = job(db, first)
    assert closed["state"] == job_store.CANCELLED
    assert f"job {twin}" in closed["last_message"]
    assert outcomes(db, first) == ["retry"]

    await worker.run_once()
    assert [sorted(c.workspaces) for c in cor.detaches] == [["WS-ENG"], ["WS-ENG", "WS-FIN"]]
    assert job(db, twin)["state"] == job(db, fin)["state"] == job_store.DONE


async def test_twins_claimed_together_are_sent_once_and_requeued_once(db, cor, make_worker, clock):
    [old] = enqueue(db, "jane", "WS-ENG")
    claim_as_another_worker(db, now=T0, lease=timedelta(minutes=1))
    [new] = enqueue(db, "jane", "WS-ENG", at=T0 + timedelta(seconds=10))
    clock.advance(minutes=2)
    cor.script_detach(503)
    worker = make_worker()

    assert await worker.run_once() == 2
    [call] = cor.detaches
    assert call.workspaces == ["WS-ENG"]
    assert job(db, new)["state"] == job_store.PENDING
    assert job(db, old)["state"] == job_store.CANCELLED
    assert f"job {new}" in job(db, old)["last_message"]

    assert await worker.run_once() == 1
    assert job(db, new)["state"] == job_store.DONE


async def test_a_split_with_a_twin_in_flight_keeps_one_pending(db, cor, make_worker):
    [eng, fin] = enqueue(db, "jane", "WS-ENG", "WS-FIN")
    second: list[int] = []

    def requeue_during_call(call: Detach) -> None:
        if not second:
            second.extend(enqueue(db, "jane", "WS-ENG"))

    cor.on_detach = requeue_during_call
    cor.script_detach(400)
    await make_worker().run_once()
    [twin] = second
    assert job(db, fin)["state"] == job_store.PENDING
    assert job(db, fin)["solo"] is True
    assert job(db, twin)["state"] == job_store.PENDING
    assert job(db, eng)["state"] == job_store.CANCELLED


async def test_twins_both_done_when_cor_succeeds(db, cor, make_worker, clock):
    [old] = enqueue(db, "jane", "WS-ENG")
    claim_as_another_worker(db, now=T0, lease=timedelta(minutes=1))
    [new] = enqueue(db, "jane", "WS-ENG")
    clock.advance(minutes=2)
    await make_worker().run_once()
    assert job(db, old)["state"] == job(db, new)["state"] == job_store.DONE
    assert [c.workspaces for c in cor.detaches] == [["WS-ENG"]]


# --- the unexpected ---------------------------------------------------------------------


async def test_an_unexpected_error_is_a_dead_letter_and_does_not_sink_the_others(
    db, cor, make_worker
):
    [bob] = enqueue(db, "bob", "WS-ENG")
    [jane] = enqueue(db, "jane", "WS-ENG")

    def explode_for_bob(call: Detach) -> None:
        if call.user_id == "bob":
            raise RuntimeError("a bug in the client")

    cor.on_detach = explode_for_bob
    cor.delay = 0.01
    assert await make_worker().run_once() == 2
    assert job(db, jane)["state"] == job_store.DONE
    row = job(db, bob)
    assert (row["state"], row["attempts"]) == (job_store.DEAD, 1)  # a bug is not retried
    assert "RuntimeError" in row["last_message"] and row["last_code"] == "BRIDGE_BUG"
    assert outcomes(db, bob) == ["dead"]


def test_mapping_fixture_is_the_one_intake_uses(mapping: Mapping):
    # Guards the coalescing test above: ENG grants two workspaces, FIN one.
    assert list(mapping.workspaces_for("okta", ENG)) == ["WS-ENG", "WS-ONCALL"]
    assert list(mapping.workspaces_for("okta", FIN)) == ["WS-FIN"]


def _change(kind: ChangeKind, at: datetime) -> MembershipChange:
    return MembershipChange(
        provider="okta",
        event_id=f"ev-{next(_seq)}",
        occurred_at=at,
        change=kind,
        user=UserRef(id="00ujane", login="jane"),
        group=FIN,
    )


@pytest.mark.parametrize("reply", [503, 200])
async def test_a_regrant_during_delivery_stops_the_retry_not_the_call(
    db, mapping: Mapping, make_worker, reply: int
):
    slow = FakeCor(delay=0.3)
    slow.valid.add(STATIC)
    slow.script_detach(httpx.Response(reply, json={"id": 1, "workspaces": []}))
    with db.begin() as conn:
        [removed] = accept_changes(conn, mapping, [_change(ChangeKind.removed, T0)], now=T0)
    async with slow.client() as http:
        worker = Worker(db, CorClient(http, API_URL, StaticToken(STATIC)), NO_BACKOFF)
        delivery = asyncio.create_task(worker.run_once())
        for _ in range(500):  # until the detach is in flight
            if slow.in_flight:
                break
            await asyncio.sleep(0.01)
        assert slow.in_flight == 1
        with db.begin() as conn:
            [added] = accept_changes(
                conn, mapping, [_change(ChangeKind.added, T0 + timedelta(minutes=1))], now=T0
            )
        assert "will not be retried" in added.detail[0]
        await delivery
    [job_id] = removed.jobs
    row = job(db, job_id)
    if reply == 503:
        assert row["state"] == job_store.CANCELLED
        assert "re-granted" in row["last_message"]
    else:  # COR already did it; the history says so
        assert row["state"] == job_store.DONE


async def test_jobs_that_failed_together_retry_together(db, cor, make_worker):
    ids = enqueue(db, "jane", "WS-ENG", "WS-ONCALL", "WS-FIN")
    cor.script_detach(httpx.Response(503))
    worker = make_worker(RetryPolicy(base_seconds=8, max_seconds=60))
    await worker.run_once()
    due = {job(db, i)["next_attempt_at"] for i in ids}
    assert len(due) == 1, "one jitter draw for the call, so one retry call"


async def test_a_claimed_job_called_off_before_its_turn_is_not_sent(db, mapping, cor, make_worker):
    with db.begin() as conn:
        [removed] = accept_changes(conn, mapping, [_change(ChangeKind.removed, T0)], now=T0)
    worker = make_worker()
    [claimed] = worker.drainer.claim()  # claimed, waiting for a free delivery slot
    with db.begin() as conn:
        accept_changes(
            conn, mapping, [_change(ChangeKind.added, T0 + timedelta(minutes=1))], now=T0
        )
    await worker._deliver([claimed])
    assert cor.detaches == []
    assert job(db, removed.jobs[0])["state"] == job_store.CANCELLED
