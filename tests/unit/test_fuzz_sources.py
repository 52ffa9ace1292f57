"""Bad input at scale: property-based fuzzing of every source, in process.

Each test starts one app (the real app and lifespan, every source on, COR faked) in a
fixture, and hypothesis drives it from synchronous examples through an anyio blocking
portal, so the app is built once per test function, not once per example. The bodies are
the recorded fixtures, mutated: keys dropped, wrong types, huge and odd strings (NUL, lone
surrogates, RTL marks), deep nesting, truncated JSON, other encodings, garbage bytes, and
wrong content types.

Properties:
1. with the right credentials, no source answers 5xx and nothing raises: the Okta hook,
   SCIM POST/PATCH/PUT on Users and Groups, the Graph webhook, admin POST /admin/changes;
2. an answer 4xx stores nothing (counts and digests of the tables, before and after);
3. a refused credential looks the same whether or not the user or group exists, and
   whatever the body;
4. a body over BRIDGE_MAX_BODY_BYTES is 413 on every source (SCIM in its error schema),
   with or without a Content-Length header, and stores nothing;
5. no identifier steers a call: whatever path-like user id a source carries (".", "..",
   "a/../b", "%2e%2e", ...), every request COR receives is PUT
   /v2/integrations/users/<exactly one segment>/detach and the segment decodes to the id;
   "." and ".." are refused where the id is made and never sent.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote, unquote

import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from sqlalchemy import Table, func, select

from app.store import Database
from app.store import graph as graph_store
from app.store.schema import (
    events,
    graph_inbox,
    graph_subscriptions,
    jobs,
    memberships,
    scim_groups,
    scim_members,
    scim_users,
)
from tests.builders import load_fixture
from tests.fake_cor import FakeCor
from tests.inprocess import ADMIN, OKTA, make_client
from tests.waiting import wait_for

SCIM_TOKEN = "scim-token"
SCIM_JSON = "application/scim+json"
SCIM = {"Authorization": f"Bearer {SCIM_TOKEN}", "Content-Type": SCIM_JSON}
STATE = "graph-client-state-for-tests"
SUB = "092ba742-89d2-4417-a4c7-c120db062842"
GROUP = "0bc7d487-fd6f-41a0-8362-71ec81074f11"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
LIMIT = 4096  # BRIDGE_MAX_BODY_BYTES of the body-size test's app

# Every source on at once: Graph by group id and {id} needs no Graph credentials, and the
# by-name rule is SCIM's (Entra's SCIM sends names).
MAPPING = f"""
providers:
  okta:
    cor_source: OKTA
    user_id: "{{login}}"
  entra:
    cor_source: MICROSOFT_DYNAMICS
    user_id: "{{id}}"
groups:
  - provider: okta
    group_id: 00g8mo0l5wuTxmoIC0h7
    workspaces: [WS-ENG, WS-ONCALL]
  - provider: okta
    group_id: 00g9fin0l5wuTxmoIC0h
    workspaces: [WS-FIN]
  - provider: entra
    group_id: {GROUP}
    workspaces: [WS-ENG]
  - provider: entra
    group_name: Finance
    workspaces: [WS-FIN]
"""

# COR_BRIDGE_FUZZ_EXAMPLES=2000 for a longer hunt; the default keeps the module quick.
FUZZ = settings(
    max_examples=int(os.environ.get("COR_BRIDGE_FUZZ_EXAMPLES", "100")),
    deadline=None,
    # In CI the same examples every run, so a landing is never blocked by a new draw; run it
    # locally (or with a larger COR_BRIDGE_FUZZ_EXAMPLES) to hunt for new ones.
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # one app for all examples, on purpose
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


# -- the app, driven from synchronous hypothesis examples ---------------------------------


@dataclass
class Sent:
    """A request to send: the body as bytes, streamed in chunks (no Content-Length) or not."""

    method: str
    url: str
    body: bytes = b""
    headers: Mapping[str, str | bytes] | None = None
    chunk: int | None = None

    def __repr__(self) -> str:  # short, so a failing example stays readable
        body = self.body if len(self.body) <= 300 else self.body[:300] + b"..."
        return f"Sent({self.method} {self.url} headers={self.headers} chunk={self.chunk} {body!r})"


@dataclass
class Running:
    """One running app: a portal to its event loop, the client, and its database."""

    portal: BlockingPortal
    client: httpx.AsyncClient
    db: Database
    ids: dict[str, str]
    cor: FakeCor
    memo: dict[str, Any] = field(default_factory=dict)
    graph_took: bool = False

    def send(self, request: Sent) -> httpx.Response:
        return self.portal.call(self._send, request)

    async def _send(self, request: Sent) -> httpx.Response:
        content: bytes | AsyncIterator[bytes] = request.body
        if request.chunk is not None:
            content = _stream(request.body, request.chunk)
        headers = [
            (k.encode(), v if isinstance(v, bytes) else v.encode("latin-1"))
            for k, v in (request.headers or {}).items()
        ]
        return await self.client.request(
            request.method, request.url, content=content, headers=headers
        )

    def settle(self) -> None:
        """After Graph took a delivery, wait until its resolver is done: the resolver writes
        events and jobs in the background. Nothing else writes what `snapshot` reads."""
        for _ in range(500):
            if not self.graph_took:
                return
            with self.db.begin() as conn:
                self.graph_took = graph_store.inbox_stats(conn)["pending"] > 0
            time.sleep(0.01 if self.graph_took else 0)
        raise AssertionError("the Graph inbox never drained")

    def checked(self, request: Sent) -> httpx.Response:
        """Properties 1 and 2: never 5xx, never raises; a 4xx leaves the store as it was."""
        self.settle()
        before = snapshot(self.db)
        reply = self.send(request)
        self.graph_took |= request.url.startswith("/hooks/graph") and reply.status_code < 300
        if currently_in_test_context():
            event(f"{request.method} {reply.status_code}")
        assert reply.status_code < 500, f"{reply.status_code} {reply.text[:500]}"
        if reply.status_code >= 400:
            assert snapshot(self.db) == before, f"a {reply.status_code} stored something"
        return reply


async def _stream(body: bytes, chunk: int) -> AsyncIterator[bytes]:
    for start in range(0, len(body), chunk):
        yield body[start : start + chunk]


@contextmanager
def running(
    tmp_path: Path, database_url: str | None = None, mapping: str = MAPPING, **overrides: Any
) -> Iterator[Running]:
    """The app with every source on, one SCIM user and group, one Graph subscription."""
    settings_: dict[str, Any] = {
        "scim_token": SCIM_TOKEN,
        "graph_client_state": STATE,
        "bridge_poll_seconds": 0.02,
        **overrides,
    }
    cor = FakeCor()
    cm = make_client(tmp_path, cor, mapping_text=mapping, database_url=database_url, **settings_)
    with start_blocking_portal() as portal, portal.wrap_async_context_manager(cm) as client:
        transport = cast(httpx.ASGITransport, client._transport)
        db: Database = transport.app.state.bridge.db  # type: ignore[attr-defined]
        now = datetime.now(UTC)
        with db.begin() as conn:
            graph_store.put_subscription(
                conn, SUB, f"/groups/{GROUP}", now + timedelta(days=20), now
            )
        app = Running(portal, client, db, {}, cor)
        for name in ("jane", "bob"):
            body = {"schemas": [USER_SCHEMA], "userName": f"{name}@acme.example", "active": True}
            reply = app.send(Sent("POST", "/scim/v2/Users", json.dumps(body).encode(), SCIM))
            assert reply.status_code == 201, reply.text
            app.ids[name] = reply.json()["id"]
        group = {
            "schemas": [GROUP_SCHEMA],
            "displayName": "Finance",
            "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
            "members": [{"value": app.ids["jane"]}, {"value": app.ids["bob"]}],
        }
        reply = app.send(Sent("POST", "/scim/v2/Groups", json.dumps(group).encode(), SCIM))
        assert reply.status_code == 201, reply.text
        app.ids["Finance"] = reply.json()["id"]
        yield app


def _digest(rows: Any) -> str:
    return hashlib.sha256("\n".join(sorted(repr(tuple(r)) for r in rows)).encode()).hexdigest()


def snapshot(db: Database) -> dict[str, Any]:
    """What a refused request must not change (the worker only updates jobs' states)."""
    tables: list[Table] = [events, jobs, memberships, scim_users, scim_groups, scim_members]
    tables += [graph_subscriptions, graph_inbox]
    with db.begin() as conn:
        found: dict[str, Any] = {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar_one() for t in tables
        }
        found["events*"] = _digest(conn.execute(select(events.c.id, events.c.decision)))
        found["jobs*"] = conn.execute(select(func.max(jobs.c.id))).scalar()
        found["inbox*"] = conn.execute(select(func.max(graph_inbox.c.id))).scalar()
        found["memberships*"] = _digest(conn.execute(select(memberships)))
        for t in (scim_users, scim_groups):
            found[f"{t.name}*"] = _digest(conn.execute(select(t.c.id, t.c.version)))
        found["scim_members*"] = _digest(conn.execute(select(scim_members)))
        found["graph_subscriptions*"] = _digest(conn.execute(select(graph_subscriptions)))
    return found


# -- input: JSON-ish values, odd strings, mutations of the fixtures, encodings -------------

# Times at the edges: aware but out of range once in UTC, naive, impossible, as numbers.
ODD_TIMES: list[Any] = [
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999Z",
    "2026-02-30T00:00:00Z",
    "2026-03-03T20:23:17",
    "2026-03-03T20:23:17.573+25:00",
    "1970-01-01T00:00:00Z",
    "2026-03-03T20:23:17.573Z",
    "now",
    0,
    -1,
    253402300800,
    -62135596800,
    1e20,
]
TIME_KEYS = frozenset(
    {"published", "eventTime", "occurred_at", "subscriptionExpirationDateTime", "since", "until"}
)
ODD_STRINGS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ud800",
    "x\udfffy",
    "\u202e\u0644\u0627",
    "\ufeff",
    "\U0001f642" * 3,
    "null",
    "true",
    "0",
    "-1",
    "1e999",
    "NaN",
    "%00%2F..%2F",
    "../../etc/passwd",
    "<script>alert(1)</script>",
    "' OR '1'='1",
    "\r\nX-Injected: 1",
    "a" * 300,
    "00g8mo0l5wuTxmoIC0h7",
    GROUP,
    "jane@acme.example",
    "SUCCESS",
    "group.user_membership.remove",
    "user.lifecycle.deactivate",
    "User",
    "UserGroup",
    "remove",
    "Remove",
    "add",
    "replace",
    'members[value eq "x"]',
    "members[",
    "emails[type eq",
    USER_SCHEMA,
    PATCH_SCHEMA,
    "reauthorizationRequired",
    "subscriptionRemoved",
    "#microsoft.graph.group",
    "okta",
    "entra",
]
KEYS = st.one_of(
    st.text(max_size=10),
    st.sampled_from(
        [
            "id", "type", "value", "path", "op", "members", "active", "schemas", "Operations",
            "clientState", "subscriptionId", "resourceData", "members@delta", "@removed",
            "lifecycleEvent", "events", "data", "eventType", "target", "uuid", "published",
            "outcome", "result", "alternateId", "userName", "displayName", "externalId",
            "emails", "provider", "cor_user_id", "workspaces", "user", "group", "change",
            "event_id", "occurred_at", "$ref", "display", "name.givenName",
        ]
    ),
)  # fmt: skip
odd_text = st.one_of(
    st.sampled_from(ODD_STRINGS),
    st.text(max_size=30),
    st.text(st.characters(codec="utf-16", exclude_categories=()), max_size=8),  # surrogates
)
huge_text = st.builds(
    lambda unit, n: unit * n,
    st.sampled_from(["x", "\u00e9", "\U0001d518", "\x00", "\ud800", "ab\x00"]),
    st.integers(1_000, 120_000),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**40]),
    st.floats(),
    odd_text,
)
json_values = st.recursive(
    scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(KEYS, kids, max_size=4),
    max_leaves=12,
)


DEPTHS = [100, 990, 5000]  # nesting depths: under, near and over the recursion limit


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            yield from _paths(value, (*prefix, index))


def _retyped(value: Any) -> st.SearchStrategy[Any]:
    if isinstance(value, str):
        return st.one_of(st.integers(), st.none(), st.booleans(), st.just([value]), st.just({}))
    if isinstance(value, (list, dict)):
        return st.one_of(st.just(json.dumps(value)), st.integers(), st.none(), st.just("x"))
    return st.one_of(st.just(str(value)), st.just([value]), st.just({"value": value}))


def _nested(value: Any, depth: int, as_list: bool) -> Any:
    """`value` under `depth` levels of arrays or objects; past 30 levels a marker that
    `encoded` expands, since json.dumps itself stops at Python's recursion limit."""
    if depth > 30:
        return f"@@deep:{depth}:{'list' if as_list else 'object'}@@"
    for _ in range(depth):
        value = [value] if as_list else {"a": value}
    return value


def _deep(depth: int, kind: str) -> str:
    if kind == "list":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def _expand(text: str) -> str:
    return re.sub(r'"@@deep:(\d+):(\w+)@@"', lambda m: _deep(int(m[1]), m[2]), text)


# "odd" twice: odd values in the right places find the most.
ACTIONS = ["odd", "odd", "drop", "replace", "retype", "huge", "nest", "repeat", "empty", "extra"]


@st.composite
def mutated(draw: st.DrawFn, base: Any, hot: frozenset[str] = frozenset()) -> Any:
    """`base` with up to four random mutations; most land on a `hot` key (what the source
    reads), the others anywhere. Sometimes none: the fixture itself, as recorded."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(0, 4))):
        paths = list(_paths(doc))
        hot_keys = sorted({p[-1] for p in paths if p and p[-1] in hot})
        if hot_keys and draw(st.integers(0, 3)) > 0:  # a hot key first, then one of its places
            key = draw(st.sampled_from(hot_keys))
            path = draw(st.sampled_from([p for p in paths if p and p[-1] == key]))
        else:
            path = draw(st.sampled_from(paths))
        parent, key = None, None
        value = doc
        for step in path:
            parent, key = value, step
            value = value[step]
        action = draw(st.sampled_from(ACTIONS))
        if action == "drop":
            if parent is None:
                doc = None
                continue
            del parent[key]
            continue
        if action == "replace":
            new = draw(json_values)
        elif action == "odd" and key in TIME_KEYS and draw(st.booleans()):
            new = draw(st.sampled_from(ODD_TIMES))
        elif action == "odd":
            new = draw(odd_text)
        elif action == "retype":
            new = draw(_retyped(value))
        elif action == "huge":
            new = draw(huge_text)
        elif action == "nest":
            new = _nested(value, draw(st.sampled_from([1, 2, 30, *DEPTHS])), draw(st.booleans()))
        elif action == "repeat":
            times = draw(st.integers(2, 40))
            new = value * times if isinstance(value, list) else [value] * times
        elif action == "empty":
            new = type(value)() if isinstance(value, (list, dict, str)) else 0
        else:  # extra
            new = value
            if isinstance(value, dict):
                value[draw(KEYS)] = draw(json_values)
        if parent is None:
            doc = new
        else:
            parent[key] = new
    return doc


RAW = st.one_of(
    st.builds(
        lambda n, kind: _deep(n, kind).encode(),
        st.sampled_from(DEPTHS),
        st.sampled_from(["list", "object"]),
    ),
    st.binary(max_size=300),
    st.sampled_from(
        [
            b"",
            b"   \n",
            b"null",
            b"[]",
            b"{}",
            b'"text"',
            b"1",
            b"NaN",
            b"-Infinity",
            b'{"a":1,"a":2}',
            b"\xff\xfe{\x00}\x00",
            b"\xc3\x28",
            b'{"\xed\xa0\x80": 1}',
        ]
    ),
)


@st.composite
def encoded(draw: st.DrawFn, doc: Any) -> bytes:
    """A document as a body: usually JSON, sometimes broken on the way."""
    how = draw(
        st.sampled_from(
            ["ascii"] * 8 + ["raw"] * 2 + ["utf8", "truncated", "bom", "utf16", "trailing"]
        )
    )
    if how == "raw":
        return draw(RAW)
    if how == "ascii":  # lone surrogates travel as \ud800 escapes: valid JSON, odd text
        return _expand(json.dumps(doc)).encode()
    text = _expand(json.dumps(doc, ensure_ascii=False))
    if how == "utf16":
        return text.encode("utf-16", "surrogatepass")
    body = text.encode("utf-8", "surrogatepass")  # lone surrogates: not UTF-8 at all
    if how == "truncated":
        return body[: draw(st.integers(0, max(len(body) - 1, 0)))]
    if how == "bom":
        return b"\xef\xbb\xbf" + body
    if how == "trailing":
        return body + draw(st.sampled_from([b"}", b"\x00", b" x", b",", b"\xff"]))
    return body


CONTENT_TYPES = st.sampled_from(
    [
        None,
        "application/json",
        "application/json",
        "application/scim+json",
        "application/scim+json; charset=utf-8",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "garbage/\x7f",
        "",
    ]
)


def content_type(proper: str) -> st.SearchStrategy[str | None]:
    """Mostly the one the source expects, so bodies get past it; sometimes any."""
    return st.one_of(st.just(proper), st.just(proper), st.just(proper), CONTENT_TYPES)


def with_type(
    headers: Mapping[str, str | bytes], content_type: str | None
) -> dict[str, str | bytes]:
    out = {k: v for k, v in headers.items() if k.lower() != "content-type"}
    if content_type is not None:
        out["Content-Type"] = content_type
    return out


OKTA_HOT = frozenset(
    {"eventType", "eventId", "data", "events", "uuid", "published", "outcome", "result",
     "target", "id", "type", "alternateId", "displayName"}
)  # fmt: skip
GRAPH_HOT = frozenset(
    {"value", "id", "subscriptionId", "subscriptionExpirationDateTime", "clientState",
     "changeType", "resource", "resourceData", "members@delta", "@removed", "@odata.type",
     "lifecycleEvent"}
)  # fmt: skip
SCIM_HOT = frozenset(
    {"schemas", "userName", "externalId", "active", "emails", "value", "primary", "type",
     "displayName", "members", "Operations", "op", "path", "id", "name", "givenName", "$ref",
     "display", "meta", "resourceType"}
)  # fmt: skip
ADMIN_HOT = frozenset(
    {"provider", "change", "user", "group", "cor_user_id", "workspaces", "event_id",
     "occurred_at", "id", "login", "email", "externalId", "userName", "name", "ids", "filter",
     "state", "workspace", "since", "until", "dry_run", "limit"}
)  # fmt: skip


def okta_bases() -> list[Any]:
    return [
        load_fixture("okta/event-hook-membership-remove.json"),
        load_fixture("okta/event-hook-batch.json"),
    ]


def graph_bases() -> list[Any]:
    future = (datetime.now(UTC) + timedelta(days=10)).isoformat()
    bases = []
    for name in ("notification-member-removed.json", "lifecycle-reauthorization-required.json"):
        body = load_fixture(f"graph/{name}")
        for note in body["value"]:
            note.update(clientState=STATE, subscriptionExpirationDateTime=future)
        bases.append(body)
    return bases


def scim_bases(ids: Mapping[str, str]) -> list[tuple[str, str, Any]]:
    """(method, path, body) from the Entra and Okta SCIM sequences, ids filled in."""
    saved = {
        "user_id": ids["jane"],
        "user2_id": ids["bob"],
        "group_id": ids["Finance"],
    }
    steps = []
    for name in (
        "entra-scim/default-dialect.json",
        "entra-scim/aadOptscim062020-dialect.json",
        "okta-scim/group-push.json",
    ):
        for step in load_fixture(name):
            if step["method"] not in ("POST", "PATCH", "PUT") or step.get("body") is None:
                continue
            text = json.dumps(step["body"])
            path = step["path"]
            for key, value in saved.items():
                text = text.replace("{" + key + "}", value)
                path = path.replace("{" + key + "}", value)
            steps.append((step["method"], path, json.loads(text)))
    return steps


ADMIN_BASES: list[dict[str, Any]] = [
    {"provider": "okta", "cor_user_id": "li@acme.example", "workspaces": ["WS-OPS"]},
    {
        "provider": "okta",
        "change": "removed",
        "user": {"id": "00ujane", "login": "jane@acme.example", "email": "jane@acme.example"},
        "group": {"id": "00g8mo0l5wuTxmoIC0h7", "name": "eng-oncall"},
        "event_id": "admin-fuzz-1",
        "occurred_at": "2026-03-03T20:23:17Z",
    },
    {
        "provider": "entra",
        "change": "user_deactivated",
        "user": {"id": "ravi", "userName": "ravi@acme.example", "externalId": "ravi"},
    },
]


REPLAY_BASE = {
    "filter": {"state": ["dead"], "cor_user_id": "li@acme.example", "since": "2026-03-03T00:00Z"},
    "dry_run": True,
}


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def app(tmp_path: Path, database_url: str) -> Iterator[Running]:
    """On SQLite and on PostgreSQL. No limit on failed authentications: property 3 compares
    401s, not the limiter's 429s."""
    with running(tmp_path, database_url, bridge_auth_failures_per_minute=0) as running_app:
        yield running_app


@pytest.fixture
def small_app(tmp_path: Path, database_url: str) -> Iterator[Running]:
    with running(tmp_path, database_url, bridge_max_body_bytes=LIMIT) as running_app:
        yield running_app


# -- 1 and 2: no 5xx, nothing raises, a 4xx stores nothing ---------------------------------


@FUZZ
@given(data=st.data())
def test_okta_hook_survives_bad_input(app: Running, data: st.DataObject) -> None:
    doc = data.draw(
        st.sampled_from(okta_bases()).flatmap(lambda b: mutated(b, OKTA_HOT)), label="doc"
    )
    body = data.draw(encoded(doc), label="body")
    headers = with_type(OKTA, data.draw(content_type("application/json"), label="content-type"))
    app.checked(Sent("POST", "/hooks/okta", body, headers))


@FUZZ
@given(data=st.data())
def test_scim_writes_survive_bad_input(app: Running, data: st.DataObject) -> None:
    method, path, base = data.draw(st.sampled_from(scim_bases(app.ids)), label="step")
    # Sometimes another resource than the fixture's: missing, odd, or of the other type.
    if method != "POST" and data.draw(st.booleans(), label="other id"):
        kind = data.draw(st.sampled_from(["Users", "Groups"]))
        other = data.draw(st.one_of(st.sampled_from(sorted(app.ids.values())), odd_text))
        path = f"/scim/v2/{kind}/{quote(other.encode('utf-8', 'surrogatepass'), safe='')}"
    doc = data.draw(mutated(base, SCIM_HOT), label="doc")
    body = data.draw(encoded(doc), label="body")
    headers = with_type(SCIM, data.draw(content_type(SCIM_JSON), label="content-type"))
    app.checked(Sent(method, path, body, headers))


@FUZZ
@given(data=st.data())
def test_graph_webhook_survives_bad_input(app: Running, data: st.DataObject) -> None:
    doc = data.draw(
        st.sampled_from(graph_bases()).flatmap(lambda b: mutated(b, GRAPH_HOT)), label="doc"
    )
    body = data.draw(encoded(doc), label="body")
    path = data.draw(st.sampled_from(["/hooks/graph", "/hooks/graph/lifecycle"]), label="path")
    headers = with_type({}, data.draw(content_type("application/json"), label="content-type"))
    if data.draw(st.integers(0, 9), label="handshake") == 0:
        token = data.draw(
            st.one_of(odd_text, st.sampled_from(["x" * 4096, "x" * 4097, "\u00e9" * 5000])),
            label="validationToken",
        )
        path += "?validationToken=" + quote(token.encode("utf-8", "surrogatepass"), safe="")
    app.checked(Sent("POST", path, body, headers))


@FUZZ
@given(data=st.data())
def test_admin_api_survives_bad_input(app: Running, data: st.DataObject) -> None:
    bases = [("/admin/changes", b) for b in ADMIN_BASES] + [("/admin/replay", REPLAY_BASE)]
    path, base = data.draw(st.sampled_from(bases), label="path")
    doc = data.draw(mutated(base, ADMIN_HOT), label="doc")
    body = data.draw(encoded(doc), label="body")
    headers = with_type(ADMIN, data.draw(content_type("application/json"), label="content-type"))
    app.checked(Sent("POST", path, body, headers))


# NUL, a lone surrogate, a long RTL override, an identifier PostgreSQL could not index.
NASTY = ["\x00", "\ud800", "\u202e" * 500, "\u00e9" * 1500]


def _with(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    doc = copy.deepcopy(doc)
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return doc


def test_odd_strings_in_each_field_are_taken_or_refused_never_5xx(app: Running) -> None:
    """Every string a source reads, set to each of NASTY in turn (the fuzzers sample them)."""
    as_json = {"Content-Type": "application/json"}
    okta = load_fixture("okta/event-hook-membership-remove.json")
    cases: list[tuple[str, Mapping[str, str], Any, frozenset[str]]] = [
        ("/hooks/okta", {**OKTA, **as_json}, okta, OKTA_HOT),
        ("/hooks/graph", as_json, graph_bases()[0], GRAPH_HOT),
        ("/hooks/graph", as_json, graph_bases()[1], GRAPH_HOT),
        *[("/admin/changes", {**ADMIN, **as_json}, base, ADMIN_HOT) for base in ADMIN_BASES],
        ("/admin/replay", {**ADMIN, **as_json}, REPLAY_BASE, ADMIN_HOT),
    ]
    for method, path, base in scim_bases(app.ids)[:8]:
        cases.append((f"{method} {path}", SCIM, base, SCIM_HOT))
    failures, sent = [], 0
    for target, headers, base, hot in cases:
        method, _, url = target.rpartition(" ")
        places = [p for p in _paths(base) if p and p[-1] in hot and isinstance(_at(base, p), str)]
        for place in places:
            for value in NASTY:
                sent += 1
                doc = _unique(_with(base, place, value), sent)
                request = Sent(method or "POST", url, json.dumps(doc).encode(), headers)
                try:
                    app.checked(request)
                except Exception as exc:
                    failures.append(f"{target} {place} = {value[:8]!r}: {exc!r}"[:300])
    assert sent > 150, sent
    assert not failures, "\n".join(failures)


def test_an_odd_event_does_not_sink_the_rest_of_an_okta_batch(app: Running) -> None:
    """Okta does not retry a 4xx: a lone surrogate or an over-long id in one event must not
    cost the batch its other events."""
    doc = load_fixture("okta/event-hook-membership-remove.json")
    good = doc["data"]["events"][0]
    odd_name, long_id = copy.deepcopy(good), copy.deepcopy(good)
    odd_name["uuid"], odd_name["target"][0]["displayName"] = "odd-name", "Jane \ud800 Doe"
    long_id["uuid"], long_id["target"][0]["id"] = "long-id", "u" * 3000
    doc["data"]["events"] = [odd_name, long_id, good]
    reply = app.checked(Sent("POST", "/hooks/okta", json.dumps(doc).encode(), OKTA))
    assert reply.status_code == 200, reply.text
    with app.db.begin() as conn:
        rows = conn.execute(select(events.c.source_event_id, events.c.decision))
        decided = {event_id: decision for event_id, decision in rows}
    assert decided[good["uuid"]] == "queued", decided
    assert decided["odd-name"] == "queued", decided
    assert decided["long-id"] == "ignored", decided


def _at(doc: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        doc = doc[step]
    return doc


def _unique(doc: Any, n: int) -> Any:
    """New event ids and user names, so no case is only a duplicate of an earlier one."""
    if isinstance(doc, dict):
        for event in (doc.get("data") or {}).get("events") or []:
            if isinstance(event, dict) and event.get("uuid") not in NASTY:
                event["uuid"] = f"{event['uuid']}-{n}"
        if doc.get("event_id") not in (None, *NASTY):
            doc["event_id"] = f"{doc['event_id']}-{n}"
        if isinstance(doc.get("userName"), str) and doc["userName"] not in NASTY:
            doc["userName"] = f"{n}-{doc['userName']}"
    return doc


def test_times_at_the_edges_are_taken_or_refused_never_5xx(app: Running) -> None:
    """Every time a source reads, set to each of ODD_TIMES (the fuzzers rarely pick them)."""
    failures = []
    for index, value in enumerate(ODD_TIMES):
        okta = load_fixture("okta/event-hook-membership-remove.json")
        okta["data"]["events"][0].update(published=value, uuid=f"odd-time-{index}")
        graph = graph_bases()[0]
        graph["value"][0]["subscriptionExpirationDateTime"] = value
        admin = {**ADMIN_BASES[1], "occurred_at": value, "event_id": f"odd-time-{index}"}
        as_json = {"Content-Type": "application/json"}
        requests = [
            Sent("POST", "/hooks/okta", json.dumps(okta).encode(), {**OKTA, **as_json}),
            Sent("POST", "/hooks/graph", json.dumps(graph).encode(), as_json),
            Sent("POST", "/admin/changes", json.dumps(admin).encode(), {**ADMIN, **as_json}),
            Sent("GET", f"/admin/jobs?since={quote(str(value))}", b"", ADMIN),
        ]
        for request in requests:
            try:
                app.checked(request)
            except Exception as exc:
                failures.append(f"{request.method} {request.url.split('?')[0]} {value!r}: {exc!r}")
    assert not failures, "\n".join(failures)


# -- 3: refused credentials look the same whatever they guard -------------------------------


def _valid_bearer(header: str, token: str) -> bool:
    scheme, _, rest = header.partition(" ")
    return scheme.lower() == "bearer" and rest.strip() == token


header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=40,
)
wrong_bearer = st.one_of(
    header_text,
    st.builds(lambda t: f"Bearer {t}", header_text),
    st.sampled_from(
        [
            "",
            "Bearer",
            "Bearer ",
            f"Bearer {SCIM_TOKEN[:-1]}",
            f"Bearer {SCIM_TOKEN}x",
            f"Bearer {SCIM_TOKEN.upper()}",
            f"Basic {SCIM_TOKEN}",
            f"Token {SCIM_TOKEN}",
            SCIM_TOKEN,
        ]
    ),
).filter(lambda h: not _valid_bearer(h, SCIM_TOKEN))


def _answer(reply: httpx.Response) -> tuple[int, bytes, list[tuple[str, str]]]:
    headers = sorted((k, v) for k, v in reply.headers.items() if k != "x-request-id")
    return reply.status_code, reply.content, headers


@FUZZ
@given(data=st.data())
def test_a_wrong_scim_token_looks_the_same_for_existing_and_missing_resources(
    app: Running, data: st.DataObject
) -> None:
    auth = data.draw(wrong_bearer, label="authorization")
    method = data.draw(st.sampled_from(["GET", "PATCH", "PUT", "DELETE"]), label="method")
    kind, existing = data.draw(
        st.sampled_from([("Users", app.ids["jane"]), ("Groups", app.ids["Finance"])]),
        label="resource",
    )
    missing = data.draw(
        st.one_of(st.uuids().map(lambda u: u.hex), st.text("abcdef0123456789-", min_size=1)),
        label="missing id",
    ).replace(existing, "")
    body = b"" if method in ("GET", "DELETE") else data.draw(encoded({"schemas": [PATCH_SCHEMA]}))
    headers: dict[str, str | bytes] = {"Content-Type": "application/scim+json"}
    if auth or data.draw(st.booleans(), label="empty header"):
        headers["Authorization"] = auth.encode("latin-1")
    answers = []
    for resource_id in (existing, missing or "nobody"):
        reply = app.checked(Sent(method, f"/scim/v2/{kind}/{resource_id}", body, headers))
        assert reply.status_code == 401, reply.text
        assert reply.json()["schemas"] == [ERROR_SCHEMA]
        assert reply.headers["www-authenticate"].startswith("Bearer")
        answers.append(_answer(reply))
    assert answers[0] == answers[1]


@FUZZ
@given(data=st.data())
def test_a_wrong_okta_secret_gets_the_same_answer_whatever_the_body(
    app: Running, data: st.DataObject
) -> None:
    secret = data.draw(header_text.filter(lambda s: s != OKTA["Authorization"]), label="secret")
    headers: dict[str, str | bytes] = {"Authorization": secret.encode("latin-1")}
    if data.draw(st.booleans(), label="no header"):
        headers = {}
    if "okta 401" not in app.memo:
        app.memo["okta 401"] = app.checked(Sent("POST", "/hooks/okta", b"{}", {"X": "y"}))
    doc = data.draw(
        st.sampled_from(okta_bases()).flatmap(lambda b: mutated(b, OKTA_HOT)), label="doc"
    )
    body = data.draw(encoded(doc), label="body")
    if data.draw(st.integers(0, 19), label="oversized") == 0:
        body = b"x" * (2 * 1024 * 1024)  # over the limit: refused unread, and still a 401
    content_type = data.draw(CONTENT_TYPES, label="content-type")
    reply = app.checked(Sent("POST", "/hooks/okta", body, with_type(headers, content_type)))
    assert reply.status_code == 401
    assert _answer(reply) == _answer(app.memo["okta 401"])


# -- 4: bodies over the limit are 413 everywhere and store nothing --------------------------


def _source_request(app: Running, source: str, body: bytes) -> Sent:
    if source == "okta":
        return Sent("POST", "/hooks/okta", body, {**OKTA, "Content-Type": "application/json"})
    if source == "graph":
        return Sent("POST", "/hooks/graph", body, {"Content-Type": "application/json"})
    if source == "admin":
        return Sent("POST", "/admin/changes", body, {**ADMIN, "Content-Type": "application/json"})
    kind, method = source.split(" ")
    path = "/scim/v2/" + kind
    if method != "POST":
        path += "/" + app.ids["jane" if kind == "Users" else "Finance"]
    return Sent(method, path, body, SCIM)


SOURCES = [
    "okta",
    "graph",
    "admin",
    "Users POST",
    "Users PATCH",
    "Users PUT",
    "Groups POST",
    "Groups PATCH",
    "Groups PUT",
]


def _padded(size: int, source: str) -> bytes:
    """A well-formed body of exactly `size` bytes (an unknown key carries the padding)."""
    doc: dict[str, Any]
    if source == "okta":
        doc = load_fixture("okta/event-hook-membership-remove.json")
    elif source == "graph":
        doc = graph_bases()[0]
    elif source == "admin":
        doc = dict(ADMIN_BASES[0])
    elif source.endswith("PATCH"):
        doc = {"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "path": "active",
                                                          "value": True}]}  # fmt: skip
    elif source.startswith("Users"):
        doc = {"schemas": [USER_SCHEMA], "userName": "pad@acme.example"}
    else:
        doc = {"schemas": [GROUP_SCHEMA], "displayName": "padded"}
    doc["padding"] = ""
    short = len(json.dumps(doc).encode())
    doc["padding"] = "x" * max(size - short, 0)
    return json.dumps(doc).encode()


@FUZZ
@given(
    source=st.sampled_from(SOURCES),
    size=st.integers(LIMIT + 1, 16 * LIMIT),
    well_formed=st.booleans(),
    chunk=st.one_of(st.none(), st.sampled_from([1, 1000, LIMIT, LIMIT + 1, 65536])),
    garbage=st.binary(min_size=1, max_size=64),
    # A Content-Length that lies (ASGI delivers what was sent): the count must not trust it.
    declared=st.one_of(st.none(), st.sampled_from(["0", "10", str(LIMIT), "abc", "-1", "+1"])),
)
def test_bodies_over_the_limit_are_413_everywhere_and_store_nothing(
    small_app: Running,
    source: str,
    size: int,
    well_formed: bool,
    chunk: int | None,
    garbage: bytes,
    declared: str | None,
) -> None:
    body = _padded(size, source) if well_formed else (garbage * size)[:size]
    assert len(body) == size > LIMIT
    request = replace(_source_request(small_app, source, body), chunk=chunk)
    if declared is not None:
        request.headers = {**(request.headers or {}), "Content-Length": declared}
    reply = small_app.checked(request)
    assert reply.status_code == 413, f"{source}: {reply.status_code} {reply.text[:300]}"
    if source not in ("okta", "graph", "admin"):
        assert reply.headers["content-type"].startswith("application/scim+json")
        error = reply.json()
        assert error["schemas"] == [ERROR_SCHEMA] and str(error["status"]) == "413"


def test_a_body_of_exactly_the_limit_is_not_413(small_app: Running) -> None:
    for source in SOURCES:
        for chunk in (None, 1000):
            body = _padded(LIMIT, source)
            reply = small_app.checked(
                replace(_source_request(small_app, source, body), chunk=chunk)
            )
            assert reply.status_code != 413, f"{source} chunk={chunk}: {reply.text[:300]}"


# -- 5: no identifier steers a call ----------------------------------------------------------

# SCIM counts as okta here, so its userName is the {login} of the template, as the Okta
# hook's alternateId is; Graph (no credentials) has only the member id: {id}. The by-name
# Finance rule is SCIM's, so it moves to okta with it.
ID_MAPPING = MAPPING.replace(
    "provider: entra\n    group_name: Finance", "provider: okta\n    group_name: Finance"
)
assert ID_MAPPING != MAPPING
DOTS = frozenset({".", ".."})
PATH_LIKE = [
    ".", "..", "a/../b", "%2e%2e", "../../v1/oauth/token", "./", "/..", "..%2F", ".%2e",
    "%2E.", "...", "a/./b", "..\\..", "?x=/..", "#/..", ";..", "/", "//", "~",
]  # fmt: skip
path_like_ids = st.one_of(
    st.sampled_from(sorted(DOTS)),  # the ids that must never be sent: often
    st.sampled_from(PATH_LIKE),
    st.lists(
        st.sampled_from([".", "..", "/", "%2e", "%2f", "%", "\\", "?", "#", ";", "a", "\u00e9"]),
        min_size=1,
        max_size=6,
    ).map("".join),
)
AS_JSON = {"Content-Type": "application/json"}
DETACH_PATH = re.compile(r"/v2/integrations/users/([^/]+)/detach")


@pytest.fixture
def id_app(tmp_path: Path, database_url: str) -> Iterator[Running]:
    with running(tmp_path, database_url, mapping=ID_MAPPING, scim_provider="okta") as app:
        yield app


def _okta_removal(ident: str, n: int) -> Sent:
    doc = load_fixture("okta/event-hook-membership-remove.json")
    event = doc["data"]["events"][0]
    event["uuid"] = f"steer-{n}"
    user = next(t for t in event["target"] if t["type"] == "User")
    user.update(id=f"00usteer{n}", alternateId=ident)
    return Sent("POST", "/hooks/okta", json.dumps(doc).encode(), {**OKTA, **AS_JSON})


def _scim_removal(app: Running, ident: str) -> list[Sent]:
    """The user with userName `ident` joins Finance and leaves it (Okta's dialect)."""
    users: dict[str, str] = app.memo.setdefault("scim users", {})
    if ident not in users:
        body = {"schemas": [USER_SCHEMA], "userName": ident, "active": True}
        reply = app.checked(Sent("POST", "/scim/v2/Users", json.dumps(body).encode(), SCIM))
        assert reply.status_code == 201, reply.text
        users[ident] = reply.json()["id"]
    user = users[ident]
    group = f"/scim/v2/Groups/{app.ids['Finance']}"
    add = {"op": "add", "path": "members", "value": [{"value": user}]}
    remove = {"op": "remove", "path": f'members[value eq "{user}"]'}
    return [
        Sent("PATCH", group, json.dumps({"schemas": [PATCH_SCHEMA], "Operations": [op]}).encode(),
             SCIM)
        for op in (add, remove)
    ]  # fmt: skip


def _graph_removal(ident: str, n: int) -> list[Sent]:
    """Graph says `ident` joined the group, then that they left it."""
    sent = []
    for step, entry in enumerate(({"id": ident}, {"id": ident, "@removed": "deleted"})):
        doc = graph_bases()[0]
        doc["value"][0].update(id=f"steer-{n}-{step}")
        doc["value"][0]["resourceData"]["members@delta"] = [entry]
        sent.append(Sent("POST", "/hooks/graph", json.dumps(doc).encode(), AS_JSON))
    return sent


def _admin_removal(ident: str, n: int) -> Sent:
    body = {"provider": "okta", "cor_user_id": ident, "workspaces": ["WS-OPS"],
            "event_id": f"steer-{n}"}  # fmt: skip
    return Sent("POST", "/admin/changes", json.dumps(body).encode(), {**ADMIN, **AS_JSON})


def _idle(app: Running) -> bool:
    with app.db.begin() as conn:
        busy = select(func.count()).where(jobs.c.state.in_(["pending", "running"]))
        return conn.execute(busy).scalar_one() == 0


@FUZZ
@given(data=st.data())
def test_no_identifier_steers_a_call_to_cor(id_app: Running, data: st.DataObject) -> None:
    app = id_app
    ident = data.draw(path_like_ids, label="id")
    source = data.draw(st.sampled_from(["okta", "scim", "graph", "admin"]), label="source")
    n = app.memo["n"] = app.memo.get("n", 0) + 1
    before = len(app.cor.raw_paths)
    if source == "okta":
        requests = [_okta_removal(ident, n)]
    elif source == "scim":
        requests = _scim_removal(app, ident)
    elif source == "graph":
        requests = _graph_removal(ident, n)
    else:
        requests = [_admin_removal(ident, n)]
    replies = [app.checked(request) for request in requests]
    refused = ident in DOTS
    event(f"{source} {'refused' if refused else 'sent'}")
    if source == "admin" and refused:
        assert replies[0].status_code == 422 and "not a usable identifier" in replies[0].text
    else:
        assert all(r.status_code < 300 for r in replies), [r.text for r in replies]
    expected = f"/v2/integrations/users/{quote(ident, safe='')}/detach"
    if not refused:
        sent_it = lambda: expected in app.cor.raw_paths[before:]  # noqa: E731
        wait_for(sent_it, what=f"a detach of {ident!r}", interval=0.01)
    app.settle()
    wait_for(lambda: _idle(app), what="the worker to finish", interval=0.01)
    sent = app.cor.raw_paths[before:]
    assert sent == ([] if refused else [expected]), sent
    # Everything COR ever received, in this app: one segment, and that segment is an id.
    for raw in app.cor.raw_paths:
        found = DETACH_PATH.fullmatch(raw)
        assert found is not None and unquote(found[1]) not in DOTS, raw
    if refused:
        with app.db.begin() as conn:
            named = select(func.count()).where(jobs.c.cor_user_id == ident)
            assert conn.execute(named).scalar_one() == 0
