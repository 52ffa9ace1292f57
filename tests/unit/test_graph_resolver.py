"""The inbox resolver: lookups through the Graph stand-in, then intake, on a real database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from app.dead_letters import LetterReplay, replay_letters
from app.graph.client import GraphClient, GraphCredentials
from app.graph.directory import Directory
from app.graph.resolver import Resolver
from app.mapping import parse_mapping
from app.mapping_reload import MappingHolder
from app.runtime import Bridge
from app.settings import Settings
from app.store import Database, letters
from app.store import events as event_store
from app.store import graph as graph_store
from app.store import jobs as job_store
from app.store.graph import NewInboxEntry
from app.store.schema import graph_inbox
from tests.graph_standin import CLIENT_ID, CLIENT_SECRET, TENANT, StandinServer

ONCALL = "0bc7d487-fd6f-41a0-8362-71ec81074f11"  # WS-ENG, WS-ONCALL (by id)
ENGINEERING = "e0000000-0000-0000-0000-00000000e001"  # WS-ENG (by name)
FINANCE = "f0000000-0000-0000-0000-00000000f001"  # WS-FIN (by name)
ADELE = "4d147cc8-10cb-4158-ac52-90ee8ff9d846"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)

MAPPING = f"""
providers:
  entra:
    cor_source: MICROSOFT_DYNAMICS
    user_id: "{{login}}"
groups:
  - provider: entra
    group_id: {ONCALL}
    workspaces: [WS-ENG, WS-ONCALL]
  - provider: entra
    group_name: Engineering
    workspaces: [WS-ENG]
  - provider: entra
    group_name: Finance
    workspaces: [WS-FIN]
"""


@pytest.fixture
def standin(standin_server: StandinServer) -> StandinServer:
    standin_server.state.reset()
    state = standin_server.state
    state.add_group(ONCALL, "eng-oncall")
    state.add_group(ENGINEERING, "Engineering")
    state.add_group(FINANCE, "Finance")
    state.add_user(ADELE, "adele@acme.example", mail="adele.v@acme.example")
    return standin_server


@pytest.fixture
def bridge(db: Database, tmp_path: Path) -> Bridge:
    settings = Settings(_env_file=None, bridge_mapping_file=str(tmp_path / "none.yaml"))  # type: ignore[call-arg]
    mapping = parse_mapping(MAPPING, path="graph-mapping.yaml")
    return Bridge(settings, db, MappingHolder(settings, mapping))


@pytest.fixture
async def directory(standin: StandinServer) -> AsyncIterator[Directory]:
    async with httpx.AsyncClient(timeout=5.0) as http:
        creds = GraphCredentials(TENANT, CLIENT_ID, CLIENT_SECRET)
        yield Directory(GraphClient(http, standin.api_url, standin.url, creds), ttl=60)


def resolver(bridge: Bridge, directory: Directory | None) -> Resolver:
    return Resolver(bridge, directory, clock=lambda: NOW)


def add(db: Database, group: str, member: str = ADELE, *, removed: bool = True, n: int = 1) -> str:
    key = f"graph:test{n}:{member}:{'removed' if removed else 'added'}"
    entry = NewInboxEntry(key, "sub-1", group, member, removed, NOW - timedelta(minutes=10 - n))
    with db.begin() as conn:
        assert graph_store.add_inbox_entry(conn, entry, NOW - timedelta(minutes=1))
    return key


def open_jobs(db: Database) -> list[tuple[str, str]]:
    with db.begin() as conn:
        rows = job_store.get_jobs(conn, job_store.select_job_ids(conn, states=["pending"]))
    return sorted((r["cor_user_id"], r["workspace"]) for r in rows)


def history(db: Database, user: str) -> list[tuple[str, str, list[str]]]:
    with db.begin() as conn:
        return [
            (e["kind"], e["decision"], e["detail"])
            for e in event_store.list_user_events(conn, user)
        ]


def pending(db: Database) -> int:
    with db.begin() as conn:
        return int(graph_store.inbox_stats(conn)["pending"])


async def test_login_lookup_and_the_still_granted_rule(
    db: Database, bridge: Bridge, directory: Directory, standin: StandinServer
):
    # Graph says Adele is still in Engineering (which grants WS-ENG) after leaving eng-oncall.
    standin.state.member_of[ADELE] = [ENGINEERING]
    add(db, ONCALL)
    assert await resolver(bridge, directory).run_once() == 1
    assert open_jobs(db) == [("adele@acme.example", "WS-ONCALL")]
    [(kind, decision, detail)] = history(db, ADELE)
    assert (kind, decision) == ("removed", "queued")
    assert (
        detail[0]
        == f"kept WS-ENG: still granted by entra group {ENGINEERING} (Engineering) (asked Graph)"
    )
    assert pending(db) == 0


async def test_group_names_are_resolved_for_rules_by_name(
    db: Database, bridge: Bridge, directory: Directory, standin: StandinServer
):
    add(db, FINANCE, n=1)
    add(db, FINANCE, n=2)
    await resolver(bridge, directory).run_once()
    assert open_jobs(db) == [("adele@acme.example", "WS-FIN")]
    # Two entries, one group: the name was looked up once (cached).
    assert len(standin.state.calls_to(f"/groups/{FINANCE}")) == 1


async def test_without_credentials_changes_carry_ids_only(db: Database, bridge: Bridge):
    add(db, ONCALL)
    await resolver(bridge, None).run_once()
    [(_, decision, detail)] = history(db, ADELE)
    assert decision == "unresolved" and "{login}" in detail[0]


async def test_a_user_graph_no_longer_has_uses_what_the_bridge_saw(
    db: Database, bridge: Bridge, directory: Directory, standin: StandinServer
):
    add(db, FINANCE, removed=False, n=1)  # seen joining while Graph still knew them
    await resolver(bridge, directory).run_once()
    del standin.state.users[ADELE]  # then deleted
    add(db, ONCALL, n=2)
    await resolver(bridge, directory).run_once()
    assert open_jobs(db) == [("adele@acme.example", "WS-ENG"), ("adele@acme.example", "WS-ONCALL")]


async def test_a_user_never_seen_and_gone_from_graph_is_recorded_not_lost_silently(
    db: Database, bridge: Bridge, directory: Directory, standin: StandinServer
):
    add(db, ONCALL, member="ghost")
    await resolver(bridge, directory).run_once()
    [(kind, decision, detail)] = history(db, "ghost")
    assert (kind, decision) == ("graph.removed", "ignored")
    assert "not in Graph" in detail[0] and "detach them by hand" in detail[0]
    assert pending(db) == 0


async def test_lookup_failures_leave_the_entry_pending_with_backoff(
    db: Database, bridge: Bridge, directory: Directory, standin: StandinServer
):
    standin.state.fault(503, path_contains="/users/", times=5)
    add(db, ONCALL)
    await resolver(bridge, directory).run_once()
    assert open_jobs(db) == [] and pending(db) == 1
    with db.begin() as conn:
        stats = graph_store.inbox_stats(conn)
        assert "503" in stats["last_error"]
        # Not due again yet: the next round claims nothing.
        assert (
            graph_store.claim_inbox(conn, now=NOW, limit=10, worker_id="x", lease=timedelta(1))
            == []
        )
    standin.state.faults.clear()
    later = Resolver(bridge, directory, clock=lambda: NOW + timedelta(minutes=20))
    assert await later.run_once() == 1
    assert len(open_jobs(db)) == 2


async def test_a_deleted_group_still_matches_rules_by_id(
    db: Database, bridge: Bridge, directory: Directory, standin: StandinServer
):
    del standin.state.groups[ONCALL]
    add(db, ONCALL)
    await resolver(bridge, directory).run_once()
    assert len(open_jobs(db)) == 2


async def test_no_membership_lookup_for_a_group_that_grants_nothing(
    db: Database, bridge: Bridge, directory: Directory, standin: StandinServer
):
    add(db, "g-unmapped")
    await resolver(bridge, directory).run_once()
    assert standin.state.calls_to("/transitiveMemberOf") == []
    [(_, decision, _)] = history(db, ADELE)
    assert decision == "unmapped"


async def test_an_entry_graph_cannot_answer_past_the_age_limit_is_a_dead_letter(
    db: Database, bridge: Bridge, directory: Directory, standin: StandinServer
):
    """Graph unavailable (503) is retried, never decided on a guess; once the entry is older
    than BRIDGE_MAX_AGE_SECONDS it stops as a dead letter the operator sees."""
    add(db, ONCALL)
    standin.state.fault(503, times=100)
    clock = [NOW]
    late = Resolver(bridge, directory, max_age=timedelta(hours=1), clock=lambda: clock[0])
    assert await late.run_once() == 1
    assert pending(db) == 1 and open_jobs(db) == []  # deferred, nothing on a guess
    clock[0] = NOW + timedelta(hours=2)
    with db.begin() as conn:  # due again
        conn.execute(graph_inbox.update().values(next_attempt_at=NOW))
    assert await late.run_once() == 1
    with db.begin() as conn:
        stats = graph_store.inbox_stats(conn)
    assert (stats["pending"], stats["dead"]) == (0, 1) and open_jobs(db) == []
    [(kind, decision, detail)] = history(db, ADELE)
    assert (kind, decision) == ("graph.removed (unresolved)", "ignored")
    assert detail[0].startswith("dead letter: Graph could not be asked for 2.0 h")
    assert "503" in detail[0]


async def test_an_entry_graph_refuses_is_a_dead_letter_at_once(
    db: Database, bridge: Bridge, directory: Directory, standin: StandinServer
):
    """A permanent error (here a 400: Graph refuses the request itself) is not retried every 15
    minutes for ever: the entry is a dead letter at once, in the member's history. A 403 (a
    permission not granted yet) is waited for instead, like 503."""
    add(db, ONCALL)
    standin.state.fault(403, path_contains="/users/")
    assert await resolver(bridge, directory).run_once() == 1
    assert pending(db) == 1 and open_jobs(db) == []  # deferred until an operator grants it
    with db.begin() as conn:  # due again
        conn.execute(graph_inbox.update().values(next_attempt_at=NOW))
    standin.state.fault(400, times=100)
    assert await resolver(bridge, directory).run_once() == 1
    with db.begin() as conn:
        stats = graph_store.inbox_stats(conn)
    assert (stats["pending"], stats["dead"]) == (0, 1) and open_jobs(db) == []
    [(kind, decision, detail)] = history(db, ADELE)
    assert (kind, decision) == ("graph.removed (unresolved)", "ignored")
    assert detail[0].startswith("dead letter: the lookup was refused (") and "400" in detail[0]
    # Once the permission is granted, the operator replays it: looked up again, then intake.
    standin.state.faults.clear()
    with db.begin() as conn:
        [dead] = letters.dead_inbox(conn)
        result, _ = replay_letters(conn, LetterReplay(inbox=[dead["id"]]), NOW)
    assert result["replayed"]["inbox"] == [dead["id"]]
    assert await resolver(bridge, directory).run_once() == 1
    assert open_jobs(db) == [("adele@acme.example", "WS-ENG"), ("adele@acme.example", "WS-ONCALL")]
    assert [d for _, d, _ in history(db, ADELE)] == ["ignored", "queued"]


async def test_a_bug_in_a_lookup_is_a_dead_letter_with_its_traceback_logged(
    db: Database, bridge: Bridge, directory: Directory, standin: StandinServer
):
    """An exception nobody raised on purpose is not retried (that would hide it)."""

    async def crash(user_id: str) -> None:
        raise KeyError(user_id)

    directory.user = crash  # type: ignore[method-assign]
    add(db, ONCALL)
    assert await resolver(bridge, directory).run_once() == 1
    with db.begin() as conn:
        assert graph_store.inbox_stats(conn)["dead"] == 1
    [(_, _, detail)] = history(db, ADELE)
    assert "a bug in the bridge stopped this lookup (KeyError" in detail[0]
