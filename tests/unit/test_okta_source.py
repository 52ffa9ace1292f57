"""Okta event hook payloads -> MembershipChanges."""

from __future__ import annotations

import json

import pytest

from app.changes import ChangeKind, IgnoredEvent, MembershipChange
from app.errors import InputError
from app.sources.okta import parse_envelope, to_changes
from tests.builders import load_fixture, okta_delivery, okta_event


def parse(payload: object) -> list[MembershipChange | IgnoredEvent]:
    return to_changes(parse_envelope(json.dumps(payload).encode()))


def test_the_recorded_removal_becomes_one_change():
    [change] = parse(load_fixture("okta/event-hook-membership-remove.json"))
    assert isinstance(change, MembershipChange)
    assert change.change is ChangeKind.removed
    assert change.event_id == "d14117f9-5d8c-11ea-a9cb-1f2fbd3b03f7"
    assert change.user.id == "00uptu0jj9V91p5QM0h7"
    assert change.user.login == change.user.email == "jane@acme.example"
    assert change.group is not None
    assert (change.group.id, change.group.name) == ("00g8mo0l5wuTxmoIC0h7", "eng-oncall")
    assert change.occurred_at.isoformat() == "2026-03-03T20:23:17.573000+00:00"


def test_the_recorded_batch_picks_targets_by_type_and_ignores_the_rest():
    items = parse(load_fixture("okta/event-hook-batch.json"))
    kinds = [i.change.value if isinstance(i, MembershipChange) else "ignored" for i in items]
    assert kinds == ["removed", "added", "ignored", "ignored", "user_deactivated"]
    first = items[0]
    assert isinstance(first, MembershipChange)
    assert first.user.login == "bob@acme.example"  # the User target came second
    assert first.group is not None and first.group.id == "00g9fin0l5wuTxmoIC0h"
    failed, unrelated = items[2], items[3]
    assert isinstance(failed, IgnoredEvent) and "FAILURE" in failed.reason
    assert isinstance(unrelated, IgnoredEvent) and "user.session.start" in unrelated.reason
    deactivated = items[4]
    assert isinstance(deactivated, MembershipChange) and deactivated.group is None


@pytest.mark.parametrize("event_type", ["user.lifecycle.activate", "user.lifecycle.reactivate"])
def test_activation_is_a_reactivation_with_no_group(event_type: str):
    [change] = parse(okta_delivery(okta_event(event_type, group_id=None)))
    assert isinstance(change, MembershipChange)
    assert change.change is ChangeKind.user_reactivated and change.group is None


def test_a_login_that_is_not_an_address_is_no_email():
    event = okta_event("group.user_membership.remove")
    event["target"][0]["alternateId"] = "jdoe"
    [change] = parse(okta_delivery(event))
    assert isinstance(change, MembershipChange)
    assert change.user.login == "jdoe" and change.user.email is None


def test_a_membership_event_without_a_group_target_is_ignored_not_refused():
    event = okta_event("group.user_membership.remove", group_id=None)
    [item] = parse(okta_delivery(event))
    assert isinstance(item, IgnoredEvent) and "UserGroup" in item.reason


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty"),
        (b"{nope", "malformed JSON at line 1 column 2"),
        (b"[]", "not an Okta event hook delivery"),
        (b'{"eventType": "com.okta.event_hook"}', "data: Field required"),
        (b'{"eventType": "com.okta.event_hook", "data": {"events": [7]}}', "data.events.0"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_bad_bodies_are_refused_with_a_reason(body: bytes, message: str):
    with pytest.raises(InputError) as caught:
        parse_envelope(body)
    assert caught.value.status == 400
    assert message in caught.value.message


def test_a_malformed_event_is_recorded_and_the_rest_of_the_batch_goes_on():
    good = okta_event("group.user_membership.remove")
    no_zone = okta_event("group.user_membership.remove")
    no_zone["published"] = "2026-03-03T20:23:17"
    empty_id = okta_event("group.user_membership.remove")
    empty_id["target"][0]["id"] = ""
    no_uuid = {"eventType": "group.user_membership.remove"}
    items = parse(okta_delivery(no_zone, good, empty_id, no_uuid))
    assert isinstance(items[1], MembershipChange)
    bad = [items[0], items[2], items[3]]
    assert all(isinstance(i, IgnoredEvent) and "malformed event" in i.reason for i in bad)
    assert "published" in bad[0].reason and "target" in bad[1].reason  # type: ignore[union-attr]
    assert bad[2].event_id.startswith("malformed:")
