"""A local COR stand-in, for trying the bridge with no COR account and for tests.

Mount it with ``app.mount("/sandbox/cor", create_sandbox())``. Paths below are relative to
the mount point.

COR's own surface (DESIGN.md section 6):
    POST /v1/oauth/token?grant_type=client_credentials      Basic auth -> bearer token
    PUT  /v2/integrations/users/{user_id}/detach             remove workspaces (idempotent)
    PUT  /v2/integrations/users/{user_id}/attach             add workspaces

Anything else is answered 404 as COR would, and recorded: a test can see that no call ever
went elsewhere (each call keeps its `raw_path`, the path exactly as it arrived).

Knobs for tests and demos:
    GET|DELETE /calls          what the COR routes were asked and answered (?path_contains=)
    GET /users/{user_id}       one user (?source=, default OKTA); POST /users creates or replaces
                               one user, or a list of them (all or nothing)
    POST|DELETE /faults        queue or clear misbehaviour: a status, a Retry-After, a delay
    POST /tokens/revoke        every issued token stops working (to test the token refresh)
    POST /reset                seed users back; calls, faults and tokens gone

All state lives in the app that create_sandbox returns, so two sandboxes never share it.
"""

import asyncio
import base64
import binascii
import json
import re
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, unquote

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, field_validator

SANDBOX_CLIENT_ID = "sandbox-client"
SANDBOX_CLIENT_SECRET = "sandbox-secret"  # noqa: S105 - a published demo credential
TOKEN_LIFETIME_SECONDS = 3600

COR_SOURCES: tuple[str, ...] = (
    "JIRA", "SALESFORCE", "ADVERTMIND", "QUICKBOOKS", "ZAPIER", "OKTA", "MICROSOFT_DYNAMICS",
    "GITHUB", "MICROSOFT_TEAMS", "VBS", "SAP", "GLOBANT",
)  # fmt: skip
# Workspace external id -> (COR numeric id, name).
WORKSPACES: dict[str, tuple[int, str]] = {
    "WS-ENG": (1, "Engineering"),
    "WS-ONCALL": (2, "On-call"),
    "WS-FIN": (3, "Finance"),
    "WS-OPS": (4, "Operations"),
}
_STAMP = "2026-01-15 22:42:15"
_FIRST_USER_ID = 8541
_UNAUTHORIZED = {"error": 401, "message": "Unauthorized"}


class SeedUser(BaseModel):
    """A COR user as the sandbox holds it; `id` is the external id, keyed with `source`."""

    id: str = Field(min_length=1)
    source: str
    name: str
    email: str
    workspaces: list[str] = Field(default_factory=list)


DEFAULT_USERS: list[SeedUser] = [
    SeedUser(id="jane@acme.example", source="OKTA", name="Jane Doe",
             email="jane@acme.example", workspaces=["WS-ENG", "WS-ONCALL", "WS-FIN"]),
    SeedUser(id="bob@acme.example", source="OKTA", name="Bob Stone",
             email="bob@acme.example", workspaces=["WS-FIN", "WS-ENG"]),
    SeedUser(id="mia@acme.example", source="OKTA", name="Mia Wong",
             email="mia@acme.example", workspaces=["WS-ENG", "WS-ONCALL"]),
    SeedUser(id="li@acme.example", source="OKTA", name="Li Chen",
             email="li@acme.example", workspaces=["WS-ENG", "WS-ONCALL"]),
    SeedUser(id="jane@acme.example", source="MICROSOFT_DYNAMICS", name="Jane Doe",
             email="jane@acme.example", workspaces=["WS-FIN", "WS-ENG"]),
    SeedUser(id="ravi@acme.example", source="MICROSOFT_DYNAMICS", name="Ravi Rao",
             email="ravi@acme.example", workspaces=["WS-ENG", "WS-ONCALL"]),
]  # fmt: skip


class FaultSpec(BaseModel):
    """Misbehaviour for the next `times` matching COR calls; status 0 means only the delay."""

    status: int = Field(default=0, le=599)
    times: int = Field(default=1, ge=1)
    retry_after: float | None = Field(default=None, ge=0)
    body: dict[str, Any] | None = None
    delay_seconds: float = Field(default=0.0, ge=0)
    path_contains: str | None = None

    @field_validator("status")
    @classmethod
    def _check_status(cls, value: int) -> int:
        if value != 0 and value < 100:
            raise ValueError("status must be 0 (delay only) or an HTTP status 100-599")
        return value


UserKey = tuple[str, str]  # (external id, source)


class SandboxState:
    """Everything one sandbox remembers."""

    def __init__(self, seed: list[SeedUser]) -> None:
        self.seed = [user.model_copy(deep=True) for user in seed]
        self.users: dict[UserKey, SeedUser] = {}
        self.ids: dict[UserKey, int] = {}
        self.tokens: dict[str, float] = {}  # token -> monotonic expiry
        self.calls: list[dict[str, Any]] = []
        self.faults: list[FaultSpec] = []
        self.seq = 0
        self.reset()

    def reset(self) -> None:
        """Seed users back; calls, faults and tokens forgotten."""
        self.users.clear()
        self.ids.clear()
        self.tokens.clear()
        self.calls.clear()
        self.faults.clear()
        self.seq = 0
        for user in self.seed:
            problem = self.put_user(user)
            if problem:
                raise ValueError(f"bad sandbox seed user {user.id!r}: {problem}")

    def put_user(self, user: SeedUser) -> str | None:
        """Create or replace a user (keeping its numeric id); return a problem, if any."""
        problem = user_problem(user)
        if problem:
            return problem
        key = (user.id, user.source)
        self.ids.setdefault(key, _FIRST_USER_ID + len(self.ids))
        stored = user.model_copy(deep=True)
        stored.workspaces = list(dict.fromkeys(user.workspaces))
        self.users[key] = stored
        return None

    def render_user(self, key: UserKey) -> dict[str, Any]:
        """The user as COR's attach and detach replies show it."""
        user, cor_id = self.users[key], self.ids[key]
        return {
            "id": cor_id,
            "name": user.name,
            "email": user.email,
            "workspaces": [_render_workspace(w, user.source, cor_id) for w in user.workspaces],
        }

    def issue_token(self) -> str:
        """A fresh bearer token."""
        token = secrets.token_urlsafe(32)
        self.tokens[token] = time.monotonic() + TOKEN_LIFETIME_SECONDS
        return token

    def bearer_ok(self, header: str | None) -> bool:
        """Whether an Authorization header carries an issued, unexpired, unrevoked token."""
        scheme, _, token = (header or "").partition(" ")
        expiry = self.tokens.get(token.strip())
        return scheme.lower() == "bearer" and expiry is not None and expiry > time.monotonic()

    def record_call(
        self, request: Request, path: str, user_id: str | None, raw: bytes
    ) -> dict[str, Any]:
        """Append a call to the log; the caller fills in `status` when it answers."""
        self.seq += 1
        call: dict[str, Any] = {
            "seq": self.seq, "at": datetime.now(UTC).isoformat(), "method": request.method,
            "path": path, "raw_path": _relative_raw_path(request), "user_id": user_id,
            "body": _parse_json(raw), "status": None, "fault": False,
        }  # fmt: skip
        self.calls.append(call)
        return call

    def take_fault(self, path: str) -> FaultSpec | None:
        """Consume one use of the oldest queued fault that matches this path."""
        for fault in self.faults:
            if fault.path_contains is None or fault.path_contains in path:
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                return fault
        return None


def user_problem(user: SeedUser) -> str | None:
    """Why COR would refuse this user, if it would."""
    if user.source not in COR_SOURCES:
        return f"source must be one of {', '.join(COR_SOURCES)}"
    unknown = [w for w in user.workspaces if w not in WORKSPACES]
    if unknown:
        return f"unknown workspace: {', '.join(unknown)}"
    return None


def _render_workspace(external_id: str, source: str, user_id: int) -> dict[str, Any]:
    ws_id, name = WORKSPACES[external_id]
    return {
        "id": ws_id,
        "name": name,
        "active": True,
        "metadata": {},
        "json_integrations": {
            "integration_id": 10 + COR_SOURCES.index(source),
            "is_active": True,
            "source": source,
            "destination": None,
            "status": "NOT_SEND",
            "origin_external_id": external_id,
            "destination_external_id": None,
        },
        "created_at": _STAMP,
        "updated_at": _STAMP,
        "pivot": {"workspace_id": ws_id, "user_id": user_id, "percentage": 100},
    }


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _cor_error(status: int, code: str, message: str) -> JSONResponse:
    body = {"status": status, "name": "CORCustomError", "code": code, "message": message}
    return JSONResponse(body, status_code=status)


def _unauthorized() -> JSONResponse:
    return JSONResponse(_UNAUTHORIZED, status_code=401)


def _fault_response(fault: FaultSpec) -> JSONResponse:
    headers = None
    if fault.retry_after is not None:
        value = fault.retry_after
        headers = {"Retry-After": str(int(value)) if value.is_integer() else str(value)}
    body = fault.body
    if body is None and fault.status == 401:
        body = _UNAUTHORIZED
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
    body = _parse_json(raw)
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


def _relative_path(request: Request) -> str:
    path, root = request.url.path, request.scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _relative_raw_path(request: Request) -> str:
    """The path as it arrived, percent-escapes kept, without the mount point and query."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    path, root = raw.decode("latin-1").split("?", 1)[0], request.scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


Handler = Callable[[Request, bytes], Response]


async def _serve(
    state: SandboxState, request: Request, user_id: str | None, handle: Handler
) -> Response:
    """Record a COR call, apply any queued fault, and otherwise answer as COR would."""
    raw = await request.body()
    path = _relative_path(request)
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
        found = _CHANGE_ROUTE.fullmatch(_relative_raw_path(request))
        if found is None or request.method != "PUT":
            return await _serve(state, request, None, _no_route)
        user_id, attach = unquote(found[1]), found[2] == "attach"
        return await _serve(state, request, user_id, _change_handler(state, user_id, attach))

    return app


_CHANGE_ROUTE = re.compile(r"/v2/integrations/users/([^/]+)/(detach|attach)")


def _no_route(request: Request, raw: bytes) -> Response:
    return _cor_error(404, "ZC404", f"No route for {request.method} {_relative_raw_path(request)}")
