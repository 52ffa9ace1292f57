"""Graph subscriptions: create them, and keep them alive (renewal, reauthorization).

Graph deletes a group subscription when it expires (at most 29 days after creation or the
last renewal), and pauses one whose reauthorizationRequired challenge goes unanswered. The
running service renews each subscription GRAPH_RENEW_BEFORE_SECONDS before it expires and
answers challenges; a failure is recorded on the subscription and tried again next round.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import anyio
import structlog

from app.errors import BridgeError, PermanentError
from app.graph.client import GraphClient, Subscription
from app.graph.config import lifecycle_url
from app.http import NotFoundError
from app.mapping import Mapping
from app.rounds import Rounds, utcnow
from app.settings import Settings
from app.store import Database
from app.store import graph as graph_store
from app.store.graph import StoredSubscription

log = structlog.get_logger(__name__)

ALL_GROUPS = "/groups"
# A failed renewal is tried again this often; a healthy loop still looks once an hour.
RETRY_SECONDS = 60.0
MAX_SLEEP_SECONDS = 3600.0
MAX_CLIENT_STATE = 128  # characters: Graph refuses a longer clientState


@dataclass(frozen=True)
class Outcome:
    """What `subscribe` did for one resource."""

    resource: str
    subscription: StoredSubscription | Subscription | None
    created: bool
    error: str | None = None


class SubscriptionManager:
    """Creates, renews and reauthorizes the bridge's subscriptions."""

    def __init__(
        self,
        db: Database,
        client: GraphClient,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.client = client
        self.settings = settings
        self._clock = clock
        self._lifetime = timedelta(minutes=settings.graph_subscription_minutes)
        self._renew_before = timedelta(seconds=settings.graph_renew_before_seconds)
        self.rounds = Rounds("graph_subscriptions")

    def wake(self) -> None:
        """A reauthorization was requested or a subscription registered: look now."""
        self.rounds.wake()

    @property
    def last_beat(self) -> float | None:
        """When the latest round started (monotonic), for /readyz."""
        return self.rounds.last_beat

    async def subscribe(self, resource: str, *, force: bool = False) -> Outcome:
        """Create a subscription for `resource`, unless a live one is known (or `force`)."""
        now = self._clock()
        known = await anyio.to_thread.run_sync(self._live_for, resource, now)
        if known is not None and not force:
            return Outcome(resource, known, created=False)
        state, url = self.settings.graph_client_state, self.settings.graph_notification_url
        if state is None or not url:
            raise PermanentError("set GRAPH_CLIENT_STATE and GRAPH_NOTIFICATION_URL first")
        if len(state.get_secret_value()) > MAX_CLIENT_STATE:
            limit = f"Graph's limit of {MAX_CLIENT_STATE} characters"
            raise PermanentError(f"GRAPH_CLIENT_STATE is longer than {limit}")
        created = await self.client.create_subscription(
            resource,
            notification_url=url,
            lifecycle_url=lifecycle_url(self.settings),
            client_state=state.get_secret_value(),
            expires_at=now + self._lifetime,
        )
        await anyio.to_thread.run_sync(self._remember, created, now)
        log.info(
            "graph_subscribed",
            subscription_id=created.id,
            resource=resource,
            expires_at=created.expires_at.isoformat(),
        )
        return Outcome(resource, created, created=True)

    async def run(self) -> None:
        """Renew and reauthorize until cancelled; never fatal."""
        log.info(
            "graph_subscriptions_started", renew_before_seconds=self._renew_before.total_seconds()
        )
        await self.rounds.loop(self.run_once, after_error=RETRY_SECONDS)

    async def run_once(self) -> float:
        """Reauthorize what Graph asked for, renew what is due; seconds until the next round."""
        now = self._clock()
        sleep = MAX_SLEEP_SECONDS
        for stored in await anyio.to_thread.run_sync(self._all):
            reauthorize = stored.reauthorize_requested_at is not None
            if reauthorize and not await self._reauthorize(stored):
                sleep = min(sleep, RETRY_SECONDS)
            due = stored.expires_at - self._renew_before
            if stored.expires_at <= now:
                await self._note_expired(stored)
            elif due <= now:
                if not await self.renew(stored):
                    sleep = min(sleep, RETRY_SECONDS)
            else:
                sleep = min(sleep, (due - now).total_seconds())
        return max(sleep, 1.0)

    async def renew(self, stored: StoredSubscription) -> bool:
        """PATCH a new expiry; records the outcome. True when Graph accepted it."""
        now = self._clock()
        try:
            renewed = await self.client.renew_subscription(stored.id, now + self._lifetime)
        except BridgeError as exc:
            await self._fail(stored, "renewal", exc)
            return False
        await anyio.to_thread.run_sync(self._renewed, stored, renewed.expires_at, now)
        log.info(
            "graph_subscription_renewed",
            subscription_id=stored.id,
            expires_at=renewed.expires_at.isoformat(),
        )
        return True

    async def _reauthorize(self, stored: StoredSubscription) -> bool:
        try:
            await self.client.reauthorize_subscription(stored.id)
        except NotFoundError as exc:
            await self._fail(stored, "reauthorization", exc)
            return False
        except PermanentError:
            # Renewing reauthorizes too, and some resources only take that.
            return await self.renew(stored)
        except BridgeError as exc:
            await self._fail(stored, "reauthorization", exc)
            return False
        requested = stored.reauthorize_requested_at
        await anyio.to_thread.run_sync(self._reauthorized, stored, requested)
        log.info("graph_subscription_reauthorized", subscription_id=stored.id)
        return True

    async def _note_expired(self, stored: StoredSubscription) -> None:
        if stored.last_error is None:
            error = (
                f"expired {stored.expires_at.isoformat()} before it was renewed: create it "
                "again with `cor-bridge graph subscribe`"
            )
            log.error("graph_subscription_expired", subscription_id=stored.id, error=error)
            await anyio.to_thread.run_sync(self._record_error, stored.id, error)

    async def _fail(self, stored: StoredSubscription, what: str, exc: BridgeError) -> None:
        error = f"{what} failed: {exc}"
        if isinstance(exc, NotFoundError):
            error += " (Graph no longer has it: create it again with `cor-bridge graph subscribe`)"
        log.warning("graph_subscription_failed", subscription_id=stored.id, error=error)
        await anyio.to_thread.run_sync(self._record_error, stored.id, error)

    def _all(self) -> list[StoredSubscription]:
        with self.db.begin() as conn:
            return graph_store.list_subscriptions(conn)

    def _live_for(self, resource: str, now: datetime) -> StoredSubscription | None:
        wanted = resource.strip("/").lower()
        for stored in self._all():
            if stored.resource.strip("/").lower() == wanted and stored.expires_at > now:
                return stored
        return None

    def _remember(self, created: Subscription, now: datetime) -> None:
        with self.db.begin() as conn:
            graph_store.put_subscription(
                conn, created.id, created.resource, created.expires_at, now
            )

    def _renewed(self, stored: StoredSubscription, expires_at: datetime, now: datetime) -> None:
        with self.db.begin() as conn:
            graph_store.record_renewal(
                conn, stored.id, expires_at, now, requested_before=stored.reauthorize_requested_at
            )

    def _reauthorized(self, stored: StoredSubscription, requested: datetime | None) -> None:
        with self.db.begin() as conn:
            graph_store.clear_reauthorization(conn, stored.id, requested or self._clock())

    def _record_error(self, subscription_id: str, error: str) -> None:
        with self.db.begin() as conn:
            graph_store.record_subscription_error(conn, subscription_id, error)


async def mapped_resources(client: GraphClient, mapping: Mapping) -> tuple[list[str], list[str]]:
    """(resources to subscribe to, notes) for the entra groups the mapping names.

    Rules by id give `/groups/{id}`; rules by name are looked up (every group of that name,
    since Entra names are not unique).
    """
    resources, notes = [], []
    for rule in mapping.rules:
        if rule.provider != "entra":
            continue
        if rule.group_id is not None:
            resources.append(f"/groups/{rule.group_id}")
            continue
        assert rule.group_name is not None
        found = await client.find_groups(rule.group_name)
        if not found:
            notes.append(f"line {rule.line}: no Entra group is named {rule.group_name!r}")
        resources += [f"/groups/{group.id}" for group in found]
    return list(dict.fromkeys(resources)), notes
