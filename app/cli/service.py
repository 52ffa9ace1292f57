"""`cor-bridge serve`, `check` and `sandbox`: run the bridge, validate its configuration."""

from __future__ import annotations

import signal
from typing import Annotated

import typer

from app.cli.common import fail, load_settings
from app.cli.graph import report_graph
from app.cli.okta import report_okta
from app.errors import ConfigError


def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8080,
    sandbox: Annotated[
        bool, typer.Option("--sandbox", help="serve a COR stand-in and use it")
    ] = False,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING")] = "INFO",
) -> None:
    """Run the HTTP service and the delivery worker in one process."""
    import uvicorn

    from app.logs import configure_logging
    from app.main import create_app, with_sandbox
    from app.mapping_reload import load_checked_mapping
    from app.server import limit_malloc_arenas, server_config

    limit_malloc_arenas()  # before any thread: see app/server.py
    configure_logging(log_level.upper())
    settings = load_settings()
    if sandbox:
        local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104
        settings = with_sandbox(settings, f"http://{local}:{port}/sandbox/cor")
    elif settings.cor_access_token is None and not (
        settings.cor_client_id and settings.cor_client_secret
    ):
        fail("no COR credentials: set COR_CLIENT_ID and COR_CLIENT_SECRET, or COR_ACCESS_TOKEN")
    try:
        load_checked_mapping(settings)
    except ConfigError as exc:
        fail(str(exc))
    app = create_app(settings, sandbox=sandbox)
    # SIGHUP means "reload the mapping"; until the watcher takes it over, it must not kill us.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    uvicorn.Server(server_config(app, settings, host, port)).run()


def check() -> None:
    """Validate settings and the mapping file; print the effective table."""
    from app.mapping_reload import load_checked_mapping

    settings = load_settings()
    try:
        mapping = load_checked_mapping(settings)
    except ConfigError as exc:
        fail(str(exc))
    typer.echo(f"database: {settings.bridge_database_url.split('@')[-1]}")
    for name, on in settings.sources_on().items():
        typer.echo(f"source {name}: {'on' if on else 'off'}")
    if settings.cor_access_token is not None:
        typer.echo("COR credentials: static access token")
    elif settings.cor_client_id and settings.cor_client_secret:
        typer.echo(f"COR credentials: client credentials at {settings.cor_token_url}")
    else:
        typer.echo("COR credentials: none (only `serve --sandbox` will work)")
    proxies = ", ".join(settings.trusted_proxies()) or "none (X-Forwarded-* headers are ignored)"
    typer.echo(f"trusted proxies: {proxies}")
    report_graph(settings, mapping)
    report_okta(settings)
    typer.echo(mapping.describe())


def sandbox_only(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8090,
) -> None:
    """Serve only the stand-ins: COR under /sandbox/cor, Okta under /sandbox/okta, Graph
    under /sandbox/graph."""
    import uvicorn
    from fastapi import FastAPI

    from app.graph.standin import StandinState, create_standin, seed
    from app.logs import configure_logging
    from app.okta.standin import create_okta_standin, seeded
    from app.sandbox import create_sandbox

    configure_logging()
    app = FastAPI(title="COR sandbox")
    app.mount("/sandbox/cor", create_sandbox())
    app.mount("/sandbox/okta", create_okta_standin(seeded()))
    app.mount("/sandbox/graph", create_standin(seed(StandinState())))
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False)
