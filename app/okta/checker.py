"""Still granted, asked of Okta: held removals and deactivations meet Okta's answer.

A removal or deactivation from Okta (hook or System Log) is stored, acknowledged and held;
this drainer claims held changes, asks Okta once per user for their status and current
groups, and hands the changes to intake with `member_of` set to Okta's answer, in one
transaction that also marks them done. Okta unreachable (429, 5xx, network, refused
credentials) leaves them held with backoff: nothing is detached on a guess. One that still
cannot be checked after BRIDGE_MAX_AGE_SECONDS becomes a dead letter that says so.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import anyio
import structlog
from sqlalchemy import Connection

from app import metrics
from app.changes import ChangeKind, GroupRef, IgnoredEvent, MembershipChange
from app.delivery.retry import RetryPolicy, next_attempt_at
from app.errors import BridgeError, PermanentError, RetryableError
from app.http import NotFoundError
from app.okta.client import OktaClient
from app.rounds import Rounds
from app.runtime import Bridge
from app.store import held as held_store
from app.store.held import HeldChange

log = structlog.get_logger(__name__)


def utcnow() -> datetime:
    """Now, aware, in UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class Answer:
    """What Okta said of one user."""

    groups: tuple[GroupRef, ...]
    status: str  # ACTIVE, DEPROVISIONED, ..., or DELETED when Okta no longer knows them

    @property
    def granted_nothing(self) -> bool:
        """A deactivated or deleted user keeps no access, whatever groups are listed."""
        return self.status in ("DEPROVISIONED", "DELETED")


DEFAULT_RETRY = RetryPolicy()
Answers = dict[str, Answer | BridgeError]
Failed = list[tuple[HeldChange, Answer | BridgeError]]


class OktaChecker:
    """Drains held Okta changes until cancelled; one per process."""

    def __init__(
        self,
        bridge: Bridge,
        client: OktaClient,
        *,
        batch: int = 50,
        concurrency: int = 4,
        poll_seconds: float = 1.0,
        lease: timedelta = timedelta(minutes=2),
        retry: RetryPolicy = DEFAULT_RETRY,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.bridge = bridge
        self.client = client
        self.worker_id = "okta-" + uuid.uuid4().hex[:12]
        self._batch = batch
        self._limit = asyncio.Semaphore(concurrency)
        self._poll = poll_seconds
        self._lease = lease
        # The delivery's backoff and age limit; a held change has no attempt limit of its own.
        self._retry = replace(retry, max_attempts=2**31)
        self._clock = clock
        self.rounds = Rounds("okta_checker")

    def wake(self) -> None:
        """New changes were held: look now rather than at the next poll."""
        self.rounds.wake()

    async def run(self) -> None:
        """Check until cancelled; a failing round is logged and retried, never fatal."""
        log.info("okta_checker_started", worker_id=self.worker_id)
        await self.rounds.loop(self._round, after_error=self._poll)

    async def _round(self) -> float:
        return 0.0 if await self.run_once() else self._poll

    async def run_once(self) -> int:
        """Check one batch of due held changes; returns how many were claimed."""
        rows = await anyio.to_thread.run_sync(self._claim)
        if not rows:
            return 0
        users = list(dict.fromkeys(r.change.user.id for r in rows))
        answers = dict(zip(users, await asyncio.gather(*map(self._ask, users)), strict=True))
        ready = [r for r in rows if isinstance(answers[r.change.user.id], Answer)]
        if ready:
            await self.bridge.transact(lambda conn: self._finish(conn, ready, answers))
        failed = [(r, answers[r.change.user.id]) for r in rows if r not in ready]
        if failed:
            await self._fail(failed)
        return len(rows)

    def _claim(self) -> list[HeldChange]:
        with self.bridge.db.begin() as conn:
            return held_store.claim(
                conn, now=self._clock(), limit=self._batch, worker_id=self.worker_id,
                lease=self._lease,
            )  # fmt: skip

    async def _ask(self, user_id: str) -> Answer | BridgeError:
        async with self._limit:
            try:
                try:
                    user = await self.client.get_user(user_id)
                except NotFoundError:
                    return Answer((), "DELETED")
                groups = await self.client.user_groups(user_id)
            except (RetryableError, PermanentError) as exc:
                metrics.DIRECTORY_CALLS.labels("okta", "error").inc()
                return exc
            except Exception as exc:  # a bug: held and retried like an outage, and logged
                log.exception("okta_check_crashed", user_id=user_id)
                metrics.DIRECTORY_CALLS.labels("okta", "error").inc()
                return RetryableError(f"unexpected error asking Okta ({type(exc).__name__})")
        metrics.DIRECTORY_CALLS.labels("okta", "ok").inc()
        mapping = self.bridge.mapping
        # Only groups that grant something matter; the rest would bloat the history.
        mapped = tuple(g for g in groups if mapping.workspaces_for("okta", g))
        return Answer(mapped, user.status)

    def _finish(
        self, conn: Connection, ready: Sequence[HeldChange], answers: Answers
    ) -> tuple[None, list[MembershipChange | IgnoredEvent]]:
        mine = held_store.finish(conn, [r.id for r in ready], self.worker_id, self._clock())
        # A row whose claim lapsed and was taken by another replica is theirs to hand in.
        changes: list[MembershipChange | IgnoredEvent] = []
        for row in ready:
            answer = answers[row.change.user.id]
            if row.id in mine and isinstance(answer, Answer):
                changes.append(_with_answer(row.change, answer))
        return None, changes

    async def _fail(self, failed: Failed) -> None:
        dead = await anyio.to_thread.run_sync(self._defer_or_bury, failed)
        for item in dead:
            log.error("okta_check_dead_letter", event_id=item.event_id, reason=item.reason)
        if dead:
            await self.bridge.submit(dead)

    def _defer_or_bury(self, failed: Failed) -> list[IgnoredEvent]:
        now = self._clock()
        dead: list[IgnoredEvent] = []
        with self.bridge.db.begin() as conn:
            for row, error in failed:
                assert not isinstance(error, Answer)
                text = str(error)
                wait = error if isinstance(error, RetryableError) else RetryableError(text)
                at = next_attempt_at(
                    self._retry, wait, attempts=row.attempts + 1, created_at=row.received_at,
                    now=now,
                )  # fmt: skip
                if at is None:
                    if held_store.bury(conn, row.id, self.worker_id, now, text):
                        dead.append(_dead_letter(row, text, now - row.received_at))
                    continue
                held_store.defer(conn, row.id, self.worker_id, at, text)
                log.warning(
                    "okta_check_deferred",
                    event_id=row.change.event_id,
                    user_id=row.change.user.id,
                    error=text,
                    retry_in_seconds=round((at - now).total_seconds(), 1),
                )
        return dead


def _with_answer(change: MembershipChange, answer: Answer) -> MembershipChange | IgnoredEvent:
    """The held change with Okta's answer: the user's current mapped groups."""
    if change.change is ChangeKind.user_deactivated:
        if not answer.granted_nothing:
            # Reactivated while the deactivation waited for this answer: it is stale.
            return IgnoredEvent(
                provider=change.provider,
                event_id=change.event_id,
                occurred_at=change.occurred_at,
                kind=change.change.value,
                reason=(
                    f"Okta says the user is {answer.status} now (reactivated since): "
                    "nothing detached (asked Okta)"
                ),
                user=change.user,
            )
        # Okta keeps a deactivated user's groups: those are the ones they leave.
        return change.model_copy(update={"member_of": answer.groups})
    still = () if answer.granted_nothing else answer.groups
    return change.model_copy(update={"member_of": still})


def _dead_letter(row: HeldChange, error: str, age: timedelta) -> IgnoredEvent:
    change = row.change
    hours = round(age.total_seconds() / 3600, 1)
    return IgnoredEvent(
        provider=change.provider,
        event_id=change.event_id,
        occurred_at=change.occurred_at,
        kind=f"{change.change.value} (unchecked)",
        reason=(
            f"dead letter: Okta could not be asked for {hours} h ({error}); not detached on a "
            "guess: check the user's groups in Okta and detach by hand (POST /admin/replay)"
        ),
        user=change.user,
        group=change.group,
    )
