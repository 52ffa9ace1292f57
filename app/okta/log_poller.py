"""System Log catch-up: the removals the hook did not deliver, read from Okta's own log.

One replica polls at a time (a lease in `directory_state`). The cursor is the `rel="next"`
link of a polling request, kept in the database with the events it led to in the same
transaction: after a restart or a failed page the poller resumes exactly where it was, and
no event is skipped. Events go through the hook's normaliser and intake (`ask_okta`), so an
event heard both ways counts once. On its first start it begins at "now".
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial

import anyio
import structlog
from sqlalchemy import Connection

from app import metrics
from app.changes import IgnoredEvent, MembershipChange
from app.errors import BridgeError
from app.okta.client import OktaClient
from app.okta.events import KINDS, parse_event
from app.okta.reconcile import GROUP_DELETED, expand_deletions
from app.rounds import Rounds, utcnow
from app.runtime import Bridge
from app.store import cursors

log = structlog.get_logger(__name__)

NAME = "okta_system_log"
# What the log is asked for: the events the hook turns into changes, and group deletions.
EVENT_TYPES = (*KINDS, GROUP_DELETED)
MAX_PAGES_A_ROUND = 50


class LostTurnError(BridgeError):
    """Another replica polls now; this one stops its round."""


def okta_time(when: datetime) -> str:
    """ISO 8601 with milliseconds and a Z, as Okta's `since` takes it."""
    text = when.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


class LogPoller:
    """Reads the System Log every `interval` seconds until cancelled."""

    def __init__(
        self,
        bridge: Bridge,
        client: OktaClient,
        *,
        interval: float,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.bridge = bridge
        self.client = client
        self.holder = "okta-log-" + uuid.uuid4().hex[:12]
        self._interval = interval
        self._clock = clock
        self.rounds = Rounds("okta_log_poller")
        self._first = True

    async def run(self) -> None:
        """Poll until cancelled; a failing round is recorded and retried."""
        log.info("okta_log_poller_started", holder=self.holder, every_seconds=self._interval)
        await self.rounds.loop(self._round, after_error=self._interval)

    async def _round(self) -> float:
        await self.run_once()
        return self._interval

    async def run_once(self) -> int:
        """Read every page there is now; returns how many events were read."""
        state = await anyio.to_thread.run_sync(self._take_turn, self._lease())
        if state is None:
            return 0  # another replica polls
        url = state.cursor or self.client.first_log_url(okta_time(self._clock()), EVENT_TYPES)
        read = 0
        try:
            for _ in range(MAX_PAGES_A_ROUND):
                page = await self.client.log_page(url)
                items = [parse_event(e, self._clock()) for e in page.events]
                next_url = page.next_url
                await self.bridge.transact(
                    partial(self._move, next_url=next_url, items=items),
                    weight=max(len(items), 1),
                    ask_okta=True,
                )
                read += len(items)
                metrics.POLLED_EVENTS.labels(NAME).inc(len(items))
                url = next_url
                if not page.events:
                    break
        except BridgeError as exc:
            log.warning("okta_log_poll_failed", error=str(exc))
            await anyio.to_thread.run_sync(self._record_error, str(exc))
            return read
        if read:
            log.info("okta_log_polled", events=read)
        return read

    def _lease(self) -> timedelta:
        # A replica that dies holding the turn is replaced after two intervals; each page
        # renews it, so a long round (rate-limit pacing) keeps it.
        return timedelta(seconds=2 * self._interval + 5)

    def _take_turn(self, lease: timedelta) -> cursors.PollerState | None:
        # SQLite serves one process: a turn still held is this process's before a restart.
        first = self._first and self.bridge.db.dialect == "sqlite"
        self._first = False
        with self.bridge.db.begin() as conn:
            return cursors.take_turn(conn, NAME, self.holder, self._clock(), lease, force=first)

    def _move(
        self, conn: Connection, *, next_url: str, items: list[MembershipChange | IgnoredEvent]
    ) -> tuple[None, list[MembershipChange | IgnoredEvent]]:
        """The page's events go in with the cursor that follows them, or neither does."""
        lease = self._lease()
        if not cursors.save_cursor(conn, NAME, self.holder, next_url, self._clock(), lease):
            raise LostTurnError(
                "the System Log turn or cursor changed under this round (another replica, "
                "or `cor-bridge okta catch-up`): it starts again from the stored cursor"
            )
        return None, expand_deletions(conn, self.bridge.mapping, items)

    def _record_error(self, error: str) -> None:
        with self.bridge.db.begin() as conn:
            cursors.record_error(conn, NAME, error, self._clock())
