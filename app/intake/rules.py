"""The rules: what each membership change means for COR, decided in time order, on a snapshot.

The rules, in the order they apply to each change (oldest `occurred_at` first):
dedupe by (provider, source event id); ignore a change older than what is already
known for that (user, group), and a removal of someone already known to be out of the
group with nothing in between (whichever source said it first); look the group up in the
mapping (unmapped: recorded, not sent); an `added` cancels pending detaches of the
workspaces it grants; a `removed` keeps every workspace another current group of the user
still grants and queues one job per (COR user, workspace) for the rest.

`decide` is a pure function: a call's changes and the snapshot of what the store knows of
their users (app/intake_plan.py) in, the call's plan out. accept.py reads the snapshot and
applies the plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from app.changes import ChangeKind, IgnoredEvent, MembershipChange
from app.errors import ConfigError
from app.intake.ledger import Ledger
from app.intake.texts import (
    ASKED,
    already_out_text,
    group_ref,
    group_text,
    membership_text,
    ref_text,
    superseded_text,
)
from app.intake_plan import Act, Entry, JobLine, Membership, Plan, Snapshot
from app.mapping import Mapping

Item = MembershipChange | IgnoredEvent
Lines = list[str | JobLine]
Outcome = tuple[str, Lines]  # (decision, detail lines)
ALREADY_OUT = "already_out"


def decide(
    snapshot: Snapshot,
    items: Sequence[Item],
    mapping: Mapping,
    now: datetime,
    delay: timedelta = timedelta(0),
    cor_users: Sequence[str | ConfigError | None] | None = None,
) -> tuple[list[Entry | None], Plan]:
    """Every item through the rules, oldest first: the entry of each (None: seen before), in
    input order, and the call's plan. `cor_users`: each item's `cor_user_id`, when the
    caller has them already."""
    if cor_users is None:
        cor_users = [cor_user_id(mapping, item) for item in items]
    ledger = Ledger(snapshot)
    entries: list[Entry | None] = [None] * len(items)
    for index in sorted(range(len(items)), key=lambda i: (items[i].occurred_at, items[i].event_id)):
        item = items[index]
        entry = entries[index] = ledger.record(item, now)
        if entry is None:
            continue
        if isinstance(item, IgnoredEvent):
            entry.decision, entry.lines = "ignored", [item.reason]
            continue
        cor_user = cor_users[index]
        if isinstance(cor_user, ConfigError):
            entry.decision = "unresolved"
            entry.lines = [f"no COR user id: {cor_user.reason}"]
            continue
        assert cor_user is not None
        entry.cor_user_id = cor_user
        turn = Turn(ledger, mapping, item, entry, cor_user, now, delay)
        entry.decision, entry.lines = _decide(turn)
        if item.note:
            entry.lines = [item.note, *entry.lines]
    return entries, ledger.plan()


def cor_user_id(mapping: Mapping, item: Item) -> str | ConfigError | None:
    """The COR user an item is about; why not, when the mapping cannot name one."""
    if isinstance(item, IgnoredEvent):
        return None
    try:
        return item.cor_user_id or mapping.cor_user_id(item.provider, item.user)
    except ConfigError as exc:
        return exc


@dataclass
class Turn:
    """One change on its way through the rules, with the call's ledger."""

    ledger: Ledger
    mapping: Mapping
    change: MembershipChange
    entry: Entry
    cor_user_id: str
    now: datetime
    delay: timedelta

    def known(self, change: MembershipChange) -> Membership | None:
        """What the bridge last saw of this (user, group), if anything."""
        assert change.group is not None
        return self.ledger.membership(change.provider, change.user.id, change.group.id)

    def remember(self, change: MembershipChange, member: bool) -> None:
        assert change.group is not None
        self.ledger.put(
            Membership(
                provider=change.provider,
                user_id=change.user.id,
                group_id=change.group.id,
                group_name=change.group.name,
                member=member,
                changed_at=change.occurred_at,
                # The user's fields that are set: model_dump(exclude_none=True), a third
                # of the time (UserRef holds plain strings).
                user={k: v for k, v in change.user.__dict__.items() if v is not None},
            )
        )


def _decide(t: Turn) -> Outcome:
    if t.change.workspaces is not None:
        asked = "operator asked to detach these workspaces"
        return "queued", [asked, *_queue(t, t.change.workspaces)]
    if t.change.change is ChangeKind.added:
        return _grant(t, t.change)
    if t.change.change is ChangeKind.removed:
        return _revoke(t)
    if t.change.change is ChangeKind.user_reactivated:
        return _reactivate(t)
    return _deactivate(t)


def _revoked_workspaces(
    mapping: Mapping, change: MembershipChange, known: Membership | None
) -> tuple[str, ...]:
    """What the group grants now, plus what it granted under the name the user joined it by."""
    assert change.group is not None
    workspaces = mapping.workspaces_for(change.provider, change.group)
    if known is not None and known.member and known.group_name != change.group.name:
        # A renamed group still took away what it gave: match the old name too.
        former = mapping.workspaces_for(change.provider, group_ref(known))
        workspaces += tuple(w for w in former if w not in workspaces)
    return workspaces


def _grant(t: Turn, change: MembershipChange) -> Outcome:
    assert change.group is not None
    known = t.known(change)
    if known is not None and known.changed_at > change.occurred_at:
        return "superseded", [superseded_text(known)]
    t.remember(change, member=True)
    workspaces = t.mapping.workspaces_for(change.provider, change.group)
    if not workspaces:
        return "unmapped", [f"{group_text(change)} maps to no workspace"]
    detail: Lines = []
    reason = f"re-granted by {group_text(change)} (event {change.event_id})"
    for workspace in workspaces:
        detail += _call_off(t, workspace, change.occurred_at, reason)
    if not detail:
        detail.append(f"member of {group_text(change)}; grants {', '.join(workspaces)}")
    return "granted", detail


def _call_off(t: Turn, workspace: str, granted_at: datetime, reason: str) -> Lines:
    """Cancel the open detaches of `workspace` older than a grant seen at `granted_at`."""
    source = t.mapping.cor_source(t.change.provider)
    detail: Lines = []
    for job in t.ledger.open_jobs((t.cor_user_id, source, workspace)):
        if job.event_time > granted_at:
            # An add that happened before the removal (or deactivation) arrived late.
            detail.append(JobLine(Act.KEPT, job))
            continue
        detail.append(JobLine(t.ledger.cancel(job, reason), job, reason))
    return detail


def _revoke(t: Turn) -> Outcome:
    change = t.change
    known = t.known(change)
    if known is not None and known.changed_at > change.occurred_at:
        return "superseded", [superseded_text(known)]
    if known is not None and not known.member and change.provider == "entra":
        # Heard before by another path (a notification, then delta; or SCIM), with nothing
        # heard in between. Okta needs no such rule: its copies share the event uuid. The
        # newer removal is remembered, so a join older than it that arrives late is
        # superseded rather than taken as current.
        t.remember(change, member=False)
        detail: Lines = [already_out_text(change, known)]
        if change.member_of is not None:
            # The IdP's answer is news all the same (see below).
            for workspace, by in _still_granted(t).items():
                detail += _call_off(t, workspace, change.occurred_at, f"still granted by {by}")
        return ALREADY_OUT, detail
    t.remember(change, member=False)
    still = _still_granted(t)
    detail = []
    if change.member_of is not None:
        # The IdP's answer is news too: a detach queued earlier of a workspace a current
        # group grants (a join the bridge never heard of) is called off.
        for workspace, by in still.items():
            detail += _call_off(t, workspace, change.occurred_at, f"still granted by {by}")
    workspaces = _revoked_workspaces(t.mapping, change, known)
    if not workspaces:
        return "unmapped", [f"{group_text(change)} maps to no workspace", *detail]
    to_detach = []
    for workspace in workspaces:
        if workspace in still:
            detail.append(f"kept {workspace}: still granted by {still[workspace]}")
        else:
            to_detach.append(workspace)
    if not to_detach:
        return "kept", detail
    return "queued", detail + _queue(t, to_detach)


def _deactivate(t: Turn) -> Outcome:
    change = t.change
    groups = t.ledger.user_groups(change.provider, change.user.id)
    left = [(group_ref(m), "") for m in groups if m.changed_at <= change.occurred_at]
    if change.member_of is not None:
        # The IdP's list of the user's groups now (Okta keeps a deactivated user's groups):
        # the ones the bridge never heard of are left too.
        known = {g.id for g, _ in left}
        asked = f" ({ASKED[change.provider]})"
        left += [(g, asked) for g in change.member_of if g.id not in known]
    if not left:
        nothing = "deactivated; the bridge knows of no group this user is still in"
        return "no_known_groups", [f"{nothing}: nothing to detach"]
    workspaces: list[str] = []
    detail: Lines = []
    for group, asked in left:
        t.remember(change.model_copy(update={"group": group}), member=False)
        granted = t.mapping.workspaces_for(change.provider, group)
        detail.append(f"left {ref_text(change.provider, group)} by deactivation{asked}")
        workspaces += [w for w in granted if w not in workspaces]
    if not workspaces:
        detail.append("none of the user's groups maps to a workspace")
        return "unmapped", detail
    return "queued", detail + _queue(t, workspaces)


def _reactivate(t: Turn) -> Outcome:
    """Okta keeps a deactivated user's groups, so reactivation gives back the memberships the
    latest deactivation closed (not groups left since): each as an add, which also cancels
    a detach of theirs still waiting. COR access is not restored; that is not ours to do."""
    change = t.change
    deactivated = t.ledger.last_deactivation(change.provider, change.user.id, change.occurred_at)
    closed = [
        m
        for m in t.ledger.pairs(change.provider, change.user.id)
        if deactivated is not None and not m.member and m.changed_at == deactivated
    ]
    if not closed:
        nothing = "reactivated; the bridge knows of no group a deactivation took: nothing to rejoin"
        return "no_known_groups", [nothing]
    detail: Lines = []
    for m in closed:
        rejoin = change.model_copy(update={"change": ChangeKind.added, "group": group_ref(m)})
        _, granted = _grant(t, rejoin)
        detail.append(f"rejoined {membership_text(change.provider, m)}")
        detail += granted
    return "granted", detail


def _queue(t: Turn, workspaces: Sequence[str]) -> Lines:
    source = t.mapping.cor_source(t.change.provider)
    lines: Lines = []
    for workspace in workspaces:
        key = (t.cor_user_id, source, workspace)
        job, act = t.ledger.enqueue(key, t.entry, t.now, t.now + t.delay)
        lines.append(JobLine(act, job))
    return lines


def _still_granted(t: Turn) -> dict[str, str]:
    """Workspace -> a group the user is still in that grants it."""
    change = t.change
    assert change.group is not None
    kept: dict[str, str] = {}
    if change.member_of is not None:
        # The IdP's current answer beats what the bridge happened to see. The group left is
        # skipped all the same: its notification is newer than the IdP's eventually consistent read.
        for group in change.member_of:
            if group.id == change.group.id:
                continue
            for workspace in t.mapping.workspaces_for(change.provider, group):
                asked = f"{ref_text(change.provider, group)} ({ASKED[change.provider]})"
                kept.setdefault(workspace, asked)
        return kept
    for m in t.ledger.user_groups(change.provider, change.user.id):
        if m.group_id == change.group.id:
            continue
        for workspace in t.mapping.workspaces_for(change.provider, group_ref(m)):
            kept.setdefault(workspace, membership_text(change.provider, m))
    return kept
