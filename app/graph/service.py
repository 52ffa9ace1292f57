"""What the running bridge starts for Graph: the inbox resolver and the subscription manager.

Graph is on when GRAPH_CLIENT_STATE is set. The resolver always runs then; the Graph client,
the lookups and the subscription manager only with credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import httpx
import structlog

from app.drain.retry import RetryPolicy
from app.graph.client import GraphClient
from app.graph.config import credentials
from app.graph.delta import DeltaPoller
from app.graph.delta_status import DeltaState, delta_checks, read_delta_state
from app.graph.directory import Directory
from app.graph.notifications import Notification
from app.graph.resolver import Resolver
from app.graph.subscriptions import SubscriptionManager
from app.graph.triage import Received
from app.rounds import Tasks
from app.runtime import Bridge
from app.settings import Settings
from app.store import graph as graph_store
from app.store.graph import StoredSubscription

log = structlog.get_logger(__name__)


class GraphService:
    """The Graph side of one running bridge."""

    def __init__(
        self, settings: Settings, bridge: Bridge, *, transport: httpx.AsyncBaseTransport | None
    ) -> None:
        self.settings = settings
        self.bridge = bridge
        self.on = settings.graph_client_state is not None
        self.credentials = credentials(settings) is not None
        # Delta needs no webhook: credentials alone catch up what no notification said.
        self.delta_on = self.credentials and settings.graph_delta_seconds > 0
        self._transport = transport
        self.http: httpx.AsyncClient | None = None
        self.directory: Directory | None = None
        self.resolver: Resolver | None = None
        self.subscriptions: SubscriptionManager | None = None
        self.delta: DeltaPoller | None = None
        self._tasks = Tasks()
        # SQLite has one writer at a time, and a writer that finds it busy sleeps in steps of
        # up to 100 ms: a burst then has a tail of seconds. Graph's writers queue here instead,
        # first come first served. PostgreSQL needs no such queue.
        self._write_lock = asyncio.Lock() if bridge.db.dialect == "sqlite" else None

    def write_turn(self) -> contextlib.AbstractAsyncContextManager[object]:
        """Hold this around a transaction that writes (a no-op on PostgreSQL)."""
        return self._write_lock if self._write_lock is not None else contextlib.nullcontext()

    async def start(self) -> None:
        """Open the Graph client (with credentials) and start the background tasks: the
        inbox resolver, subscriptions (with the webhook), delta (with credentials alone too)."""
        creds = credentials(self.settings)
        if not self.on and not self.delta_on:
            return
        if creds is not None:
            timeout = httpx.Timeout(self.settings.graph_timeout_seconds, connect=5.0)
            self.http = httpx.AsyncClient(timeout=timeout, transport=self._transport)
            client = GraphClient(
                self.http, self.settings.graph_api_url, self.settings.graph_login_url, creds
            )
            self.directory = Directory(client, self.settings.graph_cache_seconds)
            if self.on:
                self.subscriptions = SubscriptionManager(self.bridge.db, client, self.settings)
                self._spawn(self.subscriptions.run(), "cor-bridge-graph-subscriptions")
            if self.delta_on:
                self.delta = DeltaPoller(
                    self.bridge,
                    client,
                    interval=self.settings.graph_delta_seconds,
                    on_queued=self._wake_resolver,
                    write_turn=self.write_turn,
                )
                self._spawn(self.delta.run(), "cor-bridge-graph-delta")
        self.resolver = Resolver(
            self.bridge,
            self.directory,
            poll_seconds=self.settings.bridge_poll_seconds,
            lease=timedelta(seconds=self.settings.bridge_lease_seconds),
            max_age=timedelta(seconds=self.settings.bridge_max_age_seconds),
            retry=RetryPolicy.from_settings(self.settings),
            write_turn=self.write_turn,
        )
        self._spawn(self.resolver.run(), "cor-bridge-graph-resolver")

    def _wake_resolver(self) -> None:
        if self.resolver is not None:
            self.resolver.wake()

    async def stop(self) -> None:
        """Cancel the background tasks and close the client."""
        await self._tasks.stop()
        if self.http is not None:
            await self.http.aclose()

    def notified(self, notes: list[Notification], received: Received) -> None:
        """After a delivery committed: wake whoever has work, drop stale cached names."""
        if received.queued and self.resolver is not None:
            self.resolver.wake()
        if received.reauthorize and self.subscriptions is not None:
            self.subscriptions.wake()
        if self.directory is not None:
            for note in notes:
                # A group update without members is a property change, perhaps a rename.
                if note.group_id and not note.members and not note.body.lifecycleEvent:
                    self.directory.forget_group(note.group_id)

    async def readiness(self) -> dict[str, Any]:
        """checks.graph for /readyz: on, credentials, subscriptions and their expiry, inbox."""
        checks: dict[str, Any] = {"on": self.on, "credentials": self.credentials}
        if not self.on and not self.delta_on:
            return {**checks, "subscriptions": [], "inbox_pending": 0}
        subscriptions, stats, delta = await anyio.to_thread.run_sync(self._read)
        now = datetime.now(UTC)
        oldest = stats["oldest_pending"]
        return {
            **checks,
            "delta": delta_checks(delta, self.settings.graph_delta_seconds, self.delta, now),
            "subscriptions": [_describe(s, now) for s in subscriptions],
            "inbox_pending": stats["pending"],
            "inbox_oldest_pending": oldest.isoformat() if oldest else None,
            "inbox_last_error": stats["last_error"],
            "inbox_dead_letters": stats["dead"],
        }

    def _read(self) -> tuple[list[StoredSubscription], dict[str, Any], DeltaState]:
        with self.bridge.db.read() as conn:
            return (
                graph_store.list_subscriptions(conn),
                graph_store.inbox_stats(conn),
                read_delta_state(conn),
            )

    def _spawn(self, work: Any, name: str) -> None:
        self._tasks.start(work, name)


def _describe(stored: StoredSubscription, now: datetime) -> dict[str, Any]:
    return {
        "id": stored.id,
        "resource": stored.resource,
        "expires_at": stored.expires_at.isoformat(),
        "expires_in_seconds": int((stored.expires_at - now).total_seconds()),
        "last_renewed_at": stored.last_renewed_at.isoformat() if stored.last_renewed_at else None,
        "last_error": stored.last_error,
        "reauthorization_pending": stored.reauthorize_requested_at is not None,
    }


async def graph_checks(service: GraphService | None) -> dict[str, Any]:
    """checks.graph, also when the app runs without a Graph service (it is then off)."""
    if service is None:
        return {"on": False, "credentials": False, "subscriptions": [], "inbox_pending": 0}
    try:
        return await service.readiness()
    except Exception as exc:  # the database check reports the cause; keep /readyz answering
        log.warning("graph_readiness_failed", error=type(exc).__name__)
        return {"on": service.on, "credentials": service.credentials, "error": type(exc).__name__}
