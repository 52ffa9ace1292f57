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
    Path,
    ResourceType,
    SCIMException,
    ScimPolicy,
    ScimProvider,
    ServiceProviderConfig,
    Sort,
)
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
