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
    Patch,
    PatchOp,
    ResourceType,
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
        """Entra sends `{"op":"Remove","path":"members","value":[{"$ref":null,"value":id}]}`.

        scim2 turns each entry into a filter on all its keys, and `$ref eq null` matches no
        stored member, so the removal would silently do nothing. Only `value` identifies one.
        """
        try:
            document = json.loads(body)
        except ValueError:
            return super().read_patch(resource_type, body, content_type)
        operations = document.get("Operations") if isinstance(document, dict) else None
        for op in operations if isinstance(operations, list) else []:
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
