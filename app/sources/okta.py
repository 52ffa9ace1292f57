"""Okta event hooks: verification, then batches of System Log events as MembershipChanges."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from pydantic import ValidationError

from app.changes import IgnoredEvent
from app.errors import InputError, describe_errors
from app.okta.events import OktaEnvelope, to_changes
from app.okta.reconcile import GROUP_DELETED, expand_deletions
from app.runtime import BridgeDep
from app.sources.common import (
    check_batch_size,
    parse_json,
    read_body,
    refuse_auth,
    secret_matches,
)


def parse_envelope(body: bytes, max_events: int = 1000) -> OktaEnvelope:
    """The body as an Okta envelope, or a 400 naming what is wrong (413: too many events)."""
    raw = parse_json(body)
    check_batch_size(raw, ("data", "events"), max_events, "events")
    try:
        return OktaEnvelope.model_validate(raw)
    except ValidationError as exc:
        raise InputError(f"not an Okta event hook delivery: {describe_errors(exc)}") from exc


async def require_okta_secret(request: Request, bridge: BridgeDep) -> None:
    """404 when the hook is off; 401 unless the configured header carries the secret (async:
    FastAPI runs a plain `def` dependency in a worker thread, a hop per delivery)."""
    secret = bridge.settings.okta_hook_secret
    if secret is None:
        raise HTTPException(404, "Okta event hook is not enabled (OKTA_HOOK_SECRET is unset)")
    presented = request.headers.get(bridge.settings.okta_hook_header)
    if not secret_matches(presented, secret):
        detail = f"missing or wrong secret in the {bridge.settings.okta_hook_header} header"
        raise refuse_auth(request, bridge.auth_failures, detail)


router = APIRouter(prefix="/hooks/okta", tags=["okta"], dependencies=[Depends(require_okta_secret)])


@router.get("")
async def verify(
    challenge: Annotated[str | None, Header(alias="x-okta-verification-challenge")] = None,
) -> dict[str, str]:
    """Okta's one-time verification: echo the challenge."""
    if not challenge:
        raise InputError("missing x-okta-verification-challenge header")
    return {"verification": challenge}


@router.post("")
async def receive(request: Request, bridge: BridgeDep) -> dict[str, object]:
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
