"""The worker's claim beside intake: a user whose removals are being taken in waits for them."""

from __future__ import annotations

from datetime import timedelta

import pytest

from app.changes import GroupRef
from app.intake.locks import intake_keys
from app.store import Database
from app.store import jobs as job_store
from app.store.db import lock_intake_keys
from app.store.jobs.claims import HOLD_IN_INTAKE, intake_key
from tests.unit.test_worker import T0, enqueue, removal

LEASE = timedelta(seconds=15)
# PostgreSQL only: on SQLite's one writer a claim never runs beside intake.
ON_POSTGRESQL = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


def claim(db: Database, now=T0) -> set[str]:
    with db.begin() as conn:
        claimed = job_store.claim(conn, now=now, limit=100, worker_id="w", lease=LEASE)
    return {j.cor_user_id for j in claimed}


def test_the_claims_key_of_a_cor_user_is_the_one_intake_locks(mapping):
    change = removal(GroupRef(id="00g8mo0l5wuTxmoIC0h7", name="eng-oncall"), "jane@acme.example")
    keys = intake_keys(mapping, [change])
    assert keys is not None
    assert intake_key("jane@acme.example") in keys


@ON_POSTGRESQL
def test_a_user_in_intake_is_claimed_once_intake_commits(db: Database):
    enqueue(db, "jane", "WS-ENG", "WS-FIN")
    enqueue(db, "bob", "WS-ENG")
    with db.begin() as intake:  # another transaction taking in more removals of jane
        lock_intake_keys(intake, {intake_key("jane")})
        assert claim(db) == {"bob"}
    assert claim(db) == {"jane"}


@ON_POSTGRESQL
def test_a_user_under_constant_intake_is_not_held_back_for_ever(db: Database):
    enqueue(db, "jane", "WS-ENG")
    with db.begin() as intake:
        lock_intake_keys(intake, {intake_key("jane")})
        assert claim(db, now=T0 + HOLD_IN_INTAKE - timedelta(seconds=1)) == set()
        assert claim(db, now=T0 + HOLD_IN_INTAKE) == {"jane"}
