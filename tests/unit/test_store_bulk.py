"""Inserts from arrays (app/store/bulk.py) store what SQLAlchemy's own insert stores, on
SQLite and PostgreSQL: times, NUL, JSON null, booleans; and ids come back in input order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import insert, select

from app.store import Database
from app.store import events as event_store
from app.store import jobs as job_store
from app.store import memberships as membership_store
from app.store.bulk import insert_rows
from app.store.events import NewEvent
from app.store.memberships import Membership
from app.store.schema import events

T0 = datetime(2026, 11, 27, 12, 0, 0, 123456, tzinfo=UTC)
PLUS2 = timezone(timedelta(hours=2))


def _event(n: int, **extra: Any) -> dict[str, Any]:
    row = {
        "provider": "okta", "source_event_id": f"e{n}", "kind": "removed",
        "occurred_at": T0 + timedelta(seconds=n), "received_at": T0.astimezone(PLUS2),
        "user_id": f"00u{n}", "user_login": None, "group_id": "00g", "group_name": "é 😀",
        "cor_user_id": None, "decision": "queued", "detail": [f"line {n}"], "change": None,
    }  # fmt: skip
    return row | extra


def _stored(db: Database, first: int, last: int) -> list[dict[str, Any]]:
    with db.begin() as conn:
        query = select(events).where(
            events.c.source_event_id.in_([f"e{n}" for n in range(first, last)])
        )
        rows = [dict(r) for r in conn.execute(query.order_by(events.c.source_event_id)).mappings()]
    for row in rows:
        row.pop("id")
        row["source_event_id"] = row["source_event_id"][1:]  # the number, to compare pairs
    return rows


def test_rows_from_arrays_are_the_rows_sqlalchemy_writes(db: Database) -> None:
    odd = [
        _event(1),
        _event(2, kind="nul\x00kind", change={"a": [1, None]}, detail=[]),
        _event(3, group_name=None, cor_user_id="x\x00y", detail=["nul \x00 in detail"]),
    ]
    with db.begin() as conn:
        conn.execute(insert(events), odd)
        shifted = [r | {"source_event_id": r["source_event_id"].replace("e", "e1")} for r in odd]
        columns = list(shifted[0])
        insert_rows(conn, events, columns, [[r[c] for c in columns] for r in shifted])
    plain, bulk = _stored(db, 1, 4), _stored(db, 11, 14)
    assert plain == [r | {"source_event_id": r["source_event_id"][1:]} for r in bulk]
    with db.begin() as conn:  # the times as stored, not as read back: SQL compares these
        raw = {
            r[0]: r[1:]
            for r in conn.exec_driver_sql(
                "SELECT source_event_id, CAST(occurred_at AS TEXT), CAST(received_at AS TEXT) "
                "FROM events"
            )
        }
    assert [raw[f"e{n}"] for n in (1, 2, 3)] == [raw[f"e1{n}"] for n in (1, 2, 3)]
    assert raw["e11"] == ("2026-11-27 12:00:01.123456", "2026-11-27 12:00:00.123456")
    assert plain[0]["occurred_at"] == T0 + timedelta(seconds=1)
    assert plain[1]["change"] == {"a": [1, None]} and plain[0]["change"] is None


def test_record_events_returns_ids_in_input_order(db: Database) -> None:
    rows = [NewEvent("okta", f"r{n}", "removed", T0, T0, detail=[str(n)]) for n in (5, 1, 9, 3)]
    with db.begin() as conn:
        ids = event_store.record_events(conn, rows)
        found = {
            r.id: r.source_event_id
            for r in conn.execute(select(events.c.id, events.c.source_event_id))
        }
    assert [found[i] for i in ids] == ["r5", "r1", "r9", "r3"]


def test_memberships_overwrite_and_jobs_join_their_pending_twin(db: Database) -> None:
    def pair(member: bool, name: str) -> Membership:
        return Membership("okta", "00u1", "00g1", name, member, T0, {"id": "00u1", "ok": True})

    with db.begin() as conn:
        membership_store.put_memberships(conn, [pair(True, "first")])
        membership_store.put_memberships(conn, [pair(False, "second")])
        [stored] = membership_store.memberships_of(conn, "okta", ["00u1"])
        [event_id] = event_store.record_events(conn, [NewEvent("okta", "j1", "removed", T0, T0)])
        job = job_store.NewJob("jane", "OKTA", "WS-ENG", "okta", event_id, T0, T0)
        other = job_store.NewJob("jane", "OKTA", "WS-OPS", "okta", event_id, T0, T0)
        [(first, created)] = job_store.enqueue(conn, [job])
        placed = job_store.enqueue(conn, [other, job])
    assert (stored.member, stored.group_name, stored.user) == (False, "second", pair(1, "").user)
    assert created and placed[1] == (first, False) and placed[0][1] and placed[0][0] != first
