"""Group PATCHes that only add and remove members by id: read, replayed, and their reply.

Entra ID takes people out of a group with up to 100 `{"op":"Remove","path":"members",
"value":[{"value":id},...]}` a PATCH; Okta sends `remove` with `members[value eq "id"]`
and `add` with a value list, both in one PATCH. scim2 would load the whole group, apply
the PATCH in memory and write every member back. Such a PATCH only needs the rows of the
members it names: `member_edits` recognises it, `replay` tells what scim2 would have made
of those rows, and `reply_shows_members` whether the reply needs the other members at all.
Anything else is None here and goes through scim2 unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from scim2_models import PatchOp, PatchOperation, Path, Resource, ResponseParameters
from scim2_models.path.expressions import CompareOperator, Comparison, ValuePath

# The keys an added member may carry and still be stored exactly as scim2 would store it:
# we keep value and display; Entra sends `"$ref": null`. Any other key, or a `$ref` with a
# value, is left to scim2, which validates it.
_ADDED_KEYS = frozenset({"value", "display", "$ref"})


@dataclass(frozen=True)
class Member:
    """A member an operation names: its id, the display sent with it, and how scim2 tells
    two such entries apart (by its comparison form of each sub-attribute)."""

    id: str
    display: str | None
    same_as: tuple[str, Any]


@dataclass(frozen=True)
class MemberEdit:
    """One operation of a member PATCH: add these members, or remove these ids."""

    op: Literal["add", "remove"]
    members: tuple[Member, ...]


@dataclass(frozen=True)
class Replayed:
    """What a member PATCH makes of the rows it names."""

    members: dict[str, str | None]
    """The named ids that are members afterwards, with their display."""

    modified: bool
    """Whether scim2 would count the group as modified (its version and lastModified move)."""


def member_edits(patch_op: PatchOp[Any], model: type[Resource[Any]]) -> list[MemberEdit] | None:
    """The PATCH as member edits when every operation adds or removes members by id.

    Run it within the provider's block, whose policy says how scim2 compares strings.
    """
    keys = _Keys(model)
    edits = [_member_edit(op, keys) for op in patch_op.operations or []]
    if not edits or any(edit is None for edit in edits):
        return None
    return [edit for edit in edits if edit is not None]


def named_ids(edits: Iterable[MemberEdit]) -> set[str]:
    """Every member id the edits name."""
    return {member.id for edit in edits for member in edit.members}


def replay(edits: list[MemberEdit], stored: dict[str, str | None]) -> Replayed:
    """Apply the edits, in order, to the named rows as scim2 applies them to the group.

    `stored` holds the named ids that are members now, with their stored display. scim2
    keeps members as a list: an add appends each entry unless an equal one is already
    there (a stored one never is: it carries `type` and `$ref`), a remove takes out every
    entry with the id, and storage.update then keeps one row per id, the last entry's.
    """
    entries = {member_id: [display] for member_id, display in stored.items()}
    appended: set[tuple[str, Any]] = set()  # what this PATCH appended and still holds
    modified = False
    for edit in edits:
        if edit.op == "add":
            before = set(appended)
            for member in edit.members:
                if member.same_as not in before:
                    entries.setdefault(member.id, []).append(member.display)
                    appended.add(member.same_as)
                    modified = True
            continue
        for member in edit.members:
            if entries.pop(member.id, None) is not None:
                appended = {key for key in appended if key[0] != member.id}
                modified = True
    members = {member_id: shown[-1] for member_id, shown in entries.items()}
    return Replayed(members=members, modified=modified)


def reply_shows_members(parameters: ResponseParameters[Any] | None) -> bool:
    """Whether the reply to a PATCH shows members; when in doubt, it does.

    scim2 answers 204 when neither `attributes` nor `excludedAttributes` is given
    (RFC 7644 §3.5.2 allows it), else 200 with the group as those parameters project it.
    """
    attributes = parameters.attributes if parameters else None
    excluded = parameters.excluded_attributes if parameters else None
    if not attributes and not excluded:
        return False
    if excluded and any(str(p).lower() == "members" for p in excluded):
        return False
    return not attributes or any("members" in str(p).lower() for p in attributes)


class _Keys:
    """scim2's comparison forms of a member's value and display (Unicode NFC; display is
    not case-exact)."""

    def __init__(self, model: type[Resource[Any]]) -> None:
        self.value = Path[model]("members.value").resolve()  # type: ignore[valid-type]
        self.display = Path[model]("members.display").resolve()  # type: ignore[valid-type]

    def member(self, member_id: Any, display: Any = None) -> Member | None:
        """The member, or None when scim2 would read its id otherwise than we match it."""
        if not isinstance(member_id, str) or self.value is None or self.display is None:
            return None
        if display is not None and not isinstance(display, str):
            return None
        try:
            # Ids match as stored; an id that is not in its comparison form (not NFC)
            # could match another, which only scim2 can tell.
            if self.value.comparable(member_id) != member_id:
                return None
            same_as = (member_id, self.display.comparable(display))
        except ValueError:
            return None
        return Member(member_id, display, same_as)


def _member_edit(op: PatchOperation[Any], keys: _Keys) -> MemberEdit | None:
    if op.op == PatchOperation.Op.add and _is_members(op.path):
        added = _added(op.value, keys)
        return MemberEdit("add", added) if added else None
    if op.op != PatchOperation.Op.remove:
        return None
    if _is_members(op.path):
        removed = _removed(op.value, keys)
        return MemberEdit("remove", removed) if removed else None
    member = keys.member(_filtered_id(op.path))
    if member is None or op.value is not None:
        return None
    return MemberEdit("remove", (member,))


def _is_members(path: Any) -> bool:
    return path is not None and str(path).lower() == "members"


def _added(value: Any, keys: _Keys) -> tuple[Member, ...] | None:
    """`[{"value": id, "display": name}, ...]` (Okta) or with `"$ref": null` (Entra)."""
    if not isinstance(value, list):
        return None
    added = []
    for entry in value:
        if not isinstance(entry, dict) or not set(entry) <= _ADDED_KEYS:
            return None
        if entry.get("$ref") is not None or not entry.get("value"):
            return None
        member = keys.member(entry["value"], entry.get("display"))
        if member is None:
            return None
        added.append(member)
    return tuple(added)


def _removed(value: Any, keys: _Keys) -> tuple[Member, ...] | None:
    """Entra's `[{"value": id}, ...]` (read_patch has dropped its `$ref`s)."""
    if not isinstance(value, list):
        return None
    removed = []
    for entry in value:
        if not (isinstance(entry, dict) and set(entry) == {"value"}):
            return None
        member = keys.member(entry["value"])
        if member is None:
            return None
        removed.append(member)
    return tuple(removed)


def _filtered_id(path: Any) -> str | None:
    """The id in `members[value eq "id"]` (Okta, Entra's aadOptscim062020), else None."""
    node = getattr(path, "ast", None) if path is not None else None
    if not isinstance(node, ValuePath) or node.sub_attr is not None:
        return None
    if node.attr_path.attr.lower() != "members" or node.attr_path.sub_attr or node.attr_path.uri:
        return None
    test = node.val_filter
    if not isinstance(test, Comparison) or test.op is not CompareOperator.eq:
        return None
    if test.attr_path.attr.lower() != "value" or test.attr_path.sub_attr or test.attr_path.uri:
        return None
    return test.value if isinstance(test.value, str) else None
