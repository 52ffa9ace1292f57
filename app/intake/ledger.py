"""What intake knows while it decides one call's changes: read in bulk first, written in bulk last.

Before the first rule runs, the ledger reads everything the rules can ask about the call's
users: which of its events were seen before, every (user, group) pair of its IdP users, the
open jobs of its COR users. The rules then read and write the ledger, each change seeing what
the ones before it did, and `flush` writes the outcome in a few multi-row statements: about
seven round trips a call where there were about eight a change.

The caller holds intake's turn (serialize_intake) from the reads to the commit, and so does
the worker when it puts a job back to pending, so no detach becomes pending meanwhile. But the
worker claims and settles jobs without the turn: a job read as pending may be running by the
time it is called off or joined. So a cancel is done on the spot, with the fallback it always
had (ask a running job not to be retried), and a stored job is joined only once it is seen
still pending and locked (`_hold`). Should a pending job appear all the same (something
outside intake's turn), a new job for its detach joins it instead of failing the call.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from app.changes import IgnoredEvent, MembershipChange
from app.store import events as event_store
from app.store import jobs as job_store
from app.store import memberships as membership_store
from app.store.events import NewEvent
from app.store.jobs import CANCELLED, PENDING, RUNNING, Called, NewJob
from app.store.memberships import Membership

JobKey = tuple[str, str, str]  # (COR user, source, workspace): one detach
PairKey = tuple[str, str, str]  # (provider, IdP user, group)


@dataclass(eq=False)
class JobRef:
    """A pending or running job as the ledger knows it; a new one has its id after `flush`."""

    key: JobKey
    state: str
    event_time: datetime  # when the change that queued it happened
    id: int | None = None
    created: bool = False  # written by this call (False again if it joined a twin at flush)
    new: NewJob | None = None  # what to write, for a job of this call
    event: EventRef | None = None  # the event that queued a job of this call

    def __format__(self, spec: str) -> str:
        return format(self.id if self.id is not None else "?", spec)


@dataclass(eq=False)
class EventRef:
    """An event recorded by this call; the rules fill in the decision."""

    new: NewEvent
    decision: str = "received"
    detail: list[Any] = field(default_factory=list)  # str, or Line until the jobs are written
    jobs: list[JobRef] = field(default_factory=list)
    cor_user_id: str | None = None
    id: int | None = None


class Line:
    """A line of an event's detail that names a job: rendered once the job has its id."""

    def __init__(self, template: str, *args: Any) -> None:
        self.template, self.args = template, args

    def __str__(self) -> str:
        return self.template.format(*self.args)


class Queued(Line):
    """Says "queued job N" or "joined pending job N": which, the flush may still change."""

    def __init__(self, job: JobRef, created: bool, workspace: str, cor_user_id: str) -> None:
        super().__init__("{} job {}: detach {} from {}", None, job, workspace, cor_user_id)
        self.job, self.created = job, created

    def __str__(self) -> str:
        verb = "queued" if self.created and self.job.created else "joined pending"
        return self.template.format(verb, *self.args[1:])


class Ledger:
    """The call's view of events, memberships and open jobs (see the module's docstring)."""

    def __init__(
        self,
        conn: Connection,
        items: Sequence[MembershipChange | IgnoredEvent],
        cor_users: set[str],
    ) -> None:
        self.conn = conn
        event_ids: dict[str, set[str]] = defaultdict(set)
        idp_users: dict[str, set[str]] = defaultdict(set)
        for item in items:
            event_ids[item.provider].add(item.event_id)
            if isinstance(item, MembershipChange):
                idp_users[item.provider].add(item.user.id)
        self._seen = {
            (provider, seen)
            for provider, ids in event_ids.items()
            for seen in event_store.seen_events(conn, provider, ids)
        }
        self._pairs: dict[tuple[str, str], dict[str, Membership]] = defaultdict(dict)
        for provider, users in idp_users.items():
            for m in membership_store.memberships_of(conn, provider, users):
                self._pairs[(provider, m.user_id)][m.group_id] = m
        self._open: dict[JobKey, list[JobRef]] = defaultdict(list)
        for job in job_store.open_jobs_of(conn, cor_users):
            key = (job.cor_user_id, job.source, job.workspace)
            self._open[key].append(JobRef(key, job.state, job.event_time, id=job.id))
        self._events: list[EventRef] = []
        self._changed: dict[PairKey, Membership] = {}
        self._new_jobs: list[JobRef] = []
        self._held: set[int] = set()

    # -- events -------------------------------------------------------------------------

    def record(self, new: NewEvent) -> EventRef | None:
        """The event, to be written at flush; None when it was seen before (or in this call)."""
        key = (new.provider, new.source_event_id)
        if key in self._seen:
            return None
        self._seen.add(key)
        event = EventRef(new)
        self._events.append(event)
        return event

    def last_time_of(
        self, provider: str, user_id: str, kind: str, until: datetime
    ) -> datetime | None:
        """When the latest event of `kind` about this IdP user happened, up to `until`."""
        times = [
            e.new.occurred_at
            for e in self._events
            if (e.new.provider, e.new.user_id, e.new.kind) == (provider, user_id, kind)
            and e.new.occurred_at <= until
        ]
        stored = event_store.last_time_of(self.conn, provider, user_id, kind, until)
        if stored is not None:
            times.append(stored)
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

    def open_jobs(self, key: JobKey) -> list[JobRef]:
        """The pending or running jobs of one detach."""
        return [j for j in self._open[key] if j.state in (PENDING, RUNNING)]

    def enqueue(
        self, key: JobKey, event: EventRef, now: datetime, due: datetime
    ) -> tuple[JobRef, bool]:
        """Queue a detach; joins an already pending one. Returns (job, created)."""
        for job in self._open[key]:
            if job.state == PENDING and (job.new is not None or self._hold(job)):
                return job, False
        cor_user_id, source, workspace = key
        new = NewJob(cor_user_id, source, workspace, event.new.provider, 0, now, due)
        job = JobRef(key, PENDING, event.new.occurred_at, created=True, new=new, event=event)
        self._open[key].append(job)
        self._new_jobs.append(job)
        return job, True

    def _hold(self, job: JobRef) -> bool:
        """Whether a stored job read as pending still is; if so it stays so until the commit
        (its row is locked: the worker's claim skips locked rows). The worker may have
        claimed it since the ledger's read: joining it then would hang a removal on a try
        already under way, lost with it if that was the last one."""
        assert job.id is not None
        if job.id in self._held:
            return True
        if job_store.join(self.conn, job.id):
            self._held.add(job.id)
            return True
        job.state = RUNNING  # or finished: a later re-grant's cancel finds out which
        return False

    def cancel(self, job: JobRef, now: datetime, reason: str) -> Called | None:
        """Call off a job: "cancelled" when it was pending, "asked" when it is being
        delivered (it will not be retried), None when it is neither any more."""
        if job.new is not None:  # not written yet: it is written cancelled
            job.state = CANCELLED
            job.new = replace(job.new, state=CANCELLED, last_message=reason)
            return Called.CANCELLED
        assert job.id is not None
        called = job_store.cancel(self.conn, job.id, now, reason)
        states = {Called.CANCELLED: CANCELLED, Called.ASKED: RUNNING}
        job.state = states[called] if called else "gone"  # done, dead or cancelled meanwhile
        return called

    # -- the end ------------------------------------------------------------------------

    def flush(self) -> None:
        """Write the call's events, memberships and jobs; job ids fill in the decisions."""
        rows = [
            replace(
                e.new,
                decision=e.decision,
                detail=[] if _names_new_jobs(e) else [str(d) for d in e.detail],
                cor_user_id=e.cor_user_id,
            )
            for e in self._events
        ]
        for event, event_id in zip(
            self._events, event_store.record_events(self.conn, rows), strict=True
        ):
            event.id = event_id
        membership_store.put_memberships(self.conn, list(self._changed.values()))
        self._write_jobs()
        lines = {e.id: [str(d) for d in e.detail] for e in self._events if _names_new_jobs(e)}
        event_store.set_details(self.conn, {i: d for i, d in lines.items() if i is not None})

    def _write_jobs(self) -> None:
        rows = []
        for job in self._new_jobs:
            assert job.new is not None and job.event is not None and job.event.id is not None
            rows.append(replace(job.new, event_id=job.event.id))
        placed = job_store.enqueue(self.conn, rows)
        for job, (job_id, created) in zip(self._new_jobs, placed, strict=True):
            job.id = job_id
            job.created = created  # False: its detach became pending meanwhile, joined


def _names_new_jobs(event: EventRef) -> bool:
    return any(isinstance(d, Line) for d in event.detail)
