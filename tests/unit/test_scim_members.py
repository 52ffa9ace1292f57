"""Member PATCHes read as edits and replayed on the rows they name, held to scim2's patch.

scim2 applies a PATCH to the whole group in memory; `replay` applies it to the named rows
only. For any group and any sequence of Entra's and Okta's member adds and removes, both
must leave the named ids with the same members and displays, and agree on whether the
group was modified (which moves its version and lastModified).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scim2_models import Meta, PatchOp, ResponseParameters
from scim2_server.conditions import Conditions

from app.sources.scim.members import (
    MemberEdit,
    member_edits,
    named_ids,
    replay,
    reply_shows_members,
)
from app.sources.scim.service import BridgeScimService, make_provider
from tests.examples import examples

PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
SERVICE = BridgeScimService(make_provider())
MODEL = SERVICE.get_model(SERVICE.get_resource_type("Group"))
IDS = ("u1", "u2", "u3", "nobody")
DISPLAYS = (None, "Ann", "ANN", "B")  # display is not case-exact: Ann and ANN are one


def edits_of(patch_op: PatchOp[Any]) -> list[MemberEdit] | None:
    with SERVICE.provider:
        return member_edits(patch_op, MODEL)


def read(*operations: dict[str, Any]) -> PatchOp[Any]:
    body = json.dumps({"schemas": [PATCH], "Operations": list(operations)}).encode()
    with SERVICE.provider:
        return SERVICE.read_patch(SERVICE.get_resource_type("Group"), body, "application/scim+json")


def scim2_patch(members: dict[str, str | None], patch_op: PatchOp[Any]) -> tuple[Any, bool]:
    """scim2's own patch of a group with these members: (members after, modified)."""
    group = MODEL.model_validate(
        {
            "schemas": [GROUP],
            "displayName": "G",
            "members": [
                {"value": v, "display": d, "$ref": f"Users/{v}", "type": "User"}
                for v, d in members.items()
            ],
        }
    )
    group.id, group.meta = "g", Meta(resource_type="Group", version='W/"1"')
    with SERVICE.provider:
        patched = SERVICE.apply_patch(group, patch_op, Conditions())
    after = patched if patched is not None else group
    # What storage.update stores: one row per id, the last entry's display.
    return {str(m.value): m.display for m in after.members or []}, patched is not None


member = st.sampled_from(IDS)
added = st.lists(
    st.fixed_dictionaries(
        {"value": member},
        optional={"display": st.sampled_from(DISPLAYS[1:]), "$ref": st.none()},
    ),
    min_size=1,
    max_size=3,
)
operation = st.one_of(
    st.builds(lambda v: {"op": "add", "path": "members", "value": v}, added),
    st.builds(
        lambda ids: {"op": "Remove", "path": "members", "value": [{"value": i} for i in ids]},
        st.lists(member, min_size=1, max_size=3),
    ),
    st.builds(lambda i: {"op": "remove", "path": f'members[value eq "{i}"]'}, member),
)


@settings(max_examples=examples(300), deadline=None)
@given(
    st.dictionaries(st.sampled_from(IDS[:3]), st.sampled_from(DISPLAYS), max_size=3),
    st.lists(operation, min_size=1, max_size=4),
)
def test_replay_on_the_named_rows_is_scim2s_patch(
    members: dict[str, str | None], operations: list[dict[str, Any]]
) -> None:
    patch_op = read(*operations)
    edits = edits_of(patch_op)
    assert edits is not None, operations
    named = named_ids(edits)

    replayed = replay(edits, {u: d for u, d in members.items() if u in named})
    after, modified = scim2_patch(members, patch_op)

    assert replayed.modified == modified
    assert replayed.members == {u: d for u, d in after.items() if u in named}
    assert {u: d for u, d in after.items() if u not in named} == {
        u: d for u, d in members.items() if u not in named
    }


@pytest.mark.parametrize(
    "operation",
    [
        {"op": "Add", "path": "members", "value": [{"$ref": None, "value": "u1"}]},
        {"op": "add", "path": "members", "value": [{"value": "u1", "display": "Ann"}]},
        {"op": "Remove", "path": "members", "value": [{"$ref": None, "value": "u1"}]},
        {"op": "Remove", "path": "members", "value": [{"value": "u1", "display": "x"}]},
        {"op": "remove", "path": 'members[value eq "u1"]'},
        {"op": "REMOVE", "path": 'Members[VALUE EQ "u1"]'},
    ],
)
def test_entra_and_okta_member_operations_are_edits(operation: dict[str, Any]) -> None:
    edits = edits_of(read(operation))
    assert edits is not None and named_ids(edits) == {"u1"}


@pytest.mark.parametrize(
    "operation",
    [
        {"op": "replace", "path": "members", "value": [{"value": "u1"}]},
        {"op": "remove", "path": "members"},
        {"op": "add", "value": {"members": [{"value": "u1"}]}},
        {"op": "add", "path": "members", "value": []},
        {"op": "add", "path": "members", "value": {"value": "u1"}},
        {"op": "add", "path": "members", "value": [{"value": "u1", "type": "User"}]},
        {"op": "add", "path": "members", "value": [{"value": "u1", "$ref": "Users/u1"}]},
        {"op": "add", "path": "members", "value": [{"value": ""}]},
        {"op": "Remove", "path": "members", "value": []},
        {"op": "remove", "path": 'members[display eq "Ann"]'},
        {"op": "remove", "path": 'members[value eq "u1" or value eq "u2"]'},
        {"op": "remove", "path": 'members[value ne "u1"]'},
        {"op": "remove", "path": 'members[value eq "u1"].display'},
        {"op": "remove", "path": f'{GROUP}:members[value eq "u1"]'},
        {"op": "remove", "path": 'members[value eq "e\u0301"]'},  # not NFC: é may match é
        {"op": "add", "path": "members", "value": [{"value": "u1", "display": 7}]},
        {"op": "replace", "path": "displayName", "value": "G"},
    ],
)
def test_anything_else_is_left_to_scim2(operation: dict[str, Any]) -> None:
    assert edits_of(read(operation)) is None
    member = {"op": "remove", "path": 'members[value eq "u1"]'}
    assert edits_of(read(member, operation)) is None


@pytest.mark.parametrize(
    ("query", "shows"),
    [
        ({}, False),  # 204
        ({"excludedAttributes": "members"}, False),
        ({"excludedAttributes": "Members"}, False),
        ({"excludedAttributes": "displayName"}, True),
        ({"excludedAttributes": "members.display"}, True),
        ({"attributes": "displayName"}, False),
        ({"attributes": "members"}, True),
        ({"attributes": "members.value"}, True),
        ({"attributes": "displayName,members"}, True),
    ],
)
def test_the_reply_shows_members_only_when_asked_to(query: dict[str, str], shows: bool) -> None:
    with SERVICE.provider:
        parameters = SERVICE.read_response_parameters(SERVICE.get_resource_type("Group"), query)
    assert isinstance(parameters, ResponseParameters)
    assert reply_shows_members(parameters) is shows
