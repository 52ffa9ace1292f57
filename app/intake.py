"""Intake: turns membership changes into detach jobs, in one transaction.

The rules, in the order they apply to each change (oldest `occurred_at` first):
dedupe by (provider, source event id); ignore a change older than what is already
known for that (user, group); look the group up in the mapping (unmapped: recorded,
not sent); an `added` cancels pending detaches of the workspaces it grants; a
`removed` keeps every workspace another current group of the user still grants and
queues one job per (COR user, workspace) for the rest.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from sqlalchemy import Connection

from app.changes import ChangeKind, GroupRef, IgnoredEvent, MembershipChange, UserRef
from app.errors import ConfigError
from app.mapping import Mapping
from app.store import events as event_store
from app.store import jobs as job_store
from app.store import memberships as membership_store
from app.store.db import serialize_intake
from app.store.events import NewEvent
from app.store.memberships import Membership


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

    The caller commits the transaction. Intake's turn is taken here, once (on PostgreSQL; a
    caller that locks rows first takes it before them: see serialize_intake).
    """
    given = list(items)
    if given:
        serialize_intake(conn)
    decisions: dict[int, Decision] = {}
    for index in sorted(range(len(given)), key=lambda i: (given[i].occurred_at, given[i].event_id)):
        decisions[index] = _accept_one(conn, mapping, given[index], now, delay)
    return [decisions[i] for i in range(len(given))]


def _accept_one(
    conn: Connection,
    mapping: Mapping,
    item: MembershipChange | IgnoredEvent,
    now: datetime,
    delay: timedelta,
) -> Decision:
    if isinstance(item, IgnoredEvent):
        row_id = event_store.record_event(conn, _new_ignored(item, now))
        if row_id is None:
            return Decision(item.event_id, "duplicate", ["seen before"])
        event_store.set_decision(conn, row_id, "ignored", [item.reason])
        return Decision(item.event_id, "ignored", [item.reason])

    row_id = event_store.record_event(conn, _new_event(item, now))
    if row_id is None:
        return Decision(item.event_id, "duplicate", ["seen before"])
    try:
        cor_user_id = item.cor_user_id or mapping.cor_user_id(item.provider, item.user)
    except ConfigError as exc:
        decision = Decision(item.event_id, "unresolved", [f"no COR user id: {exc.reason}"])
        event_store.set_decision(conn, row_id, decision.decision, decision.detail)
        return decision
    if item.workspaces is not None:
        decision = _detach_explicit(conn, mapping, item, row_id, cor_user_id, now, delay)
    elif item.change is ChangeKind.added:
        decision = _grant(conn, mapping, item, cor_user_id, now)
    elif item.change is ChangeKind.removed:
        decision = _revoke(conn, mapping, item, row_id, cor_user_id, now, delay)
    elif item.change is ChangeKind.user_reactivated:
        decision = _reactivate(conn, mapping, item, cor_user_id, now)
    else:
        decision = _deactivate(conn, mapping, item, row_id, cor_user_id, now, delay)
    event_store.set_decision(conn, row_id, decision.decision, decision.detail, cor_user_id)
    return decision


def _new_event(change: MembershipChange, now: datetime) -> NewEvent:
    return NewEvent(
        provider=change.provider,
        source_event_id=change.event_id,
        kind=change.change.value,
        occurred_at=change.occurred_at,
        received_at=now,
        user_id=change.user.id,
        user_login=_login(change.user),
        group_id=change.group.id if change.group else None,
        group_name=change.group.name if change.group else None,
        change=change.model_dump(mode="json"),
    )


def _new_ignored(item: IgnoredEvent, now: datetime) -> NewEvent:
    user, group = item.user, item.group
    return NewEvent(
        provider=item.provider,
        source_event_id=item.event_id,
        kind=item.kind,
        occurred_at=item.occurred_at,
        received_at=now,
        user_id=user.id if user else None,
        user_login=_login(user) if user else None,
        group_id=group.id if group else None,
        group_name=group.name if group else None,
    )


def _login(user: UserRef) -> str | None:
    return user.login or user.userName or user.email


def _known(conn: Connection, change: MembershipChange) -> Membership | None:
    """What the bridge last saw of this (user, group), if anything."""
    assert change.group is not None
    return membership_store.get_membership(conn, change.provider, change.user.id, change.group.id)


def _is_newer(known: Membership | None, change: MembershipChange) -> bool:
    return known is not None and known.changed_at > change.occurred_at


def _revoked_workspaces(
    mapping: Mapping, change: MembershipChange, known: Membership | None
) -> tuple[str, ...]:
    """What the group grants now, plus what it granted under the name the user joined it by."""
    assert change.group is not None
    workspaces = mapping.workspaces_for(change.provider, change.group)
    if known is not None and known.member and known.group_name != change.group.name:
        # A renamed group still took away what it gave: match the old name too.
        former = mapping.workspaces_for(change.provider, _group_ref(known))
        workspaces += tuple(w for w in former if w not in workspaces)
    return workspaces


def _remember(conn: Connection, change: MembershipChange, member: bool) -> None:
    assert change.group is not None
    membership_store.put_membership(
        conn,
        Membership(
            provider=change.provider,
            user_id=change.user.id,
            group_id=change.group.id,
            group_name=change.group.name,
            member=member,
            changed_at=change.occurred_at,
            user=change.user.model_dump(exclude_none=True),
        ),
    )


def _grant(
    conn: Connection, mapping: Mapping, change: MembershipChange, cor_user_id: str, now: datetime
) -> Decision:
    assert change.group is not None
    known = _known(conn, change)
    if known is not None and _is_newer(known, change):
        return Decision(change.event_id, "superseded", [_superseded_text(known)])
    _remember(conn, change, member=True)
    workspaces = mapping.workspaces_for(change.provider, change.group)
    if not workspaces:
        return Decision(
            change.event_id, "unmapped", [f"{_group_text(change)} maps to no workspace"]
        )
    source = mapping.cor_source(change.provider)
    detail = []
    for workspace in workspaces:
        for job in job_store.find_open_jobs(conn, cor_user_id, source, workspace):
            queued_by = event_store.event_time(conn, job.event_id)
            if queued_by is not None and queued_by > change.occurred_at:
                # An add that happened before the removal (or deactivation) arrived late.
                detail.append(f"kept job {job.id} ({workspace}): its removal is newer")
                continue
            reason = f"re-granted by {_group_text(change)} (event {change.event_id})"
            if job_store.cancel_job(conn, job.id, now, reason):
                detail.append(f"cancelled job {job.id} ({workspace}): {reason}")
            elif job_store.request_cancel(conn, job.id, now, reason):
                detail.append(
                    f"job {job.id} ({workspace}) is being delivered; it will not be retried"
                )
    if not detail:
        detail.append(f"member of {_group_text(change)}; grants {', '.join(workspaces)}")
    return Decision(change.event_id, "granted", detail)


def _revoke(
    conn: Connection,
    mapping: Mapping,
    change: MembershipChange,
    row_id: int,
    cor_user_id: str,
    now: datetime,
    delay: timedelta,
) -> Decision:
    assert change.group is not None
    known = _known(conn, change)
    if known is not None and _is_newer(known, change):
        return Decision(change.event_id, "superseded", [_superseded_text(known)])
    _remember(conn, change, member=False)
    workspaces = _revoked_workspaces(mapping, change, known)
    if not workspaces:
        return Decision(
            change.event_id, "unmapped", [f"{_group_text(change)} maps to no workspace"]
        )
    still = _still_granted(conn, mapping, change)
    detail: list[str] = []
    to_detach = []
    for workspace in workspaces:
        if workspace in still:
            detail.append(f"kept {workspace}: still granted by {still[workspace]}")
        else:
            to_detach.append(workspace)
    decision = _queue(conn, mapping, change, row_id, cor_user_id, to_detach, now, delay)
    decision.detail[:0] = detail
    if not to_detach:
        decision.decision = "kept"
    return decision


def _deactivate(
    conn: Connection,
    mapping: Mapping,
    change: MembershipChange,
    row_id: int,
    cor_user_id: str,
    now: datetime,
    delay: timedelta,
) -> Decision:
    groups = membership_store.list_user_groups(conn, change.provider, change.user.id)
    current = [g for g in groups if g.changed_at <= change.occurred_at]
    if not current:
        return Decision(
            change.event_id,
            "no_known_groups",
            ["deactivated; the bridge knows of no group this user is still in: nothing to detach"],
        )
    workspaces: list[str] = []
    detail = []
    for m in current:
        membership_store.put_membership(
            conn, replace(m, member=False, changed_at=change.occurred_at)
        )
        granted = mapping.workspaces_for(change.provider, _group_ref(m))
        detail.append(f"left {_membership_text(change.provider, m)} by deactivation")
        workspaces += [w for w in granted if w not in workspaces]
    if not workspaces:
        detail.append("none of the user's groups maps to a workspace")
        return Decision(change.event_id, "unmapped", detail)
    decision = _queue(conn, mapping, change, row_id, cor_user_id, workspaces, now, delay)
    decision.detail[:0] = detail
    return decision


def _reactivate(
    conn: Connection, mapping: Mapping, change: MembershipChange, cor_user_id: str, now: datetime
) -> Decision:
    """Okta keeps a deactivated user's groups, so reactivation gives back the memberships the
    latest deactivation closed (not groups left since): each as an add, which also cancels
    a detach of theirs still waiting. COR access is not restored; that is not ours to do."""
    deactivated = event_store.last_time_of(
        conn, change.provider, change.user.id, ChangeKind.user_deactivated.value, change.occurred_at
    )
    closed = []
    if deactivated is not None:
        closed = membership_store.list_left_at(conn, change.provider, change.user.id, deactivated)
    if not closed:
        detail = "reactivated; the bridge knows of no group a deactivation took: nothing to rejoin"
        return Decision(change.event_id, "no_known_groups", [detail])
    decision = Decision(change.event_id, "granted")
    for m in closed:
        rejoin = change.model_copy(update={"change": ChangeKind.added, "group": _group_ref(m)})
        granted = _grant(conn, mapping, rejoin, cor_user_id, now)
        decision.detail.append(f"rejoined {_membership_text(change.provider, m)}")
        decision.detail += granted.detail
    return decision


def _detach_explicit(
    conn: Connection,
    mapping: Mapping,
    change: MembershipChange,
    row_id: int,
    cor_user_id: str,
    now: datetime,
    delay: timedelta,
) -> Decision:
    assert change.workspaces is not None
    decision = _queue(conn, mapping, change, row_id, cor_user_id, change.workspaces, now, delay)
    decision.detail.insert(0, "operator asked to detach these workspaces")
    return decision


def _queue(
    conn: Connection,
    mapping: Mapping,
    change: MembershipChange,
    row_id: int,
    cor_user_id: str,
    workspaces: Sequence[str],
    now: datetime,
    delay: timedelta,
) -> Decision:
    source = mapping.cor_source(change.provider)
    decision = Decision(change.event_id, "queued")
    for workspace in workspaces:
        job_id, created = job_store.enqueue_job(
            conn,
            cor_user_id=cor_user_id,
            source=source,
            workspace=workspace,
            provider=change.provider,
            event_id=row_id,
            now=now,
            due=now + delay,
        )
        verb = "queued" if created else "joined pending"
        decision.detail.append(f"{verb} job {job_id}: detach {workspace} from {cor_user_id}")
        decision.jobs.append(job_id)
    return decision


def _still_granted(conn: Connection, mapping: Mapping, change: MembershipChange) -> dict[str, str]:
    """Workspace -> a group the user is still in that grants it."""
    assert change.group is not None
    kept: dict[str, str] = {}
    if change.member_of is not None:
        # The IdP's current answer beats what the bridge happened to see. The group left is
        # skipped all the same: its notification is newer than the IdP's eventually consistent read.
        for group in change.member_of:
            if group.id == change.group.id:
                continue
            for workspace in mapping.workspaces_for(change.provider, group):
                name = f" ({group.name})" if group.name else ""
                kept.setdefault(workspace, f"{change.provider} group {group.id}{name}, per the IdP")
        return kept
    for m in membership_store.list_user_groups(conn, change.provider, change.user.id):
        if m.group_id == change.group.id:
            continue
        for workspace in mapping.workspaces_for(change.provider, _group_ref(m)):
            kept.setdefault(workspace, _membership_text(change.provider, m))
    return kept


def _group_ref(m: Membership) -> GroupRef:
    return GroupRef(id=m.group_id, name=m.group_name)


def _group_text(change: MembershipChange) -> str:
    assert change.group is not None
    name = f" ({change.group.name})" if change.group.name else ""
    return f"{change.provider} group {change.group.id}{name}"


def _membership_text(provider: str, m: Membership) -> str:
    name = f" ({m.group_name})" if m.group_name else ""
    return f"{provider} group {m.group_id}{name}"


def _superseded_text(newer: Membership) -> str:
    state = "member" if newer.member else "not a member"
    return f"older than what is known: {state} since {newer.changed_at.isoformat()}"
