"""The `cor-bridge` command: serve, check, sandbox."""

from __future__ import annotations

from typing import Annotated, NoReturn

import typer
from pydantic import ValidationError

from app.errors import ConfigError
from app.settings import Settings

cli = typer.Typer(
    help="cor-bridge: IdP group removals -> COR workspace detaches.", no_args_is_help=True
)


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        _fail(
            "settings: "
            + "; ".join(f"{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        )


def _fail(message: str) -> NoReturn:
    typer.echo(f"cor-bridge: {message}", err=True)
    raise typer.Exit(2)


@cli.command()
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
    from app.tables import load_checked_mapping

    configure_logging(log_level.upper())
    settings = _settings()
    if sandbox:
        local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104
        settings = with_sandbox(settings, f"http://{local}:{port}/sandbox/cor")
    elif settings.cor_access_token is None and not (
        settings.cor_client_id and settings.cor_client_secret
    ):
        _fail("no COR credentials: set COR_CLIENT_ID and COR_CLIENT_SECRET, or COR_ACCESS_TOKEN")
    try:
        load_checked_mapping(settings)
    except ConfigError as exc:
        _fail(str(exc))
    app = create_app(settings, sandbox=sandbox)
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False, lifespan="on")


@cli.command()
def check() -> None:
    """Validate settings and the mapping file; print the effective table."""
    from app.tables import load_checked_mapping

    settings = _settings()
    try:
        mapping = load_checked_mapping(settings)
    except ConfigError as exc:
        _fail(str(exc))
    typer.echo(f"database: {settings.bridge_database_url.split('@')[-1]}")
    for name, on in settings.sources_on().items():
        typer.echo(f"source {name}: {'on' if on else 'off'}")
    if settings.cor_access_token is not None:
        typer.echo("COR credentials: static access token")
    elif settings.cor_client_id and settings.cor_client_secret:
        typer.echo(f"COR credentials: client credentials at {settings.cor_token_url}")
    else:
        typer.echo("COR credentials: none (only `serve --sandbox` will work)")
    typer.echo(mapping.describe())


@cli.command("sandbox")
def sandbox_only(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8090,
) -> None:
    """Serve only the COR stand-in, under /sandbox/cor."""
    import uvicorn
    from fastapi import FastAPI

    from app.logs import configure_logging
    from app.sandbox import create_sandbox

    configure_logging()
    app = FastAPI(title="COR sandbox")
    app.mount("/sandbox/cor", create_sandbox())
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False)


def main() -> None:
    """Entry point of the console script."""
    cli()


if __name__ == "__main__":
    main()
