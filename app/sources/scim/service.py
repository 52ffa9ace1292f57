"""What our SCIM server announces, and the fixes Entra ID's dialect needs on top of scim2."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError
from scim2_models import (
    AuthenticationScheme,
    Bulk,
    ChangePassword,
    Context,
    Error,
    ETag,
    Filter,
    InvalidPathException,
    Patch,
    PatchOp,
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
from scim2_server.service import ScimService, scim_exception_of
from scim2_server.utils import load_default_resource_types, load_default_schemas, parametrize

from app.sources.scim import leniency, manager

MAX_RESULTS = 200
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"

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
    """scim2-server's protocol, with Entra's dialect read (remove-by-value, the manager) and
    what the bridge does not act on forgiven when it does not fit (see `leniency`)."""

    def read_creation(
        self, resource_type: ResourceType, body: bytes, content_type: str | None
    ) -> Resource[Any]:
        """Validate a POST body, forgiving what the bridge does not act on."""
        context = Context.RESOURCE_CREATION_REQUEST
        return self._read_resource(resource_type, body, content_type, context)

    def read_replacement(
        self, resource_type: ResourceType, body: bytes, content_type: str | None
    ) -> Resource[Any]:
        """Validate a PUT body, forgiving what the bridge does not act on."""
        context = Context.RESOURCE_REPLACEMENT_REQUEST
        return self._read_resource(resource_type, body, content_type, context)

    def _read_resource(
        self, resource_type: ResourceType, body: bytes, content_type: str | None, context: Context
    ) -> Resource[Any]:
        """scim2's validation; a body it refuses is read again with Entra's manager rewritten
        and the attributes the bridge ignores that still do not fit left out."""
        self.ensure_json(content_type)
        model = self.get_model(resource_type)
        try:
            return model.model_validate_json(body, scim_ctx=context)
        except ValidationError as exc:
            document = self.decode_body(body, content_type)
            if not isinstance(document, dict):
                raise scim_exception_of(exc) from exc
        return leniency.read_resource(model, manager.in_resource(document), context)

    def read_patch(
        self, resource_type: ResourceType, body: bytes, content_type: str | None
    ) -> PatchOp[Any]:
        """Parse a PATCH, refusing typos in paths and reading Entra's dialect.

        Entra sends `{"op":"Remove","path":"members","value":[{"$ref":null,"value":id}]}`.
        scim2 turns each entry into a filter on all its keys, and `$ref eq null` matches no
        stored member, so the removal would silently do nothing. Only `value` identifies one.
        Entra's manager is a bare id (`manager.in_operation`). An operation on an attribute
        the bridge ignores that scim2 still refuses is dropped, not the whole PATCH.
        """
        try:
            document = json.loads(body)
        except ValueError:
            return super().read_patch(resource_type, body, content_type)
        key = _operations_key(document)
        operations = document[key] if key else None
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
        if key and isinstance(operations, list):
            document[key] = [manager.in_operation(op) for op in operations]
        try:
            return super().read_patch(resource_type, json.dumps(document).encode(), content_type)
        except SCIMException as exc:
            if exc.status != 400 or key is None or not _sound_envelope(document, key):
                raise
        return self._sifted_read(resource_type, document, key, content_type)

    def _sifted_read(
        self,
        resource_type: ResourceType,
        document: dict[str, Any],
        key: str,
        content_type: str | None,
    ) -> PatchOp[Any]:
        """The PATCH less the operations (or pieces) scim2 refuses that the bridge ignores."""
        operations: list[Any] = document[key]

        def attempt(index: int, value: Any) -> object:
            op = operations[index]
            if value is not leniency.AS_SENT:
                op = {**op, "value": value}
            one = json.dumps({**document, key: [op]}).encode()
            return ScimService.read_patch(self, resource_type, one, content_type)

        values = leniency.sift(
            [_shape(op) for op in operations], attempt, _extensions(self.get_model(resource_type))
        )
        kept = [
            op if not isinstance(op, dict) or value is op.get("value") else {**op, "value": value}
            for op, value in zip(operations, values, strict=True)
            if value is not leniency.DROPPED
        ]
        if not kept:
            nothing = parametrize(PatchOp, self.get_model(resource_type))
            return nothing.model_construct(schemas=[PATCH_SCHEMA], operations=[])
        sifted = json.dumps({**document, key: kept}).encode()
        return super().read_patch(resource_type, sifted, content_type)

    def apply_patch(
        self, current: Resource[Any], patch_op: PatchOp[Any], conditions: Conditions
    ) -> Resource[Any] | None:
        """Apply a PATCH; an operation (or piece) on an attribute the bridge ignores that
        does not fit the resource is dropped, tried on a copy once the whole has failed."""
        self.check_preconditions(current, "PATCH", conditions)
        try:
            return current if patch_op.patch(current) else None
        except SCIMException as exc:
            if exc.status != 400:
                raise
        operations = patch_op.operations or []
        scratch = current.model_copy(deep=True)

        def attempt(index: int, value: Any) -> object:
            op = operations[index]
            if value is not leniency.AS_SENT:
                op = op.model_copy(update={"value": value})
            return type(patch_op).model_construct(operations=[op]).patch(scratch)

        shapes = [
            (op.op.value, None if op.path is None else str(op.path), op.value) for op in operations
        ]
        values = leniency.sift(shapes, attempt, _extensions(type(current)))
        kept = [
            op if value is op.value else op.model_copy(update={"value": value})
            for op, value in zip(operations, values, strict=True)
            if value is not leniency.DROPPED
        ]
        sifted = type(patch_op).model_construct(schemas=patch_op.schemas, operations=kept)
        return current if sifted.patch(current) else None

    @staticmethod
    def error_of(exception: Exception) -> Error:
        """SCIM's error for an exception, pydantic's own text left out."""
        if isinstance(exception, SCIMException):
            exception = leniency.clean(exception)
        return ScimService.error_of(exception)

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


def _operations_key(document: Any) -> str | None:
    """The key of a PATCH's operations (`Operations`, in whatever case it was sent)."""
    if not isinstance(document, dict):
        return None
    return next((k for k in document if isinstance(k, str) and k.lower() == "operations"), None)


def _sound_envelope(document: dict[str, Any], key: str) -> bool:
    """Whether a refused PATCH was refused for its operations, not for its envelope."""
    schemas = document.get("schemas", [PATCH_SCHEMA])
    operations = document.get(key)
    return (
        isinstance(operations, list)
        and bool(operations)
        and isinstance(schemas, list)
        and PATCH_SCHEMA in schemas
    )


def _shape(op: Any) -> tuple[str, str | None, Any]:
    """An operation as sent: its op, path and value."""
    if not isinstance(op, dict):
        return "", None, None
    path = op.get("path")
    return str(op.get("op", "")), path if isinstance(path, str) else None, op.get("value")


def _extensions(model: type[Resource[Any]]) -> frozenset[str]:
    """The schema URNs of a resource's extensions, in lower case."""
    return frozenset(urn.lower() for urn in model.get_extension_models())
