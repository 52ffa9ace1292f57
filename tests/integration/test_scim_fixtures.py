"""The recorded SCIM sequences (Entra ID, Okta group push), replayed over real HTTP.

Each step's reply is checked, then the test waits until the outbox is idle and takes the
detach calls the sandbox saw since the step began: a step with an `effect` must cause
exactly the detaches listed in EXPECTED, and every other step none at all.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.builders import FIXTURES, load_fixture
from tests.conftest import ENGINES
from tests.integration.harness import SCIM_JSON, SCIM_TOKEN, Bridge, Sandbox, StartBridge

pytestmark = pytest.mark.integration

ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
ENTRA, ENTRA_FLAGGED = "entra-scim/default-dialect.json", "entra-scim/aadOptscim062020-dialect.json"
OKTA_PUSH = "okta-scim/group-push.json"
SCIM_AUTH = {"Authorization": f"Bearer {SCIM_TOKEN}"}
# Every sequence file is replayed; a new one must be listed here with its provider.
SEQUENCES = {ENTRA: "entra", ENTRA_FLAGGED: "entra", OKTA_PUSH: "okta"}


@dataclass(frozen=True)
class Detach:
    """One detach call COR must receive."""

    user: str
    workspaces: tuple[str, ...]
    source: str

    @property
    def body(self) -> dict[str, Any]:
        return {"workspaces": list(self.workspaces), "metadata": {"source": self.source}}


JANE_FIN = Detach("jane@acme.example", ("WS-FIN",), "MICROSOFT_DYNAMICS")
RAVI_ENG = Detach("ravi@acme.example", ("WS-ENG",), "MICROSOFT_DYNAMICS")
MIA_ENG_ONCALL = Detach("mia@acme.example", ("WS-ENG", "WS-ONCALL"), "OKTA")
LI_ENG_ONCALL = Detach("li@acme.example", ("WS-ENG", "WS-ONCALL"), "OKTA")

# Every step with an `effect` (quoted as recorded) and what it must send to COR, with the
# repository's mapping.yaml. Steps not listed here must send nothing.
EXPECTED: dict[tuple[str, int], tuple[str, list[Detach]]] = {
    (ENTRA, 7): ("detach the Finance workspaces from jane", [JANE_FIN]),
    (ENTRA_FLAGGED, 4): ("detach the Engineering workspaces from ravi", [RAVI_ENG]),
    (OKTA_PUSH, 5): ("net: mia is still a member; nothing is detached", []),
    (OKTA_PUSH, 6): ("mia left: detach eng-oncall workspaces from mia", [MIA_ENG_ONCALL]),
    (OKTA_PUSH, 8): ("li left: detach eng-oncall workspaces from li", [LI_ENG_ONCALL]),
}
# The deactivations at the end of the sequences come after the user left every mapped group:
# the bridge knows of no group left to take away, so they send nothing (they are not in
# EXPECTED) and say so in the user's history.
DEACTIVATIONS = {
    (ENTRA, 9): "jane@acme.example",
    (ENTRA_FLAGGED, 5): "ravi@acme.example",
    (OKTA_PUSH, 9): "li@acme.example",
}
# Parts of a reply body a step must show (a subset match; after a 204, of a GET).
REPLIES: dict[tuple[str, int], dict[str, Any]] = {
    (ENTRA, 0): {"schemas": [LIST_SCHEMA], "totalResults": 0},  # Test Connection
    (ENTRA, 1): {"schemas": [LIST_SCHEMA], "totalResults": 0},
    (ENTRA, 3): {"schemas": [LIST_SCHEMA], "totalResults": 0},
    (ENTRA, 6): {"displayName": "Finance"},
    (ENTRA, 10): {"schemas": [ERROR_SCHEMA], "status": "404"},
    (OKTA_PUSH, 0): {"schemas": [LIST_SCHEMA], "totalResults": 0},
    (OKTA_PUSH, 7): {"displayName": "eng-oncall-2026"},
    (OKTA_PUSH, 8): {"displayName": "eng-oncall-2026"},
}


def test_expectations_name_real_steps() -> None:
    """The tables above point at the steps they describe, and cover every `effect`."""
    assert sorted(p.name for p in FIXTURES.glob("*-scim/*.json")) == sorted(
        name.split("/")[1] for name in SEQUENCES
    )
    for fixture in SEQUENCES:
        steps = load_fixture(fixture)
        effects = {(fixture, i): s["effect"] for i, s in enumerate(steps) if "effect" in s}
        assert effects == {k: v[0] for k, v in EXPECTED.items() if k[0] == fixture}, fixture
        for key in DEACTIVATIONS.keys() | REPLIES.keys():
            assert key[0] != fixture or key[1] < len(steps), key
    for key in DEACTIVATIONS:
        assert "active" in json.dumps(load_fixture(key[0])[key[1]]["body"]), key


# -- the replayer --------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


@dataclass
class Replayer:
    """Runs a sequence step by step against a bridge, remembering what steps `save`."""

    bridge: Bridge
    sandbox: Sandbox
    fixture: str
    saved: dict[str, str] = field(default_factory=dict)

    def fill(self, value: Any) -> Any:
        """`value` with every `{name}` replaced by the saved value of that name."""
        if isinstance(value, str):
            return _PLACEHOLDER.sub(lambda m: self._saved(m.group(1)), value)
        if isinstance(value, list):
            return [self.fill(v) for v in value]
        if isinstance(value, dict):
            return {self.fill(k): self.fill(v) for k, v in value.items()}
        return value

    def _saved(self, name: str) -> str:
        assert name in self.saved, f"{self.fixture}: {{{name}}} used before a step saved it"
        return self.saved[name]

    def run(self, index: int, step: dict[str, Any]) -> tuple[httpx.Response, list[dict[str, Any]]]:
        """Send one step, check its status, wait for the outbox; the detaches it caused."""
        headers = {"Content-Type": SCIM_JSON, "Authorization": f"Bearer {SCIM_TOKEN}"}
        headers.update(step.get("headers", {}))
        content = json.dumps(self.fill(step["body"])) if "body" in step else None
        before = max((c["seq"] for c in self.sandbox.calls()), default=0)

        reply = self.bridge.http.request(
            step["method"],
            self.bridge.url + self.fill(step["path"]),
            headers=headers,
            content=content,
        )

        where = f"{self.fixture} step {index} ({step['method']} {step['path']})"
        allowed = step["expect_status"]
        allowed = allowed if isinstance(allowed, list) else [allowed]
        assert reply.status_code in allowed, f"{where}: {reply.status_code} {reply.text}"
        for name, attribute in step.get("save", {}).items():
            self.saved[name] = reply.json()[attribute]
        self.bridge.wait_idle()
        caused = [c for c in self.sandbox.calls("detach") if c["seq"] > before]
        return reply, caused


def check_reply(where: str, reply: httpx.Response, step: dict[str, Any]) -> None:
    """What every SCIM reply of its kind must look like."""
    if not reply.content:
        assert reply.status_code == 204, f"{where}: an empty {reply.status_code}"
        return
    assert reply.headers["content-type"].startswith(SCIM_JSON), where
    body = reply.json()
    if reply.status_code == 201:
        assert step["method"] == "POST", where
        assert isinstance(body["id"], str) and body["id"], where
        location = reply.headers["location"]
        assert location.endswith(f"/scim/v2/{body['meta']['resourceType']}s/{body['id']}"), where
        assert body["meta"]["location"] == location, where
    if LIST_SCHEMA in body.get("schemas", []):
        for key in ("totalResults", "startIndex", "itemsPerPage"):
            assert type(body.get(key, 0)) is int, f"{where}: {key} {body.get(key)!r}"
        assert len(body.get("Resources", [])) <= body["totalResults"], where
    if reply.status_code >= 400:
        assert body["schemas"] == [ERROR_SCHEMA], where
        assert body["status"] == str(reply.status_code), where


def _subset(want: Any, got: Any) -> bool:
    if isinstance(want, dict):
        return isinstance(got, dict) and all(
            k in got and _subset(v, got[k]) for k, v in want.items()
        )
    return bool(want == got)


# Both engines: the member PATCHes of these sequences are done on the rows they name.
@pytest.mark.parametrize("bridge_engine", ENGINES)
@pytest.mark.parametrize("fixture", list(SEQUENCES), ids=lambda f: f.removesuffix(".json"))
def test_fixture_sequence(fixture: str, start_bridge: StartBridge, sandbox: Sandbox) -> None:
    bridge = start_bridge(SCIM_TOKEN=SCIM_TOKEN, SCIM_PROVIDER=SEQUENCES[fixture])
    replayer = Replayer(bridge, sandbox, fixture)

    for index, step in enumerate(load_fixture(fixture)):
        reply, caused = replayer.run(index, step)

        where = f"{fixture} step {index} ({step.get('effect') or step['method']})"
        check_reply(where, reply, step)
        if (fixture, index) in REPLIES:
            # After a 204, the resource as it now is.
            shown = reply if reply.content else bridge.http.get(reply.url, headers=SCIM_AUTH)
            assert _subset(REPLIES[fixture, index], shown.json()), f"{where}: {shown.text}"
        _, want = EXPECTED.get((fixture, index), ("", []))
        got = [(c["user_id"], c["body"], c["status"]) for c in caused]
        assert got == [(d.user, d.body, 200) for d in want], where
        assert all(c["path"] == f"/v2/integrations/users/{c['user_id']}/detach" for c in caused)
        assert all(c["method"] == "PUT" for c in caused)
        if (fixture, index) in DEACTIVATIONS:
            _assert_deactivation_sent_nothing(bridge, DEACTIVATIONS[fixture, index])


def _assert_deactivation_sent_nothing(bridge: Bridge, user: str) -> None:
    """The user's last event is the deactivation, decided: no known group, nothing sent."""
    last = bridge.history(user)["events"][-1]
    assert (last["kind"], last["decision"]) == ("user_deactivated", "no_known_groups"), last
    assert last["detail"] == [
        "deactivated; the bridge knows of no group this user is still in: nothing to detach"
    ]


# -- the same sequences with the removals left out: the user leaves scope still a member ----

# (fixture, steps left out) -> the detaches of the steps that remain, by original index.
# Entra and Okta may send only `active=false` (or a DELETE) for a user leaving scope, with
# no group PATCH before it; the bridge has seen the user join, so it detaches what the
# groups granted.
VARIANTS: dict[str, tuple[str, frozenset[int], dict[int, list[Detach]]]] = {
    # The DELETE after the deactivation sends nothing more: Entra keeps a disabled user's
    # memberships, but the deactivation already took every group away.
    "entra-deactivated-while-member": (ENTRA, frozenset({7, 8}), {9: [JANE_FIN]}),
    "entra-deleted-while-member": (ENTRA, frozenset({7, 8, 9}), {11: [JANE_FIN]}),
    "entra-flagged-deactivated-while-member": (ENTRA_FLAGGED, frozenset({4}), {5: [RAVI_ENG]}),
    # li is still in the renamed group when deactivated: it took away what it granted
    # under the name li joined it by, as a removal from the renamed group does.
    "okta-deactivated-while-member": (
        OKTA_PUSH,
        frozenset({8}),
        {6: [MIA_ENG_ONCALL], 9: [LI_ENG_ONCALL]},
    ),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_fixture_sequence_without_removals(
    variant: str, start_bridge: StartBridge, sandbox: Sandbox
) -> None:
    fixture, skipped, expected = VARIANTS[variant]
    bridge = start_bridge(SCIM_TOKEN=SCIM_TOKEN, SCIM_PROVIDER=SEQUENCES[fixture])
    replayer = Replayer(bridge, sandbox, fixture)

    for index, step in enumerate(load_fixture(fixture)):
        if index in skipped:
            continue
        _, caused = replayer.run(index, step)

        got = [(c["user_id"], c["body"], c["status"]) for c in caused]
        want = [(d.user, d.body, 200) for d in expected.get(index, [])]
        assert got == want, f"{variant} step {index}"
