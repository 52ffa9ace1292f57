"""What our SCIM server announces, and the one fix Entra ID's dialect needs on top of scim2."""

from __future__ import annotations

import json
from typing import Any

from scim2_models import (
    AuthenticationScheme,
    Bulk,
    ChangePassword,
    ETag,
    Filter,
    InvalidPathException,
    Patch,
    PatchOp,
    PatchOperation,
    Path,
    Resource,
    ResourceType,
    SCIMException,
    ScimPolicy,
    ScimProvider,
    ServiceProviderConfig,
    Sort,
)
from scim2_server.conditions import Conditions
from scim2_server.service import ScimService
from scim2_server.utils import load_default_resource_types, load_default_schemas

MAX_RESULTS = 200

CONFIG = ServiceProviderConfig(
    patch=Patch(supported=True),
    bulk=Bulk(supported=False, max_operations=0, max_payload_size=0),
    filter=Filter(supported=True, max_results=MAX_RESULTS),
    change_password=ChangePassword(supported=False),
    sort=Sort(supported=True),
    etag=ETag(supported=False),
    authentication_schemes=[
        AuthenticationScheme(
            type=AuthenticationScheme.Type.oauthbearertoken,
            name="OAuth Bearer Token",
            description="The SCIM_TOKEN of the bridge, as a bearer token.",
        )
    ],
)

# What Entra ID and Okta send that strict RFC 7643/7644 refuses: unknown attributes and
# schemas (the ADSCIM group schema), `remove` with a value list, replace of a missing item.
TOLERANT = ScimPolicy(
    unknown=ScimPolicy.Unknown.ignore,
    remove_value_as_filter="apply",
    unmatched_path_filter="create",
)


def make_provider() -> ScimProvider:
    """Users and Groups (core schemas, enterprise extension), tolerant of Entra and Okta."""
    return ScimProvider.from_discovery(
        load_default_schemas().values(),
        load_default_resource_types().values(),
        config=CONFIG,
        policy=TOLERANT,
    )


class BridgeScimService(ScimService):
    """scim2-server's protocol, with Entra's remove-by-value made to match on `value` alone."""

    def read_patch(
        self, resource_type: ResourceType, body: bytes, content_type: str | None
    ) -> PatchOp[Any]:
        """Parse a PATCH, refusing typos in paths and matching Entra's removals by value.

        Entra sends `{"op":"Remove","path":"members","value":[{"$ref":null,"value":id}]}`.
        scim2 turns each entry into a filter on all its keys, and `$ref eq null` matches no
        stored member, so the removal would silently do nothing. Only `value` identifies one.
        """
        try:
            document = json.loads(body)
        except ValueError:
            return super().read_patch(resource_type, body, content_type)
        operations = document.get("Operations") if isinstance(document, dict) else None
        for op in operations if isinstance(operations, list) else []:
            if isinstance(op, dict) and isinstance(op.get("path"), str):
                self._check_path(resource_type, op["path"])
            if (
                isinstance(op, dict)
                and str(op.get("op", "")).lower() == "remove"
                and isinstance(op.get("value"), list)
            ):
                op["value"] = [
                    {"value": entry["value"]}
                    if isinstance(entry, dict) and "value" in entry
                    else entry
                    for entry in op["value"]
                ]
        return super().read_patch(resource_type, json.dumps(document).encode(), content_type)

    def _check_path(self, resource_type: ResourceType, path: str) -> None:
        """400 invalidPath for a core attribute we do not have.

        The tolerant policy would drop it silently. Attributes of extension schemas we do not
        model (an Entra custom attribute) stay tolerated, so such a PATCH, which may also carry
        `active: false`, is never refused for them.
        """
        if path.lower().startswith("urn:"):
            return
        try:
            model = self.get_model(resource_type)
            known = Path[model](path).resolve() is not None  # type: ignore[valid-type]
        except SCIMException:
            raise
        except ValueError as exc:
            raise InvalidPathException(detail=f"{path!r} is not a valid path") from exc
        if not known:
            raise InvalidPathException(detail=f"{resource_type.name} has no attribute {path!r}")

    def apply_patch(
        self, current: Resource[Any], patch_op: PatchOp[Any], conditions: Conditions
    ) -> Resource[Any] | None:
        """Apply a PATCH; a group PATCH that only removes members by value is done directly.

        That is how Entra takes people out of a group, up to 100 at a time. scim2 turns each
        removed value into a filter and tries every filter on every member, which costs
        seconds on a group of thousands; `members.value` is case-exact, so a set lookup
        removes exactly what those filters would.
        """
        removed = _removed_member_ids(patch_op)
        # The provider's Group model is built from the schemas, so it is known by its fields.
        if removed is None or "members" not in type(current).model_fields:
            return super().apply_patch(current, patch_op, conditions)
        self.check_preconditions(current, "PATCH", conditions)
        before = getattr(current, "members", None) or []
        kept = [m for m in before if m.value not in removed]
        if len(kept) == len(before):
            return None
        current.members = kept  # type: ignore[attr-defined]
        return current


def _removed_member_ids(patch_op: PatchOp[Any]) -> set[str] | None:
    """The member ids when every operation is `remove` of `members` with a list of
    `{"value": id}` entries (Entra's form); None for anything else."""
    removed: set[str] = set()
    for op in patch_op.operations or []:
        value = op.value
        if (
            op.op != PatchOperation.Op.remove
            or str(op.path).lower() != "members"
            or not isinstance(value, list)
            or not value
        ):
            return None
        for entry in value:
            if not (isinstance(entry, dict) and set(entry) == {"value"}):
                return None
            if not isinstance(entry["value"], str):
                return None
            removed.add(entry["value"])
    return removed if patch_op.operations else None
