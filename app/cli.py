"""The `cor-bridge` command: serve, check, sandbox; jobs, history, replay for operators."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, NoReturn

import httpx
import typer
from pydantic import ValidationError

from app import console
from app.cli_graph import graph_cli, report_graph
from app.errors import ConfigError, InputError
from app.mapping import load_mapping
from app.okta.cli import okta_cli, report_okta
from app.operations import INT32_MAX, INT64_MAX, JobFilter, JobPage, ReplayRequest
from app.settings import Settings

cli = typer.Typer(
    help="cor-bridge: IdP group removals -> COR workspace detaches.", no_args_is_help=True
)
cli.add_typer(graph_cli, name="graph")
cli.add_typer(okta_cli, name="okta")


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
    from app.server import server_config
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
    # SIGHUP means "reload the mapping"; until the watcher takes it over, it must not kill us.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    uvicorn.Server(server_config(app, settings, host, port)).run()


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
    proxies = ", ".join(settings.trusted_proxies()) or "none (X-Forwarded-* headers are ignored)"
    typer.echo(f"trusted proxies: {proxies}")
    report_graph(settings, mapping)
    report_okta(settings)
    typer.echo(mapping.describe())


@cli.command("sandbox")
def sandbox_only(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8090,
) -> None:
    """Serve only the stand-ins: COR under /sandbox/cor, Okta under /sandbox/okta."""
    import uvicorn
    from fastapi import FastAPI

    from app.logs import configure_logging
    from app.okta.standin import create_okta_standin, seeded
    from app.sandbox import create_sandbox

    configure_logging()
    app = FastAPI(title="COR sandbox")
    app.mount("/sandbox/cor", create_sandbox())
    app.mount("/sandbox/okta", create_okta_standin(seeded()))
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False)


# -- operator commands: against a running bridge (--url) or its database --------------------

UrlOption = Annotated[
    str | None,
    typer.Option("--url", envvar="BRIDGE_URL", help="a running bridge, e.g. http://127.0.0.1:8080"),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="BRIDGE_ADMIN_TOKEN",
        help="the admin token (with --url)",
        show_default=False,
    ),
]
DatabaseOption = Annotated[
    str | None,
    typer.Option("--database", help="act on this database instead (default BRIDGE_DATABASE_URL)"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON")]
StateOption = Annotated[
    list[str] | None, typer.Option("--state", help="pending, running, done, dead, cancelled")
]
UserOption = Annotated[str | None, typer.Option("--user", help="COR user id")]
WorkspaceOption = Annotated[str | None, typer.Option("--workspace", help="COR workspace id")]
ProviderOption = Annotated[str | None, typer.Option("--provider", help="okta or entra")]


def _target(url: str | None, token: str | None, database: str | None) -> console.Target:
    if url:
        if not token:
            _fail("--url needs the admin token: --token or BRIDGE_ADMIN_TOKEN")
        return console.Remote(url, token)
    settings = _settings()
    return console.Local(
        database or settings.bridge_database_url,
        lambda: load_mapping(settings.bridge_mapping_file, default_source=settings.cor_source),
    )


def _filter(
    state: list[str] | None, user: str | None, workspace: str | None, provider: str | None
) -> JobFilter:
    try:
        return JobFilter(
            state=state or [], cor_user_id=user, workspace=workspace, provider=provider
        )
    except ValidationError as exc:
        _fail("; ".join(e["msg"] for e in exc.errors()))


@cli.command()
def jobs(
    state: StateOption = None,
    user: UserOption = None,
    workspace: WorkspaceOption = None,
    provider: ProviderOption = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    offset: Annotated[int, typer.Option(min=0, max=INT64_MAX)] = 0,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    database: DatabaseOption = None,
) -> None:
    """List detach jobs, newest first (e.g. --state dead for the dead letters)."""
    page = JobPage(
        **_filter(state, user, workspace, provider).model_dump(), limit=limit, offset=offset
    )
    with _acting(url, token, database) as target:
        found = target.list_jobs(page)["jobs"]
    typer.echo(console.as_json(found) if as_json else "\n".join(console.job_lines(found)))


@cli.command()
def history(
    user: Annotated[str, typer.Argument(help="IdP user id, login or COR user id")],
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    database: DatabaseOption = None,
) -> None:
    """Every change received for a user, what was decided and why, and their jobs."""
    with _acting(url, token, database) as target:
        found = target.history(user)
    typer.echo(console.as_json(found) if as_json else "\n".join(console.history_lines(found)))


@cli.command()
def replay(
    ids: Annotated[
        list[int] | None,
        typer.Argument(min=1, max=INT32_MAX, help="job ids; none: select by filter"),
    ] = None,
    state: StateOption = None,
    user: UserOption = None,
    workspace: WorkspaceOption = None,
    provider: ProviderOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="only list what would be sent")
    ] = False,
    url: UrlOption = None,
    token: TokenOption = None,
    database: DatabaseOption = None,
) -> None:
    """Send jobs again: by id, or every job matching a filter (dead ones by default).

    Done jobs, and jobs whose workspace the user has been granted again since, are skipped
    with the reason (see app/replay.py); --dry-run lists both.
    """
    with _acting(url, token, database) as target:
        if ids:
            preview = target.replay(ReplayRequest(ids=list(ids), dry_run=True))
        else:
            f = _filter(state or ["dead"], user, workspace, provider)
            preview = target.replay(ReplayRequest(filter=f, dry_run=True, limit=100_000))
        chosen = [j["id"] for j in preview["jobs"]]
        if dry_run:
            typer.echo(f"would replay {len(chosen)} job(s): {' '.join(map(str, chosen)) or '-'}")
            for job in preview["skipped"]:
                typer.echo(f"would skip job {job['id']}: {job['reason']}")
            return
        results: dict[str, int] = {}
        with typer.progressbar(length=len(chosen), label="replaying", file=sys.stderr) as bar:
            for job in console.replay_in_chunks(target, chosen):
                results[job["result"]] = results.get(job["result"], 0) + 1
                if job.get("reason"):
                    typer.echo(f"skipped job {job['id']}: {job['reason']}", err=True)
                bar.update(1)
    summary = ", ".join(f"{n} {what}" for what, n in sorted(results.items())) or "nothing to do"
    typer.echo(f"replayed {len(chosen)} job(s): {summary}")
    for job in preview["skipped"]:
        typer.echo(f"skipped job {job['id']}: {job['reason']}")


@contextmanager
def _acting(url: str | None, token: str | None, database: str | None) -> Iterator[console.Target]:
    try:
        with console.opened(_target(url, token, database)) as target:
            yield target
    except InputError as exc:
        _fail(exc.message)
    except ConfigError as exc:
        _fail(str(exc))
    except httpx.HTTPError as exc:
        _fail(f"cannot reach the bridge: {type(exc).__name__}")


def main() -> None:
    """Entry point of the console script."""
    cli()


if __name__ == "__main__":
    main()
