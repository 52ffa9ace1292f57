"""What operators ask of the outbox: jobs, history, replay, cancel (the API and CLI share it)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import Connection

from app import replay
from app.changes import EventTime, Provider
from app.errors import InputError
from app.mapping import Mapping
from app.store import events as event_store
from app.store import held as held_store
from app.store import jobs as job_store

# Integers reach SQL as bound parameters; one past the column's range is a driver error
# (SQLite: OverflowError past 64 bits; PostgreSQL: `integer out of range`), so they are
# bounded where they come in (422). `jobs.id` is INTEGER: 32 bits on PostgreSQL (SERIAL), 64
# on SQLite; the narrower range holds on both. OFFSET is a 64-bit integer on both engines.
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
JobId = Annotated[int, Field(ge=1, le=INT32_MAX)]
RowOffset = Annotated[int, Field(ge=0, le=INT64_MAX)]

SUMMARY = (
    "id",
    "state",
    "cor_user_id",
    "workspace",
    "source",
    "provider",
    "attempts",
    "created_at",
    "updated_at",
    "next_attempt_at",
    "last_status",
    "last_code",
    "last_message",
    "remaining",
    "event_id",
)


class JobFilter(BaseModel):
    """Which jobs: by state, user, workspace, provider and creation time."""

    model_config = ConfigDict(extra="forbid")

    state: list[str] = Field(default_factory=list)
    cor_user_id: str | None = None
    workspace: str | None = None
    provider: Provider | None = None
    since: EventTime | None = None
    until: EventTime | None = None

    @model_validator(mode="after")
    def _known_states(self) -> JobFilter:
        unknown = set(self.state) - set(job_store.STATES)
        if unknown:
            raise ValueError(f"unknown state {sorted(unknown)}; use {list(job_store.STATES)}")
        return self


class JobPage(JobFilter):
    """A filter and a page of its jobs, as `GET /admin/jobs` takes them."""

    limit: int = Field(default=100, ge=1, le=1000)
    offset: RowOffset = 0


class ReplayRequest(BaseModel):
    """Jobs to send again, by id or by filter; `dry_run` only shows which."""

    model_config = ConfigDict(extra="forbid")

    ids: list[JobId] | None = None
    filter: JobFilter | None = None
    dry_run: bool = False
    limit: int = Field(default=1000, ge=1, le=100_000)

    @model_validator(mode="after")
    def _one_selector(self) -> ReplayRequest:
        if (self.ids is None) == (self.filter is None):
            raise ValueError("give exactly one of ids or filter")
        return self


def list_jobs(conn: Connection, f: JobFilter, limit: int = 100, offset: int = 0) -> dict[str, Any]:
    """A page of the jobs matching a filter, newest first."""
    ids = _select(conn, f, f.state, limit, offset)
    return {"jobs": summaries(job_store.get_jobs(conn, ids)), "offset": offset}


def job_detail(conn: Connection, job_id: int) -> dict[str, Any]:
    """One job with every delivery attempt; 404 when there is none."""
    found = job_store.get_jobs(conn, [job_id])
    if not found:
        raise InputError(f"no job with id {job_id}", status=404)
    return {**found[0], "deliveries": job_store.get_attempts(conn, job_id)}


def cancel_job(conn: Connection, job_id: int) -> dict[str, Any]:
    """Cancel a pending job, or stop a job in flight from being retried; 409 when finished."""
    now = datetime.now(UTC)
    found = job_store.get_jobs(conn, [job_id])
    if not found:
        raise InputError(f"no job with id {job_id}", status=404)
    reason = "cancelled by an operator"
    called = job_store.cancel(conn, job_id, now, reason)
    if called is job_store.Called.CANCELLED:
        return {"id": job_id, "state": job_store.CANCELLED}
    if called is job_store.Called.ASKED:
        return {"id": job_id, "state": job_store.RUNNING, "detail": "will not be retried"}
    raise InputError(f"job {job_id} is {found[0]['state']}; nothing to cancel", status=409)


def user_history(conn: Connection, user: str) -> dict[str, Any]:
    """Every event about a user (IdP id, login or COR id), what was decided, and their jobs."""
    events = event_store.list_user_events(conn, user)
    cor_ids = {e["cor_user_id"] for e in events if e["cor_user_id"]} | {user}
    ids: list[int] = []
    for cor_id in sorted(cor_ids):
        ids += job_store.select_job_ids(conn, cor_user_id=cor_id)
    return {
        "user": user,
        "events": [{k: v for k, v in e.items() if k != "change"} for e in events],
        "jobs": summaries(job_store.get_jobs(conn, ids)),
        # Removals waiting for the IdP's answer (or that could not get one in time).
        "held": held_store.for_user(conn, user),
    }


def replay_jobs(conn: Connection, mapping: Mapping, request: ReplayRequest) -> dict[str, Any]:
    """Re-queue jobs by ids (404 naming unknown ones) or by filter (dead ones by default).

    Only what app/replay.py lets through is sent again; a dry run lists those as `jobs` and
    the others as `skipped`, each with the reason.
    """
    if request.ids is not None:
        ids = request.ids
        found = {j["id"] for j in job_store.get_jobs(conn, ids)}
        missing = [i for i in ids if i not in found]
        if missing:
            raise InputError(f"no job with id {', '.join(map(str, missing))}", status=404)
    else:
        assert request.filter is not None
        f = request.filter
        ids = _select(conn, f, f.state or [job_store.DEAD], request.limit, 0)
    if request.dry_run:
        verdicts = replay.judge_jobs(conn, mapping, ids)
        return {
            "dry_run": True,
            "jobs": summaries([v.job for v in verdicts if v.skip is None]),
            "skipped": [{**summaries([v.job])[0], "reason": v.skip} for v in verdicts if v.skip],
        }
    verdicts = replay.replay_jobs(conn, mapping, ids, datetime.now(UTC))
    return {"dry_run": False, "jobs": [_outcome(v) for v in verdicts]}


def _outcome(verdict: replay.Verdict) -> dict[str, Any]:
    if verdict.skip is None:
        return {"id": verdict.job["id"], "result": "requeued"}
    return {"id": verdict.job["id"], "result": "skipped", "reason": verdict.skip}


def summaries(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Jobs as the API lists them."""
    return [{k: j[k] for k in SUMMARY} for j in jobs]


def _select(
    conn: Connection, f: JobFilter, states: list[str], limit: int, offset: int
) -> list[int]:
    return job_store.select_job_ids(
        conn,
        states=states,
        cor_user_id=f.cor_user_id,
        workspace=f.workspace,
        provider=f.provider,
        since=f.since,
        until=f.until,
        limit=limit,
        offset=offset,
    )
