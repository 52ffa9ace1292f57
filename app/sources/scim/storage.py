"""scim2-server's storage over our SQL store, turning membership losses into changes.

scim2-server applies PATCH and PUT itself and hands us the complete new state; the old
state is still in the database on the same transaction, so the diff is exact. A group PATCH
that only adds and removes members by id skips that round trip (`patch_members`). Every
change either yields goes to intake before the request's transaction commits.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog
from scim2_models import (
    InvalidValueException,
    Meta,
    NotFoundException,
    PreconditionFailedException,
    Resource,
    ResourceType,
    ResponseParameters,
    ScimProvider,
    SearchRequest,
    UniquenessException,
)
from scim2_server.storage import ScimStorage, SearchPage
from sqlalchemy import Connection

from app.changes import MAX_ID_BYTES, ChangeKind, GroupRef, MembershipChange, Provider, UserRef
from app.sources.scim.members import MemberEdit, named_ids, replay
from app.sources.scim.narrow import check_filter, narrowing
from app.store import scim as scim_store
from app.store.scim import GROUPS, USERS, ConflictError, Row

log = structlog.get_logger(__name__)

# Filters on these attributes are answered from an indexed column first.


class SqlStorage(ScimStorage):
    """One per request, bound to the request's transaction; collects membership changes."""

    def __init__(
        self,
        conn: Connection,
        provider: ScimProvider,
        *,
        idp: Provider,
        request_id: str,
        now: datetime,
        lock: bool = False,
    ) -> None:
        self.conn = conn
        self.provider = provider
        self.idp: Provider = idp
        self.request_id = request_id
        self.now = now
        self.lock = lock
        self.changes: list[MembershipChange] = []

    # -- the ScimStorage interface ------------------------------------------------------

    def get(
        self,
        resource_type: ResourceType,
        resource_id: str,
        *,
        response_parameters: ResponseParameters[Any] | None = None,
    ) -> Resource[Any]:
        """One resource; members are skipped when the reply excludes them."""
        row = self._stored(_kind(resource_type), resource_id)
        return self._resource(
            resource_type, row, with_members=not _excludes_members(response_parameters)
        )

    def search(
        self,
        resource_types: list[ResourceType],
        search_request: SearchRequest[Any],
        *,
        position: Any = None,
    ) -> SearchPage:
        """Filter, sort and page, narrowed in SQL first (app/sources/scim/narrow.py)."""
        check_filter(search_request)
        start = (search_request.start_index or 1) - 1
        stop = None if search_request.count is None else start + search_request.count
        if search_request.filter is None and not search_request.sort_by:
            return self._page(resource_types, start, search_request.count)
        found: list[Resource[Any]] = []
        for resource_type in resource_types:
            narrowed = narrowing(_kind(resource_type), search_request)
            rows = scim_store.list_resources(
                self.conn,
                _kind(resource_type),
                column=narrowed.column if narrowed else None,
                values=narrowed.values if narrowed else None,
            )
            found += self._resources(resource_type, rows)
        if search_request.filter is not None:
            found = [r for r in found if search_request.filter.match(r)]
        if search_request.sort_by:
            found = search_request.sort(found)
        return SearchPage(total=len(found), resources=found[start:stop])

    def create(self, resource_type: ResourceType, resource: Resource[Any]) -> Resource[Any]:
        """Store a new resource; a group's initial members count as added."""
        kind = _kind(resource_type)
        resource_id = uuid.uuid4().hex
        try:
            scim_store.insert_resource(self.conn, kind, resource_id, _bounded(resource), self.now)
        except ConflictError as exc:
            raise UniquenessException(detail=exc.message) from exc
        if kind == GROUPS:
            self._set_members(resource_id, _members(resource))
        return self.get(resource_type, resource_id)

    def update(
        self,
        resource_type: ResourceType,
        resource: Resource[Any],
        *,
        expected_version: str | None = None,
    ) -> Resource[Any]:
        """Replace a resource with its new state (after PATCH or PUT) and diff its meaning."""
        kind = _kind(resource_type)
        assert resource.id is not None
        before = self._stored(kind, resource.id)
        try:
            saved = scim_store.update_resource(
                self.conn,
                kind,
                resource.id,
                _bounded(resource),
                self.now,
                _version(expected_version),
            )
        except ConflictError as exc:
            raise UniquenessException(detail=exc.message) from exc
        if not saved:
            raise PreconditionFailedException(detail=f"{kind} {resource.id} changed meanwhile")
        if kind == GROUPS:
            self._set_members(resource.id, _members(resource))
        else:
            self._note_activity(before, resource)
        return self.get(resource_type, resource.id)

    def delete(
        self, resource_type: ResourceType, resource_id: str, *, expected_version: str | None = None
    ) -> None:
        """Delete a resource: a group's members and a user's groups count as removed."""
        kind = _kind(resource_type)
        row = self._stored(kind, resource_id)
        if expected_version is not None and row.version != _version(expected_version):
            raise PreconditionFailedException(detail=f"{kind} {resource_id} changed meanwhile")
        if kind == GROUPS:
            self._set_members(resource_id, {})
        elif row.active:
            left = sorted(scim_store.user_group_ids(self.conn, resource_id))
            for index, group_id in enumerate(left):
                remaining = [self._stored(GROUPS, g) for g in left[index + 1 :]]
                self._record(ChangeKind.removed, row, self._stored(GROUPS, group_id), remaining)
        scim_store.delete_resource(self.conn, kind, resource_id)

    # -- membership changes ---------------------------------------------------------------

    def patch_members(
        self,
        resource_type: ResourceType,
        group_id: str,
        edits: list[MemberEdit],
        *,
        check: Callable[[Resource[Any]], object],
        with_members: bool,
    ) -> Resource[Any]:
        """Apply a PATCH of member adds and removes to the rows it names; the group after it.

        Stores what scim2's get, patch and update would (the same rows, version and changes)
        without reading or writing the members the PATCH does not name. `check` raises when
        the request's preconditions fail on the group as stored.
        """
        row = self._stored(GROUPS, group_id)
        check(self._build(resource_type, row, None))
        stored = scim_store.member_displays(self.conn, group_id, named_ids(edits))
        replayed = replay(edits, stored)
        if replayed.modified:
            if not scim_store.touch_resource(self.conn, GROUPS, group_id, self.now, row.version):
                raise PreconditionFailedException(detail=f"{GROUPS} {group_id} changed meanwhile")
            wanted = self._known_members(group_id, replayed.members)
            removed = set(stored) - set(wanted)
            added = {u: d for u, d in wanted.items() if u not in stored}
            shown = {u: d for u, d in wanted.items() if u in stored and d != stored[u]}
            scim_store.change_members(self.conn, group_id, removed, added, shown)
            self._record_members(group_id, removed, set(added))
            row = self._stored(GROUPS, group_id)
        return self._resource(resource_type, row, with_members=with_members)

    def _page(
        self, resource_types: list[ResourceType], start: int, count: int | None
    ) -> SearchPage:
        """An unfiltered list: the page alone is read and built, the total counted in SQL."""
        found: list[Resource[Any]] = []
        total = 0
        for resource_type in resource_types:
            kind = _kind(resource_type)
            here = scim_store.count_resources(self.conn, kind)
            wanted = None if count is None else max(count - len(found), 0)
            if wanted != 0 and start - total < here:
                rows = scim_store.list_resources(
                    self.conn, kind, offset=max(start - total, 0), limit=wanted
                )
                found += self._resources(resource_type, rows)
            total += here
        return SearchPage(total=total, resources=found)

    def _set_members(self, group_id: str, wanted: dict[str, str | None]) -> None:
        removed, added = scim_store.set_group_members(
            self.conn, group_id, self._known_members(group_id, wanted)
        )
        self._record_members(group_id, removed, added)

    def _known_members(
        self, group_id: str, members: dict[str, str | None]
    ) -> dict[str, str | None]:
        """Those of `members` that are stored users."""
        known = scim_store.existing_user_ids(self.conn, members)
        if set(members) - known:
            # Okta may push a member it has not provisioned; there is nobody to detach.
            log.warning(
                "scim_unknown_members_skipped", group_id=group_id, count=len(set(members) - known)
            )
        return {u: d for u, d in members.items() if u in known}

    def _record_members(self, group_id: str, removed: set[str], added: set[str]) -> None:
        """The changes of members leaving and joining a group, once its rows are written."""
        group = self._stored(GROUPS, group_id)
        # Read in bulk what each change needs (Entra removes 100 members a PATCH): the users,
        # and for each one removed the groups they are still in (the still-granted rule).
        users = scim_store.get_resources(self.conn, USERS, removed | added, lock=self.lock)
        left_in = scim_store.groups_of(self.conn, removed)
        groups = scim_store.get_resources(
            self.conn, GROUPS, set().union(*left_in.values()), lock=self.lock
        )
        for kind, user_ids in ((ChangeKind.removed, removed), (ChangeKind.added, added)):
            for user_id in sorted(user_ids):
                user = users[user_id]
                # An inactive user already lost every group; reactivation rejoins the ones held.
                if not user.active:
                    continue
                if kind is ChangeKind.removed:
                    still = [groups[g] for g in sorted(left_in[user_id])]
                    self._record(kind, user, group, still)
                else:
                    self._record(kind, user, group)

    def _note_activity(self, before: Row, after: Resource[Any]) -> None:
        """`active` false is leaving every group; true again rejoins the groups still held."""
        now_active = getattr(after, "active", None) is not False
        if before.active and not now_active:
            self._record(ChangeKind.user_deactivated, self._stored(USERS, before.id), None)
        elif not before.active and now_active:
            user = self._stored(USERS, before.id)
            for group_id in sorted(scim_store.user_group_ids(self.conn, before.id)):
                self._record(ChangeKind.added, user, self._stored(GROUPS, group_id))

    def _record(
        self, kind: ChangeKind, user: Row, group: Row | None, member_of: list[Row] | None = None
    ) -> None:
        if kind is ChangeKind.removed and member_of is None:
            # Our own table is the truth of who is in what: the still-granted rule reads it
            # rather than intake's copy, which an externalId change or a rename can leave stale.
            current = scim_store.user_group_ids(self.conn, user.id)
            member_of = [self._stored(GROUPS, g) for g in sorted(current)]
        self.changes.append(
            MembershipChange(
                provider=self.idp,
                event_id=f"scim:{self.request_id}:{len(self.changes):04d}",
                occurred_at=self.now,
                change=kind,
                user=user_ref(user),
                group=group_ref(group) if group is not None else None,
                member_of=tuple(group_ref(g) for g in member_of) if member_of is not None else None,
            )
        )

    # -- rows and resources ---------------------------------------------------------------

    def _stored(self, kind: str, resource_id: str) -> Row:
        row = scim_store.get_resource(self.conn, kind, resource_id, lock=self.lock)
        if row is None:
            raise NotFoundException(detail=f"{kind} {resource_id} not found")
        return row

    def _resources(self, resource_type: ResourceType, rows: list[Row]) -> list[Resource[Any]]:
        members = (
            scim_store.members_of(self.conn, [r.id for r in rows])
            if resource_type.name == GROUPS
            else {}
        )
        return [self._build(resource_type, row, members.get(row.id)) for row in rows]

    def _resource(
        self, resource_type: ResourceType, row: Row, *, with_members: bool
    ) -> Resource[Any]:
        members = None
        if resource_type.name == GROUPS and with_members:
            members = scim_store.members_of(self.conn, [row.id])[row.id]
        return self._build(resource_type, row, members)

    def _build(
        self, resource_type: ResourceType, row: Row, members: list[tuple[str, str]] | None
    ) -> Resource[Any]:
        model = self.provider.model_for(resource_type)
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


def _kind(resource_type: ResourceType) -> str:
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


def _document(resource: Resource[Any]) -> dict[str, Any]:
    """What we store of a resource: everything but id, meta and members."""
    return resource.model_dump(mode="json", exclude={"id", "meta", "members"}, by_alias=True)


def _bounded(resource: Resource[Any]) -> dict[str, Any]:
    """The document, once what becomes an identifier or an indexed column fits MAX_ID_BYTES."""
    document = _document(resource)
    values = [document.get(key) for key in ("userName", "externalId", "displayName")]
    values += [e.get("value") for e in document.get("emails") or [] if isinstance(e, dict)]
    if any(isinstance(v, str) and len(v.encode()) > MAX_ID_BYTES for v in values):
        raise InvalidValueException(
            detail=f"userName, externalId, displayName and emails are at most {MAX_ID_BYTES} bytes"
        )
    return document


def _members(resource: Resource[Any]) -> dict[str, str | None]:
    """Member user id -> the display name the IdP sent with it."""
    return {str(m.value): m.display for m in getattr(resource, "members", None) or [] if m.value}


def _version(etag: str | None) -> int | None:
    if etag is None:
        return None
    try:
        return int(etag.removeprefix("W/").strip('"'))
    except ValueError:
        return -1  # an ETag we never issued matches nothing


def _excludes_members(parameters: ResponseParameters[Any] | None) -> bool:
    excluded = parameters.excluded_attributes if parameters else None
    return bool(excluded and any(str(p).lower() == "members" for p in excluded))
