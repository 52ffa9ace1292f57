"""Reading the outbox: open jobs of a detach or of users, filtered lists, attempts, counts."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from app.store.db import chunked
from app.store.jobs.model import FINISHED, OPEN, PENDING, STATES, Job, JobKey, OpenJob, job_of
from app.store.schema import attempts, events, jobs


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


def open_twin(conn: Connection, key: JobKey) -> Job | None:
    """A pending or running job of this detach (user, source, workspace), if there is one."""
    cor_user_id, source, workspace = key
    row = conn.execute(
        select(jobs)
        .where(
            jobs.c.cor_user_id == cor_user_id,
            jobs.c.source == source,
            jobs.c.workspace == workspace,
            jobs.c.state.in_(OPEN),
        )
        .order_by(jobs.c.id)
        .limit(1)
    ).first()
    return job_of(row) if row is not None else None


def called_off(conn: Connection, ids: Collection[int]) -> dict[int, str]:
    """Of these jobs, those a re-grant or an operator called off while running, with why."""
    rows = conn.execute(
        select(jobs.c.id, jobs.c.cancel_reason).where(
            jobs.c.id.in_(list(ids)), jobs.c.cancel_reason.is_not(None)
        )
    )
    return {int(job_id): str(reason) for job_id, reason in rows}


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
            .where(jobs.c.cor_user_id.in_(chunk), jobs.c.state.not_in(FINISHED))
            .order_by(jobs.c.id)
        )
        found += [OpenJob(*row) for row in conn.execute(query)]
    return found


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
    counts = {str(s): 0 for s in STATES}
    for state, n in conn.execute(select(jobs.c.state, func.count()).group_by(jobs.c.state)):
        counts[str(state)] = int(n)
    oldest = conn.execute(
        select(func.min(jobs.c.created_at)).where(jobs.c.state.in_(OPEN))
    ).scalar()
    return {"jobs": counts, "oldest_open": oldest}
