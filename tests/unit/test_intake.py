"""Intake rules against a real SQLite database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.changes import ChangeKind, GroupRef, IgnoredEvent, MembershipChange, UserRef
from app.intake import Decision, accept_changes
from app.mapping import Mapping
from app.store import Database
from app.store import events as event_store
from app.store import jobs as job_store

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
T0 = datetime(2026, 11, 27, 11, 0, tzinfo=UTC)
ENG = GroupRef(id="00g8mo0l5wuTxmoIC0h7", name="eng-oncall")
FIN = GroupRef(id="00g9fin0l5wuTxmoIC0h", name="finance")
PLATFORM = GroupRef(id="00gplatform000000000", name="platform")
UNMAPPED = GroupRef(id="00gnothing", name="book-club")
JANE = UserRef(id="00ujane", login="jane@acme.example", email="jane@acme.example")

_seq = iter(range(1, 10_000))


def change(
    kind: ChangeKind,
    group: GroupRef | None = ENG,
    *,
    at: datetime = T0,
    event_id: str | None = None,
    user: UserRef = JANE,
    **extra: object,
) -> MembershipChange:
    return MembershipChange(
        provider="okta",
        event_id=event_id or f"ev-{next(_seq)}",
        occurred_at=at,
        change=kind,
        user=user,
        group=group,
        **extra,  # type: ignore[arg-type]
    )


def accept(db: Database, mapping: Mapping, *items, now: datetime = NOW) -> list[Decision]:
    with db.begin() as conn:
        return accept_changes(conn, mapping, items, now=now)


def open_jobs(db: Database) -> list[tuple[str, str, str]]:
    with db.begin() as conn:
        ids = job_store.select_job_ids(conn, states=[job_store.PENDING])
        rows = job_store.get_jobs(conn, ids)
    return sorted((r["cor_user_id"], r["workspace"], r["source"]) for r in rows)


def test_removal_queues_one_job_per_workspace(db, mapping):
    [d] = accept(db, mapping, change(ChangeKind.removed))
    assert d.decision == "queued"
    assert len(d.jobs) == 2
    assert open_jobs(db) == [
        ("jane@acme.example", "WS-ENG", "OKTA"),
        ("jane@acme.example", "WS-ONCALL", "OKTA"),
    ]


def test_the_same_event_twice_is_one_removal(db, mapping):
    first = change(ChangeKind.removed, event_id="same")
    accept(db, mapping, first)
    [again] = accept(db, mapping, first)
    assert again.decision == "duplicate"
    assert len(open_jobs(db)) == 2


def test_duplicates_within_one_batch_count_once(db, mapping):
    one = change(ChangeKind.removed, event_id="same")
    decisions = accept(db, mapping, one, one)
    assert [d.decision for d in decisions] == ["queued", "duplicate"]


def test_unmapped_group_is_recorded_not_sent(db, mapping):
    [d] = accept(db, mapping, change(ChangeKind.removed, UNMAPPED))
    assert d.decision == "unmapped"
    assert "book-club" in d.detail[0]
    assert open_jobs(db) == []
    with db.begin() as conn:
        [event] = event_store.list_user_events(conn, "jane@acme.example")
    assert event["decision"] == "unmapped"


def test_a_later_add_cancels_the_pending_removal(db, mapping):
    removal, readd = (
        change(ChangeKind.removed, at=T0),
        change(ChangeKind.added, at=T0 + timedelta(seconds=5)),
    )
    accept(db, mapping, removal)
    [d] = accept(db, mapping, readd)
    assert d.decision == "granted"
    assert any(line.startswith("cancelled job") for line in d.detail)
    assert open_jobs(db) == []


def test_remove_then_add_in_one_batch_sends_nothing_whatever_the_arrival_order(db, mapping):
    readd = change(ChangeKind.added, at=T0 + timedelta(seconds=5))
    removal = change(ChangeKind.removed, at=T0)
    accept(db, mapping, readd, removal)  # arrival order reversed; event time decides
    assert open_jobs(db) == []


def test_an_older_removal_arriving_after_a_newer_add_is_superseded(db, mapping):
    accept(db, mapping, change(ChangeKind.added, at=T0 + timedelta(minutes=1)))
    [d] = accept(db, mapping, change(ChangeKind.removed, at=T0))
    assert d.decision == "superseded"
    assert open_jobs(db) == []


def test_an_older_add_arriving_after_a_newer_removal_does_not_cancel_it(db, mapping):
    accept(db, mapping, change(ChangeKind.removed, at=T0 + timedelta(minutes=1)))
    [d] = accept(db, mapping, change(ChangeKind.added, at=T0))
    assert d.decision == "superseded"
    assert len(open_jobs(db)) == 2


def test_workspace_still_granted_by_another_group_is_kept(db, mapping):
    accept(db, mapping, change(ChangeKind.added, PLATFORM), change(ChangeKind.added, ENG))
    [d] = accept(db, mapping, change(ChangeKind.removed, ENG, at=T0 + timedelta(minutes=1)))
    assert d.decision == "queued"
    assert any("kept WS-ENG: still granted by okta group 00gplatform" in x for x in d.detail)
    assert open_jobs(db) == [("jane@acme.example", "WS-ONCALL", "OKTA")]


def test_everything_kept_is_decided_as_kept(db, mapping):
    accept(db, mapping, change(ChangeKind.added, ENG))
    [d] = accept(db, mapping, change(ChangeKind.removed, PLATFORM, at=T0 + timedelta(minutes=1)))
    assert d.decision == "kept"
    assert open_jobs(db) == []


def test_removal_from_the_last_granting_group_detaches(db, mapping):
    accept(db, mapping, change(ChangeKind.added, PLATFORM), change(ChangeKind.added, ENG))
    later = T0 + timedelta(minutes=1)
    accept(db, mapping, change(ChangeKind.removed, PLATFORM, at=later))
    accept(db, mapping, change(ChangeKind.removed, ENG, at=later + timedelta(seconds=1)))
    assert [w for _, w, _ in open_jobs(db)] == ["WS-ENG", "WS-ONCALL"]


def test_deactivation_removes_every_known_mapped_group(db, mapping):
    accept(db, mapping, change(ChangeKind.added, ENG), change(ChangeKind.added, FIN))
    accept(db, mapping, change(ChangeKind.added, UNMAPPED))
    [d] = accept(
        db, mapping, change(ChangeKind.user_deactivated, None, at=T0 + timedelta(minutes=1))
    )
    assert d.decision == "queued"
    assert [w for _, w, _ in open_jobs(db)] == ["WS-ENG", "WS-FIN", "WS-ONCALL"]


def test_deactivation_of_a_user_in_no_known_group_says_so(db, mapping):
    [d] = accept(db, mapping, change(ChangeKind.user_deactivated, None))
    assert d.decision == "no_known_groups"
    assert "no group" in d.detail[0]
    assert open_jobs(db) == []


def test_reactivation_gives_back_the_groups_the_deactivation_took(db, mapping):
    """Okta keeps a deactivated user's groups: after deactivate and reactivate, leaving
    eng-oncall must not take WS-ENG, which platform still grants."""
    accept(db, mapping, change(ChangeKind.added, ENG), change(ChangeKind.added, PLATFORM))
    accept(db, mapping, change(ChangeKind.removed, FIN, at=T0 + timedelta(minutes=1)))
    accept(db, mapping, change(ChangeKind.user_deactivated, None, at=T0 + timedelta(minutes=2)))
    assert [w for _, w, _ in open_jobs(db)] == ["WS-ENG", "WS-FIN", "WS-ONCALL"]

    [d] = accept(db, mapping, change(ChangeKind.user_reactivated, None, at=T0 + timedelta(3)))
    assert d.decision == "granted"
    assert d.detail[0] == "rejoined okta group 00g8mo0l5wuTxmoIC0h7 (eng-oncall)"
    assert sum(line.startswith("cancelled job") for line in d.detail) == 2  # ENG and ONCALL
    assert [w for _, w, _ in open_jobs(db)] == ["WS-FIN"]  # left before: not given back

    [d] = accept(db, mapping, change(ChangeKind.removed, ENG, at=T0 + timedelta(4)))
    assert any("WS-ENG" in line and "platform" in line for line in d.detail), d.detail
    assert [w for _, w, _ in open_jobs(db)] == ["WS-FIN", "WS-ONCALL"]


def test_reactivation_without_a_known_deactivation_rejoins_nothing(db, mapping):
    accept(db, mapping, change(ChangeKind.added, ENG))
    accept(db, mapping, change(ChangeKind.removed, ENG, at=T0 + timedelta(minutes=1)))
    [d] = accept(db, mapping, change(ChangeKind.user_reactivated, None, at=T0 + timedelta(2)))
    assert d.decision == "no_known_groups"
    # A deactivation that happened after the reactivation (delivered late) is not undone.
    late = T0 + timedelta(days=5)
    accept(db, mapping, change(ChangeKind.added, FIN, at=T0 + timedelta(days=4)))
    accept(db, mapping, change(ChangeKind.user_deactivated, None, at=late))
    [d] = accept(db, mapping, change(ChangeKind.user_reactivated, None, at=T0 + timedelta(3)))
    assert d.decision == "no_known_groups"
    assert [w for _, w, _ in open_jobs(db)] == ["WS-ENG", "WS-FIN", "WS-ONCALL"]


def test_a_second_removal_joins_the_pending_job(db, mapping):
    accept(db, mapping, change(ChangeKind.removed, PLATFORM))
    [d] = accept(db, mapping, change(ChangeKind.removed, ENG, at=T0 + timedelta(seconds=1)))
    assert any(line.startswith("joined pending job") for line in d.detail)
    assert [w for _, w, _ in open_jobs(db)] == ["WS-ENG", "WS-ONCALL"]


def test_explicit_workspaces_skip_the_mapping(db, mapping):
    op = change(ChangeKind.removed, None, workspaces=("WS-OPS",), cor_user_id="jane@acme.example")
    [d] = accept(db, mapping, op)
    assert d.decision == "queued"
    assert open_jobs(db) == [("jane@acme.example", "WS-OPS", "OKTA")]


def test_ignored_events_are_recorded_once(db, mapping):
    ignored = IgnoredEvent(
        provider="okta", event_id="x1", occurred_at=T0, kind="user.session.start", reason="nope"
    )
    assert [d.decision for d in accept(db, mapping, ignored, ignored)] == [
        "ignored",
        "duplicate",
    ]
    with db.begin() as conn:
        assert event_store.count_events(conn) == {"ignored": 1}


def test_ignored_events_about_a_user_show_in_their_history(db, mapping):
    failed = IgnoredEvent(
        provider="okta",
        event_id="f1",
        occurred_at=T0,
        kind="group.user_membership.remove",
        reason="outcome is FAILURE, not SUCCESS",
        user=JANE,
        group=ENG,
    )
    accept(db, mapping, failed)
    with db.begin() as conn:
        [event] = event_store.list_user_events(conn, "jane@acme.example")
    assert (event["decision"], event["group_id"]) == ("ignored", ENG.id)
    assert event["detail"] == ["outcome is FAILURE, not SUCCESS"]


def test_a_user_the_template_cannot_name_is_recorded_unresolved(db, mapping):
    nameless = UserRef(id="00unologin")
    [d] = accept(db, mapping, change(ChangeKind.removed, user=nameless))
    assert d.decision == "unresolved"
    assert "login" in d.detail[0]
    assert open_jobs(db) == []


def test_a_login_that_would_steer_the_detach_is_unresolved_and_the_batch_goes_on(db, mapping):
    dots = [UserRef(id=f"00u{n}", login=login) for n, login in enumerate((".", ".."))]
    decisions = accept(
        db, mapping, *(change(ChangeKind.removed, user=u) for u in dots), change(ChangeKind.removed)
    )
    assert [d.decision for d in decisions] == ["unresolved", "unresolved", "queued"]
    assert decisions[1].detail == [
        "no COR user id: '..' is not a usable identifier in a URL path (empty or a dot segment) "
        "(user_id template '{login}' for okta)"
    ]
    assert {user for user, _, _ in open_jobs(db)} == {"jane@acme.example"}


def test_decisions_come_back_in_input_order(db, mapping):
    late = change(ChangeKind.removed, FIN, at=T0 + timedelta(minutes=5), event_id="late")
    early = change(ChangeKind.removed, ENG, at=T0, event_id="early")
    assert [d.event_id for d in accept(db, mapping, late, early)] == ["late", "early"]


def test_nothing_is_kept_when_the_transaction_fails(db, mapping):
    try:
        with db.begin() as conn:
            accept_changes(conn, mapping, [change(ChangeKind.removed)], now=NOW)
            raise RuntimeError("crash before commit")
    except RuntimeError:
        pass
    assert open_jobs(db) == []
    with db.begin() as conn:
        assert event_store.count_events(conn) == {}


def test_a_renamed_group_still_takes_away_what_it_granted(db, mapping):
    old, renamed = GroupRef(id="scim-g1", name="Finance"), GroupRef(id="scim-g1", name="Fin-2026")
    entra = UserRef(id="u1", login="jane@acme.example")
    join = change(ChangeKind.added, old, user=entra)
    leave = change(ChangeKind.removed, renamed, user=entra, at=T0 + timedelta(minutes=1))
    accept(db, mapping, join.model_copy(update={"provider": "entra"}))
    [d] = accept(db, mapping, leave.model_copy(update={"provider": "entra"}))
    assert d.decision == "queued"
    assert open_jobs(db) == [("jane@acme.example", "WS-FIN", "MICROSOFT_DYNAMICS")]


def test_the_idps_own_list_of_current_groups_decides_what_is_still_granted(db, mapping):
    # The bridge never saw Jane join platform, but the IdP says she is in it: WS-ENG stays.
    [kept] = accept(db, mapping, change(ChangeKind.removed, ENG, member_of=(PLATFORM, ENG)))
    assert kept.detail[0] == (
        "kept WS-ENG: still granted by okta group 00gplatform000000000 (platform) (asked Okta)"
    )
    assert open_jobs(db) == [("jane@acme.example", "WS-ONCALL", "OKTA")]
    # The bridge saw her join platform, but the IdP says she is in no group now: both go.
    mia = UserRef(id="00umia", login="mia@acme.example")
    accept(db, mapping, change(ChangeKind.added, PLATFORM, user=mia))
    [gone] = accept(db, mapping, change(ChangeKind.removed, ENG, user=mia, member_of=()))
    assert gone.decision == "queued" and len(gone.jobs) == 2


def test_a_late_add_that_happened_earlier_does_not_cancel_a_newer_removal(db, mapping):
    accept(db, mapping, change(ChangeKind.added, ENG, at=T0))
    deactivated = change(ChangeKind.user_deactivated, None, at=T0 + timedelta(minutes=10))
    accept(db, mapping, deactivated)
    # Added to platform at t+5, delivered after the deactivation at t+10.
    [d] = accept(db, mapping, change(ChangeKind.added, PLATFORM, at=T0 + timedelta(minutes=5)))
    assert any("its removal is newer" in line for line in d.detail)
    assert [w for _, w, _ in open_jobs(db)] == ["WS-ENG", "WS-ONCALL"]
