"""The event log: dedupe by source event id, and what intake decided for each event."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import fields
from typing import Any

from sqlalchemy import Connection, func, or_, select

# NewEvent, what intake records, lives with the plan (app/intake_plan.py); re-exported here.
from app.intake_plan import NewEvent as NewEvent
from app.intake_plan import job_line, with_job_lines
from app.store.bulk import insert_rows
from app.store.db import chunked
from app.store.schema import event_jobs, events, jobs


def seen_events(conn: Connection, provider: str, source_event_ids: Collection[str]) -> set[str]:
    """Of these source event ids of `provider`, the ones already recorded."""
    seen: set[str] = set()
    for chunk in chunked(sorted(source_event_ids)):
        query = select(events.c.source_event_id).where(
            events.c.provider == provider, events.c.source_event_id.in_(chunk)
        )
        seen.update(str(r[0]) for r in conn.execute(query))
    return seen


def record_events(conn: Connection, rows: Sequence[NewEvent]) -> list[int]:
    """Insert the events in one statement (from arrays: app/store/bulk.py); their row ids,
    in order.

    The caller holds intake's turn and asked `seen_events` first: an event recorded meanwhile
    (something wrote events outside intake) fails the transaction on the unique key.
    """
    if not rows:
        return []
    found = insert_rows(conn, events, _EVENT_COLUMNS, [_event_values(new) for new in rows],
                        returning=("id", "provider", "source_event_id"))  # fmt: skip
    ids = {(str(provider), str(source_id)): int(i) for i, provider, source_id in found}
    return [ids[(new.provider, new.source_event_id)] for new in rows]


_EVENT_COLUMNS = tuple(f.name for f in fields(NewEvent))


def _event_values(new: NewEvent) -> tuple[Any, ...]:
    return tuple(getattr(new, name) for name in _EVENT_COLUMNS)


def idp_user_ids(conn: Connection, provider: str, cor_user_id: str) -> list[str]:
    """The IdP user ids of `provider` whose events resolved to this COR user."""
    rows = conn.execute(
        select(events.c.user_id)
        .where(
            events.c.provider == provider,
            events.c.cor_user_id == cor_user_id,
            events.c.user_id.is_not(None),
        )
        .distinct()
        .order_by(events.c.user_id)
    )
    return [str(r[0]) for r in rows]


def list_user_events(conn: Connection, user: str, limit: int = 500) -> list[dict[str, Any]]:
    """The latest `limit` events about a user (by IdP id, login or COR id), oldest first."""
    rows = conn.execute(
        select(events)
        .where(
            or_(
                events.c.user_id == user,
                events.c.user_login == user,
                events.c.cor_user_id == user,
            )
        )
        .order_by(events.c.occurred_at.desc(), events.c.id.desc())
        .limit(limit)
    ).mappings()
    found = [dict(r) for r in reversed(list(rows))]
    lines = job_lines(conn, [e["id"] for e in found])
    for e in found:
        if e["id"] in lines:
            e["detail"] = with_job_lines(e["detail"], lines[e["id"]])
    return found


def job_lines(conn: Connection, event_ids: Sequence[int]) -> dict[int, list[tuple[int, str]]]:
    """The job lines of these events (event id -> [(place in its detail, line)]), rendered
    with the jobs' ids from the event_jobs links."""
    found: dict[int, list[tuple[int, str]]] = defaultdict(list)
    link = event_jobs.c
    columns = (link.event_id, link.line, link.job_id, link.act, link.reason, jobs.c.workspace)
    for chunk in chunked(sorted(event_ids)):
        query = (
            select(*columns, jobs.c.cor_user_id)
            .select_from(event_jobs.join(jobs, jobs.c.id == link.job_id))
            .where(link.event_id.in_(chunk))
        )
        for event_id, at, job_id, act, reason, workspace, cor_user_id in conn.execute(query):
            found[event_id].append((at, job_line(act, job_id, workspace, cor_user_id, reason)))
    return found


def count_events(conn: Connection) -> dict[str, int]:
    """Events by decision."""
    rows = conn.execute(select(events.c.decision, func.count()).group_by(events.c.decision))
    return {str(d): int(n) for d, n in rows}
