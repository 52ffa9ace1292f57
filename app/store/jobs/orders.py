"""The transitions intake and operators ask of the outbox: enqueue (joining a pending twin),
cancel, requeue. (Intake holds a stored job it joins in its state: app/store/intake.py.)"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, update

from app.store.bulk import insert_rows
from app.store.jobs.model import CANCELLED, PENDING, RUNNING, Called, NewJob
from app.store.jobs.reads import open_twin, pending_job_id
from app.store.schema import jobs

# -- intake ---------------------------------------------------------------------------------


def enqueue(conn: Connection, new: Sequence[NewJob]) -> list[tuple[int, bool]]:
    """Write the jobs in one statement (from arrays): (id, created) for each. A pending one
    whose detach is already pending joins that job (created False) instead."""
    placed: dict[int, tuple[int, bool]] = {}
    waiting = list(range(len(new)))
    for _ in range(_ROUNDS):
        if not waiting:
            break
        waiting = _place(conn, new, waiting, placed)
    if waiting:
        j = new[waiting[0]]
        key = (j.cor_user_id, j.source, j.workspace)
        raise RuntimeError(f"the pending job of {key} kept going away while joining it")
    return [placed[i] for i in range(len(new))]


# A conflicting pending twin can be claimed (running) between the insert and its look-up;
# the detach is then written again, now without a pending twin. More rounds: never seen.
_ROUNDS = 3


def _place(
    conn: Connection, new: Sequence[NewJob], which: list[int], placed: dict[int, tuple[int, bool]]
) -> list[int]:
    """Insert the jobs at `which`; record each as written or joined. Those whose twin went
    away between the conflict and the look-up are returned, to be written again."""
    rows = [
        (j.cor_user_id, j.source, j.workspace, j.provider, j.event_id, j.state, 0, False,
         j.created_at, j.created_at, j.next_attempt_at, j.last_message)
        for j in (new[i] for i in which)
    ]  # fmt: skip
    found = insert_rows(conn, jobs, _COLUMNS, rows, conflict=_JOIN_PENDING,
                        returning=("id", "event_id", "workspace"))  # fmt: skip
    written = {(int(e), str(w)): int(i) for i, e, w in found}
    again: list[int] = []
    for i in which:
        j = new[i]
        job_id = written.get((j.event_id, j.workspace))
        if job_id is not None:
            placed[i] = (job_id, True)
            continue
        twin = pending_job_id(conn, j.cor_user_id, j.source, j.workspace)
        if twin is None:
            again.append(i)
        else:
            placed[i] = (twin, False)
    return again


_COLUMNS = (
    "cor_user_id", "source", "workspace", "provider", "event_id", "state", "attempts", "solo",
    "created_at", "updated_at", "next_attempt_at", "last_message",
)  # fmt: skip
# uq_jobs_pending: a pending detach that is pending already is not written (it is joined).
_JOIN_PENDING = "ON CONFLICT (cor_user_id, source, workspace) WHERE state = 'pending' DO NOTHING"


def cancel(conn: Connection, job_id: int, now: datetime, reason: str) -> Called | None:
    """Call a job off: cancelled when pending; asked when running (the try under way may
    still reach COR, but it is not retried: it ends cancelled); None when it is finished."""
    done = conn.execute(
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.state == PENDING)
        .values(state=CANCELLED, updated_at=now, last_message=reason)
    )
    if done.rowcount == 1:
        return Called.CANCELLED
    asked = conn.execute(
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.state == RUNNING)
        .values(cancel_reason=reason, updated_at=now)
    )
    return Called.ASKED if asked.rowcount == 1 else None


# -- operators ------------------------------------------------------------------------------


def requeue(conn: Connection, job: Mapping[str, Any], now: datetime) -> str | None:
    """Make a dead or cancelled job pending again, from scratch (app/replay.py decides which);
    None when it was, else why not: a job for the same detach is open."""
    twin = open_twin(conn, (job["cor_user_id"], job["source"], job["workspace"]))
    if twin is not None:
        return f"job {twin.id} is already {twin.state} for the same detach"
    state = job["state"]
    conn.execute(
        update(jobs)
        .where(jobs.c.id == job["id"], jobs.c.state == state)
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
    return None
