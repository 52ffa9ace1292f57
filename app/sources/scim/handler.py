"""scim2-server's request handler, with group member PATCHes applied row by row."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scim2_models import PatchOp, Resource, ResourceType
from scim2_server.conditions import Conditions
from scim2_server.handler import ScimHandler
from scim2_server.requests import ScimRequest
from scim2_server.responses import ScimResponse
from scim2_server.service import ScimService

from app.sources.scim.members import member_edits, reply_shows_members
from app.sources.scim.storage import SqlStorage
from app.store.scim import GROUPS


class BridgeScimHandler(ScimHandler):
    """One per request. A group PATCH made only of member adds and removes by id goes to
    `SqlStorage.patch_members`; everything else, and every other request, is scim2's."""

    storage: SqlStorage
    # Tests turn it off to hold the fast path to what scim2's own path does.
    member_rows = True

    def __init__(self, service: ScimService, storage: SqlStorage) -> None:
        super().__init__(service, storage)
        self._query: Mapping[str, str] = {}

    def patch(self, request: ScimRequest) -> ScimResponse:
        """scim2's PATCH; the query is kept to tell whether the reply shows members."""
        self._query = request.query
        return super().patch(request)

    def patch_resource(
        self,
        resource_type: ResourceType,
        resource_id: str,
        patch_op: PatchOp[Any],
        conditions: Conditions,
    ) -> Resource[Any]:
        """Apply a validated PATCH; member edits of a group as row operations."""
        edits = None
        if self.member_rows and resource_type.name == GROUPS:
            edits = member_edits(patch_op, self.service.get_model(resource_type))
        if edits is None:
            return super().patch_resource(resource_type, resource_id, patch_op, conditions)
        parameters = self.service.read_response_parameters(resource_type, self._query)
        return self.storage.patch_members(
            resource_type,
            resource_id,
            edits,
            check=lambda current: self.service.check_preconditions(current, "PATCH", conditions),
            with_members=reply_shows_members(parameters),
        )
