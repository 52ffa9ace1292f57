"""Dead letters outside the outbox: seen by an operator (GET /admin/dead-letters, history)
and sent again (POST /admin/dead-letters/replay), on both engines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from app.changes import ChangeKind, GroupRef, MembershipChange, UserRef
from app.dead_letters import LetterReplay, replay_letters
from app.mapping import parse_mapping
from app.mapping_reload import MappingHolder
from app.okta.checker import OktaChecker
from app.runtime import Bridge
from app.settings import Settings
from app.store import Database, letters
from app.store import events as event_store
from app.store import held as held_store
from tests.builders import okta_delivery, okta_event
from tests.conftest import MAPPING
from tests.fake_cor import FakeCor
from tests.inprocess import ADMIN, OKTA, make_client
from tests.waiting import wait_for_async

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
# An Okta login that is no address gives no email: this template cannot name the COR user.
OKTA_BY_LOGIN = 'cor_source: OKTA\n    user_id: "{login}"'
NO_ID = MAPPING.replace(OKTA_BY_LOGIN, 'cor_source: OKTA\n    user_id: "{email}"', 1)
FIXED = MAPPING + "  - provider: okta\n    group_id: 00gextra\n    workspaces: [WS-X]\n"


async def test_an_unresolved_removal_is_a_dead_letter_replayed_once_the_mapping_is_fixed(
    tmp_path: Path, database_url: str
):
    cor = FakeCor()
    async with make_client(
        tmp_path, cor, database_url=database_url, mapping_text=NO_ID,
        bridge_mapping_poll_seconds=0.05,
    ) as client:  # fmt: skip
        event = okta_event("group.user_membership.remove", user="jane")
        event["target"][0]["alternateId"] = "jane"
        body = okta_delivery(event)
        assert (await client.post("/hooks/okta", json=body, headers=OKTA)).status_code == 200
        letters_now = (await client.get("/admin/dead-letters", headers=ADMIN)).json()
        [letter] = letters_now["unresolved"]
        assert letter["kind"] == "removed" and "email" in letter["detail"][0]
        assert letters_now["inbox"] == letters_now["held"] == letters_now["jobs"] == []

        groups = (await client.get("/readyz")).json()["checks"]["mapping"]["groups"]
        (tmp_path / "mapping.yaml").write_text(FIXED)

        async def reloaded() -> bool:
            ready = (await client.get("/readyz")).json()
            return bool(ready["checks"]["mapping"]["groups"] == groups + 1)

        await wait_for_async(reloaded)
        reply = await client.post(
            "/admin/dead-letters/replay", json={"unresolved": [letter["id"]]}, headers=ADMIN
        )
        assert reply.status_code == 200, reply.text
        assert reply.json() == {
            "replayed": {"inbox": [], "held": [], "unresolved": [letter["id"]]},
            "not_dead": {},
        }
        await wait_for_async(lambda: bool(cor.detaches))
        assert cor.detaches[0].path == "/v2/integrations/users/jane/detach"
        assert (await client.get("/admin/dead-letters", headers=ADMIN)).json()["unresolved"] == []
        history = await client.get("/admin/users/jane/history", headers=ADMIN)
        decisions = [e["decision"] for e in history.json()["events"]]
        assert sorted(decisions) == ["queued", "replayed"], decisions
        again = await client.post(
            "/admin/dead-letters/replay", json={"unresolved": [letter["id"]]}, headers=ADMIN
        )
        assert again.json()["not_dead"] == {"unresolved": [letter["id"]]}  # sent once


@pytest.fixture
def bridge(db: Database, tmp_path: Path) -> Bridge:
    settings = Settings(_env_file=None, bridge_mapping_file=str(tmp_path / "none.yaml"))  # type: ignore[call-arg]
    return Bridge(settings, db, MappingHolder(settings, parse_mapping(MAPPING, path="m.yaml")))


class CrashingOkta:
    """An Okta client with a bug in it."""

    async def get_user(self, user_id: str) -> Any:
        raise KeyError(user_id)

    async def user_groups(self, user_id: str) -> Any:
        raise AssertionError("not reached")


def held_removal() -> MembershipChange:
    return MembershipChange(
        provider="okta",
        event_id="ev-held-1",
        occurred_at=NOW - timedelta(minutes=5),
        change=ChangeKind.removed,
        user=UserRef(id="00ujane", login="jane@acme.example"),
        group=GroupRef(id="00g9fin0l5wuTxmoIC0h"),
    )


async def test_a_bug_checking_a_held_change_makes_a_dead_letter_that_can_be_replayed(
    db: Database, bridge: Bridge
):
    """Not retried (that would hide the bug), not lost: dead, in the user's history, listed,
    and pending again once replayed."""
    with db.begin() as conn:
        assert held_store.hold(conn, [held_removal()], NOW) == {"ev-held-1": True}
    checker = OktaChecker(bridge, CrashingOkta(), clock=lambda: NOW)  # type: ignore[arg-type]
    assert await checker.run_once() == 1
    with db.begin() as conn:
        [dead] = letters.dead_held(conn)
        assert dead["event_id"] == "ev-held-1" and "KeyError" in dead["last_error"]
        [line] = event_store.list_user_events(conn, "00ujane")
        assert line["kind"] == "removed (unchecked)" and "a bug in the bridge" in line["detail"][0]
        assert f"held {dead['id']}" in line["detail"][0]
    assert await checker.run_once() == 0  # not retried
    with db.begin() as conn:
        result, changes = replay_letters(conn, LetterReplay(held=[dead["id"]]), NOW)
    assert result["replayed"]["held"] == [dead["id"]] and changes == []
    with db.begin() as conn:
        assert letters.dead_held(conn) == [] and held_store.stats(conn, "okta")["held"] == 1


async def test_a_dead_inbox_entry_is_listed(tmp_path: Path, database_url: str):
    """The API lists inbox dead letters (the resolver's tests show them made and replayed)."""
    async with make_client(tmp_path, FakeCor(), database_url=database_url) as client:
        reply = await client.get("/admin/dead-letters?limit=5", headers=ADMIN)
        assert reply.status_code == 200 and reply.json()["inbox"] == []
        bad = await client.post("/admin/dead-letters/replay", json={"jobs": [1]}, headers=ADMIN)
        assert bad.status_code == 422
