"""Entra ID's `manager`: a bare id where RFC 7643 has a complex attribute.

RFC 7643 §4.3 gives the enterprise extension's `manager` the sub-attributes `value`,
`$ref` and `displayName`. Entra sends the manager's id as a plain string, on POST and PUT
and in every later user PATCH (a disable included), and `""` when the manager is taken
away; Microsoft has said it will not change. These functions rewrite that form into the
RFC's before scim2 validates it: `"<id>"` becomes `{"value": "<id>"}`, `""` a removal.
"""

from __future__ import annotations

from typing import Any

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
_EXTENSION = ENTERPRISE.lower()
_MANAGER = f"{_EXTENSION}:manager"


def in_resource(document: dict[str, Any]) -> dict[str, Any]:
    """A POST or PUT body with its manager in the RFC's form."""
    return {
        key: _in_extension(value) if key.lower() == _EXTENSION else value
        for key, value in document.items()
    }


def in_operation(operation: Any) -> Any:
    """A PATCH operation with the manager it writes in the RFC's form; `""` removes it.

    Entra (default dialect) names the manager in the path; its aadOptscim062020 dialect
    sends a path-less replace whose value has the manager under a dotted key, or inside
    the extension's object.
    """
    if not isinstance(operation, dict) or "value" not in operation:
        return operation
    path, value = operation.get("path"), operation["value"]
    if str(operation.get("op", "")).lower() == "remove":
        return operation
    if isinstance(path, str) and path.lower() == _MANAGER:
        if value == "":
            # An add of null is refused; a remove of a manager not set is a no-op.
            return {"op": "remove", "path": path}
        return {**operation, "value": _as_complex(value)}
    if isinstance(path, str) and path.lower() == _EXTENSION:
        return {**operation, "value": _in_extension(value)}
    if path is None and isinstance(value, dict):
        return {**operation, "value": _in_value(value)}
    return operation


def _in_value(value: dict[str, Any]) -> dict[str, Any]:
    """A path-less value: the manager under a dotted key, or in the extension's object."""
    rewritten = {}
    for key, item in value.items():
        if key.lower() == _MANAGER:
            rewritten[key] = _as_complex(item)
        elif key.lower() == _EXTENSION:
            rewritten[key] = _in_extension(item)
        else:
            rewritten[key] = item
    return rewritten


def _in_extension(extension: Any) -> Any:
    if not isinstance(extension, dict):
        return extension
    return {
        key: _as_complex(value) if key.lower() == "manager" else value
        for key, value in extension.items()
    }


def _as_complex(value: Any) -> Any:
    """`"<id>"` as `{"value": "<id>"}`, `""` as null (unassigned); anything else as sent."""
    if not isinstance(value, str):
        return value
    return {"value": value} if value else None
