"""The stand-in's routes: token, subscriptions, groups, users, the delta query."""

from __future__ import annotations

import json
import re
import secrets
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from app.graph.standin.delta import answer_delta
from app.graph.standin.replies import error, page
from app.graph.standin.state import CLIENT_ID, CLIENT_SECRET, ROLE, TENANT, StandinState
from app.graph.standin.tenant import add_knobs


def create_standin(state: StandinState) -> FastAPI:
    """The stand-in app over `state`."""
    app = FastAPI(title="Graph stand-in")

    @app.middleware("http")
    async def record(request: Request, call_next: Any) -> Response:
        if "/_standin/" in request.url.path:  # the operator's knobs: not Graph, not recorded
            reply: Response = await call_next(request)
            return reply
        raw = await request.body()
        call: dict[str, Any] = {
            "method": request.method,
            "path": request.url.path,
            # As it arrived, escapes kept: an id must reach Graph as exactly one segment.
            "raw_path": request.scope["raw_path"].decode("latin-1").split("?")[0],
            "query": dict(request.query_params),
            "body": _safe_body(raw),
            "at": datetime.now(UTC).isoformat(),
        }
        with state.lock:
            state.calls.append(call)
        fault = state.take_fault(request.url.path)
        if fault is not None:
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else None
            reply = error(fault.status, "standinFault", "a queued fault")
            reply.headers.update(headers or {})
        elif not request.url.path.endswith("/token") and not _bearer_ok(state, request):
            reply = error(401, "InvalidAuthenticationToken", "Access token is empty or invalid")
        else:
            reply = await call_next(request)
        call["status"] = reply.status_code
        return reply

    @app.post("/{tenant}/oauth2/v2.0/token")
    async def token(tenant: str, request: Request) -> Response:
        form = parse_qs((await request.body()).decode())
        ok = (
            tenant == TENANT
            and form.get("client_id") == [CLIENT_ID]
            and form.get("client_secret") == [CLIENT_SECRET]
            and form.get("grant_type") == ["client_credentials"]
            and form.get("scope") == ["https://graph.microsoft.com/.default"]
        )
        if not ok:
            body = {"error": "invalid_client", "error_description": "AADSTS7000215: bad secret"}
            return JSONResponse(body, status_code=401)
        issued = secrets.token_urlsafe(24)
        state.tokens.add(issued)
        return JSONResponse({"token_type": "Bearer", "expires_in": 3599, "access_token": issued})

    @app.post("/v1.0/subscriptions", status_code=201)
    async def create(request: Request) -> Response:
        body = await request.json()
        problem = await _validate_urls(state, body)
        if problem:
            return error(400, "ValidationError", problem)
        sub = {
            "id": str(uuid.uuid4()),
            "resource": body["resource"],
            "changeType": body["changeType"],
            "notificationUrl": body["notificationUrl"],
            "lifecycleNotificationUrl": body.get("lifecycleNotificationUrl"),
            "expirationDateTime": body["expirationDateTime"],
        }
        state.subscriptions[sub["id"]] = sub
        return JSONResponse(sub, status_code=201)

    @app.get("/v1.0/subscriptions")
    async def list_subscriptions(request: Request) -> Response:
        return page(request, list(state.subscriptions.values()), state.page_size)

    @app.patch("/v1.0/subscriptions/{sub_id}")
    async def renew(sub_id: str, request: Request) -> Response:
        sub = state.subscriptions.get(sub_id)
        if sub is None:
            return error(404, "ResourceNotFound", f"subscription {sub_id} not found")
        sub["expirationDateTime"] = (await request.json())["expirationDateTime"]
        return JSONResponse(sub)

    @app.post("/v1.0/subscriptions/{sub_id}/reauthorize")
    async def reauthorize(sub_id: str) -> Response:
        if sub_id not in state.subscriptions:
            return error(404, "ResourceNotFound", f"subscription {sub_id} not found")
        return Response(status_code=204)

    @app.get("/v1.0/groups/delta")
    async def groupsanswer_delta(request: Request) -> Response:
        return answer_delta(state, request)

    @app.get("/v1.0/groups/{group_id}")
    async def get_group(group_id: str) -> Response:
        group = state.groups.get(group_id)
        return JSONResponse(group) if group else error(404, "Request_ResourceNotFound", "no")

    @app.get("/v1.0/groups")
    async def find_groups(request: Request) -> Response:
        match = re.fullmatch(r"displayName eq '(.*)'", request.query_params.get("$filter", ""))
        name = match.group(1).replace("''", "'") if match else None
        found = [g for g in state.groups.values() if g["displayName"] == name]
        return page(request, found, state.page_size)

    @app.get("/v1.0/users/{user_id}")
    async def get_user(user_id: str) -> Response:
        user = state.users.get(user_id)
        return JSONResponse(user) if user else error(404, "Request_ResourceNotFound", "no")

    @app.get("/v1.0/users/{user_id}/transitiveMemberOf")
    async def transitive(user_id: str, request: Request) -> Response:
        if user_id not in state.users:
            return error(404, "Request_ResourceNotFound", "no")
        items = [ROLE] + [
            {"@odata.type": "#microsoft.graph.group", **state.groups.get(g, {"id": g})}
            for g in state.member_of.get(user_id, [])
        ]
        return page(request, items, state.page_size)

    add_knobs(app, state)
    return app


async def _validate_urls(state: StandinState, body: dict[str, Any]) -> str | None:
    """Graph's handshake: each URL must echo a validationToken as text/plain within 10 s."""
    if not state.validate_urls:
        return None
    urls = [body.get("notificationUrl"), body.get("lifecycleNotificationUrl")]
    async with httpx.AsyncClient(timeout=10.0) as http:
        for url in filter(None, urls):
            token = f"Validation: Testing client application reachability {uuid.uuid4()}"
            try:
                reply = await http.post(url, params={"validationToken": token})
            except httpx.HTTPError as exc:
                return f"Subscription validation request failed: {url}: {exc!r}"
            ok = (
                reply.status_code == 200
                and reply.headers.get("content-type", "").startswith("text/plain")
                and reply.text == token
            )
            if not ok:
                return f"Subscription validation request failed: {url} answered {reply.status_code}"
    return None


def _bearer_ok(state: StandinState, request: Request) -> bool:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme == "Bearer" and token in state.tokens


def _safe_body(raw: bytes) -> Any:
    text = raw.decode(errors="replace")
    if "client_secret" in text:
        return "(token request)"
    try:
        return json.loads(text) if raw else None
    except ValueError:
        return text
