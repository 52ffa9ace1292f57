"""Postel's law for what the bridge never reads, and errors that name what is wrong.

The bridge acts on `active`, `userName`, `externalId`, `emails`, `displayName` and
`members` alone. Any other attribute that comes in a shape scim2 refuses (a title that is
an object, a phone number that is a string) is dropped with a warning instead: a request
is never refused for it, so it cannot sink the deactivation or membership change it came
with. An attribute the bridge acts on is still refused, in SCIM's error schema, with the
attribute named and without pydantic's own text.

scim2 validates POST and PUT bodies whole, and applies a PATCH's operations in turn,
each whole. Both are only sifted once they have failed, so a request that fits costs
nothing more: a body loses the attributes pydantic's errors point at; a PATCH is run
operation by operation on a copy, and an operation that fails is split into one piece
per attribute it writes (a path-less value per key, an extension's object per
sub-attribute) to find the ones that do not fit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from pydantic import ValidationError
from scim2_models import Context, Error, Resource, SCIMException

log = structlog.get_logger(__name__)

ACTED_ON = frozenset({"active", "username", "externalid", "emails", "displayname", "members"})
# Never dropped either: the document's structure.
_KEPT = ACTED_ON | {"schemas", "id"}
_CORE = (
    "urn:ietf:params:scim:schemas:core:2.0:user",
    "urn:ietf:params:scim:schemas:core:2.0:group",
)
_PYDANTIC = ("validation error", "[type=", "errors.pydantic.dev")

# The value of an operation that is dropped whole.
DROPPED: Any = object()
# `attempt`'s value for the operation as it was sent (which may have no value at all).
AS_SENT: Any = object()


def is_acted_on(attribute: str) -> bool:
    """Whether the bridge reads the attribute a path or key names (when in doubt, it does)."""
    name = attribute.strip().lower()
    if name in _CORE or not name:
        return True
    core = next((urn for urn in _CORE if name.startswith(urn + ":")), None)
    if core is not None:
        name = name[len(core) + 1 :]
    elif name.startswith("urn:"):
        return False  # an extension's attribute
    return re.split(r"[.\[]", name, maxsplit=1)[0].strip() in _KEPT


def read_resource(
    model: type[Resource[Any]], document: dict[str, Any], context: Context
) -> Resource[Any]:
    """A POST or PUT body as a resource, less what does not fit of what the bridge ignores."""
    while True:
        try:
            return model.model_validate_json(json.dumps(document), scim_ctx=context)
        except ValidationError as exc:
            errors = exc.errors()
            keys = [_attribute_of(error) for error in errors]
            refused = next((e for e, k in zip(errors, keys, strict=True) if k is None), None)
            if refused is not None:
                raise _refusal(refused) from exc
            dropped = [k for k, e in zip(keys, errors, strict=True) if k and _drop(document, k, e)]
            if not dropped:
                raise _refusal(errors[0]) from exc


def sift(
    operations: Sequence[tuple[str, str | None, Any]],
    attempt: Callable[[int, Any], object],
    extensions: frozenset[str],
) -> list[Any]:
    """The value each operation keeps once the pieces that do not fit are dropped.

    `operations` holds each one's op, path and value; `attempt(index, value)` reads or
    applies that operation with the value given (AS_SENT: as sent) and raises what scim2
    raises. An operation left with nothing is DROPPED. A piece that writes an attribute
    the bridge acts on and does not fit is refused.
    """
    kept: list[Any] = []
    for index, (op, path, value) in enumerate(operations):
        try:
            attempt(index, AS_SENT)
        except SCIMException as exc:
            if exc.status != 400:
                raise
            failure = exc
        else:
            kept.append(value)
            continue
        pieces = _pieces(op, path, value, extensions)
        if pieces is None:
            _forgive(path or "", failure)
            kept.append(DROPPED)
            continue
        fitting = []
        for attribute, piece in pieces:
            try:
                attempt(index, piece)
            except SCIMException as exc:
                if exc.status != 400:
                    raise
                _forgive(attribute, exc)
            else:
                fitting.append(piece)
        kept.append(_joined(fitting) if fitting else DROPPED)
    return kept


def clean(exc: SCIMException, attribute: str = "") -> SCIMException:
    """The exception without pydantic's report, naming the attribute when it is given."""
    cause = exc.__cause__
    pydantic = _is_pydantic(exc.detail)
    if pydantic and not attribute and isinstance(cause, ValidationError) and cause.errors():
        return _refusal(cause.errors()[0])
    problem = _problem(exc)
    if not pydantic and (not attribute or attribute.lower() in problem.lower()):
        return exc
    detail = f"{problem}: {attribute}" if attribute else problem
    error = Error(status=exc.status, scim_type=exc.scim_type or None, detail=detail)
    return SCIMException.from_error(error)


def _forgive(attribute: str, exc: SCIMException) -> None:
    """Drop a piece that does not fit with a warning, or refuse it if the bridge reads it."""
    if is_acted_on(attribute):
        raise clean(exc, attribute) from exc
    log.warning("scim_attribute_dropped", attribute=attribute, problem=_problem(exc))


def _problem(exc: SCIMException) -> str:
    """What is wrong, in words: for pydantic's report, the message of its first error."""
    cause = exc.__cause__
    if _is_pydantic(exc.detail) and isinstance(cause, ValidationError) and cause.errors():
        return _plain(cause.errors()[0]["msg"])
    return _plain(exc.detail)


def _pieces(
    op: str, path: str | None, value: Any, extensions: frozenset[str]
) -> list[tuple[str, Any]] | None:
    """An add or replace split into one (attribute, value) per attribute it writes.

    None when it writes one attribute only (or is a remove).
    """
    if op.lower() not in ("add", "replace") or not isinstance(value, dict):
        return None
    if path is not None:
        if path.lower() not in extensions:
            return None
        return [(f"{path}:{key}", {key: item}) for key, item in value.items()]
    pieces = []
    for key, item in value.items():
        if key.lower() in extensions and isinstance(item, dict) and item:
            pieces += [(f"{key}:{sub}", {key: {sub: part}}) for sub, part in item.items()]
        else:
            pieces.append((key, {key: item}))
    return pieces


def _joined(pieces: list[Any]) -> Any:
    """The value of the pieces that fit, as one (an extension's pieces in one object)."""
    joined: dict[str, Any] = {}
    for piece in pieces:
        for key, item in piece.items():
            before = joined.get(key)
            if isinstance(before, dict) and isinstance(item, dict):
                joined[key] = {**before, **item}
            else:
                joined[key] = item
    return joined


def _attribute_of(error: Any) -> tuple[str, ...] | None:
    """The keys of the attribute an error is on, when the bridge does not act on it."""
    loc = [p for p in error["loc"] if not (isinstance(p, str) and ("[" in p or "(" in p))]
    if not loc or not isinstance(loc[0], str):
        return None
    top = loc[0]
    if is_acted_on(top):
        return None
    if top.lower().startswith("urn:") and len(loc) > 1 and isinstance(loc[1], str):
        return top, loc[1]  # an extension's attribute
    return (top,)


def _drop(document: dict[str, Any], keys: tuple[str, ...], error: Any) -> bool:
    """Take an attribute out of a body (keys match regardless of case); whether it was in."""
    holder: Any = document
    for depth, key in enumerate(keys):
        found = next((k for k in holder if k.lower() == key.lower()), None)
        if found is None:
            return False
        if depth == len(keys) - 1 or not isinstance(holder[found], dict):
            del holder[found]
            attribute = ":".join(keys[: depth + 1])
            log.warning("scim_attribute_dropped", attribute=attribute, problem=_plain(error["msg"]))
            return True
        holder = holder[found]
    return False


def _refusal(error: Any) -> SCIMException:
    """SCIM's error for one of pydantic's: its message and where, in scim2's wording."""
    plain = {**error, "msg": _plain(error["msg"])}
    return SCIMException.from_error(Error.from_validation_error(plain))


def _plain(message: str) -> str:
    return "the value does not fit the attribute" if _is_pydantic(message) else message


def _is_pydantic(text: str) -> bool:
    """Whether a text holds pydantic's own report (its title, error types or links)."""
    return any(marker in text for marker in _PYDANTIC)
