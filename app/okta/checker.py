"""Still granted, asked of Okta: held removals and deactivations meet Okta's answer.

A removal or deactivation from Okta (hook or System Log) is stored, acknowledged and held;
this drainer claims held changes, asks Okta once per user for their status and current
groups, and hands the changes to intake with `member_of` set to Okta's answer, in one
transaction that also marks them done. Okta unreachable (429, 5xx, network, refused
credentials) leaves them held with backoff (BRIDGE_RETRY_*): nothing is detached on a guess.
One that still cannot be checked after BRIDGE_MAX_AGE_SECONDS, or that Okta refuses for good
(or that a bug in the bridge stops), becomes a dead letter at once: in the user's history,
the admin dead letters, and replayable (app/dead_letters.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import structlog
from sqlalchemy import Connection

from app import metrics
from app.changes import ChangeKind, GroupRef, IgnoredEvent, MembershipChange
from app.drain import Drained, Drainer, bug, utcnow
from app.drain.retry import DEFAULT_RETRY, RetryPolicy
from app.errors import DeliveryError
from app.http import NotFoundError
from app.okta.client import OktaClient
from app.runtime import Bridge
from app.store import held as held_store
from app.store.held import HeldChange
from app.store.queue import Dead, Retry, hours_waited, letter_event_id

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Answer:
    """What Okta said of one user."""

    groups: tuple[GroupRef, ...]
    status: str  # ACTIVE, DEPROVISIONED, ..., or DELETED when Okta no longer knows them

    @property
    def granted_nothing(self) -> bool:
        """A deactivated or deleted user keeps no access, whatever groups are listed."""
        return self.status in ("DEPROVISIONED", "DELETED")


Answers = dict[str, Answer | DeliveryError]
Failed = list[tuple[HeldChange, Answer | DeliveryError]]


class OktaChecker(Drained):
    """Drains held Okta changes until cancelled; one per process (a Drainer, app/drain/)."""

    def __init__(
        self,
        bridge: Bridge,
        client: OktaClient,
        *,
        batch: int = 50,
        concurrency: int = 4,
        poll_seconds: float = 1.0,
        lease: timedelta = timedelta(seconds=15),
        retry: RetryPolicy = DEFAULT_RETRY,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.bridge = bridge
        self.client = client
        self.worker_id = "okta-" + uuid.uuid4().hex[:12]
        # The delivery's backoff and age limit; a held change has no attempt limit of its own.
        self._retry = replace(retry, max_attempts=2**31)
        self._clock = clock
        self.drainer = Drainer(
            "okta_checker", bridge.db, self.worker_id,
            claim=held_store.claim, extend=held_store.HELD.extend, id_of=lambda r: r.id,
            work=self._work, batch=batch, concurrency=concurrency, poll_seconds=poll_seconds,
            lease=lease, clock=clock,
        )  # fmt: skip

    async def run(self) -> None:
        """Check until cancelled; a failing round is logged and retried, never fatal."""
        log.info("okta_checker_started", worker_id=self.worker_id)
        await self.drainer.run()

    async def _work(self, rows: list[HeldChange]) -> None:
        users = list(dict.fromkeys(r.change.user.id for r in rows))
        answers = dict(zip(users, await self.drainer.each(users, self._ask), strict=True))
        ready = [r for r in rows if isinstance(answers[r.change.user.id], Answer)]
        if ready:
            await self.bridge.transact(lambda conn: self._finish(conn, ready, answers))
        failed = [(r, answers[r.change.user.id]) for r in rows if r not in ready]
        if failed:
            await self.bridge.transact(lambda conn: self._fail(conn, failed))

    async def _ask(self, user_id: str) -> Answer | DeliveryError:
        try:
            try:
                user = await self.client.get_user(user_id)
            except NotFoundError:
                return Answer((), "DELETED")
            groups = await self.client.user_groups(user_id)
        except DeliveryError as exc:
            metrics.DIRECTORY_CALLS.labels("okta", "error").inc()
            return exc
        except Exception as exc:  # a bug: stopped as a dead letter, not retried, and logged
            log.exception("okta_check_crashed", user_id=user_id)
            metrics.DIRECTORY_CALLS.labels("okta", "error").inc()
            return bug(exc, "check")
        metrics.DIRECTORY_CALLS.labels("okta", "ok").inc()
        mapping = self.bridge.mapping
        # Only groups that grant something matter; the rest would bloat the history.
        mapped = tuple(g for g in groups if mapping.workspaces_for("okta", g))
        return Answer(mapped, user.status)

    def _finish(
        self, conn: Connection, ready: Sequence[HeldChange], answers: Answers
    ) -> tuple[None, list[MembershipChange | IgnoredEvent]]:
        mine = held_store.HELD.finish(conn, [r.id for r in ready], self.worker_id, self._clock())
        # A row whose claim lapsed and was taken by another replica is theirs to hand in.
        changes: list[MembershipChange | IgnoredEvent] = []
        for row in ready:
            answer = answers[row.change.user.id]
            if row.id in mine and isinstance(answer, Answer):
                changes.append(_with_answer(row.change, answer))
        return None, changes

    def _fail(
        self, conn: Connection, failed: Failed
    ) -> tuple[None, list[MembershipChange | IgnoredEvent]]:
        """Each failed change stays held with backoff, or is a dead letter: refused (a
        permanent error, a bug) or past the age limit; its history line says so."""
        now = self._clock()
        dead: list[MembershipChange | IgnoredEvent] = []
        for row, error in failed:
            assert not isinstance(error, Answer)
            decision = self.drainer.fail(conn, held_store.HELD, row, error, self._retry)
            if decision is None:
                continue  # taken over by another replica meanwhile
            if isinstance(decision, Dead):
                letter = _dead_letter(row, decision, now)
                log.error("okta_check_dead_letter", event_id=row.change.event_id,
                          reason=letter.reason)  # fmt: skip
                dead.append(letter)
            else:
                assert isinstance(decision, Retry)
                log.warning(
                    "okta_check_deferred",
                    event_id=row.change.event_id,
                    user_id=row.change.user.id,
                    error=str(error),
                    retry_in_seconds=round((decision.at - now).total_seconds(), 1),
                )
        return None, dead


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


def _dead_letter(row: HeldChange, dead: Dead, now: datetime) -> IgnoredEvent:
    change = row.change
    if dead.gave_up:
        hours = hours_waited(row.received_at, now)
        why = f"Okta could not be asked for {hours} h ({dead.reason})"
    else:
        why = f"asking Okta failed ({dead.reason})"
    return IgnoredEvent(
        provider=change.provider,
        event_id=letter_event_id(change.event_id, now),
        occurred_at=change.occurred_at,
        kind=f"{change.change.value} (unchecked)",
        reason=(
            f"dead letter: {why}; not detached on a guess: replay it once fixed "
            f"(POST /admin/dead-letters/replay, held {row.id}) or check the user's groups in "
            "Okta and detach by hand (POST /admin/changes)"
        ),
        user=change.user,
        group=change.group,
    )
