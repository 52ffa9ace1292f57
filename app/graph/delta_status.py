"""The delta query's state for /readyz, /metrics and the admin page."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from app import metrics
from app.graph.delta import NAME, DeltaPoller
from app.graph.delta_batches import BATCH, Batch, parse_batch
from app.store import cursors
from app.store.cursors import PollerState


@dataclass(frozen=True)
class DeltaState:
    """The round's row and every batch's cursor, as stored."""

    round: PollerState | None
    batches: list[Batch]


def read_delta_state(conn: Connection) -> DeltaState:
    """What the database says of the delta query."""
    batches = []
    for name in cursors.names_like(conn, BATCH):
        state = cursors.read(conn, name)
        batch = parse_batch(name, state.cursor) if state else None
        if batch is not None:
            batches.append(batch)
    return DeltaState(cursors.read(conn, NAME), batches)


def delta_checks(
    state: DeltaState, every: float, poller: DeltaPoller | None, now: datetime
) -> dict[str, Any]:
    """checks.graph.delta: last round, groups covered, errors, cursor age (and the gauge)."""
    last = state.round.last_success_at if state.round else None
    age = (now - last).total_seconds() if last else None
    if age is not None:
        metrics.POLLER_AGE.labels(NAME).set(age)
    covered = sum(len(b.groups) for b in state.batches if not b.baseline)
    waiting = sum(len(b.groups) for b in state.batches if b.baseline)
    return {
        "polling": poller is not None,
        "every_seconds": every or None,
        "last_round": last.isoformat() if last else None,
        "cursor_age_seconds": age,
        "groups_covered": covered,
        "groups_in_baseline": waiting,
        "batches": len(state.batches),
        "last_error": state.round.last_error if state.round else None,
        "last_error_at": _iso(state.round.last_error_at if state.round else None),
    }


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None
