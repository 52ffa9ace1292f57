"""accept_changes: a call's changes through the rules, oldest first, in one ledger.

Takes intake's turn for the changes' users (lock_intake_keys), records each event (a
duplicate is seen here), names the COR user (or says why it cannot: `unresolved`), runs the
rules (rules.py) on each change and writes the ledger once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection

from app.changes import IgnoredEvent, MembershipChange, UserRef
from app.errors import ConfigError
from app.intake.ledger import EventRef, Ledger
from app.intake.locks import intake_keys
from app.intake.rules import Turn, decide
from app.mapping import Mapping
from app.store.db import lock_intake_keys
from app.store.events import NewEvent


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
    cor_users = [_cor_user_id(mapping, item) for item in given]
    ledger = Ledger(conn, given, {c for c in cor_users if isinstance(c, str)})
    events: dict[int, EventRef | None] = {}
    for index in sorted(range(len(given)), key=lambda i: (given[i].occurred_at, given[i].event_id)):
        item, cor_user_id = given[index], cor_users[index]
        event = events[index] = ledger.record(_new_event(item, now))
        if event is None:
            continue
        if isinstance(item, IgnoredEvent):
            event.decision, event.detail = "ignored", [item.reason]
        elif isinstance(cor_user_id, ConfigError):
            event.decision = "unresolved"
            event.detail = [f"no COR user id: {cor_user_id.reason}"]
        elif isinstance(cor_user_id, str):
            event.cor_user_id = cor_user_id
            turn = Turn(ledger, mapping, item, event, cor_user_id, now, delay)
            event.decision, event.detail = decide(turn)
            if item.note:
                event.detail = [item.note, *event.detail]
    ledger.flush()
    return [_decision(item.event_id, events[i]) for i, item in enumerate(given)]


def _cor_user_id(
    mapping: Mapping, item: MembershipChange | IgnoredEvent
) -> str | ConfigError | None:
    if isinstance(item, IgnoredEvent):
        return None
    try:
        return item.cor_user_id or mapping.cor_user_id(item.provider, item.user)
    except ConfigError as exc:
        return exc


def _decision(event_id: str, event: EventRef | None) -> Decision:
    if event is None:
        return Decision(event_id, "duplicate", ["seen before"])
    job_ids = [j.id for j in event.jobs if j.id is not None]
    return Decision(event_id, event.decision, [str(d) for d in event.detail], job_ids)


def _new_event(item: MembershipChange | IgnoredEvent, now: datetime) -> NewEvent:
    user, group = item.user, item.group
    is_change = isinstance(item, MembershipChange)
    return NewEvent(
        provider=item.provider,
        source_event_id=item.event_id,
        kind=item.change.value if isinstance(item, MembershipChange) else item.kind,
        occurred_at=item.occurred_at,
        received_at=now,
        user_id=user.id if user else None,
        user_login=_login(user) if user else None,
        group_id=group.id if group else None,
        group_name=group.name if group else None,
        change=item.model_dump(mode="json") if is_change else None,
    )


def _login(user: UserRef) -> str | None:
    return user.login or user.userName or user.email
