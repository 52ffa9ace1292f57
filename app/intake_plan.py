"""Intake's snapshot and plan: what the rules read before they decide, and what they decide.

The rules (app/intake/) turn a `Snapshot` and a call's changes into a `Plan` without a
database; app/store/intake.py reads the snapshot and applies the plan. Both sides share these
shapes, and the words an event's job lines are made of (`Act`, `job_line`), so they live
here, below both.

An event's detail is stored as its plain lines (events.detail) and its job lines as links
(event_jobs: which job, what the event did to it, at which line); a job line is rendered with
the job's id when it is read, so nothing is written twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

JobKey = tuple[str, str, str]  # (COR user, source, workspace): one detach
PENDING, RUNNING, CANCELLED = "pending", "running", "cancelled"  # the outbox's JobState values


@dataclass(frozen=True)
class NewEvent:
    """An event about to be recorded, with what intake decided for it."""

    provider: str
    source_event_id: str
    kind: str
    occurred_at: datetime
    received_at: datetime
    user_id: str | None = None
    user_login: str | None = None
    group_id: str | None = None
    group_name: str | None = None
    change: dict[str, Any] | None = None
    decision: str = "received"
    detail: list[str] = field(default_factory=list)
    cor_user_id: str | None = None


@dataclass(frozen=True)
class Membership:
    """One (user, group) pair and whether the user is in it."""

    provider: str
    user_id: str
    group_id: str
    group_name: str | None
    member: bool
    changed_at: datetime
    user: dict[str, Any]


@dataclass(frozen=True)
class StoredJob:
    """A pending or running job as the snapshot read it."""

    id: int
    key: JobKey
    state: str
    event_time: datetime  # when the change that queued it happened


@dataclass
class Snapshot:
    """What the rules may ask about a call's users, read in bulk before they run."""

    seen: set[tuple[str, str]] = field(default_factory=set)  # (provider, source event id)
    pairs: list[Membership] = field(default_factory=list)  # of the call's IdP users
    jobs: list[StoredJob] = field(default_factory=list)  # open, of its COR users, oldest first
    # (provider, IdP user) -> when each recorded deactivation happened (users reactivated)
    deactivations: dict[tuple[str, str], list[datetime]] = field(default_factory=dict)

    def with_states(self, states: Mapping[int, str]) -> Snapshot:
        """The same, with these jobs' states as found since; a job no longer open drops out."""
        jobs = []
        for job in self.jobs:
            state = states.get(job.id, job.state)
            if state in (PENDING, RUNNING):
                jobs.append(StoredJob(job.id, job.key, state, job.event_time))
        return Snapshot(self.seen, self.pairs, jobs, self.deactivations)


class Act(StrEnum):
    """What an event did to a job: the event_jobs link table keeps one a job line."""

    QUEUED = "queued"  # wrote it
    JOINED = "joined"  # a removal joined it while it was pending
    CANCELLED = "cancelled"  # a re-grant called it off while it was pending
    ASKED = "asked"  # ... while it was being delivered: it is not retried
    KEPT = "kept"  # a re-grant left it: its removal is newer


@dataclass(eq=False)
class PlannedJob:
    """A job the plan writes: pending, or cancelled by a later change of the same call."""

    key: JobKey
    provider: str
    event: Entry  # the event that queued it
    created_at: datetime
    due: datetime
    cancelled: str | None = None  # why, when a later change called it off

    @property
    def event_time(self) -> datetime:
        return self.event.row.occurred_at


@dataclass(frozen=True)
class JobLine:
    """A line of an event's detail about a job, rendered once the job has its id."""

    act: Act
    job: StoredJob | PlannedJob
    reason: str | None = None  # why it was called off (cancelled, asked)


@dataclass(eq=False)
class Entry:
    """An event the plan records, with what the rules decided for it."""

    row: NewEvent
    decision: str = "received"
    lines: list[str | JobLine] = field(default_factory=list)
    cor_user_id: str | None = None

    def recorded(self) -> NewEvent:
        """The events row: the decision and the plain lines (job lines are links)."""
        plain = [line for line in self.lines if isinstance(line, str)]
        return replace(self.row, decision=self.decision, detail=plain, cor_user_id=self.cor_user_id)

    def links(self) -> list[tuple[int, JobLine]]:
        """The job lines, each with its place among the lines."""
        return [(i, line) for i, line in enumerate(self.lines) if isinstance(line, JobLine)]


@dataclass
class Plan:
    """What a call's changes come to: events, memberships and jobs to write, and what each
    event did to which job (the entries' job lines)."""

    entries: list[Entry] = field(default_factory=list)
    memberships: list[Membership] = field(default_factory=list)
    jobs: list[PlannedJob] = field(default_factory=list)
    # A stored job the plan joins or calls off -> the state it was decided on. The
    # store applies the plan only if each is still so (and holds it so until the commit).
    assumed: dict[int, str] = field(default_factory=dict)


@dataclass
class Applied:
    """What applying a plan wrote: the new jobs' ids, and those that joined a twin instead
    (a pending job for their detach appeared meanwhile)."""

    job_ids: dict[PlannedJob, int] = field(default_factory=dict)
    joined: set[PlannedJob] = field(default_factory=set)

    def id_of(self, job: StoredJob | PlannedJob) -> int:
        return job.id if isinstance(job, StoredJob) else self.job_ids[job]

    def act_of(self, line: JobLine) -> Act:
        """What really happened: a job queued that joined a twin at the write joined it."""
        if line.act is Act.QUEUED and line.job in self.joined:
            return Act.JOINED
        return line.act


def job_line(act: str, job_id: int, workspace: str, cor_user_id: str, reason: str | None) -> str:
    """A job line as operators read it (the API's decisions, the history)."""
    if act in (Act.QUEUED, Act.JOINED):
        verb = "queued" if act == Act.QUEUED else "joined pending"
        return f"{verb} job {job_id}: detach {workspace} from {cor_user_id}"
    if act == Act.CANCELLED:
        return f"cancelled job {job_id} ({workspace}): {reason}"
    if act == Act.ASKED:
        return f"job {job_id} ({workspace}) is being delivered; it will not be retried"
    return f"kept job {job_id} ({workspace}): its removal is newer"


def with_job_lines(plain: Sequence[str], job_lines: Iterable[tuple[int, str]]) -> list[str]:
    """An event's detail: its plain lines with the job lines put back in their places."""
    lines = list(plain)
    for at, line in sorted(job_lines):  # in place order, each lands where it was
        lines.insert(min(at, len(lines)), line)
    return lines
