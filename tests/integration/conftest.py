"""The process harness: the real bridge and the COR sandbox as subprocesses on loopback.

- One COR sandbox process per test module (`python -m app.cli sandbox`), reset before each
  test. It outlives any bridge, so what it recorded survives a SIGKILLed bridge.
- Bridges are started per test with `start_bridge(**env)`; each one is a fresh
  `python -m app.cli serve` with its own SQLite file (or a given workdir, to restart on it).
  A module that parametrizes `bridge_engine` over ENGINES runs on PostgreSQL too: then each
  workdir gets its own database on the session's PostgreSQL server instead.
- Every process is stopped with SIGTERM, then SIGKILL, by a finalizer; a failing test gets
  the last lines of every process's log appended to its report.
- Tests poll with a deadline (`wait_for`), never sleep for a fixed time to see a result.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from app.sandbox import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET
from tests.integration.harness import (
    ADMIN_TOKEN,
    HOOK_SECRET,
    MAPPING_FILE,
    Bridge,
    Sandbox,
    Service,
    StartBridge,
    clean_env,
)

_SERVICES = pytest.StashKey[list[Service]]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """Append the logs of the processes a failing test used to its report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for service in item.stash.get(_SERVICES, []):
            report.sections.append((f"{service.name} log (last lines)", service.log_tail()))


@pytest.fixture(scope="module")
def sandbox_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """One COR sandbox process for the module."""
    workdir = tmp_path_factory.mktemp("sandbox")
    service = Sandbox("sandbox", ["sandbox"], clean_env(), workdir, ("/sandbox/cor/calls",))
    try:
        service.start()
        yield service
    finally:
        service.close()


@pytest.fixture
def sandbox(sandbox_process: Sandbox, request: pytest.FixtureRequest) -> Sandbox:
    """The module's sandbox, reset: seed users, no calls, no faults, no tokens."""
    if sandbox_process.proc is None or sandbox_process.proc.poll() is not None:
        pytest.fail(f"the sandbox process died:\n{sandbox_process.log_tail()}")
    sandbox_process.reset()
    request.node.stash.setdefault(_SERVICES, []).append(sandbox_process)
    return sandbox_process


def bridge_env(sandbox: Sandbox, workdir: Path, **overrides: str | None) -> dict[str, str]:
    """The settings of a bridge that talks to `sandbox`; None in overrides unsets one."""
    settings: dict[str, str | None] = {
        "COR_API_URL": sandbox.cor_url,
        "COR_TOKEN_URL": f"{sandbox.cor_url}/v1/oauth/token",
        "COR_CLIENT_ID": SANDBOX_CLIENT_ID,
        "COR_CLIENT_SECRET": SANDBOX_CLIENT_SECRET,
        "COR_TIMEOUT_SECONDS": "5",
        "OKTA_HOOK_SECRET": HOOK_SECRET,
        "BRIDGE_ADMIN_TOKEN": ADMIN_TOKEN,
        "BRIDGE_DATABASE_URL": f"sqlite:///{workdir / 'bridge.db'}",
        "BRIDGE_MAPPING_FILE": str(MAPPING_FILE),
        "BRIDGE_RETRY_BASE_SECONDS": "0.1",
        "BRIDGE_RETRY_MAX_SECONDS": "2",
        "BRIDGE_POLL_SECONDS": "0.1",
    }
    settings.update(overrides)
    return clean_env(**settings)


@pytest.fixture
def bridge_engine() -> str:
    """The database of the test's bridges; parametrize it over ENGINES to run on both."""
    return "sqlite"


@pytest.fixture
def start_bridge(
    sandbox: Sandbox, tmp_path: Path, request: pytest.FixtureRequest, bridge_engine: str
) -> Iterator[StartBridge]:
    """Start bridges against the sandbox; `workdir=` reuses one (its database too)."""
    started: list[Bridge] = []
    databases: dict[Path, str] = {}
    dropped = ExitStack()
    server = request.getfixturevalue("postgres_server") if bridge_engine == "postgresql" else None

    def start(workdir: Path | None = None, **overrides: str | None) -> Bridge:
        workdir = workdir or tmp_path / f"bridge{len(started)}"
        workdir.mkdir(parents=True, exist_ok=True)
        if server is not None:
            if workdir not in databases:
                databases[workdir] = dropped.enter_context(server.database())
            overrides = {"BRIDGE_DATABASE_URL": databases[workdir], **overrides}
        bridge = Bridge(
            f"bridge{len(started)}",
            ["serve"],
            bridge_env(sandbox, workdir, **overrides),
            workdir,
            ("/healthz", "/readyz"),
        )
        started.append(bridge)
        request.node.stash.setdefault(_SERVICES, []).append(bridge)
        return bridge.start()

    try:
        yield start
    finally:
        for bridge in started:
            bridge.close()
        dropped.close()


@pytest.fixture(scope="module")
def start_module_bridge(
    sandbox_process: Sandbox, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StartBridge]:
    """Like `start_bridge`, for bridges that every test of a module shares (and must not
    disturb for the others); attach one to a test's report with `report_logs_of`."""
    started: list[Bridge] = []

    def start(workdir: Path | None = None, **overrides: str | None) -> Bridge:
        workdir = workdir or tmp_path_factory.mktemp("module-bridge")
        bridge = Bridge(
            f"module-bridge{len(started)}",
            ["serve"],
            bridge_env(sandbox_process, workdir, **overrides),
            workdir,
            ("/healthz", "/readyz"),
        )
        started.append(bridge)
        return bridge.start()

    try:
        yield start
    finally:
        for bridge in started:
            bridge.close()


def report_logs_of(request: pytest.FixtureRequest, service: Service) -> None:
    """Append `service`'s log to the report of the requesting test, should it fail."""
    request.node.stash.setdefault(_SERVICES, []).append(service)


@pytest.fixture
def bridge(start_bridge: StartBridge) -> Bridge:
    """A bridge with the default test settings and a fresh database."""
    return start_bridge()
