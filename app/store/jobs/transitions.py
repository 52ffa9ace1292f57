"""The worker's transitions of the outbox's state machine (see app/store/jobs/__init__.py):
claim, extend, drop what was called off, complete, and a failed call's retry, split or bury;
release on a SQLite start."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, case, insert, or_, select, update

from app.store.db import serialize_intake
from app.store.jobs.model import (
    CANCELLED,
    DEAD,
    DONE,
    PENDING,
    RUNNING,
    Attempt,
    AttemptOutcome,
    Job,
    JobKey,
    JobState,
    job_of,
)
from app.store.jobs.reads import pending_job_id
from app.store.queue import Dead, Decision, Retry, Split
from app.store.schema import attempts, jobs

# -- the worker -----------------------------------------------------------------------------


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


def complete(
    conn: Connection,
    ids: Sequence[int],
    worker_id: str | None,
    attempt: Attempt,
    remaining: list[str],
) -> None:
    """COR confirmed the detach: done, with the workspaces COR still lists."""
    _record(conn, ids, attempt, AttemptOutcome.DONE)
    _settle(conn, ids, worker_id, attempt, DONE, remaining=remaining)


@dataclass
class Applied:
    """What `apply` did: each job's new state, and the jobs folded into a twin."""

    states: dict[int, JobState] = field(default_factory=dict)
    folded: dict[int, int] = field(default_factory=dict)  # job id -> the twin it joined


def apply(
    conn: Connection,
    group: Sequence[Job],
    decisions: Mapping[int, Decision],
    worker_id: str,
    attempt: Attempt,
) -> Applied:
    """A failed call's outcome in one go, one decision per job it carried: retry(at), bury or
    split. Takes intake's turn: folding into a twin reads, then writes the outbox."""
    serialize_intake(conn)
    outcomes: dict[AttemptOutcome, list[int]] = {}
    for job in group:
        outcomes.setdefault(_attempt_outcome(decisions[job.id]), []).append(job.id)
    for outcome, ids in outcomes.items():
        _record(conn, ids, attempt, outcome)
    applied = Applied()
    at = {j.id: d.at for j in group if isinstance(d := decisions[j.id], Retry)}
    applied.folded |= retry(conn, [j for j in group if j.id in at], at, worker_id, attempt)
    solo = [j for j in group if isinstance(decisions[j.id], Split)]
    applied.folded |= split(conn, solo, worker_id, attempt)
    for job in group:
        decision = decisions[job.id]
        if isinstance(decision, Dead):
            bury(conn, [job.id], worker_id, attempt, decision.reason)
            applied.states[job.id] = DEAD
        else:
            applied.states[job.id] = CANCELLED if job.id in applied.folded else PENDING
    return applied


def retry(
    conn: Connection,
    group: Sequence[Job],
    at: Mapping[int, datetime],
    worker_id: str,
    attempt: Attempt,
) -> dict[int, int]:
    """The try failed but may pass: each job is due again at `at[id]`, unless it folds into a
    twin (returned: job id -> twin id)."""
    folded = _fold_twins(conn, group, worker_id, attempt)
    for job in group:
        if job.id not in folded:
            _settle(conn, [job.id], worker_id, attempt, PENDING, next_attempt_at=at[job.id])
    return folded


def split(
    conn: Connection, group: Sequence[Job], worker_id: str, attempt: Attempt
) -> dict[int, int]:
    """COR refused a call carrying several jobs: each goes again alone, now (one bad
    workspace must not sink the others), unless it folds into a twin (returned)."""
    folded = _fold_twins(conn, group, worker_id, attempt)
    alone = [j.id for j in group if j.id not in folded]
    if alone:
        _settle(conn, alone, worker_id, attempt, PENDING, next_attempt_at=attempt.at, solo=True)
    return folded


def bury(
    conn: Connection, ids: Sequence[int], worker_id: str | None, attempt: Attempt, reason: str
) -> None:
    """Stop: a dead letter that says why (one called off meanwhile ends cancelled)."""
    _settle(conn, ids, worker_id, attempt, DEAD, message=reason)


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


# -- inside the transitions -----------------------------------------------------------------


def _attempt_outcome(decision: Decision) -> AttemptOutcome:
    if isinstance(decision, Split):
        return AttemptOutcome.SPLIT
    if isinstance(decision, Dead) and not decision.gave_up:
        return AttemptOutcome.DEAD
    return AttemptOutcome.RETRY


def _fold_twins(
    conn: Connection, group: Sequence[Job], worker_id: str, attempt: Attempt
) -> dict[int, int]:
    """Of the jobs of `group` about to go back to pending, those that fold into a twin (and
    are closed cancelled): the outbox allows one pending job per detach, and a removal queued
    while this call was in flight, or claimed with it, asks for the same detach."""
    ids = {j.id for j in group}
    newest: dict[JobKey, Job] = {}
    for job in sorted(group, key=lambda j: j.id):
        newest[job.key] = job
    into: dict[int, int] = {}
    for key, job in newest.items():
        queued = pending_job_id(conn, *key)
        if queued is not None and queued not in ids:
            into[job.id] = queued
    for job in group:
        keeper = newest[job.key]
        if job is not keeper:
            into[job.id] = into.get(keeper.id, keeper.id)
    for job_id, twin in into.items():
        message = (
            f"folded into job {twin}, which asks for the same detach (this try: {attempt.message})"
        )
        _settle(conn, [job_id], worker_id, attempt, CANCELLED, message=message)
    return into


def _record(conn: Connection, ids: Sequence[int], attempt: Attempt, outcome: str) -> None:
    """Keep what COR answered to one call, once per job it carried."""
    if ids:
        row = {
            "at": attempt.at,
            "outcome": outcome,
            "status": attempt.status,
            "code": attempt.code,
            "message": attempt.message,
            "duration_ms": attempt.duration_ms,
        }
        conn.execute(insert(attempts), [{"job_id": i, **row} for i in ids])


def _settle(
    conn: Connection,
    ids: Sequence[int],
    worker_id: str | None,
    attempt: Attempt,
    state: JobState,
    *,
    message: str | None = None,
    **values: Any,
) -> None:
    """Finish a try of jobs this worker holds (its lease may have lapsed: then no longer;
    None: whoever holds them);
    one attempt more for each. One called off while in flight ends cancelled, not retried."""
    message = attempt.message if message is None else message
    row: dict[str, Any] = {
        "state": state,
        "updated_at": attempt.at,
        "attempts": jobs.c.attempts + 1,
        "lease_until": None,
        "claimed_by": None,
        "last_status": attempt.status,
        "last_code": attempt.code,
        "last_message": message,
        **values,
    }
    if state in (PENDING, DEAD):
        asked = jobs.c.cancel_reason.is_not(None)
        row["state"] = case((asked, CANCELLED), else_=state)
        row["last_message"] = case((asked, jobs.c.cancel_reason), else_=message)
    query = update(jobs).where(jobs.c.id.in_(list(ids)))
    if worker_id is not None:
        query = query.where(jobs.c.state == RUNNING, jobs.c.claimed_by == worker_id)
    conn.execute(query.values(**row))
