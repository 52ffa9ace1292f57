"""The Okta parser's short way (`_plain_change`) gives what the whole way gives, or nothing.

`parse_event` takes a well-formed membership change without building an OktaEvent first; a
property test holds it to the whole parse (OktaEvent, then `_to_change`, or the IgnoredEvent
that says why) on events drawn near and across every check the whole parse makes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from app.changes import IgnoredEvent, MembershipChange
from app.okta.events import KINDS, _plain_change, parse_event
from tests.examples import examples

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def whole_way(raw: dict[str, Any]) -> MembershipChange | IgnoredEvent:
    """parse_event with the short way closed."""
    import app.okta.events as events

    short = events._plain_change
    events._plain_change = lambda raw: None  # type: ignore[assignment]
    try:
        return parse_event(raw, NOW)
    finally:
        events._plain_change = short


ODD = st.one_of(st.none(), st.integers(), st.lists(st.text(max_size=3), max_size=2), st.just({}))
TEXT = st.one_of(st.text(max_size=8), st.sampled_from(["", "x" * 201, "a\x00b", "jane@acme"]))
TIMES = ["2026-11-30T10:00:00.000Z", "2026-11-30T10:00:00", "0001-01-01T00:00:00+14:00", "nope"]


def maybe(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a value of its kind, sometimes an odd one (the key may also be left out)."""
    return st.one_of(values, values, ODD)


def some_of(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A dict with any of these keys."""
    return st.fixed_dictionaries({}, optional={k: maybe(v) for k, v in fields.items()})


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Nine draws in ten from `good`, the rest from `bad` or anything odd."""
    return st.integers(0, 9).flatmap(lambda i: good if i < 9 else st.one_of(bad, ODD))


targets = some_of(
    id=st.one_of(TEXT, st.just("00u1"), st.just("x" * 2000)),
    type=st.sampled_from(["User", "UserGroup", "AppInstance"]),
    alternateId=st.one_of(st.none(), TEXT),
    displayName=st.one_of(st.none(), TEXT),
)
good_target = st.fixed_dictionaries(
    {
        "id": mostly(st.sampled_from(["00u1", "00g1"]), st.sampled_from(["", "x" * 2000])),
        "type": mostly(st.sampled_from(["User", "UserGroup"]), st.just("AppInstance")),
    },
    optional={
        "alternateId": st.one_of(st.none(), st.sampled_from(["jane@acme.example", "jane"])),
        "displayName": st.one_of(st.none(), TEXT),
        "detailEntry": ODD,
    },
)
# Near the short way: every field mostly as Okta sends it, any of them sometimes not.
near = st.fixed_dictionaries(
    {
        "uuid": mostly(st.just("e-1"), TEXT),
        "published": mostly(st.just(TIMES[0]), st.sampled_from(TIMES)),
        "eventType": mostly(st.sampled_from(list(KINDS)), st.just("user.session.start")),
        "outcome": mostly(st.just({"result": "SUCCESS"}), some_of(result=st.just("FAILURE"))),
        "target": mostly(st.lists(good_target, min_size=1, max_size=3), st.lists(targets)),
    },
    optional={"displayMessage": TEXT},
)
# Anywhere: any field missing or of any kind.
anywhere = some_of(
    uuid=st.one_of(TEXT, st.just("e-1")),
    published=st.sampled_from(TIMES),
    eventType=st.sampled_from([*KINDS, "user.session.start"]),
    outcome=some_of(result=st.sampled_from(["SUCCESS", "FAILURE"])),
    target=st.lists(targets, max_size=3),
)
raw_events = st.integers(0, 3).flatmap(lambda i: near if i < 3 else anywhere)


@settings(max_examples=examples(400), deadline=None)
@given(raw_events)
def test_the_short_way_gives_what_the_whole_way_gives(raw: dict[str, Any]):
    whole = whole_way(raw)
    short = _plain_change(raw)
    if short is not None:
        assert isinstance(whole, MembershipChange)
        assert short == whole
    assert parse_event(raw, NOW) == whole


def test_a_well_formed_removal_takes_the_short_way():
    raw = {
        "uuid": "e-1",
        "published": "2026-11-30T10:00:00.000Z",
        "eventType": "group.user_membership.remove",
        "outcome": {"result": "SUCCESS"},
        "target": [
            {"id": "00g1", "type": "UserGroup", "displayName": "eng"},
            {"id": "00u1", "type": "User", "alternateId": "jane@acme.example"},
        ],
    }
    short = _plain_change(raw)
    assert short is not None and short == whole_way(raw)
    assert short.user.email == "jane@acme.example" and short.group is not None
    assert short.group.name == "eng"
