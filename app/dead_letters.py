"""Dead letters, all of them: what an operator sees and sends again.

- jobs: detaches COR refused, or that ran out of tries (replayed by POST /admin/replay,
  app/replay.py, which weighs them against the rules again);
- inbox: Graph entries that could not be looked up (refused, a bug, or past
  BRIDGE_MAX_AGE_SECONDS), and held: Okta changes that could not be checked; replayed, they
  are pending again and looked up from scratch, then meet intake's rules;
- unresolved: removals intake could not give a COR user id (the mapping's user_id template
  needs a field the event lacks); replayed after the mapping is fixed, the change as received
  goes through intake again under a new event id, and the old event says so.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection

from app.changes import MembershipChange
from app.operations import JobFilter, JobId, list_jobs
from app.store import letters
from app.store.graph import INBOX
from app.store.held import HELD
from app.store.jobs import DEAD

if TYPE_CHECKING:
    from app.runtime import Bridge

RowIds = list[JobId]


class LetterReplay(BaseModel):
    """Dead letters to send again, by kind and id (as GET /admin/dead-letters lists them)."""

    model_config = ConfigDict(extra="forbid")

    inbox: RowIds = Field(default_factory=list, max_length=1000)
    held: RowIds = Field(default_factory=list, max_length=1000)
    unresolved: RowIds = Field(default_factory=list, max_length=1000)


def list_letters(conn: Connection, limit: int = 100) -> dict[str, Any]:
    """Every kind of dead letter, newest first, up to `limit` of each."""
    return {"jobs": list_jobs(conn, JobFilter(state=[DEAD]), limit)["jobs"], **others(conn, limit)}


def others(conn: Connection, limit: int = 100) -> dict[str, list[dict[str, Any]]]:
    """The dead letters outside the outbox (inbox, held, unresolved), newest first."""
    return {
        "inbox": letters.dead_inbox(conn, limit),
        "held": letters.dead_held(conn, limit),
        "unresolved": letters.unresolved_removals(conn, limit),
    }


async def send_again(bridge: Bridge, request: LetterReplay) -> dict[str, Any]:
    """Replay in one transaction with intake of the unresolved removals (an Okta removal is
    held for the directory's answer, like any), then wake whoever picks them up."""
    now = datetime.now(UTC)
    result, _ = await bridge.transact(
        lambda conn: replay_letters(conn, request, now), ask_okta=True
    )
    if bridge.okta_checker is not None and (request.held or request.unresolved):
        bridge.okta_checker.wake()
    return result


def replay_letters(
    conn: Connection, request: LetterReplay, now: datetime
) -> tuple[dict[str, Any], list[MembershipChange]]:
    """Inbox and held dead letters pending again; unresolved removals marked replayed, with
    the changes to send through intake (in the same transaction) under new event ids."""
    changes: list[MembershipChange] = []
    replayed: list[int] = []
    for row in letters.unresolved_removals(conn, len(request.unresolved), request.unresolved):
        if not row["change"]:
            continue
        key = letters.replay_key(row["event_id"], now)
        changes.append(MembershipChange.model_validate({**row["change"], "event_id": key}))
        line = f"replayed at {now.isoformat()} as event {key}"
        letters.mark_replayed(conn, row["id"], list(row["detail"]), line)
        replayed.append(row["id"])
    done = {
        "inbox": INBOX.requeue(conn, request.inbox, now) if request.inbox else [],
        "held": HELD.requeue(conn, request.held, now) if request.held else [],
        "unresolved": sorted(replayed),
    }
    # An id that is not (or no longer) a dead letter of its kind is named, not an error.
    skipped = {k: sorted(set(getattr(request, k)) - set(v)) for k, v in done.items()}
    return {"replayed": done, "not_dead": {k: v for k, v in skipped.items() if v}}, changes
