"""The admin page: server-rendered HTML over the same operations as the JSON admin API.

GET /admin is the dashboard (or the login form); /admin/login and /admin/logout manage the
browser session; /admin/ui/... are the other pages and the replay form. Forms POST and
redirect back (303) with a flash message. No JavaScript.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import TypeAdapter, ValidationError

from app import dead_letters, operations
from app.errors import InputError
from app.graph.service import graph_checks
from app.operations import INT32_MAX, JobFilter, JobId, ReplayRequest, RowOffset
from app.runtime import Bridge, BridgeDep
from app.sources.common import refuse_auth, secret_matches
from app.store import jobs as job_store
from app.ui import auth
from app.ui.render import HtmlErrorsRoute
from app.ui.views import (
    back_with,
    posted_form,
    read,
    render,
    show,
    to_login,
    viewer_of,
    write,
)


def _enabled(bridge: BridgeDep) -> None:
    auth.admin_token(bridge)  # 404 before anything else when the admin API is off


log = structlog.get_logger(__name__)
router = APIRouter(
    include_in_schema=False, route_class=HtmlErrorsRoute, dependencies=[Depends(_enabled)]
)
_JOB_IDS = TypeAdapter(list[JobId])
RECENT = 50
DEAD_SHOWN = 200
REPLAY_ALL_LIMIT = 1000


def _dashboard_data(conn: Any, offset: int) -> dict[str, Any]:
    return {
        "stats": job_store.queue_stats(conn),
        "recent": operations.list_jobs(conn, JobFilter(), RECENT, offset)["jobs"],
        "dead": operations.list_jobs(conn, JobFilter(state=[job_store.DEAD]), DEAD_SHOWN)["jobs"],
        "letters": dead_letters.others(conn, DEAD_SHOWN),
    }


def _worker_status(bridge: Bridge) -> dict[str, Any]:
    beat = bridge.worker.last_beat if bridge.worker else None
    since = None if beat is None else time.monotonic() - beat
    limit = 60 + bridge.settings.cor_timeout_seconds
    return {"ok": since is not None and since < limit, "beat_seconds_ago": since}


@router.get("/admin")
async def dashboard(
    request: Request,
    bridge: BridgeDep,
    offset: RowOffset = 0,
    next_: Annotated[str | None, Query(alias="next")] = None,
) -> Response:
    """Queue health, recent jobs, dead letters and the history search; or the login form."""
    viewer = await viewer_of(request, bridge)
    if viewer is None:
        return _login_form(request, bridge, auth.safe_back(next_))
    data = await read(bridge, _dashboard_data, offset)
    return render(
        request,
        viewer,
        "dashboard.html",
        offset=offset,
        page_size=RECENT,
        dead_shown=DEAD_SHOWN,
        worker=_worker_status(bridge),
        mapping_error=bridge.tables.error,
        okta=await _okta_status(request),
        graph_delta=await _graph_delta_status(request),
        **data,
    )


async def _okta_status(request: Request) -> dict[str, Any] | None:
    directory = getattr(request.app.state, "okta", None)
    return await directory.checks() if directory is not None else None


async def _graph_delta_status(request: Request) -> dict[str, Any] | None:
    service = getattr(request.app.state, "graph", None)
    if service is None or not service.on:
        return None
    delta: dict[str, Any] | None = (await graph_checks(service)).get("delta")
    return delta


def _login_form(
    request: Request, bridge: Bridge, back: str, error: str | None = None, status: int = 200
) -> Response:
    token = auth.admin_token(bridge)
    return show(request, token, "login.html", status, viewer=None, next=back, error=error)


@router.post("/admin/login")
async def login(request: Request, bridge: BridgeDep) -> Response:
    """Check a pasted admin token (constant time) and start a browser session."""
    token = auth.admin_token(bridge)
    form = await auth.read_form(request)
    back = auth.safe_back(auth.first(form, "next"))
    if not secret_matches(auth.first(form, "token"), token):
        log.warning("admin_login_refused", client=request.client and request.client.host)
        refused = refuse_auth(request, bridge.auth_failures, "wrong admin token")
        if refused.status_code == 429:
            message = "Too many wrong tokens from this address; wait a minute."
            return _login_form(request, bridge, back, message, 429)
        return _login_form(request, bridge, back, "That is not the admin token.", 401)
    log.info("admin_login", client=request.client and request.client.host)
    response = RedirectResponse(back, status_code=303)
    auth.set_session(response, request, await auth.start_session(bridge, token))
    return response


@router.post("/admin/logout")
async def logout(request: Request, bridge: BridgeDep) -> Response:
    """End the browser session (CSRF-checked, so no other site can log a viewer out): deleted
    server-side, so the old cookie opens nothing."""
    checked = await posted_form(request, bridge)
    if isinstance(checked, Response):
        return checked
    viewer, _ = checked
    await auth.end_session(request, bridge, viewer.token)
    response = RedirectResponse("/admin", status_code=303)
    auth.clear_session(response, request)
    auth.set_flash(response, request, viewer.token, ["Logged out."])
    return response


@router.get("/admin/ui/history")
async def history(
    request: Request, bridge: BridgeDep, user: Annotated[str, Query(max_length=300)] = ""
) -> Response:
    """Every event about a user and what was decided, and their jobs."""
    viewer = await viewer_of(request, bridge)
    if viewer is None:
        return to_login(request)
    user = user.strip()
    found = await read(bridge, operations.user_history, user) if user else None
    return render(request, viewer, "history.html", user=user, search_user=user, history=found)


@router.get("/admin/ui/jobs/{job_id}")
async def job(request: Request, bridge: BridgeDep, job_id: JobId) -> Response:
    """One job with every delivery attempt."""
    viewer = await viewer_of(request, bridge)
    if viewer is None:
        return to_login(request)
    try:
        detail = await read(bridge, operations.job_detail, job_id)
    except InputError as exc:
        return render(request, viewer, "error.html", exc.status, message=exc.message)
    return render(request, viewer, "job.html", job=detail)


@router.get("/admin/ui/replay-dead")
async def confirm_replay_dead(request: Request, bridge: BridgeDep) -> Response:
    """The confirmation step of "replay all dead": lists exactly what would be sent again."""
    viewer = await viewer_of(request, bridge)
    if viewer is None:
        return to_login(request)
    ask = ReplayRequest(
        filter=JobFilter(state=[job_store.DEAD]), dry_run=True, limit=REPLAY_ALL_LIMIT
    )
    dry = await read(bridge, operations.replay_jobs, bridge.mapping, ask)
    return render(
        request,
        viewer,
        "confirm.html",
        jobs=dry["jobs"],
        skipped=dry["skipped"],
        limit=REPLAY_ALL_LIMIT,
    )


@router.post("/admin/ui/replay")
async def replay(request: Request, bridge: BridgeDep) -> Response:
    """Re-queue the jobs a form names (CSRF-checked), wake the worker, redirect back."""
    checked = await posted_form(request, bridge)
    if isinstance(checked, Response):
        return checked
    viewer, form = checked
    try:
        ids = sorted(set(_JOB_IDS.validate_python([int(v) for v in form.get("id", [])])))
    except (ValueError, ValidationError):
        message = f"job ids must be whole numbers from 1 to {INT32_MAX}"
        return render(request, viewer, "error.html", 400, message=message)
    return back_with(request, viewer, form, await _replay(bridge, ids))


def _said(outcome: dict[str, Any]) -> str:
    reason = outcome.get("reason")
    return f"{outcome['result']} ({reason})" if reason else str(outcome["result"])


async def _replay(bridge: Bridge, ids: list[int]) -> list[str]:
    if not ids:
        return ["Nothing to replay: no job was selected."]
    try:
        ask = ReplayRequest(ids=ids)
        result = await write(bridge, operations.replay_jobs, bridge.mapping, ask)
    except InputError as exc:
        return [f"Nothing replayed: {exc.message}."]
    if bridge.worker is not None:
        bridge.worker.wake()
    outcome = {j["id"]: _said(j) for j in result["jobs"]}
    log.info("admin_ui_replay", jobs=outcome)
    return [f"Job {job_id}: {answer}." for job_id, answer in outcome.items()]
