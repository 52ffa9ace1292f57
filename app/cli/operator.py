"""`cor-bridge jobs`, `history` and `replay`: for operators, against a running bridge (--url)
or its database."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import httpx
import typer
from pydantic import ValidationError

from app.cli import console
from app.cli.common import fail, load_settings
from app.errors import ConfigError, InputError
from app.mapping import load_mapping
from app.operations import INT32_MAX, INT64_MAX, JobFilter, JobPage, ReplayRequest

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
            fail("--url needs the admin token: --token or BRIDGE_ADMIN_TOKEN")
        return console.Remote(url, token)
    settings = load_settings()
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
        fail("; ".join(e["msg"] for e in exc.errors()))


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
    with acting(url, token, database) as target:
        found = target.list_jobs(page)["jobs"]
    typer.echo(console.as_json(found) if as_json else "\n".join(console.job_lines(found)))


def history(
    user: Annotated[str, typer.Argument(help="IdP user id, login or COR user id")],
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    database: DatabaseOption = None,
) -> None:
    """Every change received for a user, what was decided and why, and their jobs."""
    with acting(url, token, database) as target:
        found = target.history(user)
    typer.echo(console.as_json(found) if as_json else "\n".join(console.history_lines(found)))


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
    with acting(url, token, database) as target:
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
def acting(url: str | None, token: str | None, database: str | None) -> Iterator[console.Target]:
    try:
        with console.opened(_target(url, token, database)) as target:
            yield target
    except InputError as exc:
        fail(exc.message)
    except ConfigError as exc:
        fail(str(exc))
    except httpx.HTTPError as exc:
        fail(f"cannot reach the bridge: {type(exc).__name__}")
