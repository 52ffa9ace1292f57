"""Intake decides a call's changes on a snapshot and writes them at the end (app/intake/):
a call of many changes must come out exactly as the same changes one call each, in time order.
The same decisions and details, the same rows, the same job ids."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, select

from app.changes import ChangeKind, GroupRef, MembershipChange, UserRef
from app.intake import Decision, accept_changes
from app.mapping import Mapping, parse_mapping
from app.store import Database
from app.store import jobs as job_store
from app.store.schema import events, jobs, memberships
from tests.conftest import MAPPING
from tests.examples import examples

T0 = datetime(2026, 11, 27, 11, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
OKTA_USERS = [
    UserRef(id="00ujane", login="jane@acme.example"),
    UserRef(id="00ujohn", login="john@acme.example"),
]
OKTA_GROUPS = [
    GroupRef(id="00g8mo0l5wuTxmoIC0h7", name="eng-oncall"),  # WS-ENG, WS-ONCALL
    GroupRef(id="00gplatform000000000", name="platform"),  # WS-ENG
    GroupRef(id="00g9fin0l5wuTxmoIC0h", name="finance"),  # WS-FIN
    GroupRef(id="00gnothing", name="book-club"),  # unmapped
]
# Entra maps by name: the same group under another name is the rename rule.
ENTRA_USER = UserRef(id="e-jane", login="jane@acme.example")
ENTRA_GROUPS = [GroupRef(id="g-fin", name="Finance"), GroupRef(id="g-fin", name="Finance 2027")]

KINDS = [ChangeKind.added, ChangeKind.removed, ChangeKind.user_deactivated]
KINDS.append(ChangeKind.user_reactivated)


@st.composite
def a_change(draw: st.DrawFn) -> MembershipChange:
    entra = draw(st.booleans()) and draw(st.booleans())  # one in four
    kind = draw(st.sampled_from(KINDS))
    membership = kind in (ChangeKind.added, ChangeKind.removed)
    groups = ENTRA_GROUPS if entra else OKTA_GROUPS
    member_of = None
    asked = kind in (ChangeKind.removed, ChangeKind.user_deactivated)
    if asked and draw(st.booleans()) and draw(st.booleans()):
        member_of = tuple(draw(st.lists(st.sampled_from(groups), max_size=2)))
    return MembershipChange(
        provider="entra" if entra else "okta",
        # A small pool of ids: the same event twice, in one call or across calls.
        event_id=f"ev-{draw(st.integers(0, 15))}",
        occurred_at=T0 + timedelta(minutes=draw(st.integers(0, 4))),  # ties, reorderings
        change=kind,
        user=ENTRA_USER if entra else draw(st.sampled_from(OKTA_USERS)),
        group=draw(st.sampled_from(groups)) if membership else None,
        member_of=member_of,
    )


def _outcome(db: Database) -> dict[str, list[Any]]:
    with db.begin() as conn:
        return {
            name: [tuple(r) for r in conn.execute(select(table).order_by(*table.primary_key))]
            for name, table in (("events", events), ("jobs", jobs), ("memberships", memberships))
        }


def _fresh(folder: Path, name: str) -> Database:
    db = Database(f"sqlite:///{folder}/{name}.db")
    db.migrate()
    return db


def _in_time_order(items: list[MembershipChange]) -> list[int]:
    return sorted(range(len(items)), key=lambda i: (items[i].occurred_at, items[i].event_id))


def _one_call(db: Database, mapping: Mapping, items: list[MembershipChange]) -> list[Decision]:
    with db.begin() as conn:
        return accept_changes(conn, mapping, items, now=NOW)


def _call_each(db: Database, mapping: Mapping, items: list[MembershipChange]) -> list[Decision]:
    decisions: dict[int, Decision] = {}
    for index in _in_time_order(items):
        with db.begin() as conn:
            [decisions[index]] = accept_changes(conn, mapping, [items[index]], now=NOW)
    return [decisions[i] for i in range(len(items))]


@settings(max_examples=examples(80), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.lists(a_change(), min_size=1, max_size=8), min_size=1, max_size=3),
)
def test_a_call_of_many_changes_is_the_same_as_one_call_each(calls: list[list[Any]]) -> None:
    mapping = parse_mapping(MAPPING, path="test-mapping.yaml")
    with tempfile.TemporaryDirectory() as folder:
        together, apart = _fresh(Path(folder), "together"), _fresh(Path(folder), "apart")
        try:
            for items in calls:  # several calls in a row: what one wrote, the next reads
                assert _one_call(together, mapping, items) == _call_each(apart, mapping, items)
            assert _outcome(together) == _outcome(apart)
        finally:
            together.dispose()
            apart.dispose()


@pytest.mark.parametrize("arrival", ["remove first", "add first"])
def test_a_job_queued_and_called_off_in_one_call_is_kept_as_cancelled(
    db: Database, mapping: Mapping, arrival: str
):
    """Both decisions name the same job, by the id it got when written."""
    removal, readd = (
        MembershipChange(
            provider="okta",
            event_id=f"ev-{kind.value}",
            occurred_at=T0 + timedelta(seconds=seconds),
            change=kind,
            user=OKTA_USERS[0],
            group=OKTA_GROUPS[2],
        )
        for kind, seconds in ((ChangeKind.removed, 0), (ChangeKind.added, 5))
    )
    items = [removal, readd] if arrival == "remove first" else [readd, removal]
    with db.begin() as conn:
        decisions = {d.event_id: d for d in accept_changes(conn, mapping, items, now=NOW)}
        [row] = job_store.get_jobs(conn, job_store.select_job_ids(conn))
    queued, granted = decisions["ev-removed"], decisions["ev-added"]
    assert queued.jobs == [row["id"]]
    assert queued.detail == [f"queued job {row['id']}: detach WS-FIN from jane@acme.example"]
    assert granted.detail[0].startswith(f"cancelled job {row['id']} (WS-FIN): re-granted by")
    assert (row["state"], row["last_message"]) == ("cancelled", granted.detail[0].split(": ")[1])


def test_intakes_reads_take_an_index_not_the_backlog(tmp_path: Path, mapping: Mapping):
    """With a backlog (COR down: thousands of pending jobs), each of intake's reads must go
    by the call's users or event ids. SQLite's planner once walked every pending job by
    state for each delivery."""
    db = _fresh(tmp_path, "backlog")
    backlog = [
        MembershipChange(
            provider="okta",
            event_id=f"old-{i}",
            occurred_at=T0,
            change=ChangeKind.removed,
            user=UserRef(id=f"00u{i}", login=f"user{i}@acme.example"),
            group=OKTA_GROUPS[0],
        )
        for i in range(300)
    ]
    _one_call(db, mapping, backlog)
    statements: list[tuple[str, Any]] = []

    def keep(conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool) -> None:
        if sql.lstrip().upper().startswith("SELECT"):
            statements.append((sql, params))

    event.listen(db.engine, "before_cursor_execute", keep)
    try:
        # A delivery of 50 (an IN list of 50 users weighs against one of two states).
        again = [c.model_copy(update={"event_id": f"new-{c.event_id}"}) for c in backlog[:50]]
        _one_call(db, mapping, again)
    finally:
        event.remove(db.engine, "before_cursor_execute", keep)
    assert len(statements) >= 3  # seen events, memberships, open jobs
    with db.engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        for sql, params in statements:
            plan = " / ".join(row[3] for row in raw.execute(f"EXPLAIN QUERY PLAN {sql}", params))
            assert "SCAN" not in plan and "ix_jobs_due" not in plan, (sql, plan)
    db.dispose()
