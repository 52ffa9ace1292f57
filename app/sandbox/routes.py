"""The COR stand-in's routes: COR's token and user routes, and the knobs for tests."""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import secrets
from collections.abc import Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, unquote

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from app.sandbox.state import (
    COR_SOURCES,
    DEFAULT_USERS,
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    TOKEN_LIFETIME_SECONDS,
    UNAUTHORIZED,
    WORKSPACES,
    FaultSpec,
    SandboxState,
    SeedUser,
    parse_json,
    relative_path,
    relative_raw_path,
    user_problem,
)


def _cor_error(status: int, code: str, message: str) -> JSONResponse:
    body = {"status": status, "name": "CORCustomError", "code": code, "message": message}
    return JSONResponse(body, status_code=status)


def _unauthorized() -> JSONResponse:
    return JSONResponse(UNAUTHORIZED, status_code=401)


def _fault_response(fault: FaultSpec) -> JSONResponse:
    headers = None
    if fault.retry_after is not None:
        value = fault.retry_after
        headers = {"Retry-After": str(int(value)) if value.is_integer() else str(value)}
    body = fault.body
    if body is None and fault.status == 401:
        body = UNAUTHORIZED
    elif body is None:
        try:
            phrase = HTTPStatus(fault.status).phrase
        except ValueError:
            phrase = "Sandbox fault"
        body = {"status": fault.status, "name": "CORCustomError",
                "code": f"HTTP_{fault.status}", "message": phrase}  # fmt: skip
    return JSONResponse(body, status_code=fault.status, headers=headers)


def _basic_ok(header: str | None) -> bool:
    scheme, _, value = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    client_id, sep, secret = decoded.partition(":")
    id_ok = secrets.compare_digest(client_id.encode(), SANDBOX_CLIENT_ID.encode())
    secret_ok = secrets.compare_digest(secret.encode(), SANDBOX_CLIENT_SECRET.encode())
    return bool(sep) and id_ok and secret_ok


def _parse_change(raw: bytes) -> tuple[list[str], str] | str:
    """The (workspaces, source) of an attach or detach body, or what is wrong with it."""
    body = parse_json(raw)
    if not isinstance(body, dict):
        return "body must be a JSON object with workspaces and metadata.source"
    workspaces = body.get("workspaces")
    if not (isinstance(workspaces, list) and workspaces
            and all(isinstance(w, str) and w for w in workspaces)):  # fmt: skip
        return "workspaces must be a non-empty list of workspace external ids (strings)"
    metadata = body.get("metadata")
    source = metadata.get("source") if isinstance(metadata, dict) else None
    if not isinstance(source, str):
        return "metadata.source is required"
    if source not in COR_SOURCES:
        return f"metadata.source must be one of {', '.join(COR_SOURCES)}"
    return workspaces, source


Handler = Callable[[Request, bytes], Response]


async def _serve(
    state: SandboxState, request: Request, user_id: str | None, handle: Handler
) -> Response:
    """Record a COR call, apply any queued fault, and otherwise answer as COR would."""
    raw = await request.body()
    path = relative_path(request)
    call = state.record_call(request, path, user_id, raw)
    fault = state.take_fault(path)
    if fault is not None:
        call["fault"] = True
        if fault.delay_seconds:
            await asyncio.sleep(fault.delay_seconds)
    response = _fault_response(fault) if fault and fault.status else handle(request, raw)
    call["status"] = response.status_code
    return response


def _change_handler(state: SandboxState, user_id: str, attach: bool) -> Handler:
    def handle(request: Request, raw: bytes) -> Response:
        if not state.bearer_ok(request.headers.get("authorization")):
            return _unauthorized()
        parsed = _parse_change(raw)
        if isinstance(parsed, str):
            return _cor_error(400, "ZC002", parsed)
        workspaces, source = parsed
        key = (user_id, source)
        user = state.users.get(key)
        if user is None:
            return _cor_error(400, "ZC001", "Entity is not associated")
        if attach:
            unknown = [w for w in workspaces if w not in WORKSPACES]
            if unknown:
                return _cor_error(400, "ZC003", f"Workspace not found: {', '.join(unknown)}")
            user.workspaces += [w for w in dict.fromkeys(workspaces) if w not in user.workspaces]
        else:
            user.workspaces = [w for w in user.workspaces if w not in workspaces]
        return JSONResponse(state.render_user(key))

    return handle


def _token_handler(state: SandboxState) -> Handler:
    def handle(request: Request, raw: bytes) -> Response:
        grant = request.query_params.get("grant_type")
        if grant is None and "form-urlencoded" in request.headers.get("content-type", ""):
            grant = parse_qs(raw.decode("latin-1")).get("grant_type", [None])[0]
        if grant != "client_credentials":
            message = "grant_type must be client_credentials"
            return JSONResponse({"error": "unsupported_grant_type", "message": message}, 400)
        if not _basic_ok(request.headers.get("authorization")):
            return _unauthorized()
        return JSONResponse({
            "access_token": state.issue_token(), "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME_SECONDS, "refresh_token": secrets.token_urlsafe(32),
        })  # fmt: skip

    return handle


def create_sandbox(users: list[SeedUser] | None = None) -> FastAPI:
    """A fresh COR stand-in seeded with `users` (DEFAULT_USERS when None)."""
    state = SandboxState(DEFAULT_USERS if users is None else users)
    app = FastAPI(title="COR sandbox", description=__doc__ or "")
    app.state.sandbox = state

    @app.post("/v1/oauth/token")
    async def token(request: Request) -> Response:
        return await _serve(state, request, None, _token_handler(state))

    @app.put("/v2/integrations/users/{user_id}/detach")
    async def detach(user_id: str, request: Request) -> Response:
        return await _serve(state, request, user_id, _change_handler(state, user_id, False))

    @app.put("/v2/integrations/users/{user_id}/attach")
    async def attach(user_id: str, request: Request) -> Response:
        return await _serve(state, request, user_id, _change_handler(state, user_id, True))

    @app.get("/calls")
    async def list_calls(path_contains: str | None = None) -> dict[str, Any]:
        calls = [c for c in state.calls if path_contains is None or path_contains in c["path"]]
        return {"calls": calls}

    @app.delete("/calls", status_code=204)
    async def clear_calls() -> Response:
        state.calls.clear()
        return Response(status_code=204)

    @app.get("/users/{user_id}")
    async def get_user(user_id: str, source: str = "OKTA") -> Response:
        if (user_id, source) not in state.users:
            return JSONResponse({"detail": f"no user {user_id!r} for source {source}"}, 404)
        return JSONResponse(state.render_user((user_id, source)))

    @app.post("/users", status_code=201)
    async def put_user(body: SeedUser | list[SeedUser]) -> Response:
        users = body if isinstance(body, list) else [body]
        for user in users:  # all or nothing: check every one before storing any
            problem = user_problem(user)
            if problem:
                code = "ZC003" if problem.startswith("unknown workspace") else "ZC002"
                where = f"{user.id}: " if isinstance(body, list) else ""
                return _cor_error(400, code, where + problem)
        for user in users:
            state.put_user(user)
        if isinstance(body, list):
            return JSONResponse({"stored": len(users)}, status_code=201)
        return JSONResponse(state.render_user((body.id, body.source)), status_code=201)

    @app.post("/faults", status_code=201)
    async def add_fault(fault: FaultSpec) -> dict[str, int]:
        state.faults.append(fault)
        return {"queued": len(state.faults)}

    @app.delete("/faults", status_code=204)
    async def clear_faults() -> Response:
        state.faults.clear()
        return Response(status_code=204)

    @app.post("/tokens/revoke")
    async def revoke_tokens() -> dict[str, int]:
        revoked = len(state.tokens)
        state.tokens.clear()
        return {"revoked": revoked}

    @app.post("/reset", status_code=204)
    async def reset() -> Response:
        state.reset()
        return Response(status_code=204)

    @app.api_route("/{anything:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def elsewhere(anything: str, request: Request) -> Response:
        # The routes above match the decoded path: an id with an escaped slash lands here.
        found = _CHANGE_ROUTE.fullmatch(relative_raw_path(request))
        if found is None or request.method != "PUT":
            return await _serve(state, request, None, _no_route)
        user_id, attach = unquote(found[1]), found[2] == "attach"
        return await _serve(state, request, user_id, _change_handler(state, user_id, attach))

    return app


_CHANGE_ROUTE = re.compile(r"/v2/integrations/users/([^/]+)/(detach|attach)")


def _no_route(request: Request, raw: bytes) -> Response:
    return _cor_error(404, "ZC404", f"No route for {request.method} {relative_raw_path(request)}")
