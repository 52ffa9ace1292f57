"""What a SCIM list or filter costs: narrowed in SQL before anything is built.

- No filter and no sort: the page alone is read (LIMIT/OFFSET) and the total counted in SQL.
- `eq` on an indexed attribute (userName, externalId, id; a group's displayName), or an `or`
  of such `eq`s on one attribute (Entra and Okta look users up this way), or an `and` with
  one of them: only the rows with those values are read; scim2 matches the rest.
- A filter of more than MAX_FILTER_TERMS comparisons is refused (400 invalidFilter): its
  cost would grow with the filter, and no IdP sends one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scim2_models import InvalidFilterException, SearchRequest
from scim2_models.path.expressions import (
    CompareOperator,
    Comparison,
    FilterNode,
    LogicalExpr,
    LogicalOperator,
    Not,
    ValuePath,
)

from app.store.scim import GROUPS, USERS

MAX_FILTER_TERMS = 100
_INDEXED = {
    (USERS, "username"): "user_name_key",
    (USERS, "externalid"): "external_id",
    (USERS, "id"): "id",
    (GROUPS, "displayname"): "display_name_key",
    (GROUPS, "externalid"): "external_id",
    (GROUPS, "id"): "id",
}


@dataclass(frozen=True)
class Narrowing:
    """Rows to read: those whose indexed `column` is one of `values`."""

    column: str
    values: tuple[str, ...]


def check_filter(search: SearchRequest[Any]) -> None:
    """Refuse a filter with more comparisons than MAX_FILTER_TERMS (400 invalidFilter)."""
    if search.filter is None:
        return
    terms = _terms(search.filter.ast)
    if terms > MAX_FILTER_TERMS:
        raise InvalidFilterException(
            detail=f"the filter has {terms} comparisons; at most {MAX_FILTER_TERMS} are served"
        )


def narrowing(kind: str, search: SearchRequest[Any]) -> Narrowing | None:
    """The SQL narrowing of the search's filter, or None when it cannot be narrowed."""
    return _narrow(kind, search.filter.ast) if search.filter is not None else None


def _narrow(kind: str, node: FilterNode) -> Narrowing | None:
    if isinstance(node, Comparison):
        return _indexed_eq(kind, node)
    if isinstance(node, LogicalExpr) and node.op is LogicalOperator.or_:
        parts = [_narrow(kind, term) for term in node.terms]
        if not parts or any(p is None for p in parts):
            return None
        columns = {p.column for p in parts if p is not None}
        if len(columns) != 1:
            return None
        values = tuple(dict.fromkeys(v for p in parts if p is not None for v in p.values))
        return Narrowing(columns.pop(), values)
    if isinstance(node, LogicalExpr) and node.op is LogicalOperator.and_:
        return next((n for n in (_narrow(kind, t) for t in node.terms) if n is not None), None)
    return None


def _indexed_eq(kind: str, node: Comparison) -> Narrowing | None:
    if node.op is not CompareOperator.eq or node.attr_path.sub_attr:
        return None
    if not isinstance(node.value, str):
        return None
    column = _INDEXED.get((kind, node.attr_path.attr.lower()))
    if column is None:
        return None
    # The *_key columns hold the case-folded value: SCIM compares those case-insensitively.
    return Narrowing(column, (node.value.lower() if column.endswith("_key") else node.value,))


def _terms(node: FilterNode) -> int:
    if isinstance(node, LogicalExpr):
        return sum(_terms(t) for t in node.terms)
    if isinstance(node, Not):
        return _terms(node.expr)
    if isinstance(node, ValuePath):
        return _terms(node.val_filter)
    return 1
