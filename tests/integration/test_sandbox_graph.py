"""`make run`'s Entra half: `serve --sandbox` reads the Graph stand-in it serves, as in README.

The bridge process serves /sandbox/graph itself and calls it with its real Graph client over
loopback: the delta query's baseline, a removal no notification told (kept where another group
still grants), and an expired delta token whose resync finds who left unseen.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.graph.standin.tenant import FINANCE, JANE, ONCALL, RAVI
from tests.integration.harness import ADMIN_TOKEN, MAPPING_FILE, Service, clean_env
from tests.waiting import wait_for


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Service]:
    env = clean_env(
        BRIDGE_DATABASE_URL=f"sqlite:///{tmp_path / 'bridge.db'}",
        BRIDGE_MAPPING_FILE=str(MAPPING_FILE),
        BRIDGE_ADMIN_TOKEN=ADMIN_TOKEN,
        OKTA_HOOK_SECRET="demo-secret",
        OKTA_SYNC_SECONDS="0",
        GRAPH_DELTA_SECONDS="0.5",
    )
    service = Service("demo", ["serve", "--sandbox"], env, tmp_path)
    try:
        yield service.start()
    finally:
        service.close()


def knob(demo: Service, path: str, body: Any) -> None:
    reply = demo.http.post(f"{demo.url}/sandbox/graph/_standin{path}", json=body)
    assert reply.status_code == 204, reply.text


def detaches(demo: Service, user: str) -> list[list[str]]:
    found = demo.http.get(f"{demo.url}/sandbox/cor/calls", params={"path_contains": user})
    return [sorted(c["body"]["workspaces"]) for c in found.json()["calls"] if c["method"] == "PUT"]


def covered(demo: Service) -> int:
    delta = demo.http.get(f"{demo.url}/readyz").json()["checks"]["graph"]["delta"]
    return int(delta["groups_covered"]) if delta["last_round"] else 0


def test_make_run_serves_graph_and_the_bridge_reads_it(demo: Service) -> None:
    wait_for(lambda: covered(demo) == 3, timeout=20)  # eng-oncall by id, two groups by name
    assert detaches(demo, "ravi@") == []  # the baseline detaches nobody

    knob(demo, "/members", {"group_id": ONCALL, "user_id": RAVI, "op": "remove"})
    wait_for(lambda: detaches(demo, "ravi@"), timeout=20)
    assert detaches(demo, "ravi@") == [["WS-ONCALL"]]  # Engineering still grants WS-ENG
    history = demo.http.get(
        f"{demo.url}/admin/users/ravi@acme.example/history",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ).json()
    removal = next(e for e in history["events"] if e["kind"] == "removed")
    assert removal["detail"][:2] == [
        "delta: Graph no longer lists them as a member",
        "kept WS-ENG: still granted by entra group e5a1c0de-0000-4000-8000-00000000e001 "
        "(Engineering) (asked Graph)",
    ]

    knob(demo, "/expire-delta", {"status": 400})
    knob(demo, "/members", {"group_id": FINANCE, "user_id": JANE, "op": "remove"})
    wait_for(lambda: detaches(demo, "jane@"), timeout=20)
    assert detaches(demo, "jane@") == [["WS-FIN"]]

    unknown = demo.http.post(
        f"{demo.url}/sandbox/graph/_standin/members",
        json={"group_id": "nope", "user_id": RAVI, "op": "remove"},
    )
    assert unknown.status_code == 404 and "no group nope" in unknown.text
