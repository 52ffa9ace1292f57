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

from app.changes import ChangeKind, MembershipChange, Provider
from app.sources.scim.documents import (
    bounded,
    build,
    excludes_members,
    kind_of,
    members_sent,
    version_of,
)
from app.sources.scim.members import MemberEdit, named_ids, replay
from app.sources.scim.narrow import check_filter, narrowing
from app.sources.scim.recorder import Recorder
from app.store import scim as scim_store
from app.store.scim import GROUPS, ConflictError, Row

log = structlog.get_logger(__name__)


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
        self.now = now
        self.lock = lock
        self.record = Recorder(conn, idp, request_id, now, lock)

    @property
    def changes(self) -> list[MembershipChange]:
        """The membership changes this request made, in order."""
        return self.record.changes

    # -- the ScimStorage interface ------------------------------------------------------

    def get(
        self,
        resource_type: ResourceType,
        resource_id: str,
        *,
        response_parameters: ResponseParameters[Any] | None = None,
    ) -> Resource[Any]:
        """One resource; members are skipped when the reply excludes them."""
        row = self._stored(kind_of(resource_type), resource_id)
        return self._resource(
            resource_type, row, with_members=not excludes_members(response_parameters)
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
            narrowed = narrowing(kind_of(resource_type), search_request)
            rows = scim_store.list_resources(
                self.conn,
                kind_of(resource_type),
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
        kind = kind_of(resource_type)
        resource_id = uuid.uuid4().hex
        try:
            scim_store.insert_resource(self.conn, kind, resource_id, bounded(resource), self.now)
        except ConflictError as exc:
            raise UniquenessException(detail=exc.message) from exc
        if kind == GROUPS:
            self._set_members(resource_id, members_sent(resource))
        return self.get(resource_type, resource_id)

    def update(
        self,
        resource_type: ResourceType,
        resource: Resource[Any],
        *,
        expected_version: str | None = None,
    ) -> Resource[Any]:
        """Replace a resource with its new state (after PATCH or PUT) and diff its meaning."""
        kind = kind_of(resource_type)
        assert resource.id is not None
        before = self._stored(kind, resource.id)
        try:
            saved = scim_store.update_resource(
                self.conn,
                kind,
                resource.id,
                bounded(resource),
                self.now,
                version_of(expected_version),
            )
        except ConflictError as exc:
            raise UniquenessException(detail=exc.message) from exc
        if not saved:
            raise PreconditionFailedException(detail=f"{kind} {resource.id} changed meanwhile")
        if kind == GROUPS:
            self._set_members(resource.id, members_sent(resource))
        else:
            self.record.activity(before, resource)
        return self.get(resource_type, resource.id)

    def delete(
        self, resource_type: ResourceType, resource_id: str, *, expected_version: str | None = None
    ) -> None:
        """Delete a resource: a group's members and a user's groups count as removed."""
        kind = kind_of(resource_type)
        row = self._stored(kind, resource_id)
        if expected_version is not None and row.version != version_of(expected_version):
            raise PreconditionFailedException(detail=f"{kind} {resource_id} changed meanwhile")
        if kind == GROUPS:
            self._set_members(resource_id, {})
        elif row.active:
            left = sorted(scim_store.user_group_ids(self.conn, resource_id))
            for index, group_id in enumerate(left):
                remaining = [self._stored(GROUPS, g) for g in left[index + 1 :]]
                self.record.change(
                    ChangeKind.removed, row, self._stored(GROUPS, group_id), remaining
                )
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
        check(build(self.provider, resource_type, row, None))
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
            self.record.members(group_id, removed, set(added))
            row = self._stored(GROUPS, group_id)
        return self._resource(resource_type, row, with_members=with_members)

    def _page(
        self, resource_types: list[ResourceType], start: int, count: int | None
    ) -> SearchPage:
        """An unfiltered list: the page alone is read and built, the total counted in SQL."""
        found: list[Resource[Any]] = []
        total = 0
        for resource_type in resource_types:
            kind = kind_of(resource_type)
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
        self.record.members(group_id, removed, added)

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

    # -- rows and resources ---------------------------------------------------------------

    def _stored(self, kind: str, resource_id: str) -> Row:
        return self.record.stored(kind, resource_id)

    def _resources(self, resource_type: ResourceType, rows: list[Row]) -> list[Resource[Any]]:
        members = (
            scim_store.members_of(self.conn, [r.id for r in rows])
            if resource_type.name == GROUPS
            else {}
        )
        return [build(self.provider, resource_type, row, members.get(row.id)) for row in rows]

    def _resource(
        self, resource_type: ResourceType, row: Row, *, with_members: bool
    ) -> Resource[Any]:
        members = None
        if resource_type.name == GROUPS and with_members:
            members = scim_store.members_of(self.conn, [row.id])[row.id]
        return build(self.provider, resource_type, row, members)
