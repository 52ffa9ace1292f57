"""The call's ledger: the snapshot as the rules change it, change by change, and the plan it
becomes. No database: app/store/intake.py read the snapshot and applies the plan.

Each change sees what the ones before it in the call did: the events recorded, the
memberships put, the jobs queued, joined and called off. A stored job is taken as it was
read; the plan says which stored jobs it joins or calls off and in what state it took each
(`Plan.assumed`), and the store applies it only if they are still so (see accept.py).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from app.changes import IgnoredEvent, MembershipChange, UserRef
from app.intake_plan import (
    CANCELLED,
    PENDING,
    RUNNING,
    Act,
    Entry,
    JobKey,
    Membership,
    NewEvent,
    Plan,
    PlannedJob,
    Snapshot,
    StoredJob,
)

PairKey = tuple[str, str, str]  # (provider, IdP user, group)
Job = StoredJob | PlannedJob


class Ledger:
    """The call's view of events, memberships and open jobs (see the module's docstring)."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._seen = set(snapshot.seen)
        self._pairs: dict[tuple[str, str], dict[str, Membership]] = defaultdict(dict)
        for m in snapshot.pairs:
            self._pairs[(m.provider, m.user_id)][m.group_id] = m
        self._deactivations = snapshot.deactivations
        self._open: dict[JobKey, list[Job]] = defaultdict(list)
        self._state: dict[Job, str] = {}
        for job in snapshot.jobs:
            self._open[job.key].append(job)
            self._state[job] = job.state
        self._plan = Plan()
        self._changed: dict[PairKey, Membership] = {}

    # -- events -------------------------------------------------------------------------

    def record(self, item: MembershipChange | IgnoredEvent, now: datetime) -> Entry | None:
        """The item's event, to be recorded; None when it was seen before (or in this call)."""
        key = (item.provider, item.event_id)
        if key in self._seen:
            return None
        self._seen.add(key)
        entry = Entry(_new_event(item, now))
        self._plan.entries.append(entry)
        return entry

    def last_deactivation(self, provider: str, user_id: str, until: datetime) -> datetime | None:
        """When the latest deactivation of this IdP user happened, up to `until`."""
        kind = "user_deactivated"
        times = [t for t in self._deactivations.get((provider, user_id), ()) if t <= until]
        times += [
            e.row.occurred_at
            for e in self._plan.entries
            if (e.row.provider, e.row.user_id, e.row.kind) == (provider, user_id, kind)
            and e.row.occurred_at <= until
        ]
        return max(times, default=None)

    # -- memberships --------------------------------------------------------------------

    def membership(self, provider: str, user_id: str, group_id: str) -> Membership | None:
        """The pair as last seen, or None."""
        return self._pairs[(provider, user_id)].get(group_id)

    def pairs(self, provider: str, user_id: str) -> list[Membership]:
        """Every pair of the user, in a group or not, by group id."""
        mine = self._pairs[(provider, user_id)]
        return [mine[g] for g in sorted(mine)]

    def user_groups(self, provider: str, user_id: str) -> list[Membership]:
        """The groups the user is currently in, as far as the bridge knows, by group id."""
        return [m for m in self.pairs(provider, user_id) if m.member]

    def put(self, m: Membership) -> None:
        """Insert or overwrite the pair."""
        self._pairs[(m.provider, m.user_id)][m.group_id] = m
        self._changed[(m.provider, m.user_id, m.group_id)] = m

    # -- jobs ---------------------------------------------------------------------------

    def open_jobs(self, key: JobKey) -> list[Job]:
        """The pending or running jobs of one detach."""
        return [j for j in self._open[key] if self._state[j] in (PENDING, RUNNING)]

    def enqueue(self, key: JobKey, entry: Entry, now: datetime, due: datetime) -> tuple[Job, Act]:
        """Queue a detach; joins an already pending one. Returns the job, queued or joined."""
        for job in self._open[key]:
            if self._state[job] == PENDING:
                self._assume(job)
                return job, Act.JOINED
        job = PlannedJob(key, entry.row.provider, entry, now, due)
        self._open[key].append(job)
        self._state[job] = PENDING
        self._plan.jobs.append(job)
        return job, Act.QUEUED

    def cancel(self, job: Job, reason: str) -> Act:
        """Call off an open job: cancelled when pending, asked when being delivered (it will
        not be retried)."""
        self._assume(job)
        if isinstance(job, PlannedJob):  # not written yet: it is written cancelled
            job.cancelled = reason
        if self._state[job] == RUNNING:
            return Act.ASKED
        self._state[job] = CANCELLED
        return Act.CANCELLED

    def _assume(self, job: Job) -> None:
        if isinstance(job, StoredJob):
            self._plan.assumed.setdefault(job.id, job.state)

    # -- the end ------------------------------------------------------------------------

    def plan(self) -> Plan:
        """The call's plan: its events, the memberships it changed, its jobs."""
        self._plan.memberships = list(self._changed.values())
        return self._plan


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
