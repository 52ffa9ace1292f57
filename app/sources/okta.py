"""Okta event hooks: verification, then batches of System Log events as MembershipChanges.

A plain Starlette route, not a FastAPI one: the hook is the bridge's busiest path, and
FastAPI's dependency solving and response encoding cost more per delivery than the rest of
the route together (docs/performance.md). It checks the same secret, reads the same capped
body and answers the same errors (app/main.py's handlers render InputError and HTTPException).
"""

from __future__ import annotations

from fastapi import HTTPException
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.changes import IgnoredEvent
from app.errors import InputError, describe_errors
from app.okta.events import OktaEnvelope, to_changes
from app.okta.reconcile import GROUP_DELETED, expand_deletions
from app.runtime import Bridge
from app.sources.common import (
    check_batch_size,
    parse_json,
    read_body,
    refuse_auth,
    secret_matches,
)

PATH = "/hooks/okta"


def parse_envelope(body: bytes, max_events: int = 1000) -> OktaEnvelope:
    """The body as an Okta envelope, or a 400 naming what is wrong (413: too many events)."""
    raw = parse_json(body)
    check_batch_size(raw, ("data", "events"), max_events, "events")
    try:
        return OktaEnvelope.model_validate(raw)
    except ValidationError as exc:
        raise InputError(f"not an Okta event hook delivery: {describe_errors(exc)}") from exc


def require_okta_secret(request: Request) -> Bridge:
    """The app's Bridge; 404 when the hook is off, 401 unless the configured header carries
    the secret."""
    bridge: Bridge = request.app.state.bridge
    secret = bridge.settings.okta_hook_secret
    if secret is None:
        raise HTTPException(404, "Okta event hook is not enabled (OKTA_HOOK_SECRET is unset)")
    presented = request.headers.get(bridge.settings.okta_hook_header)
    if not secret_matches(presented, secret):
        detail = f"missing or wrong secret in the {bridge.settings.okta_hook_header} header"
        raise refuse_auth(request, bridge.auth_failures, detail)
    return bridge


async def hook(request: Request) -> Response:
    """GET: Okta's one-time verification; POST: a batch of events."""
    bridge = require_okta_secret(request)
    if request.method != "POST":  # GET (and HEAD, which Starlette adds to a GET route)
        return verify(request)
    return JSONResponse(await receive(request, bridge))


def verify(request: Request) -> Response:
    """Okta's one-time verification: echo the challenge."""
    challenge = request.headers.get("x-okta-verification-challenge")
    if not challenge:
        raise InputError("missing x-okta-verification-challenge header")
    return JSONResponse({"verification": challenge})


async def receive(request: Request, bridge: Bridge) -> dict[str, object]:
    """A batch of events: stored durably before the 200."""
    body = await read_body(request, bridge.settings.bridge_max_body_bytes)
    envelope = parse_envelope(body, bridge.settings.bridge_max_events_per_delivery)
    items = to_changes(envelope)
    if any(isinstance(i, IgnoredEvent) and i.kind == GROUP_DELETED for i in items):
        # Its members are read in the transaction: their keys are not known beforehand.
        await bridge.transact(
            lambda conn: (None, expand_deletions(conn, bridge.mapping, items)),
            weight=len(items),
            ask_okta=True,
        )
    else:
        await bridge.submit(items, ask_okta=True)
    return {"received": len(items), "eventId": envelope.eventId}


routes = [Route(PATH, hook, methods=["GET", "POST"], name="okta_hook")]
