"""Graph notifications: parsing, @removed in both shapes, dedupe keys, clientState."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from pydantic import SecretStr

from app.errors import InputError
from app.graph.notifications import (
    entry_key,
    mismatched_client_states,
    notification_key,
    parse_delivery,
)
from tests.builders import load_fixture

STATE = "a-long-random-client-state"
GROUP = "0bc7d487-fd6f-41a0-8362-71ec81074f11"
LEFT = "4d147cc8-10cb-4158-ac52-90ee8ff9d846"
JOINED = "7a1e0d22-3a52-4b55-8e0c-0c0a7b1f9e31"
MEMBER_NO_GROUP = b'{"members@delta": [{"id": "u"}]}}]}'


def delivery(**changes: Any) -> dict[str, Any]:
    """The recorded notification with our clientState, and `changes` applied to it."""
    body = load_fixture("graph/notification-member-removed.json")
    body["value"][0]["clientState"] = STATE
    body["value"][0].update(changes)
    return body


def parse(body: Any) -> Any:
    return parse_delivery(json.dumps(body).encode())


def test_removed_as_a_string_and_joined_members():
    [note] = parse(delivery())
    assert note.group_id == GROUP
    assert [(m.member_id, m.removed, m.is_user()) for m in note.members] == [
        (LEFT, True, True),
        (JOINED, False, True),
    ]


def test_removed_as_an_object():
    body = delivery()
    body["value"][0]["resourceData"]["members@delta"] = [
        {"id": LEFT, "@odata.type": "#microsoft.graph.user", "@removed": {"reason": "deleted"}}
    ]
    [note] = parse(body)
    assert note.members[0].removed and note.members[0].is_user()


def test_nested_groups_are_not_users():
    body = delivery()
    body["value"][0]["resourceData"]["members@delta"] = [
        {"id": "g-nested", "@odata.type": "#microsoft.graph.group", "@removed": "deleted"}
    ]
    [note] = parse(body)
    assert not note.members[0].is_user()


def test_group_id_from_the_resource_when_resource_data_has_none():
    body = delivery()
    del body["value"][0]["resourceData"]["id"]
    assert parse(body)[0].group_id == GROUP


def test_many_notifications_in_one_post():
    body = delivery()
    second = copy.deepcopy(body["value"][0])
    second["resourceData"]["members@delta"] = [{"id": "someone-else"}]
    body["value"].append(second)
    notes = parse(body)
    assert len(notes) == 2 and notes[0].key != notes[1].key


def test_a_retry_has_the_same_keys_whatever_the_key_order():
    body = delivery()
    shuffled = {"value": [dict(reversed(list(body["value"][0].items())))]}
    [a], [b] = parse(body), parse(shuffled)
    assert a.key == b.key
    assert entry_key(a, a.members[0]) == entry_key(b, b.members[0])
    assert entry_key(a, a.members[0]).endswith(f":{LEFT}:removed")
    assert entry_key(a, a.members[1]).endswith(f":{JOINED}:added")


def test_the_key_uses_the_notification_id_when_there_is_one():
    [note] = parse(delivery(id="lsgTZMr9KwAAA"))
    assert note.key == "graph:lsgTZMr9KwAAA"


def test_the_client_state_is_not_part_of_the_key():
    [raw] = delivery()["value"]
    [note] = parse(delivery())
    other = {**raw, "clientState": "something else"}
    assert notification_key(note.body, other) == note.key


def test_a_different_expiry_is_a_different_notification():
    [a] = parse(delivery())
    [b] = parse(delivery(subscriptionExpirationDateTime="2026-12-21T11:00:00+00:00"))
    assert a.key != b.key


def test_client_state_is_checked_on_every_notification():
    body = delivery()
    body["value"].append({**body["value"][0], "clientState": "wrong"})
    body["value"].append({k: v for k, v in body["value"][0].items() if k != "clientState"})
    notes = parse(body)
    sub = body["value"][0]["subscriptionId"]
    assert mismatched_client_states(notes, SecretStr(STATE)) == [sub, sub]
    assert mismatched_client_states(notes[:1], SecretStr(STATE)) == []


def test_lifecycle_notifications_parse():
    body = load_fixture("graph/lifecycle-reauthorization-required.json")
    [note] = parse(body)
    assert note.body.lifecycleEvent == "reauthorizationRequired" and note.members == ()


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{", "malformed JSON"),
        (b"[]", "not a Graph notification collection"),
        (b'{"value": {}}', "value"),
        (b'{"value": [{"clientState": "x"}]}', "subscriptionId"),
        (b'{"value": [{"subscriptionId": "s", "resourceData": {"members@delta": {}}}]}', "list"),
        (b'{"value": [{"subscriptionId": "s", "resourceData": {"members@delta": [1]}}]}', "id"),
        (b'{"value": [{"subscriptionId": "s", "resourceData": ' + MEMBER_NO_GROUP, "no group id"),
    ],
)
def test_malformed_bodies_say_what_is_wrong(body: bytes, says: str):
    with pytest.raises(InputError) as caught:
        parse_delivery(body)
    assert caught.value.status == 400 and says in caught.value.message
