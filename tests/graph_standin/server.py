"""The stand-in served over real HTTP on loopback, in a thread of the test process."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog
import uvicorn

from app.graph.standin.routes import create_standin
from app.graph.standin.state import CLIENT_ID, CLIENT_SECRET, TENANT, StandinState


class StandinServer:
    """The stand-in under uvicorn in a daemon thread, on a free loopback port."""

    def __init__(self, app: Any = None) -> None:
        """Serve the Graph stand-in, or `app` (another stand-in) the same way."""
        self.state = StandinState()
        config = uvicorn.Config(
            app if app is not None else create_standin(self.state),
            host="127.0.0.1",
            port=0,
            log_level="warning",
            log_config=None,
            lifespan="off",
            ws="none",
            access_log=False,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="graph-standin", daemon=True)
        self.url = ""

    def _run(self) -> None:
        asyncio.run(self._server.serve())

    def start(self) -> StandinServer:
        """Serve, and wait until the port is bound."""
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the stand-in did not start")
            time.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        """Shut the server down and wait for its thread."""
        self._server.should_exit = True
        self._thread.join(timeout=10)

    @property
    def api_url(self) -> str:
        """GRAPH_API_URL for a bridge using this stand-in."""
        return f"{self.url}/v1.0"

    def settings(self) -> dict[str, str]:
        """The GRAPH_* settings (lower-case field names) pointing at this stand-in; the delta
        query is off (tests of it turn it on), so other tests see only the calls they make."""
        return {
            "graph_delta_seconds": "0",
            "graph_api_url": self.api_url,
            "graph_login_url": self.url,
            "graph_tenant_id": TENANT,
            "graph_client_id": CLIENT_ID,
            "graph_client_secret": CLIENT_SECRET,
        }


@contextmanager
def serve_standin() -> Iterator[StandinServer]:
    """A running stand-in for the duration of the block."""
    server = StandinServer().start()
    try:
        yield server
    finally:
        server.stop()


def invoke_cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    """`cor-bridge ARGS` in process with `env`; (exit code, output).

    The command configures logging for a process of its own; the test session's logging is
    put back afterwards so later tests log as before.
    """
    from typer.testing import CliRunner

    from app.cli import cli

    root = logging.getLogger()
    handlers, level, config = root.handlers[:], root.level, structlog.get_config()
    try:
        result = CliRunner().invoke(cli, list(args), env=env)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.configure(**config)
    return result.exit_code, result.output
