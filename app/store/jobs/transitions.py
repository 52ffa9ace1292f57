"""The worker's transitions of the outbox's state machine (see app/store/jobs/__init__.py):
complete (one call, or many calls in one write), and a failed call's retry, split or bury.
Claims, their lease and release are in claims.py."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, case, insert, update

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
)
from app.store.jobs.reads import pending_job_id
from app.store.queue import Dead, Decision, Retry, Split
from app.store.schema import attempts, jobs

# -- the worker -----------------------------------------------------------------------------


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


@dataclass(frozen=True)
class Completed:
    """One confirmed detach call, as `complete_many` records it."""

    ids: Sequence[int]
    attempt: Attempt
    remaining: list[str]


def complete_many(conn: Connection, worker_id: str, calls: Sequence[Completed]) -> None:
    """Several confirmed calls, each as `complete` records it, in two statements (one
    executemany each): the attempts, then the jobs."""
    rows = [(i, call) for call in calls for i in call.ids]
    if not rows:
        return
    conn.execute(
        insert(attempts),
        [{"job_id": i, "at": c.attempt.at, "outcome": AttemptOutcome.DONE,
          "status": c.attempt.status, "code": c.attempt.code, "message": c.attempt.message,
          "duration_ms": c.attempt.duration_ms} for i, c in rows],
    )  # fmt: skip
    query = (
        update(jobs)
        .where(
            jobs.c.id == bindparam("b_id"),
            jobs.c.state == RUNNING,
            jobs.c.claimed_by == worker_id,
        )
        .values(
            state=DONE,
            updated_at=bindparam("b_at", type_=jobs.c.updated_at.type),
            attempts=jobs.c.attempts + 1,
            lease_until=None,
            claimed_by=None,
            last_status=bindparam("b_status", type_=jobs.c.last_status.type),
            last_code=bindparam("b_code", type_=jobs.c.last_code.type),
            last_message=bindparam("b_message", type_=jobs.c.last_message.type),
            remaining=bindparam("b_remaining", type_=jobs.c.remaining.type),
        )
    )
    conn.execute(
        query,
        [{"b_id": i, "b_at": c.attempt.at, "b_status": c.attempt.status,
          "b_code": c.attempt.code, "b_message": c.attempt.message,
          "b_remaining": c.remaining} for i, c in rows],
    )  # fmt: skip


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
