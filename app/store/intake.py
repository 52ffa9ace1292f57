"""Intake's reads and writes: the snapshot of a call's users, read first in a few multi-row
statements, and the plan the rules made of it, applied in one pass (app/intake_plan.py).

The caller holds intake's turn for the call's users (lock_intake_keys) from the read to the
commit, and so does the worker when it puts a job back to pending, so no detach of theirs
becomes pending meanwhile. But the worker claims and settles jobs without the turn: a stored
job read as pending may be running by the time the plan is applied, and a running one may
have finished. So `apply_plan` first locks the stored jobs the plan joins or calls off (the
claim skips locked rows; a settle waits for the commit) and writes nothing unless each is
still in the state the plan took it to be in; else it says what it found, and the rules
decide again on that (accept.py). A join is thus only ever of a job still pending, and a call
off says truly "cancelled" (pending) or "asked" (being delivered: it will not be retried).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from app.changes import ChangeKind, IgnoredEvent, MembershipChange
from app.intake_plan import Act, Applied, Entry, Plan, PlannedJob, Snapshot, StoredJob
from app.store import events as event_store
from app.store import jobs as job_store
from app.store import memberships as membership_store
from app.store.bulk import insert_rows
from app.store.db import chunked
from app.store.jobs import CANCELLED, PENDING, NewJob
from app.store.schema import event_jobs, events, jobs

GONE = "gone"  # a stored job the plan counted on that is no longer there


def read_snapshot(
    conn: Connection, items: Sequence[MembershipChange | IgnoredEvent], cor_users: Iterable[str]
) -> Snapshot:
    """What the rules may ask about these items' users (their COR users: `cor_users`)."""
    event_ids: dict[str, set[str]] = defaultdict(set)
    idp_users: dict[str, set[str]] = defaultdict(set)
    reactivated: set[tuple[str, str]] = set()
    for item in items:
        event_ids[item.provider].add(item.event_id)
        if isinstance(item, MembershipChange):
            idp_users[item.provider].add(item.user.id)
            if item.change is ChangeKind.user_reactivated:
                reactivated.add((item.provider, item.user.id))
    snapshot = Snapshot()
    for provider, ids in event_ids.items():
        snapshot.seen |= {(provider, s) for s in event_store.seen_events(conn, provider, ids)}
    for provider, users in idp_users.items():
        snapshot.pairs += membership_store.memberships_of(conn, provider, users)
    snapshot.jobs = [
        StoredJob(j.id, (j.cor_user_id, j.source, j.workspace), j.state, j.event_time)
        for j in job_store.open_jobs_of(conn, set(cor_users))
    ]
    if reactivated:
        snapshot.deactivations = _deactivations(conn, reactivated)
    return snapshot


def _deactivations(
    conn: Connection, users: set[tuple[str, str]]
) -> dict[tuple[str, str], list[datetime]]:
    """When each recorded deactivation of these users happened (only a reactivation asks)."""
    found: dict[tuple[str, str], list[datetime]] = defaultdict(list)
    for chunk in chunked(sorted({user for _, user in users})):
        query = select(events.c.provider, events.c.user_id, events.c.occurred_at).where(
            events.c.user_id.in_(chunk), events.c.kind == ChangeKind.user_deactivated.value
        )
        for provider, user_id, at in conn.execute(query):
            if (provider, user_id) in users:
                found[(provider, user_id)].append(at)
    return dict(found)


def apply_plan(conn: Connection, plan: Plan, now: datetime) -> Applied | dict[int, str]:
    """Write the plan: events, memberships, calls off, jobs, links. Or, when a stored job it
    counts on is no longer in the state it took (see the module's docstring), write nothing
    and return the states found (job id -> state, or "gone")."""
    found = _hold(conn, plan.assumed)
    if found != plan.assumed:
        return found
    event_ids = event_store.record_events(conn, [e.recorded() for e in plan.entries])
    ids = dict(zip(plan.entries, event_ids, strict=True))
    membership_store.put_memberships(conn, plan.memberships)
    # Calls off first: a job queued after a stored one was cancelled must not join it.
    for entry in plan.entries:
        for _, line in entry.links():
            if isinstance(line.job, StoredJob) and line.act in (Act.CANCELLED, Act.ASKED):
                assert line.reason is not None
                called = job_store.cancel(conn, line.job.id, now, line.reason)
                assert str(called) == line.act, (line, called)  # held in its state
    applied = _write_jobs(conn, plan.jobs, ids)
    links = [
        {"event_id": ids[entry], "line": at, "job_id": applied.id_of(line.job),
         "act": applied.act_of(line).value, "reason": line.reason}
        for entry in plan.entries
        for at, line in entry.links()
    ]  # fmt: skip
    _insert_links(conn, links)
    return applied


def _insert_links(conn: Connection, links: list[dict[str, Any]]) -> None:
    """One statement, the rows as arrays (app/store/bulk.py)."""
    rows = [tuple(link[c] for c in _LINK_COLUMNS) for link in links]
    insert_rows(conn, event_jobs, _LINK_COLUMNS, rows)


_LINK_COLUMNS = ("event_id", "line", "job_id", "act", "reason")


def _hold(conn: Connection, assumed: dict[int, str]) -> dict[int, str]:
    """The states of these stored jobs, locked until the commit (PostgreSQL; SQLite's writer
    already excludes the worker)."""
    if not assumed:
        return {}
    query = (
        select(jobs.c.id, jobs.c.state)
        .where(jobs.c.id.in_(sorted(assumed)))
        .order_by(jobs.c.id)
        .with_for_update(key_share=True)  # FOR NO KEY UPDATE: attempts' inserts go on
    )
    states = {int(i): str(s) for i, s in conn.execute(query)}
    return {i: states.get(i, GONE) for i in assumed}


def _write_jobs(conn: Connection, planned: list[PlannedJob], ids: dict[Entry, int]) -> Applied:
    rows = [
        NewJob(
            *job.key,
            job.provider,
            ids[job.event],
            job.created_at,
            job.due,
            state=CANCELLED if job.cancelled is not None else PENDING,
            last_message=job.cancelled,
        )
        for job in planned
    ]
    applied = Applied()
    for job, (job_id, created) in zip(planned, job_store.enqueue(conn, rows), strict=True):
        applied.job_ids[job] = job_id
        if not created:  # its detach became pending meanwhile: it joined that job
            applied.joined.add(job)
    return applied
