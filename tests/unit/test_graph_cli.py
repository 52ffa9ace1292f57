"""`cor-bridge check` on Graph, and `cor-bridge graph subscribe | list | register`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.graph_standin import StandinServer, invoke_cli

GROUP = "0bc7d487-fd6f-41a0-8362-71ec81074f11"
BY_NAME = f"""
providers:
  entra: {{cor_source: MICROSOFT_DYNAMICS, user_id: "{{login}}"}}
groups:
  - {{provider: entra, group_id: {GROUP}, workspaces: [WS-ENG]}}
  - {{provider: entra, group_name: Finance, workspaces: [WS-FIN]}}
"""


@pytest.fixture
def standin(standin_server: StandinServer) -> StandinServer:
    standin_server.state.reset()
    standin_server.state.validate_urls = False  # no bridge listens here
    return standin_server


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(BY_NAME)
    return {
        "BRIDGE_MAPPING_FILE": str(mapping),
        "BRIDGE_DATABASE_URL": f"sqlite:///{tmp_path}/bridge.db",
        "GRAPH_CLIENT_STATE": "state",
        "GRAPH_NOTIFICATION_URL": "https://bridge.example/hooks/graph",
    }


def run(env: dict[str, str], *args: str) -> tuple[int, str]:
    return invoke_cli(env, *args)


def with_standin(env: dict[str, str], standin: StandinServer) -> dict[str, str]:
    return {**env, **{k.upper(): v for k, v in standin.settings().items()}}


def test_check_fails_when_graph_alone_cannot_serve_the_mapping(env: dict[str, str]):
    code, out = run(env, "check")
    assert code == 2
    assert "entra rules by group_name" in out and "line 6" in out and "{login}" in out


def test_check_only_warns_when_scim_serves_entra_too(env: dict[str, str]):
    code, out = run({**env, "SCIM_TOKEN": "t"}, "check")
    assert code == 0, out
    assert "warning: Graph is on without" in out and "meant for SCIM" in out


def test_check_with_credentials_is_quiet(env: dict[str, str], standin: StandinServer):
    code, out = run(with_standin(env, standin), "check")
    assert code == 0, out
    assert "Graph credentials: tenant" in out and "warning" not in out
    assert "standin-client-secret" not in out


def test_register_then_list_without_credentials(env: dict[str, str]):
    expires = "2099-01-01T00:00:00Z"
    code, out = run(
        env, "graph", "register", "sub-1", "--resource", f"/groups/{GROUP}", "--expires", expires
    )
    assert code == 0, out
    code, out = run(env, "graph", "list")
    assert code == 0 and out.startswith(
        f"sub-1  /groups/{GROUP}  expires 2099-01-01T00:00:00+00:00"
    )
    code, out = run(env, "graph", "register", "x", "--resource", "r", "--expires", "tomorrow")
    assert code == 2 and "ISO 8601" in out


def test_subscribe_the_mapped_groups_then_list_them(env: dict[str, str], standin: StandinServer):
    standin.state.add_group("fin-1", "Finance")
    env = with_standin(env, standin)
    code, out = run(env, "graph", "subscribe")
    assert code == 0, out
    assert out.count("subscribed  /groups/") == 2
    created = standin.state.calls_to("/v1.0/subscriptions", "POST")
    assert sorted(c["body"]["resource"] for c in created) == [f"/groups/{GROUP}", "/groups/fin-1"]
    code, out = run(env, "graph", "subscribe")
    assert out.count("already subscribed") == 2
    assert len(standin.state.calls_to("/v1.0/subscriptions", "POST")) == 2
    standin.state.subscriptions["foreign"] = {
        "id": "foreign",
        "resource": "/groups/zzz",
        "expirationDateTime": "2099-01-01T00:00:00Z",
        "notificationUrl": "https://elsewhere.example/hook",
    }
    code, out = run(env, "graph", "list")
    assert code == 0 and "foreign  /groups/zzz  in Graph but not known to the bridge" in out
    assert "NOT IN GRAPH" not in out


def test_subscribe_needs_a_notification_url(env: dict[str, str], standin: StandinServer):
    env = {k: v for k, v in with_standin(env, standin).items() if k != "GRAPH_NOTIFICATION_URL"}
    code, out = run(env, "graph", "subscribe", "--all-groups")
    assert code == 2 and "GRAPH_NOTIFICATION_URL" in out


def test_a_failed_subscription_says_why(env: dict[str, str], standin: StandinServer):
    standin.state.fault(403, path_contains="/v1.0/subscriptions", times=5)
    code, out = run(with_standin(env, standin), "graph", "subscribe", "--all-groups")
    assert code == 1 and "FAILED  /groups: Graph POST /v1.0/subscriptions answered 403" in out
