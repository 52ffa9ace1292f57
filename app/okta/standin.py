"""An Okta stand-in: the read-only Management API and System Log the bridge uses, over HTTP.

`make run` mounts it at /sandbox/okta (OKTA_ORG_URL points there); tests serve it on
loopback. Paths below are relative to the org URL.

Okta's surface (DESIGN.md section 6), with `Authorization: SSWS <STANDIN_TOKEN>`:
    GET /api/v1/users/{id}                 status and profile.login; 404 E0000007
    GET /api/v1/users/{id}/groups          paged (?limit=, Link rel="next" with ?after=)
    GET /api/v1/groups?q=                  groups whose name starts with q, paged
    GET /api/v1/groups/{id}/users          paged the same way; 404 once the group is deleted
    GET /api/v1/logs?since=&filter=&limit= a polling request: always links on (rel="next")
Every reply carries X-Rate-Limit-Limit/-Remaining/-Reset; a bucket that runs dry is 429.

Knobs (the org's admin, for tests and demos), JSON in and out:
    POST /_standin/users {id, login, status?}        create or replace a user
    POST /_standin/groups {id, name}                 create a group
    POST /_standin/members {group_id, user_id, op}   add or remove, logged as Okta logs it
    POST /_standin/users/{id}/deactivate             DEPROVISIONED (groups kept), logged
    POST /_standin/users/{id}/reactivate             ACTIVE again, logged
    DELETE /_standin/groups/{id}                     gone, members with it; logged
    POST|DELETE /_standin/faults                     queue {status, times, path_contains}
    POST /_standin/rate {limit, window_seconds?}     requests per window (60 s) per bucket
    POST /_standin/reset                             an empty org
    GET|DELETE /_standin/calls                       what the API was asked
Each logged change answers with the System Log event, so a test can also deliver it by hook.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from app.okta.standin_org import (
    JANE,
    MIA,
    WINDOW_SECONDS,
    Fault,
    Org,
    group_doc,
    seeded,
    user_doc,
)

__all__ = ["JANE", "MIA", "STANDIN_TOKEN", "Fault", "Org", "create_okta_standin", "seeded"]

STANDIN_TOKEN = "standin-okta-api-token"  # noqa: S105 - a published demo credential


def _error(status: int, code: str, summary: str) -> JSONResponse:
    body = {"errorCode": code, "errorSummary": summary, "errorId": secrets.token_hex(8)}
    return JSONResponse(body, status_code=status)


def create_okta_standin(org: Org | None = None) -> FastAPI:
    """The stand-in as an ASGI app; `app.state.org` is its state."""
    app = FastAPI(title="Okta stand-in", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.org = org if org is not None else Org()

    @app.middleware("http")
    async def gatekeeper(request: Request, call_next: Any) -> Response:
        path = request.url.path
        if "/_standin/" in path:
            response: Response = await call_next(request)
            return response
        state: Org = app.state.org
        state.calls.append(f"{request.method} {path}?{request.url.query}".rstrip("?"))
        if request.headers.get("authorization") != f"SSWS {STANDIN_TOKEN}":
            return _error(401, "E0000011", "Invalid token provided")
        bucket = "/".join(path.split("/api/v1/", 1)[-1].split("/")[:1])
        started, count = state.used.get(bucket, (time.time(), 0))
        if time.time() - started >= state.window_seconds:
            started, count = time.time(), 0
        state.used[bucket] = (started, count + 1)
        reset = str(int(started + state.window_seconds) + 1)
        limits = {
            "X-Rate-Limit-Limit": str(state.rate_limit),
            "X-Rate-Limit-Remaining": str(max(state.rate_limit - count - 1, 0)),
            "X-Rate-Limit-Reset": reset,
        }
        fault = next((f for f in state.faults if f.path_contains in path), None)
        if count >= state.rate_limit:
            response = _error(429, "E0000047", "API call exceeded rate limit")
        elif fault is not None:
            fault.times -= 1
            if fault.times <= 0:
                state.faults.remove(fault)
            response = _error(fault.status, "E0000009", "Internal Server Error")
        else:
            response = await call_next(request)
        response.headers.update(limits)
        return response

    def paged(request: Request, items: list[Any]) -> Response:
        limit = _int(request.query_params.get("limit"), 200)
        start = _int(request.query_params.get("after"), 0)
        page = items[start : start + limit]
        reply = JSONResponse(page)
        if start + limit < len(items):
            after = request.url.include_query_params(after=start + limit, limit=limit)
            reply.headers["Link"] = f'<{after}>; rel="next"'
        return reply

    @app.get("/api/v1/users/{user_id}")
    async def get_user(user_id: str) -> Response:
        user = app.state.org.users.get(user_id)
        if user is None:
            return _error(404, "E0000007", f"Not found: Resource not found: {user_id} (User)")
        return JSONResponse(user)

    @app.get("/api/v1/users/{user_id}/groups")
    async def user_groups(user_id: str, request: Request) -> Response:
        org: Org = app.state.org
        if user_id not in org.users:
            return _error(404, "E0000007", f"Not found: Resource not found: {user_id} (User)")
        everyone = group_doc("00geveryone000000000", "Everyone")
        return paged(request, [everyone, *(org.groups[g] for g in org.groups_of(user_id))])

    @app.get("/api/v1/groups")
    async def find_groups(request: Request) -> Response:
        prefix = request.query_params.get("q", "")
        org: Org = app.state.org
        return paged(
            request, [g for g in org.groups.values() if g["profile"]["name"].startswith(prefix)]
        )

    @app.get("/api/v1/groups/{group_id}/users")
    async def group_users(group_id: str, request: Request) -> Response:
        org: Org = app.state.org
        if group_id not in org.groups:
            return _error(404, "E0000007", f"Not found: Resource not found: {group_id} (UserGroup)")
        return paged(request, [org.users[u] for u in org.members.get(group_id, [])])

    @app.get("/api/v1/logs")
    async def logs(request: Request) -> Response:
        org: Org = app.state.org
        query = request.query_params
        wanted = set(re.findall(r'eventType eq "([^"]+)"', query.get("filter", "")))
        since = query.get("since") or "1970-01-01T00:00:00Z"
        after = _int(query.get("after"), -1)
        limit = _int(query.get("limit"), 100)
        found = [
            (i, e)
            for i, e in enumerate(org.log)
            if i > after and e["published"] >= since and (not wanted or e["eventType"] in wanted)
        ][:limit]
        last = found[-1][0] if found else after
        reply = JSONResponse([e for _, e in found])
        following = request.url.include_query_params(after=last)
        reply.headers["Link"] = f'<{request.url}>; rel="self", <{following}>; rel="next"'
        return reply

    @app.post("/_standin/users")
    async def put_user(body: dict[str, Any]) -> dict[str, Any]:
        user = user_doc(body["id"], body["login"], body.get("status", "ACTIVE"))
        app.state.org.users[body["id"]] = user
        return user

    @app.post("/_standin/groups")
    async def put_group(body: dict[str, Any]) -> dict[str, Any]:
        group = group_doc(body["id"], body["name"])
        app.state.org.groups[body["id"]] = group
        app.state.org.members.setdefault(body["id"], [])
        return group

    @app.post("/_standin/members")
    async def change_member(body: dict[str, Any]) -> dict[str, Any]:
        org: Org = app.state.org
        group_id, user_id = body["group_id"], body["user_id"]
        ids = org.members.setdefault(group_id, [])
        if body.get("op", "add") == "add":
            if user_id not in ids:
                ids.append(user_id)
            kind = "group.user_membership.add"
        else:
            if user_id in ids:
                ids.remove(user_id)
            kind = "group.user_membership.remove"
        if not body.get("logged", True):
            return {}
        group = org.groups[group_id]
        return org.event(kind, org.user_target(user_id), org.group_target(group_id, group))

    @app.post("/_standin/users/{user_id}/deactivate")
    async def deactivate(user_id: str) -> dict[str, Any]:
        org: Org = app.state.org
        org.users[user_id]["status"] = "DEPROVISIONED"
        return org.event("user.lifecycle.deactivate", org.user_target(user_id))

    @app.post("/_standin/users/{user_id}/reactivate")
    async def reactivate(user_id: str) -> dict[str, Any]:
        org: Org = app.state.org
        org.users[user_id]["status"] = "ACTIVE"
        return org.event("user.lifecycle.reactivate", org.user_target(user_id))

    @app.delete("/_standin/groups/{group_id}")
    async def delete_group(group_id: str) -> dict[str, Any]:
        org: Org = app.state.org
        group = org.groups.pop(group_id)
        org.members.pop(group_id, None)
        return org.event("group.lifecycle.delete", org.group_target(group_id, group))

    @app.post("/_standin/faults")
    async def add_fault(body: dict[str, Any]) -> dict[str, int]:
        app.state.org.faults.append(Fault(**body))
        return {"queued": len(app.state.org.faults)}

    @app.delete("/_standin/faults")
    async def clear_faults() -> dict[str, int]:
        app.state.org.faults.clear()
        return {"queued": 0}

    @app.post("/_standin/rate")
    async def set_rate(body: dict[str, float]) -> dict[str, float]:
        app.state.org.rate_limit = int(body["limit"])
        app.state.org.window_seconds = body.get("window_seconds", WINDOW_SECONDS)
        app.state.org.used.clear()
        return {"limit": body["limit"]}

    @app.post("/_standin/reset")
    async def reset() -> dict[str, int]:
        app.state.org = Org()
        return {"users": 0}

    @app.get("/_standin/calls")
    async def calls() -> list[str]:
        return list(app.state.org.calls)

    @app.delete("/_standin/calls")
    async def clear_calls() -> dict[str, int]:
        app.state.org.calls.clear()
        return {"calls": 0}

    return app


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default
