"""The SCIM 2.0 server (RFC 7643/7644) for Entra ID and Okta provisioning.

scim2-server speaks the protocol; `SqlStorage` keeps the resources in our database and
yields a MembershipChange for every membership a request takes away or gives; intake
runs on them in the same transaction, so the IdP's 2xx means the removal is stored.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from functools import cache
from http import HTTPStatus
from typing import Any

import anyio
import structlog
from fastapi import APIRouter, Request, Response
from scim2_models import Error, SCIMException
from scim2_server.requests import ScimRequest
from scim2_server.responses import ScimResponse
from sqlalchemy import Connection

from app.changes import MembershipChange
from app.errors import InputError
from app.runtime import Bridge, BridgeDep
from app.sources.common import bearer_matches, read_body, refuse_auth
from app.sources.scim.handler import BridgeScimHandler
from app.sources.scim.service import BridgeScimService, make_provider
from app.sources.scim.storage import SqlStorage
from app.store.batch import LATE

log = structlog.get_logger(__name__)
PREFIX = "/scim/v2"
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})

router = APIRouter(prefix=PREFIX, tags=["scim"])


@cache
def scim_service() -> BridgeScimService:
    """The protocol half of the server, built once (it holds no state)."""
    return BridgeScimService(make_provider())


async def scim(path: str, request: Request, bridge: BridgeDep) -> Response:
    """Authenticate, then let scim2-server answer over our store, in one transaction."""
    service = scim_service()
    token = bridge.settings.scim_token
    if token is None:
        return _error(HTTPStatus.NOT_FOUND, "SCIM is not enabled (SCIM_TOKEN is unset)")
    if not bearer_matches(request.headers.get("authorization"), token):
        refused = refuse_auth(request, bridge.auth_failures, "missing or wrong bearer token")
        return _error(
            HTTPStatus(refused.status_code), str(refused.detail), dict(refused.headers or {})
        )
    try:
        body = await read_body(request, bridge.settings.bridge_max_body_bytes)
    except InputError as exc:
        return _error(HTTPStatus(exc.status), exc.message)
    scim_request = ScimRequest(
        method=request.method,
        base_url=str(request.base_url).rstrip("/") + PREFIX,
        path="/" + path,
        query=dict(request.query_params),
        headers=request.headers.items(),
        body=body,
    )
    try:
        if request.method == "GET":
            # A read (however large its filter) never holds the write turn the acks need.
            reply, _ = await anyio.to_thread.run_sync(_read_only, bridge, scim_request)
        else:
            reply, _ = await bridge.transact(
                lambda conn: _handle(conn, bridge, scim_request), keys=LATE
            )
    except SCIMException as exc:
        reply = service.error_response(exc)
    except RecursionError:
        return _error(HTTPStatus.BAD_REQUEST, "request body is JSON nested too deeply")
    except Exception as exc:  # a bug: answer in SCIM's error schema, never with a traceback
        log.exception("scim_request_failed", method=request.method, path=path)
        reply = service.error_response(exc)
    return _response(reply)


for _method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
    router.add_api_route(
        "/{path:path}",
        scim,
        methods=[_method],
        operation_id=f"scim_{_method.lower()}",
        summary=f"SCIM 2.0 {_method}: Users, Groups, ServiceProviderConfig, ResourceTypes, Schemas",
    )


def _handle(
    conn: Connection, bridge: Bridge, scim_request: ScimRequest
) -> tuple[ScimResponse, list[MembershipChange]]:
    storage = SqlStorage(
        conn,
        scim_service().provider,
        idp=bridge.settings.scim_provider,
        request_id=uuid.uuid4().hex[:16],
        now=datetime.now(UTC),
        lock=scim_request.method.upper() in WRITES,
    )
    reply = BridgeScimHandler(scim_service(), storage).handle(scim_request)
    return reply, storage.changes


def _read_only(
    bridge: Bridge, scim_request: ScimRequest
) -> tuple[ScimResponse, list[MembershipChange]]:
    with bridge.db.read() as conn:
        return _handle(conn, bridge, scim_request)


def _response(reply: ScimResponse) -> Response:
    headers = dict(reply.headers)
    if reply.body is None:
        headers.pop("Content-Type", None)
        return Response(status_code=int(reply.status), headers=headers)
    content = json.dumps(reply.body).encode()
    return Response(content=content, status_code=int(reply.status), headers=headers)


def _error(status: HTTPStatus, detail: str, extra: dict[str, str] | None = None) -> Response:
    body: dict[str, Any] = Error(status=int(status), detail=detail).model_dump()
    headers = {**(extra or {}), "Content-Type": "application/scim+json"}
    if status == HTTPStatus.UNAUTHORIZED:
        headers["WWW-Authenticate"] = 'Bearer realm="SCIM"'
    return Response(content=json.dumps(body).encode(), status_code=int(status), headers=headers)
