"""Okta System Log events as MembershipChanges: the hook's and the System Log poller's parser.

One event at a time: a malformed one becomes an IgnoredEvent that says why, never a reason
to refuse its neighbours. The hook (app/sources/okta.py) parses the delivery around them.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.changes import ChangeKind, EventTime, GroupRef, IgnoredEvent, MembershipChange, UserRef
from app.errors import describe_errors

KINDS = {
    "group.user_membership.remove": ChangeKind.removed,
    "group.user_membership.add": ChangeKind.added,
    "user.lifecycle.deactivate": ChangeKind.user_deactivated,
    # Okta keeps a deactivated user's groups; these give them back (DESIGN.md section 6).
    "user.lifecycle.activate": ChangeKind.user_reactivated,
    "user.lifecycle.reactivate": ChangeKind.user_reactivated,
}


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class OktaTarget(_Lenient):
    """One System Log target (User, UserGroup, AppInstance, ...)."""

    id: str = Field(min_length=1)
    type: str
    alternateId: str | None = None  # noqa: N815
    displayName: str | None = None  # noqa: N815


class OktaOutcome(_Lenient):
    """Whether the logged action succeeded."""

    result: str | None = None


class OktaEvent(_Lenient):
    """One System Log event inside a hook delivery."""

    uuid: str = Field(min_length=1, max_length=200)
    published: EventTime
    eventType: str  # noqa: N815
    outcome: OktaOutcome | None = None
    target: list[OktaTarget] | None = None


class OktaData(_Lenient):
    """The `data` member of the envelope; each event is checked on its own."""

    events: list[dict[str, Any]]


class OktaEnvelope(_Lenient):
    """An Okta event hook delivery."""

    eventType: Literal["com.okta.event_hook"]  # noqa: N815
    eventId: str | None = None  # noqa: N815
    data: OktaData


def to_changes(
    envelope: OktaEnvelope, now: datetime | None = None
) -> list[MembershipChange | IgnoredEvent]:
    """Every event of a delivery as a change, or as a recorded-but-ignored event."""
    return [parse_event(raw, now or datetime.now(UTC)) for raw in envelope.data.events]


def parse_event(raw: dict[str, Any], now: datetime) -> MembershipChange | IgnoredEvent:
    """One event; a malformed one is recorded, not allowed to sink the rest of the batch
    (Okta does not retry a 4xx, so refusing the delivery would lose its good events)."""
    plain = _plain_change(raw)
    if plain is not None:
        return plain
    try:
        return _to_change(OktaEvent.model_validate(raw))
    except ValidationError as exc:  # its shape, or an identifier too long to store
        uuid = raw.get("uuid")
        if not isinstance(uuid, str) or not 0 < len(uuid) <= 200:
            digest = hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode())
            uuid = f"malformed:{digest.hexdigest()[:32]}"
        kind = raw.get("eventType")
        return IgnoredEvent(
            provider="okta",
            event_id=uuid,
            occurred_at=now,
            kind=kind if isinstance(kind, str) and len(kind) <= 64 else "malformed",
            reason=f"malformed event: {describe_errors(exc)}",
        )


def _plain_change(raw: dict[str, Any]) -> MembershipChange | None:
    """The common case, a successful membership change, validated once (as MembershipChange)
    instead of twice (OktaEvent first): None unless every field is one OktaEvent takes as it
    is, and then `_to_change` of the OktaEvent gives the same change. Anything else (and any
    change that does not validate) goes the whole way, which says what is wrong."""
    event_type, uuid, outcome = raw.get("eventType"), raw.get("uuid"), raw.get("outcome")
    kind = KINDS.get(event_type) if isinstance(event_type, str) else None
    if kind is None or not isinstance(uuid, str) or not 0 < len(uuid) <= 200:
        return None
    if not isinstance(outcome, dict) or outcome.get("result") != "SUCCESS":
        return None
    targets = raw.get("target")
    if not isinstance(targets, list) or not all(_plain_target(t) for t in targets):
        return None
    user = next((t for t in targets if t["type"] == "User"), None)
    group = next((t for t in targets if t["type"] == "UserGroup"), None)
    if user is None or (group is None and kind in (ChangeKind.added, ChangeKind.removed)):
        return None
    try:
        return MembershipChange.model_validate(
            {
                "provider": "okta",
                "event_id": uuid,
                "occurred_at": raw.get("published"),
                "change": kind,
                "user": _login_ref(user["id"], user.get("alternateId")),
                "group": {"id": group["id"], "name": group.get("displayName")} if group else None,
            }
        )
    except ValidationError:
        return None


def _plain_target(target: Any) -> bool:
    """A target OktaTarget takes as it is."""
    return (
        isinstance(target, dict)
        and isinstance(found := target.get("id"), str)
        and found != ""
        and isinstance(target.get("type"), str)
        and isinstance(target.get("alternateId"), str | None)
        and isinstance(target.get("displayName"), str | None)
    )


def _to_change(event: OktaEvent) -> MembershipChange | IgnoredEvent:
    user = group = None
    for t in event.target or ():  # Okta does not promise target order: picked by type
        if t.type == "User" and user is None:
            user = t
        elif t.type == "UserGroup" and group is None:
            group = t
    kind = KINDS.get(event.eventType)
    result = event.outcome.result if event.outcome else None
    if kind is None:
        reason = f"event type {event.eventType} is not a membership change"
    elif result != "SUCCESS":
        reason = f"outcome is {result or 'missing'}, not SUCCESS"
    elif user is None:
        reason = "no target of type User"
    elif kind in (ChangeKind.added, ChangeKind.removed) and group is None:
        reason = "no target of type UserGroup"
    else:
        # One validation of the whole change (its user and group inside it): a third less
        # CPU than building UserRef and GroupRef first, and the same checks.
        return MembershipChange.model_validate(
            {
                "provider": "okta",
                "event_id": event.uuid,
                "occurred_at": event.published,
                "change": kind,
                "user": _user_ref(user),
                "group": {"id": group.id, "name": group.displayName} if group else None,
            }
        )
    return IgnoredEvent(
        provider="okta",
        event_id=event.uuid,
        occurred_at=event.published,
        kind=event.eventType,
        reason=reason,
        user=UserRef.model_validate(_user_ref(user)) if user else None,
        group=GroupRef(id=group.id, name=group.displayName) if group else None,
    )


def _user_ref(user: OktaTarget) -> dict[str, str | None]:
    return _login_ref(user.id, user.alternateId)


def _login_ref(user_id: str, login: str | None) -> dict[str, str | None]:
    return {"id": user_id, "login": login, "email": login if login and "@" in login else None}
