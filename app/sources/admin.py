"""The operators' API: manual changes, replay, jobs, dead letters and per-user history."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from app import dead_letters, operations
from app.changes import (
    ChangeKind,
    CorUserId,
    EventTime,
    GroupRef,
    MembershipChange,
    Name,
    Provider,
    UserRef,
)
from app.dead_letters import LetterReplay
from app.operations import JobId, JobPage, ReplayRequest
from app.runtime import Bridge, BridgeDep
from app.sources.common import bearer_matches, parse_json, refuse_auth


async def require_admin(request: Request, bridge: BridgeDep) -> None:
    """404 when the admin API is off; 401 without the right bearer token."""
    token = bridge.settings.bridge_admin_token
    if token is None:
        raise HTTPException(404, "admin API is not enabled (BRIDGE_ADMIN_TOKEN is unset)")
    if not bearer_matches(request.headers.get("authorization"), token):
        raise refuse_auth(request, bridge.auth_failures, "missing or wrong bearer token")
    if request.method == "POST":
        # FastAPI's own JSON decoding lets through what no database text can hold (lone
        # surrogates) and recurses without bound: run the sources' checks first. An operator
        # can fix a typed body, so a lone surrogate is refused here rather than mended.
        body = await request.body()
        if body.strip():
            parse_json(body, mend=False)


router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])


class ChangeRequest(BaseModel):
    """A change typed by an operator: a membership change, or explicit workspaces to detach."""

    model_config = ConfigDict(extra="forbid")

    provider: Provider
    change: ChangeKind = ChangeKind.removed
    user: UserRef | None = None
    group: GroupRef | None = None
    cor_user_id: CorUserId | None = None
    workspaces: list[Name] | None = None
    event_id: str | None = Field(default=None, min_length=1, max_length=200)
    occurred_at: EventTime | None = None

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


@router.post("/changes")
async def post_change(body: ChangeRequest, bridge: BridgeDep) -> dict[str, Any]:
    """Run an operator's change through intake, like any source's."""
    try:
        change = body.to_change()
    except ValidationError as exc:
        # A combination the model alone cannot see (a removal that names no group, say).
        problems = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        raise HTTPException(422, f"not a change intake can take: {problems}") from exc
    [decision] = await bridge.submit([change])
    return {
        "event_id": decision.event_id,
        "decision": decision.decision,
        "detail": decision.detail,
        "jobs": decision.jobs,
    }


@router.post("/replay")
async def replay(body: ReplayRequest, bridge: BridgeDep) -> dict[str, Any]:
    """Re-queue dead or cancelled jobs, by ids or by filter, unless the rules now say no
    (app/replay.py); `dry_run` lists which would be sent and which skipped, and why."""
    result = await _in_transaction(bridge, operations.replay_jobs, bridge.mapping, body)
    if not body.dry_run and bridge.worker is not None:
        bridge.worker.wake()
    return result


@router.get("/dead-letters")
async def list_dead_letters(
    bridge: BridgeDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> dict[str, Any]:
    """Every dead letter, newest first: jobs, Graph inbox entries, held changes, unresolved
    removals (app/dead_letters.py)."""
    return await _in_transaction(bridge, dead_letters.list_letters, limit, read_only=True)


@router.post("/dead-letters/replay")
async def replay_dead_letters(body: LetterReplay, bridge: BridgeDep) -> dict[str, Any]:
    """Send inbox, held and unresolved dead letters again (jobs: POST /admin/replay)."""
    return await dead_letters.send_again(bridge, body)


@router.get("/jobs")
async def list_jobs(bridge: BridgeDep, page: Annotated[JobPage, Query()]) -> dict[str, Any]:
    """Jobs, newest first, with filters and paging."""
    return await _in_transaction(
        bridge, operations.list_jobs, page, page.limit, page.offset, read_only=True
    )


@router.get("/jobs/{job_id}")
async def get_job(job_id: JobId, bridge: BridgeDep) -> dict[str, Any]:
    """One job with every delivery attempt (`attempts` counts them, `deliveries` lists them)."""
    return await _in_transaction(bridge, operations.job_detail, job_id, read_only=True)


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(job_id: JobId, bridge: BridgeDep) -> dict[str, Any]:
    """Cancel a pending job; a job in flight is not retried. Finished jobs are 409."""
    return await _in_transaction(bridge, operations.cancel_job, job_id)


@router.get("/users/{user}/history")
async def user_history(user: str, bridge: BridgeDep) -> dict[str, Any]:
    """Every change received for a user (IdP id, login or COR id) and what was decided."""
    return await _in_transaction(bridge, operations.user_history, user, read_only=True)


async def _in_transaction(
    bridge: Bridge, operation: Callable[..., dict[str, Any]], *args: Any, read_only: bool = False
) -> dict[str, Any]:
    # A read never waits for, or holds, the write lock that the IdPs' acks need.
    return await bridge.db.run(operation, *args, write=not read_only)
