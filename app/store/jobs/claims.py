"""The worker's claims on the outbox (see app/store/jobs/__init__.py): claim due jobs under a
lease, extend it, drop what was called off before it was sent, and release every claim on a
SQLite start."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, or_, select, update

from app.store.db import keys_in_intake
from app.store.jobs.model import CANCELLED, PENDING, RUNNING, Job, JobKey, job_of
from app.store.jobs.reads import pending_job_id
from app.store.schema import jobs

HOLD_IN_INTAKE = timedelta(seconds=10)


def intake_key(cor_user_id: str) -> str:
    """Intake's lock key of a COR user (app/intake/locks.py, `intake_keys`)."""
    return f"cor:{cor_user_id}"


def claim(
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
    due_rows = conn.execute(
        select(jobs.c.id, jobs.c.cor_user_id, jobs.c.created_at)
        .where(due)
        .order_by(jobs.c.next_attempt_at, jobs.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    # PostgreSQL: a user whose removals intake is taking in right now (their intake key held
    # or awaited by another transaction) waits for them, so they go in one call; intake's
    # commit wakes the worker. Not past HOLD_IN_INTAKE since a job of theirs was queued: a
    # user under constant intake is not starved.
    users = {str(r.cor_user_id) for r in due_rows}
    busy = keys_in_intake(conn, {intake_key(u) for u in users})
    if busy:
        old = {str(r.cor_user_id) for r in due_rows if r.created_at <= now - HOLD_IN_INTAKE}
        waiting = {u for u in users if intake_key(u) in busy} - old
        due_rows = [r for r in due_rows if r.cor_user_id not in waiting]
    ids = [int(r.id) for r in due_rows]
    if not ids:
        return []
    conn.execute(
        update(jobs)
        .where(jobs.c.id.in_(ids))
        .values(state=RUNNING, lease_until=now + lease, claimed_by=worker_id, updated_at=now)
    )
    rows = conn.execute(select(jobs).where(jobs.c.id.in_(ids)).order_by(jobs.c.id))
    return [job_of(r) for r in rows]


def extend(conn: Connection, ids: Sequence[int], worker_id: str, lease_until: datetime) -> int:
    """Push back the lease of the jobs among `ids` this worker still holds; how many."""
    done = conn.execute(
        update(jobs)
        .where(jobs.c.id.in_(ids), jobs.c.state == RUNNING, jobs.c.claimed_by == worker_id)
        .values(lease_until=lease_until)
    )
    return int(done.rowcount)


def drop_called_off(
    conn: Connection, called_off: Mapping[int, str], worker_id: str, now: datetime
) -> None:
    """Cancel claimed jobs a re-grant called off since the claim (reads.called_off), before
    they are sent, each with the reason."""
    for job_id, reason in called_off.items():
        conn.execute(
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.state == RUNNING, jobs.c.claimed_by == worker_id)
            .values(state=CANCELLED, updated_at=now, last_message=reason, lease_until=None)
        )


def release(conn: Connection, now: datetime) -> int:
    """Put every running job back to pending (one process on SQLite: nobody else holds them);
    how many. One whose detach is also pending folds into it; one called off ends cancelled."""
    rows = conn.execute(select(jobs).where(jobs.c.state == RUNNING).order_by(jobs.c.id.desc()))
    released = 0
    kept: set[JobKey] = set()
    for row in rows.all():
        key = (row.cor_user_id, row.source, row.workspace)
        twin = pending_job_id(conn, *key) is not None
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
