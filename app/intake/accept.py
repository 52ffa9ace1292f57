"""accept_changes: a call's changes through the rules, read and written in bulk, once.

Takes intake's turn for the changes' users (lock_intake_keys), reads the snapshot of what
the store knows of them (app/store/intake.py), decides on it (rules.py: no database) and
applies the plan. Should a stored job the plan joins or calls off have moved on since the
read (the worker claims and settles without the turn), the plan is not applied: the rules
decide again on the states found, which the store holds until the commit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection

from app.changes import IgnoredEvent, MembershipChange
from app.intake.locks import intake_keys
from app.intake.rules import cor_user_id, decide
from app.intake_plan import Act, Applied, Entry, JobLine, job_line
from app.mapping import Mapping
from app.store.db import lock_intake_keys
from app.store.intake import apply_plan, read_snapshot


@dataclass
class Decision:
    """What intake did with one event, and why."""

    event_id: str
    decision: str
    detail: list[str] = field(default_factory=list)
    jobs: list[int] = field(default_factory=list)


def accept_changes(
    conn: Connection,
    mapping: Mapping,
    items: Iterable[MembershipChange | IgnoredEvent],
    *,
    now: datetime,
    delay: timedelta = timedelta(0),
) -> list[Decision]:
    """Apply the rules to every item, oldest first; decisions come back in input order.

    The caller commits the transaction. Intake's turn for the changes' users is taken here
    (on PostgreSQL; a caller that locks rows first takes it before them: lock_intake_keys),
    unless the transaction holds it already.
    """
    given = list(items)
    if not given:
        return []
    lock_intake_keys(conn, intake_keys(mapping, given))
    resolved = [cor_user_id(mapping, item) for item in given]
    snapshot = read_snapshot(conn, given, {c for c in resolved if isinstance(c, str)})
    for _ in range(2):
        entries, plan = decide(snapshot, given, mapping, now, delay, resolved)
        applied = apply_plan(conn, plan, now)
        if isinstance(applied, Applied):
            pairs = zip(given, entries, strict=True)
            return [_decision(item.event_id, entry, applied) for item, entry in pairs]
        # Held now in the states found: the second plan counts on no other stored job.
        snapshot = snapshot.with_states(applied)
    raise RuntimeError("intake's plan met stored jobs that moved while held")


def _decision(event_id: str, entry: Entry | None, applied: Applied) -> Decision:
    if entry is None:
        return Decision(event_id, "duplicate", ["seen before"])
    detail = [line if isinstance(line, str) else _text(line, applied) for line in entry.lines]
    jobs = [
        applied.id_of(line.job)
        for line in entry.lines
        if isinstance(line, JobLine) and line.act in (Act.QUEUED, Act.JOINED)
    ]
    return Decision(event_id, entry.decision, detail, jobs)


def _text(line: JobLine, applied: Applied) -> str:
    cor_user, _, workspace = line.job.key
    return job_line(applied.act_of(line), applied.id_of(line.job), workspace, cor_user, line.reason)
