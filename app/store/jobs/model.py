"""The outbox's vocabulary: a job's states, what an attempt came to, and the rows as read."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class JobState(StrEnum):
    """Where a job is: pending (due at next_attempt_at), running (claimed under a lease),
    or finished: done, dead (a dead letter), cancelled."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    DEAD = "dead"
    CANCELLED = "cancelled"


PENDING, RUNNING, DONE, DEAD, CANCELLED = tuple(JobState)
STATES = tuple(JobState)
OPEN = (PENDING, RUNNING)
FINISHED = (DONE, DEAD, CANCELLED)


class AttemptOutcome(StrEnum):
    """What one delivery attempt came to, as the attempts table keeps it."""

    DONE = "done"
    RETRY = "retry"  # COR may answer later (a job that gave up after it says so too)
    DEAD = "dead"  # COR refused the one job the call carried
    SPLIT = "split"  # COR refused a call that carried several: each goes again alone


class Called(StrEnum):
    """What calling a job off did: cancelled it, or asked it (in flight) not to be retried."""

    CANCELLED = "cancelled"
    ASKED = "asked"


JobKey = tuple[str, str, str]  # (COR user, source, workspace): one detach


@dataclass(frozen=True)
class Job:
    """One (COR user, workspace) to detach."""

    id: int
    cor_user_id: str
    source: str
    workspace: str
    provider: str
    event_id: int
    state: str
    attempts: int
    solo: bool
    created_at: datetime
    next_attempt_at: datetime

    @property
    def key(self) -> JobKey:
        """The detach it asks for: the outbox keeps one pending job per key."""
        return self.cor_user_id, self.source, self.workspace


def job_of(row: Any) -> Job:
    """A Job from a jobs row."""
    return Job(
        id=row.id,
        cor_user_id=row.cor_user_id,
        source=row.source,
        workspace=row.workspace,
        provider=row.provider,
        event_id=row.event_id,
        state=JobState(row.state),
        attempts=row.attempts,
        solo=bool(row.solo),
        created_at=row.created_at,
        next_attempt_at=row.next_attempt_at,
    )


@dataclass(frozen=True)
class NewJob:
    """A job about to be written (intake writes a call's jobs together)."""

    cor_user_id: str
    source: str
    workspace: str
    provider: str
    event_id: int
    created_at: datetime
    next_attempt_at: datetime
    state: str = PENDING
    last_message: str | None = None


@dataclass(frozen=True)
class OpenJob:
    """A pending or running job, as intake weighs it against a re-grant."""

    id: int
    cor_user_id: str
    source: str
    workspace: str
    state: str
    event_time: datetime  # when the change that queued it happened


@dataclass(frozen=True)
class Attempt:
    """What COR answered to one call, kept once per job it carried."""

    at: datetime
    duration_ms: int
    status: int | None = None
    code: str | None = None
    message: str | None = None
