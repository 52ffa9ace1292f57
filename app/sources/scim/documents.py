"""SCIM resources and our rows: building one from the other, and what intake is told of each."""

from __future__ import annotations

from typing import Any

from scim2_models import (
    InvalidValueException,
    Meta,
    Resource,
    ResourceType,
    ResponseParameters,
    ScimProvider,
)

from app.changes import MAX_ID_BYTES, GroupRef, UserRef
from app.store.scim import GROUPS, USERS, Row


def build(
    provider: ScimProvider,
    resource_type: ResourceType,
    row: Row,
    members: list[tuple[str, str]] | None,
) -> Resource[Any]:
    """The resource a stored row stands for, with `members` (id, display) when given."""
    model = provider.model_for(resource_type)
    assert model is not None and issubclass(model, Resource)
    data = dict(row.data)
    if members is not None:
        data["members"] = [
            {"value": uid, "display": name, "$ref": f"Users/{uid}", "type": "User"}
            for uid, name in members
        ]
    resource = model.model_validate(data)
    resource.id = row.id
    resource.meta = Meta(
        resource_type=resource_type.name,
        created=row.created,
        last_modified=row.modified,
        version=f'W/"{row.version}"',
    )
    return resource


def kind_of(resource_type: ResourceType) -> str:
    """The store's name for a resource type (USERS or GROUPS)."""
    return USERS if resource_type.name == USERS else GROUPS


def user_ref(row: Row) -> UserRef:
    """A SCIM user as the IdP identifiers intake knows: `id` is the externalId when sent."""
    data = row.data
    emails = [e for e in data.get("emails") or [] if isinstance(e, dict) and e.get("value")]
    primary = next((e for e in emails if e.get("primary")), emails[0] if emails else None)
    return UserRef(
        id=str(data.get("externalId") or row.id),
        login=data.get("userName"),
        email=primary["value"] if primary else None,
        externalId=data.get("externalId"),
        userName=data.get("userName"),
    )


def group_ref(row: Row) -> GroupRef:
    """A SCIM group for the mapping: `id` is the externalId when sent, else ours."""
    return GroupRef(id=str(row.data.get("externalId") or row.id), name=row.data.get("displayName"))


def document(resource: Resource[Any]) -> dict[str, Any]:
    """What we store of a resource: everything but id, meta and members."""
    return resource.model_dump(mode="json", exclude={"id", "meta", "members"}, by_alias=True)


def bounded(resource: Resource[Any]) -> dict[str, Any]:
    """The document, once what becomes an identifier or an indexed column fits MAX_ID_BYTES."""
    found = document(resource)
    values = [found.get(key) for key in ("userName", "externalId", "displayName")]
    values += [e.get("value") for e in found.get("emails") or [] if isinstance(e, dict)]
    if any(isinstance(v, str) and len(v.encode()) > MAX_ID_BYTES for v in values):
        raise InvalidValueException(
            detail=f"userName, externalId, displayName and emails are at most {MAX_ID_BYTES} bytes"
        )
    return found


def members_sent(resource: Resource[Any]) -> dict[str, str | None]:
    """Member user id -> the display name the IdP sent with it."""
    return {str(m.value): m.display for m in getattr(resource, "members", None) or [] if m.value}


def version_of(etag: str | None) -> int | None:
    """The row version an ETag names (W/"3" -> 3)."""
    if etag is None:
        return None
    try:
        return int(etag.removeprefix("W/").strip('"'))
    except ValueError:
        return -1  # an ETag we never issued matches nothing


def excludes_members(parameters: ResponseParameters[Any] | None) -> bool:
    """Whether the request asked to leave `members` out (excludedAttributes)."""
    excluded = parameters.excluded_attributes if parameters else None
    return bool(excluded and any(str(p).lower() == "members" for p in excluded))
