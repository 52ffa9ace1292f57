"""Intake's lock keys: what of the store a call of changes reads and writes on.

Intake reads and writes per IdP user (memberships, events: `idp:`) and per COR user (open
jobs: `cor:`); an ignored event, which has no user to go by, by its event id (`event:`), so
two deliveries of one event never race to record it. Two calls whose keys do not meet can run
at once (PostgreSQL: app/store/db.py, `lock_intake_keys`); on SQLite there is one writer.
"""

from __future__ import annotations

from collections.abc import Iterable

from app.changes import IgnoredEvent, MembershipChange
from app.intake.rules import cor_user_id
from app.mapping import Mapping

# Past this many keys a call takes the whole turn: every key is an entry in PostgreSQL's
# shared lock table (max_locks_per_transaction), and a call this big is rare (a SCIM group
# deleted with its members, a sync).
MAX_KEYS = 512


def intake_keys(
    mapping: Mapping, items: Iterable[MembershipChange | IgnoredEvent]
) -> frozenset[str] | None:
    """The keys intake of `items` takes, or None for the whole turn (too many keys).

    A caller that finds more changes inside its transaction (an Okta group deletion becomes a
    removal of each member in the store) cannot name them beforehand: it takes the whole turn."""
    keys: set[str] = set()
    for item in items:
        if isinstance(item, IgnoredEvent):
            keys.add(f"event:{item.provider}:{item.event_id}")
            continue
        keys.add(f"idp:{item.provider}:{item.user.id}")
        cor_user = cor_user_id(mapping, item)
        if isinstance(cor_user, str):
            keys.add(f"cor:{cor_user}")
    return frozenset(keys) if len(keys) <= MAX_KEYS else None
