"""The worker: claims due jobs, coalesces them per COR user, detaches, records the outcome."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import groupby

import anyio
import structlog

from app import metrics
from app.delivery.cor import CorClient, DetachResult
from app.delivery.retry import RetryPolicy, next_attempt_at
from app.errors import PermanentError, RetryableError
from app.store import Database
from app.store import jobs as job_store
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
        self._wake = asyncio.Event()
        self.last_beat: float | None = None

    def wake(self) -> None:
        """New work was committed: look now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver until cancelled; a failing round is logged and retried, never fatal."""
        if self._release_on_start:
            released = await anyio.to_thread.run_sync(self._release)
            if released:
                log.info("worker_released_claims", jobs=released)
        log.info("worker_started", worker_id=self.worker_id)
        while True:
            self.last_beat = time.monotonic()
            try:
                claimed = await self.run_once()
            except Exception:
                log.exception("worker_round_failed")
                claimed = 0
            if claimed == 0:
                self._wake.clear()
                with anyio.move_on_after(self._poll):
                    await self._wake.wait()

    async def run_once(self) -> int:
        """Claim one batch of due jobs and deliver it; returns how many were claimed."""
        jobs = await anyio.to_thread.run_sync(self._claim)
        if jobs:
            async with anyio.create_task_group() as tg:
                for group in coalesce(jobs):
                    tg.start_soon(self._deliver, group)
        return len(jobs)

    def _release(self) -> int:
        with self.db.begin() as conn:
            return job_store.release_claims(conn, self._clock())

    def _claim(self) -> list[Job]:
        with self.db.begin() as conn:
            return job_store.claim_due_jobs(
                conn,
                now=self._clock(),
                limit=self._batch,
                worker_id=self.worker_id,
                lease=self._lease,
            )

    async def _deliver(self, group: list[Job]) -> None:
        first = group[0]
        ids = [j.id for j in group]
        workspaces = [j.workspace for j in group]
        with structlog.contextvars.bound_contextvars(job_ids=ids, cor_user_id=first.cor_user_id):
            async with self._limit:
                started = time.perf_counter()
                try:
                    result = await self.cor.detach(first.cor_user_id, workspaces, first.source)
                except RetryableError as exc:
                    ms = _ms(started)
                    metrics.COR_RESPONSES.labels(str(exc.status or "error")).inc()
                    await anyio.to_thread.run_sync(self._retry_later, group, exc, ms)
                except PermanentError as exc:
                    ms = _ms(started)
                    metrics.COR_RESPONSES.labels(str(exc.status or "error")).inc()
                    await anyio.to_thread.run_sync(self._give_up, group, exc, ms)
                else:
                    metrics.COR_RESPONSES.labels(str(result.status)).inc()
                    await anyio.to_thread.run_sync(self._done, group, result, _ms(started))

    def _done(self, group: list[Job], result: DetachResult, ms: int) -> None:
        now = self._clock()
        ids = [j.id for j in group]
        with self.db.begin() as conn:
            job_store.record_attempts(
                conn, ids, at=now, outcome="done", duration_ms=ms, status=result.status
            )
            job_store.settle_jobs(
                conn,
                ids,
                state=job_store.DONE,
                now=now,
                status=result.status,
                remaining=result.remaining,
            )
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
        with self.db.begin() as conn:
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
            for job in group:
                when = next_attempt_at(
                    self.policy, exc, attempts=job.attempts + 1, created_at=job.created_at, now=now
                )
                state = job_store.PENDING if when else job_store.DEAD
                message = (
                    exc.message
                    if when
                    else f"gave up after {job.attempts + 1} attempts: {exc.message}"
                )
                job_store.settle_jobs(
                    conn,
                    [job.id],
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

    def _give_up(self, group: list[Job], exc: PermanentError, ms: int) -> None:
        now = self._clock()
        ids = [j.id for j in group]
        with self.db.begin() as conn:
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
                    ids,
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


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)
