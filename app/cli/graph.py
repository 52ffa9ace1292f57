"""`cor-bridge graph`: create, list and register Microsoft Graph subscriptions."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, TypeVar

import httpx
import typer

from app.cli.common import database, fail, load_settings
from app.errors import BridgeError, ConfigError
from app.graph.client import GraphClient, Subscription
from app.graph.config import check_graph, credentials
from app.graph.subscriptions import ALL_GROUPS, Outcome, SubscriptionManager, mapped_resources
from app.logs import configure_logging
from app.mapping import Mapping
from app.settings import Settings
from app.store import graph as graph_store
from app.store.graph import StoredSubscription

T = TypeVar("T")

graph_cli = typer.Typer(
    help="Microsoft Graph change notifications: subscriptions for Entra groups.",
    no_args_is_help=True,
)


@graph_cli.command()
def subscribe(
    all_groups: Annotated[
        bool, typer.Option("--all-groups", help="one subscription to /groups: every group")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="create one even where a live one is known")
    ] = False,
) -> None:
    """Create subscriptions (changeType updated) for the mapping's Entra groups."""
    from app.mapping_reload import load_checked_mapping

    settings = _settings()
    try:
        mapping = load_checked_mapping(settings)
    except ConfigError as exc:
        fail(str(exc))
    if settings.graph_client_state is None or not settings.graph_notification_url:
        fail("set GRAPH_CLIENT_STATE and GRAPH_NOTIFICATION_URL (the public URL of /hooks/graph)")
    with database(settings) as db:

        async def go(client: GraphClient) -> tuple[list[str], list[Outcome]]:
            manager = SubscriptionManager(db, client, settings)
            resources, notes = (
                ([ALL_GROUPS], []) if all_groups else await mapped_resources(client, mapping)
            )
            outcomes = []
            for resource in resources:
                try:
                    outcomes.append(await manager.subscribe(resource, force=force))
                except BridgeError as exc:
                    outcomes.append(Outcome(resource, None, created=False, error=str(exc)))
            return notes, outcomes

        notes, outcomes = _with_client(settings, go)
    for note in notes:
        typer.echo(f"note: {note}")
    if not outcomes:
        fail("the mapping names no entra group: nothing to subscribe to (or use --all-groups)")
    for outcome in outcomes:
        typer.echo(_outcome_line(outcome))
    if any(o.error for o in outcomes):
        raise typer.Exit(1)


@graph_cli.command("list")
def list_subscriptions() -> None:
    """The subscriptions the bridge renews; with credentials, checked against Graph's list."""
    settings = _settings()
    with database(settings) as db, db.begin() as conn:
        stored = graph_store.list_subscriptions(conn)
    remote: list[Subscription] | None = None
    if credentials(settings) is not None:
        remote = _with_client(settings, lambda client: client.list_subscriptions())
    now = datetime.now(UTC)
    if not stored:
        typer.echo("no subscriptions known (create them with `cor-bridge graph subscribe`)")
    in_graph = {s.id for s in remote} if remote is not None else None
    for s in stored:
        typer.echo(_stored_line(s, now, in_graph))
    ours = {s.id for s in stored}
    for other in remote or []:
        if other.id not in ours:
            typer.echo(
                f"{other.id}  {other.resource}  in Graph but not known to the bridge (it will not "
                f"be renewed; `cor-bridge graph register` it) -> {other.notification_url}"
            )


@graph_cli.command()
def register(
    subscription_id: Annotated[str, typer.Argument(help="the subscription's id")],
    resource: Annotated[str, typer.Option(help="what it watches, e.g. /groups/{id}")],
    expires: Annotated[str, typer.Option(help="its expirationDateTime, ISO 8601 with offset")],
) -> None:
    """Adopt a subscription created elsewhere (Graph Explorer, a script) so it is renewed."""
    try:
        expires_at = datetime.fromisoformat(expires.strip().replace("Z", "+00:00"))
    except ValueError:
        fail(f"--expires {expires!r} is not an ISO 8601 date-time")
    if expires_at.tzinfo is None:
        fail("--expires needs a UTC offset, e.g. 2026-12-20T11:00:00Z")
    settings = _settings()
    now = datetime.now(UTC)
    with database(settings) as db, db.begin() as conn:
        graph_store.put_subscription(conn, subscription_id, resource, expires_at, now)
    typer.echo(f"registered {subscription_id} ({resource}), expires {expires_at.isoformat()}")
    if expires_at <= now:
        typer.echo("warning: that expiry is past; Graph has deleted the subscription already")


def _with_client(settings: Settings, work: Callable[[GraphClient], Awaitable[T]]) -> T:
    creds = credentials(settings)
    if creds is None:
        fail("set GRAPH_TENANT_ID, GRAPH_CLIENT_ID and GRAPH_CLIENT_SECRET (an app registration)")

    async def run() -> T:
        timeout = httpx.Timeout(settings.graph_timeout_seconds, connect=5.0)
        async with httpx.AsyncClient(timeout=timeout) as http:
            client = GraphClient(http, settings.graph_api_url, settings.graph_login_url, creds)
            return await work(client)

    try:
        return asyncio.run(run())
    except BridgeError as exc:
        fail(str(exc))


def _outcome_line(outcome: Outcome) -> str:
    if outcome.error is not None:
        return f"FAILED  {outcome.resource}: {outcome.error}"
    sub = outcome.subscription
    assert sub is not None
    verb = "subscribed" if outcome.created else "already subscribed"
    return f"{verb}  {outcome.resource}: {sub.id}, expires {sub.expires_at.isoformat()}"


def _stored_line(s: StoredSubscription, now: datetime, in_graph: set[str] | None) -> str:
    left = s.expires_at - now
    hours = int(left.total_seconds() // 3600)
    expiry = f"expires {s.expires_at.isoformat()} (in {hours // 24}d {hours % 24}h)"
    if left.total_seconds() <= 0:
        expiry = f"EXPIRED {s.expires_at.isoformat()}"
    parts = [s.id, s.resource, expiry]
    if s.last_renewed_at:
        parts.append(f"renewed {s.last_renewed_at.isoformat()}")
    if s.reauthorize_requested_at:
        parts.append("reauthorization pending")
    if in_graph is not None and s.id not in in_graph:
        parts.append("NOT IN GRAPH")
    if s.last_error:
        parts.append(f"error: {s.last_error}")
    return "  ".join(parts)


def _settings() -> Settings:
    # Warnings and errors as JSON on stderr; stdout is for the command's own answer.
    configure_logging("WARNING")
    return load_settings()


def report_graph(settings: Settings, mapping: Mapping) -> None:
    """`cor-bridge check`'s Graph lines; exits non-zero when Graph cannot serve the mapping."""
    if settings.graph_client_state is None:
        return
    has = credentials(settings) is not None
    typer.echo(f"Graph credentials: {'tenant ' + str(settings.graph_tenant_id) if has else 'none'}")
    typer.echo(f"Graph notification URL: {settings.graph_notification_url or 'unset'}")
    warnings, fatal = check_graph(settings, mapping)
    for warning in warnings:
        typer.echo(f"warning: {warning}")
    if fatal is not None:
        fail(f"{mapping.path}: {fatal}")
