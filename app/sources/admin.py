"""The operators' API: manual changes, replay, jobs and per-user history."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from app.changes import ChangeKind, GroupRef, MembershipChange, Provider, UserRef
from app.runtime import Bridge, BridgeDep
from app.sources.common import bearer_matches
from app.store import events as event_store
from app.store import jobs as job_store


def require_admin(request: Request, bridge: BridgeDep) -> None:
    """404 when the admin API is off; 401 without the right bearer token."""
    token = bridge.settings.bridge_admin_token
    if token is None:
        raise HTTPException(404, "admin API is not enabled (BRIDGE_ADMIN_TOKEN is unset)")
    if not bearer_matches(request.headers.get("authorization"), token):
        raise HTTPException(
            401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
        )


router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])


class ChangeRequest(BaseModel):
    """A change typed by an operator: a membership change, or explicit workspaces to detach."""

    model_config = ConfigDict(extra="forbid")

    provider: Provider
    change: ChangeKind = ChangeKind.removed
    user: UserRef | None = None
    group: GroupRef | None = None
    cor_user_id: str | None = Field(default=None, min_length=1)
    workspaces: list[str] | None = None
    event_id: str | None = Field(default=None, min_length=1, max_length=200)
    occurred_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _who(self) -> ChangeRequest:
        if self.user is None and self.cor_user_id is None:
            raise ValueError("give either user (the IdP's identifiers) or cor_user_id")
        if self.workspaces is not None and self.change is not ChangeKind.removed:
            raise ValueError("workspaces can only be given with change 'removed'")
        return self

    def to_change(self) -> MembershipChange:
        """The request as the MembershipChange every source produces."""
        user = self.user or UserRef(id=self.cor_user_id or "")
        return MembershipChange(
            provider=self.provider,
            event_id=self.event_id or f"admin-{uuid.uuid4()}",
            occurred_at=self.occurred_at or datetime.now(UTC),
            change=self.change,
            user=user,
            group=self.group,
            workspaces=tuple(self.workspaces) if self.workspaces is not None else None,
            cor_user_id=self.cor_user_id,
        )


class JobFilter(BaseModel):
    """Which jobs: by state, user, workspace, provider and creation time."""

    model_config = ConfigDict(extra="forbid")

    state: list[str] = Field(default_factory=list)
    cor_user_id: str | None = None
    workspace: str | None = None
    provider: Provider | None = None
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None

    @model_validator(mode="after")
    def _known_states(self) -> JobFilter:
        unknown = set(self.state) - set(job_store.STATES)
        if unknown:
            raise ValueError(f"unknown state {sorted(unknown)}; use {list(job_store.STATES)}")
        return self


class ReplayRequest(BaseModel):
    """Jobs to send again, by id or by filter; `dry_run` only shows which."""

    model_config = ConfigDict(extra="forbid")

    ids: list[int] | None = None
    filter: JobFilter | None = None
    dry_run: bool = False
    limit: int = Field(default=1000, ge=1, le=100_000)

    @model_validator(mode="after")
    def _one_selector(self) -> ReplayRequest:
        if (self.ids is None) == (self.filter is None):
            raise ValueError("give exactly one of ids or filter")
        return self


@router.post("/changes")
async def post_change(body: ChangeRequest, bridge: BridgeDep) -> dict[str, Any]:
    """Run an operator's change through intake, like any source's."""
    change = body.to_change()
    [decision] = await bridge.submit([change])
    return {
        "event_id": decision.event_id,
        "decision": decision.decision,
        "detail": decision.detail,
        "jobs": decision.jobs,
    }


@router.post("/replay")
async def replay(body: ReplayRequest, bridge: BridgeDep) -> dict[str, Any]:
    """Re-queue dead, done or cancelled jobs."""
    result = await anyio.to_thread.run_sync(_replay, bridge, body)
    if not body.dry_run and bridge.worker is not None:
        bridge.worker.wake()
    return result


def _replay(bridge: Bridge, body: ReplayRequest) -> dict[str, Any]:
    with bridge.db.begin() as conn:
        if body.ids is not None:
            ids = body.ids
            found = {j["id"] for j in job_store.get_jobs(conn, ids)}
            missing = [i for i in ids if i not in found]
            if missing:
                raise HTTPException(404, f"no job with id {', '.join(map(str, missing))}")
        else:
            assert body.filter is not None
            f = body.filter
            ids = job_store.select_job_ids(
                conn,
                states=f.state or [job_store.DEAD],
                cor_user_id=f.cor_user_id,
                workspace=f.workspace,
                provider=f.provider,
                since=f.since,
                until=f.until,
                limit=body.limit,
            )
        if body.dry_run:
            return {"dry_run": True, "jobs": _summaries(job_store.get_jobs(conn, ids))}
        outcome = job_store.requeue_jobs(conn, ids, datetime.now(UTC))
    return {"dry_run": False, "jobs": [{"id": i, "result": r} for i, r in outcome.items()]}


@router.get("/jobs")
async def list_jobs(
    bridge: BridgeDep,
    filters: Annotated[JobFilter, Query()],
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """Jobs, newest first, with filters and paging."""

    def run() -> dict[str, Any]:
        with bridge.db.begin() as conn:
            ids = job_store.select_job_ids(
                conn,
                states=filters.state,
                cor_user_id=filters.cor_user_id,
                workspace=filters.workspace,
                provider=filters.provider,
                since=filters.since,
                until=filters.until,
                limit=limit,
                offset=offset,
            )
            return {"jobs": _summaries(job_store.get_jobs(conn, ids)), "offset": offset}

    return await anyio.to_thread.run_sync(run)


@router.get("/jobs/{job_id}")
async def get_job(job_id: int, bridge: BridgeDep) -> dict[str, Any]:
    """One job with every delivery attempt (`attempts` counts them, `deliveries` lists them)."""

    def run() -> dict[str, Any]:
        with bridge.db.begin() as conn:
            found = job_store.get_jobs(conn, [job_id])
            if not found:
                raise HTTPException(404, f"no job with id {job_id}")
            return {**found[0], "deliveries": job_store.get_attempts(conn, job_id)}

    return await anyio.to_thread.run_sync(run)


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(job_id: int, bridge: BridgeDep) -> dict[str, Any]:
    """Cancel a pending job; a job in flight is not retried. Finished jobs are 409."""

    def run() -> dict[str, Any]:
        now = datetime.now(UTC)
        with bridge.db.begin() as conn:
            found = job_store.get_jobs(conn, [job_id])
            if not found:
                raise HTTPException(404, f"no job with id {job_id}")
            reason = "cancelled by an operator"
            if job_store.cancel_job(conn, job_id, now, reason):
                return {"id": job_id, "state": job_store.CANCELLED}
            if job_store.request_cancel(conn, job_id, now, reason):
                return {"id": job_id, "state": job_store.RUNNING, "detail": "will not be retried"}
            raise HTTPException(409, f"job {job_id} is {found[0]['state']}; nothing to cancel")

    return await anyio.to_thread.run_sync(run)


@router.get("/users/{user}/history")
async def user_history(user: str, bridge: BridgeDep) -> dict[str, Any]:
    """Every change received for a user (IdP id, login or COR id) and what was decided."""

    def run() -> dict[str, Any]:
        with bridge.db.begin() as conn:
            events = event_store.list_user_events(conn, user)
            cor_ids = {e["cor_user_id"] for e in events if e["cor_user_id"]} | {user}
            ids: list[int] = []
            for cor_id in sorted(cor_ids):
                ids += job_store.select_job_ids(conn, cor_user_id=cor_id)
            jobs = job_store.get_jobs(conn, ids)
        return {
            "user": user,
            "events": [{k: v for k, v in e.items() if k != "change"} for e in events],
            "jobs": _summaries(jobs),
        }

    return await anyio.to_thread.run_sync(run)


def _summaries(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keep = (
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
    return [{k: j[k] for k in keep} for j in jobs]
