"""Dedupe by state, not by a time window: the Graph inbox and intake, on both engines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.changes import ChangeKind
from app.store import Database
from app.store import graph as graph_store
from app.store.graph import NewInboxEntry
from tests.unit.test_intake import T0, accept, change, open_jobs

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
GROUP, MEMBER = "0bc7d487-fd6f-41a0-8362-71ec81074f11", "4d147cc8-10cb-4158-ac52-90ee8ff9d846"


def store(db: Database, key: str, removed: bool, at: datetime) -> str | None:
    entry = NewInboxEntry(key, "sub-1", GROUP, MEMBER, removed, at)
    with db.begin() as conn:
        return graph_store.add_inbox_entry(conn, entry, at)


def test_an_exact_retry_is_dropped_however_late_and_a_repeat_after_a_join_is_kept(db):
    removed, added = "graph:n1:m:removed", "graph:n2:m:added"
    assert store(db, removed, True, NOW) == removed
    # Graph retried for hours, or a day later: nothing happened to the pair in between.
    assert store(db, removed, True, NOW + timedelta(hours=2)) is None
    assert store(db, removed, True, NOW + timedelta(days=1)) is None
    assert store(db, added, False, NOW + timedelta(days=1, minutes=1)) == added
    # The same notification body again, after the join: a new removal, with a key of its own.
    again = store(db, removed, True, NOW + timedelta(days=1, minutes=2))
    assert again is not None and again != removed and again.startswith(removed + "~")


def test_a_removal_of_someone_already_out_is_a_no_op_whoever_said_it_first(db, mapping):
    [first] = accept(db, mapping, change(ChangeKind.removed, at=T0))
    assert first.decision == "queued" and len(first.jobs) == 2
    # The same removal from another path (delta after the notification; SCIM after Okta).
    [second] = accept(db, mapping, change(ChangeKind.removed, at=T0 + timedelta(minutes=5)))
    assert second.decision == "already_out" and second.jobs == []
    assert "already out of okta group" in second.detail[0]
    assert len(open_jobs(db)) == 2


def test_remove_re_add_remove_is_two_removals_not_one(db, mapping):
    decisions = [
        accept(db, mapping, change(kind, at=T0 + timedelta(minutes=i)))[0]
        for i, kind in enumerate([ChangeKind.removed, ChangeKind.added, ChangeKind.removed])
    ]
    assert [d.decision for d in decisions] == ["queued", "granted", "queued"]
    # The join called the first detach off; the second removal queued its own.
    assert set(decisions[0].jobs).isdisjoint(decisions[2].jobs)
    assert len(open_jobs(db)) == 2


def test_a_removal_the_bridge_never_saw_a_join_for_is_still_queued(db, mapping):
    [d] = accept(db, mapping, change(ChangeKind.removed))
    assert d.decision == "queued"
