"""The worker: claim -> coalesce -> detach -> apply, over the outbox, until stopped.

A round claims due jobs (app/drain.py keeps the claim's lease alive), coalesces them into
one call per COR user, detaches, and applies what COR answered in one transition of the
outbox (app/store/jobs): complete, or what app/delivery/retry.py decides of a failure
(retry at, bury, split).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from itertools import groupby

import anyio
import structlog
from sqlalchemy import Connection

from app import metrics
from app.delivery.cor import CorClient, DetachResult
from app.delivery.retry import RetryPolicy, decide
from app.drain import Drained, Drainer, bug, utcnow
from app.errors import DeliveryError, PermanentError, RetryableError
from app.rounds import Rounds
from app.store import Database
from app.store import jobs as job_store
from app.store.batch import GroupCommit
from app.store.jobs import Attempt, Job
from app.store.queue import Retry

log = structlog.get_logger(__name__)

__all__ = ["Worker", "coalesce", "utcnow"]


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
        self._release_on_start = release_on_start
        self._clock = clock
        self.drainer = Drainer(
            "worker", db, self.worker_id,
            claim=job_store.claim, extend=job_store.extend, id_of=lambda j: j.id,
            work=self._work, batch=batch, concurrency=concurrency, poll_seconds=poll_seconds,
            lease=lease, clock=clock,
        )  # fmt: skip
        # Successful detaches that finish together are recorded in one commit.
        self._settled = GroupCommit(db)

    @property
    def rounds(self) -> Rounds:
        """The drainer's rounds (their wake-up and beat)."""
        return self.drainer.rounds

    async def run(self) -> None:
        """Deliver until cancelled; a failing round is logged and retried, never fatal."""
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
        await self.drainer.run()

    async def _work(self, jobs: list[Job]) -> None:
        # A place among BRIDGE_WORKER_CONCURRENCY is held for the check and the call to COR
        # only: recording the outcome (a commit, shared with the others that finish together)
        # happens after it is given back, so the next call does not wait for that commit.
        await self.drainer.each(coalesce(jobs), self._deliver, limited=False)

    def _release(self) -> int:
        with self.db.begin() as conn:
            return job_store.release(conn, self._clock())

    async def _deliver(self, group: list[Job]) -> None:
        ids = [j.id for j in group]
        with structlog.contextvars.bound_contextvars(job_ids=ids, cor_user_id=group[0].cor_user_id):
            # Claimed a while ago, perhaps: drop what a re-grant called off meanwhile.
            async with self.drainer.slot():
                group = await anyio.to_thread.run_sync(self._still_wanted, group)
                if not group:
                    return
                # Twins (one detach queued twice) travel together; COR hears each workspace once.
                workspaces = list(dict.fromkeys(j.workspace for j in group))
                started = time.perf_counter()
                outcome = await self._detach(group[0], workspaces)
                ms = int((time.perf_counter() - started) * 1000)
            metrics.COR_RESPONSES.labels(str(outcome.status or "error")).inc()
            try:
                if isinstance(outcome, DetachResult):
                    await self._done(group, outcome, ms)
                else:
                    await anyio.to_thread.run_sync(self._apply, group, outcome, ms)
            except Exception:
                # Not fatal to the round's other deliveries: these jobs keep their claim
                # until the lease lapses, then go again.
                log.exception("delivery_not_recorded", outcome=type(outcome).__name__)

    def _still_wanted(self, group: list[Job]) -> list[Job]:
        """The jobs of `group` nobody called off since the claim; the others end cancelled."""
        with self.db.read() as conn:  # a read: no write turn for the common case
            called_off = job_store.called_off(conn, [j.id for j in group])
        if called_off:
            with self.db.begin() as conn:
                job_store.drop_called_off(conn, called_off, self.worker_id, self._clock())
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
            return bug(exc, "detach")

    async def _done(self, group: list[Job], result: DetachResult, ms: int) -> None:
        now = self._clock()
        ids = [j.id for j in group]
        attempt = Attempt(now, ms, status=result.status)

        def record(conn: Connection) -> None:
            job_store.complete(conn, ids, self.worker_id, attempt, result.remaining)

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
