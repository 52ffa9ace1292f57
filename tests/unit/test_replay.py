"""Replay applies the rules again: what was re-granted, done or already open is not sent.

Every test runs on SQLite and on PostgreSQL (the `db` fixture).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import update

from app.changes import ChangeKind, GroupRef, MembershipChange, UserRef
from app.intake import accept_changes
from app.mapping import Mapping, parse_mapping
from app.operations import ReplayRequest, replay_jobs
from app.store import Database
from app.store import jobs as job_store
from app.store.schema import jobs
from tests.conftest import MAPPING

T0 = datetime(2026, 11, 27, 11, 0, tzinfo=UTC)
ENG = GroupRef(id="00g8mo0l5wuTxmoIC0h7", name="eng-oncall")  # WS-ENG, WS-ONCALL
FIN = GroupRef(id="00g9fin0l5wuTxmoIC0h", name="finance")  # WS-FIN
PLATFORM = GroupRef(id="00gplatform000000000", name="platform")  # WS-ENG
BOOKS = GroupRef(id="00gbookclub", name="book-club")  # unmapped, until it is
JANE = UserRef(id="00ujane", login="jane@acme.example")
_seq = iter(range(1, 10_000))


def change(kind: ChangeKind, group: GroupRef, minutes: int) -> MembershipChange:
    return MembershipChange(
        provider="okta",
        event_id=f"ev-{next(_seq)}",
        occurred_at=T0 + timedelta(minutes=minutes),
        change=kind,
        user=JANE,
        group=group,
    )


def accept(db: Database, mapping: Mapping, *items: MembershipChange) -> list[int]:
    with db.begin() as conn:
        decisions = accept_changes(conn, mapping, items, now=datetime.now(UTC))
    return [j for d in decisions for j in d.jobs]


def settle(db: Database, ids: list[int], state: str) -> None:
    """What the worker records when COR answers (a 400 makes them dead, a 200 done)."""
    attempt = job_store.Attempt(datetime.now(UTC), 0, status=400)
    with db.begin() as conn:
        if state == job_store.DONE:
            job_store.complete(conn, ids, None, attempt, remaining=[])
        else:
            job_store.bury(conn, ids, None, attempt, "refused")


def replay(db: Database, mapping: Mapping, ids: list[int], dry: bool = False) -> dict[str, Any]:
    with db.begin() as conn:
        return replay_jobs(conn, mapping, ReplayRequest(ids=ids, dry_run=dry))


def states(db: Database, ids: list[int]) -> list[str]:
    with db.begin() as conn:
        found = {j["id"]: j["state"] for j in job_store.get_jobs(conn, ids)}
    return [found[i] for i in ids]


def dead_removal_from_eng(db: Database, mapping: Mapping) -> tuple[int, int]:
    """jane joined eng-oncall, left it; COR refused both detaches: (WS-ENG, WS-ONCALL)."""
    accept(db, mapping, change(ChangeKind.added, ENG, 0))
    eng, oncall = accept(db, mapping, change(ChangeKind.removed, ENG, 1))
    settle(db, [eng, oncall], job_store.DEAD)
    return eng, oncall


def test_a_dead_job_whose_group_was_given_back_is_not_replayed(db: Database, mapping: Mapping):
    eng, oncall = dead_removal_from_eng(db, mapping)
    accept(db, mapping, change(ChangeKind.added, ENG, 2))  # Okta gave eng-oncall back

    dry = replay(db, mapping, [eng, oncall], dry=True)
    assert dry["jobs"] == []
    assert [(s["id"], s["workspace"]) for s in dry["skipped"]] == [
        (eng, "WS-ENG"),
        (oncall, "WS-ONCALL"),
    ]
    assert dry["skipped"][0]["reason"] == (
        f"still granted: 00ujane is in okta group {ENG.id} (eng-oncall) "
        f"(since {(T0 + timedelta(minutes=2)).isoformat()}), which grants WS-ENG"
    )
    done = replay(db, mapping, [eng, oncall])
    assert [(r["id"], r["result"]) for r in done["jobs"]] == [(eng, "skipped"), (oncall, "skipped")]
    assert done["jobs"][1]["reason"].startswith("still granted: ")
    assert states(db, [eng, oncall]) == ["dead", "dead"]


def test_only_the_workspace_another_group_grants_again_is_skipped(db: Database, mapping: Mapping):
    eng, oncall = dead_removal_from_eng(db, mapping)
    accept(db, mapping, change(ChangeKind.added, PLATFORM, 2))  # platform grants WS-ENG only

    dry = replay(db, mapping, [eng, oncall], dry=True)
    assert [j["id"] for j in dry["jobs"]] == [oncall]
    [skipped] = dry["skipped"]
    assert skipped["id"] == eng
    assert f"okta group {PLATFORM.id} (platform)" in skipped["reason"]
    assert states(db, [eng, oncall]) == ["dead", "dead"]  # a dry run changes nothing

    assert replay(db, mapping, [eng, oncall])["jobs"] == [
        {"id": eng, "result": "skipped", "reason": skipped["reason"]},
        {"id": oncall, "result": "requeued"},
    ]
    assert states(db, [eng, oncall]) == ["dead", "pending"]


def test_a_rule_added_since_counts_as_a_grant(db: Database, mapping: Mapping):
    [fin] = accept(
        db,
        mapping,
        change(ChangeKind.added, FIN, 0),
        change(ChangeKind.added, BOOKS, 0),
        change(ChangeKind.removed, FIN, 1),
    )
    settle(db, [fin], job_store.DEAD)
    assert replay(db, mapping, [fin], dry=True)["skipped"] == []

    books_grant_fin = MAPPING + (
        "  - provider: okta\n    group_id: 00gbookclub\n    workspaces: [WS-FIN]\n"
    )
    now = parse_mapping(books_grant_fin, path="new-mapping.yaml")
    [skipped] = replay(db, now, [fin], dry=True)["skipped"]
    assert "okta group 00gbookclub (book-club)" in skipped["reason"]


def test_a_job_a_re_grant_cancelled_is_not_replayed(db: Database, mapping: Mapping):
    accept(db, mapping, change(ChangeKind.added, FIN, 0))
    [fin] = accept(db, mapping, change(ChangeKind.removed, FIN, 1))
    accept(db, mapping, change(ChangeKind.added, FIN, 2))
    assert states(db, [fin]) == ["cancelled"]

    [result] = replay(db, mapping, [fin])["jobs"]
    assert result["result"] == "skipped" and result["reason"].startswith("still granted")


def test_a_removal_after_the_re_grant_makes_the_dead_job_replayable(db: Database, mapping: Mapping):
    eng, oncall = dead_removal_from_eng(db, mapping)
    accept(db, mapping, change(ChangeKind.added, ENG, 2))
    # Removed again: a new job for each workspace, so the dead ones have a twin.
    again = accept(db, mapping, change(ChangeKind.removed, ENG, 3))
    skipped = replay(db, mapping, [eng, oncall], dry=True)["skipped"]
    assert [s["reason"] for s in skipped] == [
        f"job {again[0]} is already pending for the same detach",
        f"job {again[1]} is already pending for the same detach",
    ]
    settle(db, again, job_store.DEAD)
    assert [j["result"] for j in replay(db, mapping, [eng, oncall])["jobs"]] == ["requeued"] * 2


def test_a_done_job_is_not_sent_again(db: Database, mapping: Mapping):
    [fin] = accept(db, mapping, change(ChangeKind.removed, FIN, 1))
    settle(db, [fin], job_store.DONE)

    [skipped] = replay(db, mapping, [fin], dry=True)["skipped"]
    assert skipped["reason"].startswith("already done: COR confirmed this detach")
    assert replay(db, mapping, [fin])["jobs"][0]["result"] == "skipped"
    assert states(db, [fin]) == ["done"]


def test_replaying_twice_requeues_once(db: Database, mapping: Mapping):
    [fin] = accept(db, mapping, change(ChangeKind.removed, FIN, 1))
    settle(db, [fin], job_store.DEAD)

    assert replay(db, mapping, [fin])["jobs"] == [{"id": fin, "result": "requeued"}]
    assert replay(db, mapping, [fin])["jobs"] == [
        {"id": fin, "result": "skipped", "reason": "already pending"}
    ]


def test_concurrent_replays_of_one_dead_job_requeue_it_once(db: Database, mapping: Mapping):
    [fin] = accept(db, mapping, change(ChangeKind.removed, FIN, 1))
    settle(db, [fin], job_store.DEAD)
    start = threading.Barrier(4)
    results: list[str] = []
    errors: list[BaseException] = []

    def operator() -> None:
        try:
            start.wait()
            results.extend(j["result"] for j in replay(db, mapping, [fin])["jobs"])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=operator) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert sorted(results) == ["requeued", "skipped", "skipped", "skipped"]
    assert states(db, [fin]) == ["pending"]


def test_a_dead_job_for_a_dot_segment_user_is_not_replayed(db: Database, mapping: Mapping):
    # Queued before intake refused such ids; COR would only be asked on another route.
    [fin] = accept(db, mapping, change(ChangeKind.removed, FIN, 1))
    with db.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.id == fin).values(cor_user_id=".."))
    settle(db, [fin], job_store.DEAD)

    [skipped] = replay(db, mapping, [fin])["jobs"]
    assert skipped["result"] == "skipped"
    assert skipped["reason"] == (
        "cannot be sent: the COR user id '..' is not a usable identifier in a URL path "
        "(empty or a dot segment)"
    )
    assert states(db, [fin]) == ["dead"]
