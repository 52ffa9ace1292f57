"""Shared fixtures: a real SQLite database and a mapping table per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.mapping import Mapping, parse_mapping
from app.store import Database

MAPPING = """
providers:
  okta:
    cor_source: OKTA
    user_id: "{login}"
  entra:
    cor_source: MICROSOFT_DYNAMICS
    user_id: "{login}"
groups:
  - provider: okta
    group_id: 00g8mo0l5wuTxmoIC0h7     # eng-oncall
    workspaces: [WS-ENG, WS-ONCALL]
  - provider: okta
    group_id: 00g9fin0l5wuTxmoIC0h     # finance
    workspaces: [WS-FIN]
  - provider: okta
    group_id: 00gplatform000000000     # platform: also grants WS-ENG
    workspaces: [WS-ENG]
  - provider: entra
    group_name: Finance
    workspaces: [WS-FIN]
"""


@pytest.fixture
def mapping() -> Mapping:
    """The test mapping table."""
    return parse_mapping(MAPPING, path="test-mapping.yaml")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    """A migrated SQLite database in a temporary folder."""
    database = Database(f"sqlite:///{tmp_path}/bridge.db")
    database.migrate()
    yield database
    database.dispose()
