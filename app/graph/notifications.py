"""Graph's change and lifecycle notifications: parse, authenticate, key for dedupe.

A delivery is `{"value": [notification, ...]}`. A membership change is a notification whose
`resourceData["members@delta"]` lists members; an entry carrying `@removed` (Graph sends a
string or an object) left the group, the others joined it. A lifecycle notification carries
`lifecycleEvent` instead. Graph retries a delivery for hours, and a group notification has
no id of its own as a rule, so each entry is keyed by the notification's `id` when present,
else by a hash of its canonical JSON (clientState left out), plus member and direction.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, SecretStr, ValidationError

from app.errors import InputError, describe_errors
from app.sources.common import check_batch_size, parse_json, secret_matches

USER_TYPE = "#microsoft.graph.user"
_GROUP_IN_RESOURCE = re.compile(r"(?i)^/?groups(?:/|\(')([^/')]+)")
_MAX_ID = 100


class GraphNotification(BaseModel):
    """One change or lifecycle notification (Graph's changeNotification)."""

    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    subscriptionId: str = Field(min_length=1, max_length=_MAX_ID)  # noqa: N815
    subscriptionExpirationDateTime: AwareDatetime | None = None  # noqa: N815
    clientState: str | None = None  # noqa: N815
    changeType: str | None = None  # noqa: N815
    resource: str | None = None
    tenantId: str | None = None  # noqa: N815
    resourceData: dict[str, Any] | None = None  # noqa: N815
    lifecycleEvent: str | None = None  # noqa: N815


class GraphDelivery(BaseModel):
    """What Graph POSTs: a collection of notifications."""

    model_config = ConfigDict(extra="ignore")

    value: list[GraphNotification]


@dataclass(frozen=True)
class MemberEntry:
    """One members@delta entry: who joined or left which group."""

    member_id: str
    removed: bool
    odata_type: str | None

    def is_user(self) -> bool:
        """Whether the member is a user (Graph also lists nested groups, devices, ...)."""
        return self.odata_type is None or self.odata_type.lower() == USER_TYPE


@dataclass(frozen=True)
class Notification:
    """A parsed notification with its dedupe key and, for membership changes, the entries."""

    body: GraphNotification
    key: str
    group_id: str | None
    members: tuple[MemberEntry, ...]
    group_removed: bool

    @property
    def subscription_id(self) -> str:
        """The subscription this notification belongs to."""
        return self.body.subscriptionId


def parse_delivery(body: bytes, max_notifications: int = 1000) -> list[Notification]:
    """The body as notifications, or a 400 naming what is wrong (413: too many)."""
    raw = parse_json(body)
    check_batch_size(raw, ("value",), max_notifications, "notifications")
    try:
        delivery = GraphDelivery.model_validate(raw)
    except ValidationError as exc:
        raise InputError(f"not a Graph notification collection: {describe_errors(exc)}") from exc
    return [_parse_one(i, note, raw["value"][i]) for i, note in enumerate(delivery.value)]


def mismatched_client_states(notes: list[Notification], expected: SecretStr) -> list[str]:
    """Subscription ids of the notifications whose clientState is missing or wrong."""
    return [n.subscription_id for n in notes if not secret_matches(n.body.clientState, expected)]


def entry_key(note: Notification, entry: MemberEntry) -> str:
    """The dedupe key of one entry: the same for every retry of its notification."""
    return f"{note.key}:{entry.member_id}:{'removed' if entry.removed else 'added'}"


def _parse_one(index: int, note: GraphNotification, raw: dict[str, Any]) -> Notification:
    where = f"value.{index}"
    data = note.resourceData or {}
    delta = data.get("members@delta")
    members: tuple[MemberEntry, ...] = ()
    if delta is not None:
        if not isinstance(delta, list):
            raise InputError(f"{where}.resourceData.members@delta: expected a list")
        prefix = f"{where}.resourceData.members@delta"
        members = tuple(_member(f"{prefix}.{i}", entry) for i, entry in enumerate(delta))
    group_id = _group_id(note)
    if members and group_id is None:
        raise InputError(f"{where}: no group id in resourceData.id or resource")
    return Notification(
        body=note,
        key=notification_key(note, raw),
        group_id=group_id,
        members=members,
        group_removed="@removed" in data,
    )


def notification_key(note: GraphNotification, raw: dict[str, Any]) -> str:
    """`graph:` + the notification's own id, or a hash of its canonical JSON."""
    if note.id and len(note.id) <= 64 and note.id.isprintable() and ":" not in note.id:
        return f"graph:{note.id}"
    # The secret stays out of anything stored, hashed or not.
    content = {k: v for k, v in raw.items() if k != "clientState"}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "graph:" + hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _member(where: str, entry: Any) -> MemberEntry:
    if not isinstance(entry, dict):
        raise InputError(f"{where}: expected an object with an id")
    member_id = entry.get("id")
    if not isinstance(member_id, str) or not member_id.strip() or len(member_id) > _MAX_ID:
        raise InputError(f"{where}.id: expected the member's object id")
    odata_type = entry.get("@odata.type")
    # "@removed" arrives as {"reason": "deleted"} or as a bare string: its presence is the fact.
    return MemberEntry(
        member_id=member_id.strip(),
        removed="@removed" in entry,
        odata_type=odata_type if isinstance(odata_type, str) else None,
    )


def _group_id(note: GraphNotification) -> str | None:
    data_id = (note.resourceData or {}).get("id")
    if isinstance(data_id, str) and data_id.strip() and len(data_id) <= _MAX_ID:
        return data_id.strip()
    match = _GROUP_IN_RESOURCE.match(note.resource or "")
    return match.group(1) if match else None
