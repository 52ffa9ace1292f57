"""A Microsoft Graph stand-in for tests, served over real HTTP on loopback.

Paths (the bridge's GRAPH_LOGIN_URL is the server's URL, GRAPH_API_URL that plus /v1.0):
    POST /{tenant}/oauth2/v2.0/token                 client credentials -> bearer token
    POST /v1.0/subscriptions                         create (after validating both URLs)
    GET  /v1.0/subscriptions                         list (paged)
    PATCH /v1.0/subscriptions/{id}                   renew
    POST /v1.0/subscriptions/{id}/reauthorize        reauthorize
    GET  /v1.0/groups/{id}, GET /v1.0/groups?$filter=displayName eq '...'
    GET  /v1.0/users/{id}, GET /v1.0/users/{id}/transitiveMemberOf (paged, with a role in it)
    GET  /v1.0/groups/delta?$filter=id eq '..' or ...&$select=displayName,members
         a first round lists every member (one group's members split over pages by
         `delta_page_size`, each page a nextLink), then a deltaLink whose token returns only
         what changed since: members joined, members `@removed`, deleted groups `@removed`

Knobs are plain methods on `StandinState` (the server runs in a thread of the test process):
users, groups and memberships, queued faults, revoked tokens, and every call recorded.
`invoke_cli` runs `cor-bridge graph ...` in process against it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import httpx
import structlog
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

TENANT = "7d96d549-841b-4092-9c09-89abae4c860c"
CLIENT_ID = "standin-client-id"
CLIENT_SECRET = "standin-client-secret"
ROLE = {"@odata.type": "#microsoft.graph.directoryRole", "id": "role-1", "displayName": "Reader"}


@dataclass
class Fault:
    """Answer the next `times` calls whose path contains `path_contains` with `status`."""

    status: int
    times: int = 1
    path_contains: str = ""
    retry_after: float | None = None


@dataclass
class StandinState:
    """Everything the stand-in knows and was asked."""

    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    member_of: dict[str, list[str]] = field(default_factory=dict)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    tokens: set[str] = field(default_factory=set)
    page_size: int = 100
    validate_urls: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Direct members of each group, and every membership change since the start, in order.
    members: dict[str, list[str]] = field(default_factory=dict)
    changes: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, group, member)
    deleted: set[str] = field(default_factory=set)
    delta_page_size: int = 100  # members a delta page carries
    pending_pages: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    delta_tokens: dict[str, tuple[tuple[str, ...], int]] = field(default_factory=dict)
    # Graph answers an expired groups delta token with 400 syncStateNotFound (others: 410).
    expired_status: int = 400

    def reset(self) -> None:
        """Forget everything."""
        with self.lock:
            boxes = (self.users, self.groups, self.member_of, self.subscriptions, self.members)
            for box in (*boxes, self.pending_pages, self.delta_tokens):
                box.clear()
            self.changes.clear()
            self.deleted.clear()
            self.delta_page_size, self.expired_status = 100, 400
            self.calls.clear()
            self.faults.clear()
            self.tokens.clear()
            self.page_size, self.validate_urls = 100, True

    def add_group(self, group_id: str, name: str) -> None:
        """A group with its display name."""
        self.groups[group_id] = {"id": group_id, "displayName": name}

    def add_user(
        self, user_id: str, upn: str, *, mail: str | None = None, groups: tuple[str, ...] = ()
    ) -> None:
        """A user and the groups Graph reports them in (transitively)."""
        self.users[user_id] = {"id": user_id, "userPrincipalName": upn, "mail": mail}
        self.member_of[user_id] = list(groups)

    def add_member(self, group_id: str, user_id: str) -> None:
        """`user_id` joins `group_id` (directly; transitiveMemberOf lists it too)."""
        with self.lock:
            self.members.setdefault(group_id, [])
            if user_id not in self.members[group_id]:
                self.members[group_id].append(user_id)
            groups = self.member_of.setdefault(user_id, [])
            if group_id not in groups:
                groups.append(group_id)
            self.changes.append(("added", group_id, user_id))

    def remove_member(self, group_id: str, user_id: str) -> None:
        """`user_id` leaves `group_id`."""
        with self.lock:
            if user_id in self.members.get(group_id, []):
                self.members[group_id].remove(user_id)
            if group_id in self.member_of.get(user_id, []):
                self.member_of[user_id].remove(group_id)
            self.changes.append(("removed", group_id, user_id))

    def delete_group(self, group_id: str) -> None:
        """The group is deleted: gone from lookups, `@removed` in the next delta."""
        with self.lock:
            for user_id in self.members.pop(group_id, []):
                if group_id in self.member_of.get(user_id, []):
                    self.member_of[user_id].remove(group_id)
            self.groups.pop(group_id, None)
            self.deleted.add(group_id)
            self.changes.append(("deleted", group_id, ""))

    def expire_delta_tokens(self, status: int = 400) -> None:
        """Every deltaLink and nextLink given so far is refused from now on (tokens expire)."""
        with self.lock:
            self.delta_tokens.clear()
            self.pending_pages.clear()
            self.expired_status = status

    def fault(self, status: int, **more: Any) -> None:
        """Queue misbehaviour for matching calls."""
        self.faults.append(Fault(status, **more))

    def calls_to(self, path_contains: str, method: str | None = None) -> list[dict[str, Any]]:
        """Recorded calls whose path contains `path_contains` (and of `method`)."""
        with self.lock:
            return [
                c
                for c in self.calls
                if path_contains in c["path"] and (method is None or c["method"] == method)
            ]

    def take_fault(self, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.path_contains in path:
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
        return None


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def create_standin(state: StandinState) -> FastAPI:
    """The stand-in app over `state`."""
    app = FastAPI(title="Graph stand-in")

    @app.middleware("http")
    async def record(request: Request, call_next: Any) -> Response:
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
            reply: Response = _error(fault.status, "standinFault", "a queued fault")
            reply.headers.update(headers or {})
        elif not request.url.path.endswith("/token") and not _bearer_ok(state, request):
            reply = _error(401, "InvalidAuthenticationToken", "Access token is empty or invalid")
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
            return _error(400, "ValidationError", problem)
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
        return _page(request, list(state.subscriptions.values()), state.page_size)

    @app.patch("/v1.0/subscriptions/{sub_id}")
    async def renew(sub_id: str, request: Request) -> Response:
        sub = state.subscriptions.get(sub_id)
        if sub is None:
            return _error(404, "ResourceNotFound", f"subscription {sub_id} not found")
        sub["expirationDateTime"] = (await request.json())["expirationDateTime"]
        return JSONResponse(sub)

    @app.post("/v1.0/subscriptions/{sub_id}/reauthorize")
    async def reauthorize(sub_id: str) -> Response:
        if sub_id not in state.subscriptions:
            return _error(404, "ResourceNotFound", f"subscription {sub_id} not found")
        return Response(status_code=204)

    @app.get("/v1.0/groups/delta")
    async def groups_delta(request: Request) -> Response:
        return _delta(state, request)

    @app.get("/v1.0/groups/{group_id}")
    async def get_group(group_id: str) -> Response:
        group = state.groups.get(group_id)
        return JSONResponse(group) if group else _error(404, "Request_ResourceNotFound", "no")

    @app.get("/v1.0/groups")
    async def find_groups(request: Request) -> Response:
        match = re.fullmatch(r"displayName eq '(.*)'", request.query_params.get("$filter", ""))
        name = match.group(1).replace("''", "'") if match else None
        found = [g for g in state.groups.values() if g["displayName"] == name]
        return _page(request, found, state.page_size)

    @app.get("/v1.0/users/{user_id}")
    async def get_user(user_id: str) -> Response:
        user = state.users.get(user_id)
        return JSONResponse(user) if user else _error(404, "Request_ResourceNotFound", "no")

    @app.get("/v1.0/users/{user_id}/transitiveMemberOf")
    async def transitive(user_id: str, request: Request) -> Response:
        if user_id not in state.users:
            return _error(404, "Request_ResourceNotFound", "no")
        items = [ROLE] + [
            {"@odata.type": "#microsoft.graph.group", **state.groups.get(g, {"id": g})}
            for g in state.member_of.get(user_id, [])
        ]
        return _page(request, items, state.page_size)

    return app


_ID_EQ = re.compile(r"^id eq '([^']+)'$")
MAX_FILTER_IDS = 50


def _delta(state: StandinState, request: Request) -> Response:
    """Graph's groups delta: first round, nextLink pages, deltaLink rounds, 410 when expired."""
    query = request.query_params
    base = str(request.url.replace(query=""))
    with state.lock:
        if "$skiptoken" in query:
            pages = state.pending_pages.pop(query["$skiptoken"], None)
            if pages is None:
                return _error(state.expired_status, "syncStateNotFound", "unknown skiptoken")
        else:
            found = _delta_round(state, query, base)
            if isinstance(found, Response):
                return found
            pages = found
        body = pages[0]
        if len(pages) > 1:
            token = secrets.token_urlsafe(8)
            state.pending_pages[token] = pages[1:]
            body = {**body, "@odata.nextLink": f"{base}?$skiptoken={token}"}
        return JSONResponse(body)


def _delta_round(state: StandinState, query: Any, base: str) -> list[dict[str, Any]] | Response:
    if "$deltatoken" in query:
        known = state.delta_tokens.get(query["$deltatoken"])
        if known is None:
            message = "The delta token is expired and data must be synchronized again."
            return _error(state.expired_status, "syncStateNotFound", message)
        ids, since = known
        objects = _changes_since(state, ids, since)
    else:
        if "members" not in query.get("$select", ""):
            return _error(400, "BadRequest", "select members to track them")
        parts = [_ID_EQ.match(p.strip()) for p in query.get("$filter", "").split(" or ")]
        if not parts or not all(parts):
            return _error(400, "BadRequest", "only `id eq '...'` filters are supported")
        if len(parts) > MAX_FILTER_IDS:
            return _error(400, "BadRequest", f"at most {MAX_FILTER_IDS} ids in a filter")
        ids = tuple(m.group(1) for m in parts if m)
        objects = [
            _group_object(
                state, g, [{"@odata.type": USER, "id": u} for u in state.members.get(g, [])]
            )
            for g in ids
            if g in state.members or g in state.groups
            if g not in state.deleted
        ]
    token = secrets.token_urlsafe(8)
    state.delta_tokens[token] = (ids, len(state.changes))
    pages = _split(objects, state.delta_page_size)
    pages[-1]["@odata.deltaLink"] = f"{base}?$deltatoken={token}"
    return pages


USER = "#microsoft.graph.user"


def _changes_since(state: StandinState, ids: tuple[str, ...], since: int) -> list[dict[str, Any]]:
    net: dict[str, dict[str, str]] = {}
    gone: list[str] = []
    for kind, group, member in state.changes[since:]:
        if group not in ids:
            continue
        if kind == "deleted":
            gone.append(group)
        else:
            net.setdefault(group, {})[member] = kind
    objects = [
        _group_object(
            state,
            g,
            [
                {
                    "@odata.type": USER,
                    "id": m,
                    **({"@removed": {"reason": "deleted"}} if k == "removed" else {}),
                }
                for m, k in members.items()
            ],
        )
        for g, members in net.items()
        if g not in gone
    ]
    return objects + [{"id": g, "@removed": {"reason": "changed"}} for g in gone]


def _group_object(
    state: StandinState, group_id: str, members: list[dict[str, Any]]
) -> dict[str, Any]:
    name = state.groups.get(group_id, {}).get("displayName")
    return {"id": group_id, "displayName": name, "members@delta": members}


def _split(objects: list[dict[str, Any]], size: int) -> list[dict[str, Any]]:
    """Pages of at most `size` members; one group's members may span several pages."""
    pages: list[dict[str, Any]] = [{"value": []}]
    room = size
    for obj in objects:
        members = obj.get("members@delta")
        if members is None:
            pages[-1]["value"].append(obj)
            continue
        rest = list(members)
        while True:
            if room == 0:
                pages.append({"value": []})
                room = size
            part, rest = rest[:room], rest[room:]
            pages[-1]["value"].append({**obj, "members@delta": part})
            room -= len(part)
            if not rest:
                break
    return pages


def _page(request: Request, items: list[dict[str, Any]], size: int) -> Response:
    start = int(request.query_params.get("$skiptoken", "0"))
    body: dict[str, Any] = {"value": items[start : start + size]}
    if start + size < len(items):
        query = {k: v for k, v in request.query_params.items() if k != "$skiptoken"}
        query["$skiptoken"] = str(start + size)
        body["@odata.nextLink"] = str(request.url.replace_query_params(**query))
    return JSONResponse(body)


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


class StandinServer:
    """The stand-in under uvicorn in a daemon thread, on a free loopback port."""

    def __init__(self, app: Any = None) -> None:
        """Serve the Graph stand-in, or `app` (another stand-in) the same way."""
        self.state = StandinState()
        config = uvicorn.Config(
            app if app is not None else create_standin(self.state),
            host="127.0.0.1",
            port=0,
            log_level="warning",
            log_config=None,
            lifespan="off",
            ws="none",
            access_log=False,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="graph-standin", daemon=True)
        self.url = ""

    def _run(self) -> None:
        asyncio.run(self._server.serve())

    def start(self) -> StandinServer:
        """Serve, and wait until the port is bound."""
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the stand-in did not start")
            time.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        """Shut the server down and wait for its thread."""
        self._server.should_exit = True
        self._thread.join(timeout=10)

    @property
    def api_url(self) -> str:
        """GRAPH_API_URL for a bridge using this stand-in."""
        return f"{self.url}/v1.0"

    def settings(self) -> dict[str, str]:
        """The GRAPH_* settings (lower-case field names) pointing at this stand-in; the delta
        query is off (tests of it turn it on), so other tests see only the calls they make."""
        return {
            "graph_delta_seconds": "0",
            "graph_api_url": self.api_url,
            "graph_login_url": self.url,
            "graph_tenant_id": TENANT,
            "graph_client_id": CLIENT_ID,
            "graph_client_secret": CLIENT_SECRET,
        }


@contextmanager
def serve_standin() -> Iterator[StandinServer]:
    """A running stand-in for the duration of the block."""
    server = StandinServer().start()
    try:
        yield server
    finally:
        server.stop()


def invoke_cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    """`cor-bridge ARGS` in process with `env`; (exit code, output).

    The command configures logging for a process of its own; the test session's logging is
    put back afterwards so later tests log as before.
    """
    from typer.testing import CliRunner

    from app.cli import cli

    root = logging.getLogger()
    handlers, level, config = root.handlers[:], root.level, structlog.get_config()
    try:
        result = CliRunner().invoke(cli, list(args), env=env)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.configure(**config)
    return result.exit_code, result.output
