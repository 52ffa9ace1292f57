"""The Graph delta query end to end: the real bridge process, SIGKILL, and the stand-in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.graph_standin import StandinServer
from tests.integration.harness import Bridge, Sandbox, StartBridge, wait_for
from tests.integration.test_graph import (
    ADELE,
    ADELE_LOGIN,
    JOE,
    ONCALL,
    graph_env,
    seed,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def graph(standin_server: StandinServer, sandbox: Sandbox) -> StandinServer:
    """The stand-in with test_graph.py's groups and users, and Adele in COR."""
    return seed(standin_server, sandbox)


def delta(bridge: Bridge) -> dict[str, Any]:
    checks: dict[str, Any] = bridge.readyz()["checks"]["graph"]["delta"]
    return checks


def filtered(standin: StandinServer) -> list[dict[str, Any]]:
    """First-round delta queries (they carry the $filter; later ones only a token)."""
    return [c for c in standin.state.calls_to("/groups/delta") if "$filter" in c["query"]]


def test_the_delta_link_is_resumed_after_the_bridge_is_killed(
    start_bridge: StartBridge, sandbox: Sandbox, graph: StandinServer, tmp_path: Path
):
    standin = graph
    standin.state.add_member(ONCALL, ADELE)
    standin.state.add_member(ONCALL, JOE)
    env = graph_env(standin, tmp_path / "b", GRAPH_DELTA_SECONDS="0.5")
    bridge = start_bridge(workdir=tmp_path / "b", **env)
    # mapping.yaml: eng-oncall by id, Engineering and Finance by name: three groups.
    wait_for(lambda: delta(bridge)["groups_covered"] == 3, what="a finished baseline")
    baselines = len(filtered(standin))
    assert baselines >= 1 and sandbox.detaches() == []
    assert bridge.kill() is not None

    standin.state.remove_member(ONCALL, ADELE)  # no notification: only delta can tell
    restarted = start_bridge(workdir=tmp_path / "b", **env)
    sandbox.wait_detached(ADELE_LOGIN, {"WS-ENG", "WS-ONCALL"})
    # Resumed from the stored deltaLink: no group was read from the start again.
    assert len(filtered(standin)) == baselines
    assert any("$deltatoken" in c["query"] for c in standin.state.calls_to("/groups/delta"))
    restarted.wait_idle()
    events = restarted.history(ADELE_LOGIN)["events"]
    removed = [e for e in events if e["kind"] == "removed"]
    assert [e["decision"] for e in removed] == ["queued"]
    assert removed[0]["detail"][0] == "delta: Graph no longer lists them as a member"
    assert sandbox.detaches("joe@acme.example") == []
