"""Shared fixtures: a real database per test (SQLite and PostgreSQL) and a mapping table."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.mapping import Mapping, parse_mapping
from app.store import Database
from tests.graph_standin import StandinServer, serve_standin
from tests.postgres import PostgresServer, find_bindir, why_unavailable

ENGINES = ["sqlite", "postgresql"]
# CI sets this, so a missing PostgreSQL fails the run instead of skipping half of it.
REQUIRE_POSTGRES = os.environ.get("COR_BRIDGE_TEST_REQUIRE_POSTGRES") == "1"

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


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server the tests start themselves, for the whole session."""
    bindir = find_bindir()
    reason = why_unavailable(bindir)
    if reason is not None:
        if REQUIRE_POSTGRES:
            pytest.fail(reason)
        pytest.skip(reason)
    assert bindir is not None
    server = PostgresServer(bindir)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    with postgres_server.database() as url:
        yield url


@pytest.fixture(params=ENGINES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database for one test, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/bridge.db"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """A migrated database: SQLite in a temporary folder, or PostgreSQL."""
    database = Database(database_url)
    database.migrate()
    yield database
    database.dispose()


@pytest.fixture(scope="module")
def standin_server() -> Iterator[StandinServer]:
    """The Microsoft Graph stand-in on loopback HTTP, one per test module (`reset()` it)."""
    with serve_standin() as server:
        yield server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `postgres` every test that runs on PostgreSQL (`make test-fast` leaves them out)."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        params = callspec.params.values() if callspec is not None else ()
        fixtures = set(getattr(item, "fixturenames", ()))
        if "postgresql" in params or fixtures & {"postgres_url", "postgres_server"}:
            item.add_marker(pytest.mark.postgres)


_FAULT_FIGURES: list[dict[str, object]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Gather the fault tests' figures (they come as report properties from xdist workers)."""
    if report.when == "call":
        _FAULT_FIGURES.extend(v for k, v in report.user_properties if k == "fault_figures")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The fault tests' figures, at the end of every run that ran them."""
    if not _FAULT_FIGURES:
        return
    terminalreporter.section("fault tests: removals through crashes, 503s and timeouts")
    rows = [list(_FAULT_FIGURES[0])]
    rows += [[str(v) for v in row.values()] for row in _FAULT_FIGURES]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        terminalreporter.write_line("  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)))
