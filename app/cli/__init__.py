"""The `cor-bridge` command, one module a concern.

- service.py: `serve`, `check`, `sandbox` (run the bridge or only its stand-ins);
- operator.py: `jobs`, `history`, `replay`; console.py does the work, against a running
  bridge (its admin API) or its database (app/operations.py);
- letters.py: `dead-letters list|replay` (the dead letters outside the outbox);
- graph.py: `graph subscribe|list|register` (Microsoft Graph subscriptions);
- okta.py: `okta sync|catch-up` (Okta's Management API);
- common.py: settings, errors, the database, for all of them.
"""

from __future__ import annotations

import typer

from app.cli import operator, service
from app.cli.graph import graph_cli
from app.cli.letters import letters_cli
from app.cli.okta import okta_cli

cli = typer.Typer(
    help="cor-bridge: IdP group removals -> COR workspace detaches.", no_args_is_help=True
)
cli.command()(service.serve)
cli.command()(service.check)
cli.command("sandbox")(service.sandbox_only)
cli.command()(operator.jobs)
cli.command()(operator.history)
cli.command()(operator.replay)
cli.add_typer(letters_cli, name="dead-letters")
cli.add_typer(graph_cli, name="graph")
cli.add_typer(okta_cli, name="okta")


def main() -> None:
    """Entry point of the console script."""
    cli()
