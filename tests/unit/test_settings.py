"""Settings, the compose file's environment, and `cor-bridge check`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from app.cli import cli
from app.settings import Settings

ROOT = Path(__file__).parents[2]


def test_compose_environment_names_are_settings():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    names = set(compose["services"]["bridge"]["environment"])
    known = {name.upper() for name in Settings.model_fields}
    assert names <= known, f"not settings: {sorted(names - known)}"


def test_defaults_match_the_contract():
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.bridge_database_url == "sqlite:///./var/cor-bridge.db"
    assert s.bridge_mapping_file == "./mapping.yaml"
    assert s.cor_api_url == "https://integrations.projectcor.com"
    assert s.cor_token_url == "https://api.projectcor.com/v1/oauth/token"
    assert (s.cor_source, s.okta_hook_header, s.scim_provider) == ("OKTA", "Authorization", "entra")
    assert not any(s.sources_on().values())


def test_blank_secrets_leave_a_source_off(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OKTA_HOOK_SECRET", "")
    monkeypatch.setenv("BRIDGE_ADMIN_TOKEN", "   ")
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.okta_hook_secret is None and s.bridge_admin_token is None


def test_secrets_are_hidden_in_repr(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("COR_CLIENT_SECRET", "very-secret")
    assert "very-secret" not in repr(Settings(_env_file=None))  # type: ignore[call-arg]


def test_check_prints_the_table(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("BRIDGE_MAPPING_FILE", str(ROOT / "mapping.yaml"))
    monkeypatch.setenv("OKTA_HOOK_SECRET", "x")
    result = CliRunner().invoke(cli, ["check"])
    assert result.exit_code == 0, result.output
    assert "source okta_hook: on" in result.output
    assert "00g8mo0l5wuTxmoIC0h7" in result.output and "WS-ONCALL" in result.output


def test_check_names_file_line_and_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    bad = tmp_path / "mapping.yaml"
    bad.write_text("groups:\n  - provider: okta\n    group_id: g1\n    workspace: [WS-A]\n")
    monkeypatch.setenv("BRIDGE_MAPPING_FILE", str(bad))
    result = CliRunner().invoke(cli, ["check"])
    assert result.exit_code == 2
    assert f"{bad}:4:" in result.output and "workspace" in result.output


def test_check_refuses_a_template_the_enabled_sources_cannot_fill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(
        'providers:\n  okta:\n    cor_source: OKTA\n    user_id: "{externalId}"\n'
        "groups:\n  - provider: okta\n    group_id: g1\n    workspaces: [WS-A]\n"
    )
    monkeypatch.setenv("BRIDGE_MAPPING_FILE", str(mapping))
    monkeypatch.setenv("OKTA_HOOK_SECRET", "x")
    result = CliRunner().invoke(cli, ["check"])
    assert result.exit_code == 2
    assert "externalId" in result.output and ":4:" in result.output


def test_bad_settings_are_named(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("BRIDGE_WORKER_CONCURRENCY", "lots")
    result = CliRunner().invoke(cli, ["check"])
    assert result.exit_code == 2
    assert "BRIDGE_WORKER_CONCURRENCY" in result.output


def test_the_image_runs_the_service_as_a_user_would():
    # No Docker engine runs where the suite runs; this pins what the image promises.
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "\nUSER bridge\n" in dockerfile, "the service must not run as root"
    assert "HEALTHCHECK" in dockerfile and "/healthz" in dockerfile
    assert 'ENTRYPOINT ["cor-bridge"]' in dockerfile and '"serve"' in dockerfile
    assert "FROM python:3.11-slim" in dockerfile
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    bridge = compose["services"]["bridge"]
    assert bridge["depends_on"]["db"]["condition"] == "service_healthy"
    assert "healthcheck" in compose["services"]["db"]
    assert bridge["environment"]["BRIDGE_DATABASE_URL"].startswith("postgresql://")
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", ".venv", ".git"} <= set(ignored)
