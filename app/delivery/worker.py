"""The worker: claims due jobs, coalesces them per COR user, detaches, records the outcome."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import groupby

import anyio
import structlog
from sqlalchemy import Connection

from app import metrics
from app.delivery.cor import CorClient, DetachResult
from app.delivery.retry import RetryPolicy, next_attempt_at
from app.errors import DeliveryError, PermanentError, RetryableError
from app.rounds import Rounds
from app.store import Database
from app.store import jobs as job_store
from app.store.batch import GroupCommit
from app.store.db import serialize_intake
from app.store.jobs import Job

log = structlog.get_logger(__name__)


def utcnow() -> datetime:
    """Now, aware, in UTC."""
    return datetime.now(UTC)


def coalesce(jobs: list[Job]) -> list[list[Job]]:
    """One group per (COR user, source); a job marked solo travels alone."""
    groups: list[list[Job]] = []
    key = lambda j: (j.cor_user_id, j.source)  # noqa: E731
    for _, same_user in groupby(sorted(jobs, key=key), key=key):
        together = []
        for job in same_user:
            if job.solo:
                groups.append([job])
            else:
                together.append(job)
        if together:
            groups.append(together)
    return groups


class Worker:
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
        lease: timedelta = timedelta(minutes=2),
        release_on_start: bool = False,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.cor = cor
        self.policy = policy
        self.worker_id = uuid.uuid4().hex[:12]
        self._limit = asyncio.Semaphore(concurrency)
        self._batch = batch
        self._poll = poll_seconds
        self._lease = lease
        self._release_on_start = release_on_start
        self._clock = clock
        self.rounds = Rounds("worker")
        # Successful detaches that finish together are recorded in one commit.
        self._settled = GroupCommit(db)

    def wake(self) -> None:
        """New work was committed: look now rather than at the next poll."""
        self.rounds.wake()

    @property
    def last_beat(self) -> float | None:
        """When the latest round started (monotonic), for /readyz."""
        return self.rounds.last_beat

    async def run(self) -> None:
        """Deliver until cancelled; a failing round is logged and retried, never fatal."""
        self.rounds.last_beat = time.monotonic()  # alive from the start, for /readyz
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
        await self.rounds.loop(self._round, after_error=self._poll)

    async def _round(self) -> float:
        return 0.0 if await self.run_once() else self._poll

    async def run_once(self) -> int:
        """Claim one batch of due jobs and deliver it; returns how many were claimed."""
        jobs = await anyio.to_thread.run_sync(self._claim)
        if jobs:
            async with anyio.create_task_group() as tg:
                # A batch can outlast its lease while COR is slow (200 jobs, 8 at a time, 10 s
                # timeouts): keep the claim alive, or another replica sends them all again.
                tg.start_soon(self._keep_claims, [j.id for j in jobs])
                async with anyio.create_task_group() as deliveries:
                    for group in coalesce(jobs):
                        deliveries.start_soon(self._deliver, group)
                tg.cancel_scope.cancel()
        return len(jobs)

    async def _keep_claims(self, ids: list[int]) -> None:
        every = self._lease.total_seconds() / 3
        while True:
            await anyio.sleep(every)
            try:
                await anyio.to_thread.run_sync(self._extend, ids)
            except Exception:  # the lease lapses and another worker takes over: no loss
                log.exception("worker_lease_not_extended")

    def _extend(self, ids: list[int]) -> None:
        with self.db.begin() as conn:
            job_store.extend_claims(conn, ids, self.worker_id, self._clock() + self._lease)

    def _release(self) -> int:
        with self.db.begin() as conn:
            return job_store.release_claims(conn, self._clock())

    def _claim(self) -> list[Job]:
        with self.db.begin() as conn:
            return job_store.claim_due_jobs(
                conn,
                now=self._clock(),
                limit=self._batch,
                lease=self._lease,
                worker_id=self.worker_id,
            )

    async def _deliver(self, group: list[Job]) -> None:
        first = group[0]
        ids = [j.id for j in group]
        with structlog.contextvars.bound_contextvars(job_ids=ids, cor_user_id=first.cor_user_id):
            async with self._limit:
                # Claimed a while ago, perhaps: drop what a re-grant called off meanwhile.
                group = await anyio.to_thread.run_sync(self._still_wanted, group)
                if not group:
                    return
                first = group[0]
                # Twins (one detach queued twice) travel together; COR hears each workspace once.
                workspaces = list(dict.fromkeys(j.workspace for j in group))
                started = time.perf_counter()
                outcome = await self._detach(first, workspaces)
                ms = _ms(started)
                metrics.COR_RESPONSES.labels(str(outcome.status or "error")).inc()
                try:
                    if isinstance(outcome, DetachResult):
                        await self._done(group, outcome, ms)
                    elif isinstance(outcome, RetryableError):
                        await anyio.to_thread.run_sync(self._retry_later, group, outcome, ms)
                    else:
                        await anyio.to_thread.run_sync(self._give_up, group, outcome, ms)
                except Exception:
                    # Not fatal to the round's other deliveries: these jobs keep their claim
                    # until the lease lapses, then go again.
                    log.exception("delivery_not_recorded", outcome=type(outcome).__name__)

    def _still_wanted(self, group: list[Job]) -> list[Job]:
        """The jobs of `group` nobody called off since the claim; the others end cancelled."""
        with self.db.read() as conn:
            called_off = job_store.cancel_requests(conn, [j.id for j in group])
        if called_off:
            with self.db.begin() as conn:
                for job_id, reason in called_off.items():
                    job_store.cancel_claimed(conn, job_id, self._clock(), reason, self.worker_id)
            metrics.JOBS_SETTLED.labels(job_store.CANCELLED).inc(len(called_off))
            log.info("detach_called_off", job_ids=sorted(called_off))
        return [j for j in group if j.id not in called_off]

    async def _detach(self, job: Job, workspaces: list[str]) -> DetachResult | DeliveryError:
        """COR's answer, or the error it came to; never raises (but for cancellation)."""
        try:
            return await self.cor.detach(job.cor_user_id, workspaces, job.source)
        except DeliveryError as exc:
            return exc
        except Exception as exc:
            # A bug, not COR: retrying would hide it. The job stops as a dead letter (an
            # operator replays it once fixed), the traceback is in the log, and the round's
            # other deliveries go on (raising would cancel them mid-flight).
            log.exception("detach_crashed")
            text = f"a bug in the bridge stopped this detach ({type(exc).__name__}; see the log)"
            return PermanentError(text, code="BRIDGE_BUG")

    async def _done(self, group: list[Job], result: DetachResult, ms: int) -> None:
        now = self._clock()
        ids = [j.id for j in group]

        def record(conn: Connection) -> None:
            job_store.record_attempts(
                conn, ids, at=now, outcome="done", duration_ms=ms, status=result.status
            )
            job_store.settle_jobs(
                conn,
                ids,
                worker_id=self.worker_id,
                state=job_store.DONE,
                now=now,
                status=result.status,
                remaining=result.remaining,
            )

        await self._settled.run(record)
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

    def _retry_later(self, group: list[Job], exc: RetryableError, ms: int) -> None:
        now = self._clock()
        # One jitter draw for the whole call, so jobs that failed together retry together.
        seed = random.random()  # noqa: S311 - jitter, not security
        plan = {
            job.id: next_attempt_at(
                self.policy,
                exc,
                attempts=job.attempts + 1,
                created_at=job.created_at,
                now=now,
                rand=random.Random(seed),  # noqa: S311
            )
            for job in group
        }
        with self.db.begin() as conn:
            # Folding into a twin reads, then writes the outbox: no intake may run in between.
            serialize_intake(conn)
            job_store.record_attempts(
                conn,
                [j.id for j in group],
                at=now,
                outcome="retry",
                duration_ms=ms,
                status=exc.status,
                code=exc.code,
                message=exc.message,
            )
            retrying = self._fold_twins(conn, [j for j in group if plan[j.id]], exc, now)
            for job in [j for j in group if not plan[j.id]] + retrying:
                when = plan[job.id]
                state = job_store.PENDING if when else job_store.DEAD
                message = (
                    exc.message
                    if when
                    else f"gave up after {job.attempts + 1} attempts: {exc.message}"
                )
                job_store.settle_jobs(
                    conn,
                    [job.id],
                    worker_id=self.worker_id,
                    state=state,
                    now=now,
                    next_attempt_at=when,
                    status=exc.status,
                    code=exc.code,
                    message=message,
                )
                metrics.JOBS_SETTLED.labels(state).inc()
                log.warning(
                    "detach_failed",
                    job_id=job.id,
                    will_retry=when is not None,
                    next_attempt_at=when.isoformat() if when else None,
                    status=exc.status,
                    error=exc.message,
                )

    def _give_up(self, group: list[Job], exc: DeliveryError, ms: int) -> None:
        now = self._clock()
        ids = [j.id for j in group]
        with self.db.begin() as conn:
            serialize_intake(conn)
            job_store.record_attempts(
                conn,
                ids,
                at=now,
                outcome="dead" if len(group) == 1 else "split",
                duration_ms=ms,
                status=exc.status,
                code=exc.code,
                message=exc.message,
            )
            if len(group) > 1:
                # One bad workspace must not sink the others: try each alone, now.
                job_store.settle_jobs(
                    conn,
                    [j.id for j in self._fold_twins(conn, group, exc, now)],
                    worker_id=self.worker_id,
                    state=job_store.PENDING,
                    now=now,
                    next_attempt_at=now,
                    status=exc.status,
                    code=exc.code,
                    message=exc.message,
                    solo=True,
                )
            else:
                job_store.settle_jobs(
                    conn,
                    ids,
                    worker_id=self.worker_id,
                    state=job_store.DEAD,
                    now=now,
                    status=exc.status,
                    code=exc.code,
                    message=exc.message,
                )
                metrics.JOBS_SETTLED.labels(job_store.DEAD).inc()
        log.error(
            "detach_refused",
            status=exc.status,
            code=exc.code,
            error=exc.message,
            split=len(group) > 1,
        )
        if len(group) > 1:
            self.wake()

    def _fold_twins(
        self, conn: Connection, group: list[Job], exc: DeliveryError, now: datetime
    ) -> list[Job]:
        """The jobs of `group` that may go back to pending; each other one is closed as a twin.

        The outbox allows one pending job per (user, source, workspace). A removal queued while
        this call was in flight, or claimed with it, asks for the same detach, so the older job
        folds into the newer one instead of breaking that rule (and the whole round with it).
        """
        ids = {j.id for j in group}
        newest: dict[tuple[str, str, str], Job] = {}
        for job in sorted(group, key=lambda j: j.id):
            newest[_detach_key(job)] = job
        into: dict[int, int] = {}
        for key, job in newest.items():
            queued = [
                t.id
                for t in job_store.find_open_jobs(conn, *key)
                if t.state == job_store.PENDING and t.id not in ids
            ]
            if queued:
                into[job.id] = queued[0]
        for job in group:
            keeper = newest[_detach_key(job)]
            if job is not keeper:
                into[job.id] = into.get(keeper.id, keeper.id)
        for job_id, twin in into.items():
            job_store.settle_jobs(
                conn,
                [job_id],
                worker_id=self.worker_id,
                state=job_store.CANCELLED,
                now=now,
                status=exc.status,
                code=exc.code,
                message=f"folded into job {twin}, which asks for the same detach "
                f"(this try: {exc.message})",
            )
            metrics.JOBS_SETTLED.labels(job_store.CANCELLED).inc()
            log.info("detach_folded_into_twin", job_id=job_id, twin_job_id=twin)
        return [j for j in group if j.id not in into]


def _detach_key(job: Job) -> tuple[str, str, str]:
    return job.cor_user_id, job.source, job.workspace


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)
