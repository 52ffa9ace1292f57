"""Microsoft Graph change notifications: the validation handshake, then the durable inbox.

Graph throttles an endpoint that takes longer than about 3 s, so a delivery is only
authenticated (clientState, constant time), checked against the known subscriptions and
written to the inbox in one transaction before the 202; lookups and intake happen later
(app/graph/resolver.py). Both paths accept change and lifecycle notifications, since a
subscription may name one URL for both.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import structlog
from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from app.errors import InputError
from app.graph.notifications import mismatched_client_states, parse_delivery
from app.graph.service import GraphService
from app.graph.triage import accept_notifications
from app.runtime import Bridge, BridgeDep
from app.sources.common import read_body, refuse_auth

log = structlog.get_logger(__name__)

MAX_VALIDATION_TOKEN = 4096
ValidationToken = Annotated[
    str | None, Query(alias="validationToken", description="sent by Graph to validate the URL")
]

router = APIRouter(prefix="/hooks/graph", tags=["graph"])


@router.post("", status_code=202)
async def notifications(
    request: Request, bridge: BridgeDep, validation_token: ValidationToken = None
) -> Response:
    """Graph's change notifications; with `validationToken`, the validation handshake."""
    return await receive(request, bridge, validation_token)


@router.post("/lifecycle", status_code=202)
async def lifecycle(
    request: Request, bridge: BridgeDep, validation_token: ValidationToken = None
) -> Response:
    """Graph's lifecycle notifications (reauthorizationRequired and friends)."""
    return await receive(request, bridge, validation_token)


async def receive(request: Request, bridge: Bridge, validation_token: str | None) -> Response:
    """Authenticate, store in one transaction, then 202; or echo a validation token."""
    client_state = bridge.settings.graph_client_state
    if client_state is None:
        raise HTTPException(404, "Graph webhook is not enabled (GRAPH_CLIENT_STATE is unset)")
    if validation_token is not None:
        return validation_reply(validation_token)
    body = await read_body(request, bridge.settings.bridge_max_body_bytes)
    notes = parse_delivery(body, bridge.settings.bridge_max_events_per_delivery)
    wrong = mismatched_client_states(notes, client_state)
    if wrong:
        # The subscription ids help find a misconfigured subscription; the value never shows.
        log.warning(
            "graph_client_state_mismatch",
            path=request.url.path,
            subscription_ids=sorted(set(wrong))[:10],
            notifications=len(wrong),
        )
        detail = f"clientState missing or wrong in {len(wrong)} notification(s)"
        raise refuse_auth(request, bridge.auth_failures, detail)
    service: GraphService = request.app.state.graph
    now = datetime.now(UTC)
    async with service.write_turn():
        received, _ = await bridge.transact(
            lambda conn: accept_notifications(conn, notes, now, credentials=service.credentials)
        )
    service.notified(notes, received)
    log.info("graph_delivery_stored", notifications=len(notes), **received.as_dict())
    return JSONResponse(received.as_dict(), status_code=202)


def validation_reply(token: str) -> Response:
    """The token, URL-decoded already, as text/plain and nothing else."""
    if not token or len(token) > MAX_VALIDATION_TOKEN:
        raise InputError(f"validationToken must be 1 to {MAX_VALIDATION_TOKEN} characters")
    # text/plain and nosniff: the echoed value can never be run as a page's script.
    return PlainTextResponse(token, headers={"X-Content-Type-Options": "nosniff"})
