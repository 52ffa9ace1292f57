"""The outbox: detach jobs, their claims, outcomes and attempts."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, case, func, insert, or_, select, text, update

from app.store.db import chunked, insert_ignoring_conflicts
from app.store.schema import attempts, events, jobs

PENDING, RUNNING, DONE, DEAD, CANCELLED = "pending", "running", "done", "dead", "cancelled"
STATES = (PENDING, RUNNING, DONE, DEAD, CANCELLED)


@dataclass(frozen=True)
class Job:
    """One (COR user, workspace) to detach."""

    id: int
    cor_user_id: str
    source: str
    workspace: str
    provider: str
    event_id: int
    state: str
    attempts: int
    solo: bool
    created_at: datetime
    next_attempt_at: datetime


def _job(row: Any) -> Job:
    return Job(
        id=row.id,
        cor_user_id=row.cor_user_id,
        source=row.source,
        workspace=row.workspace,
        provider=row.provider,
        event_id=row.event_id,
        state=row.state,
        attempts=row.attempts,
        solo=bool(row.solo),
        created_at=row.created_at,
        next_attempt_at=row.next_attempt_at,
    )


@dataclass(frozen=True)
class NewJob:
    """A job about to be written (intake writes a call's jobs together)."""

    cor_user_id: str
    source: str
    workspace: str
    provider: str
    event_id: int
    created_at: datetime
    next_attempt_at: datetime
    state: str = PENDING
    last_message: str | None = None


def insert_jobs(conn: Connection, new: Sequence[NewJob]) -> list[int | None]:
    """Write the jobs in one statement; the id of each, or None for a pending one whose
    detach is already pending (the outbox keeps one pending job per detach: join that one)."""
    if not new:
        return []
    query = (
        insert_ignoring_conflicts(conn, jobs)
        .on_conflict_do_nothing(
            index_elements=["cor_user_id", "source", "workspace"],
            index_where=text("state = 'pending'"),  # uq_jobs_pending
        )
        .returning(jobs.c.id, jobs.c.event_id, jobs.c.workspace)
    )
    # vars(), not dataclasses.asdict: that deep-copies every field (a tenth of intake's CPU).
    rows = [{**vars(j), "attempts": 0, "solo": False, "updated_at": j.created_at} for j in new]
    written = {(int(e), str(w)): int(i) for i, e, w in conn.execute(query, rows)}
    return [written.get((j.event_id, j.workspace)) for j in new]


def hold_pending(conn: Connection, job_id: int) -> bool:
    """Whether the job is still pending; if so its row stays locked until the transaction ends
    (PostgreSQL; the worker claims with SKIP LOCKED, so it is not taken meanwhile. SQLite's
    writer already excludes the worker's claim)."""
    query = select(jobs.c.id).where(jobs.c.id == job_id, jobs.c.state == PENDING)
    return conn.execute(query.with_for_update()).first() is not None


def pending_job_id(conn: Connection, cor_user_id: str, source: str, workspace: str) -> int | None:
    """The pending job of this detach, if there is one."""
    found = conn.execute(
        select(jobs.c.id).where(
            jobs.c.cor_user_id == cor_user_id,
            jobs.c.source == source,
            jobs.c.workspace == workspace,
            jobs.c.state == PENDING,
        )
    ).scalar()
    return None if found is None else int(found)


@dataclass(frozen=True)
class OpenJob:
    """A pending or running job, as intake weighs it against a re-grant."""

    id: int
    cor_user_id: str
    source: str
    workspace: str
    state: str
    event_time: datetime  # when the change that queued it happened


def open_jobs_of(conn: Connection, cor_user_ids: Collection[str]) -> list[OpenJob]:
    """The pending and running jobs of these COR users, oldest first."""
    found: list[OpenJob] = []
    for chunk in chunked(sorted(cor_user_ids)):
        query = (
            select(
                jobs.c.id,
                jobs.c.cor_user_id,
                jobs.c.source,
                jobs.c.workspace,
                jobs.c.state,
                events.c.occurred_at,
            )
            .join(events, events.c.id == jobs.c.event_id)
            # "Not finished" rather than "pending or running": no index serves a NOT IN, so
            # SQLite takes the users' index. With IN it walked ix_jobs_due: every pending job,
            # the whole backlog while COR is down, for every delivery.
            .where(jobs.c.cor_user_id.in_(chunk), jobs.c.state.not_in((DONE, DEAD, CANCELLED)))
            .order_by(jobs.c.id)
        )
        found += [OpenJob(*row) for row in conn.execute(query)]
    return found


def find_open_jobs(conn: Connection, cor_user_id: str, source: str, workspace: str) -> list[Job]:
    """Pending or running jobs for one (user, source, workspace)."""
    rows = conn.execute(
        select(jobs).where(
            jobs.c.cor_user_id == cor_user_id,
            jobs.c.source == source,
            jobs.c.workspace == workspace,
            jobs.c.state.in_((PENDING, RUNNING)),
        )
    )
    return [_job(r) for r in rows]


def cancel_job(conn: Connection, job_id: int, now: datetime, reason: str) -> bool:
    """Cancel a job that is still pending; False when it is not (any more)."""
    done = conn.execute(
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.state == PENDING)
        .values(state=CANCELLED, updated_at=now, last_message=reason)
    )
    return done.rowcount == 1


def claim_due_jobs(
    conn: Connection, *, now: datetime, limit: int, worker_id: str, lease: timedelta
) -> list[Job]:
    """Take up to `limit` due jobs (and jobs whose claim lapsed) for this worker."""
    # A lapsed claim that a re-grant called off ends here rather than being sent again.
    conn.execute(
        update(jobs)
        .where(jobs.c.state == RUNNING, jobs.c.lease_until < now, jobs.c.cancel_reason.is_not(None))
        .values(state=CANCELLED, updated_at=now, last_message=jobs.c.cancel_reason)
    )
    due = or_(
        and_(jobs.c.state == PENDING, jobs.c.next_attempt_at <= now),
        and_(jobs.c.state == RUNNING, jobs.c.lease_until < now),
    )
    ids = [
        int(r[0])
        for r in conn.execute(
            select(jobs.c.id)
            .where(due)
            .order_by(jobs.c.next_attempt_at, jobs.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ]
    if not ids:
        return []
    conn.execute(
        update(jobs)
        .where(jobs.c.id.in_(ids))
        .values(state=RUNNING, lease_until=now + lease, claimed_by=worker_id, updated_at=now)
    )
    rows = conn.execute(select(jobs).where(jobs.c.id.in_(ids)).order_by(jobs.c.id))
    return [_job(r) for r in rows]


def extend_claims(
    conn: Connection, ids: Sequence[int], worker_id: str, lease_until: datetime
) -> int:
    """Push back the lease of the jobs among `ids` this worker still holds; how many."""
    done = conn.execute(
        update(jobs)
        .where(jobs.c.id.in_(ids), jobs.c.state == RUNNING, jobs.c.claimed_by == worker_id)
        .values(lease_until=lease_until)
    )
    return int(done.rowcount)


def request_cancel(conn: Connection, job_id: int, now: datetime, reason: str) -> bool:
    """Ask a job being delivered not to be retried; False when it is not running."""
    done = conn.execute(
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.state == RUNNING)
        .values(cancel_reason=reason, updated_at=now)
    )
    return done.rowcount == 1


def cancel_requests(conn: Connection, ids: Sequence[int]) -> dict[int, str]:
    """Of these jobs, those a re-grant asked to call off, with the reason."""
    rows = conn.execute(
        select(jobs.c.id, jobs.c.cancel_reason).where(
            jobs.c.id.in_(list(ids)), jobs.c.cancel_reason.is_not(None)
        )
    )
    return {int(job_id): str(reason) for job_id, reason in rows}


def cancel_claimed(
    conn: Connection, job_id: int, now: datetime, reason: str, worker_id: str
) -> None:
    """Cancel a job this worker holds and has not sent."""
    conn.execute(
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.state == RUNNING, jobs.c.claimed_by == worker_id)
        .values(state=CANCELLED, updated_at=now, last_message=reason, lease_until=None)
    )


def release_claims(conn: Connection, now: datetime) -> int:
    """Put every running job back to pending (one process on SQLite: nobody else holds them).

    A running job whose detach is also pending (queued while it was in flight) folds into
    that pending one, so the outbox keeps at most one pending job per detach.
    """
    rows = conn.execute(select(jobs).where(jobs.c.state == RUNNING).order_by(jobs.c.id.desc()))
    released = 0
    kept: set[tuple[str, str, str]] = set()
    for row in rows.all():
        key = (row.cor_user_id, row.source, row.workspace)
        twin = any(j.state == PENDING for j in find_open_jobs(conn, *key))
        if row.cancel_reason or twin or key in kept:
            message = row.cancel_reason or "folded into another job for the same detach"
            values: dict[str, Any] = {"state": CANCELLED, "last_message": message}
        else:
            kept.add(key)
            values = {"state": PENDING}
            released += 1
        conn.execute(
            update(jobs)
            .where(jobs.c.id == row.id)
            .values(lease_until=None, claimed_by=None, updated_at=now, **values)
        )
    return released


def settle_jobs(
    conn: Connection,
    ids: Sequence[int],
    *,
    state: str,
    now: datetime,
    next_attempt_at: datetime | None = None,
    status: int | None = None,
    code: str | None = None,
    message: str | None = None,
    remaining: list[str] | None = None,
    solo: bool | None = None,
    worker_id: str | None = None,
) -> None:
    """Record the outcome of a delivery for these jobs; one attempt more for each.

    A job asked to cancel while in flight ends cancelled rather than retried or dead. With
    `worker_id`, only jobs this worker still holds are touched (its lease may have lapsed).
    """
    values: dict[str, Any] = {
        "state": state,
        "updated_at": now,
        "attempts": jobs.c.attempts + 1,
        "lease_until": None,
        "claimed_by": None,
        "last_status": status,
        "last_code": code,
        "last_message": message,
    }
    if state in (PENDING, DEAD):
        asked = jobs.c.cancel_reason.is_not(None)
        values["state"] = case((asked, CANCELLED), else_=state)
        values["last_message"] = case((asked, jobs.c.cancel_reason), else_=message)
    if next_attempt_at is not None:
        values["next_attempt_at"] = next_attempt_at
    if remaining is not None:
        values["remaining"] = remaining
    if solo is not None:
        values["solo"] = solo
    query = update(jobs).where(jobs.c.id.in_(list(ids)))
    if worker_id is not None:
        query = query.where(jobs.c.state == RUNNING, jobs.c.claimed_by == worker_id)
    conn.execute(query.values(**values))


def record_attempts(
    conn: Connection,
    ids: Sequence[int],
    *,
    at: datetime,
    outcome: str,
    duration_ms: int,
    status: int | None = None,
    code: str | None = None,
    message: str | None = None,
) -> None:
    """Keep what COR answered to one call, once per job it carried."""
    if ids:
        conn.execute(
            insert(attempts),
            [
                {
                    "job_id": job_id,
                    "at": at,
                    "outcome": outcome,
                    "status": status,
                    "code": code,
                    "message": message,
                    "duration_ms": duration_ms,
                }
                for job_id in ids
            ],
        )


def requeue_job(conn: Connection, job_id: int, state: str, now: datetime) -> None:
    """Make a finished job pending again, from scratch (app/replay.py decides which)."""
    conn.execute(
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.state == state)
        .values(
            state=PENDING,
            attempts=0,
            solo=False,
            next_attempt_at=now,
            created_at=now,
            updated_at=now,
            cancel_reason=None,
            last_message=f"replayed from {state}",
        )
    )


def select_job_ids(
    conn: Connection,
    *,
    states: Sequence[str] = (),
    cor_user_id: str | None = None,
    workspace: str | None = None,
    provider: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 1000,
    offset: int = 0,
) -> list[int]:
    """Job ids matching a filter, newest first."""
    query = select(jobs.c.id)
    if states:
        query = query.where(jobs.c.state.in_(list(states)))
    if cor_user_id:
        query = query.where(jobs.c.cor_user_id == cor_user_id)
    if workspace:
        query = query.where(jobs.c.workspace == workspace)
    if provider:
        query = query.where(jobs.c.provider == provider)
    if since:
        query = query.where(jobs.c.created_at >= since)
    if until:
        query = query.where(jobs.c.created_at < until)
    query = query.order_by(jobs.c.id.desc()).limit(limit).offset(offset)
    return [int(r[0]) for r in conn.execute(query)]


def get_jobs(conn: Connection, ids: Sequence[int]) -> list[dict[str, Any]]:
    """Full job rows, newest first."""
    rows = conn.execute(select(jobs).where(jobs.c.id.in_(list(ids))).order_by(jobs.c.id.desc()))
    return [dict(r) for r in rows.mappings()]


def get_attempts(conn: Connection, job_id: int) -> list[dict[str, Any]]:
    """Every delivery attempt of one job, oldest first."""
    rows = conn.execute(select(attempts).where(attempts.c.job_id == job_id).order_by(attempts.c.id))
    return [dict(r) for r in rows.mappings()]


def queue_stats(conn: Connection) -> dict[str, Any]:
    """Jobs by state and the oldest pending job's creation time."""
    counts = {s: 0 for s in STATES}
    for state, n in conn.execute(select(jobs.c.state, func.count()).group_by(jobs.c.state)):
        counts[str(state)] = int(n)
    oldest = conn.execute(
        select(func.min(jobs.c.created_at)).where(jobs.c.state.in_((PENDING, RUNNING)))
    ).scalar()
    return {"jobs": counts, "oldest_open": oldest}
