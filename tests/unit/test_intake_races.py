"""The worker claims and settles jobs without intake's turn: a stored job intake read as
pending may be running, or finished, by the time the plan is applied (app/store/intake.py).
Here the worker's move is made between intake's read and its write (in the same transaction,
through the real store), on both engines; the decision and the history say what happened."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection

import app.intake.accept as accept
from app.changes import ChangeKind, GroupRef, MembershipChange, UserRef
from app.intake import Decision, accept_changes
from app.mapping import Mapping
from app.store import Database
from app.store import events as event_store
from app.store import jobs as job_store
from app.store.jobs import Attempt

T0 = datetime(2026, 11, 27, 11, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
JANE = UserRef(id="00ujane", login="jane@acme.example")
FINANCE = GroupRef(id="00g9fin0l5wuTxmoIC0h", name="finance")  # WS-FIN
KEY = ("jane@acme.example", "OKTA", "WS-FIN")


def change(kind: ChangeKind, event_id: str, minutes: int) -> MembershipChange:
    return MembershipChange(
        provider="okta",
        event_id=event_id,
        occurred_at=T0 + timedelta(minutes=minutes),
        change=kind,
        user=JANE,
        group=FINANCE,
    )


def accept_with(
    monkeypatch: pytest.MonkeyPatch,
    db: Database,
    mapping: Mapping,
    item: MembershipChange,
    meanwhile: Callable[[Connection], Any],
) -> Decision:
    """Intake of `item`, with `meanwhile` done right after intake's read."""
    read = accept.read_snapshot

    def read_then_move(conn: Connection, *args: Any) -> Any:
        snapshot = read(conn, *args)
        meanwhile(conn)
        return snapshot

    monkeypatch.setattr(accept, "read_snapshot", read_then_move)
    with db.begin() as conn:
        [decision] = accept_changes(conn, mapping, [item], now=NOW)
    monkeypatch.setattr(accept, "read_snapshot", read)
    return decision


def queue_one(db: Database, mapping: Mapping) -> int:
    with db.begin() as conn:
        [queued] = accept_changes(conn, mapping, [change(ChangeKind.removed, "rm-0", 0)], now=NOW)
    [job_id] = queued.jobs
    return job_id


def claim(conn: Connection) -> list[int]:
    lease = timedelta(minutes=2)
    return [j.id for j in job_store.claim(conn, now=NOW, limit=10, worker_id="w", lease=lease)]


def states(db: Database) -> list[tuple[int, str]]:
    with db.begin() as conn:
        return sorted((r["id"], r["state"]) for r in job_store.get_jobs(conn, [*range(1, 20)]))


def history(db: Database, event_id: str) -> list[str]:
    with db.begin() as conn:
        events = event_store.list_user_events(conn, "jane@acme.example")
    [found] = [e for e in events if e["source_event_id"] == event_id]
    return list(found["detail"])


def test_a_detach_that_became_pending_meanwhile_is_joined(monkeypatch, db, mapping):
    """Should a detach become pending between intake's read and its write (the worker takes
    intake's turn to do so, but nothing else enforces it), the new job joins it (one pending
    job per detach) and the decision says so."""
    twin: list[int] = []

    def pending_meanwhile(conn: Connection) -> None:
        [(job_id, _)] = job_store.enqueue(conn, [_new_job(conn)])
        twin.append(job_id)

    decision = accept_with(
        monkeypatch, db, mapping, change(ChangeKind.removed, "rm-1", 1), pending_meanwhile
    )
    line = f"joined pending job {twin[0]}: detach WS-FIN from jane@acme.example"
    assert (decision.decision, decision.detail, decision.jobs) == ("queued", [line], twin)
    assert states(db) == [(twin[0], "pending")]
    assert history(db, "rm-1") == [line]


def test_a_removal_does_not_join_a_job_the_worker_claimed_meanwhile(monkeypatch, db, mapping):
    """Intake read the job as pending; the worker claimed it before the plan was applied.
    Joining would hang this removal on a try already under way (and lose it if that try was
    the last): it gets a pending job of its own."""
    stored = queue_one(db, mapping)
    decision = accept_with(
        monkeypatch, db, mapping, change(ChangeKind.removed, "rm-1", 1), lambda c: claim(c)
    )
    [new] = decision.jobs
    assert new != stored
    assert decision.detail == [f"queued job {new}: detach WS-FIN from jane@acme.example"]
    assert states(db) == [(stored, "running"), (new, "pending")]
    assert history(db, "rm-1") == decision.detail


def test_a_re_grant_asks_a_job_claimed_meanwhile_not_to_be_retried(monkeypatch, db, mapping):
    stored = queue_one(db, mapping)
    regrant = change(ChangeKind.added, "add-1", 1)
    decision = accept_with(monkeypatch, db, mapping, regrant, lambda c: claim(c))
    line = f"job {stored} (WS-FIN) is being delivered; it will not be retried"
    assert decision.detail == [line]
    assert history(db, "add-1") == [line]
    with db.begin() as conn:
        assert job_store.called_off(conn, [stored]) == {
            stored: "re-granted by okta group 00g9fin0l5wuTxmoIC0h (finance) (event add-1)"
        }


def test_a_re_grant_says_nothing_of_a_job_delivered_meanwhile(monkeypatch, db, mapping):
    stored = queue_one(db, mapping)

    def delivered(conn: Connection) -> None:
        assert claim(conn) == [stored]
        job_store.complete(conn, [stored], "w", Attempt(at=NOW, duration_ms=5, status=200), [])

    regrant = change(ChangeKind.added, "add-1", 1)
    decision = accept_with(monkeypatch, db, mapping, regrant, delivered)
    assert decision.detail == ["member of okta group 00g9fin0l5wuTxmoIC0h (finance); grants WS-FIN"]
    assert states(db) == [(stored, "done")]


def test_a_re_grant_cancels_a_job_still_pending(db, mapping):
    stored = queue_one(db, mapping)
    with db.begin() as conn:
        [d] = accept_changes(conn, mapping, [change(ChangeKind.added, "add-1", 1)], now=NOW)
    reason = "re-granted by okta group 00g9fin0l5wuTxmoIC0h (finance) (event add-1)"
    assert d.detail == [f"cancelled job {stored} (WS-FIN): {reason}"]
    assert history(db, "add-1") == d.detail
    assert states(db) == [(stored, "cancelled")]


def _new_job(conn: Connection, event_id: str = "rm-0") -> job_store.NewJob:
    [event] = event_store.record_events(
        conn, [event_store.NewEvent("okta", event_id, "removed", T0, NOW)]
    )
    return job_store.NewJob(*KEY, "okta", event, NOW, NOW)


def test_a_detach_whose_pending_twin_is_claimed_during_the_join_is_written(monkeypatch, db):
    """The insert met a pending twin, and the worker claimed it before the look-up that
    joins it (PostgreSQL, read committed; here in one transaction on both engines): the
    detach is written as a job of its own, not failed."""
    import app.store.jobs.orders as orders

    with db.begin() as conn:
        [(twin, created)] = job_store.enqueue(conn, [_new_job(conn)])
    look_up = orders.pending_job_id

    def claimed_first(conn: Connection, *key: str) -> int | None:
        claim(conn)
        return look_up(conn, *key)

    monkeypatch.setattr(orders, "pending_job_id", claimed_first)
    with db.begin() as conn:
        [(new, created)] = job_store.enqueue(conn, [_new_job(conn, "rm-1")])
    assert created and new != twin
    assert states(db) == [(twin, "running"), (new, "pending")]
