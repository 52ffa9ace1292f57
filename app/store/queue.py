"""What every work table of the bridge shares: claim due rows under a lease, keep the lease,
and apply what the drainer decided (done, Retry(at), Dead). The outbox (app/store/jobs/) is
the richer state machine of the same kind; the Graph inbox and the held changes are such
tables: each has `id`, `state`, `attempts`, `next_attempt_at`, `lease_until`, `claimed_by`,
`last_error`, `done_at`. A claimed row stays `pending` with a lease; `dead` is a dead letter
an operator sees (admin dead letters, the member's history) and can `requeue`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, Table, and_, or_, select, update

PENDING, DONE, DEAD = "pending", "done", "dead"


@dataclass(frozen=True)
class Retry:
    """Try again at `at`."""

    at: datetime


@dataclass(frozen=True)
class Dead:
    """Stop: a dead letter that says why. `gave_up`: the error may pass, but the attempts or
    the age limit ran out."""

    reason: str
    gave_up: bool = False


def letter_event_id(event_id: str, now: datetime) -> str:
    """The event id of a dead letter's history line: its own, so the change it stands for,
    once replayed, reaches intake under the original id and is not taken for a duplicate."""
    return f"{event_id}~dead-{int(now.timestamp())}"


def hours_waited(since: datetime, now: datetime) -> float:
    """How long a row waited before it died, in hours, as its history line says it."""
    return round((now - since).total_seconds() / 3600, 1)


@dataclass(frozen=True)
class Split:
    """A call that carried several refused them: try each alone, now."""


Decision = Retry | Dead | Split


@dataclass(frozen=True)
class WorkTable:
    """One work table's transitions: claim, extend, finish, apply, requeue."""

    table: Table

    def claim(
        self, conn: Connection, *, now: datetime, limit: int, worker_id: str, lease: timedelta
    ) -> list[Row[Any]]:
        """Take up to `limit` due pending rows (and those whose claim lapsed), oldest first."""
        t = self.table
        due = and_(
            t.c.state == PENDING,
            t.c.next_attempt_at <= now,
            or_(t.c.lease_until.is_(None), t.c.lease_until < now),
        )
        rows = list(
            conn.execute(
                select(t).where(due).order_by(t.c.id).limit(limit).with_for_update(skip_locked=True)
            )
        )
        if rows:
            conn.execute(
                update(t)
                .where(t.c.id.in_([r.id for r in rows]))
                .values(lease_until=now + lease, claimed_by=worker_id)
            )
        return rows

    def extend(
        self, conn: Connection, ids: Sequence[int], worker_id: str, lease_until: datetime
    ) -> int:
        """Push back the lease of the rows among `ids` this worker still holds; how many."""
        t = self.table
        done = conn.execute(
            update(t)
            .where(t.c.id.in_(list(ids)), t.c.state == PENDING, t.c.claimed_by == worker_id)
            .values(lease_until=lease_until)
        )
        return int(done.rowcount)

    def finish(
        self,
        conn: Connection,
        ids: Sequence[int],
        worker_id: str,
        now: datetime,
        note: str | None = None,
    ) -> set[int]:
        """Mark claimed rows done; returns those this worker still held (a row whose claim
        lapsed and was taken by another replica is theirs to finish)."""
        return self._settle(conn, ids, worker_id, state=DONE, done_at=now, last_error=note)

    def apply(
        self,
        conn: Connection,
        row_id: int,
        worker_id: str,
        decision: Decision,
        error: str,
        now: datetime,
    ) -> bool:
        """A failed try of a claimed row: due again at Retry's time, or a dead letter that
        says why; False when this worker no longer held it."""
        if isinstance(decision, Retry):
            values: dict[str, Any] = {"next_attempt_at": decision.at, "last_error": error[:1000]}
        elif isinstance(decision, Dead):
            values = {"state": DEAD, "done_at": now, "last_error": decision.reason[:1000]}
        else:
            raise ValueError(f"a {self.table.name} row cannot be split")
        values["attempts"] = self.table.c.attempts + 1
        return bool(self._settle(conn, [row_id], worker_id, **values))

    def requeue(self, conn: Connection, ids: Sequence[int], now: datetime) -> list[int]:
        """Dead letters pending again, from scratch (a replay); the ids that were dead."""
        t = self.table
        rows = conn.execute(
            update(t)
            .where(t.c.id.in_(list(ids)), t.c.state == DEAD)
            .values(
                state=PENDING,
                attempts=0,
                next_attempt_at=now,
                lease_until=None,
                claimed_by=None,
                done_at=None,
                last_error=None,
            )
            .returning(t.c.id)
        )
        return sorted(int(r[0]) for r in rows)

    def _settle(
        self, conn: Connection, ids: Sequence[int], worker_id: str, **values: Any
    ) -> set[int]:
        if not ids:
            return set()
        t = self.table
        rows = conn.execute(
            update(t)
            .where(t.c.id.in_(list(ids)), t.c.state == PENDING, t.c.claimed_by == worker_id)
            .values(lease_until=None, **values)
            .returning(t.c.id)
        )
        return {int(r[0]) for r in rows}
