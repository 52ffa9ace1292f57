"""What the running bridge starts for Okta's directory: the held-change checker and the
System Log poller. On when OKTA_ORG_URL and a credential are set; off, the bridge decides on
the memberships it has seen, and /readyz says so."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import structlog

from app import metrics
from app.drain.retry import RetryPolicy
from app.errors import ConfigError
from app.http import AuthHeaders, Tokens
from app.okta import credentials
from app.okta.checker import OktaChecker
from app.okta.client import OktaClient
from app.okta.log_poller import NAME as LOG_POLLER
from app.okta.log_poller import LogPoller
from app.okta.reconcile import NAME as SYNC
from app.okta.reconcile import Sync
from app.rounds import Tasks
from app.runtime import Bridge
from app.settings import Settings
from app.store import cursors
from app.store import held as held_store
from app.store.cursors import PollerState

if TYPE_CHECKING:
    from app.okta.dpop import DPoPAuth

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class OktaCredentials:
    """How the client authenticates: tokens, their header, and DPoP when the app needs it."""

    tokens: Tokens
    auth: AuthHeaders
    dpop: DPoPAuth | None = None


def okta_credentials(settings: Settings, http: httpx.AsyncClient) -> OktaCredentials:
    """The API token (SSWS), or the service app's private_key_jwt client credentials."""
    if settings.okta_api_token is not None:
        token = settings.okta_api_token.get_secret_value()
        return OktaCredentials(credentials.api_token(token), credentials.ssws)
    if settings.okta_client_id and settings.okta_private_key_file and settings.okta_org_url:
        from app.okta.dpop import DPoPAuth, dpop_token  # signs: PyJWT, only when needed

        pem = credentials.read_private_key(settings.okta_private_key_file)
        dpop = DPoPAuth() if settings.okta_dpop else None
        tokens = credentials.service_app(
            http, settings.okta_org_url, settings.okta_client_id, pem, dpop=dpop
        )
        return OktaCredentials(tokens, dpop_token if dpop else credentials.bearer, dpop)
    raise ConfigError(
        "OKTA_ORG_URL needs OKTA_API_TOKEN, or OKTA_CLIENT_ID and OKTA_PRIVATE_KEY_FILE"
    )


def okta_client(settings: Settings, http: httpx.AsyncClient) -> OktaClient:
    """The Okta client the settings describe."""
    assert settings.okta_org_url is not None
    found = okta_credentials(settings, http)
    return OktaClient(http, settings.okta_org_url, found.tokens, found.auth, dpop=found.dpop)


class OktaDirectory:
    """The Okta side of one running bridge."""

    def __init__(
        self, settings: Settings, bridge: Bridge, *, transport: httpx.AsyncBaseTransport | None
    ) -> None:
        self.settings = settings
        self.bridge = bridge
        self.on = settings.okta_directory()
        self._transport = transport
        self.http: httpx.AsyncClient | None = None
        self.client: OktaClient | None = None
        self.checker: OktaChecker | None = None
        self.poller: LogPoller | None = None
        self.sync: Sync | None = None
        self._tasks = Tasks()

    async def start(self) -> None:
        """Open the client and start the checker and, when asked for, the log poller."""
        if not self.on:
            if self.settings.okta_org_url:
                log.warning("okta_directory_off", reason="OKTA_ORG_URL is set without credentials")
            return
        assert self.settings.okta_org_url is not None
        timeout = httpx.Timeout(self.settings.okta_timeout_seconds, connect=5.0)
        self.http = httpx.AsyncClient(timeout=timeout, transport=self._transport)
        self.client = okta_client(self.settings, self.http)
        self.checker = OktaChecker(
            self.bridge,
            self.client,
            poll_seconds=self.settings.bridge_poll_seconds,
            lease=timedelta(seconds=self.settings.bridge_lease_seconds),
            retry=RetryPolicy.from_settings(self.settings),
        )
        self.bridge.okta_checker = self.checker
        self._tasks.start(self.checker.run(), "cor-bridge-okta-check")
        if self.settings.okta_log_poll_seconds > 0:
            self.poller = LogPoller(
                self.bridge, self.client, interval=self.settings.okta_log_poll_seconds
            )
            self._tasks.start(self.poller.run(), "cor-bridge-okta-log")
        if self.settings.okta_sync_seconds > 0:
            self.sync = Sync(self.bridge, self.client, interval=self.settings.okta_sync_seconds)
            self._tasks.start(self.sync.run(), "cor-bridge-okta-sync")
        log.info(
            "okta_directory_on",
            org=self.settings.okta_org_url,
            log_poll=bool(self.poller),
            sync=bool(self.sync),
        )

    async def stop(self) -> None:
        """Cancel the background tasks and close the client."""
        await self._tasks.stop()
        if self.http is not None:
            await self.http.aclose()

    async def checks(self) -> dict[str, Any]:
        """The directory's state for /readyz, and the gauges for /metrics."""
        if not self.on:
            return {
                "configured": False,
                "still_granted": "on the memberships the bridge has seen only (no OKTA_ORG_URL)",
            }
        held, poll, sync = await anyio.to_thread.run_sync(self._read)
        metrics.HELD.labels("okta", "held").set(held["held"])
        metrics.HELD.labels("okta", "dead").set(held["dead"])
        client = self.client
        now = datetime.now(UTC)
        last_poll = poll.last_success_at if poll else None
        if last_poll is not None:
            metrics.POLLER_AGE.labels(LOG_POLLER).set((now - last_poll).total_seconds())
        return {
            "configured": True,
            "still_granted": "asked of Okta before each removal",
            "last_success": _epoch(client.last_success if client else None),
            "last_error": client.last_error if client else None,
            "held": held["held"],
            "dead_letters": held["dead"],
            "oldest_held": _iso(held["oldest_held"]),
            "held_error": held["last_error"],
            "system_log": {
                "polling": self.poller is not None,
                "last_poll": _iso(last_poll),
                "cursor_age_seconds": (now - last_poll).total_seconds() if last_poll else None,
                "last_error": poll.last_error if poll else None,
                "last_error_at": _iso(poll.last_error_at if poll else None),
            },
            "sync": {
                "every_seconds": self.settings.okta_sync_seconds or None,
                "last_sync": _iso(sync.last_success_at if sync else None),
                "last_error": sync.last_error if sync else None,
                "last_error_at": _iso(sync.last_error_at if sync else None),
            },
        }

    def _read(self) -> tuple[dict[str, Any], PollerState | None, PollerState | None]:
        with self.bridge.db.read() as conn:
            held = held_store.stats(conn, "okta")
            return held, cursors.read(conn, LOG_POLLER), cursors.read(conn, SYNC)


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None


def _epoch(seconds: float | None) -> str | None:
    return datetime.fromtimestamp(seconds, UTC).isoformat() if seconds else None
