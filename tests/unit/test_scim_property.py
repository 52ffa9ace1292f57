"""Property: any sequence of SCIM membership operations detaches exactly what was lost.

After each operation the outbox is drained, so the detaches it caused are known. Against a
model of who is in which group (and who is active):
- never remove access still granted: a detached workspace is not granted after the step;
- never lose a removal: every workspace granted before the step and not after is detached.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.store import Database
from app.store import jobs as job_store
from tests.examples import examples
from tests.fake_cor import FakeCor
from tests.inprocess import make_client
from tests.waiting import wait_for_async

USERS = ("ann", "ben", "cat")
GROUPS = {"G0": ("WS-A", "WS-B"), "G1": ("WS-B",), "G2": ("WS-C",), "G3": ()}
MAPPING = """
providers:
  entra:
    cor_source: MICROSOFT_DYNAMICS
    user_id: "{userName}"
groups:
  - {provider: entra, group_name: G0, workspaces: [WS-A, WS-B]}
  - {provider: entra, group_name: G1, workspaces: [WS-B]}
  - {provider: entra, group_name: G2, workspaces: [WS-C]}
"""
SCIM = {"Authorization": "Bearer t", "Content-Type": "application/scim+json"}
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"

user = st.sampled_from(USERS)
group = st.sampled_from(sorted(GROUPS))
members = st.frozensets(user)
operation = st.one_of(
    st.tuples(st.just("add"), user, group),
    st.tuples(st.just("remove"), user, group),
    st.tuples(st.just("remove_entra"), user, group),
    st.tuples(st.just("replace"), group, members),
    st.tuples(st.just("put"), group, members),
    st.tuples(st.just("active"), user, st.booleans()),
)


class Model:
    """Who is in which group and who is active; what that grants."""

    def __init__(self) -> None:
        self.members: dict[str, set[str]] = {g: set() for g in GROUPS}
        self.active = dict.fromkeys(USERS, True)

    def granted(self, name: str) -> set[str]:
        if not self.active[name]:
            return set()
        return {w for g, names in self.members.items() if name in names for w in GROUPS[g]}

    def apply(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        if kind == "add":
            self.members[op[2]].add(op[1])
        elif kind in ("remove", "remove_entra"):
            self.members[op[2]].discard(op[1])
        elif kind in ("replace", "put"):
            self.members[op[1]] = set(op[2])
        else:
            self.active[op[1]] = op[2]


async def send(client: httpx.AsyncClient, ids: dict[str, str], op: tuple[Any, ...]) -> None:
    kind = op[0]

    def body(*ops: dict[str, Any]) -> dict[str, Any]:
        return {"schemas": [PATCH], "Operations": list(ops)}

    if kind == "add":
        request = client.patch(
            f"/scim/v2/Groups/{ids[op[2]]}",
            json=body({"op": "add", "path": "members", "value": [{"value": ids[op[1]]}]}),
            headers=SCIM,
        )
    elif kind == "remove":
        path = f'members[value eq "{ids[op[1]]}"]'
        request = client.patch(
            f"/scim/v2/Groups/{ids[op[2]]}", json=body({"op": "remove", "path": path}), headers=SCIM
        )
    elif kind == "remove_entra":
        value = [{"$ref": None, "value": ids[op[1]]}]
        request = client.patch(
            f"/scim/v2/Groups/{ids[op[2]]}",
            json=body({"op": "Remove", "path": "members", "value": value}),
            headers=SCIM,
        )
    elif kind == "replace":
        value = [{"value": ids[u]} for u in sorted(op[2])]
        request = client.patch(
            f"/scim/v2/Groups/{ids[op[1]]}",
            json=body({"op": "replace", "path": "members", "value": value}),
            headers=SCIM,
        )
    elif kind == "put":
        doc = {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": op[1],
            "members": [{"value": ids[u]} for u in sorted(op[2])],
        }
        request = client.put(f"/scim/v2/Groups/{ids[op[1]]}", json=doc, headers=SCIM)
    else:
        request = client.patch(
            f"/scim/v2/Users/{ids[op[1]]}",
            json=body({"op": "Replace", "path": "active", "value": "True" if op[2] else "False"}),
            headers=SCIM,
        )
    reply = await request
    assert reply.status_code in (200, 204), reply.text


async def drained(db: Database) -> bool:
    with db.begin() as conn:
        return not job_store.select_job_ids(conn, states=[job_store.PENDING, job_store.RUNNING])


async def scenario(folder: Path, ops: list[tuple[Any, ...]]) -> None:
    cor = FakeCor()
    model = Model()
    async with make_client(
        folder, cor, mapping_text=MAPPING, scim_token="t", bridge_poll_seconds=0.01
    ) as client:
        db = Database(f"sqlite:///{folder}/bridge.db")
        ids: dict[str, str] = {}
        for name in USERS:
            doc = {"userName": f"{name}@acme.example", "active": True}
            ids[name] = (await client.post("/scim/v2/Users", json=doc, headers=SCIM)).json()["id"]
        for name in GROUPS:
            doc = {"displayName": name}
            ids[name] = (await client.post("/scim/v2/Groups", json=doc, headers=SCIM)).json()["id"]
        for op in ops:
            before = {u: model.granted(u) for u in USERS}
            seen = len(cor.detaches)
            await send(client, ids, op)
            model.apply(op)
            await wait_for_async(lambda: drained(db))
            sent: dict[str, set[str]] = {u: set() for u in USERS}
            for path, detach in cor.sent()[seen:]:
                name = path.split("/")[-2].split("@")[0]
                sent[name] |= set(detach["workspaces"])  # type: ignore[arg-type]
            for u in USERS:
                after = model.granted(u)
                assert not sent[u] & after, f"{op}: detached {sent[u] & after} still granted to {u}"
                lost = before[u] - after
                assert lost <= sent[u], f"{op}: {u} lost {lost - sent[u]} without a detach"
        db.dispose()


@settings(
    max_examples=examples(30),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(operation, min_size=1, max_size=12))
def test_scim_detaches_exactly_what_was_lost(ops: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(scenario(Path(folder), ops))
