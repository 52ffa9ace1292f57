"""`cor-bridge okta`: a membership sync now, and where the System Log catch-up starts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated

import httpx
import typer

from app.cli.common import database, fail
from app.errors import ConfigError
from app.mapping import Mapping
from app.mapping_reload import MappingHolder, load_checked_mapping
from app.okta.client import OktaClient, log_url
from app.okta.log_poller import EVENT_TYPES, NAME, okta_time
from app.okta.reconcile import Sync
from app.okta.service import okta_client
from app.runtime import Bridge
from app.settings import Settings
from app.store import Database, cursors

okta_cli = typer.Typer(
    help="Okta's Management API: membership sync and System Log catch-up.", no_args_is_help=True
)


def report_okta(settings: Settings) -> None:
    """`cor-bridge check`'s Okta lines: what still-granted rests on."""
    if not settings.okta_directory():
        extra = " (OKTA_ORG_URL is set, but no credentials)" if settings.okta_org_url else ""
        typer.echo(
            "Okta directory: off; still-granted rests only on the memberships the bridge has "
            f"seen{extra}"
        )
        return
    how = "API token" if settings.okta_api_token is not None else "service app"
    typer.echo(f"Okta directory: {settings.okta_org_url} ({how}); still-granted is asked of Okta")
    poll = settings.okta_log_poll_seconds
    typer.echo(f"Okta System Log catch-up: {f'every {poll:g} s' if poll else 'off'}")
    sync = settings.okta_sync_seconds
    typer.echo(f"Okta membership sync: {f'every {sync:g} s' if sync else 'off'}")


@okta_cli.command()
def sync() -> None:
    """Read the members of every mapped Okta group now and set right what the bridge knows."""
    settings, mapping = _configured()

    async def go() -> dict[str, int]:
        async with _bridge(settings, mapping) as (bridge, client):
            return await Sync(bridge, client, interval=settings.okta_sync_seconds).run_once(
                force=True
            )

    counts = asyncio.run(go())
    typer.echo(
        f"synced {counts.get('groups', 0)} groups: {counts.get('added', 0)} members recorded, "
        f"{counts.get('removed', 0)} removals (held until Okta confirms the user's groups)"
    )


@okta_cli.command("catch-up")
def catch_up(
    since: Annotated[
        datetime, typer.Option("--since", help="read the System Log from this time (UTC)")
    ],
) -> None:
    """Start the System Log catch-up at `--since` (the running bridge picks it up next poll)."""
    settings, _ = _configured()
    when = since if since.tzinfo else since.replace(tzinfo=UTC)
    assert settings.okta_org_url is not None
    url = log_url(settings.okta_org_url, okta_time(when), EVENT_TYPES)
    with database(settings) as db, db.begin() as conn:
        cursors.set_cursor(conn, NAME, url, datetime.now(UTC))
    typer.echo(f"the System Log catch-up starts at {okta_time(when)} on its next poll")


def _configured() -> tuple[Settings, Mapping]:
    try:
        settings = Settings()
        mapping = load_checked_mapping(settings)
    except (ConfigError, ValueError) as exc:
        fail(str(exc))
    if not settings.okta_directory():
        fail("set OKTA_ORG_URL and OKTA_API_TOKEN (or OKTA_CLIENT_ID and OKTA_PRIVATE_KEY_FILE)")
    return settings, mapping


@asynccontextmanager
async def _bridge(settings: Settings, mapping: Mapping) -> AsyncIterator[tuple[Bridge, OktaClient]]:
    """A Bridge on the configured database and an Okta client, for one command."""
    db = Database(settings.bridge_database_url)
    try:
        await asyncio.to_thread(db.migrate)
        async with httpx.AsyncClient(timeout=settings.okta_timeout_seconds) as http:
            yield (
                Bridge(settings, db, MappingHolder(settings, mapping)),
                okta_client(settings, http),
            )
    finally:
        db.dispose()
