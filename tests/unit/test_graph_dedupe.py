"""Dedupe by state, not by a time window: the Graph inbox and intake, on both engines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.changes import ChangeKind, GroupRef, MembershipChange, UserRef
from app.store import Database
from app.store import graph as graph_store
from app.store.graph import NewInboxEntry
from tests.unit.test_intake import T0, accept, open_jobs

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
GROUP, MEMBER = "0bc7d487-fd6f-41a0-8362-71ec81074f11", "4d147cc8-10cb-4158-ac52-90ee8ff9d846"


FINANCE = GroupRef(id="g-fin", name="Finance")  # entra, by name: WS-FIN
ADELE = UserRef(id="e-adele", login="adele@acme.example")
_n = iter(range(10**6))


def change(kind: ChangeKind, *, at: datetime = T0) -> MembershipChange:
    """An Entra change of Adele's membership in Finance."""
    return MembershipChange(
        provider="entra", event_id=f"graph-{next(_n)}", occurred_at=at, change=kind,
        user=ADELE, group=FINANCE,
    )  # fmt: skip


def store(db: Database, key: str, removed: bool, at: datetime) -> str | None:
    entry = NewInboxEntry(key, "sub-1", GROUP, MEMBER, removed, at)
    with db.begin() as conn:
        return graph_store.add_inbox_entry(conn, entry, at)


def test_an_exact_retry_is_dropped_however_late_and_a_repeat_after_a_join_is_kept(db):
    removed, added = "graph:n1:m:removed", "graph:n2:m:added"
    assert store(db, removed, True, NOW) == removed
    # Graph retried for hours (it retries for up to 4): nothing happened to the pair between.
    assert store(db, removed, True, NOW + timedelta(hours=2)) is None
    # A day later it is no retry: a join the bridge never heard may lie between. Stored as a
    # new removal; intake decides it on what it knows (already_out, in its history).
    late = store(db, removed, True, NOW + timedelta(days=1))
    assert late is not None and late.startswith(removed + "~")
    assert store(db, added, False, NOW + timedelta(days=1, minutes=1)) == added
    # The same notification body again, after the join: a new removal, with a key of its own.
    again = store(db, removed, True, NOW + timedelta(days=1, minutes=2))
    assert again is not None and again != removed and again.startswith(removed + "~")


def test_a_removal_of_someone_already_out_is_a_no_op_whoever_said_it_first(db, mapping):
    [first] = accept(db, mapping, change(ChangeKind.removed, at=T0))
    assert first.decision == "queued" and len(first.jobs) == 1
    # The same removal from another path (delta after the notification; SCIM after Okta).
    [second] = accept(db, mapping, change(ChangeKind.removed, at=T0 + timedelta(minutes=5)))
    assert second.decision == "already_out" and second.jobs == []
    assert "already out of entra group" in second.detail[0]
    assert len(open_jobs(db)) == 1


def test_remove_re_add_remove_is_two_removals_not_one(db, mapping):
    decisions = [
        accept(db, mapping, change(kind, at=T0 + timedelta(minutes=i)))[0]
        for i, kind in enumerate([ChangeKind.removed, ChangeKind.added, ChangeKind.removed])
    ]
    assert [d.decision for d in decisions] == ["queued", "granted", "queued"]
    # The join called the first detach off; the second removal queued its own.
    assert set(decisions[0].jobs).isdisjoint(decisions[2].jobs)
    assert len(open_jobs(db)) == 1


def test_a_removal_the_bridge_never_saw_a_join_for_is_still_queued(db, mapping):
    [d] = accept(db, mapping, change(ChangeKind.removed))
    assert d.decision == "queued"


def test_a_join_older_than_an_already_out_removal_arrives_late_and_is_superseded(db, mapping):
    """Removed at T0 and (again, heard by another path) at T10; a join at T5 heard last:
    the T10 removal is what is known, so the late join changes nothing."""
    [first] = accept(db, mapping, change(ChangeKind.removed, at=T0))
    [again] = accept(db, mapping, change(ChangeKind.removed, at=T0 + timedelta(minutes=10)))
    [late] = accept(db, mapping, change(ChangeKind.added, at=T0 + timedelta(minutes=5)))
    assert (first.decision, again.decision, late.decision) == (
        "queued",
        "already_out",
        "superseded",
    )
    assert len(open_jobs(db)) == 1  # the first detach still goes


def test_okta_copies_need_no_state_rule_the_uuid_dedupes_them(db, mapping):
    """Okta's hook and System Log share the event uuid: a second removal with its own uuid
    is a real one (a join may have been missed) and is queued; the detach is idempotent."""
    from tests.unit.test_intake import change as okta_change

    [first] = accept(db, mapping, okta_change(ChangeKind.removed, at=T0))
    [second] = accept(db, mapping, okta_change(ChangeKind.removed, at=T0 + timedelta(minutes=5)))
    assert (first.decision, second.decision) == ("queued", "queued")
