"""Nothing is lost: 5,000 removals through crashes, 503s and timeouts, on both engines.

PostgreSQL: three replicas share one database; SQLite: one process. Removals arrive over the
Okta hook (batches of 50) and SCIM (Entra-style PATCHes of 100 members) from several
senders at once, while COR answers 503s and then times out for a while, and a bridge is
SIGKILLed mid-delivery (on SQLite it is restarted on the same file; on PostgreSQL its
claims are left for the other replicas to take over when their lease lapses). A sender
that loses its connection tries another replica (or the restarted one), as an IdP retries.

Afterwards: every expected detach reached COR at least once; none was sent for an
unmapped, superseded or still-granted workspace; no job is left open or dead. The figures
(recorded as the test's `fault_figures` property) are printed at the end of the run by
tests/conftest.py, also when the tests run in pytest-xdist workers.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from app.store import Database
from app.store.schema import events, jobs
from tests.builders import T0, okta_delivery, okta_event
from tests.integration.harness import (
    HOOK_SECRET,
    SCIM_JSON,
    SCIM_TOKEN,
    Bridge,
    Sandbox,
    StartBridge,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.faults]

OKTA_USERS = 4000  # removals over the Okta hook
SCIM_USERS = 1000  # removals over SCIM
OKTA_BATCH = 50
SCIM_BATCH = 100
SENDERS = 6
KILL_AFTER_CALLS = 600  # detach calls seen at COR before the SIGKILL
FAULT_503 = 300
FAULT_TIMEOUTS = 30
COR_TIMEOUT = 1.0
DRAIN_TIMEOUT = 180.0

OPS, ENG, ALL, NONE = "00gfaultops", "00gfaulteng", "00gfaultall", "00gfaultnone"
MAPPING = f"""
providers:
  okta: {{cor_source: OKTA, user_id: "{{login}}"}}
  entra: {{cor_source: MICROSOFT_DYNAMICS, user_id: "{{login}}"}}
groups:
  - {{provider: okta, group_id: {OPS}, workspaces: [WS-OPS]}}
  - {{provider: okta, group_id: {ENG}, workspaces: [WS-ENG]}}
  - {{provider: okta, group_id: {ALL}, workspaces: [WS-ENG, WS-ONCALL]}}
  - {{provider: entra, group_name: Finance, workspaces: [WS-FIN]}}
"""
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"

Pair = tuple[str, str]  # (COR user id, workspace)


@dataclass
class Plan:
    """Who is removed from what, and which detaches that must (and must not) cause."""

    setup: list[dict[str, Any]] = field(default_factory=list)  # Okta deliveries of adds
    removals: list[dict[str, Any]] = field(default_factory=list)  # Okta deliveries
    expected: set[Pair] = field(default_factory=set)
    forbidden: set[Pair] = field(default_factory=set)
    kinds: Counter[str] = field(default_factory=Counter)


def okta_plan() -> Plan:
    """Of every ten users: one loses a group while another still grants half of it, one is
    removed by an event older than their last add (superseded), one leaves an unmapped
    group, and seven leave a mapped group outright."""
    plan = Plan()
    adds: list[dict[str, Any]] = []
    removals: list[dict[str, Any]] = []
    for i in range(OKTA_USERS):
        user, login = f"fu{i:05d}", f"fu{i:05d}@acme.example"
        at = T0 + timedelta(milliseconds=i)
        kind = ("still-granted", "superseded", "unmapped")[i % 10] if i % 10 < 3 else "plain"
        plan.kinds[kind] += 1
        if kind == "still-granted":  # in ENG and ALL; leaves ALL: keeps WS-ENG
            adds.append(okta_event("group.user_membership.add", user=user, group_id=ENG, at=at))
            adds.append(okta_event("group.user_membership.add", user=user, group_id=ALL, at=at))
            later = at + timedelta(seconds=1)
            removals.append(okta_event(REMOVE, user=user, group_id=ALL, at=later))
            plan.expected.add((login, "WS-ONCALL"))
            plan.forbidden |= {(login, "WS-ENG"), (login, "WS-OPS")}
        elif kind == "superseded":  # re-added after the removal happened
            adds.append(okta_event("group.user_membership.add", user=user, group_id=OPS,
                                   at=at + timedelta(hours=1)))  # fmt: skip
            removals.append(okta_event(REMOVE, user=user, group_id=OPS, at=at))
            plan.forbidden |= {(login, w) for w in ("WS-OPS", "WS-ENG", "WS-ONCALL")}
        elif kind == "unmapped":
            removals.append(okta_event(REMOVE, user=user, group_id=NONE, at=at))
            plan.forbidden |= {(login, w) for w in ("WS-OPS", "WS-ENG", "WS-ONCALL")}
        else:
            removals.append(okta_event(REMOVE, user=user, group_id=OPS, at=at))
            plan.expected.add((login, "WS-OPS"))
            plan.forbidden |= {(login, "WS-ENG"), (login, "WS-ONCALL")}
    plan.setup = [okta_delivery(*chunk) for chunk in chunks(adds, OKTA_BATCH)]
    plan.removals = [okta_delivery(*chunk) for chunk in chunks(removals, OKTA_BATCH)]
    return plan


REMOVE = "group.user_membership.remove"


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def seed_cor(sandbox: Sandbox) -> None:
    okta = [
        {"id": f"fu{i:05d}@acme.example", "source": "OKTA", "name": f"U{i}",
         "email": f"fu{i:05d}@acme.example", "workspaces": ["WS-ENG", "WS-ONCALL", "WS-OPS"]}
        for i in range(OKTA_USERS)
    ]  # fmt: skip
    scim = [
        {"id": f"fs{i:05d}@acme.example", "source": "MICROSOFT_DYNAMICS", "name": f"S{i}",
         "email": f"fs{i:05d}@acme.example", "workspaces": ["WS-FIN"]}
        for i in range(SCIM_USERS)
    ]  # fmt: skip
    reply = sandbox.http.post(f"{sandbox.url}/sandbox/cor/users", json=okta + scim)
    assert reply.status_code == 201, reply.text


class Senders:
    """IdPs delivering to whichever replica answers: a lost connection is tried again on
    the next replica after a short pause (as Okta and Entra retry), a 4xx/5xx fails."""

    def __init__(self, replicas: Callable[[], list[Bridge]]) -> None:
        self.replicas = replicas
        self.turn = itertools.count()
        self.local = threading.local()
        self.clients: list[httpx.Client] = []
        self.retried = 0
        self.took: defaultdict[str, list[float]] = defaultdict(list)  # seconds, by method

    def ack_ms(self, method: str) -> str:
        """Median and slowest acknowledgement, in ms."""
        took = sorted(self.took[method])
        return f"{took[len(took) // 2] * 1000:.0f}/{took[-1] * 1000:.0f}" if took else "-"

    def client(self) -> httpx.Client:
        if not hasattr(self.local, "client"):
            self.local.client = httpx.Client(timeout=10.0)
            self.clients.append(self.local.client)
        client: httpx.Client = self.local.client
        return client

    def close(self) -> None:
        for client in self.clients:
            client.close()

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        deadline = time.monotonic() + 60
        while True:
            live = [b for b in self.replicas() if b.proc is not None]
            bridge = live[next(self.turn) % len(live)] if live else None
            try:
                if bridge is None:
                    raise httpx.ConnectError("no replica is up")
                began = time.monotonic()
                reply = self.client().request(method, bridge.url + path, **kwargs)
                self.took[method].append(time.monotonic() - began)
            except httpx.TransportError:
                self.retried += 1
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
                continue
            assert reply.status_code < 300, f"{method} {path}: {reply.status_code} {reply.text}"
            return reply

    def okta(self, delivery: dict[str, Any]) -> int:
        self.send("POST", "/hooks/okta", json=delivery, headers={"Authorization": HOOK_SECRET})
        return len(delivery["data"]["events"])

    def scim(self, method: str, path: str, body: dict[str, Any]) -> httpx.Response:
        headers = {"Authorization": f"Bearer {SCIM_TOKEN}", "Content-Type": SCIM_JSON}
        return self.send(method, f"/scim/v2{path}", json=body, headers=headers)


def scim_setup(senders: Senders, pool: ThreadPoolExecutor) -> tuple[str, list[str]]:
    """SCIM users fs00000.. in the Entra group Finance; returns (group id, user ids)."""

    def create(i: int) -> str:
        body = {"schemas": [USER_SCHEMA], "userName": f"fs{i:05d}@acme.example", "active": True}
        return str(senders.scim("POST", "/Users", body).json()["id"])

    ids = list(pool.map(create, range(SCIM_USERS)))
    members = [{"value": user_id} for user_id in ids]
    group = {"schemas": [GROUP_SCHEMA], "displayName": "Finance", "members": members}
    return str(senders.scim("POST", "/Groups", group).json()["id"]), ids


def scim_removal(senders: Senders, group_id: str, user_ids: list[str]) -> int:
    """Entra's default dialect: remove members by value."""
    operation = {"op": "Remove", "path": "members", "value": [{"value": u} for u in user_ids]}
    senders.scim("PATCH", f"/Groups/{group_id}", {"schemas": [PATCH_SCHEMA],
                                                  "Operations": [operation]})  # fmt: skip
    return len(user_ids)


@dataclass
class Outcome:
    """What COR received and what the outbox holds."""

    succeeded: Counter[Pair]
    calls: int
    open_jobs: int
    dead_jobs: int
    decisions: Counter[str]


def outcome(sandbox: Sandbox, database_url: str) -> Outcome:
    db = Database(database_url)
    try:
        with db.begin() as conn:
            rows = conn.execute(select(jobs.c.state, func.count()).group_by(jobs.c.state))
            states = {str(state): int(n) for state, n in rows}
            rows = conn.execute(select(events.c.decision, func.count()).group_by(events.c.decision))
            decisions = Counter({str(d): int(n) for d, n in rows})
    finally:
        db.dispose()
    open_jobs = states.get("pending", 0) + states.get("running", 0)
    succeeded: Counter[Pair] = Counter()
    calls = sandbox.calls("/detach") if not open_jobs else []  # thousands: only once drained
    for call in calls:
        if call["status"] == 200:  # a timed-out call COR still carried out counts too
            for workspace in call["body"]["workspaces"]:
                succeeded[(call["user_id"], workspace)] += 1
    return Outcome(succeeded, len(calls), open_jobs, states.get("dead", 0), decisions)


def worker_id(bridge: Bridge) -> str:
    """The id its delivery worker claims jobs with, from its log."""
    for line in bridge.log_path.read_text().splitlines():
        if '"worker_started"' in line:
            found: str = json.loads(line)["worker_id"]
            return found
    raise AssertionError(f"{bridge.name} logged no worker_started")


def claims(database_url: str, worker: str) -> int:
    """Jobs `worker` holds right now."""
    db = Database(database_url)
    try:
        with db.begin() as conn:
            held = jobs.c.state == "running", jobs.c.claimed_by == worker
            return int(conn.execute(select(func.count()).where(*held)).scalar_one())
    finally:
        db.dispose()


def run_scenario(
    engine: str,
    sandbox: Sandbox,
    replicas: list[Bridge],
    database_url: str,
    record: Callable[[str, object], None],
    restart: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Set up, send every removal while COR fails and replicas[0] is SIGKILLed while it holds
    claims (and then `restart`ed, if given), wait for the drain, `record` the figures (before
    checking the promises, so a failing run shows them too); returns the figures."""
    victim = replicas[0]
    plan = okta_plan()
    seed_cor(sandbox)
    senders = Senders(lambda: replicas)
    with ThreadPoolExecutor(SENDERS) as pool, contextlib.closing(senders):
        list(pool.map(senders.okta, plan.setup))
        group_id, scim_ids = scim_setup(senders, pool)
        plan.expected |= {(f"fs{i:05d}@acme.example", "WS-FIN") for i in range(SCIM_USERS)}
        plan.kinds["scim"] += SCIM_USERS

        # COR fails: 503s first, then calls that outlast the bridge's timeout (and that COR
        # still carries out, so the retry is a duplicate).
        sandbox.fault(503, times=FAULT_503)
        sandbox.fault(0, times=FAULT_TIMEOUTS, delay_seconds=COR_TIMEOUT * 1.5)
        senders.took.clear()  # only the removals' acknowledgements, from here
        started = time.monotonic()
        crashed = threading.Event()

        def crash_mid_delivery() -> int:
            """SIGKILL the victim while it holds claims; returns how many it left behind."""
            wait_for(
                lambda: len(sandbox.calls("/detach")) >= KILL_AFTER_CALLS,
                timeout=DRAIN_TIMEOUT,
                interval=0.1,
                what=f"{KILL_AFTER_CALLS} detach calls",
            )
            worker = worker_id(victim)
            wait_for(lambda: claims(database_url, worker), timeout=30, what="the victim's claims")
            victim.kill()
            crashed.set()
            orphaned = claims(database_url, worker)
            if restart is not None:
                restart()
            return orphaned

        killer = pool.submit(crash_mid_delivery)
        sent = [pool.submit(senders.okta, d) for d in plan.removals]
        sent += [
            pool.submit(scim_removal, senders, group_id, batch)
            for batch in chunks(scim_ids, SCIM_BATCH)
        ]
        accepted = sum(f.result() for f in sent)
        ingest_seconds = time.monotonic() - started
        orphaned = killer.result()

    def drained() -> Outcome | None:
        found = outcome(sandbox, database_url)
        done = plan.expected <= set(found.succeeded) and found.open_jobs == 0
        return found if done else None

    found = wait_for(drained, timeout=DRAIN_TIMEOUT, interval=0.25, what="the drain")
    drain_seconds = time.monotonic() - started
    wrong = sorted(pair for pair in found.succeeded if pair in plan.forbidden)
    unplanned = sorted(set(found.succeeded) - plan.expected - plan.forbidden)
    figures = {
        "engine": engine,
        "replicas": len(replicas),
        "removals accepted": accepted,
        "expected detaches": len(plan.expected),
        "delivered": len(plan.expected & set(found.succeeded)),
        "duplicates": sum(n - 1 for n in found.succeeded.values()),
        "wrong detaches": len(wrong) + len(unplanned),
        "stuck rows": found.open_jobs,
        "dead rows": found.dead_jobs,
        "COR calls": found.calls,
        "claims orphaned": orphaned,
        "sender retries": senders.retried,
        "okta ack ms p50/max": senders.ack_ms("POST"),
        "scim ack ms p50/max": senders.ack_ms("PATCH"),
        "ingest s": round(ingest_seconds, 1),
        "drain s": round(drain_seconds, 1),
    }
    record("fault_figures", figures)
    assert crashed.is_set()
    assert accepted == OKTA_USERS + SCIM_USERS, figures
    assert not wrong and not unplanned, (wrong[:10], unplanned[:10])
    assert found.dead_jobs == 0, figures
    assert found.decisions["superseded"] == plan.kinds["superseded"], found.decisions
    assert found.decisions["unmapped"] == plan.kinds["unmapped"], found.decisions
    return figures


def fault_env(mapping_file: Path) -> dict[str, str]:
    return {
        "BRIDGE_MAPPING_FILE": str(mapping_file),
        "SCIM_TOKEN": SCIM_TOKEN,
        "SCIM_PROVIDER": "entra",
        "COR_TIMEOUT_SECONDS": str(COR_TIMEOUT),
        "BRIDGE_LEASE_SECONDS": "5",
        "BRIDGE_WORKER_BATCH": "25",
        "BRIDGE_MAX_ATTEMPTS": "40",
        "BRIDGE_RETRY_BASE_SECONDS": "0.2",
        "BRIDGE_RETRY_MAX_SECONDS": "2",
    }


@pytest.fixture
def mapping_file(tmp_path: Path) -> Path:
    path = tmp_path / "fault-mapping.yaml"
    path.write_text(MAPPING)
    return path


@pytest.mark.parametrize("bridge_engine", ["postgresql"])
def test_three_replicas_on_postgresql_lose_nothing(
    start_bridge: StartBridge,
    sandbox: Sandbox,
    mapping_file: Path,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    shared = tmp_path / "shared"  # one workdir: one database for the three replicas
    replicas = [start_bridge(shared, **fault_env(mapping_file)) for _ in range(3)]
    url = replicas[0].env["BRIDGE_DATABASE_URL"]
    run_scenario("postgresql", sandbox, replicas, url, record_property)


@pytest.mark.parametrize("bridge_engine", ["sqlite"])
def test_one_process_on_sqlite_killed_and_restarted_loses_nothing(
    start_bridge: StartBridge,
    sandbox: Sandbox,
    mapping_file: Path,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    workdir = tmp_path / "bridge"
    env = fault_env(mapping_file)
    replicas = [start_bridge(workdir, **env)]

    def restart() -> None:
        replicas[0] = start_bridge(workdir, **env)

    url = replicas[0].env["BRIDGE_DATABASE_URL"]
    run_scenario("sqlite", sandbox, replicas, url, record_property, restart)
