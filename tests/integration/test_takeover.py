"""A killed replica's claimed jobs are delivered by another within 30 s, with the default
lease (BRIDGE_LEASE_SECONDS); a live replica's call slower than the lease is never sent twice.

COR holds every detach for longer than the lease. On PostgreSQL, replicas K and V claim
batches A and B (their calls hang, their lease keepers renew the claims), an idle replica W
starts, and V is SIGKILLed while its calls hang; COR recovers. V's claims lapse and W
delivers them within 30 s of the kill; W, idle, would have taken K's claims too had their
lease lapsed: each of K's slow calls reached COR once. On SQLite one process claims A, then
B, is killed and restarted on its file, and delivers B within 30 s of the kill.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.settings import Settings
from app.store import Database
from app.store.schema import jobs
from tests.builders import okta_delivery, okta_event
from tests.integration.harness import FINANCE, Bridge, Sandbox, StartBridge, wait_for
from tests.integration.test_faults import worker_id

pytestmark = [pytest.mark.integration, pytest.mark.faults]

USERS = 8  # per batch: one round of the default 8 calls at once
SLOW = 20.0  # seconds COR holds a detach: longer than the default lease
TAKEOVER = 30.0  # the promise
LEASE = Settings.model_fields["bridge_lease_seconds"].default


def logins(batch: str) -> list[str]:
    return [f"tk{batch}{i:03d}@acme.example" for i in range(USERS)]


def removals(batch: str) -> dict[str, object]:
    events = [
        okta_event("group.user_membership.remove", user=login.split("@")[0], group_id=FINANCE)
        for login in logins(batch)
    ]
    return okta_delivery(*events)


def running(url: str) -> dict[int, str]:
    """The claimed jobs: id -> the worker holding it."""
    db = Database(url)
    try:
        with db.begin() as conn:
            rows = conn.execute(
                select(jobs.c.id, jobs.c.claimed_by).where(jobs.c.state == "running")
            )
            return {int(i): str(w) for i, w in rows}
    finally:
        db.dispose()


def pending(url: str) -> int:
    db = Database(url)
    try:
        with db.begin() as conn:
            query = select(func.count()).select_from(jobs).where(jobs.c.state == "pending")
            return int(conn.execute(query).scalar_one())
    finally:
        db.dispose()


def done(url: str, ids: set[int]) -> bool:
    db = Database(url)
    try:
        with db.begin() as conn:
            rows = conn.execute(select(jobs.c.id).where(jobs.c.id.in_(ids), jobs.c.state == "done"))
            return {int(r[0]) for r in rows} == ids
    finally:
        db.dispose()


def cor_users(url: str, ids: set[int]) -> list[str]:
    db = Database(url)
    try:
        with db.begin() as conn:
            rows = conn.execute(select(jobs.c.cor_user_id).where(jobs.c.id.in_(ids)))
            return [str(r[0]) for r in rows]
    finally:
        db.dispose()


@pytest.mark.parametrize("bridge_engine", ["sqlite", "postgresql"])
def test_a_killed_replicas_claims_are_delivered_within_30_seconds(
    bridge_engine: str, start_bridge: StartBridge, sandbox: Sandbox, tmp_path: Path
) -> None:
    assert LEASE * 1.5 < TAKEOVER  # the lapse, then the next round, well within the promise
    users = [{"id": login, "source": "OKTA", "name": login, "email": login,
              "workspaces": ["WS-FIN"]} for login in logins("a") + logins("b")]  # fmt: skip
    assert sandbox.http.post(f"{sandbox.url}/sandbox/cor/users", json=users).status_code == 201
    shared = tmp_path / "shared"
    env = {"COR_TIMEOUT_SECONDS": str(SLOW + 10)}
    victim = start_bridge(shared, **env)
    keeper: Bridge = start_bridge(shared, **env) if bridge_engine == "postgresql" else victim
    url = victim.env["BRIDGE_DATABASE_URL"]
    sandbox.fault(0, times=10_000, delay_seconds=SLOW)

    keeper.deliver(removals("a"))
    wait_for(lambda: running(url), timeout=10, what="batch A claimed")
    victim.deliver(removals("b"))
    victim_id = worker_id(victim)

    def all_claimed() -> dict[int, str] | None:
        """Every job claimed (on SQLite: B once A is through), some by the victim."""
        claimed = running(url)
        return claimed if not pending(url) and victim_id in claimed.values() else None

    claimed = wait_for(all_claimed, timeout=SLOW + 10, what="the victim's claims")
    orphans = {i for i, w in claimed.items() if w == victim_id}
    kept = {i for i, w in claimed.items() if w != victim_id}
    if keeper is not victim:
        start_bridge(shared, **env)  # idle: it takes over whatever claim lapses
    victim.kill()
    killed = time.monotonic()
    sandbox.clear_faults()  # COR answers at once again (calls already held still take SLOW)
    if keeper is victim:
        start_bridge(shared, **env)  # SQLite: the one process, restarted on its file

    wait_for(lambda: done(url, orphans), timeout=TAKEOVER + 15, interval=0.2,
             what="the victim's claims delivered")  # fmt: skip
    took = time.monotonic() - killed
    print(f"\n{bridge_engine}: {len(orphans)} claims of a killed replica delivered {took:.1f} s "
          f"after the kill (lease {LEASE:.0f} s, COR held calls {SLOW:.0f} s); "
          f"{len(kept)} claims of a live replica")  # fmt: skip
    assert took < TAKEOVER, took
    wait_for(lambda: done(url, kept), timeout=SLOW + 10, what="the live replica's jobs done")
    in_flight = lambda: [c for c in sandbox.calls("/detach") if c["status"] is None]  # noqa: E731
    wait_for(lambda: not in_flight(), timeout=SLOW + 10, what="COR to answer every call held")
    for login in cor_users(url, kept):  # slower than the lease, and still sent once
        assert len(sandbox.detaches(login)) == 1, (login, sandbox.detaches(login))
