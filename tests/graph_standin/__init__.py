"""The Graph stand-in (app/graph/standin) served in a thread of the test process, on a free
loopback port; `invoke_cli` runs `cor-bridge graph ...` in process against it."""

from app.graph.standin.routes import create_standin
from app.graph.standin.state import CLIENT_ID, CLIENT_SECRET, TENANT, Fault, StandinState
from tests.graph_standin.server import StandinServer, invoke_cli, serve_standin

__all__ = [
    "CLIENT_ID",
    "CLIENT_SECRET",
    "TENANT",
    "Fault",
    "StandinServer",
    "StandinState",
    "create_standin",
    "invoke_cli",
    "serve_standin",
]
