"""The worker: claim -> coalesce -> detach -> apply, over the outbox, until stopped.

A round claims due jobs (app/drain/ keeps the claim's lease alive), coalesces them into
one call per COR user, detaches, and applies what COR answered in one transition of the
outbox (app/store/jobs): complete, or what app/drain/retry.py decides of a failure
(retry at, bury, split).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

import anyio
import structlog
from sqlalchemy import Connection

from app import metrics
from app.delivery.cor import CorClient, DetachResult
from app.delivery.feed import Feed, coalesce
from app.drain import Drained, Drainer, bug, utcnow
from app.drain.retry import RetryPolicy, decide
from app.errors import DeliveryError, PermanentError, RetryableError
from app.rounds import Rounds
from app.store import Database
from app.store import jobs as job_store
from app.store.batch import GroupCommit
from app.store.jobs import Attempt, Job
from app.store.queue import Retry

log = structlog.get_logger(__name__)

__all__ = ["Worker", "coalesce", "utcnow"]


class Worker(Drained):
    """Drains the outbox until stopped; one instance per process."""

    def __init__(
        self,
        db: Database,
        cor: CorClient,
        policy: RetryPolicy,
        *,
        concurrency: int = 8,
        batch: int = 200,
        poll_seconds: float = 1.0,
        lease: timedelta = timedelta(seconds=15),
        release_on_start: bool = False,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.cor = cor
        self.policy = policy
        self.worker_id = uuid.uuid4().hex[:12]
        self.concurrency = concurrency
        self._batch = batch
        self._release_on_start = release_on_start
        self._clock = clock
        self.drainer = Drainer(
            "worker", db, self.worker_id,
            claim=job_store.claim, extend=job_store.extend, id_of=lambda j: j.id,
            work=self._work, batch=batch, concurrency=concurrency, poll_seconds=poll_seconds,
            lease=lease, clock=clock,
        )  # fmt: skip
        # Outcomes that finish together are recorded in one commit, successes in one write.
        self._settled = GroupCommit(db)

    @property
    def rounds(self) -> Rounds:
        """The drainer's rounds (their wake-up and beat)."""
        return self.drainer.rounds

    async def run(self) -> None:
        """Deliver until cancelled; a failing round is logged and retried, never fatal.

        The next batch is claimed while the current one is in flight, whenever fewer groups
        wait than there are delivery places (and fewer than two batches are held), so the
        places stay full; each claim is kept alive until its jobs are recorded."""
        if self._release_on_start:
            try:
                released = await anyio.to_thread.run_sync(self._release)
            except Exception:
                # Only a head start: claims left behind are taken again when their lease lapses.
                log.exception("worker_release_failed")
            else:
                if released:
                    log.info("worker_released_claims", jobs=released)
        log.info("worker_started", worker_id=self.worker_id)
        feed = self._feed()
        self.rounds.last_beat = time.monotonic()  # alive from the start, for /readyz
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.drainer.keep, feed.held)
                for _ in range(self.concurrency):
                    tg.start_soon(self._sender, feed)
                await self.rounds.loop(
                    lambda: self._claim_round(feed), after_error=self.drainer.poll
                )
        finally:
            with anyio.CancelScope(shield=True):
                await feed.aclose()

    async def run_once(self) -> int:
        """Claim one batch and deliver it all, its lease kept alive; how many were claimed."""
        jobs = await anyio.to_thread.run_sync(self.drainer.claim)
        if jobs:
            await self._work(jobs)
        return len(jobs)

    async def _claim_round(self, feed: Feed) -> float:
        if feed.waiting() >= self.concurrency or len(feed.held) >= 2 * self._batch:
            with anyio.move_on_after(self.drainer.poll):  # a beat for /readyz meanwhile
                await feed.moved()
            return 0.0
        jobs = await anyio.to_thread.run_sync(self.drainer.claim)
        feed.put(coalesce(jobs))
        return 0.0 if jobs else self.drainer.poll

    async def _work(self, jobs: list[Job]) -> None:
        feed = self._feed()
        feed.put(coalesce(jobs))
        feed.close()
        try:
            async with anyio.create_task_group() as keeper:
                keeper.start_soon(self.drainer.keep, feed.held)
                async with anyio.create_task_group() as senders:
                    for _ in range(self.concurrency):
                        senders.start_soon(self._sender, feed)
                keeper.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await feed.aclose()

    def _feed(self) -> Feed:
        async def check(groups: list[list[Job]]) -> list[list[Job]]:
            return await anyio.to_thread.run_sync(self._still_wanted, groups)

        return Feed(check, check_ahead=self.concurrency)

    def _release(self) -> int:
        with self.db.begin() as conn:
            return job_store.release(conn, self._clock())

    async def _sender(self, feed: Feed) -> None:
        """One delivery place: take a group, send it, hand its outcome to be recorded (which
        does not hold the place: the next call does not wait for that commit)."""
        async with anyio.create_task_group() as recording:
            while True:
                try:
                    group = await feed.take()
                except Exception:
                    # Not fatal: these jobs keep their claim until the lease lapses, then go again.
                    log.exception("detach_check_failed")
                    continue
                if group is None:
                    return
                outcome, ms = await self._send(group)
                recording.start_soon(self._record, feed, group, outcome, ms)

    async def _deliver(self, group: list[Job]) -> None:
        """Check, send and record one group (a claimed one waiting for its place)."""
        for kept in await anyio.to_thread.run_sync(self._still_wanted, [group]):
            outcome, ms = await self._send(kept)
            await self._record(self._feed(), kept, outcome, ms)

    async def _send(self, group: list[Job]) -> tuple[DetachResult | DeliveryError, int]:
        # Twins (one detach queued twice) travel together; COR hears each workspace once.
        workspaces = list(dict.fromkeys(j.workspace for j in group))
        started = time.perf_counter()
        outcome = await self._detach(group, workspaces)
        return outcome, int((time.perf_counter() - started) * 1000)

    async def _record(
        self, feed: Feed, group: list[Job], outcome: DetachResult | DeliveryError, ms: int
    ) -> None:
        ids = [j.id for j in group]
        metrics.COR_RESPONSES.labels(str(outcome.status or "error")).inc()
        try:
            with structlog.contextvars.bound_contextvars(
                job_ids=ids, cor_user_id=group[0].cor_user_id
            ):
                if isinstance(outcome, DetachResult):
                    await self._done(group, outcome, ms)
                else:
                    await anyio.to_thread.run_sync(self._apply, group, outcome, ms)
        except Exception:
            # Not fatal to the round's other deliveries: these jobs keep their claim
            # until the lease lapses, then go again.
            log.exception("delivery_not_recorded", outcome=type(outcome).__name__)
        finally:
            feed.done(ids)

    def _still_wanted(self, groups: list[list[Job]]) -> list[list[Job]]:
        """The groups' jobs nobody called off since the claim (one read for all of them);
        the others end cancelled. A group left empty is dropped."""
        ids = [j.id for g in groups for j in g]
        with self.db.read() as conn:  # a read: no write turn for the common case
            called_off = job_store.called_off(conn, ids)
        if not called_off:
            return groups
        with self.db.begin() as conn:
            job_store.drop_called_off(conn, called_off, self.worker_id, self._clock())
        metrics.JOBS_SETTLED.labels(job_store.CANCELLED).inc(len(called_off))
        log.info("detach_called_off", job_ids=sorted(called_off))
        kept = ([j for j in g if j.id not in called_off] for g in groups)
        return [g for g in kept if g]

    async def _detach(
        self, group: list[Job], workspaces: list[str]
    ) -> DetachResult | DeliveryError:
        """COR's answer, or the error it came to; never raises (but for cancellation)."""
        job = group[0]
        try:
            return await self.cor.detach(job.cor_user_id, workspaces, job.source)
        except DeliveryError as exc:
            return exc
        except Exception as exc:
            # A bug, not COR: retrying would hide it. The job stops as a dead letter (an
            # operator replays it once fixed), the traceback is in the log, and the round's
            # other deliveries go on (raising would cancel them mid-flight).
            log.exception(
                "detach_crashed", job_ids=[j.id for j in group], cor_user_id=job.cor_user_id
            )
            return bug(exc, "detach")

    async def _done(self, group: list[Job], result: DetachResult, ms: int) -> None:
        now = self._clock()
        ids = [j.id for j in group]
        call = job_store.Completed(ids, Attempt(now, ms, status=result.status), result.remaining)

        def record(conn: Connection) -> None:
            job_store.complete_many(conn, self.worker_id, [call])

        def merged(conn: Connection, calls: list[job_store.Completed]) -> list[None]:
            job_store.complete_many(conn, self.worker_id, calls)
            return [None] * len(calls)

        # Calls that finish together are recorded in one write (one savepoint, two statements).
        await self._settled.run(record, merge=("complete", merged, call))
        for job in group:
            metrics.DELIVERY_LATENCY.observe((now - job.created_at).total_seconds())
        metrics.JOBS_SETTLED.labels(job_store.DONE).inc(len(ids))
        still = sorted(set(result.remaining) & {j.workspace for j in group})
        log.info(
            "detached",
            workspaces=[j.workspace for j in group],
            status=result.status,
            ms=ms,
            still_listed=still or None,
        )

    def _apply(self, group: list[Job], exc: DeliveryError, ms: int) -> None:
        """What the failure comes to for each job, applied in one transition."""
        now = self._clock()
        # One jitter draw for the whole call, so jobs that failed together retry together.
        seed = random.random()  # noqa: S311 - jitter, not security
        decisions = {
            job.id: decide(
                self.policy, exc, attempts=job.attempts + 1, created_at=job.created_at,
                now=now, together=len(group) > 1, rand=random.Random(seed),  # noqa: S311
            )
            for job in group
        }  # fmt: skip
        attempt = Attempt(now, ms, status=exc.status, code=exc.code, message=exc.message)
        with self.db.begin() as conn:
            applied = job_store.apply(conn, group, decisions, self.worker_id, attempt)
        for job_id, twin in applied.folded.items():
            log.info("detach_folded_into_twin", job_id=job_id, twin_job_id=twin)
        for state in applied.states.values():
            if state != job_store.PENDING or not isinstance(exc, PermanentError):
                metrics.JOBS_SETTLED.labels(state).inc()
        if isinstance(exc, RetryableError):
            for job in group:
                if job.id in applied.folded:
                    continue
                decision = decisions[job.id]
                when = decision.at if isinstance(decision, Retry) else None
                log.warning(
                    "detach_failed",
                    job_id=job.id,
                    will_retry=when is not None,
                    next_attempt_at=when.isoformat() if when else None,
                    status=exc.status,
                    error=exc.message,
                )
            return
        split = len(group) > 1
        log.error("detach_refused", status=exc.status, code=exc.code, error=exc.message,
                  split=split)  # fmt: skip
        if split:
            self.wake()
